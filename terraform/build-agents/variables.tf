variable "vmhost01_uri" {
  type    = string
  default = "qemu:///system"
}

variable "vmhost02_uri" {
  type    = string
  default = "qemu+ssh://root@vmhost02.lan/system"
}

variable "vmhost02_mac" {
  type        = string
  description = "MAC address of vmhost02's NIC, for Wake-on-LAN and powerwake."
  default     = "52:54:00:00:00:02"
}

variable "vmhost02_broadcast" {
  type    = string
  default = null
}

variable "ssh_keyfile" {
  type    = string
  default = null
}

variable "pool" {
  type    = string
  default = "default"
}

variable "bridge" {
  type        = string
  default     = "br0"
  description = "Host bridge the agent VMs join."
}
