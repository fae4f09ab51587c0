#!/usr/bin/env bash
# Memory across publisher reconnects: the shipped ladder (release build) takes CYCLES
# publishes of SECS seconds each (ffmpeg over SRT, libsrt defaults, 720p30 3 Mb/s), one
# after the other, and after each one prints the node's RSS, the media cache's bytes and
# their difference. The cache holds recent media by design (bounded by cache.max_bytes);
# RSS minus cache is what the node holds besides, and it should stay flat: a steady rise
# per cycle is memory a torn-down pipeline did not give back.
#
# Usage: scripts/reconnect-rss.sh [CYCLES] [SECS]   (default 8 8)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
CYCLES=${1:-8}
SECS=${2:-8}
bench_dir
sed -e 's/^listen = "0.0.0.0:[0-9]*"/listen = "127.0.0.1:0"/' config/estuary.toml > "$dir/c.toml"
printf '[streams.cycle]\n' >> "$dir/c.toml"
RUST_LOG=warn start_node "$dir/c.toml" "$dir"
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$NODE_PID/status"; }
cache() {
  curl -s "http://$NODE_HTTP/metrics" | awk '$1 == "estuary_cache_bytes" {printf "%.0f", $2 / 1048576}'
}
printf '%6s %7s %9s %12s\n' cycle rss_MB cache_MB rss-cache_MB
first=""
for i in $(seq "$CYCLES"); do
  ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -f lavfi -i sine -t "$SECS" -c:v libx264 -preset veryfast -tune zerolatency -g 60 -b:v 3M \
    -c:a aac -f mpegts "srt://$NODE_SRT?streamid=cycle" || true
  sleep 4
  r=$(rss) c=$(cache)
  printf '%6d %7d %9d %12d\n' "$i" "$r" "$c" $((r - c))
  [ -z "$first" ] && first=$((r - c))
  last=$((r - c))
done
echo "RSS minus cache: $first MB after the first publish, $last MB after the last;" \
  "$(( (last - first) / (CYCLES > 1 ? CYCLES - 1 : 1) )) MB per reconnect"
