#!/usr/bin/env bash
# Builds the programs our users run beside ours, each from its own Go module
# at an open-source release, once, into $KVMBE_CACHE/peers (outside the
# clone). Called by `scripts/setup.sh --test`; safe to run again: a program
# whose binary is there, reports the wanted version and was built from its
# module's current go.mod and go.sum is not rebuilt.
#
#   $KVMBE_CACHE/peers/bin/packer-1.9            Packer 1.9.x (MPL; 1.10+ is BUSL)
#   $KVMBE_CACHE/peers/bin/tofu                  OpenTofu 1.x (MPL)
#   $KVMBE_CACHE/peers/bin/buildkite-agent       buildkite-agent v3 (MIT), static
#   $KVMBE_CACHE/peers/bin/packer-plugin-qemu    Packer's QEMU builder plugin 1.0.x (MPL)
#   $KVMBE_CACHE/peers/bin/winrm-client          Packer's WinRM client code (packer-plugin-sdk
#                                                v0.4.0, MPL) in a small program of ours
#   $KVMBE_CACHE/peers/tf-mirror/registry.terraform.io/dmacvicar/libvirt/<v>/linux_amd64/
#                                                dmacvicar's provider (Apache-2.0)
#
# Each is built from a small module of ours under tests/peers/<name>/ (a
# go.mod with a `tool` line and the go.sum that pins every dependency),
# which also repeats the release's own `replace` directives.
#
#   scripts/peers.sh                    all of them
#   scripts/peers.sh buildkite-agent    only those named (by their folder
#                                       under tests/peers/)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ -z "${KVMBE_CACHE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then KVMBE_CACHE=/var/cache/kvmbe; else KVMBE_CACHE=$HOME/.cache/kvmbe; fi
fi
peers=$KVMBE_CACHE/peers
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

go=$(command -v go || true)
[ -n "$go" ] || go=/usr/local/go/bin/go
if [ ! -x "$go" ]; then
  say "peers: no Go toolchain (looked for go on PATH and /usr/local/go/bin/go); install Go 1.26 first"
  exit 1
fi
export GOMODCACHE=$KVMBE_CACHE/go/mod GOCACHE=$KVMBE_CACHE/go/build
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
# Modules come from the module proxy only: no fallback to fetching a
# repository directly when the proxy lacks something.
GOPROXY=$("$go" env GOPROXY | sed 's/[,|]direct$//')
export GOPROXY
# Packer asks HashiCorp for newer versions unless told not to.
export CHECKPOINT_DISABLE=1
mkdir -p "$peers/bin" "$GOMODCACHE" "$GOCACHE"

# licence_ok DIR: the module's own licence file is MPL-2.0, Apache-2.0 or MIT.
licence_ok() {
  local f
  for f in "$1"/LICENSE "$1"/LICENSE.txt "$1"/LICENSE.md "$1"/COPYING; do
    [ -f "$f" ] || continue
    grep -qi 'Business Source License' "$f" && return 1
    grep -qE 'Mozilla Public License,? [Vv]ersion 2\.0|Apache License|^MIT License|Permission is hereby granted, free of charge' "$f" && return 0
  done
  return 1
}

# The programs, one a line: NAME|WRAPPER|MODULE|VERSION|PACKAGE|OUT|VERSION_CMD|VERSION_TEXT|ENV
# PACKAGE of MODULE at VERSION (as tests/peers/WRAPPER requires it) is
# built into OUT, unless OUT is there, was built from MODULE VERSION and,
# when VERSION_CMD is given, prints VERSION_TEXT.
mirror=$peers/tf-mirror/registry.terraform.io/dmacvicar/libvirt
table=(
  "Packer|packer|github.com/hashicorp/packer|v1.9.4|github.com/hashicorp/packer|$peers/bin/packer-1.9|version|Packer v1.9.4|"
  "OpenTofu|tofu|github.com/opentofu/opentofu|v1.12.6|github.com/opentofu/opentofu/cmd/tofu|$peers/bin/tofu|version|OpenTofu v1.12.6|"
  # v3.78.0: every later release the module proxy serves needs
  # drjosh.dev/zzglob, which it does not serve.
  "buildkite-agent|buildkite-agent|github.com/buildkite/agent/v3|v3.78.0|github.com/buildkite/agent/v3|$peers/bin/buildkite-agent|--version|version 3.78.0|CGO_ENABLED=0"
  # Packer's own QEMU builder, the one our builder stands in for; v1.0.9:
  # 1.1.x needs a packer-plugin-sdk the module proxy does not serve.
  "Packer's QEMU plugin|packer-plugin-qemu|github.com/hashicorp/packer-plugin-qemu|v1.0.9|github.com/hashicorp/packer-plugin-qemu|$peers/bin/packer-plugin-qemu|describe|\"version\":\"1.0.9\"|"
  # Our own program (tests/peers/winrm-client/main.go) on the SDK Packer
  # 1.9.4 uses; bump its version text when main.go changes.
  "Packer's WinRM client|winrm-client|github.com/hashicorp/packer-plugin-sdk|v0.4.0|.|$peers/bin/winrm-client|-version|winrm-client 1.1|"
  "dmacvicar terraform-provider-libvirt|libvirt-0.8.3|github.com/dmacvicar/terraform-provider-libvirt|v0.8.3|github.com/dmacvicar/terraform-provider-libvirt|$mirror/0.8.3/linux_amd64/terraform-provider-libvirt_v0.8.3|||"
)
# Not built, because the module proxy does not serve them: dmacvicar's
# provider 0.9.x (v0.9.0, v0.9.1, v0.9.5 to v0.9.7 refused) and
# ivoronin/packer-plugin-sshkey (v1.0.3 to v1.4.0 refused).

# Outputs are read whole before grep looks at them: `grep -q` stops
# reading at the first match, and under pipefail the writer's SIGPIPE
# would fail the check.
present() { # OUT MODULE VERSION VERSION_CMD VERSION_TEXT
  [ -x "$1" ] || return 1
  local info said
  info=$("$go" version -m "$1" 2>/dev/null) || return 1
  grep -qP "^\t(mod|dep)\t\Q$2\E\t\Q$3\E\t" <<<"$info" || return 1
  [ -z "$4" ] && return 0
  # shellcheck disable=SC2086 # VERSION_CMD is one word
  said=$("$1" $4 2>&1) || return 1
  grep -qF "$5" <<<"$said"
}

# A program is rebuilt when its module (go.mod and go.sum under
# tests/peers/WRAPPER) has changed since it was built: the build records
# their digest in $peers/stamps/WRAPPER. A program found present without
# a record (built before records were kept) is recorded as it stands.
stamps=$peers/stamps
module_digest() { # WRAPPER
  cat "$root/tests/peers/$1/go.mod" "$root/tests/peers/$1/go.sum" | sha256sum | cut -d' ' -f1
}
module_same() { # WRAPPER
  local want
  want=$(module_digest "$1")
  if [ ! -f "$stamps/$1" ]; then
    mkdir -p "$stamps"
    echo "$want" > "$stamps/$1"
  fi
  [ "$(cat "$stamps/$1")" = "$want" ]
}

wanted() { # WRAPPER: named on the command line, or nothing was named
  [ ${#only[@]} -eq 0 ] && return 0
  local w
  for w in "${only[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}
only=("$@")
for w in "${only[@]}"; do
  if [ ! -d "$root/tests/peers/$w" ]; then
    say "peers: no program '$w' (the names are the folders under tests/peers/)"
    exit 64
  fi
done

todo=()
for row in "${table[@]}"; do
  IFS='|' read -r name wrapper module version pkg out vcmd vtext env <<<"$row"
  wanted "$wrapper" || continue
  if present "$out" "$module" "$version" "$vcmd" "$vtext" && module_same "$wrapper"; then
    say "peers: $name $version present ($out)"
  else
    todo+=("$row")
  fi
done
[ ${#todo[@]} -gt 0 ] || exit 0

# On a cold cache most of the time goes to fetching modules, not to the
# compiler: fetch what every build needs at once, then build one by one.
say "peers: fetching the Go modules of ${#todo[@]} program(s)"
start=$SECONDS
pids=()
for row in "${todo[@]}"; do
  IFS='|' read -r name wrapper module version pkg out vcmd vtext env <<<"$row"
  (cd "$root/tests/peers/$wrapper" && "$go" list -deps "$pkg" >/dev/null) &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
say "peers: modules fetched in $((SECONDS - start)) s"

for row in "${todo[@]}"; do
  IFS='|' read -r name wrapper module version pkg out vcmd vtext env <<<"$row"
  dir=$root/tests/peers/$wrapper
  src=$(cd "$dir" && "$go" mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  if [ -z "$src" ] || ! licence_ok "$src"; then
    say "peers: $module $version: no MPL-2.0, Apache-2.0 or MIT licence file in $src; not building it"
    exit 1
  fi
  say "peers: building $name $version ($pkg) into $out"
  start=$SECONDS
  mkdir -p "$(dirname "$out")"
  # shellcheck disable=SC2086 # env is empty or one VAR=value word
  (cd "$dir" && env $env "$go" build -trimpath -o "$out.part" "$pkg")
  mv -f "$out.part" "$out"
  if ! present "$out" "$module" "$version" "$vcmd" "$vtext"; then
    say "peers: $out does not report $module $version${vtext:+ ('$vtext')}"
    exit 1
  fi
  mkdir -p "$stamps"
  module_digest "$wrapper" > "$stamps/$wrapper"
  say "peers: $name $version built in $((SECONDS - start)) s"
done
