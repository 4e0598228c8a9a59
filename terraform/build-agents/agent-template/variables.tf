variable "name" {
  type        = string
  description = "The kind of agent: the image's name (<name>.qcow2 in its builds) and the template's."
}

variable "image_dir" {
  type        = string
  description = "The image folder whose builds/ holds the kind's builds."
}

variable "user_data_template" {
  type        = string
  description = "The VMs' user-data, a Terraform template (given no variables) with the launcher's {{placeholders}} left in, {{buildkite_agent_token}} among them."
}

variable "pool" {
  type = string
}

variable "bridge" {
  type        = string
  default     = null
  description = "Host bridge the VMs join (or network_name)."
}

variable "network_name" {
  type    = string
  default = null
}

variable "type" {
  type        = string
  default     = "kvm"
  description = "kvm, or qemu (emulation) on hosts without virtualisation."
}

variable "memory" {
  type    = number
  default = 4096
}

variable "vcpu" {
  type    = number
  default = 4
}

variable "cpu_mode" {
  type        = string
  default     = "host-passthrough"
  description = "CPU mode when no cpu_model is given; null under emulation (type = \"qemu\"), which has no host CPU to pass through."
}

variable "kernel" {
  type        = string
  default     = null
  description = "Kernel for direct boot (images without a boot loader); with initrd and cmdline."
}

variable "initrd" {
  type    = string
  default = null
}

variable "cmdline" {
  type    = string
  default = null
}

variable "machine" {
  type    = string
  default = null
}

variable "extra_base_volume_ids" {
  type        = list(string)
  default     = []
  description = "Keys of further base volumes: each VM gets an overlay of each, in order, after the image."
}

variable "network_model" {
  type        = string
  default     = null
  description = "NIC model, e.g. e1000 or vmxnet3 (default virtio)."
}

variable "cpu_model" {
  type        = string
  default     = null
  description = "CPU model, e.g. Haswell-noTSX-IBRS; unset: host-passthrough."
}

variable "firmware" {
  type        = string
  default     = null
  description = "UEFI loader, e.g. /usr/share/OVMF/OVMF_CODE.fd; each VM then gets its own NVRAM."
}

variable "nvram_template" {
  type        = string
  default     = null
  description = "UEFI variables each VM's NVRAM starts as, e.g. /usr/share/OVMF/OVMF_VARS.fd."
}

variable "qemu_agent" {
  type        = bool
  default     = null
  description = "Add the QEMU guest agent channel."
}

variable "xslt" {
  type        = string
  default     = null
  description = "XSLT stylesheet applied to each VM's domain XML."
}

variable "cloudinit_files" {
  type        = map(string)
  default     = null
  sensitive   = true
  description = "Further cloud-init files by name, with the launcher's {{placeholders}}."
}

variable "cloudinit_label" {
  type        = string
  default     = null
  description = "Label of each VM's cloud-init CD: cidata (default) or config-2."
}
