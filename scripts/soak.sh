#!/usr/bin/env bash
# The full soak of the launcher: 200 short jobs, 10 at a time, on two
# hosts of the test bed (one asleep until woken), with every fault
# injected (tests/tests/launcher_soak.rs); waits for the launcher's own
# volume sweep at the end. scripts/test.sh runs a short version of it.
# Prints the figures (jobs run once/twice/lost, VMs, volumes and lock
# domains left, panics, restarts, memory, each fault and the jobs it met).
# Usage: scripts/soak.sh [JOBS [CONCURRENCY]]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KVMBE_CACHE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then KVMBE_CACHE=/var/cache/kvmbe; else KVMBE_CACHE=$HOME/.cache/kvmbe; fi
fi
export KVMBE_CACHE
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KVMBE_CACHE/target}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
export KVMBE_SOAK_JOBS=${1:-${KVMBE_SOAK_JOBS:-200}}
export KVMBE_SOAK_CONCURRENCY=${2:-${KVMBE_SOAK_CONCURRENCY:-10}}
export KVMBE_SOAK_LIMIT=${KVMBE_SOAK_LIMIT:-10800}
export KVMBE_SOAK_SETTLE=1
scripts/setup.sh --test
# The bed's helpers (bed-sleeper, powernapd) and the launcher itself.
cargo build --workspace --bins
cargo test -p kvmbe-tests --test launcher_soak -- --nocapture
