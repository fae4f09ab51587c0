#!/usr/bin/env bash
# Soak: the shipped ladder under steady load for MINUTES, on loopback (release builds).
#  - one publisher (ffmpeg over SRT, default options, 720p30) that reconnects every
#    RECONNECT_MIN minutes (default 5);
#  - 200 LL-HLS players (scripts/hls_load: blocking reload + preload-hint part GET each),
#    100 on the source rendition and 100 on the first encoded rung;
#  - 1000 WebSocket clients in the stream's room, chat at CHAT_RATE msg/s (scripts/ws_load).
# Every SAMPLE_SECS it prints the node's RSS, the media cache's bytes (bounded by
# cache.max_bytes, 512 MiB shipped: RSS grows until the cache is full, so read the drift
# against it), open file descriptors, publishers and parts published. At the end: RSS drift after warm-up (first sample after WARMUP_MIN
# minutes against the last), file descriptors before load and after the clients left,
# and what the clients saw (errors by kind, parts, stalls; errors during the reconnect
# windows are expected: the publisher is away for a moment).
#
# Usage: scripts/soak.sh [MINUTES]   (default 60; env RECONNECT_MIN=5 WARMUP_MIN=5
#                                      SAMPLE_SECS=30 CHAT_RATE=20)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
MINUTES=${1:-60}
RECONNECT_MIN=${RECONNECT_MIN:-5}
WARMUP_MIN=${WARMUP_MIN:-5}
SAMPLE_SECS=${SAMPLE_SECS:-30}
CHAT_RATE=${CHAT_RATE:-20}
SECS=$((MINUTES * 60))
SECRET=soak-secret-0123456789abcdef0123
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -q
cargo build --release --locked -q --manifest-path scripts/hls_load/Cargo.toml --target-dir target/hls_load
cargo build --release --locked -q --manifest-path scripts/ws_load/Cargo.toml --target-dir target/ws_load
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; echo "logs in $dir"' EXIT

# The shipped config (ladder included), on loopback ports the OS picks.
sed -e 's/^listen = "0.0.0.0:[0-9]*"/listen = "127.0.0.1:0"/' \
    -e "s/^token_secret = \"\"/token_secret = \"$SECRET\"/" config/estuary.toml > "$dir/soak.toml"
cat >> "$dir/soak.toml" <<CFG
[streams.soak]
CFG
RUST_LOG=warn start_node "$dir/soak.toml" "$dir"
http=$NODE_HTTP srt=$NODE_SRT pid=$NODE_PID
fds() { ls "/proc/$pid/fd" | wc -l; }
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }
metric() { curl -s "http://$http/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%.0f", s}'; }
fd_base=$(fds)

# The publisher: reconnects every RECONNECT_MIN minutes until the end.
(
  end=$((SECONDS + SECS))
  while [ $SECONDS -lt $end ]; do
    left=$((end - SECONDS)); run=$((RECONNECT_MIN * 60)); [ $left -lt $run ] && run=$left
    ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
      -f lavfi -i sine -t "$run" -c:v libx264 -preset veryfast -tune zerolatency -g 60 -b:v 3M \
      -c:a aac -f mpegts "srt://$srt?streamid=soak" || true
    sleep 1
  done
) &
for _ in $(seq 150); do curl -sf "http://$http/live/soak/index.m3u8" >/dev/null && break; sleep 0.2; done
rung=$(curl -s "http://$http/live/soak/index.m3u8" | grep -v '^#' | grep -v '^source/' | head -1)
rung=${rung%%/*}
echo "node $http pid $pid; rung $rung; ${MINUTES} min"

LOAD=target/hls_load/release/hls_load
$LOAD play --url "http://$http/live/soak/source/index.m3u8" --players 100 --secs "$SECS" > "$dir/hls-source.txt" &
$LOAD play --url "http://$http/live/soak/$rung/index.m3u8" --players 100 --secs "$SECS" > "$dir/hls-rung.txt" &
target/ws_load/release/ws_load run --addr "$http" --stream soak --clients 1000 \
  --rate "$CHAT_RATE" --secs "$SECS" --secret "$SECRET" > "$dir/ws.txt" 2> "$dir/ws.err" &
ws=$!

printf '%6s %8s %9s %6s %11s %8s\n' min rss_MB cache_MB fds publishers parts
warm_rss=""
start=$SECONDS
while [ $((SECONDS - start)) -lt "$SECS" ]; do
  sleep "$SAMPLE_SECS"
  m=$(( (SECONDS - start) / 60 ))
  r=$(rss)
  [ -z "$warm_rss" ] && [ "$m" -ge "$WARMUP_MIN" ] && warm_rss=$r
  printf '%6d %8d %9d %6d %11s %8s\n' "$m" "$r" "$(( $(metric estuary_cache_bytes) / 1048576 ))" "$(fds)" \
    "$(metric estuary_publishers_active)" "$(metric estuary_parts_published_total)"
done
last_rss=$(rss)
wait $ws || true
for _ in $(seq 60); do [ -z "$(jobs -rp | grep -v "^$$")" ] && break; sleep 1; done
sleep 5
echo
echo "RSS after warm-up ${warm_rss:-?} MB, at the end ${last_rss} MB"
[ -n "$warm_rss" ] && awk -v a="$warm_rss" -v b="$last_rss" 'BEGIN { printf "RSS drift %.1f %%\n", 100 * (b - a) / a }'
echo "fds before load $fd_base, after the clients left $(fds)"
for f in hls-source hls-rung; do echo "== $f"; cat "$dir/$f.txt"; done
echo "== websocket"; cat "$dir/ws.txt"
