# Agent VM templates on every host, kept in libvirt, which the launcher
# instantiates per job. Deploy: kvmbe deploy terraform/build-agents
# (the provider wakes sleeping hosts itself; nothing is copied to them).

terraform {
  required_version = ">= 1.5"
  required_providers {
    libvirt = {
      source  = "kvmbe/libvirt"
      version = ">= 0.1.0"
    }
  }
}

# The host this runs on.
provider "libvirt" {
  alias = "vmhost01"
  uri   = var.vmhost01_uri
}

# A host that sleeps when idle: woken before its first libvirt call.
provider "libvirt" {
  alias   = "vmhost02"
  uri     = var.vmhost02_uri
  keyfile = var.ssh_keyfile
  wake {
    mac       = var.vmhost02_mac
    broadcast = var.vmhost02_broadcast
    timeout   = 300
  }
}

locals {
  images = "${path.root}/../../packer/build-agents"
}

module "debian_agent_vmhost01" {
  source             = "./agent-template"
  providers          = { libvirt = libvirt.vmhost01 }
  name               = "debian-agent"
  image_dir          = "${local.images}/debian-agent-image"
  user_data_template = "${path.root}/user-data/debian-agent.tftpl"
  pool               = var.pool
  bridge             = var.bridge
}

module "debian_agent_vmhost02" {
  source             = "./agent-template"
  providers          = { libvirt = libvirt.vmhost02 }
  name               = "debian-agent"
  image_dir          = "${local.images}/debian-agent-image"
  user_data_template = "${path.root}/user-data/debian-agent.tftpl"
  pool               = var.pool
  bridge             = var.bridge
}

module "freebsd_agent_vmhost02" {
  source             = "./agent-template"
  providers          = { libvirt = libvirt.vmhost02 }
  name               = "freebsd-agent"
  image_dir          = "${local.images}/freebsd-agent-image"
  user_data_template = "${path.root}/user-data/freebsd-agent.tftpl"
  pool               = var.pool
  bridge             = var.bridge
}

module "windows_agent_vmhost01" {
  source             = "./agent-template"
  providers          = { libvirt = libvirt.vmhost01 }
  name               = "windows-agent"
  image_dir          = "${local.images}/windows-agent-image"
  user_data_template = "${path.root}/user-data/windows-agent.tftpl"
  pool               = var.pool
  bridge             = var.bridge
  machine            = "q35"
  memory             = 8192
}

output "templates" {
  description = "The templates per host, for the launcher's config."
  value = {
    vmhost01 = [module.debian_agent_vmhost01.template, module.windows_agent_vmhost01.template]
    vmhost02 = [module.debian_agent_vmhost02.template, module.freebsd_agent_vmhost02.template]
  }
}
