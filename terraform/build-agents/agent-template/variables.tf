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
  description = "The VMs' user-data, a Terraform template given buildkite_agent_token, with the launcher's {{placeholders}} left in."
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

variable "machine" {
  type    = string
  default = null
}

variable "buildkite_agent_token" {
  type      = string
  sensitive = true
}
