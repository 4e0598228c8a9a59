#!/usr/bin/env bash
# The main job on local defaults: deploys a tiny VM with Terraform through
# our provider to this machine's libvirt, shows that it booted and read its
# cloud-init seed, then destroys it again.
#   scripts/quickstart.sh           apply, check, destroy
#   scripts/quickstart.sh --keep    leave the VM running (with a private
#                                   libvirtd: until Enter is pressed)
# It installs what it needs first (scripts/setup.sh). No Buildkite account
# is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = --keep ] && keep=true
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

scripts/setup.sh
export KVMBE_CACHE=${KVMBE_CACHE:-$([ "$(id -u)" = 0 ] && echo /var/cache/kvmbe || echo "$HOME/.cache/kvmbe")}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KVMBE_CACHE/target}
export CHECKPOINT_DISABLE=1
PATH=$KVMBE_CACHE/bin:$PATH

work=/tmp/kvmbe-quickstart
mkdir -p "$work"
chmod 755 "$work"

bin=$CARGO_TARGET_DIR/debug

# --- the image: the tiny guest, built from Debian packages ----------------
say "image: tiny guest (cloud kernel + busybox initramfs) from Debian packages"
eval "$("$bin/bed-guest")"

# --- libvirt: the system daemon, or a private one without systemd ---------
uri=qemu:///system
network=default
if ! virsh -q -c "$uri" version >/dev/null 2>&1; then
  say "libvirt: qemu:///system does not answer (no systemd?): starting a private libvirtd in a network namespace"
  coproc BED { "$bin/bed-libvirtd"; }
  read -r uri <&"${BED[0]}" || { echo "the private libvirtd did not start"; exit 1; }
  network=bed
  # Closing its stdin stops it and removes its namespace.
  trap 'exec {BED[1]}>&-; wait "$BED_PID" 2>/dev/null || true' EXIT
fi

# KVM where the CPU offers it; QEMU's emulator (TCG) otherwise.
domain_type=kvm
if ! grep -qE '\b(vmx|svm)\b' /proc/cpuinfo || [ ! -w /dev/kvm ]; then
  domain_type=qemu
fi

# --- Terraform with the provider from a filesystem mirror -----------------
say "terraform: provider installed into a filesystem mirror under $work"
v=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mirror=$work/mirror/registry.terraform.io/kvmbe/libvirt/$v/linux_amd64
mkdir -p "$mirror"
cp "$CARGO_TARGET_DIR/debug/terraform-provider-libvirt" "$mirror/terraform-provider-libvirt_v$v"
cat > "$work/terraformrc" <<RC
provider_installation {
  filesystem_mirror {
    path = "$work/mirror"
  }
}
RC
export TF_CLI_CONFIG_FILE=$work/terraformrc TF_IN_AUTOMATION=1
tfdir=$work/tf
rm -rf "$tfdir"
cp -r examples/quickstart "$tfdir"
cat > "$tfdir/terraform.tfvars" <<VARS
libvirt_uri = "$uri"
network     = "$network"
domain_type = "$domain_type"
pool_path   = "$work/pool"
kernel      = "$kernel"
initrd      = "$initrd"
cmdline     = "$cmdline"
console_log = "$work/console.log"
VARS
rm -f "$work/console.log"
cd "$tfdir"
say "terraform init"
terraform init -input=false >/dev/null
say "terraform apply"
terraform apply -input=false -auto-approve
say "waiting for the VM to boot and read its seed"
for _ in $(seq 1 600); do
  grep -q KVMBE-READY "$work/console.log" 2>/dev/null && break
  sleep 0.1
done
sed -n '/KVMBE-SEED-BEGIN user-data/,/KVMBE-SEED-END user-data/p' "$work/console.log"
grep -q KVMBE-READY "$work/console.log" || { echo "the VM did not finish booting:"; cat "$work/console.log"; exit 1; }
say "terraform plan after apply (expect no changes)"
terraform plan -input=false -detailed-exitcode >/dev/null
if $keep; then
  say "the VM is running; its console: $work/console.log"
  if [ -n "${BED_PID:-}" ]; then
    say "press Enter to destroy it and stop the private libvirtd"
    read -r _ || true
    terraform destroy -input=false -auto-approve >/dev/null
  else
    say "terraform -chdir=$tfdir destroy (TF_CLI_CONFIG_FILE=$work/terraformrc) removes it"
  fi
else
  say "terraform destroy"
  terraform destroy -input=false -auto-approve >/dev/null
  say "done: VM deployed, booted with its seed, and destroyed"
fi
