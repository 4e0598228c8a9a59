variable "vmhost01_uri" {
  type    = string
  default = "qemu:///system"
}

variable "pool" {
  type    = string
  default = "default"
}

variable "bridge" {
  type        = string
  default     = null
  description = "Host bridge the service VMs join (or network_name)."
}

variable "network_name" {
  type    = string
  default = null
}

variable "cache_address" {
  type        = string
  default     = "192.168.122.10"
  description = "The cache VM's fixed address (CIDR /24 assumed)."
}

variable "admin_ssh_keys" {
  type        = list(string)
  default     = []
  description = "Public keys allowed to log in as the admin user."
}
