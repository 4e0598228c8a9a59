#!/usr/bin/env bash
# Runs every test: installs what they need (scripts/setup.sh --test), then
# format and lint checks, then unit and end-to-end tests against the real
# Terraform, Packer, libvirtd and QEMU on this machine.
# Tests start and stop their own daemons, namespaces and guests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KVMBE_CACHE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then KVMBE_CACHE=/var/cache/kvmbe; else KVMBE_CACHE=$HOME/.cache/kvmbe; fi
fi
export KVMBE_CACHE
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KVMBE_CACHE/target}
export CHECKPOINT_DISABLE=1
# Tests see the real errors; the provider unsets this for its users.
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
t0=$(date +%s)

scripts/setup.sh --test

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "cargo test (unit and end-to-end)"
# Guests run under TCG and take CPU: a few tests at a time is the fastest
# on two cores.
cargo test --workspace --no-fail-fast -- --test-threads="${KVMBE_TEST_THREADS:-4}"

say "all tests passed in $(( $(date +%s) - t0 )) s"
