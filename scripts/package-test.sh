#!/usr/bin/env bash
# Package test: builds the .deb (debug profile, same layout as release), checks its control
# data and contents, unpacks it into a scratch root (what `dpkg -i` lays down) and runs the
# packaged binary's `check-config` on the packaged /etc/estuary/estuary.toml, whose web
# paths must exist inside the package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/package.sh --dev
target="${CARGO_TARGET_DIR:-target}"
deb=$(ls -t "$target"/debian/estuary_*.deb | head -n1)
echo "package-test: $deb ($(du -h "$deb" | cut -f1))"
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

info=$(dpkg-deb -I "$deb")
grep -q '^ Package: estuary$' <<<"$info" || fail "no Package: estuary"
grep -q '^ Depends:.*gstreamer1.0-plugins-bad' <<<"$info" || fail "Depends lacks GStreamer"
grep -q '^ Depends:.*adduser' <<<"$info" || fail "Depends lacks adduser"
for s in conffiles postinst prerm postrm; do
  grep -qw "$s" <<<"$info" || fail "control member $s missing"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/estuary/estuary.toml \
  || fail "/etc/estuary/estuary.toml is not a conffile"

contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/estuary ./etc/estuary/estuary.toml \
         ./lib/systemd/system/estuary.service ./lib/systemd/system/estuary-http.socket \
         ./lib/systemd/system/estuary-srt.socket ./usr/share/estuary/web/index.html \
         ./usr/share/estuary/web/watch.html ./usr/share/estuary/web/watch.js \
         ./usr/share/estuary/web/hls.min.js ./usr/share/doc/estuary/README.md \
         ./usr/share/estuary/monitoring/grafana-estuary.json \
         ./usr/share/estuary/monitoring/prometheus-alerts.yml; do
  grep -q " $f\$" <<<"$contents" || fail "$f not in the package"
done
grep -q ' ./usr/share/estuary/web/tests' <<<"$contents" && fail "web/tests shipped"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$root/DEBIAN"
for s in postinst prerm postrm; do
  sh -n "$root/DEBIAN/$s" || fail "$s does not parse"
done
"$root/usr/bin/estuary" check-config "$root/etc/estuary/estuary.toml" || fail "packaged config invalid"
# The packaged config points at files the package installs.
for key in web_root hlsjs; do
  p=$(sed -n "s/^$key = \"\\(.*\\)\"$/\\1/p" "$root/etc/estuary/estuary.toml")
  [ -n "$p" ] && [ -e "$root$p" ] || fail "$key = '$p' is not in the package"
done
[ -f "$root/usr/share/estuary/web/index.html" ] || fail "index.html missing"
# A fresh install is closed: no stream may publish until the operator adds one.
grep -q '^\[streams\.' "$root/etc/estuary/estuary.toml" && fail "the packaged config opens a stream"
grep -q '^allow_unknown_streams = false$' "$root/etc/estuary/estuary.toml" || fail "allow_unknown_streams not false"
# The unit runs what the package installs.
grep -q '^ExecStart=/usr/bin/estuary --config /etc/estuary/estuary.toml$' \
  "$root/lib/systemd/system/estuary.service" || fail "ExecStart does not match the package"
# The units parse (systemd-analyze verify); the only complaint allowed is that
# /usr/bin/estuary is not installed on this machine.
units="$root/lib/systemd/system"
out=$(systemd-analyze verify "$units/estuary.service" "$units/estuary-http.socket" \
        "$units/estuary-srt.socket" 2>&1 || true)
rest=$(grep -v 'Command /usr/bin/estuary is not executable' <<<"$out" || true)
[ -z "$rest" ] || fail "systemd-analyze verify: $rest"
echo "package-test: ok"
