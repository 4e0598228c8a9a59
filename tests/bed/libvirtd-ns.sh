#!/bin/bash
# Runs inside a network namespace of the test bed (ip netns exec NS
# unshare -m ...): gives libvirt private run/state/config folders, a
# /dev/kvm that keeps defines fast, then becomes libvirtd.
# Usage: libvirtd-ns.sh BEDDIR CAPS_CACHE_DIR [SHELL-COMMAND...]
# Each SHELL-COMMAND runs (eval) before libvirtd starts, in the same
# namespaces: a VM host's sshd, or the watcher that wakes it.
set -euo pipefail
bed=$1 cache=$2
shift 2
mount --make-rprivate /
for d in run lib etc log; do mkdir -p "$bed/$d"; done
mkdir -p /run/libvirt "$cache"
cp -a /etc/libvirt/. "$bed/etc/"
cat > "$bed/etc/libvirtd.conf" <<CONF
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
mount --bind "$bed/run" /run/libvirt
mount --bind "$bed/lib" /var/lib/libvirt
mount --bind "$bed/etc" /etc/libvirt
mount --bind "$bed/log" /var/log/libvirt
# libvirt's capability cache is keyed by QEMU's binary and libvirt's
# version, so sharing it between runs skips a 10 s probe per daemon.
mount --bind "$cache" /var/cache/libvirt
# libvirtd re-probes QEMU on every define unless /dev/kvm is root:kvm 0660.
if [ "$(stat -c %G:%a /dev/kvm 2>/dev/null)" != kvm:660 ] && [ -e /dev/kvm ]; then
  mknod "$bed/kvm" c 10 232
  chown root:kvm "$bed/kvm"; chmod 0660 "$bed/kvm"
  mount --bind "$bed/kvm" /dev/kvm
fi
mkdir -p /var/lib/libvirt/qemu /var/lib/libvirt/dnsmasq /var/lib/libvirt/images
chown libvirt-qemu:libvirt-qemu /var/lib/libvirt/qemu
virtlogd -d -p "$bed/virtlogd.pid"
for c in "$@"; do eval "$c"; done
exec libvirtd -p "$bed/libvirtd.pid"
