#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: $CARGO_TARGET_DIR/debian/estuary_*.deb
# (target/debian/ by default). Idempotent: cargo-deb is installed from crates.io once.
#   scripts/package.sh          release build (what you deploy)
#   scripts/package.sh --dev    debug build with the same layout (the package test)
# Install: sudo apt install ./target/debian/estuary_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo-deb: maintained, builds straight from [package.metadata.deb] in Cargo.toml with no
# debian/rules or debhelper tree to keep in step, and installs with plain `cargo install`.
# Pinned: --dev packages the debug profile, which cargo-deb 3.x only warns about.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\b"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
# hls.js ships in the package; setup.sh fetches it (npm ci) when it is missing.
if [ ! -f web/node_modules/hls.js/dist/hls.min.js ]; then
  bash scripts/setup.sh
fi
# The packaged config is the repository's, with the web paths where the package puts them
# and without the open `demo` stream: a fresh install accepts no publisher until the
# operator adds a stream (with a passphrase) to /etc/estuary/estuary.toml.
awk '
  /^\[streams\.demo\]$/ {
    print "# [streams.demo]   # open test stream of the development config; off in the package"
    next
  }
  { print }
  /^\[http\]$/ {
    print "# Where the Debian package installs the web pages and hls.js."
    print "web_root = \"/usr/share/estuary/web\""
    print "hlsjs = \"/usr/share/estuary/web/hls.min.js\""
  }
' config/estuary.toml > debian/estuary.toml
grep -q '^web_root = "/usr/share/estuary/web"' debian/estuary.toml
if grep -q '^\[streams\.' debian/estuary.toml; then
  echo "package: the packaged config would open a stream" >&2
  exit 1
fi

profile=()
if [ "${1:-}" = "--dev" ]; then
  # The debug build test.sh has already made: same files, no release build on CI.
  profile=(--profile dev --quiet)
fi
cargo deb --locked "${profile[@]}"
