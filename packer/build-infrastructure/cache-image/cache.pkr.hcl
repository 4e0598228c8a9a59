# The package cache VM: Debian 12 with apt-cacher-ng on port 3142, for the
# agents' package downloads. Build: kvmbe build packer/build-infrastructure/cache-image

packer {
  required_plugins {
    libvirt = {
      source  = "github.com/kvmbe/libvirt"
      version = ">= 0.1.0"
    }
  }
}

variable "output_dir" {
  type        = string
  description = "Where the image goes: builds/<timestamp>, set by kvmbe build."
}

variable "libvirt_uri" {
  type    = string
  default = "qemu:///system"
}

variable "pool" {
  type    = string
  default = "default"
}

variable "network" {
  type    = string
  default = "default"
}

variable "accelerator" {
  type    = string
  default = "kvm"
}

variable "base_image_url" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

variable "base_image_checksum" {
  type    = string
  default = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

source "libvirt" "cache" {
  libvirt_uri          = var.libvirt_uri
  pool                 = var.pool
  network              = var.network
  accelerator          = var.accelerator
  vm_name              = "cache.qcow2"
  disk_image           = true
  iso_url              = var.base_image_url
  iso_checksum         = var.base_image_checksum
  disk_size            = "40G"
  disk_discard         = "unmap"
  format               = "qcow2"
  memory               = 1024
  cpus                 = 2
  ssh_username         = "debian"
  ssh_timeout          = "15m"
  shutdown_command     = "sudo poweroff"
  output_directory     = var.output_dir
}

build {
  sources = ["source.libvirt.cache"]

  provisioner "shell" {
    execute_command = "sudo sh -eu '{{ .Path }}'"
    inline = [
      "export DEBIAN_FRONTEND=noninteractive",
      "apt-get update -q",
      "apt-get install -y -q apt-cacher-ng",
      "systemctl enable apt-cacher-ng",
      "apt-get clean",
      "rm -f /etc/ssh/ssh_host_* && truncate -s 0 /etc/machine-id",
      "cloud-init clean --logs",
    ]
  }

  post-processor "shell-local" {
    inline = ["cd '${var.output_dir}' && sha256sum cache.qcow2 > SHA256SUMS"]
  }
}
