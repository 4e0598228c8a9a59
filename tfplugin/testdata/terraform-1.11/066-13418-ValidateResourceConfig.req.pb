
libvirt_poolg
eˆªallocationÀ©availableÀ¨capacityÀ¢idÀ¤name£rec¤path¿/tmp/kvmbe-bed-13076-0/rec-pool¦target¤type£dir