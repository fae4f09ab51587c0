#!/usr/bin/env bash
# Serving speed against nginx, in the same run, plain HTTP and HTTPS.
#
# wrk fetches one real media segment (and one part) from Estuary's memory cache, and the
# same bytes from nginx (plain: sendfile from the page cache; TLS: OpenSSL), over
# HTTP/1.1 keep-alive on loopback. Both servers get the same worker count: Estuary's
# tokio worker threads (TOKIO_WORKER_THREADS) = nginx's worker_processes, for each of
# WORKERS. HTTPS: the same self-signed P-256 certificate, TLS 1.3 only, and the same
# cipher suite on both (printed: the one wrk's OpenSSL negotiates by default, pinned on
# nginx with ssl_conf_command). Runs are interleaved (Estuary, nginx, then nginx,
# Estuary...) ROUNDS times with a fresh object each round (identical bytes on both
# sides), and each round prints requests/s and the ratio; the summary gives the median
# ratio per case.
#
# The nodes' publishers send a pre-encoded 720p30 3 Mb/s file with -c copy over SRT, so
# the machine is not also busy encoding; each node still packages its live stream while
# measured, which nginx does not have to.
#
# With PERF=1 it also profiles the node (perf) serving parts over plain HTTP, and prints
# the kernel's and its own share of the time and the share of the body copy into the
# socket (`_copy_from_iter`).
#
# Usage: [PERF=1] scripts/http-bench.sh [SECONDS] [CONNECTIONS] [ROUNDS] [WORKERS]
#        (defaults 10, 64, 3, "1 2")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-lib.sh
SECS=${1:-10}
CONNS=${2:-64}
ROUNDS=${3:-3}
WORKERS=${4:-"1 2"}
CIPHER=TLS_AES_256_GCM_SHA384
cargo build --release --locked -q
dir=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/www" "$dir/plain" "$dir/tls"
chmod 755 "$dir" "$dir/www"
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine -t 60 -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -b:v 3M \
  -c:a aac -f mpegts "$dir/src.ts"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
chmod 644 "$dir/key.pem" "$dir/cert.pem"
printf 'srt.listen = "127.0.0.1:0"\nhttp.listen = "127.0.0.1:0"\nrtmp.enabled = false\n[streams.bench]\n' > "$dir/plain.toml"
printf 'srt.listen = "127.0.0.1:0"\nhttp.listen = "127.0.0.1:0"\nrtmp.enabled = false\nhttp.tls_cert = "%s"\nhttp.tls_key = "%s"\n[streams.bench]\n' \
  "$dir/cert.pem" "$dir/key.pem" > "$dir/tls.toml"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A node with $1 workers for config $2 (plain|tls), published to; sets URL_<kind>, PID_<kind>.
node() {
  TOKIO_WORKER_THREADS=$1 start_node "$dir/$2.toml" "$dir/$2"
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$dir/src.ts" -c copy \
    -f mpegts "srt://$NODE_SRT?streamid=bench" &
  local scheme=http; [ "$2" = tls ] && scheme=https
  printf -v "URL_$2" '%s' "$scheme://$NODE_HTTP/live/bench/source"
  printf -v "PID_$2" '%s' "$NODE_PID"
}

# Copies the newest segment or part ($2: seg|part) of the node at $1 to nginx's root as
# $3 and prints its URL on the node.
fresh() {
  local pl name
  pl=$(curl -sk "$1/index.m3u8")
  case $2 in
    seg) name=$(echo "$pl" | grep -E '^[0-9]+\.m4s$' | tail -1) ;;
    part) name=$(echo "$pl" | sed -n 's/^#EXT-X-PART:.*URI="\(p[0-9]*\.m4s\)".*/\1/p' | tail -1) ;;
  esac
  curl -sk "$1/$name" -o "$dir/www/$3"
  chmod 644 "$dir/www/$3"
  echo "$1/$name"
}

# Requests/s of one wrk run; any non-2xx answer makes the run invalid.
run() {
  local out
  out=$(wrk -t"$1" -c"$CONNS" -d"${SECS}s" "$2")
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers from $2" >&2; exit 1; fi
  echo "$out" | awk '/Requests\/sec/ {print $2}'
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
: > "$dir/results"
for w in $WORKERS; do
  node "$w" plain
  node "$w" tls
  port=$(free_port) sport=$(free_port)
  cat > "$dir/nginx.conf" <<NG
worker_processes $w;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; root $dir/www; }
  server {
    listen 127.0.0.1:$sport ssl;
    root $dir/www;
    ssl_certificate $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites $CIPHER;
  }
}
NG
  nginx -c "$dir/nginx.conf" -p "$dir" &
  for u in "$URL_plain" "$URL_tls"; do
    for _ in $(seq 100); do curl -sfk "$u/index.m3u8" | grep -q PRELOAD-HINT && break; sleep 0.3; done
  done
  sleep 3
  for target in "${URL_tls#https://}" "127.0.0.1:$sport"; do
    target=${target%%/*}
    got=$(openssl s_client -connect "$target" -tls1_3 </dev/null 2>/dev/null | sed -n 's/^New, \(TLSv1.3\), Cipher is \(.*\)/\1 \2/p')
    echo "workers $w: $target negotiates $got"
    [ "$got" = "TLSv1.3 $CIPHER" ] || { echo "cipher mismatch" >&2; exit 1; }
  done
  for r in $(seq "$ROUNDS"); do
    for proto in plain tls; do
      for obj in seg part; do
        if [ "$proto" = plain ]; then
          e=$(fresh "$URL_plain" "$obj" "p-$obj.m4s"); n="http://127.0.0.1:$port/p-$obj.m4s"
        else
          e=$(fresh "$URL_tls" "$obj" "t-$obj.m4s"); n="https://127.0.0.1:$sport/t-$obj.m4s"
        fi
        code=$(curl -sk -o /dev/null -w '%{http_code}' "$n")
        [ "$code" = 200 ] || { echo "nginx answers $code for $n" >&2; exit 1; }
        size=$(stat -c %s "$dir/www/${proto:0:1}-$obj.m4s")
        if [ $((r % 2)) = 1 ]; then est=$(run "$w" "$e"); ngx=$(run "$w" "$n")
        else ngx=$(run "$w" "$n"); est=$(run "$w" "$e"); fi
        awk -v w="$w" -v p="$proto" -v o="$obj" -v r="$r" -v s="$size" -v e="$est" -v n="$ngx" \
          'BEGIN { printf "workers %s %-5s %-4s round %s  %7d bytes  estuary %9.0f req/s  nginx %9.0f req/s  ratio %.2f\n", w, p, o, r, s, e, n, e/n }' \
          | tee -a "$dir/results"
      done
    done
  done
  if [ -n "${PERF:-}" ]; then
    # Where the node's time goes while it serves parts over plain HTTP.
    e=$(fresh "$URL_plain" part p-part.m4s)
    perf record -F 2000 -g -p "$PID_plain" -o "$dir/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
    run "$w" "$e" >/dev/null
    wait $!
    echo "perf, Estuary serving parts over plain HTTP with $w worker(s), share of its samples:"
    perf report -i "$dir/perf.data" --no-children --sort dso -g none 2>/dev/null | grep '%' | head -3
    perf report -i "$dir/perf.data" --no-children --sort symbol -g none 2>/dev/null | grep -m1 _copy_from_iter
  fi
  kill "$(cat "$dir/nginx.pid")"; rm -f "$dir/nginx.pid"
  kill "$PID_plain" "$PID_tls" $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
done
echo "median ratio (estuary / nginx) per case:"
python3 - "$dir/results" <<'PY'
import statistics, sys
cases = {}
for line in open(sys.argv[1]):
    f = line.split()
    cases.setdefault(" ".join(f[:4]), []).append(float(f[-1]))
for k, v in sorted(cases.items()):
    print(f"{k:<22} {statistics.median(v):.2f}  (rounds: {' '.join(f'{x:.2f}' for x in v)})")
PY
echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg) at end"
