#!/usr/bin/env bash
# The exact bytes ffmpeg sends through the test suite's UDP impairment relay (0 % loss,
# 50 ms RTT, jitter that reorders) against what srt-tokio delivers, as the node sets it up
# (too-late drop off) or, with `tlpktdrop`, with srt-tokio's default (on). Prints one line
# per run and the count of damaged runs.
#   scripts/srt-relay-bytes.sh 8 60            # the node's receiver, srt.latency 60 ms
#   scripts/srt-relay-bytes.sh 8 60 tlpktdrop  # srt-tokio's default receiver
set -euo pipefail
cd "$(dirname "$0")/.."
export ESTUARY_RELAY_RUNS="${1:-8}" ESTUARY_RELAY_LATENCY_MS="${2:-60}"
if [ "${3:-}" = tlpktdrop ]; then export ESTUARY_RELAY_TLPKTDROP=1; fi
cargo test --quiet --test srt_relay_bytes -- --nocapture 2>/dev/null | grep -E '^(run [0-9]|damaged)'
