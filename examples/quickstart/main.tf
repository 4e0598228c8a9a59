# A tiny VM on this machine's libvirt: a pool, a data disk, a cloud-init
# seed, and a domain that boots a kernel directly and writes its serial
# console to a file. Fill terraform.tfvars as README.md shows.

terraform {
  required_providers {
    libvirt = {
      source = "kvmbe/libvirt"
    }
  }
}

provider "libvirt" {
  uri = var.libvirt_uri
}

resource "libvirt_pool" "quickstart" {
  name = "quickstart"
  type = "dir"
  path = var.pool_path
}

resource "libvirt_volume" "data" {
  name = "quickstart-data.qcow2"
  pool = libvirt_pool.quickstart.name
  size = 67108864
}

resource "libvirt_cloudinit_disk" "seed" {
  name      = "quickstart-seed.iso"
  pool      = libvirt_pool.quickstart.name
  user_data = <<-EOT
    #cloud-config
    hostname: quickstart
    runcmd:
      - echo hello from the quickstart VM
  EOT
}

resource "libvirt_domain" "vm" {
  name      = "quickstart"
  type      = var.domain_type
  memory    = 256
  vcpu      = 1
  kernel    = var.kernel
  initrd    = var.initrd
  cmdline   = [{ "_" = var.cmdline }]
  cloudinit = libvirt_cloudinit_disk.seed.id

  disk {
    volume_id = libvirt_volume.data.id
  }

  network_interface {
    network_name = var.network
  }

  console {
    type        = "file"
    target_port = "0"
    target_type = "serial"
    source_path = var.console_log
  }
}

output "domain_id" {
  value = libvirt_domain.vm.id
}

output "mac" {
  value = libvirt_domain.vm.network_interface[0].mac
}
