#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a fixed number of
# executions, starting from the seeds in fuzz/seeds, and fails on the
# first crash, leaving the input that caused it. Needs the nightly
# toolchain and cargo-fuzz (scripts/setup.sh --test installs it).
#   scripts/fuzz.sh                 every target, FUZZ_RUNS (20000) each
#   scripts/fuzz.sh iso_read ...    only these targets
# Prints one summary line per target: executions, seconds, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_RUNS:-20000}
all=(iso_read iso_write powerwake_packet rpc_decode packer_config powernapd_config
  launcher_config launcher_webhook)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: run scripts/setup.sh --test (cargo install cargo-fuzz --locked)" >&2
  exit 1
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
fi

cache=${KVMBE_CACHE:-/var/cache/kvmbe}
target_dir=${FUZZ_TARGET_DIR:-$cache/target-fuzz}
# No sanitizer: the code under test is safe Rust, and instrumenting the
# whole tree (ring, russh, reqwest) would cost minutes. Debug assertions
# keep integer overflow checks on.
flags=(--sanitizer none --debug-assertions --target-dir "$target_dir")
say "fuzz: building ${targets[*]}"
if [ $# -eq 0 ]; then
  cargo +nightly fuzz build "${flags[@]}"
else
  for t in "${targets[@]}"; do
    cargo +nightly fuzz build "${flags[@]}" "$t"
  done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  log=$work/$t.log
  say "fuzz: $t, $runs executions"
  start=$(date +%s%N)
  # New inputs go to the first (scratch) folder: the seeds stay as they are.
  if cargo +nightly fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "fuzz/seeds/$t" -- \
      -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1; then
    crashes=0
  else
    crashes=1
    failed=1
    keep=fuzz/crashes/$t
    mkdir -p "$keep"
    cp "$work/artifacts/$t/"* "$keep/" 2>/dev/null || true
    tail -40 "$log" >&2
    echo "fuzz: $t crashed; the input is in $keep/ (reproduce: cargo +nightly fuzz run ${flags[*]} $t $keep/<file>)" >&2
  fi
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  done_runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  summary+=("$(printf '%-18s %8s executions %4d.%01d s  %d crashes' "$t" "$done_runs" $((ms / 1000)) $((ms % 1000 / 100)) "$crashes")")
done
say "fuzz: summary"
printf '%s\n' "${summary[@]}"
exit $failed
