#!/usr/bin/env bash
# Stop the Synapse started by start.sh: SIGTERM, wait up to 30 s, then SIGKILL.
set -euo pipefail

BENCH_DIR=${MEDHUB_BENCH_DIR:-/var/tmp/medhub-bench}
PID_FILE=$BENCH_DIR/synapse/synapse.pid

if [ ! -f "$PID_FILE" ]; then
  echo "stop: not running (no $PID_FILE)"
  exit 0
fi
pid=$(cat "$PID_FILE")
if ! kill -0 "$pid" 2>/dev/null; then
  echo "stop: pid $pid not running; removing stale pid file"
  rm -f "$PID_FILE"
  exit 0
fi
kill -TERM "$pid"
for _ in $(seq 1 60); do
  kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; echo "stop: stopped pid $pid"; exit 0; }
  sleep 0.5
done
echo "stop: pid $pid did not exit after 30 s; sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null || true
rm -f "$PID_FILE"
echo "stop: killed pid $pid"
