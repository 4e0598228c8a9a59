//! The VM hosts as the daemon sees them: a libvirt connection when the
//! host answers, what runs there, its memory, its templates, and whether
//! it is asleep, being woken, or failing lately. Each host is reached
//! through `kvmhost`'s [`HostHandle`], which opens, wakes and reopens the
//! connection and keeps calls apart where the transport needs it;
//! blocking libvirt calls run on tokio's blocking threads.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvmhost::libvirt::handle::{Connection, HostAddress, HostHandle, OpenError, WakeSpec};
use kvmhost::libvirt::instance::{Instance, InstanceInfo, InstanceSpec, MemoryUse};
use kvmhost::libvirt::{Host, TaskError};
use kvmhost::wake::WakeTarget;

use crate::config::{Config, HostDef};
use crate::schedule::{HostView, Power};

/// Label keys the launcher puts on its instances.
pub mod label {
    /// The launcher's stack key: which launcher deployment made it.
    pub const LAUNCHER: &str = "launcher";
    /// The job it runs.
    pub const JOB: &str = "job";
    /// The agent definition.
    pub const DEFINITION: &str = "definition";
    /// The job's queue.
    pub const QUEUE: &str = "queue";
    /// Set on a warm VM: booted to wait for a job (it has [`JOB`] once handed one).
    pub const WARM: &str = "warm";
    /// Set on a saved slot's instance and its clones (a clone has [`JOB`]
    /// once handed one).
    pub const SAVED: &str = "saved";
    /// Set on a warm VM: the version of the template it was started
    /// from (as a saved slot's, see `Host::slot_version`).
    pub const VERSION: &str = "template-version";
}

/// What a template offers, read from a host.
#[derive(Debug, Clone)]
pub struct TemplateInfo {
    /// Memory of one instance, KiB.
    pub memory_kib: u64,
    /// Pool of its instances' volumes.
    pub pool: String,
}

#[derive(Default)]
struct State {
    // Set by a probe or wake that reached the host: it is awake.
    conn: Option<Connection>,
    waking: bool,
    failing: Option<(Instant, String)>,
    last_probe: Option<Instant>,
    mem: Option<MemoryUse>,
    instances: Vec<InstanceInfo>,
    templates: HashMap<String, Result<TemplateInfo, TemplateError>>,
    last_sweep: Option<Instant>,
}

/// One host of the config.
pub struct HostRt {
    /// Its settings.
    pub def: HostDef,
    state: Mutex<State>,
    handle: HostHandle,
    // Held by a probe: one at a time is enough.
    probing: Mutex<()>,
    /// The UUID of a host lock this launcher took and could not release
    /// (the connection died under the start call), removed at the next start.
    left_lock: Mutex<Option<String>>,
    /// This launcher's id (its stack keys' part), named in the locks it
    /// takes: a lock with this id and another process's pid was left by a
    /// launcher before it on the same state file, which no longer runs.
    launcher: String,
    /// Whether such a lock was looked for on this host yet (at its first
    /// start: no earlier process can take one after that).
    predecessor_checked: std::sync::atomic::AtomicBool,
}

/// How often a host that does not answer is tried again without waking it.
const ASLEEP_PROBE_EVERY: Duration = Duration::from_secs(30);

/// How long a volume of a gone instance stays untouched before the sweep
/// removes it: longer than making an instance's volumes and starting it
/// takes, so a VM being started (by any launcher) keeps its volumes.
pub const SWEEP_GRACE: Duration = Duration::from_secs(120);

impl HostRt {
    /// A host not yet contacted; a wake waits up to `wake_timeout` for
    /// it to answer; `launcher` is the launcher's id.
    pub fn new(def: HostDef, wake_timeout: Duration, launcher: &str) -> Arc<Self> {
        let wake = def.wake.as_ref().map(|w| WakeSpec {
            targets: vec![
                WakeTarget::new(w.mac, (w.broadcast, w.port).into()),
                WakeTarget::new(w.mac, (w.broadcast, w.powerwake_port).into()),
            ],
            timeout: wake_timeout,
            interval: Duration::from_secs(1),
        });
        let handle = HostHandle::new(HostAddress {
            uri: def.uri.clone(),
            wake,
        });
        Arc::new(HostRt {
            def,
            state: Mutex::new(State::default()),
            handle,
            probing: Mutex::new(()),
            left_lock: Mutex::new(None),
            launcher: launcher.to_string(),
            predecessor_checked: Default::default(),
        })
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection, if the host answers.
    pub fn conn(&self) -> Option<Connection> {
        self.st().conn.clone()
    }

    /// Marks the host as failing for `for_`, with why (its connection,
    /// if any, stays: a failed VM start says nothing against it).
    pub fn set_failing(&self, why: String, for_: Duration) {
        // A configured retry time may be too long for the clock.
        self.st().failing = Some((kvmhost::deadline::after(for_), why));
    }

    /// True when a probe after `since` read the host and `vm` was not
    /// among its instances: a VM started before then is gone (powered
    /// off, or never started by a call whose answer was lost).
    pub fn lacks_since(&self, vm: &str, since: Instant) -> bool {
        let s = self.st();
        s.conn.is_some()
            && s.last_probe.is_some_and(|t| t > since)
            && !s.instances.iter().any(|i| i.name == vm)
    }

    /// Sets what a probe read now (for tests that have no host to read).
    #[cfg(test)]
    pub async fn set_probed(&self, instances: Vec<InstanceInfo>) {
        let conn = self.handle.try_connect().await.expect("a test host");
        let mut s = self.st();
        s.conn = Some(conn);
        s.instances = instances;
        s.last_probe = Some(Instant::now());
    }

    /// Instances found at the last probe.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        self.st().instances.clone()
    }

    /// A template as last read on this host.
    pub fn template(&self, name: &str) -> Option<Result<TemplateInfo, TemplateError>> {
        self.st().templates.get(name).cloned()
    }

    /// Reads the host's state (never wakes it). A host that did not
    /// answer lately is tried at most every 30 s unless `force`.
    pub fn probe(self: &Arc<Self>, templates: &[String], force: bool) {
        // A probe still running from an earlier pass is enough.
        let Ok(_alone) = self.probing.try_lock() else {
            return;
        };
        let (conn, skip) = {
            let s = self.st();
            let failing = s
                .failing
                .as_ref()
                .is_some_and(|(until, _)| *until > Instant::now());
            let recently = s
                .last_probe
                .is_some_and(|t| t.elapsed() < ASLEEP_PROBE_EVERY);
            (
                s.conn.clone(),
                s.waking || failing || (s.conn.is_none() && recently && !force),
            )
        };
        if skip {
            return;
        }
        let had = conn.is_some();
        let alive = conn.filter(|c| c.is_alive());
        if had && alive.is_none() {
            // The connection died (the host went to sleep, or away): the
            // host is not awake while a new one is tried, which can take
            // seconds for a host that has gone, so no pass in between
            // places a job, or checks a slot, on the dead one.
            self.st().conn = None;
            self.handle.forget();
        }
        let conn = match alive {
            Some(c) => c,
            None => match self.handle.try_connect_blocking() {
                Ok(c) => c,
                Err(e) => {
                    let mut s = self.st();
                    s.conn = None;
                    s.last_probe = Some(Instant::now());
                    s.instances.clear();
                    if self.def.wake.is_none() {
                        s.failing = Some((
                            Instant::now() + ASLEEP_PROBE_EVERY,
                            format!("does not answer and has no wake settings: {e}"),
                        ));
                    }
                    return;
                }
            },
        };
        let read = conn.run_here(|h| -> kvmhost::libvirt::Result<_> {
            let mem = h.memory_use()?;
            let inst = h.instances()?;
            Ok((mem, inst))
        });
        let mut s = self.st();
        s.last_probe = Some(Instant::now());
        match read {
            Ok((mem, inst)) => {
                s.mem = Some(mem);
                s.instances = inst;
                s.failing = None;
                s.conn = Some(conn.clone());
            }
            Err(_) => {
                s.conn = None;
                // The next probe opens a new connection.
                self.handle.forget();
                return;
            }
        }
        let missing: Vec<String> = templates
            .iter()
            .filter(|t| !matches!(s.templates.get(*t), Some(Ok(_))))
            .cloned()
            .collect();
        drop(s);
        for t in missing {
            let info = conn
                .run_here(|h| h.template(&t))
                .map(|spec| TemplateInfo {
                    memory_kib: spec.domain.memory_mib << 10,
                    pool: spec.pool,
                })
                .map_err(|e| {
                    if e.is_not_found() {
                        TemplateError::Missing(t.clone())
                    } else {
                        TemplateError::Unreadable(Arc::new(e))
                    }
                });
            self.st().templates.insert(t, info);
        }
    }

    /// Removes volumes of instances that powered off, at most once a minute.
    pub fn sweep(&self) {
        {
            let mut s = self.st();
            if s.last_sweep
                .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
            {
                return;
            }
            s.last_sweep = Some(Instant::now());
        }
        self.sweep_now(SWEEP_GRACE);
    }

    /// Removes the volumes this host made for its instances that are gone,
    /// untouched for `grace`, in the pools of the templates read from it
    /// (see [`Host::sweep_instance_volumes`]: another host's volumes in a
    /// shared pool, and volumes not named as instance volumes, stay).
    /// Returns `pool/volume` of each one removed.
    pub fn sweep_now(&self, grace: Duration) -> Vec<String> {
        let (conn, pools) = {
            let s = self.st();
            let mut pools: Vec<String> = s
                .templates
                .values()
                .filter_map(|t| t.as_ref().ok().map(|t| t.pool.clone()))
                .collect();
            pools.sort();
            pools.dedup();
            (s.conn.clone(), pools)
        };
        let Some(conn) = conn else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for p in pools {
            if let Ok(gone) = conn.run_here(|h| h.sweep_instance_volumes(&p, grace)) {
                for v in gone {
                    eprintln!(
                        "{}: removed volume {p}/{v} of an instance that is gone",
                        self.def.name
                    );
                    removed.push(format!("{p}/{v}"));
                }
            }
        }
        removed
    }

    /// The host as the scheduling pass sees it; `pending_vms` and
    /// `pending_kib` are launches under way that libvirt does not list yet.
    pub fn view(&self, pending_vms: u32, pending_kib: u64) -> HostView {
        let s = self.st();
        let power = match (&s.failing, s.waking, &s.conn) {
            (Some((until, why)), _, _) if *until > Instant::now() => Power::Failing(why.clone()),
            (_, true, _) => Power::Waking,
            (_, _, Some(_)) => Power::Awake,
            _ if self.def.wake.is_some() => Power::Asleep,
            // Down for now; it may come back, so jobs wait rather than finish.
            _ => Power::Failing("does not answer and has no wake settings".into()),
        };
        let total = s.mem.map(|m| m.total_kib);
        let limit_kib = match (self.def.memory_limit, total) {
            (None, _) => u64::MAX,
            (Some(l), Some(t)) => l.kib(t),
            // Never seen awake: a size limit holds, a share is unknown.
            (Some(crate::config::MemoryLimit::Kib(k)), None) => k,
            (Some(_), None) => u64::MAX,
        };
        let awake = power == Power::Awake;
        HostView {
            power,
            used_kib: if awake {
                s.mem.map(|m| m.in_use_kib).unwrap_or(0)
            } else {
                0
            } + pending_kib,
            limit_kib,
            vms: if awake { s.instances.len() as u32 } else { 0 } + pending_vms,
            max_vms: self.def.max_vms,
        }
    }

    /// Opens the host, waking it first when it sleeps; one wake at a
    /// time per host, others wait for it. Returns the connection and how
    /// long the wake took (zero when it was awake).
    pub async fn wake(self: &Arc<Self>) -> Result<(Connection, Duration), WakeError> {
        // One that died since the last probe (the host went to sleep) is
        // no connection: the host is woken.
        if let Some(c) = self.conn().filter(|c| c.is_alive()) {
            return Ok((c, Duration::ZERO));
        }
        if self.def.wake.is_none() {
            return Err(WakeError::NoWakeSettings);
        }
        self.st().waking = true;
        let r = self.handle.connect_timed().await;
        let mut s = self.st();
        s.waking = false;
        match r {
            Ok((c, took)) => {
                s.conn = Some(c.clone());
                s.failing = None;
                Ok((c, took))
            }
            Err(OpenError::Task(e)) => Err(WakeError::Task(e)),
            Err(e) => Err(WakeError::Open(e)),
        }
    }
}

/// Why a template could not be used on a host, as last read there.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplateError {
    /// The host has no template of this name.
    #[error("template '{0}' does not exist there")]
    Missing(String),
    /// Reading it failed.
    #[error(transparent)]
    Unreadable(Arc<kvmhost::libvirt::Error>),
}

/// Why [`HostRt::wake`] gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The host did not answer and cannot be woken.
    #[error("does not answer and has no wake settings")]
    NoWakeSettings,
    /// The task that opens the host did not return.
    #[error("the wake task failed: {0}")]
    Task(TaskError),
    /// The host could not be opened, or woken.
    #[error(transparent)]
    Open(OpenError),
}

/// Name of the host lock launchers take around the room check and the
/// start call (an inactive domain that never runs; see [`kvmhost::libvirt::lock`]).
pub const LOCK_NAME: &str = "buildkite-agent-launcher-lock";
/// How long another launcher must see the lock unchanged before it takes
/// it over (its holder died); a live holder renews it every third of this.
pub const LOCK_HOLD: Duration = Duration::from_secs(120);
/// How long a launcher waits for the lock before placing the job again.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// How a start on a host went.
#[derive(Debug)]
pub enum Launch {
    /// The VM was started.
    Started(Instance),
    /// The host has no room now (counted under the lock, any launcher's VMs).
    Full(String),
    /// A VM for this job already runs there (this or another launcher's).
    Duplicate(String),
    /// The start failed.
    Failed(String),
    /// The connection died during the start call, so whether the VM
    /// (this name) runs is not known: libvirt may have started it before
    /// the answer was lost.
    Unknown {
        /// The VM's name.
        vm: String,
        /// What the call said.
        why: String,
    },
}

/// Starts an instance on `host` if it has room (blocking; run it off the
/// runtime). Under the host's lock, shared by every launcher that starts
/// VMs there whichever machine it runs on: counts the host's instances
/// and memory as libvirt has them now, refuses a second VM for the job,
/// then starts. The lock is released when the start call returns, by
/// which time libvirt lists the new VM, so the next launcher counts it.
pub fn launch(rt: &HostRt, host: &Host, spec: &InstanceSpec, job: &str) -> Launch {
    let def = &rt.def;
    let me = std::process::id();
    let owner = format!(
        "buildkite-agent-launcher {} pid {me} job {job}",
        rt.launcher
    );
    // A lock the launcher before us (same id, from the state file, so it
    // no longer runs) left, killed under a start, would hold every
    // launcher off this host until watched unchanged for LOCK_HOLD.
    if !rt.predecessor_checked.swap(true, Ordering::Relaxed) {
        let gone = |o: &str| left_by_predecessor(o, &rt.launcher, me);
        match host.remove_lock_of(LOCK_NAME, gone) {
            Ok(true) => eprintln!(
                "{}: removed the host lock the launcher before this one left",
                def.name
            ),
            Ok(false) => {}
            Err(e) => {
                rt.predecessor_checked.store(false, Ordering::Relaxed);
                eprintln!(
                    "{}: looking for a host lock left from before: {e}",
                    def.name
                );
            }
        }
    }
    // Our own lock left behind would hold every launcher off this host
    // (us too) until watched unchanged for LOCK_HOLD: remove it first.
    let left = rt
        .left_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(uuid) = left {
        match host.remove_lock(LOCK_NAME, &uuid) {
            Ok(true) => eprintln!("{}: removed the host lock this launcher left", def.name),
            Ok(false) => {}
            Err(e) => {
                *rt.left_lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(uuid);
                return Launch::Failed(format!("the host lock left from before: {e}"));
            }
        }
    }
    let lock = match host.lock(LOCK_NAME, &owner, LOCK_HOLD, LOCK_WAIT) {
        Ok(Ok(l)) => l,
        // Another launcher is starting a VM there (or died doing so).
        Ok(Err(holder)) => {
            return Launch::Full(format!(
                "the host lock is still taken after {} s ({holder})",
                LOCK_WAIT.as_secs()
            ))
        }
        Err(e) => return Launch::Failed(format!("the host lock: {e}")),
    };
    let r = (|| -> Result<Launch, kvmhost::libvirt::Error> {
        let running = host.instances()?;
        if let Some(i) = running
            .iter()
            .find(|i| i.labels.get(label::JOB).map(String::as_str) == Some(job))
        {
            return Ok(Launch::Duplicate(i.name.clone()));
        }
        if let Some(max) = def.max_vms {
            if running.len() >= max as usize {
                return Ok(Launch::Full(format!(
                    "{} of max_vms = {max} VMs run there",
                    running.len()
                )));
            }
        }
        if let Some(limit) = def.memory_limit {
            let mem = host.memory_use()?;
            let vm = host.template(&spec.template)?.domain.memory_mib << 10;
            let cap = limit.kib(mem.total_kib);
            if mem.in_use_kib.saturating_add(vm) > cap {
                return Ok(Launch::Full(format!(
                    "{} MiB in use + {} MiB for the VM > memory_limit {} MiB",
                    mem.in_use_kib >> 10,
                    vm >> 10,
                    cap >> 10
                )));
            }
        }
        Ok(match host.launch_instance(spec) {
            Ok(i) => Launch::Started(i),
            // A dead connection lost the answer, not necessarily the VM
            // (a libvirtd restart or a host that stopped answering).
            Err(e) if !host.is_alive() => Launch::Unknown {
                vm: spec.name.clone(),
                why: e.to_string(),
            },
            Err(e) => Launch::Failed(e.to_string()),
        })
    })();
    // A lock taken over while held (its renewals failed for LOCK_HOLD)
    // means another launcher may have counted without this VM.
    match lock.release() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("{}: job {job}: {e}", def.name);
            if let kvmhost::libvirt::Error::LockLeft { uuid, .. } = e {
                *rt.left_lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(uuid);
            }
        }
    }
    r.unwrap_or_else(|e| Launch::Failed(e.to_string()))
}

/// Whether a host lock's `owner` is a launcher with this `id` in another
/// process than `me`: one before this one on the same state file.
fn left_by_predecessor(owner: &str, id: &str, me: u32) -> bool {
    owner
        .strip_prefix("buildkite-agent-launcher ")
        .and_then(|o| o.strip_prefix(id))
        .and_then(|o| o.strip_prefix(" pid "))
        .and_then(|o| o.split(' ').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid != me)
}

/// The queue-independent names of the templates the config uses.
pub fn templates_of(config: &Config) -> Vec<String> {
    let mut t: Vec<String> = config.agents.iter().map(|a| a.template.clone()).collect();
    t.sort();
    t.dedup();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_host() -> HostDef {
        HostDef {
            name: "h".into(),
            uri: kvmhost::libvirt::Uri::parse("test:///default").unwrap(),
            wake: None,
            memory_limit: None,
            max_vms: None,
            priority: 0,
        }
    }

    #[test]
    fn a_retry_time_too_long_for_the_clock_does_not_panic() {
        let h = HostRt::new(test_host(), Duration::from_secs(1), "ab12cd");
        h.set_failing("down".into(), Duration::MAX);
    }

    /// Starts a VM for `job` from a template that does not exist: not "the
    /// host lock is still taken after 30 s", the start goes on (and fails
    /// on the template) at once.
    fn starts_at_once(rt: &HostRt, conn: &Host, job: &str) {
        let spec = InstanceSpec {
            template: "no-such-template".into(),
            name: format!("linux-{job}"),
            ..Default::default()
        };
        let t0 = Instant::now();
        let r = launch(rt, conn, &spec, job);
        assert!(
            matches!(&r, Launch::Failed(why) if why.contains("no-such-template")),
            "{r:?}"
        );
        assert!(t0.elapsed() < LOCK_WAIT, "waited for the lock");
    }

    /// A host lock held by `owner` that nobody renews or releases, as a
    /// holder that died or lost its connection leaves it; its UUID.
    fn leave_lock(owner: &str) -> String {
        let other = Host::open("test:///default").unwrap();
        let held = other
            .lock(LOCK_NAME, owner, LOCK_HOLD, Duration::ZERO)
            .unwrap()
            .unwrap();
        let uuid = other
            .raw()
            .lookup_domain_by_name(LOCK_NAME)
            .unwrap()
            .uuid_string()
            .unwrap();
        std::mem::forget(held);
        uuid
    }

    /// The test driver's domains are one set for the whole process: the
    /// tests of the host lock take turns.
    static LOCK_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn a_host_lock_this_launcher_could_not_release_is_removed_at_the_next_start() {
        let _turn = LOCK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let conn = Host::open("test:///default").unwrap();
        let rt = HostRt::new(test_host(), Duration::from_secs(1), "ab12cd");
        // A lock of ours still on the host, as a release over a dead
        // connection leaves it (nothing renews it).
        // (Written before locks named the launcher's id.)
        let uuid = leave_lock("buildkite-agent-launcher pid 1 job j0");
        *rt.left_lock.lock().unwrap() = Some(uuid);
        starts_at_once(&rt, &conn, "j1");
        assert!(
            conn.raw().lookup_domain_by_name(LOCK_NAME).is_err(),
            "the lock is still there"
        );
    }

    #[test]
    fn only_a_lock_of_this_launchers_id_from_another_process_is_its_predecessors() {
        let own = "buildkite-agent-launcher ab12cd pid 40 job j";
        assert!(left_by_predecessor(own, "ab12cd", 41));
        assert!(
            !left_by_predecessor(own, "ab12cd", 40),
            "this process's own start"
        );
        assert!(!left_by_predecessor(own, "ab12c", 41), "another id");
        assert!(!left_by_predecessor(
            "buildkite-agent-launcher pid 40 job j",
            "ab12cd",
            41
        ));
        assert!(!left_by_predecessor("someone else", "ab12cd", 41));
    }

    #[test]
    fn a_host_lock_the_launcher_before_this_one_left_is_removed_at_the_first_start() {
        let _turn = LOCK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let conn = Host::open("test:///default").unwrap();
        let rt = HostRt::new(test_host(), Duration::from_secs(1), "ab12cd");
        // Left by a launcher on the same state file, killed under a start.
        leave_lock(&format!(
            "buildkite-agent-launcher ab12cd pid {} job j0",
            std::process::id() + 1
        ));
        starts_at_once(&rt, &conn, "j2");
        assert!(conn.raw().lookup_domain_by_name(LOCK_NAME).is_err());
    }

    #[test]
    fn the_sweep_spares_strangers_and_other_hosts_volumes_and_takes_its_own_leaks() {
        use kvmhost::libvirt::instance::instance_volume_name;
        use kvmhost::libvirt::volume::{VolumeFormat, VolumeSpec};

        // As a probe leaves it: connected, a template whose instances
        // live in the pool (the test driver cannot store a template's
        // files, so its reading is set here).
        let h = HostRt::new(test_host(), Duration::from_secs(1), "ab12cd");
        let conn = h.handle.try_connect_blocking().unwrap();
        {
            let mut s = h.st();
            s.conn = Some(conn.clone());
            let t = TemplateInfo {
                memory_kib: 65536,
                pool: "default-pool".into(),
            };
            s.templates.insert("linux".into(), Ok(t));
        }
        let conn = conn.host().clone();
        let pool = "default-pool";
        let mark = conn.volume_mark().unwrap();
        let ours = [
            instance_volume_name("linux-1", &mark, "disk0.qcow2"),
            instance_volume_name("linux-1", &mark, "seed.iso"),
        ];
        let theirs = [
            "db--inst-data.qcow2".to_string(),
            "bars--inst-data.qcow2".to_string(),
            instance_volume_name("linux-2", "0badc0de", "disk0.qcow2"),
            instance_volume_name("linux-2", "0badc0de", "seed.iso"),
        ];
        for n in ours.iter().chain(&theirs) {
            let spec = VolumeSpec::new(n, 1 << 20, VolumeFormat::Raw);
            conn.create_volume(pool, &spec).unwrap();
        }

        let mut removed = h.sweep_now(Duration::ZERO);
        removed.sort();
        assert_eq!(removed, ours.map(|n| format!("{pool}/{n}")));
        for n in &theirs {
            let v = conn.volume(pool, n).unwrap_or_else(|e| panic!("{n}: {e}"));
            conn.delete_volume(&v.key).unwrap();
        }
    }
}
