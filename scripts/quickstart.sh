#!/usr/bin/env bash
# The main job, on this machine and nothing else (its VM hosts are network
# namespaces; no packet leaves them or loopback):
#   1. builds a tiny agent image with Packer and our libvirt builder (the
#      test bed's tiny guest with the real buildkite-agent 3.78.0 inside);
#   2. deploys it with Terraform and our provider as an agent template to
#      two VM hosts, vmhost01 (awake) and vmhost02 (asleep: the provider
#      wakes it, its powernapd puts it back to sleep), plus an always-on
#      VM on vmhost01;
#   3. starts buildkite-agent-launcher against a local Buildkite stand-in
#      holding 3 jobs on queue linux (no account needed), and keeping one
#      saved slot on vmhost01, whose clone gets a 4th job once it is ready;
#   4. shows each job get its VM (vmhost02 woken for them) and the real
#      agent run it, the VMs power off and vanish, vmhost02 sleep again;
#   5. prints a summary table (job, host, seconds to VM start, seconds to
#      agent running, how the VM started: cold or saved, the launcher's
#      seconds per stage of the start: reserve, wake, token, start, agent;
#      result) and exits 1 if a job did not pass;
#   6. removes everything it made.
#
#   scripts/quickstart.sh            run it
#   scripts/quickstart.sh --keep     leave it all running until Enter
#   scripts/quickstart.sh --jobs N   N jobs (1 to 10) instead of 3, then the slot's one
#   scripts/quickstart.sh --json     also the summary as one JSON object per job and line
#
# With BUILDKITE_AGENT_TOKEN (and the launcher's other BUILDKITE_*
# variables) in the environment, the launcher serves your Buildkite
# cluster's queue linux instead of the stand-in, until Enter.
# It installs what it needs first (scripts/setup.sh --main-job).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  # Network namespaces and a libvirtd per host need root.
  exec sudo --preserve-env=KVMBE_CACHE,CARGO_TARGET_DIR,BUILDKITE_AGENT_TOKEN,BUILDKITE_AGENT_ENDPOINT,BUILDKITE_API_ENDPOINT,BUILDKITE_API_TOKEN,BUILDKITE_ORGANIZATION,PATH "$0" "$@"
fi

scripts/setup.sh --main-job
export KVMBE_CACHE=${KVMBE_CACHE:-/var/cache/kvmbe}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KVMBE_CACHE/target}
export CHECKPOINT_DISABLE=1
# The terraform shim setup.sh writes when the machine has no terraform.
PATH=$PATH:$KVMBE_CACHE/bin
exec "$CARGO_TARGET_DIR/debug/main-job" "$@"
