
libvirt_cloudinit_diskÀ
½{
            "id": "/tmp/kvmbe-bed-13076-1/pool/seed.iso;8de849882d148994",
            "meta_data": null,
            "name": "seed.iso",
            "network_config": null,
            "path": "/tmp/kvmbe-bed-13076-1/pool/seed.iso",
            "pool": "bed",
            "user_data": "#cloud-config\n"
          }