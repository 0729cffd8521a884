#!/usr/bin/env python3
"""Smoke test for a running, provisioned benchmark Synapse (standard library only).

    smoke.py USERS_JSON [--messages N] [--room-kind pair|big|group] [--verbose]

USERS_JSON is provision.py's output; it needs >= 2 users and a room whose
members include users 0 and 1 (e.g. `provision.py 3 --big-room 3`). It starts
nothing itself. It checks the client-server calls the load generator uses:

  1. GET  /sync?timeout=0&filter=...         first since token for users 0 and 1
  2. GET  /sync?since=...&timeout=30000       long-poll by user 1 in a thread
  3. PUT  /rooms/{roomId}/send/m.room.message/{txnId}   by user 0
  4. the event arrives in user 1's sync under rooms.join[roomId].timeline.events
  5. user 0's own sync shows it with unsigned.transaction_id == txnId
  6. PUT with the same txnId again returns the same event_id (idempotent)
  7. N sequential PUTs by user 0 on one keep-alive connection: rough msgs/s,
     then user 1 receives all N via incremental syncs.

Exits 0 when every check passes.
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse
import uuid

passed = 0
failed = 0


def check(name, cond, detail=None):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail is not None else ""))


def abbrev(obj, limit=1200):
    s = json.dumps(obj, separators=(",", ":"))
    return s if len(s) <= limit else s[:limit] + f"...<{len(s)} chars>"


class Conn:
    """One keep-alive HTTP/1.1 connection, like a real client would use."""

    def __init__(self, base_url, token, verbose=False):
        u = urllib.parse.urlsplit(base_url)
        self.host, self.port = u.hostname, u.port or 80
        self.token = token
        self.verbose = verbose
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf8")
        headers = {"Authorization": "Bearer " + self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        out = json.loads(raw) if raw else {}
        if self.verbose:
            print(f"  {method} {path}" + (f"  body={abbrev(body)}" if body is not None else ""))
            print(f"  -> {resp.status} {abbrev(out)}")
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status} {out}")
        return out


def sync_path(filter_json, since=None, timeout_ms=0):
    q = {"timeout": str(timeout_ms), "filter": json.dumps(filter_json, separators=(",", ":"))}
    if since:
        q["since"] = since
    return "/_matrix/client/v3/sync?" + urllib.parse.urlencode(q)


def timeline(sync_resp, room_id):
    room = sync_resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return room.get("timeline", {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("users_json")
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--room-kind", default=None, choices=["pair", "big", "group"],
                    help="use a room of this kind (default: the first room with users 0 and 1)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    with open(args.users_json, encoding="utf8") as f:
        prov = json.load(f)
    base = prov["server"]["base_url"]
    flt = prov["sync_filter"]
    ua, ub = prov["users"][0], prov["users"][1]
    room = next(r for r in prov["rooms"]
                if 0 in r["members"] and 1 in r["members"]
                and (args.room_kind is None or r["kind"] == args.room_kind))
    room_id = room["room_id"]
    print(f"smoke: {base} room {room_id} ({room['kind']}, {len(room['members'])} members)")

    a = Conn(base, ua["access_token"], args.verbose)
    b = Conn(base, ub["access_token"], args.verbose)

    # 1. First since tokens.
    since_a = a.request("GET", sync_path(flt))["next_batch"]
    since_b = b.request("GET", sync_path(flt))["next_batch"]
    check("initial sync returns next_batch", bool(since_a) and bool(since_b))

    # 2. User 1 long-polls (in a loop: the first since token may be up to 2 min
    #    old, because Synapse caches /sync responses, so older events can come first).
    txn = "smoke-" + uuid.uuid4().hex
    body = {"msgtype": "m.text", "body": f"hello from smoke {txn}"}
    result = {}

    def find(resp, pred):
        return [e for e in timeline(resp, room_id).get("events", []) if pred(e)]

    def long_poll():
        since = since_b
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            resp = b.request("GET", sync_path(flt, since, 30000))
            since = resp["next_batch"]
            hits = find(resp, lambda e: e.get("content") == body)
            if hits:
                result.update(resp=resp, event=hits[0], t=time.monotonic(), since=since)
                return

    th = threading.Thread(target=long_poll)
    th.start()
    time.sleep(0.5)  # let the long-poll park

    # 3. Send.
    path = (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id, safe='')}"
            f"/send/m.room.message/{txn}")
    t_send = time.monotonic()
    ev = a.request("PUT", path, body)
    t_ack = time.monotonic()
    check("PUT send returns event_id", ev.get("event_id", "").startswith("$"), ev)

    # 4. Delivery via user 1's long-poll.
    th.join(35)
    e = result.get("event")
    check("long-poll /sync of user 1 returns the message",
          e is not None and e.get("event_id") == ev.get("event_id"), e)
    if e is not None:
        check("event has type/sender/content/origin_server_ts",
              e["type"] == "m.room.message" and e["sender"] == ua["user_id"]
              and e["content"] == body and isinstance(e.get("origin_server_ts"), int), e)
        check("transaction_id is not shown to other users",
              "transaction_id" not in e.get("unsigned", {}), e.get("unsigned"))
        print(f"smoke: send ack {1000 * (t_ack - t_send):.1f} ms, "
              f"long-poll returned it {1000 * (result['t'] - t_send):.1f} ms after the PUT started")
        since_b = result["since"]

    # 5. Sender's own sync.
    own = []
    deadline = time.monotonic() + 30
    while not own and time.monotonic() < deadline:
        ra = a.request("GET", sync_path(flt, since_a, 5000))
        since_a = ra["next_batch"]
        own = find(ra, lambda x: x.get("event_id") == ev.get("event_id"))
    check("sender's own sync has unsigned.transaction_id == txnId",
          len(own) == 1 and own[0].get("unsigned", {}).get("transaction_id") == txn,
          own)

    # 6. Idempotent retry.
    ev2 = a.request("PUT", path, body)
    check("same txnId again returns the same event_id", ev2.get("event_id") == ev["event_id"],
          [ev, ev2])

    # 7. Sequential throughput of one sender.
    verbose, a.verbose = a.verbose, False
    n = args.messages
    sent = []
    t0 = time.monotonic()
    for i in range(n):
        txn_i = f"seq-{uuid.uuid4().hex}"
        r = a.request("PUT", (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id, safe='')}"
                              f"/send/m.room.message/{txn_i}"),
                      {"msgtype": "m.text", "body": f"m{i} " + "x" * 100})
        sent.append(r["event_id"])
    dt = time.monotonic() - t0
    a.verbose = verbose
    print(f"smoke: {n} sequential PUTs by one sender in {dt:.2f}s = {n / dt:.0f} msg/s "
          f"(mean {1000 * dt / n:.1f} ms per PUT, room of {len(room['members'])})")

    b.verbose = False
    sent_set = set(sent)
    got = []
    limited = False
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        r = b.request("GET", sync_path(flt, since_b, 5000))
        tl = timeline(r, room_id)
        limited = limited or tl.get("limited", False)
        got += [e["event_id"] for e in tl.get("events", []) if e["event_id"] in sent_set]
        since_b = r["next_batch"]
    check(f"user 1 received all {n} messages via /sync, in order", got == sent,
          f"got {len(got)} of {n}")
    check("no sync was 'limited' (timeline limit 1000 in the filter)", not limited)

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
