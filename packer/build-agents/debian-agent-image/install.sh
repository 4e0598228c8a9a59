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

# The package's own unit would run an agent for any job: each VM runs
# one, for its job (files/install-files.sh says how).
systemctl disable buildkite-agent.service
sh "$files/install-files.sh" /

# Every VM is new: no machine id, SSH host keys or logs from the build.
apt-get clean
rm -f /etc/ssh/ssh_host_* /var/lib/dbus/machine-id
truncate -s 0 /etc/machine-id
cloud-init clean --logs
rm -rf "$files"
