
libvirt_node_infoC
AÜ©cpu_model¿§cpus¿®hostname¿¢id¿Æmemory_free_kb¿Ømemory_total_kb¿