#!/usr/bin/env bash
# Parked blocking requests at scale (`hls_load parked`): one node, a real publisher
# (ffmpeg over SRT, a pre-encoded 720p30 file sent in real time with -c copy, so the
# publisher costs next to no CPU), and per round 20,000 requests parked at once:
#  - HTTP/2: 10,000 blocking playlist reloads + 10,000 preload-hint part GETs over 1,000
#    connections (20 streams each);
#  - HTTP/1.1: one request per connection, 10,000 connections (5,000 + 5,000; the fd hard
#    limit here is 20,000 per process, so 20,000 HTTP/1.1 connections do not fit).
# Each is released by one part's publication. Prints the node's RSS before / with the
# connections / with every request parked, KB per parked request, CPU while parked and
# during the release, and the release latency (response arrival minus the node's own
# publication stamp of the part) p50 / p99 / max over ROUNDS publishes.
# Parts are 1 s here so that 20,000 requests fit inside one part interval; the release
# path is the same at any part length. The video is 600 kb/s so that a part weighs what a
# 200 ms part of a 3 Mb/s stream does (about 75 KB): 10,000 copies of it are 750 MB to
# move, and that transfer, not the wakeup, bounds the last arrivals.
# Release latency is the arrival of each response's head (the node has answered); the
# arrival of the whole body is printed beside it.
#
# h2r and h1r park the same number of connections and requests, all playlist reloads:
# the release path without the part bodies to move.
# The node's live Rust heap (jemalloc's count, from /metrics) is printed beside RSS; it
# counts buffers hyper reserved but never wrote, which RSS (touched pages) does not.
#
# Usage: scripts/parked-bench.sh [ROUNDS] [PROTOCOLS]   (defaults 5, "h2 h1"; also h2r h1r)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
ROUNDS=${1:-5}
PROTOS=${2:-"h2 h1"}
ulimit -n "$(ulimit -Hn)"
T=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -q
cargo build --release --locked -q --manifest-path scripts/hls_load/Cargo.toml --target-dir "$T/hls_load"
LOAD=$T/hls_load/release/hls_load
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine -t 60 -c:v libx264 -preset ultrafast -tune zerolatency -g 60 -b:v 600k -maxrate 600k -bufsize 600k \
  -c:a aac -f mpegts "$dir/src.ts"
cat > "$dir/c.toml" <<CFG
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
rtmp.enabled = false
http.max_connections = 30000
http.idle_timeout = "120s"
hls.part_target = "1s"
hls.segment_target = "2s"
[streams.bench]
CFG
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
for proto in $PROTOS; do
  start_node "$dir/c.toml" "$dir"
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$dir/src.ts" -c copy \
    -f mpegts "srt://$NODE_SRT?streamid=bench" &
  pub=$!
  url="http://$NODE_HTTP/live/bench/source/index.m3u8"
  for _ in $(seq 100); do curl -sf "$url" | grep -q PRELOAD-HINT && break; sleep 0.3; done
  sleep 3
  case $proto in
    h2) args=(--h2 --conns 1000 --reloads 10000 --hints 10000) ;;
    h1) args=(--conns 10000 --reloads 5000 --hints 5000) ;;
    # Playlist reloads only (a few KB each): the wakeup and response path without the
    # 75 KB part bodies to move.
    h2r) args=(--h2 --conns 1000 --reloads 20000 --hints 0) ;;
    h1r) args=(--conns 10000 --reloads 10000 --hints 0) ;;
    *) echo "unknown protocol $proto (h2 h1 h2r h1r)" >&2; exit 2 ;;
  esac
  echo "== $proto"
  "$LOAD" parked --url "$url" --node-pid "$NODE_PID" --rounds "$ROUNDS" \
    --sources 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 "${args[@]}"
  kill "$pub" "$NODE_PID" 2>/dev/null || true
  wait "$pub" "$NODE_PID" 2>/dev/null || true
done
