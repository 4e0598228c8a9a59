
libvirt_cloudinit_diskX
V‡¢idÀ©meta_dataÀ¤name¨seed.iso®network_configÀ¤pathÀ¤pool£bed©user_data®#cloud-config
