
libvirt_poolÉ
Æ{"allocation":51192659968,"available":219360514048,"capacity":270553174016,"id":"db709a9d-704c-4eb4-932e-6841e64d71c7","name":"rec","path":"/tmp/kvmbe-bed-13076-1/rec-pool","target":[],"type":"dir"}