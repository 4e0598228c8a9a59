# An always-on VM: the newest cache image build as its disk, its own
# cloud-init seed, running and started with the host. A new build or a new
# seed replaces the disk, and the domain with it.

terraform {
  required_providers {
    libvirt = {
      source = "kvmbe/libvirt"
    }
  }
}

data "libvirt_image_build" "image" {
  directory = var.image_dir
  name      = "cache"
}

resource "libvirt_cloudinit_disk" "seed" {
  name = "${var.name}-seed.iso"
  pool = var.pool
  user_data = templatefile("${path.module}/user-data.tftpl", {
    hostname       = var.name
    admin_ssh_keys = var.admin_ssh_keys
  })
  network_config = templatefile("${path.module}/network-config.tftpl", {
    address = var.address
  })
}

resource "libvirt_volume" "disk" {
  name   = "${var.name}-${data.libvirt_image_build.image.version}.qcow2"
  pool   = var.pool
  source = data.libvirt_image_build.image.path
  format = "qcow2"

  lifecycle {
    replace_triggered_by = [libvirt_cloudinit_disk.seed]
  }
}

resource "libvirt_domain" "cache" {
  name      = var.name
  memory    = var.memory
  vcpu      = var.vcpu
  running   = true
  autostart = true
  cloudinit = libvirt_cloudinit_disk.seed.id

  cpu {
    mode = "host-passthrough"
  }

  network_interface {
    bridge       = var.bridge
    network_name = var.network_name
  }

  disk {
    volume_id = libvirt_volume.disk.id
  }

  lifecycle {
    replace_triggered_by = [libvirt_volume.disk]
  }
}
