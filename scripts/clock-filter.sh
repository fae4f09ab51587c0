#!/usr/bin/env bash
# Prints an ffmpeg video filter that draws the in-picture capture clock of `--demo`
# (layout in src/demo/clock.rs) into a WIDTHxHEIGHT picture: the bottom 1/12 of the
# picture, 32 cells; cell 0 white, cell 1 black, cells 2-29 the wall clock at capture in
# milliseconds modulo 2^28 (MSB first, white = 1), cell 30 even parity, cell 31 white.
# web/tests/clock-reader.js reads it back in the browser.
#
# The capture instant is the wall clock when the frame enters the filter graph
# (setpts=RTCTIME): with `-re` that is when ffmpeg reads the frame from its source. The
# frame timestamps are put back to N/FRAME_RATE afterwards, so the encoder sees the
# source's own timing.
#
# Usage: ffmpeg ... -filter_script:v <(scripts/clock-filter.sh 1280 720) ...
set -euo pipefail
W=${1:?width}
H=${2:?height}
SH=$((H / 12))
TOP=$((H - SH))
cell_x() { echo $(( ($1 * W + 31) / 32 )); }   # first column of cell $1
box() { # cell colour [enable]
  local x0 x1
  x0=$(cell_x "$1"); x1=$(cell_x $(($1 + 1)))
  printf ",drawbox=x=%d:y=%d:w=%d:h=%d:color=%s:t=fill" "$x0" "$TOP" $((x1 - x0)) "$SH" "$2"
  if [ -n "${3:-}" ]; then printf ":enable='%s'" "$3"; fi
}
# m: capture milliseconds modulo 2^28, from the frame's timestamp (wall clock, in s).
M="mod(floor(t*1000),268435456)"
printf "settb=1/1000000,setpts=RTCTIME"
printf ",drawbox=x=0:y=%d:w=%d:h=%d:color=white:t=fill" "$TOP" "$W" "$SH"
box 1 black
ONES=""
for i in $(seq 2 29); do
  k=$((29 - i))
  bit="mod(floor($M/$((1 << k))),2)"
  box "$i" black "eq($bit,0)"
  ONES="${ONES:+$ONES+}$bit"
done
box 30 black "eq(mod($ONES,2),0)"
printf ",settb=1/1000,setpts=N/FRAME_RATE/TB\n"
