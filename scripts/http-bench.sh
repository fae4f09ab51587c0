#!/usr/bin/env bash
# Serving speed against nginx, in the same run: wrk fetches one real media segment (and
# one part) from Estuary's memory cache and the same bytes from nginx (sendfile, from the
# page cache), over HTTP/1.1 keep-alive on loopback. Prints requests/s for each and the
# ratio. Estuary and nginx each get one worker core's worth of threads.
#
# Usage: scripts/http-bench.sh [SECONDS] [CONNECTIONS]   (defaults 10, 64)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
SECS=${1:-10}
CONNS=${2:-64}
cargo build --release --locked -q
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/c.toml" <<CFG
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
[streams.bench]
CFG
TOKIO_WORKER_THREADS=1 start_node "$dir/c.toml" "$dir"
http=$NODE_HTTP srt=$NODE_SRT
ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine -t 120 -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -b:v 3M \
  -c:a aac -f mpegts "srt://$srt?streamid=bench" &
for _ in $(seq 100); do curl -sf "http://$http/live/bench/index.m3u8" >/dev/null && break; sleep 0.3; done
sleep 3
pl=$(curl -s "http://$http/live/bench/source/index.m3u8")
seg=$(echo "$pl" | grep -E '^[0-9]+\.m4s$' | tail -1)
part=$(echo "$pl" | sed -n 's/^#EXT-X-PART:.*URI="\(p[0-9]*\.m4s\)".*/\1/p' | tail -1)
mkdir -p "$dir/www"
curl -s "http://$http/live/bench/source/$seg" -o "$dir/www/seg.m4s"
curl -s "http://$http/live/bench/source/$part" -o "$dir/www/part.m4s"
cat > "$dir/nginx.conf" <<NG
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:0; root $dir/www; }
}
NG
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/listen 127.0.0.1:0/listen 127.0.0.1:$port/" "$dir/nginx.conf"
chmod 755 "$dir" "$dir/www"; chmod 644 "$dir/www/"*
nginx -c "$dir/nginx.conf" -p "$dir" &
sleep 1
for f in seg part; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/$f.m4s")
  [ "$code" = 200 ] || { echo "nginx answers $code for $f.m4s" >&2; exit 1; }
done
# Any non-2xx answer makes the run invalid.
run() {
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "$1")
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers from $1" >&2; exit 1; fi
  echo "$out" | awk '/Requests\/sec/ {print $2}'
}
printf "object sizes: segment %s bytes, part %s bytes\n" "$(stat -c %s "$dir/www/seg.m4s")" "$(stat -c %s "$dir/www/part.m4s")"
for obj in seg part; do
  case $obj in seg) e="http://$http/live/bench/source/$seg";; part) e="http://$http/live/bench/source/$part";; esac
  est=$(run "$e"); ngx=$(run "http://127.0.0.1:$port/$obj.m4s")
  awk -v o="$obj" -v e="$est" -v n="$ngx" 'BEGIN { printf "%-8s estuary %10.0f req/s   nginx %10.0f req/s   ratio %.2f\n", o, e, n, e/n }'
done
