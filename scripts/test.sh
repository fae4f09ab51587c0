#!/usr/bin/env bash
# Sets up this machine (idempotently) and runs the whole test suite: unit tests,
# integration tests against the real binary with real peers (ffmpeg/libsrt,
# srt-live-transmit, ffprobe, curl, openssl, redis-server), and the benches in test mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/check-toolchain.sh
export RUST_BACKTRACE=1
# One target dir for the root crate and the side crates (fuzz/, scripts/*_load/, which
# are workspaces of their own): their shared dependencies are then built once, not thrice.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Style and lints first: they are the cheapest failures.
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --all-targets
# The side crates must keep building against the library: the fuzz targets (their own
# workspace and lock; plain stable `cargo build` links them against libFuzzer without
# sanitizer coverage, which is enough to catch API drift; `cargo fuzz run` needs nightly)
# and the load generators (WebSocket, LL-HLS players; the latter's parser has a unit test).
cargo build --locked --manifest-path fuzz/Cargo.toml --bins
cargo build --locked --manifest-path scripts/ws_load/Cargo.toml
cargo test --locked --manifest-path scripts/hls_load/Cargo.toml
# Integration tests run real encoders; two at a time fits a 2-core machine. (An env var,
# not --test-threads: criterion's bench harness, run here in test mode, has no such flag.)
export RUST_TEST_THREADS=2
cargo test --locked --all-targets --no-fail-fast
# The Debian package: built, inspected, unpacked, its config checked by its own binary.
bash scripts/package-test.sh
# Alert rules parse, type-check and fire as their unit tests expect (the metric names
# they use are checked against a live node by tests/ops_metrics.rs).
promtool check rules config/prometheus-alerts.yml
promtool test rules config/prometheus-alerts.test.yml
# Every dashboard query parses as PromQL.
bash scripts/check-dashboard.sh
