
libvirt_poolrec