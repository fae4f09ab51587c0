#!/usr/bin/env bash
# Lossy contribution links: ffmpeg publishes through the test suite's UDP impairment relay
# (loss each way, 50 ms RTT, jitter that reorders) to a real node; prints one table row per
# case (SRT packets dropped for good, from the node's metrics; parts published; and any
# ffmpeg decode error over every listed segment).
#   scripts/lossy-srt.sh                      # README's recommended cases (what CI checks)
#   scripts/lossy-srt.sh 0.10:1000 0.10:1500  # other loss:latency_ms cases
set -euo pipefail
cd "$(dirname "$0")/.."
cases=$(IFS=,; echo "$*")
if [ -n "$cases" ]; then export ESTUARY_LOSSY_CASES="$cases"; fi
cargo test --quiet --test e2e_lossy -- --nocapture 2>/dev/null | grep '^|'
