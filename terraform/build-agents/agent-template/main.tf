# One host's template for one kind of agent VM: the newest build of the
# kind's image as a base volume, and a template domain that the launcher
# makes one-job VMs from (copy-on-write overlay, own seed, transient).

terraform {
  required_providers {
    libvirt = {
      source = "kvmbe/libvirt"
    }
  }
}

data "libvirt_image_build" "image" {
  directory = var.image_dir
  name      = var.name
}

resource "libvirt_volume" "base" {
  name   = "${var.name}-${data.libvirt_image_build.image.version}.qcow2"
  pool   = var.pool
  source = data.libvirt_image_build.image.path
  format = "qcow2"
}

resource "libvirt_domain_template" "agent" {
  name           = var.name
  pool           = var.pool
  base_volume_id = libvirt_volume.base.id
  memory         = var.memory
  vcpu           = var.vcpu
  # A CPU model (the seed's Windows agents pin one) is a custom CPU.
  cpu_mode       = var.cpu_model == null ? var.cpu_mode : null
  cpu_model      = var.cpu_model
  machine        = var.machine
  kernel         = var.kernel
  initrd         = var.initrd
  cmdline        = var.cmdline
  bridge         = var.bridge
  network_name   = var.network_name
  network_model  = var.network_model
  type           = var.type
  firmware       = var.firmware
  nvram_template = var.nvram_template
  qemu_agent     = var.qemu_agent
  # {{hostname}}, {{buildkite_job_id}}, {{buildkite_agent_token}}, ...
  # are filled per VM by the launcher: the token is the VM's job
  # acquisition token, so no template holds a token.
  user_data       = templatefile(var.user_data_template, {})
  cloudinit_files = var.cloudinit_files
  cloudinit_label = var.cloudinit_label

  # Further disks after the image's, in order.
  dynamic "disk" {
    for_each = var.extra_base_volume_ids
    content {
      volume_id = disk.value
    }
  }

  dynamic "xml" {
    for_each = var.xslt == null ? [] : [var.xslt]
    content {
      xslt = xml.value
    }
  }
}
