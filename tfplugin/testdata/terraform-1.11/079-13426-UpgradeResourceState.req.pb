
libvirt_poolÄ
Á{
            "allocation": 51073204224,
            "available": 219479969792,
            "capacity": 270553174016,
            "id": "d389e998-00da-4700-b4a9-7fd908ac0c3c",
            "name": "rec",
            "path": "/tmp/kvmbe-bed-13076-0/rec-pool",
            "target": [],
            "type": "dir"
          }