#!/usr/bin/env bash
# Memory handed back after a burst: a Weft pair (bench/scripts/weft-pair.sh) at rest, then CONNECTIONS
# client connections opened at once through the client proxy, each carrying requests for a few
# seconds, then closed. Prints each proxy's resident memory at rest, under the burst, and 5 and 15 s
# after the connections closed.
#
# usage: bench/scripts/burst-memory.sh [BIN_DIR] [CONNECTIONS] [OUT_DIR]
#   defaults: target/x86_64-unknown-linux-gnu/release, 2000 connections, /tmp/weft-burst
set -euo pipefail
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
cd "$SCRIPTS/../.."
BIN=$(cd "${1:-target/x86_64-unknown-linux-gnu/release}" && pwd)
CONNS=${2:-2000}
OUT=${3:-/tmp/weft-burst}
ulimit -n $((CONNS + 1024)) 2>/dev/null || true
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT"

# shellcheck source=weft-pair.sh
. "$SCRIPTS/weft-pair.sh"
start_proxies --
wait_pair
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
sleep 2
printf 'moment             client_rss_kib  server_rss_kib\n'
printf '%-17s  %14s  %14s\n' "at rest" "$(rss "$CP")" "$(rss "$SP")"
"$BIN/weft" bench load --target 127.0.0.1:$UPSTREAM --authority bench-server --rate "$CONNS" --connections "$CONNS" \
  --warmup-ms 0 --duration-ms 5000 --payload 1024 > load.out 2> load.err & LP=$!
sleep 4
printf '%-17s  %14s  %14s\n' "under the burst" "$(rss "$CP")" "$(rss "$SP")"
wait "$LP"
sleep 5
printf '%-17s  %14s  %14s\n' "5 s after" "$(rss "$CP")" "$(rss "$SP")"
sleep 10
printf '%-17s  %14s  %14s\n' "15 s after" "$(rss "$CP")" "$(rss "$SP")"
grep "^result " load.out | sed "s/^result //" | python3 -c "import json,sys; r=json.load(sys.stdin); print(r[\"requests\"], \"requests,\", r[\"errors\"], \"errors\")"
