#!/usr/bin/env bash
# CPU cost of a 3-rung H.264 ladder (720p 2800k, 480p 1200k, 360p 700k; x264 veryfast,
# zerolatency, 1 s GOP) from one 1080p30 source, in the same run:
#   (a) Estuary: the source pushed over SRT (stream copy, so the pusher costs ~nothing),
#       decoded once, scaled (480p and 360p from the 720p rung's frames) and encoded per
#       rung, packaged as CMAF LL-HLS;
#   (b) ffmpeg: the same file read at real time, decoded once, split, scaled and encoded
#       with the same x264 settings (rate control included: x264enc's default CBR keeps a
#       VBV of 0.6 s at the bitrate, so ffmpeg gets -maxrate and -bufsize to match),
#       written as fMP4 HLS.
# Reports CPU seconds per media second for each and their ratio, whether Estuary kept
# real time (its real-time factor and dropped frames), and per rung the SSIM of both
# outputs against the same reference: the source scaled to the rung's size with lanczos.
# Estuary's rung is read back over HTTP (init + every segment of its playlist), ffmpeg's
# from its HLS directory. Frames are paired by PTS once each side starts at 0, after
# dropping K leading frames of the source (or -K of the output: ffmpeg's HLS output
# repeats its first frame), K in -2..2 chosen by the best SSIM over the first second and
# printed, so a rendition one frame off is not scored as blurred.
#
# Usage: [ROUNDS=n] [BASELINE_BIN=path] scripts/ladder-bench.sh [SECONDS]   (default 30)
# SSIM=0 skips the quality part.
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
hls.window_segments = 100
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
# init + every listed segment of a rendition, as one fMP4 file (playlist lines that are
# not tags are segment URIs; parts are in tags).
fetch_rendition() {
  local base=$1 out=$2 pl
  pl=$(curl -sf "$base/index.m3u8")
  curl -sf "$base/$(echo "$pl" | sed -n 's/^#EXT-X-MAP:URI="\([^"]*\)".*/\1/p' | head -1)" > "$out"
  for s in $(echo "$pl" | grep -v '^#'); do curl -sf "$base/$s" >> "$out"; done
}

# One node (binary $1) takes the source over SRT; prints "CPU-seconds dropped-frames" and
# leaves its rungs in $dir/$2-*.mp4. A rung that falls behind drops frames (ffmpeg,
# reading a file, just slows down), so a run with drops did less work.
run_node() {
  local c0 c1 metrics
  ESTUARY_BIN=$1 start_node "$dir/c.toml" "$dir" > /dev/null
  c0=$(cpu_of "$NODE_PID")
  ffmpeg -hide_banner -loglevel error -re -i "$dir/src.ts" -c copy -f mpegts \
    "srt://$NODE_SRT?streamid=bench&latency=120000" || true
  sleep 2
  c1=$(cpu_of "$NODE_PID")
  metrics=$(curl -s "http://$NODE_HTTP/metrics")
  echo "$metrics" | grep -E '^estuary_rendition_realtime_factor|^estuary_frames_dropped_total' | sed 's/^/  /' >&2
  for r in 720p 480p 360p; do fetch_rendition "http://$NODE_HTTP/live/bench/$r" "$dir/$2-$r.mp4"; done
  kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
  echo "$(echo "$c1 $c0" | awk '{print $1-$2}') $(echo "$metrics" | awk '/^estuary_frames_dropped_total/ { d += $2 } END { print d + 0 }')"
}

# ffmpeg doing the same ladder; prints its CPU seconds and leaves its HLS in $dir/hls.
run_ffmpeg() {
  rm -rf "$dir/hls"; mkdir -p "$dir/hls"
  /usr/bin/time -f "%U %S" -o "$dir/ff.time" ffmpeg -hide_banner -loglevel error -re -i "$dir/src.ts" \
    -filter_complex "[0:v]split=3[a][b][c];[a]scale=1280:720[v720];[b]scale=854:480[v480];[c]scale=640:360[v360]" \
    -map "[v720]" -c:v:0 libx264 -b:v:0 2800k -map "[v480]" -c:v:1 libx264 -b:v:1 1200k \
    -map "[v360]" -c:v:2 libx264 -b:v:2 700k -map 0:a -c:a copy -bsf:a aac_adtstoasc \
    -maxrate:v:0 2800k -bufsize:v:0 1680k -maxrate:v:1 1200k -bufsize:v:1 720k \
    -maxrate:v:2 700k -bufsize:v:2 420k \
    -preset veryfast -tune zerolatency -g 30 -keyint_min 30 -sc_threshold 0 \
    -f hls -hls_time 1 -hls_list_size 0 -hls_segment_type fmp4 -var_stream_map "v:0 v:1 v:2 a:0" \
    -master_pl_name master.m3u8 "$dir/hls/v%v.m3u8"
  awk '{print $1+$2}' "$dir/ff.time"
}

# ROUNDS rounds, each measuring Estuary, ffmpeg and (with BASELINE_BIN) a second Estuary
# binary back to back, the order turned around every other round, since this machine's
# speed drifts between runs. The candidate's rungs of the last round are scored below.
ROUNDS=${ROUNDS:-1}
cand=${ESTUARY_BIN:-${CARGO_TARGET_DIR:-target}/release/estuary}
: > "$dir/rounds"
for round in $(seq "$ROUNDS"); do
  echo "round $round: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ $((round % 2)) = 1 ]; then
    [ -n "${BASELINE_BIN:-}" ] && base=$(run_node "$BASELINE_BIN" base)
    ff=$(run_ffmpeg)
    est=$(run_node "$cand" est)
  else
    est=$(run_node "$cand" est)
    ff=$(run_ffmpeg)
    [ -n "${BASELINE_BIN:-}" ] && base=$(run_node "$BASELINE_BIN" base)
  fi
  echo "round $round: load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
  read -r e d <<< "$est"
  read -r b bd <<< "${base:-0 0}"
  awk -v e="$e" -v f="$ff" -v s="$SECS" -v d="$d" -v b="$b" -v bd="$bd" -v r="$round" 'BEGIN {
    n = 3 * 30 * s;
    printf "round %d: estuary %.2f CPU s per media s (%d of %d frames dropped), ffmpeg %.2f", r, e/s, d, n, f/s;
    if (b > 0) printf ", baseline %.2f (%d dropped)", b/s, bd;
    printf "; ratio estuary/ffmpeg %.2f", e/f;
    if (b > 0) printf ", baseline/ffmpeg %.2f, estuary/baseline %.2f", b/f, e/b;
    printf "\n" }' | tee -a "$dir/rounds"
done
python3 - "$dir/rounds" <<'PY'
import re, statistics, sys
rows = [l for l in open(sys.argv[1])]
for name in ["estuary/ffmpeg", "baseline/ffmpeg", "estuary/baseline"]:
    v = [float(m.group(1)) for l in rows for m in [re.search(re.escape(name) + r" ([0-9.]+)", l)] if m]
    if v:
        print(f"median ratio {name}: {statistics.median(v):.2f} (rounds: {' '.join(f'{x:.2f}' for x in v)})")
PY

[ "${SSIM:-1}" = 0 ] && exit 0
i=0
for r in 720p 480p 360p; do
  pl="$dir/hls/v$i.m3u8"
  { cat "$dir/hls/$(sed -n 's/^#EXT-X-MAP:URI="\([^"]*\)".*/\1/p' "$pl" | head -1)"
    grep -v '^#' "$pl" | while read -r s; do cat "$dir/hls/$s"; done; } > "$dir/ff-$r.mp4"
  i=$((i + 1))
done
# ssim FILE REF W H K [LIMIT]: mean SSIM (All) of FILE against REF (raw W x H I420), over
# the frames both have (or FILE's first LIMIT seconds), with REF's first K frames dropped
# (K < 0: FILE's first -K frames dropped); prints "ssim frames".
# The source is untagged HD, which GStreamer and players take as BT.709; an output tagged
# BT.601 (what GStreamer made of SD rungs before they kept the source's colorimetry) is
# converted back to BT.709, as a player would, before it is compared.
ssim() {
  local lim=() ref=0 out=0 cs=""
  [ -n "${6:-}" ] && lim=(-t "$6")
  if [ "$5" -ge 0 ]; then ref=$5; else out=$((-$5)); fi
  case $(ffprobe -v error -select_streams v -show_entries stream=color_space -of csv=p=0 "$1") in
    smpte170m|bt470bg) cs="colorspace=all=bt709:iall=bt601-6-525:format=yuv420p," ;;
  esac
  ffmpeg -hide_banner -loglevel error "${lim[@]}" -i "$1" \
    -f rawvideo -pix_fmt yuv420p -s "$3x$4" -r 30 -i "$2" -lavfi \
    "[1:v]trim=start_frame=$ref,setpts=PTS-STARTPTS[ref];[0:v]${cs}trim=start_frame=$out,setpts=PTS-STARTPTS[d];[d][ref]ssim=shortest=1:stats_file=$dir/ssim.log" \
    -f null -
  awk '{for (i = 1; i <= NF; i++) if ($i ~ /^All:/) { split($i, a, ":"); t += a[2]; n++ } }
    END { printf "%.4f %d", t / n, n }' "$dir/ssim.log"
}
best_ssim() { # FILE REF W H: "ssim frames K" at the best start offset K (-2..2)
  local best=-1 k=0 v
  for o in -2 -1 0 1 2; do
    v=$(ssim "$@" "$o" 1 | cut -d' ' -f1)
    if awk -v a="$v" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$v k=$o; fi
  done
  echo "$(ssim "$@" "$k") $k"
}
echo "SSIM against the source scaled with lanczos (frames compared, start offset K in frames):"
printf "  %-5s %-28s %-28s %s\n" rung estuary ffmpeg "estuary-ffmpeg"
for spec in 720p:1280:720 480p:854:480 360p:640:360; do
  IFS=: read -r r w h <<< "$spec"
  ffmpeg -hide_banner -loglevel error -y -i "$dir/src.ts" -vf "scale=$w:$h:flags=lanczos" \
    -f rawvideo -pix_fmt yuv420p "$dir/ref.yuv"
  read -r es en ek <<< "$(best_ssim "$dir/est-$r.mp4" "$dir/ref.yuv" "$w" "$h")"
  read -r fs fn fk <<< "$(best_ssim "$dir/ff-$r.mp4" "$dir/ref.yuv" "$w" "$h")"
  printf "  %-5s %.4f (%d frames, K=%d)      %.4f (%d frames, K=%d)      %+.4f\n" \
    "$r" "$es" "$en" "$ek" "$fs" "$fn" "$fk" "$(echo "$es $fs" | awk '{print $1 - $2}')"
done
