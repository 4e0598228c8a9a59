//! VMs kept ready before any job asks: warm VMs booted and waiting, and
//! saved slots to restore clones from.

use crate::hosts::{label, Launch};
use crate::saved;
use crate::schedule::{awake_with_room, commit, DefView, HostView};
use crate::warm;

use super::events::Event;
use super::Daemon;

impl Daemon {
    /// Starts warm VMs for definitions that have fewer than they ask for,
    /// on awake hosts with room left after this pass's decisions
    /// (`hosts` and `defs` as the pass left them), like any VM within
    /// `max_vms`, `memory_limit` and `max_instances`.
    pub(super) fn keep_warm(&mut self, hosts: &mut [HostView], defs: &mut [DefView]) {
        let cfg = self.cfg.clone();
        let now = crate::hours::LocalTime::now();
        for (d, a) in cfg.agents.iter().enumerate() {
            let mem = defs[d].memory_kib;
            // Nothing is known of the template before a host was read.
            if mem == 0 {
                continue;
            }
            for _ in self.warm.kept(d)..a.warm_at(now) as usize {
                if a.max_instances.is_some_and(|m| defs[d].running >= m) {
                    break;
                }
                let room = |h: &usize| awake_with_room(&hosts[*h], *h, &defs[d]);
                let Some(h) = a.hosts.iter().copied().find(room) else {
                    break;
                };
                commit(&mut hosts[h], &mut defs[d], mem);
                self.spawn_warm(d, h);
            }
        }
    }

    fn spawn_warm(&mut self, def: usize, host: usize) {
        let name = warm::warm_name(&self.cfg, def);
        self.warm.starting(&name, def, host);
        let spec = warm::warm_instance_spec(&self.cfg, def, &name);
        let cfg = self.cfg.clone();
        let rt = self.hosts[host].clone();
        let tx = self.tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let (h, d) = (&cfg.hosts[host].name, &cfg.agents[def].name);
            let Some(conn) = rt.conn() else {
                let _ = tx.send(Event::WarmStarted {
                    vm: name,
                    started: false,
                });
                return;
            };
            let rt2 = rt.clone();
            // Its name stands for the job: no VM has it as its job. It is
            // labelled with the template's version, so one started from
            // an older template is never handed a job.
            let r = conn
                .run(move |c| {
                    let mut spec = spec;
                    if let Ok(v) = c.slot_version(&spec) {
                        spec.labels.insert(label::VERSION.to_string(), v);
                    }
                    crate::hosts::launch(&rt2, c, &spec, &spec.name)
                })
                .await;
            let started = match r {
                Ok(Launch::Started(_)) => {
                    eprintln!("warm {name}: started on {h}");
                    metrics.vm_started(h, d, None);
                    true
                }
                Ok(Launch::Unknown { why, .. }) => {
                    eprintln!(
                        "warm {name}: {h}: the start lost its answer ({why}); followed as booting"
                    );
                    rt.set_failing(
                        format!("the connection died while starting {name}: {why}"),
                        cfg.launcher.host_retry_after,
                    );
                    true
                }
                Ok(Launch::Full(why)) => {
                    eprintln!("warm {name}: {h} has no room after all ({why})");
                    false
                }
                Ok(Launch::Duplicate(vm)) => {
                    eprintln!("warm {name}: {h} already runs {vm} under that name");
                    false
                }
                Ok(Launch::Failed(why)) => {
                    eprintln!("warm {name}: {h}: {why}");
                    metrics.start_failed(h);
                    rt.set_failing(
                        format!("could not start a VM: {why}"),
                        cfg.launcher.host_retry_after,
                    );
                    false
                }
                Err(e) => {
                    eprintln!("warm {name}: the start task failed: {e}");
                    false
                }
            };
            let _ = tx.send(Event::WarmStarted { vm: name, started });
        });
    }

    /// Checks (and builds, in the background) the saved slots due on
    /// awake hosts with room for one more VM of the slot's definition
    /// (`hosts` and `defs` as the pass left them): a build boots an
    /// instance until it is saved.
    pub(super) fn keep_saved(&mut self, hosts: &mut [HostView], defs: &mut [DefView]) {
        let cfg = self.cfg.clone();
        let room = |d: usize, h: usize| {
            let fits = defs[d].memory_kib > 0
                && cfg.agents[d]
                    .max_instances
                    .is_none_or(|m| defs[d].running < m)
                && awake_with_room(&hosts[h], h, &defs[d]);
            if fits {
                let mem = defs[d].memory_kib;
                commit(&mut hosts[h], &mut defs[d], mem);
            }
            fits
        };
        for (def, host, name) in self.saved.to_prepare(&self.cfg, &self.hosts, room) {
            let tx = self.tx.clone();
            let Some(conn) = self.hosts[host].conn() else {
                let got = Err(saved::SlotError::NotConnected);
                let _ = tx.send(Event::SlotPrepared { host, name, got });
                continue;
            };
            let spec = saved::slot_instance_spec(&self.cfg, def, &name);
            let boot_timeout = self.cfg.launcher.boot_timeout;
            tokio::spawn(async move {
                let got = conn
                    .run(move |h| saved::prepare(h, &spec, boot_timeout))
                    .await
                    .unwrap_or_else(|e| Err(e.into()));
                let _ = tx.send(Event::SlotPrepared { host, name, got });
            });
        }
    }

    /// Checks, once a minute, that each waiting warm VM was started from
    /// the template as it is now; one that was not is removed (and
    /// replaced by the next pass).
    pub(super) fn check_warm_versions(&mut self) {
        for (vm, def, host) in self.warm.due_for_version_check(std::time::Instant::now()) {
            let Some(conn) = self.hosts[host].conn() else {
                continue;
            };
            let (tx, cfg) = (self.tx.clone(), self.cfg.clone());
            tokio::spawn(async move {
                let vm2 = vm.clone();
                let r = conn
                    .run(move |h| warm::check_version(h, &cfg, def, &vm2))
                    .await;
                if let Ok(Err(e @ warm::VersionError::Older { .. })) = r {
                    let why = e.to_string();
                    let _ = tx.send(Event::WarmStale { vm, host, why });
                }
            });
        }
    }

    /// Asks each booting warm VM whether it waits for a job yet.
    pub(super) fn probe_warm(&mut self) {
        for (vm, host) in self.warm.to_probe() {
            let tx = self.tx.clone();
            let Some(conn) = self.hosts[host].conn() else {
                let _ = tx.send(Event::WarmProbed { vm, ready: false });
                continue;
            };
            tokio::spawn(async move {
                let vm2 = vm.clone();
                let r = conn
                    .run(move |h| h.handoff_ready(&vm2, warm::READY_TIMEOUT))
                    .await;
                let ready = matches!(r, Ok(Ok(())));
                let _ = tx.send(Event::WarmProbed { vm, ready });
            });
        }
    }
}
