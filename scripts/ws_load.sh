#!/usr/bin/env bash
# Load benchmarks of the interaction WebSocket.
#
#   scripts/ws_load.sh [CLIENTS] [RATE] [SECS]   fan-out (defaults: 10000 50 10): CLIENTS
#       viewers in one room, one host publishing chat at RATE msg/s for SECS s. Prints
#       deliveries/s, p50/p99 delivery latency (send -> client read), node CPU and RSS per
#       idle connection.
#   scripts/ws_load.sh idle [CONNS]              idle connections (default 100000): opens
#       CONNS WebSockets from several source addresses, prints the node's RSS growth per
#       connection, then closes them.
#
# Isolation, so the figures are the node's:
#   NETNS=1 (default when root): the load client runs in its own network namespace, joined
#       to the node by a veth pair on 10.77.X.0/24 that the script creates and deletes.
#       NETNS=0: loopback (idle mode then uses sources 127.0.0.2-9).
#   NODE_CPUS=0 CLIENT_CPUS=1 (defaults): taskset CPU lists for the node and the client;
#       set both empty to let them share every core.
# NICE=-10 (default): the script runs in its own session, whose scheduler autogroup gets
#   this niceness (with sched_autogroup, niceness only counts inside a session), so that
#   other work on a shared machine (builds) does not preempt the node and the client;
#   NICE=0 to leave priorities alone.
# Comparison: BASELINE_BIN=path runs that binary too, alternating with the candidate for
#   ROUNDS rounds each (default 1), and prints the p99 ratio per round.
# Node: ESTUARY_BIN (default: the release `estuary`, built here), or WS_LOAD_NODE=inprocess
#   for `ws_load serve` (interaction routes only).
set -euo pipefail
NICE=${NICE:--10}
if [ "$NICE" != 0 ] && [ -z "${WS_LOAD_SESSION:-}" ] && command -v setsid >/dev/null; then
  exec setsid -w env WS_LOAD_SESSION=1 "$(realpath "$0")" "$@"
fi
cd "$(dirname "$0")/.."

if [ "$NICE" != 0 ]; then
  echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null || echo "could not set the autogroup's niceness" >&2
  renice -n "$NICE" -p $$ >/dev/null 2>&1 || true
fi
MODE=fanout
if [ "${1:-}" = idle ]; then
  MODE=idle
  shift
  CONNS=${1:-100000}
else
  CLIENTS=${1:-10000}
  RATE=${2:-50}
  SECS=${3:-10}
fi
SECRET=load-secret-0123456789abcdef
NODE_CPUS=${NODE_CPUS-0}
CLIENT_CPUS=${CLIENT_CPUS-1}
ROUNDS=${ROUNDS:-1}
if [ -z "${NETNS:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then NETNS=1; else NETNS=0; fi
fi

# Each side holds one socket per connection.
WANT=$(( ${CONNS:-${CLIENTS:-0}} + 200 ))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$WANT" ]; then
  echo "ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn)); $WANT descriptors are needed per process." >&2
  echo "Raise the hard limit (root with CAP_SYS_RESOURCE: ulimit -Hn $WANT) or ask for fewer." >&2
  exit 1
fi

LOAD_TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --manifest-path scripts/ws_load/Cargo.toml --target-dir "$LOAD_TARGET" >&2
LOAD=$LOAD_TARGET/release/ws_load
BIN=${ESTUARY_BIN:-$LOAD_TARGET/release/estuary}
if [ "${WS_LOAD_NODE:-binary}" != inprocess ] && [ -z "${ESTUARY_BIN:-}" ]; then
  cargo build --release --bin estuary >&2
fi

TMP=$(mktemp -d)
NS=wsl$$
NODE_PID=""
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  if [ "$NETNS" = 1 ]; then
    ip netns del "$NS" 2>/dev/null || true
    ip link del "${NS}h" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# Where the node listens and where the client connects from.
if [ "$NETNS" = 1 ]; then
  NET="10.77.$(( $$ % 250 ))"
  ip netns add "$NS"
  ip link add "${NS}h" type veth peer name "${NS}c"
  ip link set "${NS}c" netns "$NS"
  ip addr add "$NET.1/24" dev "${NS}h"
  ip link set "${NS}h" up
  ip netns exec "$NS" ip link set lo up
  for i in 2 3 4 5 6 7 8 9; do ip netns exec "$NS" ip addr add "$NET.$i/24" dev "${NS}c"; done
  ip netns exec "$NS" ip link set "${NS}c" up
  NODE_IP=$NET.1
  SOURCES=$(echo "$NET".{2..9} | tr ' ' ',')
  IN_NS=(ip netns exec "$NS")
else
  NODE_IP=127.0.0.1
  SOURCES=$(echo 127.0.0.{2..9} | tr ' ' ',')
  IN_NS=()
fi
# Command prefix: the CPU list $1, if any.
pin() { if [ -n "$1" ]; then echo taskset -c "$1"; fi; }
CLIENT_THREADS=()
if [ -n "$CLIENT_CPUS" ]; then
  CLIENT_THREADS=(--threads "$(taskset -c "$CLIENT_CPUS" nproc)")
fi

# Starts a node (binary $1) and sets NODE_PID and ADDR.
start_node() {
  local bin=$1
  : >"$TMP/out"
  if [ "${WS_LOAD_NODE:-binary}" = inprocess ]; then
    $(pin "$NODE_CPUS") "$LOAD" serve --secret "$SECRET" --listen "$NODE_IP:0" >"$TMP/out" 2>"$TMP/err" &
  else
    # The room is a configured stream's: rooms exist only for configured or live streams.
    cat >"$TMP/estuary.toml" <<TOML
[http]
listen = "$NODE_IP:0"
max_connections = $WANT
[srt]
listen = "127.0.0.1:0"
[interact]
token_secret = "$SECRET"
conn_rate_per_sec = 1000000
conn_burst = 1000000
max_connections = $WANT
send_queue = 4096
[streams.load]
TOML
    RUST_LOG=warn $(pin "$NODE_CPUS") "$bin" --config "$TMP/estuary.toml" >"$TMP/out" 2>"$TMP/err" &
  fi
  NODE_PID=$!
  ADDR=""
  for _ in $(seq 1 100); do
    ADDR=$(grep -o '"http":"[^"]*"' "$TMP/out" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "node did not start:" >&2; cat "$TMP/err" >&2; exit 1; }
}

stop_node() {
  kill "$NODE_PID" 2>/dev/null || true
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=""
}

# One run against binary $1 labelled $2; prints the client's report, keeps its RESULT line.
one_run() {
  local bin=$1 label=$2
  start_node "$bin"
  echo "== $label: node $ADDR pid $NODE_PID (cpus ${NODE_CPUS:-all}), client ${IN_NS[*]:+in netns $NS, }cpus ${CLIENT_CPUS:-all}" >&2
  if [ "$MODE" = idle ]; then
    "${IN_NS[@]}" $(pin "$CLIENT_CPUS") "$LOAD" "${CLIENT_THREADS[@]}" idle --addr "$ADDR" \
      --conns "$CONNS" --pid "$NODE_PID" --bind "$SOURCES" | tee "$TMP/run"
  else
    "${IN_NS[@]}" $(pin "$CLIENT_CPUS") "$LOAD" "${CLIENT_THREADS[@]}" run --addr "$ADDR" \
      --clients "$CLIENTS" --rate "$RATE" --secs "$SECS" --secret "$SECRET" \
      --pid "$NODE_PID" --bind "$SOURCES" | tee "$TMP/run"
  fi
  grep '^RESULT' "$TMP/run" | sed "s/^RESULT/RESULT $label/" >>"$TMP/results"
  stop_node
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the run; $(cat /proc/$$/autogroup 2>/dev/null)" >&2
for r in $(seq 1 "$ROUNDS"); do
  [ -n "${BASELINE_BIN:-}" ] && one_run "$BASELINE_BIN" "baseline#$r"
  one_run "$BIN" "estuary#$r"
done
echo
echo "summary ($MODE; node cpus ${NODE_CPUS:-all}, client cpus ${CLIENT_CPUS:-all}, netns $NETNS):"
cat "$TMP/results"
if [ -n "${BASELINE_BIN:-}" ] && [ "$MODE" = fanout ]; then
  awk '/^RESULT baseline/ { for (i = 1; i <= NF; i++) if ($i ~ /^p99_ms=/) { split($i, a, "="); b = a[2] } }
       /^RESULT estuary/ { for (i = 1; i <= NF; i++) if ($i ~ /^p99_ms=/) { split($i, a, "="); printf "p99 ratio baseline/estuary, %s: %.2f\n", $2, b / a[2] } }' \
    "$TMP/results"
fi
