#!/usr/bin/env bash
# Soak: a Weft pair (bench/scripts/weft-pair.sh) holds many concurrent client connections with
# steady traffic for a long time while the controller pushes a config change every 30 s and
# workload certificates rotate (--cert-ttl 4m: each proxy renews every 2 minutes). Every 10 s it
# records each process's resident memory, open descriptors and CPU seconds; after the load it
# waits for the pair to go idle and records once more. Writes samples.csv, summary.json and
# soak.svg (memory and descriptors over time) to OUT_DIR.
#
# With WEFT_SOAK_CHECK=1 (CI's short run) it then fails unless: no request failed, each proxy's
# RSS over the second half of the load grew by at most 10 % + 4 MiB (connection buffers still reach
# their working size in the first minutes; a leak of a kilobyte a request would add 100 MiB a
# minute), and after the load its descriptors are back within 16 of idle and its RSS within 8 MiB.
#
# usage: bench/scripts/soak.sh [BIN_DIR] [MINUTES] [CONNECTIONS] [RATE] [OUT_DIR]
#   defaults: target/x86_64-unknown-linux-gnu/release, 60 minutes, 10000 connections, 2000 requests/s,
#   /tmp/weft-soak. Each of the load generator and the client proxy holds CONNECTIONS descriptors:
#   `ulimit -n` must exceed CONNECTIONS + 1024 (raised here as far as the hard limit allows).
set -euo pipefail
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
cd "$SCRIPTS/../.."
BIN=$(cd "${1:-target/x86_64-unknown-linux-gnu/release}" && pwd)
MINUTES=${2:-60}
CONNS=${3:-10000}
RATE=${4:-2000}
OUT=${5:-/tmp/weft-soak}
NEED=$((CONNS + 1024))
ulimit -n "$NEED" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt "$NEED" ]; then
  echo "soak: the descriptor limit is $(ulimit -n); $CONNS connections need about $NEED (ulimit -n $NEED as root)" >&2
  exit 1
fi
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT"

# Certificates live WEFT_SOAK_CERT_TTL (default 4m): each proxy renews at half-life.
controller_extra=(--cert-ttl "${WEFT_SOAK_CERT_TTL:-4m}")
# shellcheck source=weft-pair.sh
. "$SCRIPTS/weft-pair.sh"
start_proxies --
wait_pair

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# utime + stime in seconds (clock ticks / 100 on Linux).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
metric() { # metric ADMIN_PORT NAME: the sum of the series of NAME
  "$BIN/weft" bench probe --print "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk -v n="$2" 'index($0, n) == 1 && substr($0, length(n) + 1, 1) ~ /[{ ]/ {s += $NF} END {printf "%d", s}'
}
START=$(date +%s)
sample() { # sample PHASE
  printf '%s,%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$1" $(($(date +%s) - START)) \
    "$(rss "$CP")" "$(rss "$SP")" "$(rss "$CTL")" "$(fds "$CP")" "$(fds "$SP")" "$(fds "$CTL")" \
    "$(cpu "$CP")" "$(cpu "$SP")" "$(cpu "$CTL")" \
    "$(metric "$CLIENT_ADMIN" weft_identity_cert_expiry_timestamp_seconds)" "$(metric "$CLIENT_ADMIN" weft_config_updates_total)" >> samples.csv
}
echo "phase,t_s,client_rss_kib,server_rss_kib,controller_rss_kib,client_fds,server_fds,controller_fds,client_cpu_s,server_cpu_s,controller_cpu_s,client_cert_expiry,client_config_updates" > samples.csv
sleep 5
sample idle

"$BIN/weft" bench load --target "127.0.0.1:$UPSTREAM" --authority bench-server --rate "$RATE" --connections "$CONNS" \
  --warmup-ms 0 --duration-ms $((MINUTES * 60 * 1000)) --payload 1024 --threads 1 > load.out 2> load.err & LP=$!
pids+=($LP)
edits=0
timeout_ms=5000
while kill -0 "$LP" 2>/dev/null; do
  for _ in 1 2 3; do
    sleep 10
    kill -0 "$LP" 2>/dev/null || break
    sample load
  done
  # A config change the controller pushes to both proxies: the route timeout, 5000 ms ↔ 5001 ms.
  timeout_ms=$((timeout_ms == 5000 ? 5001 : 5000))
  sed "s/timeout: 500[01]ms/timeout: ${timeout_ms}ms/" mesh.yaml > mesh.yaml.new && mv mesh.yaml.new mesh.yaml
  edits=$((edits + 1))
done
wait "$LP" || true
sleep 40
sample after

result=$(grep '^result ' load.out | sed 's/^result //' || true)
python3 - "$result" "$edits" "$MINUTES" "$CONNS" "$RATE" <<'PY'
import csv, json, sys
result = json.loads(sys.argv[1]) if sys.argv[1] else {}
edits, minutes, conns, rate = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
rows = list(csv.DictReader(open("samples.csv")))
idle = rows[0]
load = [r for r in rows if r["phase"] == "load"]
after = rows[-1]
warm = load[len(load) // 5:] or load  # after the first fifth: warmed up
def span(key):
    v = [int(r[key]) for r in warm]
    return min(v), max(v)
expiries = {r["client_cert_expiry"] for r in rows}
summary = {
    "minutes": float(minutes), "connections": conns, "rate": rate,
    "requests": result.get("requests"), "errors": result.get("errors"),
    "errors_by_kind": result.get("errors_by_kind"), "unsent": result.get("unsent"),
    "config_edits": edits, "client_certificates_seen": len(expiries),
    "client_config_updates": int(after["client_config_updates"]) - int(idle["client_config_updates"]),
}
for side in ("client", "server", "controller"):
    lo, hi = span(f"{side}_rss_kib")
    summary[side] = {
        "idle_rss_kib": int(idle[f"{side}_rss_kib"]), "warm_rss_kib_min": lo, "warm_rss_kib_max": hi,
        "after_rss_kib": int(after[f"{side}_rss_kib"]),
        "idle_fds": int(idle[f"{side}_fds"]), "warm_fds_max": span(f"{side}_fds")[1],
        "after_fds": int(after[f"{side}_fds"]),
        "cpu_s": float(after[f"{side}_cpu_s"]) - float(idle[f"{side}_cpu_s"]),
    }
json.dump(summary, open("summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))

# The chart: resident memory (MiB) and open descriptors over time, both proxies.
W, H, PAD = 900, 260, 50
t_max = max(int(r["t_s"]) for r in rows) or 1
def panel(y0, title, keys, scale, unit):
    vals = [int(r[k]) * scale for r in rows for k in keys]
    top = max(vals) * 1.1 or 1
    out = [f'<text x="{PAD}" y="{y0 + 15}" font-size="13">{title}</text>',
           f'<line x1="{PAD}" y1="{y0 + H - PAD}" x2="{W - 10}" y2="{y0 + H - PAD}" stroke="#888"/>',
           f'<line x1="{PAD}" y1="{y0 + 25}" x2="{PAD}" y2="{y0 + H - PAD}" stroke="#888"/>',
           f'<text x="5" y="{y0 + 30}" font-size="11">{top:.0f} {unit}</text>',
           f'<text x="5" y="{y0 + H - PAD}" font-size="11">0</text>',
           f'<text x="{W - 90}" y="{y0 + H - PAD + 15}" font-size="11">{t_max / 60:.0f} min</text>']
    for k, colour in zip(keys, ("#1f77b4", "#d62728", "#2ca02c")):
        pts = " ".join(
            f'{PAD + (W - PAD - 10) * int(r["t_s"]) / t_max:.1f},'
            f'{y0 + H - PAD - (H - PAD - 25) * int(r[k]) * scale / top:.1f}' for r in rows)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{W - 200}" y="{y0 + 30 + 14 * keys.index(k)}" font-size="11" fill="{colour}">{k}</text>')
    return out
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{2 * H}" font-family="sans-serif">',
       '<rect width="100%" height="100%" fill="white"/>']
svg += panel(0, f"Resident memory, {conns} connections at {rate:.0f} rps", ["client_rss_kib", "server_rss_kib"], 1 / 1024, "MiB")
svg += panel(H, "Open descriptors", ["client_fds", "server_fds"], 1, "")
svg.append("</svg>")
open("soak.svg", "w").write("\n".join(svg))

import os
if os.environ.get("WEFT_SOAK_CHECK") == "1":
    problems = []
    if not result:
        problems.append("the load generator printed no result")
    elif result.get("errors"):
        problems.append(f"{result['errors']} failed requests: {result.get('errors_by_kind')}")
    second_half = load[len(load) // 2:] or load
    for side in ("client", "server"):
        s = summary[side]
        rss = [int(r[f"{side}_rss_kib"]) for r in second_half]
        if max(rss) > rss[0] * 1.10 + 4096:
            problems.append(f"{side} RSS grew under steady load: {rss[0]} -> {max(rss)} KiB")
        if s["after_fds"] > s["idle_fds"] + 16:
            problems.append(f"{side} descriptors not back: {s['idle_fds']} idle, {s['after_fds']} after")
        if s["after_rss_kib"] > s["idle_rss_kib"] + 8192:
            problems.append(f"{side} RSS not back: {s['idle_rss_kib']} KiB idle, {s['after_rss_kib']} KiB after")
    if problems:
        print("soak check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    print("soak check passed", file=sys.stderr)
PY
echo "samples: $OUT/samples.csv, chart: $OUT/soak.svg"
