variable "libvirt_uri" {
  description = "libvirt connection URI."
  type        = string
  default     = "qemu:///system"
}

variable "network" {
  description = "libvirt network the VM plugs into."
  type        = string
  default     = "default"
}

variable "domain_type" {
  description = "kvm where the CPU offers it, qemu (emulation) otherwise."
  type        = string
  default     = "kvm"
}

variable "pool_path" {
  description = "Directory of the storage pool the example creates."
  type        = string
}

variable "kernel" {
  description = "Kernel for direct boot."
  type        = string
}

variable "initrd" {
  description = "Initrd for direct boot (the whole tiny guest)."
  type        = string
}

variable "cmdline" {
  description = "Kernel command line."
  type        = string
  default     = "console=ttyS0"
}

variable "console_log" {
  description = "File that receives the VM's serial console."
  type        = string
}
