
m
k…§keyfileÀ«known_hostsÀ©no_verifyÀ£uriÙ=qemu:///system?socket=/tmp/kvmbe-bed-13076-1/run/libvirt-sock¤wake