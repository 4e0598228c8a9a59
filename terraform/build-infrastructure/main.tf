# Always-on service VMs of the build cluster (a package cache the agents
# use). Deploy: kvmbe deploy terraform/build-infrastructure

terraform {
  required_version = ">= 1.5"
  required_providers {
    libvirt = {
      source  = "kvmbe/libvirt"
      version = ">= 0.1.0"
    }
  }
}

provider "libvirt" {
  alias = "vmhost01"
  uri   = var.vmhost01_uri
}

module "cache_vmhost01" {
  source         = "./cache-deploy"
  providers      = { libvirt = libvirt.vmhost01 }
  image_dir      = "${path.root}/../../packer/build-infrastructure/cache-image"
  pool           = var.pool
  bridge         = var.bridge
  network_name   = var.network_name
  address        = var.cache_address
  admin_ssh_keys = var.admin_ssh_keys
}

output "cache_url" {
  description = "The package cache, for the agents' apt proxy setting."
  value       = "http://${var.cache_address}:3142"
}
