#!/usr/bin/env bash
# Fuzzes every target (or those named) for SECONDS each with libFuzzer: coverage-guided, with debug
# assertions and overflow checks on, starting from the corpus kept in the repo. New inputs go to a
# scratch copy, not into the repo: add one to fuzz/corpus/TARGET by hand when it is worth keeping
# (every crash is). Exits non-zero, naming the input, when a target finds a crash or a timeout.
#   fuzz/run.sh [SECONDS] [TARGET...]        e.g. fuzz/run.sh 600 inbound_headers der
#   WEFT_FUZZ_FEATURES=certs fuzz/run.sh 20  only the certificate targets
#   WEFT_FUZZ_TOTAL=180 ...                   the whole run within 180 s, build included (CI)
# Needs only cargo: the instrumentation flags cargo-fuzz would pass are passed here, without a
# sanitizer (the code under test is safe Rust; AddressSanitizer would only slow the build).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
# Only the crates the named targets need (all three when none is named).
default_features=proxy,certs,controller
[ ${#targets[@]} -eq 0 ] || default_features=""
features=${WEFT_FUZZ_FEATURES:-$default_features}
declare -A crate_of=(
  [detect]=proxy [preamble]=proxy [inbound_headers]=proxy [deadline]=proxy [discovery]=proxy
  [der]=certs [spiffe]=certs [token]=certs [csr]=certs
  [mesh]=controller [snapshot]=controller [session]=controller
)
if [ ${#targets[@]} -eq 0 ]; then
  for t in $(printf '%s\n' "${!crate_of[@]}" | sort); do
    [[ ",$features," == *",${crate_of[$t]},"* ]] && targets+=("$t")
  done
fi
for t in "${targets[@]}"; do
  [ -n "${crate_of[$t]:-}" ] || { echo "fuzz/run.sh: no target $t (targets: ${!crate_of[*]})" >&2; exit 2; }
  [[ ",$features," == *",${crate_of[$t]},"* ]] || features="${features:+$features,}${crate_of[$t]}"
done

triple=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${WEFT_FUZZ_TARGET_DIR:-$PWD/target}
started=$SECONDS
cargo build --release --target "$triple" --no-default-features --features "$features" --bins
echo "fuzz/run.sh: built in $((SECONDS - started)) s" >&2
bin="$CARGO_TARGET_DIR/$triple/release"
# WEFT_FUZZ_TOTAL: a budget for the whole run, build included (CI's 3 minutes): the targets share
# what the build left, SECONDS each at most, 3 at least.
if [ -n "${WEFT_FUZZ_TOTAL:-}" ]; then
  share=$(( (WEFT_FUZZ_TOTAL - (SECONDS - started) - 2 * ${#targets[@]}) / ${#targets[@]} ))
  [ "$share" -lt "$seconds" ] && seconds=$(( share < 3 ? 3 : share ))
  echo "fuzz/run.sh: ${seconds}s a target, to stay within ${WEFT_FUZZ_TOTAL}s in all" >&2
fi

failed=()
for t in "${targets[@]}"; do
  work=$(mktemp -d "/tmp/weft-fuzz-$t.XXXXXX")
  cp corpus/"$t"/* "$work"/
  echo "== $t: ${seconds}s (scratch corpus $work)" >&2
  # -timeout: one input taking over 10 s is a finding (the mesh target checks its own 2 s budget).
  if ! "$bin/$t" "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/" -print_final_stats=1 2>"$work.log"; then
    failed+=("$t")
    echo "!! $t found a failure; input and log:" >&2
    ls "$work"/crash-* "$work"/timeout-* "$work"/oom-* 2>/dev/null >&2 || true
    tail -40 "$work.log" >&2
  else
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$work.log" | tr '\n' ' ' >&2
    echo >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: failures in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, ${seconds}s each, no failure" >&2
