#!/usr/bin/env bash
# Runs every benchmark scenario of issue 2, section 8, against medhub (SQLite; throughput also
# on PostgreSQL) and its peers (Socket.IO, Synapse), RUNS times each, under the same load
# generator (medhub-bench). Writes one JSON file per run under bench/results/raw/<stamp>/
# (git-ignored), a summary with medians to bench/results/summary.json, and the latency plot
# to docs/bench-latency.svg. Every command it runs is printed first, prefixed with "+".
#
# Environment:
#   RUNS=3                runs of every scenario (the summary reports medians)
#   ONLY=regex            run only the jobs whose name matches (e.g. ONLY=medhub, ONLY='direct|resume')
#   QUICK=1               tiny sizes, 1 run: checks this script end to end in a few minutes
#   CARGO_TARGET_DIR      where binaries are built (default: target/ in the repository)
#   MEDHUB_BENCH_POSTGRES admin URL of PostgreSQL (default postgres://postgres@127.0.0.1:5432/postgres)
#   MEDHUB_BENCH_DIR      scratch and Synapse directory (default /var/tmp/medhub-bench)
#   BENCH_SOMAXCONN=N     raise net.core.somaxconn to N first (needs root; printed). Default: leave it.
#   SKIP_SYNAPSE=1        leave Synapse out (its provisioning is slow)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
RUNS=${RUNS:-3}
QUICK=${QUICK:-0}
ONLY=${ONLY:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
export MEDHUB_BENCH_DIR=${MEDHUB_BENCH_DIR:-/var/tmp/medhub-bench}
PG=${MEDHUB_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
RESULTS=$REPO/bench/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/raw/$STAMP
PLOT=$REPO/docs/bench-latency.svg
BENCH=$CARGO_TARGET_DIR/release/medhub-bench

run() {
  printf '+'
  local a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf ' %s' "$a"; else printf ' %q' "$a"; fi
  done
  printf '\n'
  "$@"
}

failures=()

# 1. Binaries: the server and the load generator, both release builds.
run cargo build --release --locked -p medhub -p medhub-bench || exit 1
if [ ! -d bench/peers/socketio/node_modules ]; then
  (cd bench/peers/socketio && run npm ci) || exit 1
fi

# 2. The machine, as the results depend on it.
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), open files $(ulimit -n)"
echo "net.core.somaxconn=$(cat /proc/sys/net/core/somaxconn) net.ipv4.tcp_max_syn_backlog=$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog) ip_local_port_range=$(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range)"
if [ -n "${BENCH_SOMAXCONN:-}" ]; then
  run sysctl -w "net.core.somaxconn=$BENCH_SOMAXCONN" || exit 1
else
  echo "(net.core.somaxconn left unchanged; set BENCH_SOMAXCONN=16384 to raise it)"
fi
run mkdir -p "$RAW" || exit 1

# 3. The jobs: name, then medhub-bench arguments.
if [ "$QUICK" = 1 ]; then
  RUNS=1
  N=(--clients 300)
  DIRECT=(--clients 300 --rate 200 --duration 3)
  FAN=(--members 50,300 --fanout-duration 2 --fanout-messages 50)
  TP=(--duration 3 --warmup 1)
  TP_SWEEP=("--senders 16 --window 16")
  SYN_USERS=(--clients 10)
  SYN_FAN=(--members 10 --fanout-duration 2 --fanout-messages 10)
  SYN_TP=(--senders 8)
  RESUME=(--clients 300 --missed 50)
else
  N=()
  DIRECT=()
  FAN=()
  TP=()
  # The same 4,096 sends outstanding, spread over fewer or more connections.
  TP_SWEEP=("--senders 64 --window 64" "--senders 128 --window 32" "--senders 256 --window 16")
  SYN_USERS=(--clients 100)
  SYN_FAN=(--members 100)
  SYN_TP=(--senders 32 --window 4)
  RESUME=()
fi

jobs=()
add() { jobs+=("$*"); }
add "medhub-storm storm ${N[*]}"
add "medhub-idle idle ${N[*]}"
add "medhub-direct direct ${DIRECT[*]}"
add "medhub-fanout fanout ${FAN[*]}"
for cfg in "${TP_SWEEP[@]}"; do
  tag=$(echo "$cfg" | awk '{print $2 "x" $4}')
  add "medhub-throughput-sqlite-$tag throughput $cfg ${TP[*]}"
  add "medhub-throughput-postgres-$tag throughput $cfg ${TP[*]} --postgres $PG"
done
add "medhub-resume resume ${RESUME[*]}"
add "floor-fanout fanout --target floor ${FAN[*]}"
add "socketio-storm storm --target socketio ${N[*]}"
add "socketio-idle idle --target socketio ${N[*]}"
add "socketio-direct direct --target socketio ${DIRECT[*]}"
add "socketio-fanout fanout --target socketio ${FAN[*]}"
for cfg in "${TP_SWEEP[@]}"; do
  tag=$(echo "$cfg" | awk '{print $2 "x" $4}')
  add "socketio-throughput-$tag throughput --target socketio $cfg ${TP[*]}"
done
if [ "${SKIP_SYNAPSE:-0}" != 1 ]; then
  add "synapse-direct direct --target synapse ${SYN_USERS[*]} ${DIRECT[*]:+--duration 3}"
  add "synapse-fanout fanout --target synapse ${SYN_FAN[*]}"
  add "synapse-throughput throughput --target synapse ${SYN_TP[*]} ${TP[*]}"
fi

# 4. Run them, RUNS times each, interleaved (run 1 of everything, then run 2, ...), so that
# a slow period of the machine does not fall on one target only.
for i in $(seq 1 "$RUNS"); do
  for job in "${jobs[@]}"; do
    read -r name args <<<"$job"
    if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then
      continue
    fi
    echo
    echo "=== $name, run $i of $RUNS ==="
    # shellcheck disable=SC2086 # $args is a list of arguments
    run "$BENCH" $args --out "$RAW/$name-$i.json"
    rc=$?
    if [ $rc -ne 0 ]; then
      failures+=("$name run $i (exit $rc)")
    fi
  done
done

# 5. Medians, ratios and the plot.
echo
run "$BENCH" summarize --raw "$RAW" --out "$RESULTS/summary.json" --plot "$PLOT" || failures+=("summarize")
run cp "$RESULTS/summary.json" "$RAW/summary.json"

echo
echo "raw results: $RAW"
echo "summary:     $RESULTS/summary.json"
echo "plot:        $PLOT"
if [ ${#failures[@]} -gt 0 ]; then
  echo "runs with problems (see their JSON 'problems' and the output above):"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
