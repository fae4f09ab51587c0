#!/usr/bin/env bash
# Estuary needs a Rust toolchain of 1.95 or newer (rustup); Debian's own cargo is too old.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust 1.95+ with rustup (https://rustup.rs), then rerun." >&2
  exit 1
fi
