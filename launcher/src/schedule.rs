//! One scheduling pass: which waiting job gets which agent definition on
//! which host, and what to do about it. Pure: it reads a snapshot of the
//! hosts and definitions and returns decisions; the daemon acts on them.
//!
//! Jobs are taken by priority (higher first), then oldest first. For each,
//! the definitions whose tags accept the job's rules are tried in config
//! order, and for each definition its hosts in host order, awake hosts
//! before sleeping ones. A host takes a VM while it is under its VM cap
//! and its memory, counted as `virt-launch --mem-limit` counts it (the
//! larger of used memory and the running domains' allocations), stays
//! within the limit with the VM added.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Config;
use crate::hosts::TemplateError;
use crate::rules::{AgentTags, RuleError};

/// A job waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job UUID.
    pub id: String,
    /// `agent_query_rules`.
    pub rules: Vec<String>,
    /// Higher runs first.
    pub priority: i64,
    /// When it was scheduled (RFC 3339; compared as text).
    pub scheduled_at: String,
}

/// What a host can do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Power {
    /// Answers; counts are live.
    Awake,
    /// Sleeping; can be woken.
    Asleep,
    /// A wake is under way.
    Waking,
    /// Failed to wake or start lately; passed over for now.
    Failing(String),
    /// Cannot serve this launcher (no wake settings while asleep, ...).
    Unusable(String),
}

/// A host as the pass sees it.
#[derive(Debug, Clone)]
pub struct HostView {
    /// Its state.
    pub power: Power,
    /// Memory in use, VMs included (KiB).
    pub used_kib: u64,
    /// The limit for new VMs (KiB); `u64::MAX` when none.
    pub limit_kib: u64,
    /// VMs of ours running or starting there.
    pub vms: u32,
    /// The host's VM cap.
    pub max_vms: Option<u32>,
}

/// A definition as the pass sees it.
#[derive(Debug, Clone)]
pub struct DefView {
    /// VMs of this kind running or starting.
    pub running: u32,
    /// Memory of one VM (KiB), from its template; 0 while unknown.
    pub memory_kib: u64,
    /// Hosts whose template for it is missing or broken, with why.
    pub broken_on: HashMap<usize, TemplateError>,
    /// The hosts of its warm VMs that wait for a job, one entry per VM,
    /// in the order they are to be used.
    pub warm: Vec<usize>,
    /// The hosts of its free saved slots, one entry per slot.
    pub saved: Vec<usize>,
}

/// What to do about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Start a VM on an awake host now.
    Start,
    /// Hand the job to a warm VM waiting on an awake host.
    Warm,
    /// Wake the host (or wait for its wake under way), then start the VM.
    Wake,
    /// No room now; look again next pass.
    Wait,
    /// No VM can ever be had for it here: give the job up with a reason.
    Finish,
    /// Not ours to act on (no definition fits, queue paused, VM already coming).
    Skip,
}

/// An agent definition: its index in [`Config::agents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DefId(pub usize);

/// A host: its index in [`Config::hosts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// What to do about a job, with the definition and host it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Start a VM of `def` on `host`, which is awake, now.
    Start {
        /// The definition.
        def: DefId,
        /// The host.
        host: HostId,
    },
    /// Hand the job to a warm VM of `def` waiting on `host`.
    Warm {
        /// The definition.
        def: DefId,
        /// The host.
        host: HostId,
    },
    /// Wake `host` (or wait for its wake under way), then start the VM.
    Wake {
        /// The definition.
        def: DefId,
        /// The host.
        host: HostId,
    },
    /// No room now for the first definition that fits; look again next pass.
    Wait {
        /// The definition considered first.
        def: DefId,
    },
    /// No VM can ever be had for it here: give the job up.
    Finish {
        /// The definition considered first.
        def: DefId,
    },
    /// Not ours to act on (no definition fits, queue paused, VM already coming).
    Skip,
}

/// One decision about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Job UUID.
    pub job: String,
    /// What to do.
    pub verdict: Verdict,
    /// Why, for a person.
    pub reason: String,
}

/// A decision as `--dry-run` prints it: one JSON line with names.
#[derive(Debug, Serialize)]
pub struct DecisionLine<'a> {
    job: &'a str,
    definition: Option<&'a str>,
    host: Option<&'a str>,
    action: Action,
    reason: &'a str,
}

impl Decision {
    /// A job not ours to act on, with why.
    pub fn skip(job: &str, reason: String) -> Self {
        Decision {
            job: job.to_string(),
            verdict: Verdict::Skip,
            reason,
        }
    }

    /// The verdict's kind.
    pub fn action(&self) -> Action {
        match self.verdict {
            Verdict::Start { .. } => Action::Start,
            Verdict::Warm { .. } => Action::Warm,
            Verdict::Wake { .. } => Action::Wake,
            Verdict::Wait { .. } => Action::Wait,
            Verdict::Finish { .. } => Action::Finish,
            Verdict::Skip => Action::Skip,
        }
    }

    /// The definition chosen or considered.
    pub fn def(&self) -> Option<DefId> {
        match self.verdict {
            Verdict::Start { def, .. }
            | Verdict::Warm { def, .. }
            | Verdict::Wake { def, .. }
            | Verdict::Wait { def }
            | Verdict::Finish { def } => Some(def),
            Verdict::Skip => None,
        }
    }

    /// The host chosen.
    pub fn host(&self) -> Option<HostId> {
        match self.verdict {
            Verdict::Start { host, .. }
            | Verdict::Warm { host, .. }
            | Verdict::Wake { host, .. } => Some(host),
            _ => None,
        }
    }

    /// The decision with the names `config` gives its indices.
    pub fn line<'a>(&'a self, config: &'a Config) -> DecisionLine<'a> {
        DecisionLine {
            job: &self.job,
            definition: self.def().map(|d| config.agents[d.0].name.as_str()),
            host: self.host().map(|h| config.hosts[h.0].name.as_str()),
            action: self.action(),
            reason: &self.reason,
        }
    }
}

/// Inputs of a pass that do not change between passes.
#[derive(Debug)]
pub struct Plan<'a> {
    config: &'a Config,
    parsed: Vec<AgentTags>,
}

impl<'a> Plan<'a> {
    /// Prepares passes over `config`'s definitions and hosts.
    pub fn new(config: &'a Config) -> Self {
        Plan {
            parsed: config.agents.iter().map(|a| a.tags.clone()).collect(),
            config,
        }
    }

    /// Decides for each of `jobs`. `hosts` and `defs` (indexed as in the
    /// config) are updated with the VMs the decisions add.
    pub fn pass(
        &self,
        jobs: &[Job],
        hosts: &mut [HostView],
        defs: &mut [DefView],
    ) -> Vec<Decision> {
        let mut order: Vec<&Job> = jobs.iter().collect();
        order.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.scheduled_at.cmp(&b.scheduled_at))
        });
        // Jobs share few distinct rule sets: match each set once.
        let mut matches: HashMap<&[String], Result<Vec<usize>, RuleError>> = HashMap::new();
        // Room only shrinks during a pass: once jobs with some rules must
        // wait (or can never run), later ones with the same rules too.
        let mut settled: HashMap<&[String], Decision> = HashMap::new();
        let mut out = Vec::with_capacity(order.len());
        for job in order {
            if let Some(d) = settled.get(job.rules.as_slice()) {
                out.push(Decision {
                    job: job.id.clone(),
                    ..d.clone()
                });
                continue;
            }
            let fits = matches
                .entry(job.rules.as_slice())
                .or_insert_with(|| self.matching(&job.rules));
            let decision = match fits {
                Err(e) => Decision::skip(&job.id, e.to_string()),
                Ok(list) if list.is_empty() => Decision::skip(
                    &job.id,
                    format!("no [[agent]] has tags for the rules {:?}", job.rules),
                ),
                Ok(list) => self.place(job, list, hosts, defs),
            };
            if matches!(
                decision.verdict,
                Verdict::Wait { .. } | Verdict::Finish { .. } | Verdict::Skip
            ) {
                settled.insert(job.rules.as_slice(), decision.clone());
            }
            out.push(decision);
        }
        out
    }

    fn matching(&self, rules: &[String]) -> Result<Vec<usize>, RuleError> {
        let mut found = Vec::new();
        for (i, tags) in self.parsed.iter().enumerate() {
            if tags.accepts(rules)? {
                found.push(i);
            }
        }
        Ok(found)
    }

    fn place(
        &self,
        job: &Job,
        defs_fit: &[usize],
        hosts: &mut [HostView],
        defs: &mut [DefView],
    ) -> Decision {
        if let Some(d) = self.to_warm(job, defs_fit, hosts, defs) {
            return d;
        }
        if let Some(d) = self.to_saved(job, defs_fit, hosts, defs) {
            return d;
        }
        self.to_cold(job, defs_fit, hosts, defs)
    }

    /// A warm VM already counts against every cap: the first one of a
    /// fitting definition, on a host still usable, takes the job.
    fn to_warm(
        &self,
        job: &Job,
        defs_fit: &[usize],
        hosts: &[HostView],
        defs: &mut [DefView],
    ) -> Option<Decision> {
        for &d in defs_fit {
            let usable = |h: &usize| matches!(hosts[*h].power, Power::Awake);
            if let Some(i) = defs[d].warm.iter().position(usable) {
                let h = defs[d].warm.remove(i);
                return Some(Decision {
                    job: job.id.clone(),
                    verdict: Verdict::Warm {
                        def: DefId(d),
                        host: HostId(h),
                    },
                    reason: format!(
                        "a warm {} VM waits on {}",
                        self.config.agents[d].name, self.config.hosts[h].name
                    ),
                });
            }
        }
        None
    }

    /// A free saved slot restores in about a second, a cold VM boots: the
    /// first slot of a fitting definition on an awake host with room for
    /// its clone (a VM like any other) takes the job, before a cold start
    /// on a host that comes earlier.
    fn to_saved(
        &self,
        job: &Job,
        defs_fit: &[usize],
        hosts: &mut [HostView],
        defs: &mut [DefView],
    ) -> Option<Decision> {
        for &d in defs_fit {
            let def = &self.config.agents[d];
            if def.max_instances.is_some_and(|m| defs[d].running >= m) {
                continue;
            }
            let mem = defs[d].memory_kib;
            let fits = |h: &usize| awake_with_room(&hosts[*h], *h, &defs[d]);
            if let Some(i) = defs[d].saved.iter().position(fits) {
                let h = defs[d].saved.remove(i);
                commit(&mut hosts[h], &mut defs[d], mem);
                return Some(Decision {
                    job: job.id.clone(),
                    verdict: Verdict::Start {
                        def: DefId(d),
                        host: HostId(h),
                    },
                    reason: format!(
                        "a saved {} slot is free on {}",
                        def.name, self.config.hosts[h].name
                    ),
                });
            }
        }
        None
    }

    /// A VM started for the job: the first fitting definition with room
    /// on an awake host, else a sleeping host to wake; else why not.
    fn to_cold(
        &self,
        job: &Job,
        defs_fit: &[usize],
        hosts: &mut [HostView],
        defs: &mut [DefView],
    ) -> Decision {
        let mut temporary: Vec<String> = Vec::new();
        let mut permanent: Vec<String> = Vec::new();
        for &d in defs_fit {
            let def = &self.config.agents[d];
            if let Some(max) = def.max_instances {
                if defs[d].running >= max {
                    temporary.push(format!("{} has its {max} VMs running", def.name));
                    continue;
                }
            }
            let mem = defs[d].memory_kib;
            let mut sleeping: Option<usize> = None;
            for &h in &def.hosts {
                let name = &self.config.hosts[h].name;
                let host = &hosts[h];
                if let Some(why) = defs[d].broken_on.get(&h) {
                    permanent.push(format!("{name}: {why}"));
                    continue;
                }
                match &host.power {
                    Power::Unusable(why) => {
                        permanent.push(format!("{name}: {why}"));
                        continue;
                    }
                    Power::Failing(why) => {
                        temporary.push(format!("{name}: {why}"));
                        continue;
                    }
                    _ => {}
                }
                if mem > host.limit_kib {
                    permanent.push(format!(
                        "{name} may use at most {} MiB, {} needs {} MiB",
                        host.limit_kib >> 10,
                        def.name,
                        mem >> 10
                    ));
                    continue;
                }
                if let Some(max) = host.max_vms {
                    if host.vms >= max {
                        temporary.push(format!("{name} has its {max} VMs"));
                        continue;
                    }
                }
                if host.used_kib.saturating_add(mem) > host.limit_kib {
                    temporary.push(format!(
                        "no host has {} MiB free ({name}: {} MiB)",
                        mem >> 10,
                        host.limit_kib.saturating_sub(host.used_kib) >> 10
                    ));
                    continue;
                }
                if host.power == Power::Awake {
                    commit(&mut hosts[h], &mut defs[d], mem);
                    return Decision {
                        job: job.id.clone(),
                        verdict: Verdict::Start {
                            def: DefId(d),
                            host: HostId(h),
                        },
                        reason: format!("{name} is awake and has room"),
                    };
                }
                sleeping.get_or_insert(h);
            }
            if let Some(h) = sleeping {
                let name = &self.config.hosts[h].name;
                let reason = if hosts[h].power == Power::Waking {
                    format!("{name} is waking; the VM starts when it answers")
                } else {
                    format!("no awake host has room; waking {name}")
                };
                hosts[h].power = Power::Waking;
                commit(&mut hosts[h], &mut defs[d], mem);
                return Decision {
                    job: job.id.clone(),
                    verdict: Verdict::Wake {
                        def: DefId(d),
                        host: HostId(h),
                    },
                    reason,
                };
            }
        }
        let def = DefId(defs_fit[0]);
        if temporary.is_empty() {
            Decision {
                job: job.id.clone(),
                verdict: Verdict::Finish { def },
                reason: format!("no host can ever run it: {}", permanent.join("; ")),
            }
        } else {
            temporary.dedup();
            Decision {
                job: job.id.clone(),
                verdict: Verdict::Wait { def },
                reason: temporary.join("; "),
            }
        }
    }
}

/// Whether host `h` (`host`) is awake, has `def`'s template and room for
/// one more VM of it: under `max_vms` and its memory limit.
pub(crate) fn awake_with_room(host: &HostView, h: usize, def: &DefView) -> bool {
    host.power == Power::Awake
        && !def.broken_on.contains_key(&h)
        && host.max_vms.is_none_or(|m| host.vms < m)
        && host.used_kib.saturating_add(def.memory_kib) <= host.limit_kib
}

/// Counts one more VM of `def` (`mem` KiB) on `host`.
pub(crate) fn commit(host: &mut HostView, def: &mut DefView, mem: u64) {
    host.vms += 1;
    host.used_kib = host.used_kib.saturating_add(mem);
    def.running += 1;
}

#[cfg(test)]
mod test;
