
libvirt_cloudinit_disk´
±‡¢idÙ5/tmp/kvmbe-bed-13076-1/pool/seed.iso;8de849882d148994©meta_dataÀ¤name¨seed.iso®network_configÀ¤pathÙ$/tmp/kvmbe-bed-13076-1/pool/seed.iso¤pool£bed©user_data®#cloud-config
À