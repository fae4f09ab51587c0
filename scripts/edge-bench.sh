#!/usr/bin/env bash
# The edge tier under load, on loopback, in one run (release builds):
#  1. edge-added latency: the same blocking playlist reload at the origin and at an edge
#     of it, PARTS parts in a row (`hls_load paired`); how much later the edge answers;
#  2. origin load with 1, 100 and 1000 players on the edge (`hls_load play`, HTTP/1.1,
#     each player with a blocking reload and a preload-hint part GET outstanding, as
#     hls.js at the live edge): requests the origin served and bytes the edge pulled per
#     second, which should stay flat as players grow, and what the players saw.
# The publisher is ffmpeg over SRT with its default options (720p30, 3 Mbit/s,
# passthrough only, so encoders do not compete with the measurement for the 2 cores).
#
# Usage: scripts/edge-bench.sh [SECONDS_PER_RUN] [PARTS]   (defaults 20, 100)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
SECS=${1:-20}
PARTS=${2:-100}
cargo build --release --locked -q
cargo build --release --locked -q --manifest-path scripts/hls_load/Cargo.toml --target-dir target/hls_load
LOAD=target/hls_load/release/hls_load
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$dir"' EXIT
mkdir -p "$dir/origin" "$dir/edge"
base() {
  cat <<CFG
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
rtmp.enabled = false
http.max_connections = 20000
CFG
}
{ base; cat <<CFG
[ladder]
passthrough = true
rungs = []
[streams.bench]
CFG
} > "$dir/origin.toml"
start_node "$dir/origin.toml" "$dir/origin"
origin=$NODE_HTTP origin_pid=$NODE_PID
ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine -t 3600 -c:v libx264 -preset ultrafast -tune zerolatency -g 60 -b:v 3M \
  -c:a aac -f mpegts "srt://$NODE_SRT?streamid=bench" 2>"$dir/ffmpeg.log" &
{ base; cat <<CFG
[upstream]
origins = ["http://$origin/live"]
CFG
} > "$dir/edge.toml"
start_node "$dir/edge.toml" "$dir/edge"
edge=$NODE_HTTP edge_pid=$NODE_PID
for _ in $(seq 100); do curl -sf "http://$origin/live/bench/source/index.m3u8" >/dev/null && break; sleep 0.3; done
for _ in $(seq 100); do curl -sf "http://$edge/live/bench/source/index.m3u8" >/dev/null && break; sleep 0.3; done
sleep 2

# Sum of a metric family (all label sets) from a node's /metrics.
metric() { curl -s "http://$1/metrics" | awk -v n="$2" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%.0f", s}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== edge-added latency ($PARTS parts, blocking reload at origin and edge at once)"
$LOAD paired --a "http://$origin/live/bench/source/index.m3u8" \
  --b "http://$edge/live/bench/source/index.m3u8" --parts "$PARTS"

tck=$(getconf CLK_TCK)
echo
echo "== origin load per edge (${SECS} s per run, HTTP/1.1 players on the edge)"
printf '%8s %14s %16s %12s %10s %8s %8s %14s %10s\n' players origin_req/s pulled_KB/s parts/s part_p99 stalls errors edge_cpu% edge_RSS_MB
for n in 1 100 1000; do
  r0=$(metric "$origin" estuary_http_requests_total)
  b0=$(metric "$edge" estuary_upstream_bytes_total)
  c0=$(cpu_ticks "$edge_pid")
  out=$($LOAD play --url "http://$edge/live/bench/source/index.m3u8" --players "$n" --secs "$SECS")
  c1=$(cpu_ticks "$edge_pid")
  r1=$(metric "$origin" estuary_http_requests_total)
  b1=$(metric "$edge" estuary_upstream_bytes_total)
  secs=$(echo "$out" | awk '/^seconds/ {print $2}')
  parts=$(echo "$out" | awk '/^parts/ {print $2}')
  p99=$(echo "$out" | awk '/^part_wait_ms/ {print $5}')
  stalls=$(echo "$out" | awk '/^stalls/ {print $2}')
  errors=$(echo "$out" | awk '/^errors/ {print $2}')
  rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$edge_pid/status")
  awk -v n="$n" -v r=$((r1 - r0)) -v b=$((b1 - b0)) -v s="$secs" -v p="$parts" -v p99="$p99" \
    -v st="$stalls" -v e="$errors" -v c=$((c1 - c0)) -v t="$tck" -v m="$rss" 'BEGIN {
    printf "%8d %14.1f %16.1f %12.1f %8sms %8d %8d %14.1f %10d\n", n, r/s, b/1024/s, p/s, p99, st, e, 100*c/t/s, m }'
  echo "$out" | grep '^error ' | sed 's/^/    /' || true
done
