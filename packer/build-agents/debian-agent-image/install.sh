#!/bin/sh
# Runs as root inside the image while it is built.
set -eu
export DEBIAN_FRONTEND=noninteractive
files=/tmp/kvmbe-files

# The Buildkite agent from Buildkite's Debian repository.
apt-get update -q
apt-get install -y -q ca-certificates curl gpg
curl -fsSL https://keys.openpgp.org/vks/v1/by-fingerprint/32A37959C2FA5C3C99EFBC32A79206696452D198 |
  gpg --dearmor -o /usr/share/keyrings/buildkite-agent-archive-keyring.gpg
echo "deb [signed-by=/usr/share/keyrings/buildkite-agent-archive-keyring.gpg] https://apt.buildkite.com/buildkite-agent stable main" \
  > /etc/apt/sources.list.d/buildkite-agent.list
apt-get update -q
apt-get install -y -q buildkite-agent git build-essential

# One job per VM: the agent runs once, for the job the VM's seed names.
install -m 0644 "$files/buildkite-agent.cfg" /etc/buildkite-agent/buildkite-agent.cfg
install -m 0644 "$files/buildkite-agent-job.service" /etc/systemd/system/buildkite-agent-job.service
systemctl disable buildkite-agent.service
systemctl enable buildkite-agent-job.service

# powernapd powers the VM off once the agent has exited.
install -m 0755 "$files/powernapd" /usr/local/sbin/powernapd
install -d -m 0755 /etc/powernap
install -m 0644 "$files/powernapd.conf" /etc/powernap/powernapd.conf
install -m 0644 "$files/powernapd.service" /etc/systemd/system/powernapd.service
systemctl enable powernapd.service

# Every VM is new: no machine id, SSH host keys or logs from the build.
apt-get clean
rm -f /etc/ssh/ssh_host_* /var/lib/dbus/machine-id
truncate -s 0 /etc/machine-id
cloud-init clean --logs
rm -rf "$files"
