#!/usr/bin/env bash
# Instruction counts of a Weft pair's request path, repeatable on a noisy machine (valgrind's
# callgrind counts instructions, not time): a controller, the built-in backend, a server-side and a
# client-side weft-proxy under callgrind (one worker each, the benchmark's mesh policy), loaded by
# `weft bench load` at a low fixed rate (callgrind runs code ~50x slower). Counters are zeroed once
# the pair is ready and has answered, so start-up and handshakes are left out.
#
# usage: bench/scripts/callgrind-weft-pair.sh [BIN_DIR] [OUT_DIR] [RATE] [SECONDS]
#   BIN_DIR  default target/x86_64-unknown-linux-gnu/release (cargo build --release --workspace)
#   OUT_DIR  default /tmp/weft-callgrind; client.cg and server.cg land there
# then: callgrind_annotate --inclusive=yes OUT_DIR/client.cg | less
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(cd "${1:-target/x86_64-unknown-linux-gnu/release}" && pwd)
OUT=${2:-/tmp/weft-callgrind}
RATE=${3:-100}
SECS=${4:-15}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/weft" ca init --dir ca --trust-domain weft.local >/dev/null
# The benchmark's mesh file (bench/src/topology/weft.rs): the same policy the benchmark measures.
cat > mesh.yaml <<'YAML'
trust_domain: weft.local
services:
  bench-client:
    protocol: http
  bench-server:
    protocol: http
    allow: [bench-client]
    timeout: 5000ms
    retries:
      on: [5xx, reset, connect-failure]
      max_retries: 2
      per_try_timeout: 2000ms
      backoff: {base: 25ms, max: 250ms}
      budget: {ratio: 0.2, min_per_second: 10, window: 10s}
    circuit_breaker:
      max_connections: 1024
      max_requests: 1024
      max_pending: 0
      max_concurrent_retries: 3
      outlier: {consecutive_failures: 5, base_ejection: 30000ms, max_ejection: 300000ms, max_ejected_percent: 50}
YAML
"$BIN/weft" ca token --dir ca --service bench-client > client.token
"$BIN/weft" ca token --dir ca --service bench-server > server.token
"$BIN/weft-controller" --mesh mesh.yaml --ca-dir ca --grpc-addr 127.0.0.1:17070 --admin-addr 127.0.0.1:17071 \
  --log-level warn > controller.log 2>&1 & pids+=($!)
"$BIN/weft" bench backend --listen 127.0.0.1:18080 --payload 1024 > backend.log 2>&1 & pids+=($!)
VG=(valgrind --tool=callgrind --dump-instr=no --collect-jumps=no)
common=(--controller https://127.0.0.1:17070 --trust-anchor ca/ca.crt --workers 1 --log-level warn)
"${VG[@]}" --callgrind-out-file=server.cg "$BIN/weft-proxy" "${common[@]}" --token-file server.token \
  --service bench-server --instance bench-server --app 127.0.0.1:18080 --inbound 127.0.0.1:14143 \
  --admin 127.0.0.1:14191 > server.log 2>&1 & SP=$!; pids+=($SP)
"${VG[@]}" --callgrind-out-file=client.cg "$BIN/weft-proxy" "${common[@]}" --token-file client.token \
  --service bench-client --instance bench-client --app 127.0.0.1:9 --upstream bench-server=127.0.0.1:14140 \
  --inbound 127.0.0.1:14144 --admin 127.0.0.1:14192 > client.log 2>&1 & CP=$!; pids+=($CP)
ready=
for _ in $(seq 1 120); do
  if "$BIN/weft" bench probe http://127.0.0.1:14140/ 2>/dev/null; then ready=1; break; fi
  sleep 1
done
[ -n "$ready" ] || { echo "the pair never answered; see $OUT/*.log" >&2; exit 1; }
callgrind_control -z "$SP" >/dev/null
callgrind_control -z "$CP" >/dev/null
"$BIN/weft" bench load --target 127.0.0.1:14140 --authority bench-server --rate "$RATE" --connections 16 \
  --warmup-ms 2000 --duration-ms $((SECS * 1000)) --payload 1024 > load.out 2> load.err
result=$(grep '^result ' load.out | sed 's/^result //')
# SIGTERM: the proxies drain and exit, and callgrind writes its files.
kill -TERM "$CP" "$SP"; wait "$CP" "$SP" 2>/dev/null || true
python3 - "$result" <<'PY'
import json, subprocess, sys
r = json.loads(sys.argv[1])
n = r["requests"] + r["warmup_requests"]
assert r["errors"] == 0, r["first_errors"]
for side in ("client", "server"):
    out = subprocess.run(["callgrind_annotate", f"{side}.cg"], capture_output=True, text=True).stdout
    total = next(int(l.split()[0].replace(",", "")) for l in out.splitlines() if "PROGRAM TOTALS" in l)
    print(f"{side}-side weft-proxy: {total:,} instructions for {n} requests = {total // n:,} per request")
PY
echo "profiles: $OUT/client.cg $OUT/server.cg (callgrind_annotate --inclusive=yes FILE)"
