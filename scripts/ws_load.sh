#!/usr/bin/env bash
# Load benchmark of the interaction WebSocket: N clients in one room on loopback, one host
# publishing chat at a fixed rate. Prints deliveries/s, p50/p99 delivery latency and node
# RSS per idle connection.
#
#   scripts/ws_load.sh [CLIENTS] [RATE] [SECS]        (defaults: 10000 50 10)
#
# Node: the `estuary` binary (ESTUARY_BIN, default target/release/estuary) with a temporary
# config, or, with WS_LOAD_NODE=inprocess, `ws_load serve` (interaction routes only).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-10000}
RATE=${2:-50}
SECS=${3:-10}
SECRET=load-secret-0123456789abcdef
# Each side holds CLIENTS sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CLIENTS + 100)) ]; then
  echo "ulimit -n is $(ulimit -n); need more than $CLIENTS" >&2
  exit 1
fi
cargo build --release --manifest-path scripts/ws_load/Cargo.toml --target-dir target/ws_load >&2
LOAD=target/ws_load/release/ws_load
TMP=$(mktemp -d)
cleanup() { [ -n "${NODE_PID:-}" ] && kill "$NODE_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
if [ "${WS_LOAD_NODE:-binary}" = inprocess ]; then
  "$LOAD" serve --secret "$SECRET" >"$TMP/out" 2>"$TMP/err" &
  NODE_PID=$!
else
  BIN=${ESTUARY_BIN:-target/release/estuary}
  [ -n "${ESTUARY_BIN:-}" ] || cargo build --release --bin estuary >&2
  # The room is a configured stream's: rooms exist only for configured or live streams.
  cat >"$TMP/estuary.toml" <<TOML
[http]
listen = "127.0.0.1:0"
[srt]
listen = "127.0.0.1:0"
[interact]
token_secret = "$SECRET"
conn_rate_per_sec = 1000000
conn_burst = 1000000
max_connections = 100000
send_queue = 4096
[streams.load]
TOML
  RUST_LOG=warn "$BIN" --config "$TMP/estuary.toml" >"$TMP/out" 2>"$TMP/err" &
  NODE_PID=$!
fi
ADDR=""
for _ in $(seq 1 100); do
  ADDR=$(grep -o '"http":"[^"]*"' "$TMP/out" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "node did not start:" >&2; cat "$TMP/err" >&2; exit 1; }
echo "node $ADDR pid $NODE_PID; $CLIENTS clients, $RATE msg/s for ${SECS}s" >&2
"$LOAD" run --addr "$ADDR" --clients "$CLIENTS" --rate "$RATE" --secs "$SECS" \
  --secret "$SECRET" --pid "$NODE_PID"
