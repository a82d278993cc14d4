#!/usr/bin/env bash
# Fuzzes every target (or those named) for SECONDS each, with debug assertions and overflow
# checks on, starting from the corpus kept in the repo. New inputs go to a scratch copy, not into
# the repo: add one to fuzz/corpus/TARGET by hand when it is worth keeping (every crash is).
#   fuzz/run.sh [SECONDS] [TARGET...]        e.g. fuzz/run.sh 600 inbound_headers der
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets it use the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
export RUSTC_BOOTSTRAP=1
cargo fuzz build -a
for t in "${targets[@]}"; do
  work=$(mktemp -d "/tmp/weft-fuzz-$t.XXXXXX")
  cp corpus/"$t"/* "$work"/
  echo "== $t: ${seconds}s (scratch corpus $work)" >&2
  # -timeout: one input taking over 10 s is a finding (the mesh target checks its own 2 s budget).
  cargo fuzz run -a "$t" "$work" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
