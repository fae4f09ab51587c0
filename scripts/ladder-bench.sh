#!/usr/bin/env bash
# CPU cost of a 3-rung H.264 ladder (720p 2800k, 480p 1200k, 360p 700k; x264 veryfast,
# zerolatency, 1 s GOP) from one 1080p30 source, in the same run:
#   (a) Estuary: the source pushed over SRT (stream copy, so the pusher costs ~nothing),
#       decoded once, scaled and encoded per rung, packaged as CMAF LL-HLS;
#   (b) ffmpeg: the same file read at real time, decoded once, split, scaled and encoded
#       with the same x264 settings, written as fMP4 HLS.
# Reports CPU seconds per media second for each and their ratio, and whether Estuary kept
# real time (its real-time factor and dropped frames).
#
# Usage: scripts/ladder-bench.sh [SECONDS]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
SECS=${1:-30}
cargo build --release --locked -q
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
tck=$(getconf CLK_TCK)
cpu_of() { awk -v t="$tck" '{print ($14+$15+$16+$17)/t}' "/proc/$1/stat"; }

echo "making a ${SECS}s 1080p30 H.264 source..."
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30" \
  -f lavfi -i "sine=sample_rate=48000" -t "$SECS" -c:v libx264 -preset veryfast -g 30 \
  -b:v 8M -c:a aac -f mpegts "$dir/src.ts"

cat > "$dir/c.toml" <<CFG
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
[ladder]
passthrough = false
[[ladder.rungs]]
name = "720p"
codec = "h264"
width = 1280
height = 720
bitrate_kbps = 2800
preset = "veryfast"
[[ladder.rungs]]
name = "480p"
codec = "h264"
width = 854
height = 480
bitrate_kbps = 1200
preset = "veryfast"
[[ladder.rungs]]
name = "360p"
codec = "h264"
width = 640
height = 360
bitrate_kbps = 700
preset = "veryfast"
[streams.bench]
CFG
start_node "$dir/c.toml" "$dir"
http=$NODE_HTTP srt=$NODE_SRT
pid=$NODE_PID
c0=$(cpu_of "$pid")
ffmpeg -hide_banner -loglevel error -re -i "$dir/src.ts" -c copy -f mpegts \
  "srt://$srt?streamid=bench&latency=120000" || true
sleep 2
c1=$(cpu_of "$pid")
metrics=$(curl -s "http://$http/metrics")
kill "$pid"; wait "$pid" 2>/dev/null || true

mkdir -p "$dir/hls"
/usr/bin/time -f "%U %S" -o "$dir/ff.time" ffmpeg -hide_banner -loglevel error -re -i "$dir/src.ts" \
  -filter_complex "[0:v]split=3[a][b][c];[a]scale=1280:720[v720];[b]scale=854:480[v480];[c]scale=640:360[v360]" \
  -map "[v720]" -c:v:0 libx264 -b:v:0 2800k -map "[v480]" -c:v:1 libx264 -b:v:1 1200k \
  -map "[v360]" -c:v:2 libx264 -b:v:2 700k -map 0:a -c:a copy -bsf:a aac_adtstoasc \
  -preset veryfast -tune zerolatency -g 30 -keyint_min 30 -sc_threshold 0 \
  -f hls -hls_time 1 -hls_segment_type fmp4 -var_stream_map "v:0 v:1 v:2 a:0" \
  -master_pl_name master.m3u8 "$dir/hls/v%v.m3u8"
ff=$(awk '{print $1+$2}' "$dir/ff.time")
est=$(echo "$c1 $c0" | awk '{print $1-$2}')
echo "$metrics" | grep -E '^estuary_rendition_realtime_factor|^estuary_frames_dropped_total' | sed 's/^/  /'
awk -v e="$est" -v f="$ff" -v s="$SECS" 'BEGIN {
  printf "estuary: %.1f CPU s for %d media s = %.2f CPU s per media s\n", e, s, e/s;
  printf "ffmpeg:  %.1f CPU s for %d media s = %.2f CPU s per media s\n", f, s, f/s;
  printf "ratio estuary/ffmpeg: %.2f\n", e/f }'
