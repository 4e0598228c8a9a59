
libvirt_volumeû
õãÆbase_volume_id¿∞base_volume_name¿∞base_volume_pool¿¶format¿¢id¿§name®disk.raw§path¿§pool£rec§size¿¶sourceæ/tmp/kvmbe-bed-13076-0/src.rawØsource_checksum¿