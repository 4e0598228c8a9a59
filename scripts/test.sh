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

# What the tests must leave as they found it.
snapshot() {
  ip netns list | grep -o '^kvmbe-[^ ]*' | sort || true
  ls -d /tmp/kvmbe-bed-* /tmp/kvmbe-lab-* 2>/dev/null || true
  ip route
  sysctl -n net.ipv4.ip_forward
  iptables-save 2>/dev/null | grep -v '^[#:]' || true
}
before=$(snapshot)

say "cargo test: unit tests"
# The fast tests first: a broken unit fails the run in seconds, before
# any guest boots.
# (Every step selects the whole workspace, so dependencies keep one feature
# set and are built once.)
cargo test --workspace --lib --bins --no-fail-fast
cargo test --workspace --doc

say "fuzz: every target, a fixed number of executions"
scripts/fuzz.sh

say "cargo test: end-to-end tests"
# Guests run under TCG and take CPU: a few tests at a time is the fastest
# on two cores.
status=0
cargo test --workspace --test '*' --no-fail-fast -- --test-threads="${KVMBE_TEST_THREADS:-4}" || status=$?

after=$(snapshot)
if [ "$before" != "$after" ]; then
  say "the tests left something behind or changed the host's networking:"
  diff <(echo "$before") <(echo "$after") || true
  status=1
fi
[ "$status" = 0 ] || { say "tests FAILED"; exit "$status"; }
say "all tests passed in $(( $(date +%s) - t0 )) s"
