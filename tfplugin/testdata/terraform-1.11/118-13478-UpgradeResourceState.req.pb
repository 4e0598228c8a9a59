
libvirt_volume‹
ˆ{
            "base_volume_id": null,
            "base_volume_name": null,
            "base_volume_pool": null,
            "format": "raw",
            "id": "/tmp/kvmbe-bed-13076-0/rec-pool/disk.raw",
            "name": "disk.raw",
            "path": "/tmp/kvmbe-bed-13076-0/rec-pool/disk.raw",
            "pool": "rec",
            "size": 65536,
            "source": "/tmp/kvmbe-bed-13076-0/src.raw",
            "source_checksum": "f68d4b917d7af5623661fed76b9dab4a649948879b2098743e73a7f1e10dad31"
          }