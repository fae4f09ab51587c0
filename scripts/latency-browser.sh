#!/usr/bin/env bash
# Glass-to-glass latency in a real browser (Debian's Chromium + hls.js), Estuary vs a
# plain-HLS baseline measured in the same run.
#
# One ffmpeg process encodes the same 720p30 test pattern twice with identical settings
# (x264 ultrafast/zerolatency, 1 s GOP, AAC) and sends it to
#   - Estuary over SRT (LL-HLS, CMAF parts), played at /watch/demo (?q=RENDITION), and
#   - ffmpeg's own HLS muxer (1 s fMP4 segments, PDT) in a temp dir served by nginx on
#     loopback, played by the same hls.js build with the same settings.
# For each, web/tests/latency.mjs samples (Date.now() - hls.playingDate) every 250 ms for
# SECS seconds after playback settles, and prints the median.
#
# What the figure includes:
#   - Estuary stamps EXT-X-PROGRAM-DATE-TIME with each frame's *ingest arrival* time, so
#     its figure excludes the encoder and the SRT receive latency (srt.latency, 120 ms here).
#   - ffmpeg's HLS muxer stamps the PDT from the wall clock when it starts, plus segment
#     durations; with -re pacing that is about the capture time, so its figure includes
#     the (near-zero, zerolatency) encoder delay.
#
# Usage: scripts/latency-browser.sh [SECS]      (default 60)
#   ESTUARY_BIN=path  use this binary instead of `cargo build` + target/release/estuary
#   PART_TARGET=100ms try another LL-HLS part target (hls.part_target; the default is 200ms)
#   LADDER=1          also transcode with the default ladder of config/estuary.toml and
#                     measure its top rung (the 720p source leaves out taller rungs)
#   EDGE=1            also play the passthrough through an edge node pulling from this one
#                     (the edge tier, HTTP/2 replication): same PDTs, so the difference is
#                     what the edge adds
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

# ---------------------------------------------------------------- Estuary
cat > "$TMP/estuary.toml" <<EOF
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
http.web_root = "$ROOT/web"
http.hlsjs = "$ROOT/web/node_modules/hls.js/dist/hls.min.js"
${PART_TARGET:+hls.part_target = \"$PART_TARGET\"}
[streams.demo]
EOF
if [ -n "${LADDER:-}" ]; then
  # The default ladder of config/estuary.toml ([ladder] and its [[ladder.rungs]]).
  awk '/^\[ladder\]/{on=1} /^\[cache\]/{on=0} on' config/estuary.toml >>"$TMP/estuary.toml"
fi
"$ESTUARY_BIN" --config "$TMP/estuary.toml" >"$TMP/estuary.out" 2>"$TMP/estuary.log" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q '"event":"listening"' "$TMP/estuary.out" 2>/dev/null && break; sleep 0.1; done
LINE=$(head -n1 "$TMP/estuary.out")
HTTP=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' <<<"$LINE")
SRT=$(sed -n 's/.*"srt":"\([^"]*\)".*/\1/p' <<<"$LINE")
[ -n "$HTTP" ] && [ -n "$SRT" ] || { echo "estuary did not start: $(tail -5 "$TMP/estuary.log")" >&2; exit 1; }

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

# ---------------------------------------------------------------- one source, two outputs
# One ffmpeg process, one test source, two identical encodes (x264 ultrafast/zerolatency,
# 1 s GOP) started together: MPEG-TS over SRT to Estuary, and ffmpeg's HLS muxer to nginx.
# (Not the tee muxer: Estuary's pipeline currently errors on the tee's MPEG-TS output.)
TOTAL=$(( (SECS + SETTLE + 45) * 3 ))
ENC=(-c:v libx264 -preset ultrafast -tune zerolatency -g 30 -keyint_min 30 -b:v 2M -c:a aac -b:a 128k)
ffmpeg -hide_banner -loglevel error -nostdin -re \
  -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t "$TOTAL" \
  -map 0:v -map 1:a "${ENC[@]}" -f mpegts "srt://$SRT?streamid=demo&latency=120000" \
  -map 0:v -map 1:a "${ENC[@]}" -f hls -hls_time 1 -hls_list_size 6 -hls_segment_type fmp4 \
    -hls_flags delete_segments+independent_segments+program_date_time "$TMP/www/hls/index.m3u8" \
  2>"$TMP/ffmpeg.log" &
PIDS+=($!)

wait_200() {
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.2
  done
  echo "latency-browser: $1 never answered 200" >&2
  tail -5 "$TMP/ffmpeg.log" "$TMP/estuary.log" >&2 || true
  return 1
}
wait_200 "http://$HTTP/live/demo/source/index.m3u8"
wait_200 "http://127.0.0.1:$NGINX_PORT/hls/index.m3u8"

# Renditions: passthrough (`source`) always; the ladder's top rung when there is a ladder.
RUNGS=$(curl -s "http://$HTTP/live/demo/index.m3u8" | grep -v '^#' | grep -v '^audio' | sed 's,/index.m3u8,,' || true)
RUNG=$(grep -vx source <<<"$RUNGS" | head -n1 || true)

measure() { # label url
  node web/tests/latency.mjs --label "$1" --url "$2" --secs "$SECS" --settle "$SETTLE" \
    | tee -a "$TMP/results.txt" | grep '^RESULT' | sed 's/^RESULT //'
}
echo "measuring ${SECS}s each (after ${SETTLE}s of settling): Estuary $HTTP, nginx 127.0.0.1:$NGINX_PORT"
PASS=$(measure passthrough "http://$HTTP/watch/demo?q=source")
echo "passthrough: $PASS"
if [ -n "$RUNG" ]; then
  LAD=$(measure "ladder:$RUNG" "http://$HTTP/watch/demo?q=$RUNG")
  echo "ladder ($RUNG): $LAD"
fi
if [ -n "${EDGE:-}" ]; then
  wait_200 "http://$EDGE_HTTP/live/demo/source/index.m3u8"
  EDG=$(measure edge "http://$EDGE_HTTP/watch/demo?q=source")
  echo "edge: $EDG"
fi
BASE=$(measure baseline "http://127.0.0.1:$NGINX_PORT/player.html")
echo "baseline: $BASE"

med() { sed -n 's/.*"g2g_median_ms":\([0-9-]*\).*/\1/p' <<<"$1"; }
P=$(med "$PASS"); B=$(med "$BASE")
echo
echo "median glass-to-glass (wall clock - PDT on screen), Chromium $(chromium --version 2>/dev/null | awk '{print $2}'), ${SECS}s:"
printf '  estuary passthrough (LL-HLS)     %6s ms\n' "$P"
if [ -n "$RUNG" ]; then printf '  estuary ladder (%s)        %6s ms\n' "$RUNG" "$(med "$LAD")"; fi
if [ -n "${EDGE:-}" ]; then
  E=$(med "$EDG")
  printf '  estuary passthrough via an edge  %6s ms (edge adds %s ms)\n' "$E" "$((E - P))"
fi
printf '  baseline ffmpeg HLS + nginx      %6s ms\n' "$B"
if [ -n "$P" ] && [ -n "$B" ] && [ "$P" -gt 0 ]; then
  awk -v b="$B" -v p="$P" 'BEGIN { printf "  ratio baseline / estuary         %6.2fx\n", b / p }'
fi
echo "(Estuary's PDT is stamped at ingest arrival: add the encoder delay and srt.latency = 120 ms for camera-to-eye.)"
[ -n "$RUNG" ] || echo "(no ladder: passthrough only; LADDER=1 adds the default ladder)"
