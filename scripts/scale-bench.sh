#!/usr/bin/env bash
# CPU seconds of decoding a 20 s 1080p30 H.264 file and scaling it to 720p, 480p and 360p
# (no encoding), for the GStreamer scaler settings the ladder tried and for ffmpeg's
# swscale (bicubic), each run once after the other. "decode only" is the floor.
# Usage: scripts/scale-bench.sh
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30" -t 20 \
  -c:v libx264 -preset veryfast -g 30 -b:v 8M -f mpegts "$dir/src.ts"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cpu() { # LABEL CMD...: prints user+sys CPU seconds of CMD
  local l=$1; shift
  /usr/bin/time -f "%U %S" -o "$dir/t" "$@" > /dev/null 2>&1
  awk -v l="$l" '{ printf "  %-48s %5.2f CPU s\n", l, $1 + $2 }' "$dir/t"
}
dec="filesrc location=$dir/src.ts ! tsdemux ! h264parse ! avdec_h264"
three() { # LABEL SCALER CAPS-EXTRA: the three scalings side by side from one decode
  cpu "$1" gst-launch-1.0 -q $dec ! tee name=t \
    t. ! queue ! $2 ! "video/x-raw,width=1280,height=720$3" ! fakesink \
    t. ! queue ! $2 ! "video/x-raw,width=854,height=480$3" ! fakesink \
    t. ! queue ! $2 ! "video/x-raw,width=640,height=360$3" ! fakesink
}
chain() { # LABEL SCALER CAPS-EXTRA: 480p and 360p scaled from the 720p frames
  cpu "$1" gst-launch-1.0 -q $dec ! $2 ! "video/x-raw,width=1280,height=720$3" ! tee name=t \
    t. ! queue ! fakesink \
    t. ! queue ! $2 ! "video/x-raw,width=854,height=480$3" ! fakesink \
    t. ! queue ! $2 ! "video/x-raw,width=640,height=360$3" ! fakesink
}
keep=",colorimetry=bt709"
cpu "decode only" gst-launch-1.0 -q $dec ! fakesink
three "bilinear, SD rungs converted to BT.601 (before)" videoscale ""
three "bilinear, colorimetry kept" videoscale "$keep"
three "bilinear2, colorimetry kept" "videoscale method=bilinear2" "$keep"
chain "bilinear2, colorimetry kept, chain (now)" "videoscale method=bilinear2" "$keep"
three "nearest-neighbour, colorimetry kept" "videoscale method=nearest-neighbour" "$keep"
cpu "ffmpeg: decode, split, swscale bicubic x3" ffmpeg -hide_banner -i "$dir/src.ts" -filter_complex \
  "[0:v]split=3[a][b][c];[a]scale=1280:720[x];[b]scale=854:480[y];[c]scale=640:360[z]" \
  -map "[x]" -f null - -map "[y]" -f null - -map "[z]" -f null -
cpu "ffmpeg: decode only" ffmpeg -hide_banner -i "$dir/src.ts" -f null -
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
