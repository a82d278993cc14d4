#!/usr/bin/env bash
# Memory of a Weft pair that nobody scrapes: the metrics exporter keeps histogram samples until
# its upkeep runs, so an unscraped proxy must still stay flat. A controller, the built-in backend
# and a client/server weft-proxy pair (bench/scripts/weft-pair.sh) under `weft bench load` at a
# fixed rate; each proxy's resident memory is printed every minute, and nothing reads /metrics.
#
# usage: bench/scripts/unscraped-memory.sh [BIN_DIR] [MINUTES] [RATE] [OUT_DIR]
#   defaults: target/x86_64-unknown-linux-gnu/release, 10 minutes, 1000 requests/s, /tmp/weft-unscraped
set -euo pipefail
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
cd "$SCRIPTS/../.."
BIN=$(cd "${1:-target/x86_64-unknown-linux-gnu/release}" && pwd)
MINUTES=${2:-10}
RATE=${3:-1000}
OUT=${4:-/tmp/weft-unscraped}
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT"

# shellcheck source=weft-pair.sh
. "$SCRIPTS/weft-pair.sh"
start_proxies --
wait_pair
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
"$BIN/weft" bench load --target 127.0.0.1:$UPSTREAM --authority bench-server --rate "$RATE" --connections 16 \
  --warmup-ms 0 --duration-ms $((MINUTES * 60 * 1000)) --payload 1024 > load.out 2> load.err & LP=$!
pids+=($LP)
printf 'minute  client_rss_kib  server_rss_kib\n'
printf '%6d  %14s  %14s\n' 0 "$(rss "$CP")" "$(rss "$SP")"
for m in $(seq 1 "$MINUTES"); do
  sleep 60
  printf '%6d  %14s  %14s\n' "$m" "$(rss "$CP")" "$(rss "$SP")"
done
wait "$LP"
result=$(grep '^result ' load.out | sed 's/^result //')
python3 - "$result" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"{r['requests']} requests, {r['errors']} errors")
PY
