#!/usr/bin/env python3
"""Provision users and rooms on the benchmark Synapse for the load generator.

Standard library only (urllib, hmac, json); run it with any Python 3.9+,
e.g. the venv's: $MEDHUB_BENCH_DIR/synapse-venv/bin/python provision.py ...

    provision.py USERS [--pairs] [--big-room M] [--groups COUNT:SIZE]
                 [--initial-sync] [--out FILE] [--base-url URL]
                 [--config homeserver.yaml | env SYNAPSE_SHARED_SECRET]
                 [--prefix u] [--concurrency 8]

Users are @<prefix><i>:bench.local for i in 0..USERS-1, created through the
shared-secret admin registration API (/_synapse/admin/v1/register, nonce +
HMAC-SHA1). A user that already exists (a re-run on the same database) is
logged in with its deterministic password instead, which gives a new token.

Rooms:
  --pairs              one direct (1:1) room per pair (u0,u1), (u2,u3), ...:
                       the first creates it (preset trusted_private_chat,
                       is_direct, invite the second), the second joins.
  --big-room M         one public room created by u0 that u0..u(M-1) join.
  --groups COUNT:SIZE  COUNT public rooms of SIZE members each; room k holds
                       users (k*SIZE + j) mod USERS for j in 0..SIZE-1.

Writes JSON (default ./synapse-users.json):
  {"server": {"base_url", "server_name"},
   "users": [{"index", "user_id", "access_token", "device_id", ["since"]}],
   "rooms": [{"room_id", "kind": "pair"|"big"|"group", "creator", "members"}],
   "timings_s": {...}}
"members" and "creator" are user indices into "users".
With --initial-sync each user also gets "since": the next_batch of a
timeout=0 sync with SYNC_FILTER (below), taken after all rooms exist.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

# The sync filter the load generator is expected to use (see README.md):
# only m.room.message timeline events, a large timeline limit so that a burst
# of messages between two syncs is not cut ("limited": true), lazy-loaded
# members, and no presence / account data / ephemeral events.
SYNC_FILTER = {
    "room": {
        "timeline": {"limit": 1000, "types": ["m.room.message"]},
        "state": {"lazy_load_members": True},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
}


class MatrixError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, base_url, timeout=120):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(self, method, path, body=None, token=None, retries=5):
        data = None if body is None else json.dumps(body).encode("utf8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            headers["Authorization"] = "Bearer " + token
        for attempt in range(retries + 1):
            req = urllib.request.Request(
                self.base_url + path, data=data, method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as e:
                raw = e.read()
                try:
                    err = json.loads(raw)
                except ValueError:
                    err = {"raw": raw.decode("utf8", "replace")}
                if e.code == 429 and attempt < retries:
                    wait = err.get("retry_after_ms", 1000) / 1000.0
                    print(f"provision: 429 on {method} {path}, retry in {wait:.1f}s",
                          file=sys.stderr)
                    time.sleep(wait)
                    continue
                if e.code >= 500 and attempt < retries:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise MatrixError(e.code, err) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if attempt < retries:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise


def shared_secret_from_config(path):
    # registration_shared_secret: "..." as written by --generate-config
    # (its alphabet has no quotes or backslashes).
    with open(path, encoding="utf8") as f:
        for line in f:
            m = re.match(r'^registration_shared_secret:\s*"([^"]*)"\s*$', line)
            if m:
                return m.group(1)
            m = re.match(r"^registration_shared_secret:\s*'?([^'\s]*)'?\s*$", line)
            if m:
                return m.group(1)
    raise SystemExit(f"provision: no registration_shared_secret in {path}")


def password_for(localpart):
    return "bench-" + localpart


def register_or_login(client, secret, localpart):
    password = password_for(localpart)
    nonce = client.request("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(secret.encode("utf8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf8"))
    mac.update(b"\x00")
    mac.update(localpart.encode("utf8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf8"))
    mac.update(b"\x00")
    mac.update(b"notadmin")
    try:
        r = client.request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": False,
                "mac": mac.hexdigest(),
            },
        )
        return r, "registered"
    except MatrixError as e:
        if e.status != 400 or e.body.get("errcode") != "M_USER_IN_USE":
            raise
    r = client.request(
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
            "initial_device_display_name": "medhub-bench",
        },
    )
    return r, "logged_in"


def run_parallel(concurrency, fn, items, label):
    """Run fn over items with a thread pool; print progress; return results in order."""
    done = [0]
    lock = threading.Lock()
    total = len(items)
    t0 = time.monotonic()

    def wrapped(item):
        r = fn(item)
        with lock:
            done[0] += 1
            n = done[0]
            if n == total or n % max(1, total // 10) == 0:
                print(f"provision: {label}: {n}/{total} ({time.monotonic() - t0:.1f}s)",
                      file=sys.stderr)
        return r

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(wrapped, items))


def create_room(client, token, body):
    return client.request("POST", "/_matrix/client/v3/createRoom", body, token=token)["room_id"]


def join(client, token, room_id):
    client.request(
        "POST", "/_matrix/client/v3/join/" + urllib.parse.quote(room_id, safe=""), {},
        token=token,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("users", type=int, help="number of users to create")
    ap.add_argument("--base-url", default=None,
                    help="default http://127.0.0.1:$PORT (PORT default 8008)")
    ap.add_argument("--config", default=None,
                    help="homeserver.yaml to read registration_shared_secret from "
                         "(default $MEDHUB_BENCH_DIR/synapse/homeserver.yaml); "
                         "env SYNAPSE_SHARED_SECRET takes precedence")
    ap.add_argument("--prefix", default="u", help="user localpart prefix (default u)")
    ap.add_argument("--pairs", action="store_true", help="one 1:1 room per pair of users")
    ap.add_argument("--big-room", type=int, default=0, metavar="M",
                    help="one public room joined by the first M users")
    ap.add_argument("--groups", default=None, metavar="COUNT:SIZE",
                    help="COUNT public rooms of SIZE members each")
    ap.add_argument("--initial-sync", action="store_true",
                    help="store a first 'since' token per user")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="synapse-users.json")
    args = ap.parse_args()

    if args.users < 1:
        ap.error("USERS must be >= 1")
    if args.big_room > args.users:
        ap.error("--big-room M must be <= USERS")
    if args.pairs and args.users % 2:
        print("provision: odd user count: the last user gets no pair", file=sys.stderr)
    groups = None
    if args.groups:
        m = re.fullmatch(r"(\d+):(\d+)", args.groups)
        if not m or int(m.group(2)) < 1 or int(m.group(2)) > args.users:
            ap.error("--groups must be COUNT:SIZE with 1 <= SIZE <= USERS")
        groups = (int(m.group(1)), int(m.group(2)))

    base_url = args.base_url or f"http://127.0.0.1:{os.environ.get('PORT', '8008')}"
    bench_dir = os.environ.get("MEDHUB_BENCH_DIR", "/var/tmp/medhub-bench")
    secret = os.environ.get("SYNAPSE_SHARED_SECRET") or shared_secret_from_config(
        args.config or os.path.join(bench_dir, "synapse", "homeserver.yaml")
    )
    client = Client(base_url)
    timings = {}
    t_all = time.monotonic()

    # 1. Users.
    t0 = time.monotonic()
    localparts = [f"{args.prefix}{i}" for i in range(args.users)]
    results = run_parallel(
        args.concurrency, lambda lp: register_or_login(client, secret, lp), localparts, "users"
    )
    users = []
    for i, (r, _how) in enumerate(results):
        users.append({
            "index": i,
            "user_id": r["user_id"],
            "access_token": r["access_token"],
            "device_id": r.get("device_id"),
        })
    n_login = sum(1 for _, how in results if how == "logged_in")
    timings["users_s"] = round(time.monotonic() - t0, 3)
    print(f"provision: {args.users} users in {timings['users_s']}s "
          f"({args.users - n_login} registered, {n_login} already existed, logged in)",
          file=sys.stderr)
    server_name = users[0]["user_id"].split(":", 1)[1]
    rooms = []

    # 2. 1:1 rooms.
    if args.pairs:
        t0 = time.monotonic()
        pairs = [(i, i + 1) for i in range(0, args.users - 1, 2)]

        def make_pair(p):
            a, b = p
            room_id = create_room(client, users[a]["access_token"], {
                "preset": "trusted_private_chat",
                "is_direct": True,
                "invite": [users[b]["user_id"]],
            })
            join(client, users[b]["access_token"], room_id)
            return {"room_id": room_id, "kind": "pair", "creator": a, "members": [a, b]}

        rooms += run_parallel(args.concurrency, make_pair, pairs, "pairs")
        timings["pairs_s"] = round(time.monotonic() - t0, 3)
        print(f"provision: {len(pairs)} 1:1 rooms in {timings['pairs_s']}s", file=sys.stderr)

    # 3. Public rooms (big room, groups).
    def make_public_room(kind, members, name):
        creator = members[0]
        room_id = create_room(client, users[creator]["access_token"], {
            "preset": "public_chat",
            "name": name,
        })
        run_parallel(args.concurrency,
                     lambda m: join(client, users[m]["access_token"], room_id),
                     members[1:], f"{name} joins")
        return {"room_id": room_id, "kind": kind, "creator": creator, "members": members}

    if args.big_room:
        t0 = time.monotonic()
        rooms.append(make_public_room("big", list(range(args.big_room)), "big"))
        timings["big_room_s"] = round(time.monotonic() - t0, 3)
        print(f"provision: big room of {args.big_room} members in {timings['big_room_s']}s",
              file=sys.stderr)

    if groups:
        t0 = time.monotonic()
        count, size = groups
        for k in range(count):
            members = [(k * size + j) % args.users for j in range(size)]
            rooms.append(make_public_room("group", members, f"group{k}"))
        timings["groups_s"] = round(time.monotonic() - t0, 3)
        print(f"provision: {count} group rooms of {size} in {timings['groups_s']}s",
              file=sys.stderr)

    # 4. First since tokens.
    if args.initial_sync:
        t0 = time.monotonic()
        q = "/_matrix/client/v3/sync?timeout=0&filter=" + urllib.parse.quote(
            json.dumps(SYNC_FILTER, separators=(",", ":")))

        def first_since(u):
            u["since"] = client.request("GET", q, token=u["access_token"])["next_batch"]

        run_parallel(args.concurrency, first_since, users, "initial sync")
        timings["initial_sync_s"] = round(time.monotonic() - t0, 3)
        print(f"provision: initial sync of {args.users} users in {timings['initial_sync_s']}s",
              file=sys.stderr)

    timings["total_s"] = round(time.monotonic() - t_all, 3)
    out = {
        "server": {"base_url": base_url, "server_name": server_name},
        "sync_filter": SYNC_FILTER,
        "users": users,
        "rooms": rooms,
        "timings_s": timings,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"provision: wrote {args.out} ({len(users)} users, {len(rooms)} rooms) "
          f"in {timings['total_s']}s", file=sys.stderr)


if __name__ == "__main__":
    main()
