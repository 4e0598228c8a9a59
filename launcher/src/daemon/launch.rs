//! One job's launch, run as a task of its own: wake the host, get the
//! VM's token, then hand the job to a warm VM or to a clone restored
//! from a saved slot, else start a VM; the outcome goes back to the loop
//! as an [`Event`].

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kvmhost::libvirt::channel::Message;
use kvmhost::libvirt::handle::Connection;
use tokio::sync::mpsc;

use crate::config::{Config, Secret};
use crate::hosts::{label, HostRt, Launch};
use crate::metrics::Metrics;
use crate::saved;
use crate::schedule::Job;
use crate::stacks::jat::{self, JatError};
use crate::stacks::Client;
use crate::stages::Kind;
use crate::warm;

use super::events::Event;
use super::{instance_spec, vm_name, Daemon};

/// What a job's VM registers its agent with.
pub(super) enum VmToken {
    /// The same long-lived token for every VM of the definition.
    Shared(Secret),
    /// A job acquisition token, asked for from this client and stack key
    /// right before the start.
    Jat(Client, String),
}

impl Daemon {
    /// Wakes the host, gets the VM's token, then hands the job to warm VM
    /// `warm_vm` if there is one, or to a clone restored from saved slot
    /// `slot`, else (or if the restore or hand-off fails, after removing
    /// that VM) starts a VM for it.
    pub(super) fn spawn_launch(
        &self,
        job: Job,
        queue: String,
        def: usize,
        host: usize,
        token: VmToken,
        (warm_vm, slot): (Option<String>, Option<String>),
    ) {
        let task = LaunchTask {
            cfg: self.cfg.clone(),
            rt: self.hosts[host].clone(),
            tx: self.tx.clone(),
            metrics: self.metrics.clone(),
            job,
            queue,
            def,
            host,
            warm_vm,
            slot,
        };
        tokio::spawn(task.run(token));
    }
}

/// One job's launch on one host.
struct LaunchTask {
    cfg: Arc<Config>,
    rt: Arc<HostRt>,
    tx: mpsc::UnboundedSender<Event>,
    metrics: Arc<Metrics>,
    job: Job,
    queue: String,
    def: usize,
    host: usize,
    /// The warm VM claimed for the job, if any.
    warm_vm: Option<String>,
    /// The saved slot claimed for the job, if any.
    slot: Option<String>,
}

/// The token a VM registers with, as the launch got it.
struct Issued {
    token: Secret,
    /// When it expires (a job acquisition token).
    expires: Option<SystemTime>,
    /// When it was issued (a job acquisition token).
    at: Option<Instant>,
}

impl LaunchTask {
    async fn run(self, token: VmToken) {
        let Some(conn) = self.wake().await else {
            return;
        };
        let Some(issued) = self.token(token).await else {
            return;
        };
        let msg = self.message(&issued.token);
        if let Some(name) = self.slot.clone() {
            if self.restore(&conn, name, &msg, &issued).await {
                return;
            }
        }
        if let Some(vm) = self.warm_vm.clone() {
            if self.hand_to_warm(&conn, vm, &msg, &issued).await {
                return;
            }
        }
        self.cold_start(&conn, &issued).await;
    }

    fn send(&self, ev: Event) {
        let _ = self.tx.send(ev);
    }

    /// A warm VM not handed the job waits for another.
    fn release(&self) {
        if let Some(vm) = &self.warm_vm {
            self.send(Event::WarmReleased { vm: vm.clone() });
        }
        if let Some(name) = &self.slot {
            self.send(Event::SlotReleased {
                host: self.host,
                name: name.clone(),
            });
        }
    }

    fn failed(&self, why: String) {
        self.send(Event::Failed {
            job: self.job.id.clone(),
            host: self.host,
            why,
        });
    }

    fn started(&self, vm: String, kind: Kind, issued: &Issued) {
        self.send(Event::Started {
            job: self.job.id.clone(),
            vm,
            kind,
            token_expires: issued.expires,
            token_at: issued.at,
            at: Instant::now(),
        });
    }

    /// The host's connection once it is awake; `None` (and the job placed
    /// again) when it does not wake.
    async fn wake(&self) -> Option<Connection> {
        let (conn, took) = match self.rt.wake().await.map_err(|e| e.to_string()) {
            Ok(c) => c,
            Err(why) => {
                self.release();
                self.rt
                    .set_failing(why.clone(), self.cfg.launcher.host_retry_after);
                self.failed(why);
                return None;
            }
        };
        self.send(Event::Woke {
            job: self.job.id.clone(),
            host: self.host,
            took,
            at: Instant::now(),
        });
        Some(conn)
    }

    /// The token is asked for only now that the host is awake: it lives
    /// from here to the agent's registration. `None` when none was issued.
    async fn token(&self, token: VmToken) -> Option<Issued> {
        let (client, key) = match token {
            VmToken::Shared(t) => {
                return Some(Issued {
                    token: t,
                    expires: None,
                    at: None,
                })
            }
            VmToken::Jat(client, key) => (client, key),
        };
        let lifetime = jat::lifetime(self.cfg.launcher.boot_timeout);
        let name = &self.cfg.agents[self.def].name;
        let got = client
            .job_acquisition_token(&key, &self.job.id, name, lifetime)
            .await;
        self.metrics
            .job_acquisition_token(got.as_ref().map_or_else(JatError::kind, |_| "issued"));
        match got {
            Ok(t) => Some(Issued {
                token: t.token,
                expires: Some(t.expires_at),
                at: Some(Instant::now()),
            }),
            Err(error) => {
                self.release();
                self.send(Event::NoToken {
                    job: self.job.id.clone(),
                    error,
                });
                None
            }
        }
    }

    /// What a warm VM or a restored clone is handed.
    fn message(&self, token: &Secret) -> Message {
        Message {
            job: self.job.id.clone(),
            token: token.expose().to_string(),
            hostname: vm_name(&self.cfg, self.def, &self.job.id),
            time: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            renew_dhcp: true,
        }
    }

    /// Restores a clone from saved slot `name` and hands it the job;
    /// false (the clone removed, the slot to be checked) when that fails.
    async fn restore(
        &self,
        conn: &Connection,
        name: String,
        msg: &Message,
        issued: &Issued,
    ) -> bool {
        let spec = saved::slot_instance_spec(&self.cfg, self.def, &name);
        let (msg, id) = (msg.clone(), self.job.id.clone());
        let r = conn
            .run(move |h| {
                let took = saved::restore(h, &spec).map_err(|e| e.to_string())?;
                eprintln!(
                    "job {id}: restored {} in {:.2} s",
                    spec.name,
                    took.as_secs_f64()
                );
                if let Err(e) = h.set_instance_label(&spec.name, label::JOB, &id) {
                    eprintln!("job {id}: labelling {} with its job: {e}", spec.name);
                }
                h.hand_off(&spec.name, &msg, saved::HANDOFF_TIMEOUT)
                    .map_err(|e| e.to_string())
            })
            .await;
        let why = match r {
            Ok(Ok(())) => {
                self.started(name, Kind::Saved, issued);
                return true;
            }
            Ok(Err(e)) => e,
            Err(e) => format!("the restore task failed: {e}"),
        };
        let line = format!(
            "job {}: restoring saved slot {name} failed: {why}; starting a VM for the job",
            self.job.id
        );
        let ev = Event::SlotBroken {
            host: self.host,
            name: name.clone(),
        };
        // A clone's removal deletes only its overlay.
        self.give_up(conn, name, &line, "restore", ev).await;
        false
    }

    /// Hands the job to warm VM `vm`; false (the VM removed) when that
    /// fails.
    async fn hand_to_warm(
        &self,
        conn: &Connection,
        vm: String,
        msg: &Message,
        issued: &Issued,
    ) -> bool {
        let (vm2, id, msg) = (vm.clone(), self.job.id.clone(), msg.clone());
        let (cfg, def) = (self.cfg.clone(), self.def);
        let r = conn
            .run(move |h| {
                // One from an older template is never handed a job.
                warm::check_version(h, &cfg, def, &vm2).map_err(|e| e.to_string())?;
                // Labelled first: a launcher restarted meanwhile
                // counts it as the job's VM, not as a warm one.
                if let Err(e) = h.set_instance_label(&vm2, label::JOB, &id) {
                    eprintln!("job {id}: labelling {vm2} with its job: {e}");
                }
                h.hand_off(&vm2, &msg, warm::HANDOFF_TIMEOUT)
                    .map_err(|e| e.to_string())
            })
            .await;
        let why = match r {
            Ok(Ok(())) => {
                self.started(vm, Kind::Warm, issued);
                return true;
            }
            Ok(Err(e)) => e,
            Err(e) => format!("the hand-off task failed: {e}"),
        };
        let line = format!(
            "job {}: handing it to warm {vm} failed: {why}; removing {vm} and starting a VM for the job",
            self.job.id
        );
        let ev = Event::WarmRemoved { vm: vm.clone() };
        self.give_up(conn, vm, &line, "handoff", ev).await;
        false
    }

    /// How a failed restore or hand-off ends: logs `line`, counts an
    /// error of `kind`, removes `vm` (one already gone is no error) and
    /// reports `ev` to the loop.
    async fn give_up(&self, conn: &Connection, vm: String, line: &str, kind: &str, ev: Event) {
        eprintln!("{line}");
        self.metrics.error(kind);
        let vm2 = vm.clone();
        if let Ok(Err(e)) = conn.run(move |h| h.remove_instance(&vm2)).await {
            if !e.is_not_found() {
                eprintln!("removing {vm}: {e}");
            }
        }
        self.send(ev);
    }

    /// Starts a VM for the job.
    async fn cold_start(&self, conn: &Connection, issued: &Issued) {
        let (cfg, rt) = (&self.cfg, &self.rt);
        let spec = instance_spec(cfg, self.def, &self.job, &self.queue, &issued.token);
        let rt2 = rt.clone();
        let id = self.job.id.clone();
        let r = conn
            .run(move |c| crate::hosts::launch(&rt2, c, &spec, &id))
            .await;
        let (job, host) = (self.job.id.clone(), self.host);
        let why = match r {
            Ok(Launch::Started(inst)) => {
                self.started(inst.name, Kind::Cold, issued);
                return;
            }
            Ok(Launch::Full(why)) => {
                self.send(Event::Full { job, host, why });
                return;
            }
            Ok(Launch::Duplicate(vm)) => {
                self.send(Event::Duplicate { job, vm });
                return;
            }
            Ok(Launch::Unknown { vm, why }) => {
                rt.set_failing(
                    format!("the connection died while starting {vm}: {why}"),
                    cfg.launcher.host_retry_after,
                );
                self.send(Event::StartUnknown {
                    job,
                    host,
                    vm,
                    why,
                    token_expires: issued.expires,
                });
                return;
            }
            Ok(Launch::Failed(why)) => why,
            Err(e) => format!("the start task failed: {e}"),
        };
        rt.set_failing(
            format!("could not start a VM: {why}"),
            cfg.launcher.host_retry_after,
        );
        self.failed(why);
    }
}
