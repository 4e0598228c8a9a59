//! Warm VMs: instances of a definition booted ahead of any job, waiting
//! in their `kvmbe-handoff` program for one (see the `kvmbe-handoff`
//! crate). Nothing secret is in them: the job, its token, the VM's host
//! name and the time reach the guest through the `org.kvmbe.handoff`
//! channel once the job is reserved.
//!
//! [`WarmPool`] follows them from the start call (`Starting`) through
//! booting (`Booting`, asked every pass whether it waits: `Probing`) to
//! waiting for a job (`Ready`) and being handed one (`Claimed`); after
//! that the VM is a job's VM like any other, labelled with its job.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvmhost::libvirt::channel::CHANNEL;
use kvmhost::libvirt::instance::InstanceSpec;

use crate::config::Config;
use crate::daemon::{agent_tags, random_hex, sh_quote};
use crate::hosts::{label, HostRt};
use crate::hours::LocalTime;

/// How long a hand-off may take from opening the channel to `started`.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a booting warm VM is given to say `ready` when asked.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a warm VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmState {
    /// Its start call is under way.
    Starting,
    /// Started (or found running); not yet known to wait for a job.
    Booting,
    /// Being asked whether it waits.
    Probing,
    /// Waits for a job.
    Ready,
    /// Being handed a job; a job's VM from now on.
    Claimed,
}

/// A warm VM of this launcher.
#[derive(Debug, Clone)]
pub struct WarmVm {
    /// Its definition (index into [`Config::agents`]).
    pub def: usize,
    /// Its host (index into [`Config::hosts`]).
    pub host: usize,
    /// Where it is.
    pub state: WarmState,
    /// When it entered the pool (started, or found).
    pub since: Instant,
}

/// What the pool asks the daemon to do about a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The VM's name.
    pub vm: String,
    /// Its host.
    pub host: usize,
    /// Why, for the log.
    pub why: String,
}

/// The warm VMs of this launcher, by VM name.
#[derive(Debug, Default)]
pub struct WarmPool {
    vms: HashMap<String, WarmVm>,
    /// When the waiting VMs' template versions were last checked.
    checked: Option<Instant>,
}

/// How often the waiting warm VMs' template versions are checked, so a
/// changed template replaces them in the background (a hand-off checks
/// its VM's version anyway).
pub const VERSION_CHECK_EVERY: Duration = Duration::from_secs(60);

impl WarmPool {
    /// The VMs followed now.
    pub fn vms(&self) -> &HashMap<String, WarmVm> {
        &self.vms
    }

    /// Follows `vm`, whose start call on `host` begins now.
    pub fn starting(&mut self, vm: &str, def: usize, host: usize) {
        self.vms.insert(
            vm.to_string(),
            WarmVm {
                def,
                host,
                state: WarmState::Starting,
                since: Instant::now(),
            },
        );
    }

    /// `vm`'s start call returned (or lost its answer: it may run).
    pub fn started(&mut self, vm: &str) {
        if let Some(w) = self.vms.get_mut(vm) {
            w.state = WarmState::Booting;
            w.since = Instant::now();
        }
    }

    /// Forgets `vm` (its start failed, or it was removed).
    pub fn forget(&mut self, vm: &str) {
        self.vms.remove(vm);
    }

    /// Brings the pool in line with what the hosts list: adopts warm VMs
    /// of this launcher it does not follow (after a restart), forgets
    /// those gone or handed a job, and returns those that did not say
    /// `ready` within `boot_timeout`, to be removed.
    pub fn sync(
        &mut self,
        cfg: &Config,
        hosts: &[Arc<HostRt>],
        boot_timeout: Duration,
    ) -> Vec<Removal> {
        for (h, rt) in hosts.iter().enumerate() {
            if rt.conn().is_none() {
                continue;
            }
            for i in rt.instances() {
                let ours = i.labels.get(label::LAUNCHER) == Some(&cfg.buildkite.stack_key);
                if !ours || !i.labels.contains_key(label::WARM) {
                    continue;
                }
                if i.labels.contains_key(label::JOB) {
                    // Handed its job: followed as the job's VM now.
                    self.vms.remove(&i.name);
                    continue;
                }
                let def = i
                    .labels
                    .get(label::DEFINITION)
                    .and_then(|d| cfg.agents.iter().position(|a| &a.name == d));
                if let (Some(def), false) = (def, self.vms.contains_key(&i.name)) {
                    self.vms.insert(
                        i.name.clone(),
                        WarmVm {
                            def,
                            host: h,
                            state: WarmState::Booting,
                            since: Instant::now(),
                        },
                    );
                }
            }
        }
        self.vms.retain(|vm, w| {
            w.state == WarmState::Starting || !hosts[w.host].lacks_since(vm, w.since)
        });
        let late: Vec<Removal> = self
            .vms
            .iter()
            .filter(|(_, w)| {
                matches!(w.state, WarmState::Booting | WarmState::Probing)
                    && w.since.elapsed() > boot_timeout
            })
            .map(|(vm, w)| Removal {
                vm: vm.clone(),
                host: w.host,
                why: format!(
                    "did not say it waits for a job within the boot timeout ({} s)",
                    boot_timeout.as_secs()
                ),
            })
            .collect();
        for r in &late {
            self.vms.remove(&r.vm);
        }
        late
    }

    /// The VMs to ask whether they wait now (marked as being asked).
    pub fn to_probe(&mut self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (vm, w) in &mut self.vms {
            if w.state == WarmState::Booting {
                w.state = WarmState::Probing;
                out.push((vm.clone(), w.host));
            }
        }
        out
    }

    /// The waiting VMs (name, definition, host) whose template version
    /// is due for a check: all of them once every
    /// [`VERSION_CHECK_EVERY`], else none.
    pub fn due_for_version_check(&mut self, now: Instant) -> Vec<(String, usize, usize)> {
        if self
            .checked
            .is_some_and(|t| now.duration_since(t) < VERSION_CHECK_EVERY)
        {
            return Vec::new();
        }
        self.checked = Some(now);
        self.vms
            .iter()
            .filter(|(_, w)| w.state == WarmState::Ready)
            .map(|(vm, w)| (vm.clone(), w.def, w.host))
            .collect()
    }

    /// Takes `vm` out of the pool if it still waits (not claimed for a
    /// job meanwhile); whether it did.
    pub fn take_waiting(&mut self, vm: &str) -> bool {
        if self
            .vms
            .get(vm)
            .is_some_and(|w| w.state == WarmState::Ready)
        {
            self.vms.remove(vm);
            return true;
        }
        false
    }

    /// `vm` answered the probe (`ready`) or not; true when it became ready.
    pub fn probed(&mut self, vm: &str, ready: bool) -> bool {
        match self.vms.get_mut(vm) {
            Some(w) if w.state == WarmState::Probing => {
                w.state = if ready {
                    WarmState::Ready
                } else {
                    WarmState::Booting
                };
                ready
            }
            _ => false,
        }
    }

    /// The hosts of `def`'s warm VMs that wait for a job, one entry per
    /// VM, in the definition's host order.
    pub fn ready_hosts(&self, cfg: &Config, def: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for &h in &cfg.agents[def].hosts {
            let n = self
                .vms
                .values()
                .filter(|w| w.def == def && w.host == h && w.state == WarmState::Ready)
                .count();
            out.extend(std::iter::repeat_n(h, n));
        }
        out
    }

    /// Takes a warm VM of `def` waiting on `host` for a job; its name.
    pub fn claim(&mut self, def: usize, host: usize) -> Option<String> {
        let (vm, w) = self
            .vms
            .iter_mut()
            .filter(|(_, w)| w.def == def && w.host == host && w.state == WarmState::Ready)
            .min_by_key(|(_, w)| w.since)?;
        w.state = WarmState::Claimed;
        Some(vm.clone())
    }

    /// `vm`, claimed for a job it was not handed, waits for another.
    pub fn release(&mut self, vm: &str) {
        if let Some(w) = self
            .vms
            .get_mut(vm)
            .filter(|w| w.state == WarmState::Claimed)
        {
            w.state = WarmState::Ready;
        }
    }

    /// Warm VMs of `def` kept now (not yet handed a job).
    pub fn kept(&self, def: usize) -> usize {
        self.vms
            .values()
            .filter(|w| w.def == def && w.state != WarmState::Claimed)
            .count()
    }

    /// How many warm VMs each definition with `warm` set has, `booting`
    /// (started, not yet waiting) and `waiting` (for a job), as the
    /// `launcher_warm_vms` gauge has them.
    pub fn counts(&self, cfg: &Config) -> BTreeMap<(String, &'static str), u64> {
        let mut out = BTreeMap::new();
        for (d, a) in cfg.agents.iter().enumerate().filter(|(_, a)| a.warm > 0) {
            for state in ["booting", "waiting"] {
                out.insert((a.name.clone(), state), 0);
            }
            for w in self.vms.values().filter(|w| w.def == d) {
                let state = match w.state {
                    WarmState::Claimed => continue,
                    WarmState::Ready => "waiting",
                    _ => "booting",
                };
                *out.entry((a.name.clone(), state)).or_default() += 1;
            }
        }
        out
    }

    /// Warm VMs beyond what the config asks for at `now` (after a
    /// restart with a smaller `warm`, a job's VM released, or all of them
    /// outside `warm_hours`), booting ones first; to be removed.
    pub fn surplus(&mut self, cfg: &Config, now: LocalTime) -> Vec<Removal> {
        let mut out = Vec::new();
        for (d, a) in cfg.agents.iter().enumerate() {
            let wanted = a.warm_at(now);
            let extra = self.kept(d).saturating_sub(wanted as usize);
            let why = match &a.warm_hours {
                Some(h) if wanted < a.warm => format!("outside warm_hours ({h})"),
                _ => format!("more warm {} VMs than warm = {}", a.name, a.warm),
            };
            // Booting ones first (a VM that waits is worth more than one
            // that may soon; a probe's late answer about a VM removed is
            // ignored), then waiting ones, newest first.
            let mut idle: Vec<(String, WarmVm)> = self
                .vms
                .iter()
                .filter(|(_, w)| {
                    w.def == d
                        && matches!(
                            w.state,
                            WarmState::Booting | WarmState::Probing | WarmState::Ready
                        )
                })
                .map(|(v, w)| (v.clone(), w.clone()))
                .collect();
            idle.sort_by_key(|(_, w)| (w.state == WarmState::Ready, std::cmp::Reverse(w.since)));
            for (vm, w) in idle.into_iter().take(extra) {
                self.vms.remove(&vm);
                out.push(Removal {
                    vm,
                    host: w.host,
                    why: why.clone(),
                });
            }
        }
        out
    }
}

/// Whether warm VM `vm` of `def` on `host` was started from the
/// template as it is now (its [`label::VERSION`] is the version a warm VM
/// started now would have); `Err` says why not. One without the label
/// counts as older.
pub fn check_version(
    host: &kvmhost::libvirt::Host,
    cfg: &Config,
    def: usize,
    vm: &str,
) -> Result<(), VersionError> {
    let now = host.slot_version(&warm_instance_spec(cfg, def, vm))?;
    match host.instance_label(vm, label::VERSION)? {
        Some(v) if v == now => Ok(()),
        had => Err(VersionError::Older {
            vm: vm.to_string(),
            had: had.unwrap_or_else(|| "unknown".into()),
            now,
        }),
    }
}

/// Why a warm VM's template version is not the template's now.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// It was started from an older template.
    #[error("{vm} was started from an older template (version {had}, now {now})")]
    Older {
        /// The VM.
        vm: String,
        /// The version it was started from.
        had: String,
        /// The version one started now would have.
        now: String,
    },
    /// The host could not say.
    #[error(transparent)]
    Host(#[from] kvmhost::libvirt::Error),
}

/// The instance of a warm VM of `def` called `name`: no job, no token,
/// the hand-off channel, labels that say it is warm, and a default
/// user-data that waits for a job in `kvmbe-handoff` and powers off when
/// the agent is done.
pub fn warm_instance_spec(cfg: &Config, def: usize, name: &str) -> InstanceSpec {
    let a = &cfg.agents[def];
    let queue = a.queue_key();
    let tags = agent_tags(cfg, def, &queue);
    let endpoint = cfg.buildkite.vm_agent_endpoint.clone();
    let vars = BTreeMap::from([
        ("buildkite_agent_token".to_string(), String::new()),
        ("buildkite_agent_endpoint".to_string(), endpoint.clone()),
        ("buildkite_job_id".to_string(), String::new()),
        ("buildkite_agent_tags".to_string(), tags.clone()),
        ("buildkite_queue".to_string(), queue.clone()),
    ]);
    let q = sh_quote;
    let script = format!(
        "#!/bin/sh\n# Written by buildkite-agent-launcher: a warm VM; wait for a job, run it, then power off.\n\
         export BUILDKITE_AGENT_ENDPOINT={endpoint}\n\
         export BUILDKITE_BUILD_PATH=\"${{BUILDKITE_BUILD_PATH:-/var/lib/buildkite-agent/builds}}\"\n\
         kvmbe-handoff -- --tags {tags}\n\
         poweroff\n",
        endpoint = q(&endpoint),
        tags = q(&tags),
    );
    InstanceSpec {
        template: a.template.clone(),
        name: name.to_string(),
        vars,
        default_user_data: Some(script),
        labels: BTreeMap::from([
            (label::LAUNCHER.to_string(), cfg.buildkite.stack_key.clone()),
            (label::DEFINITION.to_string(), a.name.clone()),
            (label::QUEUE.to_string(), queue),
            (label::WARM.to_string(), "1".to_string()),
        ]),
        channels: vec![CHANNEL.to_string()],
    }
}

/// A new warm VM's name: `<definition>-warm-<8 random hex digits>`.
pub fn warm_name(cfg: &Config, def: usize) -> String {
    format!("{}-warm-{}", cfg.agents[def].name, random_hex(8))
}

#[cfg(test)]
mod test;
