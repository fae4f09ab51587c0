#!/usr/bin/env bash
# Sets up this machine (idempotently) and runs the edge node with config/estuary.toml.
# Extra arguments go to the binary, e.g. scripts/run.sh --http-listen 127.0.0.1:8080
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check-toolchain.sh
cargo build --release --locked
exec ./target/release/estuary --config config/estuary.toml "$@"
