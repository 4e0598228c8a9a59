# The FreeBSD agent image: FreeBSD 14 (the cloud-init flavour, whose
# nuageinit reads the VM's NoCloud seed) with the Buildkite agent and its
# rc.d script. Build: kvmbe build packer/build-agents/freebsd-agent-image

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

variable "release" {
  type    = string
  default = "14.2"
}

source "libvirt" "freebsd-agent" {
  libvirt_uri          = var.libvirt_uri
  pool                 = var.pool
  network              = var.network
  accelerator          = var.accelerator
  vm_name              = "freebsd-agent.qcow2"
  disk_image           = true
  iso_url              = "https://download.freebsd.org/releases/VM-IMAGES/${var.release}-RELEASE/amd64/Latest/FreeBSD-${var.release}-RELEASE-amd64-BASIC-CLOUDINIT-ufs.qcow2.xz"
  iso_checksum         = "file:https://download.freebsd.org/releases/VM-IMAGES/${var.release}-RELEASE/amd64/Latest/CHECKSUM.SHA512"
  disk_size            = "30G"
  format               = "qcow2"
  memory               = 2048
  cpus                 = 2
  net_device           = "virtio-net"
  cd_label             = "cidata"
  cd_content = {
    "meta-data" = ""
    "user-data" = <<-EOT
      #cloud-config
      users:
        - name: freebsd
          sudo: "ALL=(ALL) NOPASSWD:ALL"
      packages: [sudo]
    EOT
  }
  boot_wait            = "5s"
  ssh_username         = "freebsd"
  ssh_timeout          = "20m"
  shutdown_command     = "sudo shutdown -p now"
  output_directory     = var.output_dir
}

build {
  sources = ["source.libvirt.freebsd-agent"]

  provisioner "file" {
    source      = "${path.root}/files/buildkite_agent"
    destination = "/tmp/buildkite_agent"
  }

  provisioner "shell" {
    execute_command = "sudo sh -eu '{{ .Path }}'"
    inline = [
      "env ASSUME_ALWAYS_YES=yes pkg install buildkite-agent git",
      "install -m 0555 /tmp/buildkite_agent /usr/local/etc/rc.d/buildkite_agent",
      "pw useradd buildkite -m -s /bin/sh -c 'Buildkite agent' || true",
      "sysrc buildkite_agent_enable=NO",
      "rm -f /etc/ssh/ssh_host_*",
    ]
  }

  post-processor "shell-local" {
    inline = ["cd '${var.output_dir}' && sha256sum freebsd-agent.qcow2 > SHA256SUMS"]
  }
}
