# Shared by both tiny guests (seed initramfs and root disk), sourced by /etc/kvmbe/rc
# and the root-disk initramfs. Markers go to ttyS0 so tests can read them from the
# serial console whatever the kernel's console= says.

KVMBE_RUN=/run/kvmbe

# Mounts what a busybox userland needs; safe to call again after switch_root.
kvmbe_mount_basics() {
	mkdir -p /proc /sys /dev /run /tmp
	[ -e /proc/mounts ] || mount -t proc proc /proc
	kvmbe_mounted /sys || mount -t sysfs sysfs /sys
	kvmbe_mounted /dev || mount -t devtmpfs devtmpfs /dev
	mkdir -p /dev/pts
	kvmbe_mounted /dev/pts || mount -t devpts -o gid=5,mode=620 devpts /dev/pts
	kvmbe_mounted /run || mount -t tmpfs -o mode=0755 tmpfs /run
	kvmbe_mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
	mkdir -p "$KVMBE_RUN"
}

# busybox-static has no mountpoint applet.
kvmbe_mounted() {
	grep -q "^[^ ]* $1 " /proc/mounts
}

# Sends this shell's output to the serial port when there is one.
kvmbe_to_serial() {
	if [ -c /dev/ttyS0 ]; then
		exec </dev/null >/dev/ttyS0 2>&1
	fi
}

# Loads the modules listed (in dependency order) by the build; there is no
# depmod or udev in the guest, so order matters and nothing autoloads.
kvmbe_load_modules() {
	order=/lib/modules/kvmbe.order
	[ -f "$order" ] || return 0
	while read -r path; do
		name=${path##*/}
		name=${name%.ko}
		name=$(echo "$name" | tr - _)
		[ -d "/sys/module/$name" ] && continue
		insmod "/$path" || echo "KVMBE-MODULE-FAILED $name"
	done <"$order"
}

# Prints $3 bytes of file $1 at offset $2, without padding.
kvmbe_read_field() {
	dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null | tr -d ' \000'
}

# Prints the ISO 9660 or FAT volume label of device $1, if it has one.
# Read directly: busybox's findfs probes every filesystem type on every
# device (slow under TCG) and skips devices under 68 KiB, which small
# seed ISOs are. One read of the first 34 KiB holds both kinds of header;
# each open of an empty CD-ROM drive costs a tenth of a second or more.
kvmbe_label() {
	head=$KVMBE_RUN/label-probe
	dd if="$1" of="$head" bs=2048 count=17 2>/dev/null || return 0
	if [ "$(kvmbe_read_field "$head" 32769 5)" = CD001 ]; then
		kvmbe_read_field "$head" 32808 32
	elif [ "$(kvmbe_read_field "$head" 82 5)" = FAT32 ]; then
		kvmbe_read_field "$head" 71 11
	else
		case "$(kvmbe_read_field "$head" 54 5)" in
		FAT*) kvmbe_read_field "$head" 43 11 ;;
		esac
	fi
	rm -f "$head"
}

# Finds a NoCloud seed (label cidata, ISO9660 or vfat) and prints its device.
# One look is enough: insmod returns only after the drivers' asynchronous
# probing (disks, SATA and SCSI scans) has finished.
kvmbe_find_seed() {
	for dev in /dev/sr* /dev/vd* /dev/sd*; do
		[ -b "$dev" ] || continue
		case "$(kvmbe_label "$dev")" in
		cidata | CIDATA)
			echo "$dev"
			return 0
			;;
		esac
	done
	return 1
}

# Prints a file between markers, with a final newline even if the file has none.
kvmbe_print_file() {
	echo "KVMBE-SEED-BEGIN $2"
	cat "$1"
	if [ -n "$(tail -c 1 "$1")" ]; then
		echo
	fi
	echo "KVMBE-SEED-END $2"
}

# Mounts the seed read-only, prints its files, applies local-hostname and
# keeps user-data for the user script that init runs once booted.
kvmbe_seed() {
	if ! dev=$(kvmbe_find_seed); then
		echo "KVMBE-SEED-NONE"
		return 0
	fi
	seed=$KVMBE_RUN/seed
	mkdir -p "$seed"
	if ! mount -o ro "$dev" "$seed"; then
		echo "KVMBE-SEED-UNREADABLE $dev"
		return 0
	fi
	echo "KVMBE-SEED $dev $(awk -v m="$seed" '$2 == m { print $3 }' /proc/mounts)"
	for f in user-data meta-data network-config; do
		[ -f "$seed/$f" ] && kvmbe_print_file "$seed/$f" "$f"
	done
	if [ -f "$seed/meta-data" ]; then
		name=$(sed -n 's/^[[:space:]]*"\{0,1\}local-hostname"\{0,1\}[[:space:]]*:[[:space:]]*//p' "$seed/meta-data" |
			head -n 1 | tr -d "\"',\r" | sed 's/[[:space:]]*$//')
		if [ -n "$name" ]; then
			hostname "$name"
			echo "$name" >/etc/hostname
			echo "KVMBE-HOSTNAME $name"
		fi
	fi
	[ -f "$seed/user-data" ] && cp "$seed/user-data" "$KVMBE_RUN/user-data"
	return 0
}

# Starts qemu-ga on the agent's virtio port, found through sysfs (no udev).
kvmbe_start_qga() {
	[ -x /usr/sbin/qemu-ga ] || return 0
	for port in /sys/class/virtio-ports/*; do
		[ -f "$port/name" ] || continue
		if [ "$(cat "$port/name")" = org.qemu.guest_agent.0 ]; then
			dev=/dev/${port##*/}
			if qemu-ga -d -m virtio-serial -p "$dev" -f "$KVMBE_RUN/qemu-ga.pid" -t "$KVMBE_RUN"; then
				echo "KVMBE-QGA $dev"
			else
				echo "KVMBE-QGA-FAILED $dev"
			fi
			return 0
		fi
	done
	echo "KVMBE-QGA-NONE"
}

# The ACPI power button (virsh shutdown, QMP system_powerdown) runs
# /etc/acpi/PWRF/00000080, which powers off.
kvmbe_start_acpid() {
	acpid -c /etc/acpi
}

# Asks for a DHCP lease on every NIC at once; each udhcpc goes to the
# background once it has a lease or has given up.
kvmbe_dhcp() {
	ip link set lo up
	for nic in /sys/class/net/*; do
		nic=${nic##*/}
		[ "$nic" = lo ] && continue
		udhcpc -i "$nic" -s /etc/kvmbe/udhcpc -t 5 -T 1 -A 2 -b -p "$KVMBE_RUN/udhcpc.$nic.pid" &
	done
	wait
}
