#!/bin/sh
# Installs this image's own files into the file system at ROOT (/ while
# the image is built) and enables their units: the one-job agent unit,
# the warm VM's hand-off (kvmbe-handoff) and powernapd.
# Usage: install-files.sh ROOT (the files beside this script).
set -eu
root=${1:?usage: install-files.sh ROOT}
files=$(dirname "$0")

install -d -m 0755 "$root/etc/buildkite-agent" "$root/etc/systemd/system" \
  "$root/etc/powernap" "$root/usr/local/sbin" "$root/usr/local/libexec"
install -m 0644 "$files/buildkite-agent.cfg" "$root/etc/buildkite-agent/buildkite-agent.cfg"

# A VM started for its job: the agent runs once, for the job its seed names.
install -m 0644 "$files/buildkite-agent-job.service" "$root/etc/systemd/system/"
# A warm VM: kvmbe-handoff waits on the hand-off channel for a job and
# its token, then becomes the agent.
install -m 0755 "$files/kvmbe-handoff" "$root/usr/local/sbin/kvmbe-handoff"
install -m 0755 "$files/kvmbe-agent" "$files/kvmbe-renew-dhcp" "$root/usr/local/libexec/"
install -m 0644 "$files/kvmbe-handoff.service" "$root/etc/systemd/system/"

# powernapd powers the VM off once the agent has exited.
install -m 0755 "$files/powernapd" "$root/usr/local/sbin/powernapd"
install -m 0644 "$files/powernapd.conf" "$root/etc/powernap/powernapd.conf"
install -m 0644 "$files/powernapd.service" "$root/etc/systemd/system/"

systemctl --root="$root" enable buildkite-agent-job.service kvmbe-handoff.service powernapd.service
