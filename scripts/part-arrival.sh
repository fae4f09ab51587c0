#!/usr/bin/env bash
# When parts become available, by their place in the segment: what bounds a player's
# distance to the live edge at small part targets (README, "Camera-to-eye latency").
#
# One node (release build) with hls.part_target = PART (default 100ms) and no ladder;
# ffmpeg publishes a 720p30 test pattern over SRT exactly as scripts/latency-browser.sh
# does (x264 ultrafast/zerolatency, 1 s GOP, AAC, libsrt's default options and 120 ms
# latency); two followers (scripts/part-arrival.py) hold blocking reloads on the
# `source` and `audio` playlists for SECS seconds and stamp each new part. The script
# prints, per rendition, the gap before each part (median and p90 in ms), split into a
# segment's first part, its last part, and the others, and how often parts arrive
# together (gap < 10 ms).
#
# Usage: scripts/part-arrival.sh [SECS]   (default 30; env PART=100ms)
# Everything listens on 127.0.0.1 only; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
SECS=${1:-30}
PART=${PART:-100ms}
command -v ffmpeg >/dev/null || { echo "part-arrival: ffmpeg is missing (apt-get install ffmpeg)" >&2; exit 1; }
bench_dir
part_config "$dir/c.toml" "$PART" demo
start_node "$dir/c.toml" "$dir"
ffmpeg -hide_banner -loglevel error -nostdin -re \
  -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t $((SECS + 30)) -map 0:v -map 1:a \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -keyint_min 30 -b:v 2M -c:a aac -b:a 128k \
  -f mpegts "srt://$NODE_SRT?streamid=demo&latency=120000" 2> "$dir/ffmpeg.log" &
for _ in $(seq 150); do curl -sf "http://$NODE_HTTP/live/demo/audio/index.m3u8" >/dev/null && break; sleep 0.2; done
sleep 3
for r in source audio; do
  python3 scripts/part-arrival.py "http://$NODE_HTTP/live/demo/$r/index.m3u8" "$SECS" > "$dir/$r.txt" &
done
wait_followers() { for _ in $(seq $((SECS + 20))); do [ "$(jobs -rp | wc -l)" -le 2 ] && return; sleep 1; done; }
wait_followers
echo "part target $PART, ${SECS} s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in source audio; do
  # Per part: the gap since the previous one, and its place (first / last / other); the
  # last part of a segment is known once the next segment's first part is listed.
  awk -v r="$r" '
    { t[NR] = $1; m[NR] = $2; i[NR] = $3 }
    END {
      for (k = 2; k <= NR; k++) {
        g = (t[k] - t[k - 1]) * 1000
        place = (i[k] == 0) ? "first" : ((k < NR && m[k + 1] != m[k]) ? "last" : "other")
        print place, g
      }
    }' "$dir/$r.txt" | sort -k1,1 -k2,2n | awk -v r="$r" '
    { g[$1, ++n[$1]] = $2; if ($2 < 10) together[$1]++ }
    END {
      for (p in n) {
        q = int(n[p] * 0.9 + 0.5); if (q < 1) q = 1
        printf "%-6s %-5s parts %4d  gap median %4.0f ms  p90 %4.0f ms  arrived with the previous one %d\n",
          r, p, n[p], g[p, int((n[p] + 1) / 2)], g[p, q], together[p] + 0
      }
    }' | sort
done
