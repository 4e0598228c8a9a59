# The Windows agent image: Windows Server 2022 installed from its ISO with
# an unattended answer file, cloudbase-init (which reads the VM's NoCloud
# seed at first boot) and the Buildkite agent, started by a start-up task
# from the file the seed writes. Build: kvmbe build packer/build-agents/windows-agent-image
#
# Packer reaches Windows over WinRM with Basic authentication, which
# files/autounattend.xml turns on (with AllowUnencrypted for plain HTTP).

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

variable "iso_path" {
  type        = string
  description = "The Windows Server 2022 ISO (licensed media of your own)."
  default     = "/srv/iso/windows-server-2022.iso"
}

variable "admin_password" {
  type      = string
  sensitive = true
  default   = "build-time-only-1!"
}

source "libvirt" "windows-agent" {
  libvirt_uri        = var.libvirt_uri
  pool               = var.pool
  network            = var.network
  vm_name            = "windows-agent.qcow2"
  iso_url            = var.iso_path
  iso_checksum       = "none"
  disk_size          = "80G"
  format             = "qcow2"
  machine_type       = "q35"
  efi_boot           = true
  memory             = 8192
  cpus               = 4
  cd_files           = ["${path.root}/files/autounattend.xml"]
  communicator       = "winrm"
  winrm_username     = "Administrator"
  winrm_password     = var.admin_password
  winrm_timeout      = "2h"
  shutdown_command   = "shutdown /s /t 10 /f"
  shutdown_timeout   = "30m"
  output_directory   = var.output_dir
}

build {
  sources = ["source.libvirt.windows-agent"]

  provisioner "powershell" {
    scripts = ["${path.root}/files/install.ps1"]
  }

  post-processor "shell-local" {
    inline = ["cd '${var.output_dir}' && sha256sum windows-agent.qcow2 > SHA256SUMS"]
  }
}
