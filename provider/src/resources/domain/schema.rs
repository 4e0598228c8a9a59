//! The Terraform schema of `libvirt_domain`.

use tfplugin::map;
use tfplugin::schema::{
    AttributeConstraint as C, AttributeType as T, Block, Description, NestedBlock,
};

use crate::schema::{attr, comp_str, oc_bool, oc_num, oc_str, opt_bool, opt_str, req_str};

/// Schema version: 1 since state written by dmacvicar/libvirt 0.8 (also
/// version 0) is normalized on upgrade, see [`super::upgrade::upgrade_v0`].
pub(super) const VERSION: i64 = 1;

/// The block of the schema: attributes and nested blocks.
pub(super) fn schema_block() -> Block {
    let nic = Block {
        version: 0,
        description: Description::plain("A network interface."),
        attributes: map! {
            "network_name" => oc_str("libvirt network to plug into."),
            "network_id" => oc_str("UUID of the libvirt network (instead of `network_name`)."),
            "bridge" => opt_str("Host bridge to plug into."),
            "macvtap" => opt_str("Host device for a macvtap interface."),
            "mac" => oc_str("MAC address; generated when unset."),
            "hostname" => opt_str("Host name (informational)."),
            "addresses" => attr(T::List(T::String.into()), C::OptionalComputed, "IP addresses, from DHCP leases."),
            "wait_for_lease" => opt_bool("Wait at create until the interface has a DHCP lease."),
        },
        ..Default::default()
    };
    let disk = Block {
        version: 0,
        description: Description::plain("A disk."),
        attributes: map! {
            "volume_id" => opt_str("Key of a `libvirt_volume`."),
            "file" => opt_str("Path of a file on the host (`.iso` files become CD-ROMs)."),
            "block_device" => opt_str("Path of a block device on the host."),
            "scsi" => opt_bool("Attach through virtio-scsi instead of virtio-blk."),
            "wwn" => opt_str("SCSI World Wide Name."),
        },
        ..Default::default()
    };
    let console = Block {
        version: 0,
        description: Description::plain("A serial port or console."),
        attributes: map! {
            "type" => req_str("`pty`, `file`, `unix` or `tcp`."),
            "target_port" => opt_str("Port on the guest side. Default \"0\"."),
            "target_type" => opt_str("`serial` (default) or `virtio`."),
            "source_path" => opt_str("Host path for `file` and `unix`."),
            "source_host" => opt_str("Host for `tcp`."),
            "source_service" => opt_str("Port for `tcp`."),
            "log_file" => opt_str("Also copy the guest's output to this host file."),
        },
        ..Default::default()
    };
    Block {
        version: 0,
        description: Description::markdown(
            "A virtual machine. `running`, `autostart`, `memory`, `vcpu` and `cloudinit` change in place; any other change replaces the domain.",
        ),
        attributes: map! {
            "id" => comp_str("UUID of the domain."),
            "name" => req_str("Domain name, unique on the host."),
            "type" => oc_str("`kvm` (default) or `qemu` (emulation, for hosts without KVM)."),
            "memory" => oc_num("Memory in MiB. Default 512."),
            "vcpu" => oc_num("Virtual CPUs. Default 1."),
            "running" => oc_bool("`true` (default): Terraform keeps the domain running (started at create; a refresh that finds it stopped plans `false -> true` and the apply starts it). `false`: Terraform neither starts nor stops it; its power belongs to others (a launcher, powernap), the state keeps `false` whatever the power, and an apply never stops it."),
            "autostart" => oc_bool("Start with libvirtd. Default false."),
            "cloudinit" => opt_str("Id of a `libvirt_cloudinit_disk`, attached as a CD-ROM."),
            "firmware" => opt_str("UEFI firmware (loader) path on the host."),
            "machine" => oc_str("Machine type, e.g. `q35`. Default: libvirt's."),
            "arch" => oc_str("Architecture. Default: libvirt's (the host's)."),
            "kernel" => opt_str("Kernel for direct boot."),
            "initrd" => opt_str("Initrd for direct boot."),
            "cmdline" => attr(T::List(T::Map(T::String.into()).into()), C::Optional, "Kernel command line as a list of maps; key `_` adds a bare word."),
            "qemu_agent" => oc_bool("Add the QEMU guest agent channel. Default false."),
        },
        blocks: map! {
            "cpu" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("CPU model."),
                attributes: map! { "mode" => opt_str("`host-passthrough`, `host-model` or `custom`.") },
                ..Default::default()
            }),
            "nvram" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("UEFI variables."),
                attributes: map! {
                    "file" => req_str("Per-domain variables file."),
                    "template" => opt_str("Template copied to `file` when it is missing."),
                },
                ..Default::default()
            }),
            "boot_device" => NestedBlock::List(Block {
                version: 0,
                description: Description::plain("Boot order."),
                attributes: map! { "dev" => attr(T::List(T::String.into()), C::Optional, "Devices: `hd`, `cdrom`, `network`.") },
                ..Default::default()
            }),
            "network_interface" => NestedBlock::List(nic),
            "disk" => NestedBlock::List(disk),
            "graphics" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("Graphical console."),
                attributes: map! {
                    "type" => opt_str("`spice` (default) or `vnc`."),
                    "autoport" => opt_bool("Let libvirt pick the port. Default true."),
                    "listen_type" => opt_str("`address` to listen on `listen_address`; `none` for libvirt's default."),
                    "listen_address" => opt_str("Address to listen on."),
                },
                ..Default::default()
            }),
            "console" => NestedBlock::List(console),
            "video" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("Video card."),
                attributes: map! { "type" => opt_str("Model, e.g. `cirrus`, `virtio`.") },
                ..Default::default()
            }),
            "xml" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("Last-mile changes to the generated XML."),
                attributes: map! { "xslt" => opt_str("XSLT stylesheet applied to the domain XML before it is defined.") },
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}
