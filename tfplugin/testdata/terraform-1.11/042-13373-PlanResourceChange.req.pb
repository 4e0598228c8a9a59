
libvirt_cloudinit_disk
ÀX
V‡¢idÀ©meta_dataÀ¤name¨seed.iso®network_configÀ¤pathÀ¤pool£bed©user_data®#cloud-config
"X
V‡¢idÀ©meta_dataÀ¤name¨seed.iso®network_configÀ¤pathÀ¤pool£bed©user_data®#cloud-config
