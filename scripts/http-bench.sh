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
# Each run also prints the server's and wrk's CPU (% of one core; with 2 workers, of up to
# two). wrk runs on the same machine: when it is at 100 % of its core for nginx, nginx's
# figure is the client's ceiling, and a faster server cannot show a larger ratio.
#
# With PERF=1 it also profiles the node (perf) serving parts over plain HTTP, and prints
# the kernel's and its own share of the time and the share of the body copy into the
# socket (`_copy_from_iter`).
#
# NGINX_SENDFILE=off makes nginx read and write each plain response instead (one copy into
# the socket, as Estuary's write does): what a zero-copy send is worth here.
#
# NGINX_TMPFS=1 puts nginx's files in /dev/shm instead of the disk's page cache.
#
# TCP_CC=reno (or any name in net.ipv4.tcp_allowed_congestion_control) runs the whole
# comparison in a network namespace of its own, with only loopback up, whose TCP
# congestion control is that one. TCP's own pacing (BBR without the fq qdisc, as on this
# VM's loopback) changes what a send costs; TCP_CC= shows both servers without it. Needs root.
#
# Usage: [PERF=1] [NGINX_SENDFILE=off] [NGINX_TMPFS=1] [TCP_CC=name] scripts/http-bench.sh [SECONDS] [CONNECTIONS] [ROUNDS] [WORKERS]
#        (defaults 10, 64, 3, "1 2")
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TCP_CC:-}" ] && [ -z "${HTTP_BENCH_NETNS:-}" ]; then
  ns=http-bench-$$
  ip netns add "$ns"
  trap 'ip netns del "$ns"' EXIT
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_congestion_control="$TCP_CC"
  echo "network namespace $ns, congestion control $(ip netns exec "$ns" sysctl -n net.ipv4.tcp_congestion_control)"
  ip netns exec "$ns" env HTTP_BENCH_NETNS=1 "$0" "$@"
  exit
fi
. scripts/node-lib.sh
SECS=${1:-10}
[ "$SECS" -ge 3 ] || { echo "SECONDS must be at least 3" >&2; exit 2; }
CONNS=${2:-64}
ROUNDS=${3:-3}
WORKERS=${4:-"1 2"}
CIPHER=TLS_AES_256_GCM_SHA384
cargo build --release --locked -q
dir=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null
  rm -rf "$dir" "${www:-}"
}
trap cleanup EXIT
# nginx's document root: in the run's temp dir (the disk's page cache), or with
# NGINX_TMPFS=1 in /dev/shm (shared memory, as a memfd is).
www=$dir/www
if [ "${NGINX_TMPFS:-0}" = 1 ]; then www=$(mktemp -d /dev/shm/http-bench.XXXXXX); fi
mkdir -p "$www" "$dir/plain" "$dir/tls"
chmod 755 "$dir" "$www"
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
  curl -sk "$1/$name" -o "$www/$3"
  chmod 644 "$www/$3"
  echo "$1/$name"
}

# CPU time (clock ticks, 100 a second) of the given processes, summed.
ticks() {
  local sum=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$sum"
}

# One wrk run against $2 with $1 threads; $3... are the server's processes. Prints
# requests/s, then wrk's and the server's CPU (% of one core) over the run's middle (from
# 1 s in to 1 s before the end), so a saturated client shows: a client at 100 % of its
# core caps both servers alike, and no ratio above that ceiling can be measured. Any
# non-2xx answer makes the run invalid.
run() {
  local w=$1 url=$2 out="$dir/wrk.out" wp c0 s0 c1 s1 mid
  shift 2
  wrk -t"$w" -c"$CONNS" -d"${SECS}s" "$url" > "$out" &
  wp=$!
  mid=$((SECS - 2))
  sleep 1
  c0=$(ticks "$wp") s0=$(ticks "$@")
  sleep "$mid"
  c1=$(ticks "$wp") s1=$(ticks "$@")
  wait "$wp"
  if grep -q "Non-2xx" "$out"; then echo "non-2xx answers from $url" >&2; exit 1; fi
  echo "$(awk '/Requests\/sec/ {print $2}' "$out") $(((c1 - c0) / mid)) $(((s1 - s0) / mid))"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start, TCP congestion control $(sysctl -n net.ipv4.tcp_congestion_control)"
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
  sendfile ${NGINX_SENDFILE:-on}; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; root $www; }
  server {
    listen 127.0.0.1:$sport ssl;
    root $www;
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
        size=$(stat -c %s "$www/${proto:0:1}-$obj.m4s")
        epid=$PID_plain; [ "$proto" = tls ] && epid=$PID_tls
        # shellcheck disable=SC2046
        if [ $((r % 2)) = 1 ]; then est=$(run "$w" "$e" "$epid"); ngx=$(run "$w" "$n" $(pgrep -P "$(cat "$dir/nginx.pid")"))
        else ngx=$(run "$w" "$n" $(pgrep -P "$(cat "$dir/nginx.pid")")); est=$(run "$w" "$e" "$epid"); fi
        read -r e ecl esv <<< "$est"
        read -r n ncl nsv <<< "$ngx"
        awk -v w="$w" -v p="$proto" -v o="$obj" -v r="$r" -v s="$size" -v e="$e" -v n="$n" \
          -v ecl="$ecl" -v esv="$esv" -v ncl="$ncl" -v nsv="$nsv" \
          'BEGIN { printf "workers %s %-5s %-4s round %s  %7d bytes  estuary %9.0f req/s (cpu %3d%%, wrk %3d%%)  nginx %9.0f req/s (cpu %3d%%, wrk %3d%%)  ratio %.2f\n", w, p, o, r, s, e, esv, ecl, n, nsv, ncl, e/n }' \
          | tee -a "$dir/results"
      done
    done
  done
  if [ -n "${PERF:-}" ]; then
    # Where the node's time goes while it serves parts over plain HTTP.
    e=$(fresh "$URL_plain" part p-part.m4s)
    perf record -F 2000 -g -p "$PID_plain" -o "$dir/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
    run "$w" "$e" "$PID_plain" >/dev/null
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
import re, statistics, sys
cases, cpus, per_req = {}, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    key = " ".join(f[:4])
    cases.setdefault(key, []).append(float(f[-1]))
    # (server, wrk) CPU for Estuary, then for nginx.
    cpus.setdefault(key, []).append([int(v) for pair in re.findall(r"cpu +(\d+)%, wrk +(\d+)%", line) for v in pair])
    # Server CPU per request in µs (CPU % of one core x 10^4 / requests per second): the
    # servers' own cost, which still compares when wrk is the ceiling.
    per_req.setdefault(key, []).append([int(c) * 1e4 / float(r) for r, c in re.findall(r"(\d+) req/s \(cpu +(\d+)%", line)])
for k, v in sorted(cases.items()):
    c = [statistics.median(col) for col in zip(*cpus[k])]
    e, n = [statistics.median(col) for col in zip(*per_req[k])]
    print(f"{k:<22} {statistics.median(v):.2f}  (rounds: {' '.join(f'{x:.2f}' for x in v)})"
          f"  median cpu: estuary {c[0]:.0f}% wrk {c[1]:.0f}%, nginx {c[2]:.0f}% wrk {c[3]:.0f}%"
          f"  server cpu per request: estuary {e:.1f} us, nginx {n:.1f} us (nginx / estuary {n / e:.2f})")
PY
echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg) at end"
