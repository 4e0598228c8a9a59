# A Debian cloud image turned into an image of our own with the libvirt
# builder: the guest gets a NoCloud seed, the builder logs in with a
# throwaway key it hands to cloud-init, runs the provisioners, powers the
# guest off and writes output-debian/packer-debian.qcow2 and SHA256SUMS.

variable "libvirt_uri" {
  type    = string
  default = "qemu:///system"
}

variable "image_url" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

# The image's digest, looked up in Debian's checksum list.
variable "image_checksum" {
  type    = string
  default = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

# `qemu` where KVM is not available (much slower).
variable "accelerator" {
  type    = string
  default = "kvm"
}

source "libvirt" "debian" {
  libvirt_uri  = var.libvirt_uri
  pool         = "default"
  network      = "default"
  disk_image   = true
  iso_url      = var.image_url
  iso_checksum = var.image_checksum
  disk_size    = "4G"
  accelerator  = var.accelerator
  memory       = 1024
  cpus         = 2

  cd_label = "cidata"
  cd_content = {
    "meta-data" = "instance-id: packer-debian\nlocal-hostname: packer-debian\n"
    "user-data" = "#cloud-config\n"
  }

  ssh_username     = "debian"
  ssh_timeout      = "10m"
  shutdown_command = "sudo poweroff"

  vm_name          = "packer-debian"
  output_directory = "output-debian"
}

build {
  sources = ["source.libvirt.debian"]

  provisioner "shell" {
    inline = [
      "cloud-init status --wait || true",
      "echo 'built by packer-plugin-libvirt' | sudo tee /etc/motd",
    ]
  }
}
