#!/usr/bin/env bash
# Start Synapse in the background (run setup.sh first). Prints "ready <port>"
# once GET /_matrix/client/versions answers. Idempotent: if it is already
# running, just waits for it and prints the ready line.
#
# Files under $MEDHUB_BENCH_DIR/synapse/:
#   synapse.pid          pid of the Synapse process
#   homeserver.log       Synapse's log (log config from setup.sh)
#   synapse.stdout.log   stdout/stderr of the process (startup errors land here)
#
# Env: MEDHUB_BENCH_DIR (default /var/tmp/medhub-bench), START_TIMEOUT (s, default 120).
# The port is the one setup.sh wrote into homeserver.yaml; PORT, if set, must match.
set -euo pipefail

BENCH_DIR=${MEDHUB_BENCH_DIR:-/var/tmp/medhub-bench}
VENV=$BENCH_DIR/synapse-venv
SYN_DIR=$BENCH_DIR/synapse
CONFIG=$SYN_DIR/homeserver.yaml
PID_FILE=$SYN_DIR/synapse.pid
TIMEOUT=${START_TIMEOUT:-120}

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$CONFIG" ]; then
  echo "start: no venv or config under $BENCH_DIR; run setup.sh first" >&2
  exit 1
fi

port=$("$VENV/bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["listeners"][0]["port"])' "$CONFIG")
if [ -n "${PORT:-}" ] && [ "$PORT" != "$port" ]; then
  echo "start: PORT=$PORT but $CONFIG listens on $port; re-run PORT=$PORT setup.sh" >&2
  exit 1
fi

running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

if running; then
  echo "start: already running (pid $(cat "$PID_FILE"))" >&2
else
  rm -f "$PID_FILE"
  if port_in_use; then
    echo "start: 127.0.0.1:$port is already in use by another process" >&2
    exit 1
  fi
  cd "$SYN_DIR"
  nohup "$VENV/bin/python" -m synapse.app.homeserver --config-path "$CONFIG" \
    >>"$SYN_DIR/synapse.stdout.log" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  echo "start: started pid $(cat "$PID_FILE"), log $SYN_DIR/homeserver.log" >&2
fi

deadline=$((SECONDS + TIMEOUT))
until curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$port/_matrix/client/versions"; do
  if ! running; then
    echo "start: synapse exited; last lines of $SYN_DIR/synapse.stdout.log:" >&2
    tail -n 30 "$SYN_DIR/synapse.stdout.log" >&2 || true
    rm -f "$PID_FILE"
    exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "start: not ready after ${TIMEOUT}s (still running, pid $(cat "$PID_FILE"))" >&2
    exit 1
  fi
  sleep 0.5
done
if ! running; then
  echo "start: the answer on port $port did not come from pid $(cat "$PID_FILE" 2>/dev/null)" >&2
  exit 1
fi
echo "ready $port"
