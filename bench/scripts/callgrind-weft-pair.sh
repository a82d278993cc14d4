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
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
cd "$SCRIPTS/../.."
BIN=$(cd "${1:-target/x86_64-unknown-linux-gnu/release}" && pwd)
OUT=${2:-/tmp/weft-callgrind}
RATE=${3:-100}
SECS=${4:-15}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT"

# shellcheck source=weft-pair.sh
. "$SCRIPTS/weft-pair.sh"
VG=(valgrind --tool=callgrind --dump-instr=no --collect-jumps=no)
start_proxies "${VG[@]}" --callgrind-out-file=server.cg -- "${VG[@]}" --callgrind-out-file=client.cg
wait_pair
callgrind_control -z "$SP" >/dev/null
callgrind_control -z "$CP" >/dev/null
"$BIN/weft" bench load --target 127.0.0.1:$UPSTREAM --authority bench-server --rate "$RATE" --connections 16 \
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
