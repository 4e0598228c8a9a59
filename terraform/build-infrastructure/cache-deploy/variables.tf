variable "name" {
  type    = string
  default = "build-cache"
}

variable "image_dir" {
  type = string
}

variable "pool" {
  type = string
}

variable "bridge" {
  type    = string
  default = null
}

variable "network_name" {
  type    = string
  default = null
}

variable "address" {
  type = string
}

variable "admin_ssh_keys" {
  type    = list(string)
  default = []
}

variable "memory" {
  type    = number
  default = 2048
}

variable "vcpu" {
  type    = number
  default = 2
}
