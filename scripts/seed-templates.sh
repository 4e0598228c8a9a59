#!/usr/bin/env bash
# Validates every Packer template of a checkout of templates written for
# Packer's QEMU builder twice under Packer 1.9, with the same variables and
# files: renamed to our builder (source "qemu" -> "libvirt", the
# required_plugins entry pointed at github.com/kvmbe/libvirt) with our
# plugin, and as written with Packer's QEMU plugin 1.0.9. Prints a table
# and the counts; exits non-zero when any template fails either way.
#
#   scripts/seed-templates.sh SEED_CHECKOUT
#
# Needs what `scripts/setup.sh --test` builds: Packer 1.9 and the QEMU
# plugin ($KVMBE_CACHE/peers/bin), our plugin, the bed's `sshkey`
# stand-in and bed-mirror ($CARGO_TARGET_DIR/debug, or target/debug). Runs
# as root: the validations run in a network namespace of their own with
# only loopback, where bed-mirror stands in for the download sites the
# templates' `iso_checksum = "file:https://..."` name (the QEMU plugin
# fetches those files when it validates) with made-up checksum files.
#
# The checkout is not touched: the templates are copied to a scratch
# folder. What a template needs and the checkout does not hold is made
# there, and listed: its own name as the value of each variable without a
# default, and an empty file for each local file a template names that
# is missing (a file provisioner's source, a local base image, its
# checksum file listing it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd -P)
if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: scripts/seed-templates.sh SEED_CHECKOUT" >&2
  exit 64
fi
seed=$(cd "$1" && pwd -P)
if [ -z "${KVMBE_CACHE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then KVMBE_CACHE=/var/cache/kvmbe; else KVMBE_CACHE=$HOME/.cache/kvmbe; fi
fi
bins=${CARGO_TARGET_DIR:-$here/target}/debug
packer=$KVMBE_CACHE/peers/bin/packer-1.9
qemu_plugin=$KVMBE_CACHE/peers/bin/packer-plugin-qemu
qemu_version=1.0.9
for f in "$packer" "$qemu_plugin" "$bins/packer-plugin-libvirt" "$bins/bed-packer-sshkey" "$bins/bed-mirror"; do
  if [ ! -x "$f" ]; then
    echo "seed-templates: $f is missing: run scripts/setup.sh --test" >&2
    exit 1
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "seed-templates: run as root (the validations run in a network namespace of their own)" >&2
  exit 1
fi

work=$(mktemp -d /tmp/seed-templates.XXXXXX)
ns=seed-templates-$$
mirror_pid=""
cleanup() {
  if [ -n "$mirror_pid" ]; then kill "$mirror_pid" 2>/dev/null || true; fi
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "/etc/netns/$ns" "$work"
}
trap cleanup EXIT

# --- Plugins, where `packer init` puts them ------------------------------
plugins=$work/plugins
install_plugin() { # BINARY SOURCE NAME VERSION
  local dir=$plugins/$2
  local bin=$dir/packer-plugin-$3_v$4_x5.0_linux_amd64
  mkdir -p "$dir"
  cp "$1" "$bin"
  sha256sum "$bin" | cut -d' ' -f1 | tr -d '\n' > "${bin}_SHA256SUM"
}
install_plugin "$bins/packer-plugin-libvirt" github.com/kvmbe/libvirt libvirt "$("$bins/packer-plugin-libvirt" --version)"
install_plugin "$qemu_plugin" github.com/hashicorp/qemu qemu "$qemu_version"
install_plugin "$bins/bed-packer-sshkey" github.com/ivoronin/sshkey sshkey \
  "$("$bins/bed-packer-sshkey" describe | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')"

# --- The templates -------------------------------------------------------
cp -a "$seed" "$work/seed"
mapfile -t templates < <(cd "$work/seed" && find . \( -name .git -prune \) -o \
  -type f \( -name '*.pkr.hcl' -o -name '*.pkr.json' -o -name '*.json' \) -print | sed 's|^\./||' | sort)
# A .json file is a template when it has "builders".
keep=()
for t in "${templates[@]}"; do
  case "$t" in
    *.pkr.hcl) keep+=("$t") ;;
    *) grep -q '"builders"' "$work/seed/$t" && keep+=("$t") ;;
  esac
done
templates=("${keep[@]}")
if [ ${#templates[@]} -eq 0 ]; then
  echo "seed-templates: no *.pkr.hcl or *.json templates under $seed" >&2
  exit 1
fi

# to_libvirt FILE OUT: the template renamed to our builder.
to_libvirt() {
  perl -0pe '
    s|(\bqemu\s*=\s*\{[^\}]*?"github\.com/hashicorp/qemu"[^\}]*\})|
      my $b = $1;
      $b =~ s#\bqemu(\s*=\s*\{)#libvirt$1#;
      $b =~ s#"github\.com/hashicorp/qemu"#"github.com/kvmbe/libvirt"#;
      $b =~ s#(\bversion\s*=\s*)"[^"]*"#$1">= 0.1.0"#;
      $b |ge;
    s/^(\s*source\s+"?)qemu("?\s+")/$1libvirt$2/mg;
    s/"source\.qemu\./"source.libvirt./g;
    s/"qemu\./"libvirt./g;
    s/("type"\s*:\s*)"qemu"/$1"libvirt"/g;
  ' "$1" > "$2"
}

# --- Download sites stood in for ----------------------------------------
# Every https URL a template names as `file:https://HOST/PATH` gets a
# checksum file listing the file names of the templates' https URLs.
mirror=$work/mirror
mkdir -p "$mirror"
mapfile -t sums < <(cd "$work/seed" && grep -ohE 'file:https://[^" ]+' "${templates[@]}" | sed 's/^file://' | sort -u)
mapfile -t images < <(cd "$work/seed" && grep -ohE 'https://[^" ]+' "${templates[@]}" |
  grep -v '^https://.*SUMS$\|CHECKSUM' | sed 's|.*/||' | grep -v '^$' | sort -u)
hosts=()
for u in "${sums[@]}"; do
  rest=${u#https://}
  host=${rest%%/*}
  path=${rest#*/}
  mkdir -p "$mirror/$(dirname "$path")"
  len=64
  case "$(basename "$path")" in *512*) len=128 ;; esac
  digest=$(printf '0%.0s' $(seq "$len"))
  for i in "${images[@]}"; do printf '%s  %s\n' "$digest" "$i"; done > "$mirror/$path"
  case " ${hosts[*]} " in *" $host "*) ;; *) hosts+=("$host") ;; esac
done
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
mkdir -p "/etc/netns/$ns"
printf '127.0.0.1 localhost %s\n::1 localhost\n' "${hosts[*]}" > "/etc/netns/$ns/hosts"
if [ ${#hosts[@]} -gt 0 ]; then
  exec 3< <(ip netns exec "$ns" "$bins/bed-mirror" "$mirror" "$work/mirror.pem" "${hosts[@]}" 2>"$work/mirror.log" & echo $!; wait)
  read -r mirror_pid <&3
  read -r ready <&3 || true
  if [ "${ready:-}" != ready ]; then
    echo "seed-templates: bed-mirror did not start: $(cat "$work/mirror.log")" >&2
    exit 1
  fi
else
  : > "$work/mirror.pem"
fi

# --- Variables and files -------------------------------------------------
# vars_of FILE: "-var NAME=NAME" for each variable without a default
# (values of their own: Packer masks a sensitive variable's value wherever
# it appears in its output).
vars_of() {
  awk '
    /^variable[ \t]+"/ { name = $2; gsub(/"/, "", name); open = 1; def = 0; next }
    open && /^[ \t]*default[ \t]*=/ { def = 1 }
    open && /^}/ { if (!def) print "-var\n" name "=" name; open = 0 }
  ' "$1"
}

# run_packer DIR FILE VARS...: validate FILE in DIR; prints its output.
run_packer() {
  local dir=$1 file=$2
  shift 2
  (cd "$dir" && ip netns exec "$ns" env CHECKPOINT_DISABLE=1 PACKER_NO_COLOR=1 \
    PACKER_CONFIG_DIR="$work/packer.d" PACKER_PLUGIN_PATH="$plugins" \
    PACKER_CACHE_DIR="$work/packer_cache" SSL_CERT_FILE="$work/mirror.pem" \
    "$packer" validate -evaluate-datasources "$@" "$file" 2>&1)
}

# make_missing DIR OUTPUT: creates each local file OUTPUT says is missing
# (relative to DIR); prints what it made.
make_missing() {
  local dir=$1 out=$2 p
  # Packer wraps its messages at spaces: join the lines first.
  { tr '\n' ' ' <<<"$out" | grep -oE "(stat|open) [^: ]+: +no +such +file +or +directory" || true; } |
    sed -E 's/^(stat|open) ([^: ]+):.*$/\2/' | sort -u | while read -r p; do
    case "$p" in /*) ;; *) p=$dir/$p ;; esac
    case "$p" in "$work"/*) ;; *) continue ;; esac
    [ -e "$p" ] && continue
    mkdir -p "$(dirname "$p")"
    case "$(basename "$p")" in
      *SUMS | *CHECKSUM*)
        # A local checksum file lists the local images beside its folder's
        # name, as a build leaves them.
        for i in $(grep -ohE '[A-Za-z0-9_.-]+\.(qcow2|img|iso|raw)' "$dir"/*.pkr.hcl 2>/dev/null | sort -u); do
          printf '%064d  %s\n' 0 "$i"
        done > "$p" ;;
      *) : > "$p" ;;
    esac
    echo "${p#"$work/seed/"}"
  done
}

# --- Validate --------------------------------------------------------------
ok_ours=0 ok_qemu=0 failed=()
rows=()
made_all=()
for t in "${templates[@]}"; do
  dir=$work/seed/$(dirname "$t")
  base=$(basename "$t")
  case "$base" in
    *.pkr.hcl) ours=${base%.pkr.hcl}.libvirt.pkr.hcl ;;
    *) ours=${base%.json}.libvirt.json ;;
  esac
  to_libvirt "$dir/$base" "$dir/$ours"
  mapfile -t vars < <(vars_of "$dir/$base")
  # Missing files are made until neither side names one more (a few rounds).
  for _ in 1 2 3 4; do
    out_q=$(run_packer "$dir" "$base" "${vars[@]}") || true
    out_o=$(run_packer "$dir" "$ours" "${vars[@]}") || true
    made=$(make_missing "$dir" "$out_q"$'\n'"$out_o")
    [ -n "$made" ] || break
    while read -r m; do made_all+=("$t: $m"); done <<<"$made"
  done
  start=$(date +%s.%N)
  if out_o=$(run_packer "$dir" "$ours" "${vars[@]}"); then r_o=valid ok_ours=$((ok_ours + 1)); else r_o=FAILED failed+=("$t with ours:"$'\n'"$out_o"); fi
  mid=$(date +%s.%N)
  if out_q=$(run_packer "$dir" "$base" "${vars[@]}"); then r_q=valid ok_qemu=$((ok_qemu + 1)); else r_q=FAILED failed+=("$t with the QEMU plugin:"$'\n'"$out_q"); fi
  end=$(date +%s.%N)
  rows+=("$(printf '%-92s | %-6s %5.2f s | %-6s %5.2f s' "$t" "$r_o" "$(awk "BEGIN { print $mid - $start }")" "$r_q" "$(awk "BEGIN { print $end - $mid }")")")
done

printf '%-92s | %-14s | %-14s\n' template "ours (libvirt)" "qemu $qemu_version"
printf '%.0s-' $(seq 126); echo
printf '%s\n' "${rows[@]}"
echo
if [ ${#made_all[@]} -gt 0 ]; then
  echo "Made for validation (missing from the checkout):"
  printf '  %s\n' "${made_all[@]}"
  echo
fi
n=${#templates[@]}
echo "templates: $n; valid with ours: $ok_ours/$n; valid with the QEMU plugin $qemu_version: $ok_qemu/$n; took $SECONDS s"
if [ ${#failed[@]} -gt 0 ]; then
  echo
  printf '%s\n\n' "${failed[@]}"
  exit 1
fi
