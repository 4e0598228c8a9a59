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
  cpu_mode       = "host-passthrough"
  machine        = var.machine
  bridge         = var.bridge
  network_name   = var.network_name
  type           = var.type
  # {{hostname}}, {{buildkite_job_id}}, ... are filled per VM by the
  # launcher; the token is filled here, from a sensitive variable, and
  # kept on the host in a root-only volume.
  user_data = templatefile(var.user_data_template, {
    buildkite_agent_token = var.buildkite_agent_token
  })
}
