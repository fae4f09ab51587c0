# Sourced by the benchmark scripts: starts the release binary with a config file on
# loopback ports the OS picks, waits (bounded) for its "listening" line, and sets
# NODE_PID, NODE_HTTP and NODE_SRT. Extra environment for the node goes before the call,
# e.g. `TOKIO_WORKER_THREADS=1 start_node "$dir/c.toml" "$dir"`. ESTUARY_BIN=path runs
# that binary instead of the release build (e.g. an older build, for a comparison).
start_node() {
  local cfg=$1 out=$2
  "${ESTUARY_BIN:-${CARGO_TARGET_DIR:-target}/release/estuary}" --config "$cfg" > "$out/node.out" 2> "$out/node.log" &
  NODE_PID=$!
  for _ in $(seq 100); do grep -q listening "$out/node.out" 2>/dev/null && break; sleep 0.1; done
  NODE_HTTP=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' "$out/node.out")
  NODE_SRT=$(sed -n 's/.*"srt":"\([^"]*\)".*/\1/p' "$out/node.out")
  if [ -z "$NODE_HTTP" ]; then
    echo "node did not start:" >&2; cat "$out/node.log" >&2; return 1
  fi
}

# Builds the release binary and sets `dir` to a new temp dir; on exit every background job
# of the script is stopped and the dir removed.
bench_dir() {
  cargo build --release --locked -q
  dir=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
}

# Writes a minimal node config to FILE: loopback ports the OS picks, no RTMP, part target
# PART, and stream NAME with no ladder (passthrough and audio only).
part_config() {
  local file=$1 part=$2 name=$3
  cat > "$file" <<CFG
srt.listen = "127.0.0.1:0"
http.listen = "127.0.0.1:0"
rtmp.enabled = false
hls.part_target = "$part"
[streams.$name]
CFG
}
