#!/bin/bash
# Builds the test bed's tiny guest from Debian packages.
#
# Usage: build.sh OUTDIR
#        build.sh --kernel-package   (prints the kernel package and version it would use)
#
# Writes into OUTDIR:
#   vmlinux          Debian's kernel as an ELF file: QEMU boots it through PVH,
#                    seconds faster under TCG than unpacking the bzImage
#   vmlinuz          the same kernel as shipped (bzImage), for boot loaders
#   initrd.img       seed guest: everything in the initramfs, no disk needed
#   root-initrd.img  initramfs that mounts root= (default /dev/vda) and switches to it
#   root.qcow2       root disk for root-initrd.img: dropbear on port 22, scp, sftp-server
#   id_ed25519(.pub) key pair that may log in as root on root.qcow2
#   MANIFEST         package versions, kernel command lines, root password
#
# The root password of root.qcow2 is "kvmbe". Both guests print KVMBE-BOOT and
# KVMBE-READY on ttyS0, print a NoCloud seed (label cidata) when one is
# attached, run a user-data that starts with "#!", start qemu-ga, take a DHCP
# lease on every NIC and power off on the ACPI power button.
#
# Packages are downloaded once with apt-get into $KVMBE_DEB_CACHE (default
# ${KVMBE_CACHE:-$HOME/.cache/kvmbe}/debs). Host libraries (libc, glib, ...) are
# copied from this machine, so the host must be Debian 12 (amd64). Run as root:
# file owners in the images are the builder's.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build.sh OUTDIR}
debs=${KVMBE_DEB_CACHE:-${KVMBE_CACHE:-$HOME/.cache/kvmbe}/debs}
# Fixed timestamps: two builds hold the same files (apart from the generated
# keys); busybox cpio still records inode numbers, so the bytes differ.
epoch=${SOURCE_DATE_EPOCH:-1700000000}
root_password=kvmbe
root_disk_size=256M
seed_cmdline="console=ttyS0 quiet"
root_cmdline="console=ttyS0 quiet root=/dev/vda rw"

die() {
	echo "build.sh: $*" >&2
	exit 1
}

for tool in apt-get apt-cache dpkg-deb busybox mke2fs qemu-img ssh-keygen gzip xz flock od; do
	command -v "$tool" >/dev/null || die "$tool is missing: install it (Debian 12 packages apt, busybox-static, e2fsprogs, qemu-utils, openssh-client, gzip, xz-utils, util-linux, coreutils)"
done

# Debian's generic kernel, not the cloud one: only it has the AHCI driver a
# CD-ROM on q35's SATA bus needs. Its xz-packed bzImage is slow to unpack
# under TCG, so guests boot the ELF vmlinux inside it through PVH instead.
kernel_meta=linux-image-amd64
kernel_pkg=$(apt-cache depends "$kernel_meta" | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$kernel_pkg" ] || die "apt-cache depends $kernel_meta names no kernel: run apt-get update"
if [ "$out" = --kernel-package ]; then
	echo "$kernel_pkg $(apt-cache policy "$kernel_pkg" | awk '/Candidate:/ { print $2 }')"
	exit 0
fi
packages=("$kernel_pkg" busybox-static qemu-guest-agent dropbear-bin libtomcrypt1 libtommath1
	openssh-client openssh-sftp-server)

mkdir -p "$out" "$debs"
out=$(cd "$out" && pwd)
work=$out/.work
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# apt-cache takes about half a second per call here: ask once for all.
declare -A candidate
while read -r name version; do
	candidate[$name]=$version
done < <(apt-cache policy "${packages[@]}" | awk '/^[^ ].*:$/ { sub(":$", ""); name = $0 } /Candidate:/ { print name, $2 }')
for p in "${packages[@]}"; do
	v=${candidate[$p]:-}
	[ -n "$v" ] && [ "$v" != "(none)" ] || die "apt has no candidate for $p: run apt-get update"
done

# Prints the cached .deb of package $1 at apt's candidate version, if any.
cached_deb() {
	local f
	for f in "$debs/$1"_*.deb; do
		if [ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version 2>/dev/null)" = "${candidate[$1]}" ]; then
			echo "$f"
			return 0
		fi
	done
	return 1
}

# Writes the ELF kernel packed in bzImage $1 to $2. The boot protocol
# header says where the payload starts (after the setup sectors) and how
# long it is; its first bytes say how it is compressed.
extract_vmlinux() {
	local img=$1 setup offset length magic
	setup=$(od -An -tu1 -j $((0x1f1)) -N 1 "$img" | tr -d ' ')
	[ "$setup" != 0 ] || setup=4
	offset=$(((setup + 1) * 512 + $(od -An -tu4 -j $((0x248)) -N 4 "$img" | tr -d ' ')))
	length=$(od -An -tu4 -j $((0x24c)) -N 4 "$img" | tr -d ' ')
	magic=$(od -An -tx1 -j "$offset" -N 6 "$img" | tr -d ' ')
	case $magic in
	fd377a585a00)
		dd if="$img" bs=64K iflag=skip_bytes,count_bytes skip="$offset" count="$length" status=none |
			xz -dc --single-stream >"$2"
		;;
	*) die "$img: kernel payload compressed in an unknown way (magic $magic)" ;;
	esac
	[ "$(od -An -tx1 -N 4 "$2" | tr -d ' ')" = 7f454c46 ] || die "$img: the unpacked payload is not an ELF file"
}

# Downloads what the cache lacks and unpacks the kernel there once (70 MB
# of xz: seconds); the lock keeps parallel builds from doing it twice.
fetch_debs() {
	local p missing=() deb
	exec 9>"$debs/.lock"
	flock 9
	for p in "${packages[@]}"; do
		cached_deb "$p" >/dev/null || missing+=("$p")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		(cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >/dev/null) ||
			die "apt-get download ${missing[*]} failed"
	fi
	deb=$(cached_deb "$kernel_pkg") || die "$kernel_pkg is not in $debs after download"
	kernel_tree=${deb%.deb}.unpacked
	if [ ! -f "$kernel_tree/vmlinux" ]; then
		rm -rf "$kernel_tree.tmp"
		dpkg-deb -x "$deb" "$kernel_tree.tmp"
		extract_vmlinux "$kernel_tree.tmp/boot/vmlinuz-"* "$kernel_tree.tmp/vmlinux"
		chmod 0644 "$kernel_tree.tmp/vmlinux"
		rm -rf "$kernel_tree"
		mv "$kernel_tree.tmp" "$kernel_tree"
	fi
	flock -u 9
}

fetch_debs
pkgs=$work/pkgs
mkdir -p "$pkgs"
: >"$work/manifest"
for p in "${packages[@]}"; do
	deb=$(cached_deb "$p") || die "$p is not in $debs after download"
	[ "$p" = "$kernel_pkg" ] || dpkg-deb -x "$deb" "$pkgs"
	echo "package $p ${candidate[$p]}" >>"$work/manifest"
done

kver=$(ls "$kernel_tree/lib/modules")
moddir=$kernel_tree/lib/modules/$kver
[ -f "$kernel_tree/boot/vmlinuz-$kver" ] || die "no vmlinuz-$kver in $kernel_pkg"

# Modules for virtio devices, the power button, ext4 (crc32c is looked up
# by name, which no module dependency records), and reading a seed from a
# CD-ROM (SATA on q35, IDE on i440fx, virtio-scsi) or a disk.
wanted_modules=(virtio_pci virtio_blk virtio_console virtio_net virtio_rng virtio_scsi
	button evdev ahci ata_piix sr_mod sd_mod isofs vfat nls_utf8 nls_ascii nls_cp437)
# Only the root disk needs these; each module costs the seed guest boot time.
root_modules=(crc32c_generic ext4)

declare -A module_file
while read -r f; do
	n=${f##*/}
	n=${n%.ko}
	module_file[${n//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko')

declare -A module_seen
module_order=()
# Appends $1 after its dependencies, read from the module's .modinfo.
add_module() {
	local name=${1//-/_} deps dep
	[ -z "${module_seen[$name]:-}" ] || return 0
	module_seen[$name]=1
	if [ -z "${module_file[$name]:-}" ]; then
		grep -q "/${1}.ko\$\|/${name}.ko\$" "$moddir/modules.builtin" && return 0
		die "kernel module $1 is neither built in nor shipped in $kernel_pkg"
	fi
	deps=$(tr '\0' '\n' <"${module_file[$name]}" | sed -n 's/^depends=//p' | head -n 1)
	for dep in ${deps//,/ }; do
		add_module "$dep"
	done
	module_order+=("${module_file[$name]#"$kernel_tree"/}")
}
for m in "${wanted_modules[@]}"; do
	add_module "$m"
done
seed_modules=("${module_order[@]}")
for m in "${root_modules[@]}"; do
	add_module "$m"
done

# Copies binary $2 to $3 inside root $1 with every library ldd names.
install_binary() {
	local root=$1 src=$2 dest=$3 libs lib target
	install -D -m 0755 "$src" "$root$dest"
	libs=$(LD_LIBRARY_PATH="$pkgs/usr/lib/x86_64-linux-gnu" ldd "$src")
	if grep -q 'not found' <<<"$libs"; then
		die "libraries of $src missing on this host: $libs"
	fi
	for lib in $(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs"); do
		target=${lib#"$pkgs"}
		[ -e "$root$target" ] || install -D -m 0755 "$lib" "$root$target"
	done
}

# busybox and a link for each applet at its usual path, made once and
# copied into each root (hundreds of ln calls add up).
applets=$work/applets
mkdir -p "$applets/bin"
install -m 0755 "$pkgs/bin/busybox" "$applets/bin/busybox"
(
	cd "$applets"
	mkdir -p sbin usr/bin usr/sbin
	for applet in $(bin/busybox --list-full); do
		[ -e "$applet" ] || ln -s /bin/busybox "$applet"
	done
)

install_busybox() {
	cp -a "$applets/." "$1/"
}

# The parts both guests share: busybox, the kvmbe scripts, qemu-ga.
populate_common() {
	local root=$1 mode=$2
	mkdir -p "$root"/{etc/kvmbe,etc/acpi/PWRF,root,proc,sys,dev,run,tmp,var/log}
	chmod 0700 "$root/root"
	chmod 1777 "$root/tmp"
	ln -sfn ../run "$root/var/run"
	install_busybox "$root"
	install -m 0644 "$here/lib.sh" "$root/etc/kvmbe/lib.sh"
	install -m 0755 "$here/rc" "$here/user-script" "$here/udhcpc" "$here/poweroff" "$root/etc/kvmbe/"
	# The power button, qemu-ga's guest-shutdown and a user's poweroff all
	# take the fast path. busybox sh runs its own poweroff applet whatever
	# PATH says, which signals init: init's shutdown action then takes the
	# fast path too, so a reboot also powers off.
	ln -sfn /etc/kvmbe/poweroff "$root/etc/acpi/PWRF/00000080"
	rm -f "$root/sbin/poweroff"
	ln -sfn /etc/kvmbe/poweroff "$root/sbin/poweroff"
	ln -sfn /etc/kvmbe/poweroff "$root/sbin/shutdown"
	cat >"$root/etc/inittab" <<-EOF
		::sysinit:/etc/kvmbe/rc $mode
		::once:/etc/kvmbe/user-script
		::shutdown:/etc/kvmbe/poweroff
	EOF
	echo kvmbe >"$root/etc/hostname"
	printf '%s\n' /bin/sh /bin/ash >"$root/etc/shells"
	echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
	printf '%s\n' root:x:0: tty:x:5: >"$root/etc/group"
	echo "127.0.0.1 localhost" >"$root/etc/hosts"
	install_binary "$root" "$pkgs/usr/sbin/qemu-ga" /usr/sbin/qemu-ga
}

# Copies modules $2... into root $1 and lists them in load order.
install_modules() {
	local root=$1 m
	shift
	: >"$root/lib/modules.order.tmp"
	for m in "$@"; do
		install -D -m 0644 "$kernel_tree/$m" "$root/$m"
		echo "$m" >>"$root/lib/modules.order.tmp"
	done
	mv "$root/lib/modules.order.tmp" "$root/lib/modules/kvmbe.order"
}

# Writes a gzip'd newc initramfs of folder $1 to $2, in a stable order.
make_cpio() {
	find "$1" -exec touch -h -d "@$epoch" {} +
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc 2>/dev/null) | gzip -n -6 >"$2"
}

# Seed guest: busybox init is PID 1 straight from the initramfs.
seed=$work/seed
mkdir -p "$seed/lib"
populate_common "$seed" seed
install_modules "$seed" "${seed_modules[@]}"
ln -sfn /bin/busybox "$seed/init"
make_cpio "$seed" "$work/initrd.img"

# Root-disk guest: a small initramfs that mounts the disk, then the disk.
rinit=$work/root-initrd
mkdir -p "$rinit"/{bin,etc/kvmbe,lib,proc,sys,dev,run,tmp,newroot}
install_busybox "$rinit"
install -m 0644 "$here/lib.sh" "$rinit/etc/kvmbe/lib.sh"
install -m 0755 "$here/root-init" "$rinit/init"
install_modules "$rinit" "${module_order[@]}"
make_cpio "$rinit" "$work/root-initrd.img"

rootfs=$work/rootfs
mkdir -p "$rootfs/lib"
populate_common "$rootfs" root
install_binary "$rootfs" "$pkgs/usr/sbin/dropbear" /usr/sbin/dropbear
install_binary "$rootfs" "$pkgs/usr/bin/scp" /usr/bin/scp
install_binary "$rootfs" "$pkgs/usr/lib/openssh/sftp-server" /usr/lib/sftp-server
mkdir -p "$rootfs/usr/lib/openssh" "$rootfs/etc/dropbear" "$rootfs/root/.ssh"
ln -sfn /usr/lib/sftp-server "$rootfs/usr/lib/openssh/sftp-server"
# No RSA: its key takes seconds to make and every client takes the others.
for type in ed25519 ecdsa; do
	LD_LIBRARY_PATH="$pkgs/usr/lib/x86_64-linux-gnu" "$pkgs/usr/bin/dropbearkey" -t "$type" \
		-f "$rootfs/etc/dropbear/dropbear_${type}_host_key" >/dev/null 2>&1 ||
		die "dropbearkey -t $type failed"
done
hash=$(busybox mkpasswd -m sha512 "$root_password")
echo "root:$hash:19000:0:99999:7:::" >"$rootfs/etc/shadow"
chmod 0600 "$rootfs/etc/shadow"
ssh-keygen -q -t ed25519 -N '' -C kvmbe-tiny-guest -f "$work/id_ed25519"
install -m 0600 "$work/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
chmod 0700 "$rootfs/root/.ssh"
find "$rootfs" -exec touch -h -d "@$epoch" {} +
# Fixed UUID, hash seed and clock instead of random ones and now.
E2FSPROGS_FAKE_TIME=$epoch mke2fs -q -F -t ext4 -L kvmbe-root -U 6b766d62-652d-726f-6f74-000000000001 \
	-E root_owner=0:0,hash_seed=6b766d62-652d-6861-7368-000000000001 \
	-d "$rootfs" "$work/root.img" "$root_disk_size"
qemu-img convert -O qcow2 "$work/root.img" "$work/root.qcow2"

{
	echo "kernel $kernel_pkg $kver"
	cat "$work/manifest"
	echo "modules ${seed_modules[*]##*/}"
	echo "root_modules ${module_order[*]##*/}"
	echo "cmdline $seed_cmdline"
	echo "root_cmdline $root_cmdline"
	echo "root_password $root_password"
} >"$work/MANIFEST"

# Everything readable by QEMU running as another user (libvirt-qemu); the
# private key stays private.
install -m 0644 "$kernel_tree/boot/vmlinuz-$kver" "$work/vmlinuz"
# A hard link when the cache shares the file system: 66 MB per build adds up.
ln -f "$kernel_tree/vmlinux" "$work/vmlinux" 2>/dev/null || install -m 0644 "$kernel_tree/vmlinux" "$work/vmlinux"
chmod 0644 "$work/initrd.img" "$work/root-initrd.img" "$work/root.qcow2" "$work/MANIFEST" "$work/id_ed25519.pub"
chmod 0600 "$work/id_ed25519"
for f in vmlinux vmlinuz initrd.img root-initrd.img root.qcow2 id_ed25519 id_ed25519.pub MANIFEST; do
	mv -f "$work/$f" "$out/$f"
done
chmod 0755 "$out"
