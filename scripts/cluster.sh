#!/usr/bin/env bash
# Starts a small Estuary cluster on loopback: Redis (interaction bus and origin
# directory), an origin that publishes the --demo test pattern, and two edges that find
# the stream in the directory and pull it over LL-HLS (HTTP/2); each edge is a content
# steering pathway of the other. Ctrl-C stops everything.
#
#   scripts/cluster.sh                  # release build
#   PROFILE=debug scripts/cluster.sh    # debug build (faster to build, slower to run)
#
# Ports (override by env): ORIGIN_HTTP=8080 ORIGIN_SRT=9000 ORIGIN_RTMP=1935
# EDGE1_HTTP=8081 EDGE2_HTTP=8082 REDIS_PORT=6390. Watch at http://localhost:8081/watch/demo (edge 1).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
ORIGIN_HTTP=${ORIGIN_HTTP:-8080}
ORIGIN_SRT=${ORIGIN_SRT:-9000}
EDGE1_HTTP=${EDGE1_HTTP:-8081}
EDGE2_HTTP=${EDGE2_HTTP:-8082}
REDIS_PORT=${REDIS_PORT:-6390}
SECRET=${UPSTREAM_SECRET:-cluster-upstream-secret}
TOKEN_SECRET=${TOKEN_SECRET:-cluster-token-secret-0123456789abcdef}
TARGET=${CARGO_TARGET_DIR:-target}
BIN="$TARGET/$PROFILE/estuary"

if [ "$PROFILE" = release ]; then
  cargo build --release --locked
else
  cargo build --locked
fi

DIR=$(mktemp -d /tmp/estuary-cluster.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "cluster: stopped (logs in $DIR)"
}
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$DIR" > "$DIR/redis.log" 2>&1 &
PIDS+=($!)

common() { # $1 = http port, $2 = srt port; RTMP only on the origin
  cat <<CFG
srt.listen = "127.0.0.1:$2"
http.listen = "127.0.0.1:$1"
rtmp.enabled = $([ "$2" = "$ORIGIN_SRT" ] && echo true || echo false)
rtmp.listen = "127.0.0.1:${ORIGIN_RTMP:-1935}"
[interact]
bus = "redis://127.0.0.1:$REDIS_PORT"
token_secret = "$TOKEN_SECRET"
CFG
}

# The origin registers the streams published to it in Redis (stream -> its base URL);
# edges find them there, with the origin as a static fallback.
{ common "$ORIGIN_HTTP" "$ORIGIN_SRT"; cat <<CFG
[upstream]
secret = "$SECRET"
require_secret = true
redis = "redis://127.0.0.1:$REDIS_PORT"
[streams.demo]
CFG
} > "$DIR/origin.toml"
for e in 1 2; do
  port=$EDGE1_HTTP; [ "$e" = 2 ] && port=$EDGE2_HTTP
  # Edges take SRT on a port of their own too (unused here).
  { common "$port" "$((ORIGIN_SRT + e))"; cat <<CFG
[upstream]
origins = ["http://127.0.0.1:$ORIGIN_HTTP/live"]
redis = "redis://127.0.0.1:$REDIS_PORT"
secret = "$SECRET"
# Each edge is a content steering pathway: stop one, its players move to the other.
[steering]
pathways = [{ id = "edge1", base = "http://127.0.0.1:$EDGE1_HTTP" },
            { id = "edge2", base = "http://127.0.0.1:$EDGE2_HTTP" }]
self_id = "edge$e"
ttl = "10s"
CFG
  } > "$DIR/edge$e.toml"
done

for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

start() { # $1 = name, then extra args
  local name=$1; shift
  "$BIN" --config "$DIR/$name.toml" "$@" > "$DIR/$name.out" 2> "$DIR/$name.log" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q listening "$DIR/$name.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "cluster: $name did not start:" >&2; cat "$DIR/$name.log" >&2; exit 1
}
start origin --demo
start edge1
start edge2

cat <<MSG
cluster: up (configs and logs in $DIR)
  origin  http://127.0.0.1:$ORIGIN_HTTP  (pullers need the upstream secret)
  edge 1  http://localhost:$EDGE1_HTTP/watch/demo
  edge 2  http://localhost:$EDGE2_HTTP/watch/demo
  metrics curl -s http://127.0.0.1:$EDGE1_HTTP/metrics | grep estuary_upstream
  steering curl -s http://127.0.0.1:$EDGE1_HTTP/live/demo/steering.json  (pathways edge1, edge2)
MSG
if [ -n "${CLUSTER_CHECK:-}" ]; then
  # Non-interactive check: both edges serve the demo stream, then exit.
  for port in "$EDGE1_HTTP" "$EDGE2_HTTP"; do
    ok=
    for _ in $(seq 60); do
      if curl -sf "http://127.0.0.1:$port/live/demo/source/index.m3u8" | grep -q EXT-X-PART; then ok=1; break; fi
      sleep 0.5
    done
    [ -n "$ok" ] || { echo "cluster: edge on $port serves no playlist" >&2; exit 1; }
    curl -sf "http://127.0.0.1:$port/live/demo/index.m3u8" | grep -q EXT-X-CONTENT-STEERING \
      || { echo "cluster: edge on $port gives no content steering" >&2; exit 1; }
    echo "cluster: edge on $port serves /live/demo, with content steering"
  done
  for _ in $(seq 20); do
    where=$(redis-cli -p "$REDIS_PORT" GET estuary:origin:demo)
    [ -n "$where" ] && break
    sleep 0.5
  done
  echo "cluster: directory: demo -> ${where:-not registered}"
  sleep "${CLUSTER_CHECK}"
  exit 0
fi
wait
