#!/usr/bin/env bash
# Shows how long cmafmux holds each part: runs the release binary with cmafmux's trace log
# (GST_DEBUG=fmp4mux:7) while ffmpeg publishes 720p30 over SRT for SECS seconds (default
# 12), then prints, per part of the `source` rendition, the time from its last frame
# reaching cmafmux to cmafmux draining it, and the gap to the next frame (the frame that
# lets cmafmux close the part). Parts that end a segment are marked. Everything before
# cmafmux (h264parse's one-frame hold) comes on top; scripts/latency.sh gives the total.
#
# Usage: scripts/mux-hold.sh [SECS] [PART_TARGET]   (defaults 12, 200ms)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
SECS=${1:-12}
PART=${2:-200ms}
bench_dir
part_config "$dir/c.toml" "$PART" bench
GST_DEBUG=fmp4mux:7 GST_DEBUG_NO_COLOR=1 start_node "$dir/c.toml" "$dir"
ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=sample_rate=48000 -t "$SECS" -c:v libx264 -preset veryfast -tune zerolatency \
  -g 30 -b:v 3M -c:a aac -f mpegts "srt://$NODE_SRT?streamid=bench&latency=120000"
sleep 1
python3 - "$dir/node.log" <<'PY'
import re, sys
def secs(stamp):
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)
arrived, drains = {}, []
for line in open(sys.argv[1], errors="replace"):
    if "<mux-source" not in line:
        continue
    t = secs(line.split()[0])
    if "Handling buffer" in line:
        m = re.search(r"pts: (\d+:\d+:[\d.]+)", line)
        if m:
            arrived.setdefault(round(secs(m.group(1)), 4), t)
    m = re.search(r"Draining chunk \(fragment start: \w+ fragment end: (\w+)\) from PTS (\S+) to (\S+)", line)
    if m:
        drains.append((m.group(1) == "true", secs(m.group(3)), t))
pts = sorted(arrived)
holds = []
for seg_end, end, t in drains[3:]:
    before = [p for p in pts if p < end - 1e-6]
    after = [p for p in pts if p >= end - 1e-6]
    if not before or not after:
        continue
    hold = (t - arrived[before[-1]]) * 1000
    gap = (arrived[after[0]] - arrived[before[-1]]) * 1000
    holds.append((hold, seg_end))
    print(f"part ending {end:9.3f}: last frame in -> drained {hold:5.1f} ms; next frame {gap:5.1f} ms later{'  (ends a segment)' if seg_end else ''}")
for label, sel in (("inside a segment", False), ("ending a segment", True)):
    v = sorted(h for h, s in holds if s == sel)
    if v:
        print(f"{label}: {len(v)} parts, median hold {v[len(v) // 2]:.1f} ms, max {v[-1]:.1f} ms")
PY
