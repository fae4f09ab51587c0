#!/usr/bin/env bash
# Measures ingest → part-published latency: the time from the arrival over SRT of a
# part's last frame to the part being servable, from the node's own histogram
# (estuary_part_publish_latency_seconds), while ffmpeg publishes 720p30 over SRT (the
# path OBS uses). Also fetches every part through blocking playlist reloads and reports
# how long after the part's media ended (by its program date time) it was received by an
# HTTP client on loopback.
#
# Usage: scripts/latency.sh [SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
SECS=${1:-60}
bench_dir
cat > "$dir/c.toml" <<CFG
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
[streams.bench]
CFG
start_node "$dir/c.toml" "$dir"
http=$NODE_HTTP srt=$NODE_SRT
ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=sample_rate=48000 -t "$SECS" -c:v libx264 -preset veryfast -tune zerolatency \
  -g 30 -b:v 3M -c:a aac -f mpegts "srt://$srt?streamid=bench&latency=120000" &
python3 - "$http" "$SECS" <<'PY'
import sys, time, urllib.request, re, datetime
http, secs = sys.argv[1], int(sys.argv[2])
base = f"http://{http}/live/bench/source/index.m3u8"
def get(u):
    with urllib.request.urlopen(u, timeout=10) as r:
        return r.read().decode()
deadline = time.time() + 30
while time.time() < deadline:
    try:
        text = get(base); break
    except Exception:
        time.sleep(0.2)
delays = []
end = time.time() + secs - 5
def next_target(text):
    """(msn, part) just after the newest listed part, and the hinted URI (that part)."""
    msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    last, count = None, 0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PART:"):
            last = (msn, count); count += 1
        elif line and not line.startswith("#"):
            msn, count = msn + 1, 0
    hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', text).group(1)
    return last[0], last[1] + 1, hint
msn, part, want = next_target(text)
while time.time() < end and len(delays) < 10000:
    try:
        text = get(f"{base}?_HLS_msn={msn}&_HLS_part={part}")
    except Exception:
        text = get(base)
        msn, part, want = next_target(text)
        continue
    got = time.time()
    # Find the awaited part and the PDT of its segment, then its end time.
    pdt, acc = None, 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
            acc = 0.0
        elif line.startswith("#EXT-X-PART:"):
            d = float(re.search(r"DURATION=([\d.]+)", line).group(1))
            acc += d
            if f'URI="{want}"' in line:
                delays.append(got - (pdt + acc))
    msn, part, want = next_target(text)
metrics = get(f"http://{http}/metrics")
buckets = [(float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), float(m.group(2)))
           for m in re.finditer(r'estuary_part_publish_latency_seconds_bucket\{rendition="source",le="([^"]+)"\} (\S+)', metrics)]
count = buckets[-1][1]
def q(p):
    want = p * count; prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= want:
            if le == float("inf"): return prev_le
            return prev_le + (le - prev_le) * ((want - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
total = float(re.search(r'estuary_part_publish_latency_seconds_sum\{rendition="source"\} (\S+)', metrics).group(1))
print(f"parts published: {int(count)}; mean ingest -> part published {total / max(count, 1) * 1000:.1f} ms")
print("ingest -> part published, source rendition (node histogram, interpolated):")
for p in (0.5, 0.9, 0.99):
    print(f"  p{int(p*100)}: {q(p)*1000:.1f} ms")
if delays:
    print(f"part media end (PDT) -> received by a blocking-reload client, {len(delays)} parts:")
    for p in (0.5, 0.9, 0.99):
        print(f"  p{int(p*100)}: {pct(delays, p)*1000:.1f} ms")
    print(f"  part duration for scale: 200 ms; ratio p50/part = {pct(delays, 0.5)/0.2:.2f}")
PY
