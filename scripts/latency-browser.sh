#!/usr/bin/env bash
# Camera-to-eye latency in a real browser (Debian's Chromium + hls.js), Estuary at two
# part targets (100 ms and 200 ms) against a plain-HLS baseline, all measured in the same
# run with the same in-picture capture clock.
#
# One ffmpeg process reads a 720p30 test pattern in real time, draws the capture clock
# into each frame once (scripts/clock-filter.sh: the wall clock at capture in
# milliseconds as black and white blocks, the layout `--demo` draws), encodes it once
# (x264 ultrafast/zerolatency, 1 s GOP, AAC) and sends the same packets (tee muxer) to:
#   - one Estuary node per part target, over SRT (libsrt's default 120 ms latency), played
#     at /watch/demo?q=source (LL-HLS, CMAF parts);
#   - ffmpeg's own HLS muxer (1 s fMP4 segments) in a temp dir served by nginx on loopback,
#     played by the same hls.js build with the same settings (the baseline).
# For each, web/tests/latency.mjs reads the clock back from every frame Chromium shows
# (web/tests/clock-reader.js: canvas drawImage of the <video> on each
# requestVideoFrameCallback) for SECS seconds after playback settles, and prints
#   camera-to-eye = wall clock when the frame is shown - capture time in the picture,
# which includes the encoder, SRT, packaging, HTTP, the player's buffer and decoding, the
# same way for every path. The program date time figure (wall clock - hls.playingDate) is
# printed beside it for reference only: Estuary stamps PDT at ingest, ffmpeg at capture.
#
# Usage: scripts/latency-browser.sh [SECS]      (default 60)
#   ESTUARY_BIN=path    use this binary instead of `cargo build` + target/release/estuary
#   PARTS="100ms 200ms" the part targets to measure, one node each (hls.part_target)
#   LADDER=1            also transcode with the default ladder of config/estuary.toml on
#                       the first node and measure its top rung
#   EDGE=1              also play the first node's passthrough through an edge node
#                       pulling from it (the edge tier, HTTP/2 replication)
# Everything listens on 127.0.0.1 only; every wait is bounded; all children are stopped
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${1:-60}
SETTLE=5

need() { command -v "$1" >/dev/null || { echo "latency-browser: $1 is missing ($2)" >&2; exit 1; }; }
need ffmpeg "apt-get install ffmpeg"
need nginx "apt-get install nginx"
need node "apt-get install nodejs"
need curl "apt-get install curl"
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "latency-browser: chromium is missing (apt-get install chromium)" >&2; exit 1; }
[ -f web/node_modules/playwright-core/package.json ] && [ -f web/node_modules/hls.js/dist/hls.min.js ] \
  || { echo "latency-browser: run 'npm ci' in web/ first" >&2; exit 1; }

if [ -z "${ESTUARY_BIN:-}" ]; then
  cargo build --release --quiet
  ESTUARY_BIN=$ROOT/target/release/estuary
fi

TMP=$(mktemp -d /tmp/estuary-latency.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- Estuary, one node per part target
PARTS=${PARTS:-100ms 200ms}
read -r -a PART_LIST <<<"$PARTS"
declare -A NODE_HTTP NODE_SRT
start_estuary() { # part_target
  local pt=$1 dir=$TMP/node-$1 line
  mkdir -p "$dir"
  cat > "$dir/estuary.toml" <<EOF
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
rtmp.enabled = false
http.web_root = "$ROOT/web"
http.hlsjs = "$ROOT/web/node_modules/hls.js/dist/hls.min.js"
hls.part_target = "$pt"
[streams.demo]
EOF
  if [ -n "${LADDER:-}" ] && [ "$pt" = "${PART_LIST[0]}" ]; then
    # The default ladder of config/estuary.toml ([ladder] and its [[ladder.rungs]]).
    awk '/^\[ladder\]/{on=1} /^\[cache\]/{on=0} on' config/estuary.toml >>"$dir/estuary.toml"
  fi
  "$ESTUARY_BIN" --config "$dir/estuary.toml" >"$dir/estuary.out" 2>"$dir/estuary.log" &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q '"event":"listening"' "$dir/estuary.out" 2>/dev/null && break; sleep 0.1; done
  line=$(head -n1 "$dir/estuary.out")
  NODE_HTTP[$pt]=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' <<<"$line")
  NODE_SRT[$pt]=$(sed -n 's/.*"srt":"\([^"]*\)".*/\1/p' <<<"$line")
  [ -n "${NODE_HTTP[$pt]}" ] && [ -n "${NODE_SRT[$pt]}" ] \
    || { echo "estuary ($pt) did not start: $(tail -5 "$dir/estuary.log")" >&2; exit 1; }
}
for pt in "${PART_LIST[@]}"; do start_estuary "$pt"; done
HTTP=${NODE_HTTP[${PART_LIST[0]}]}

# ---------------------------------------------------------------- edge (optional)
if [ -n "${EDGE:-}" ]; then
  cat > "$TMP/edge.toml" <<EOF
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
rtmp.enabled = false
http.web_root = "$ROOT/web"
http.hlsjs = "$ROOT/web/node_modules/hls.js/dist/hls.min.js"
[upstream]
origins = ["http://$HTTP/live"]
EOF
  "$ESTUARY_BIN" --config "$TMP/edge.toml" >"$TMP/edge.out" 2>"$TMP/edge.log" &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q '"event":"listening"' "$TMP/edge.out" 2>/dev/null && break; sleep 0.1; done
  EDGE_HTTP=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' "$TMP/edge.out" | head -n1)
  [ -n "$EDGE_HTTP" ] || { echo "edge did not start: $(tail -5 "$TMP/edge.log")" >&2; exit 1; }
fi

# ---------------------------------------------------------------- nginx (baseline)
NGINX_PORT=$(free_port)
mkdir -p "$TMP/www/hls" "$TMP/nginx"
cp web/node_modules/hls.js/dist/hls.min.js "$TMP/www/hls.min.js"
cp scripts/latency-browser-baseline.html "$TMP/www/player.html"
cat > "$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  sendfile on;
  tcp_nodelay on;
  types {
    text/html html;
    text/javascript js;
    application/vnd.apple.mpegurl m3u8;
    video/mp4 mp4 m4s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $TMP/www;
    location /hls/ { add_header Cache-Control no-cache; }
  }
}
EOF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
PIDS+=($!)

# ---------------------------------------------------------------- one source, one clock, one encode
# One ffmpeg process: one test source, the clock drawn once, one encode (x264
# ultrafast/zerolatency, 1 s GOP), and the tee muxer hands the same packets to every path:
# MPEG-TS over SRT to each Estuary node, and ffmpeg's HLS muxer writing for nginx. So every
# path carries the very same pictures and bits.
TOTAL=$(( (SECS + SETTLE + 45) * (${#PART_LIST[@]} + 3) ))
TEE=""
for pt in "${PART_LIST[@]}"; do
  TEE+="[f=mpegts]srt://${NODE_SRT[$pt]}?streamid=demo&latency=120000|"
done
TEE+="[f=hls:hls_time=1:hls_list_size=6:hls_segment_type=fmp4:hls_flags=delete_segments+independent_segments+program_date_time]$TMP/www/hls/index.m3u8"
ffmpeg -hide_banner -loglevel error -nostdin -re \
  -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t "$TOTAL" -filter_script:v <(scripts/clock-filter.sh 1280 720) -map 0:v -map 1:a \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -keyint_min 30 -b:v 2M -c:a aac -b:a 128k \
  -f tee "$TEE" 2>"$TMP/ffmpeg.log" &
PIDS+=($!)

wait_200() {
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.2
  done
  echo "latency-browser: $1 never answered 200" >&2
  tail -5 "$TMP/ffmpeg.log" "$TMP"/node-*/estuary.log >&2 || true
  return 1
}
for pt in "${PART_LIST[@]}"; do wait_200 "http://${NODE_HTTP[$pt]}/live/demo/source/index.m3u8"; done
wait_200 "http://127.0.0.1:$NGINX_PORT/hls/index.m3u8"

# The ladder's top rung when there is a ladder (on the first node).
RUNGS=$(curl -s "http://$HTTP/live/demo/index.m3u8" | grep -v '^#' | grep -v '^audio' | sed 's,/index.m3u8,,' || true)
RUNG=$(grep -vx source <<<"$RUNGS" | head -n1 || true)

field() { sed -n "s/.*\"$1\":\([0-9.-]*\).*/\1/p" <<<"$2"; }
declare -A RES
LABELS=()
run() { # label url
  RES[$1]=$(node web/tests/latency.mjs --label "$1" --url "$2" --secs "$SECS" --settle "$SETTLE" \
    | tee -a "$TMP/results.txt" | grep '^RESULT' | sed 's/^RESULT //')
  LABELS+=("$1")
  echo "$1: ${RES[$1]}"
}
BASE="baseline ffmpeg HLS + nginx"
echo "measuring ${SECS}s each (after ${SETTLE}s of settling); nginx 127.0.0.1:$NGINX_PORT"
for pt in "${PART_LIST[@]}"; do run "estuary $pt parts" "http://${NODE_HTTP[$pt]}/watch/demo?q=source"; done
if [ -n "$RUNG" ]; then run "estuary ${PART_LIST[0]} ladder $RUNG" "http://$HTTP/watch/demo?q=$RUNG"; fi
if [ -n "${EDGE:-}" ]; then
  wait_200 "http://$EDGE_HTTP/live/demo/source/index.m3u8"
  run "estuary ${PART_LIST[0]} via an edge" "http://$EDGE_HTTP/watch/demo?q=source"
fi
run "$BASE" "http://127.0.0.1:$NGINX_PORT/player.html"

echo
echo "camera-to-eye by the in-picture clock, Chromium $(chromium --version 2>/dev/null | awk '{print $2}'), ${SECS}s each:"
printf '  %-30s %9s %11s %9s %6s %6s %7s\n' path median p10-p90 "PDT g2g" parts stalls frames
for l in "${LABELS[@]}"; do
  r=${RES[$l]}
  printf '  %-30s %6s ms %5s-%-5s %6s ms %6s %6s %7s\n' "$l" "$(field clock_median_ms "$r")" \
    "$(field clock_p10_ms "$r")" "$(field clock_p90_ms "$r")" "$(field g2g_median_ms "$r")" \
    "$(field parts_loaded "$r")" "$(field stalls "$r")" "$(field clock_frames "$r")"
done
B=$(field clock_median_ms "${RES[$BASE]}")
for pt in "${PART_LIST[@]}"; do
  E=$(field clock_median_ms "${RES[estuary $pt parts]}")
  if [ -n "$E" ] && [ -n "$B" ] && [ "$E" -gt 0 ]; then
    awk -v b="$B" -v e="$E" -v pt="$pt" 'BEGIN { printf "  ratio baseline / estuary %-5s parts: %.2fx\n", pt, b / e }'
  fi
done
echo "(camera-to-eye includes the x264 encode and, for Estuary, SRT's 120 ms receive latency;"
echo " PDT g2g is wall clock - program date time: ingest-stamped by Estuary, capture-stamped by ffmpeg)"
[ -n "$RUNG" ] || echo "(no ladder: passthrough only; LADDER=1 adds the default ladder)"
