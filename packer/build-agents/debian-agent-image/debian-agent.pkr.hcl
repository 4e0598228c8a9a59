# The Debian agent image: Debian 12 with the Buildkite agent, run once per
# VM for the job the launcher hands it (--acquire-job, from the VM's seed,
# or, in a warm VM, from kvmbe-handoff over the hand-off channel), and
# powernapd, which powers the VM off once the agent has exited.
# Build: kvmbe build packer/build-agents/debian-agent-image

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
  type        = string
  default     = "kvm"
  description = "kvm, or qemu (emulation) where the CPU offers no virtualisation."
}

variable "base_image_url" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

variable "base_image_checksum" {
  type    = string
  default = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

variable "powernapd_path" {
  type        = string
  default     = "/usr/local/sbin/powernapd"
  description = "The powernapd binary to install in the image (cargo build --release -p powernap)."
}

variable "handoff_path" {
  type        = string
  default     = "/usr/local/sbin/kvmbe-handoff"
  description = "The kvmbe-handoff binary a warm VM waits for its job with (cargo build --release -p kvmbe-handoff)."
}

source "libvirt" "debian-agent" {
  libvirt_uri          = var.libvirt_uri
  pool                 = var.pool
  network              = var.network
  accelerator          = var.accelerator
  vm_name              = "debian-agent.qcow2"
  disk_image           = true
  use_backing_file     = false
  iso_url              = var.base_image_url
  iso_checksum         = var.base_image_checksum
  disk_size            = "20G"
  disk_discard         = "unmap"
  disk_detect_zeroes   = "unmap"
  format               = "qcow2"
  memory               = 2048
  cpus                 = 2
  ssh_username         = "debian"
  ssh_timeout          = "15m"
  shutdown_command     = "sudo poweroff"
  output_directory     = var.output_dir
}

build {
  sources = ["source.libvirt.debian-agent"]

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/kvmbe-files"
  }

  provisioner "file" {
    source      = var.powernapd_path
    destination = "/tmp/kvmbe-files/powernapd"
  }

  provisioner "file" {
    source      = var.handoff_path
    destination = "/tmp/kvmbe-files/kvmbe-handoff"
  }

  provisioner "shell" {
    script          = "${path.root}/install.sh"
    execute_command = "sudo sh -eu '{{ .Path }}'"
  }

  post-processor "shell-local" {
    inline = ["cd '${var.output_dir}' && sha256sum debian-agent.qcow2 > SHA256SUMS"]
  }
}
