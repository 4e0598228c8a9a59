
ﬂ‹[
keyfile"string"BPrivate key for `qemu+ssh://` (libvirt's `keyfile` URI parameter).(@|
known_hosts"string"_known_hosts file for `qemu+ssh://`; the host key is always verified unless `no_verify` is true.(@W
	no_verify"bool">Skip SSH host key verification (`no_verify=1`). Default false.(@w
uri"string"blibvirt connection URI. Default `qemu:///system`. For another host: `qemu+ssh://user@host/system`.(@⁄
wakeÕf
	broadcast"string"KBroadcast address of the host's subnet. Default: found from the URI's host.(@3
mac"string"MAC address of the host's NIC. @?
port"number")UDP port for the magic packet. Default 7.(@M
powerwake_port"number"-UDP port powernapd listens on. Default 57748.(@C
timeout"number"*Seconds to wait for the host. Default 300.(@"WWake the host (Wake-on-LAN / powerwake) when it does not answer, then wait for libvirt.(("NManages libvirt hosts: pools, volumes, cloud-init seeds, networks and domains.(Ô
libvirt_poolﬁŸ'

allocation"number"Bytes used.0@&
	available"number"Bytes free.0@)
capacity"number"Bytes in total.0@%
id"string"UUID of the pool.0@4
name"string"Pool name, unique on the host. @
path"string"gDirectory that holds the volumes; created if missing. Required for `dir`, here or as `target { path }`.(0@9
type"string"#Pool type; only `dir` is supported. @ä
target|7
path"string"!Directory that holds the volumes. @"?The directory, as dmacvicar/libvirt writes it (same as `path`).("1A directory storage pool. Any change replaces it.(¡
libvirt_network≠™S
	addresses["list","string"]/IPv4 subnets in CIDR form, e.g. `10.17.3.0/24`.(@=
	autostart"bool""Start with libvirtd. Default true.(0@^
bridge"string"DBridge device name; libvirt picks one for nat/route/none when unset.(0@.
domain"string"DNS domain for guests.(@(
id"string"UUID of the network.0@_
mode"string"G`nat` (default), `route`, `bridge` (an existing host bridge) or `none`.(0@7
name"string"!Network name, unique on the host. @S
dhcpG/
enabled"bool"On or off. Default true.(@"DHCP on the subnets.(M
dnsB/
enabled"bool"On or off. Default true.(@"DNS for guests.("A libvirt virtual network.(≈
libvirt_domain≤ØF
arch"string".Architecture. Default: libvirt's (the host's).(0@>
	autostart"bool"#Start with libvirtd. Default false.(0@R
	cloudinit"string"7Id of a `libvirt_cloudinit_disk`, attached as a CD-ROM.(@j
cmdline["list",["map","string"]]@Kernel command line as a list of maps; key `_` adds a bare word.(@B
firmware"string"(UEFI firmware (loader) path on the host.(@'
id"string"UUID of the domain.0@/
initrd"string"Initrd for direct boot.(@/
kernel"string"Kernel for direct boot.(@H
machine"string"-Machine type, e.g. `q35`. Default: libvirt's.(0@5
memory"number"Memory in MiB. Default 512.(0@6
name"string" Domain name, unique on the host. @L

qemu_agent"bool"0Add the QEMU guest agent channel. Default false.(0@?
running"bool"&Whether the domain runs. Default true.(0@U
type"string"=`kvm` (default) or `qemu` (emulation, for hosts without KVM).(0@0
vcpu"number"Virtual CPUs. Default 1.(0@`
boot_deviceO@
dev["list","string"]"Devices: `hd`, `cdrom`, `network`.(@"Boot order. 
consoleºI
log_file"string"/Also copy the guest's output to this host file.(@,
source_host"string"Host for `tcp`.(@=
source_path"string" Host path for `file` and `unix`.(@/
source_service"string"Port for `tcp`.(@A
target_port"string"$Port on the guest side. Default "0".(@<
target_type"string"`serial` (default) or `virtio`.(@5
type"string"`pty`, `file`, `unix` or `tcp`. @"A serial port or console.\
cpuQC
mode"string"-`host-passthrough`, `host-model` or `custom`.(@"
CPU model.(“
disk«A
block_device"string"#Path of a block device on the host.(@O
file"string"9Path of a file on the host (`.iso` files become CD-ROMs).(@E
scsi"bool"1Attach through virtio-scsi instead of virtio-blk.(@5
	volume_id"string"Key of a `libvirt_volume`.(@*
wwn"string"SCSI World Wide Name.(@"A disk.∂
graphics•@
autoport"bool"(Let libvirt pick the port. Default true.(@5
listen_address"string"Address to listen on.(@c
listen_type"string"F`address` to listen on `listen_address`; `none` for libvirt's default.(@1
type"string"`spice` (default) or `vnc`.(@"Graphical console.(√
network_interface´E
	addresses["list","string"]IP addresses, from DHCP leases.(0@1
bridge"string"Host bridge to plug into.(@4
hostname"string"Host name (informational).(@9
mac"string""MAC address; generated when unset.(0@=
macvtap"string"$Host device for a macvtap interface.(@V

network_id"string"8UUID of the libvirt network (instead of `network_name`).(0@=
network_name"string"libvirt network to plug into.(0@R
wait_for_lease"bool"4Wait at create until the interface has a DHCP lease.(@"A network interface.ö
nvramå0
file"string"Per-domain variables file. @G
template"string"-Template copied to `file` when it is missing.(@"UEFI variables.(Q
videoD5
type"string"Model, e.g. `cirrus`, `virtio`.(@"Video card.(å
xmlÄU
xslt"string"?XSLT stylesheet applied to the domain XML before it is defined.(@"'Last-mile changes to the generated XML.("cA virtual machine. `running` and `autostart` change in place; any other change replaces the domain.(Ÿ
libvirt_volume∆√b
base_volume_id"string"@Key of a volume to use as backing store (copy-on-write overlay).(0@X
base_volume_name"string"4Name of the backing volume, with `base_volume_pool`.(0@\
base_volume_pool"string"8Pool of `base_volume_name`. Default: this volume's pool.(0@^
format"string"D`qcow2`, `raw` or `iso`. Default: the source's format, else `qcow2`.(0@E
id"string"1The volume's key (its path, for directory pools).0@+
name"string"Name inside the pool. @5
path"string"Path of the volume on the host.0@5
pool"string"Pool name. Default `default`.(0@w
size"number"_Virtual size in bytes. Default: the source's virtual size, the base volume's size, or required.(0@l
source"string"TImage to upload: a local path or an http(s) URL. Holes and zero blocks are not sent.(@É
source_checksum"string"bsha256 over the source's non-zero 1 MiB blocks (holes cost nothing); a change replaces the volume.0@"tA storage volume: empty, filled from an image, or a copy-on-write overlay of another volume. Any change replaces it.(Ø
libvirt_cloudinit_diskîëW
id"string"C`<volume key>;<content digest>`; give it to a domain's `cloudinit`.0@m
	meta_data"string"RContent of `meta-data`. Default: `instance-id` and `local-hostname` from the name.(@7
name"string"!Volume name, e.g. `web-seed.iso`. @P
network_config"string"0Content of `network-config`; omitted when unset.(@4
path"string"Path of the image on the host.0@5
pool"string"Pool name. Default `default`.(0@W
	user_data"string":Content of `user-data` (often `#cloud-config`). Sensitive.(8@"tA NoCloud seed (ISO 9660 labelled `cidata`) for cloud-init, kept as a volume with mode 0600. Any change replaces it.(ç
libvirt_domain_templateÒ
Ó
I
base_volume_id"string")Key of the base volume instances overlay. @@
bridge"string"(Host bridge of the instances' interface.(@-
cmdline"string"Kernel command line.(@<
cpu_mode"string""CPU mode, e.g. `host-passthrough`.(@0
id"string"UUID of the template domain.0@/
initrd"string"Initrd for direct boot.(@/
kernel"string"Kernel for direct boot.(@<
machine"string"!Machine type. Default: libvirt's.(0@5
memory"number"Memory in MiB. Default 512.(0@v
	meta_data"string"[`meta-data` with placeholders. Default: `instance-id` and `local-hostname` of the instance.(@=
name"string"'Template name (the name of its domain). @C
network_config"string"#`network-config` with placeholders.(@J
network_name"string",libvirt network of the instances' interface.(@V
pool"string">Pool for the instances' overlays and seeds. Default `default`.(0@2
type"string"`kvm` (default) or `qemu`.(0@}
	user_data"string"``user-data` with placeholders `{{hostname}}`, `{{name}}` and any the launcher passes. Sensitive.(8@0
vcpu"number"Virtual CPUs. Default 1.(0@"·A VM template kept inside libvirt: a domain that is never started, its base volume and cloud-init files with `{{hostname}}` placeholders. Instances (overlay + own seed + domain) are made from it later. Any change replaces it.(”
libvirt_domain¿ΩB
	addresses["list","string"]IP addresses from DHCP leases.0@9
	autostart"bool" Whether it starts with libvirtd.0@
id"string"UUID.0@?
macs["list","string"] MAC addresses of its interfaces.0@&
memory"number"Memory in MiB.0@"
name"string"Domain name. @'
running"bool"Whether it runs.0@&
type"string"`kvm` or `qemu`.0@#
vcpu"number"Virtual CPUs.0@"An existing domain, by name.(à
libvirt_volumeıÚ8

allocation"number"Bytes allocated on the host.0@-
format"string"Format, e.g. `qcow2`.0@%
id"string"The volume's key.0@+
name"string"Name inside the pool. @'
path"string"Path on the host.0@3
pool"string"Pool name. Default `default`.(@,
size"number"Virtual size in bytes.0@"%An existing volume, by pool and name.(›
libvirt_node_info«ƒ4
	cpu_model"string"CPU model, e.g. `x86_64`.0@"
cpus"number"Active CPUs.0@:
hostname"string" Host name as libvirt reports it.0@
id"string"
Host name.0@3
memory_free_kb"number"Free memory in KiB.0@/
memory_total_kb"number"Memory in KiB.0@"$CPUs and memory of the libvirt host.(Á
libvirt_image_buildœÃ4
	directory"string"Folder holding `builds/`. @&
id"string"Path of the image.0@2
name"string"Image name without `.qcow2`. @/
path"string"Path of the newest image.0@\
sha256"string"DThe image's sha256 from the build's `SHA256SUMS`, when there is one.0@9
version"string" Name of the newest build folder.0@"lThe newest image build: `<directory>/builds/<version>/<name>.qcow2`, versions compared as text (timestamps).(2