#!/usr/bin/env bash
# Soak: the shipped ladder under steady load for MINUTES, on loopback (release builds).
#  - one publisher (ffmpeg over SRT, default options, 720p30) that reconnects every
#    RECONNECT_SECS seconds (default RECONNECT_MIN=5 minutes);
#  - 200 LL-HLS players (scripts/hls_load: blocking reload + preload-hint part GET each),
#    100 on the source rendition and 100 on the first encoded rung;
#  - 1000 WebSocket clients in the stream's room, chat at CHAT_RATE msg/s (scripts/ws_load).
# Every SAMPLE_SECS it prints the node's RSS, the media cache's bytes (bounded by
# cache.max_bytes, 512 MiB shipped: RSS grows until the cache is full, so read the drift
# against it), the Rust heap's live and resident bytes (jemalloc's, from /metrics), open
# file descriptors, threads, publishers and parts published. At the end: RSS drift after
# warm-up (first sample after WARMUP_MIN minutes and WARMUP_RECONNECTS reconnects, a
# minute or more after the last reconnect, against the last sample) and the slope of a
# least-squares line through every sample from warm-up on, file descriptors before
# load and after the clients left, and what the clients saw (errors by kind, parts,
# stalls, parts skipped).
# Client errors and skipped parts are split into those inside a reconnect window and
# those outside: a window runs from WINDOW_GRACE seconds before the publisher's ffmpeg
# exits until WINDOW_GRACE seconds after the node publishes new parts again (the
# publisher is away meanwhile, so players may miss parts there). The publisher outlasts
# the clients, so the run's end is no window.
# Besides RSS drift it prints the drift of RSS minus the media cache (the cache's size
# moves with the media, by design) and splits that into the Rust heap's live bytes
# minus the cache's, what jemalloc keeps resident beyond them, and the rest (GStreamer's
# glibc heap, stacks, code). The cache counts a segment and its parts apart though they
# share their bytes, so "live minus cache" understates what else is live (it can go
# below zero); read its trend.
#
# Usage: scripts/soak.sh [MINUTES]   (default 60; env RECONNECT_MIN=5 or RECONNECT_SECS,
#                                      WARMUP_MIN=5 WARMUP_RECONNECTS=2 SAMPLE_SECS=30
#                                      CHAT_RATE=20 WINDOW_GRACE=5)
# Why two reconnects: GStreamer's side of RSS (glibc heap) steps up when the first two
# pipelines are torn down and rebuilt and is flat after that (the 40- and 60-minute runs
# in README); a warm-up sample taken before the second reconnect reads that step as drift.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
MINUTES=${1:-60}
RECONNECT_MIN=${RECONNECT_MIN:-5}
RECONNECT_SECS=${RECONNECT_SECS:-$((RECONNECT_MIN * 60))}
WARMUP_MIN=${WARMUP_MIN:-5}
WARMUP_RECONNECTS=${WARMUP_RECONNECTS:-2}
SAMPLE_SECS=${SAMPLE_SECS:-30}
CHAT_RATE=${CHAT_RATE:-20}
WINDOW_GRACE=${WINDOW_GRACE:-5}
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
threads() { awk '/^Threads/ {print $2}' "/proc/$pid/status"; }
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }
# A metric summed over its label sets, from a fresh scrape or (sampled) from $scraped.
sum_metric() { awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%.0f", s}'; }
metric() { curl -s "http://$http/metrics" | sum_metric "$1"; }
sampled() { printf '%s\n' "$scraped" | sum_metric "$1"; }
now() { date +%s.%N | cut -c1-14; }
fd_base=$(fds)
: > "$dir/windows.txt"

# The publisher: reconnects every RECONNECT_SECS until the end. Each exit and each return
# of parts goes to windows.txt ("down T" / "up T", Unix seconds).
publish() {
  ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -f lavfi -i sine -t "$1" -c:v libx264 -preset veryfast -tune zerolatency -g 60 -b:v 3M \
    -c:a aac -f mpegts "srt://$srt?streamid=soak" || true
}
# It outlasts the clients (they start once the playlist is up, which may take up to 30 s
# on a loaded machine), so the run's end is no reconnect window.
(
  end=$((SECONDS + SECS + 45))
  span() { local left=$((end - SECONDS)); echo $((left < RECONNECT_SECS ? left : RECONNECT_SECS)); }
  publish "$(span)"
  echo "down $(now)" >> "$dir/windows.txt"
  while [ $SECONDS -lt $end ]; do
    sleep 1
    publish "$(span)" &
    pp=$!
    # Parts again: the part counter moves once the new publisher is in (bounded, 60 s each).
    for _ in $(seq 240); do
      [ "$(metric estuary_publishers_active)" -ge 1 ] && break; sleep 0.25
    done
    p0=$(metric estuary_parts_published_total)
    for _ in $(seq 240); do
      [ "$(metric estuary_parts_published_total)" -gt $((p0 + 2)) ] && break; sleep 0.25
    done
    echo "up $(now)" >> "$dir/windows.txt"
    wait $pp
    echo "down $(now)" >> "$dir/windows.txt"
  done
) &
for _ in $(seq 150); do curl -sf "http://$http/live/soak/index.m3u8" >/dev/null && break; sleep 0.2; done
rung=$(curl -s "http://$http/live/soak/index.m3u8" | grep -v '^#' | grep -v '^source/' | head -1)
rung=${rung%%/*}
echo "node $http pid $pid; rung $rung; ${MINUTES} min"

LOAD=target/hls_load/release/hls_load
$LOAD play --url "http://$http/live/soak/source/index.m3u8" --players 100 --secs "$SECS" --events > "$dir/hls-source.txt" 2> "$dir/hls-source.err" &
$LOAD play --url "http://$http/live/soak/$rung/index.m3u8" --players 100 --secs "$SECS" --events > "$dir/hls-rung.txt" 2> "$dir/hls-rung.err" &
target/ws_load/release/ws_load run --addr "$http" --stream soak --clients 1000 \
  --rate "$CHAT_RATE" --secs "$SECS" --secret "$SECRET" > "$dir/ws.txt" 2> "$dir/ws.err" &
ws=$!

printf '%6s %8s %9s %10s %10s %6s %7s %11s %8s\n' min rss_MB cache_MB heap_live heap_resid fds threads publishers parts
warm_rss="" warm="" last=""
start=$SECONDS
while [ $((SECONDS - start + SAMPLE_SECS)) -le "$SECS" ]; do
  sleep "$SAMPLE_SECS"
  m=$(( (SECONDS - start) / 60 ))
  # One scrape per sample, so the cache and heap figures are from the same moment.
  scraped=$(curl -s "http://$http/metrics") r=$(rss)
  c=$(( $(sampled estuary_cache_bytes) / 1048576 ))
  hl=$(( $(sampled estuary_heap_allocated_bytes) / 1048576 )) hr=$(( $(sampled estuary_heap_resident_bytes) / 1048576 ))
  last="$r $c $hl $hr"
  # The warm-up sample is the first one after WARMUP_MIN and WARMUP_RECONNECTS reconnects
  # with the publisher back for a minute at least: a sample just after a reconnect
  # catches a pipeline still filling.
  settled=$(awk -v t="$(now)" -v k="$WARMUP_RECONNECTS" '$1 == "up" {n++; last = $2}
    END { if (n >= k && t - last >= 60 && !down) print 1 } $1 == "down" {down = 1} $1 == "up" {down = 0}' "$dir/windows.txt")
  [ -z "$warm_rss" ] && [ "$m" -ge "$WARMUP_MIN" ] && [ -n "$settled" ] && warm_rss=$r warm=$last
  # Every sample from warm-up on (publisher connected), for the fitted slope.
  [ -n "$warm_rss" ] && [ "$(sampled estuary_publishers_active)" -ge 1 ] && echo "$SECONDS $r" >> "$dir/rss.txt"
  printf '%6d %8d %9d %10d %10d %6d %7d %11s %8s\n' "$m" "$r" "$c" "$hl" "$hr" "$(fds)" "$(threads)" \
    "$(sampled estuary_publishers_active)" "$(sampled estuary_parts_published_total)"
done
last_rss=${last%% *}
wait $ws || true
for _ in $(seq 60); do [ -z "$(jobs -rp | grep -v "^$$")" ] && break; sleep 1; done
sleep 5
echo
echo "RSS after warm-up ${warm_rss:-?} MB, at the end ${last_rss} MB"
[ -n "$warm_rss" ] && awk -v a="$warm" -v b="$last" 'BEGIN {
  split(a, w); split(b, l)
  printf "RSS drift %.1f %%\n", 100 * (l[1] - w[1]) / w[1]
  printf "RSS minus cache %d MB after warm-up, %d MB at the end (%+d MB)\n", w[1] - w[2], l[1] - l[2], (l[1] - l[2]) - (w[1] - w[2])
  if (l[3] > 0) {
    printf "  Rust heap live minus cache %d -> %d MB; jemalloc resident beyond live %d -> %d MB; the rest (GStreamer, stacks, code) %d -> %d MB\n",
      w[3] - w[2], l[3] - l[2], w[4] - w[3], l[4] - l[3], w[1] - w[4], l[1] - l[4]
  }
}'
[ -s "$dir/rss.txt" ] && awk -v w="$warm_rss" '{ n++; x = $1 / 3600; sx += x; sy += $2; sxx += x * x; sxy += x * $2 }
  END { if (n > 2 && sxx * n - sx * sx > 0) { b = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    printf "RSS slope from warm-up on %+.1f MB per hour (%+.1f %% of the warm-up RSS per hour; least squares over %d samples with the publisher connected)\n", b, 100 * b / w, n } }' "$dir/rss.txt"
# Connections the node closed itself, by reason (0 lines: none).
echo "node-side WebSocket closes: $(curl -s "http://$http/metrics" | grep -E '^estuary_interact_(closed_total|slow_consumer_drops_total)' | grep -v ' 0$' | tr '\n' ' ')"
echo "fds before load $fd_base, after the clients left $(fds); RSS then $(rss) MB"
for f in hls-source hls-rung; do echo "== $f"; cat "$dir/$f.txt"; done
echo "== websocket"; cat "$dir/ws.txt"; grep -v '^connected' "$dir/ws.err" | head -3 || true
# Client errors and skips inside / outside the reconnect windows.
echo "== reconnect windows (from ${WINDOW_GRACE} s before the publisher left to ${WINDOW_GRACE} s after parts came back)"
cat "$dir"/hls-*.err 2>/dev/null | awk -v g="$WINDOW_GRACE" '
  FILENAME == ARGV[1] { if ($1 == "down") d[++n] = $2; else if ($1 == "up") u[n] = $2; next }
  { w = 0; for (i = 1; i <= n; i++) if ($2 >= d[i] - g && (!(i in u) || $2 <= u[i] + g)) w = i }
  $1 == "error_at" { if (w) { ein++; we[w]++ } else { eout++; $1 = ""; if (eout <= 20) print "error outside a window:" $0 } }
  $1 == "skip_at" { if (w) { skin += $3; ws[w] += $3 } else skout += $3 }
  END {
    for (i = 1; i <= n; i++)
      printf "window %d: publisher left at %s, parts back %s; client errors %d, parts skipped %d\n", i, d[i],
        (i in u) ? sprintf("%.1f s later", u[i] - d[i]) : "(the end of the run)", we[i], ws[i]
    printf "client errors: %d inside the windows, %d outside\n", ein, eout
    printf "parts skipped (a reload listed parts past the one the player had; it jumped to the new hint): %d inside, %d outside\n", skin, skout
  }' "$dir/windows.txt" -
