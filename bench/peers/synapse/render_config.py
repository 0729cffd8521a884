"""Build the benchmark homeserver.yaml from Synapse's generated config.

Run by setup.sh with the venv's python (PyYAML comes with Synapse):

    render_config.py SYN_DIR PORT

Reads  SYN_DIR/homeserver.generated.yaml  (written once by --generate-config;
it holds the secrets: registration_shared_secret, macaroon_secret_key, ...)
Writes SYN_DIR/homeserver.yaml: the generated text, minus the top-level keys
that we override, plus a newline (the generated file has no trailing newline)
and the override block below. Also points the generated log config at
SYN_DIR/homeserver.log. Safe to run again: the output is rebuilt each time.
"""

import os
import re
import sys

import yaml

# Keep in step with README.md ("Settings changed and why").
# Rate limits: Synapse's defaults are meant for humans on a public server
# (e.g. rc_message 0.2 msg/s per user, burst 10; rc_joins_per_room 1 join/s per
# room; rc_login.address 0.003 logins/s per IP). A benchmark sends every request
# from 127.0.0.1 and joins thousands of users to one room, so every limiter a
# benchmark or provisioning can reach is raised far beyond what it can do.
BIG = {"per_second": 1000000, "burst_count": 1000000}

OVERRIDES_TEMPLATE = """\
# ---------------------------------------------------------------------------
# medhub benchmark overrides, written by bench/peers/synapse/setup.sh
# (render_config.py). The top-level keys below were removed from the generated
# text above, so each key appears once. Re-run setup.sh to rebuild this file.
# ---------------------------------------------------------------------------
pid_file: {syn_dir}/homeserver.pid
log_config: {syn_dir}/bench.local.log.config

# Client-server API only, plain HTTP, loopback only (the generated config also
# binds ::1 and serves federation).
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false

# No network: do not try to fetch signing keys from matrix.org.
trusted_key_servers: []
suppress_key_server_warning: true

# Presence costs CPU on every sync and every message sender; medhub's
# comparison load does not use it.
presence:
  enabled: false

# Synapse's default is 12. Registration and password login hash a password
# (12 rounds: ~0.2 s of CPU per user here); the benchmarked message path never
# does. 4 makes provisioning thousands of users take seconds, not minutes.
bcrypt_rounds: {bcrypt_rounds}

# /sync caps a filter's timeline limit at filter_timeline_limit (default 100):
# a receiver more than 100 messages behind in one room gets "limited": true
# and a gap. The load generator's filter asks for 1000.
filter_timeline_limit: 1000

rc_message: {big}
rc_registration: {big}
rc_login:
  address: {big}
  account: {big}
  failed_attempts: {big}
rc_joins:
  local: {big}
  remote: {big}
rc_joins_per_room: {big}
rc_invites:
  per_room: {big}
  per_user: {big}
  per_issuer: {big}
rc_room_creation: {big}
"""

OVERRIDDEN_KEYS = [
    "pid_file",
    "log_config",
    "listeners",
    "trusted_key_servers",
    "suppress_key_server_warning",
    "presence",
    "bcrypt_rounds",
    "filter_timeline_limit",
    "rc_message",
    "rc_registration",
    "rc_login",
    "rc_joins",
    "rc_joins_per_room",
    "rc_invites",
    "rc_room_creation",
]


def strip_top_level_keys(text: str, keys: list[str]) -> str:
    """Remove top-level `key:` entries (and their indented continuation lines)."""
    out: list[str] = []
    skipping = False
    key_re = re.compile(r"^(%s):" % "|".join(re.escape(k) for k in keys))
    for line in text.splitlines():
        if skipping:
            if line == "" or line[0] in " \t-":
                continue
            skipping = False
        if key_re.match(line):
            skipping = True
            continue
        out.append(line)
    return "\n".join(out)


class UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ValueError(f"duplicate key in rendered config: {key!r}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def main() -> None:
    syn_dir, port = sys.argv[1], int(sys.argv[2])
    bcrypt_rounds = int(os.environ.get("SYNAPSE_BCRYPT_ROUNDS", "4"))
    generated_path = os.path.join(syn_dir, "homeserver.generated.yaml")
    out_path = os.path.join(syn_dir, "homeserver.yaml")
    log_config_path = os.path.join(syn_dir, "bench.local.log.config")

    with open(generated_path, encoding="utf8") as f:
        generated = f.read()
    base = strip_top_level_keys(generated, OVERRIDDEN_KEYS)
    if not base.endswith("\n"):
        base += "\n"  # the generated YAML has no trailing newline
    big = "{per_second: %d, burst_count: %d}" % (BIG["per_second"], BIG["burst_count"])
    text = (
        base
        + "\n"
        + OVERRIDES_TEMPLATE.format(
            syn_dir=syn_dir, port=port, big=big, bcrypt_rounds=bcrypt_rounds
        )
    )

    # Sanity checks on the result before writing it.
    cfg = yaml.load(text, Loader=UniqueKeyLoader)
    assert cfg["server_name"] == "bench.local", cfg["server_name"]
    assert cfg["database"]["name"] == "sqlite3", cfg["database"]
    assert cfg["report_stats"] is False
    assert cfg["trusted_key_servers"] == []
    assert isinstance(cfg.get("registration_shared_secret"), str)
    assert cfg["listeners"][0]["bind_addresses"] == ["127.0.0.1"]
    assert cfg["listeners"][0]["port"] == port
    assert cfg["rc_joins_per_room"]["per_second"] == BIG["per_second"]
    assert cfg["filter_timeline_limit"] == 1000

    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf8") as f:
        f.write(text)
    os.replace(tmp, out_path)

    # Log to SYN_DIR/homeserver.log (the generated log config logs to the
    # directory --generate-config was run from).
    with open(log_config_path, encoding="utf8") as f:
        log_text = f.read()
    log_text = re.sub(
        r"(?m)^(\s*filename:).*$",
        r"\g<1> " + os.path.join(syn_dir, "homeserver.log"),
        log_text,
    )
    with open(log_config_path, "w", encoding="utf8") as f:
        f.write(log_text)


if __name__ == "__main__":
    main()
