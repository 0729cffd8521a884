#!/usr/bin/env bash
# Install Synapse into a venv and write the benchmark homeserver config.
# Idempotent: re-running keeps the venv (if the pinned version is installed),
# the signing key, the secrets and the database, and rebuilds homeserver.yaml.
#
# Env:
#   MEDHUB_BENCH_DIR        default /var/tmp/medhub-bench
#   PORT                    default 8008 (client API, 127.0.0.1 only)
#   SYNAPSE_BCRYPT_ROUNDS   default 4 (Synapse's default is 12); only registration/login cost
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_DIR=${MEDHUB_BENCH_DIR:-/var/tmp/medhub-bench}
PORT=${PORT:-8008}
VENV=$BENCH_DIR/synapse-venv
SYN_DIR=$BENCH_DIR/synapse
SYNAPSE_VERSION=1.163.2
PYTHON=${PYTHON:-python3}

mkdir -p "$BENCH_DIR" "$SYN_DIR"

# 1. venv + matrix-synapse (pinned, with all dependencies pinned by constraints.txt)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
installed=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || true)
if [ "$installed" != "$SYNAPSE_VERSION" ]; then
  echo "setup: installing matrix-synapse==$SYNAPSE_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    -c "$HERE/constraints.txt" "matrix-synapse==$SYNAPSE_VERSION"
else
  echo "setup: matrix-synapse $SYNAPSE_VERSION already installed in $VENV"
fi

# 2. Generated config (once: it creates the secrets and the signing key).
if [ ! -f "$SYN_DIR/homeserver.generated.yaml" ]; then
  echo "setup: generating homeserver config in $SYN_DIR"
  # --generate-config writes the log config's file name relative to the cwd;
  # render_config.py rewrites it to $SYN_DIR/homeserver.log.
  (cd "$SYN_DIR" && "$VENV/bin/python" -m synapse.app.homeserver \
    --server-name bench.local \
    --config-path "$SYN_DIR/homeserver.generated.yaml" \
    --data-directory "$SYN_DIR" \
    --generate-config \
    --report-stats=no >/dev/null)
fi

# 3. The config Synapse runs with: generated + benchmark overrides.
"$VENV/bin/python" "$HERE/render_config.py" "$SYN_DIR" "$PORT"

# 4. Let Synapse itself parse and validate the result.
"$VENV/bin/python" - "$SYN_DIR/homeserver.yaml" <<'EOF'
import sys
from synapse.config.homeserver import HomeServerConfig
cfg = HomeServerConfig.load_config("synapse", ["--config-path", sys.argv[1]])
assert cfg.server.server_name == "bench.local"
assert cfg.server.presence_enabled is False
assert cfg.key.key_servers == []
assert cfg.ratelimiting.rc_message.per_second >= 1000
print("setup: config ok: server_name=%s listeners=%s rc_message=%s/s bcrypt_rounds=%d" % (
    cfg.server.server_name,
    [(l.bind_addresses, l.port) for l in cfg.server.listeners],
    cfg.ratelimiting.rc_message.per_second,
    cfg.registration.bcrypt_rounds,
))
EOF

echo "setup: done. venv=$VENV config=$SYN_DIR/homeserver.yaml port=$PORT"
