#!/usr/bin/env bash
# Installs what Estuary needs to build, run and test on Debian 12. Idempotent: packages
# already present are skipped by apt, and nothing is downloaded from outside the
# package registries.
set -euo pipefail

PKGS=(
  pkg-config build-essential
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  gstreamer1.0-x ffmpeg srt-tools redis-server curl
)
# Node.js and npm from Debian, unless a Node.js toolchain is already on the PATH (its npm
# would conflict with Debian's package).
if ! command -v npm >/dev/null 2>&1; then
  PKGS+=(nodejs npm)
fi
if [ "${1:-}" = "--test" ]; then
  # chromium runs the player tests; nginx, wrk and openssl serve as baselines and peers;
  # varnish is the CDN cache in front of an edge. systemd: systemd-analyze (unit hardening
  # score) and systemd-socket-activate; prometheus: promtool for the alert rules;
  # python3: scripts/check-dashboard.sh and the benchmark scripts' parsers (not in every
  # minimal Debian image).
  PKGS+=(chromium fonts-noto-color-emoji nginx-light wrk openssl time varnish systemd prometheus python3)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# hls.js (and playwright-core for the browser tests) from the npm registry, pinned by
# web/package-lock.json; the node serves hls.js itself, so players never need a CDN.
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ -f "$here/web/package-lock.json" ] && ! cmp -s "$here/web/package-lock.json" "$here/web/node_modules/.estuary-lock"; then
  echo "setup: npm ci in web/"
  (cd "$here/web" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/web/package-lock.json" "$here/web/node_modules/.estuary-lock"
fi
