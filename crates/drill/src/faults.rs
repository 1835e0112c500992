//! The faults a drill injects, each on the node that is master *when the
//! fault starts* (asked live, never assumed), and how each is undone.
//!
//! | kind | inject | heal |
//! |---|---|---|
//! | pause | SIGSTOP the master (`docker compose pause`) | SIGCONT |
//! | kill | SIGKILL the master | restart it with the same config |
//! | partition | DROP packets master ↔ Sentinels and replicas | remove the rules |
//! | partition-with-replica | the same for the master and one replica together | remove the rules |
//! | sentinel-loss | SIGKILL one Sentinel, then SIGSTOP the master | SIGCONT, restart the Sentinel |
//! | manual | `SENTINEL FAILOVER` | nothing to undo |
//!
//! [`ActiveFault`] is the undo: dropping it (an error, a panic, Ctrl-C)
//! resumes what was paused and removes partition rules at once, so a drill
//! never leaves a frozen master or a cut network behind. Restarting killed
//! processes needs the `Lab` and is done by [`mend`].

use std::time::Duration;

use anyhow::{bail, Context, Result};
use belay_client::sentinel::SentinelAuth;
use belay_client::switchover::Switchover;
use belay_client::Connection;
use belay_lab::{Lab, ProcessKind};
use rand::Rng;
use serde::Serialize;

use crate::partition::{Endpoint, Partition};

/// Which fault a drill injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Freeze the master (SIGSTOP) for --fault-for, then thaw it (SIGCONT).
    Pause,
    /// Kill the master (SIGKILL); restart it after --fault-for.
    Kill,
    /// Cut the master off from the Sentinels and replicas for --fault-for;
    /// clients still reach it.
    Partition,
    /// Cut the master and one replica off together from the Sentinels and
    /// the other replicas for --fault-for (the two still reach each other,
    /// clients reach both): the edge of durable writes, where the replica
    /// that confirmed a write is lost with the master.
    PartitionWithReplica,
    /// Kill one Sentinel, then pause the master: the other two must fail over.
    SentinelLoss,
    /// `SENTINEL FAILOVER`: a planned switch under load.
    Manual,
    /// `belay switchover`: writes paused on the master, the replica caught
    /// up, then `SENTINEL FAILOVER`, the old master made a replica, writes
    /// resumed — a planned switch clients should not notice.
    Switchover,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Pause,
        FaultKind::Kill,
        FaultKind::Partition,
        FaultKind::SentinelLoss,
        FaultKind::Manual,
        FaultKind::Switchover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Pause => "pause",
            FaultKind::Kill => "kill",
            FaultKind::Partition => "partition",
            FaultKind::PartitionWithReplica => "partition-with-replica",
            FaultKind::SentinelLoss => "sentinel-loss",
            FaultKind::Manual => "manual",
            FaultKind::Switchover => "switchover",
        }
    }

    /// Whether the fault lasts (--fault-for applies) or is a single act.
    pub fn has_duration(self) -> bool {
        !matches!(self, FaultKind::Manual | FaultKind::Switchover)
    }
}

/// What was done, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// The master when the fault started (`redis-1`, `127.0.0.2:7000`).
    pub master: String,
    pub master_addr: String,
    /// Each action with its time (ms on the drill clock).
    pub steps: Vec<(f64, String)>,
    pub injected_ms: f64,
    pub healed_ms: Option<f64>,
    /// The iptables comment of the partition's rules (partition drill).
    pub partition_tag: Option<String>,
}

/// How to undo a fault that is in force.
#[derive(Debug)]
pub struct ActiveFault {
    /// Processes stopped with SIGSTOP: `(name, pid)`.
    paused: Vec<(String, u32)>,
    /// Processes killed, to restart on heal: names.
    killed: Vec<String>,
    partition: Option<Partition>,
}

impl Drop for ActiveFault {
    fn drop(&mut self) {
        for (_, pid) in self.paused.drain(..) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        // The partition's own Drop removes its rules.
        self.partition.take();
    }
}

/// Injects `kind` on the current master. `log` receives each step.
pub async fn inject(
    lab: &mut Lab,
    kind: FaultKind,
    rng: &mut impl Rng,
    mut log: impl FnMut(String),
) -> Result<(FaultRecord, ActiveFault)> {
    let master_addr = lab
        .current_master()
        .await
        .context("finding the master to break")?;
    let master = lab
        .process_by_addr(&master_addr)
        .map(|p| p.name().to_string())
        .with_context(|| format!("the master {master_addr} is not one of the lab's processes"))?;
    let mut active = ActiveFault {
        paused: Vec::new(),
        killed: Vec::new(),
        partition: None,
    };
    let mut record = FaultRecord {
        kind,
        master: master.clone(),
        master_addr: master_addr.clone(),
        steps: Vec::new(),
        injected_ms: 0.0,
        healed_ms: None,
        partition_tag: None,
    };
    match kind {
        FaultKind::Pause => {
            pause(lab, &master, &mut active)?;
            log(format!("paused {master} ({master_addr}) with SIGSTOP"));
        }
        FaultKind::Kill => {
            lab.kill(&master)?;
            active.killed.push(master.clone());
            log(format!("killed {master} ({master_addr}) with SIGKILL"));
        }
        FaultKind::Partition => {
            let node = endpoint(lab, &master)?;
            let others = topology_but(lab, &[&master]);
            let part = Partition::isolate(&node, &others)?;
            log(format!(
                "partitioned {master} ({master_addr}) from {} Sentinels and replicas (iptables, comment {})",
                others.len(),
                part.tag()
            ));
            record.partition_tag = Some(part.tag().to_string());
            active.partition = Some(part);
        }
        FaultKind::PartitionWithReplica => {
            let replicas: Vec<String> = lab
                .data_nodes()
                .iter()
                .map(|p| p.name().to_string())
                .filter(|n| *n != master)
                .collect();
            if replicas.len() < 2 {
                bail!("partition-with-replica needs at least 2 replicas: one cut off with the master, one to promote");
            }
            let partner = replicas[rng.gen_range(0..replicas.len())].clone();
            let group = [endpoint(lab, &master)?, endpoint(lab, &partner)?];
            let others = topology_but(lab, &[&master, &partner]);
            let part = Partition::isolate_group(&group, &others)?;
            log(format!(
                "partitioned {master} ({master_addr}) and its replica {partner} together from {} Sentinels and replicas (iptables, comment {})",
                others.len(),
                part.tag()
            ));
            record.partition_tag = Some(part.tag().to_string());
            active.partition = Some(part);
        }
        FaultKind::SentinelLoss => {
            let sentinels: Vec<String> = lab
                .sentinels()
                .iter()
                .map(|p| p.name().to_string())
                .collect();
            let victim = sentinels[rng.gen_range(0..sentinels.len())].clone();
            lab.kill(&victim)?;
            active.killed.push(victim.clone());
            log(format!("killed {victim} with SIGKILL"));
            pause(lab, &master, &mut active)?;
            log(format!("paused {master} ({master_addr}) with SIGSTOP"));
        }
        FaultKind::Manual => {
            let reply = manual_failover(lab).await?;
            log(format!("SENTINEL FAILOVER: {reply}"));
        }
        FaultKind::Switchover => {
            let mut plan = Switchover::new(lab.master_name(), lab.sentinel_addrs());
            plan.tls = lab.tls().cloned();
            plan.node_auth = Some(lab.auth());
            plan.sentinel_auth = SentinelAuth::NodeCredentials(lab.auth());
            // Each step on the drill's clock as it happens.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let run = tokio::spawn(async move {
                plan.run(&|s| {
                    let _ = tx.send(s.to_string());
                })
                .await
            });
            while let Some(step) = rx.recv().await {
                log(format!("switchover: {step}"));
            }
            let report = run.await?.context("the switchover")?;
            log(format!(
                "switchover: {} -> {}, writes paused on the old master for {} ms",
                report.old_master,
                report.new_master,
                report.writes_paused.as_millis()
            ));
        }
    }
    Ok((record, active))
}

/// Undoes a fault: resumes, restarts, removes rules.
pub fn heal(lab: &mut Lab, mut active: ActiveFault, mut log: impl FnMut(String)) -> Result<()> {
    for (name, _) in std::mem::take(&mut active.paused) {
        lab.resume(&name)?;
        log(format!("resumed {name} with SIGCONT"));
    }
    if let Some(p) = active.partition.take() {
        let tag = p.tag().to_string();
        let n = p.heal()?;
        log(format!("healed the partition ({n} rules {tag} removed)"));
    }
    // Data nodes first, then Sentinels (the order a real restart would take).
    for name in std::mem::take(&mut active.killed) {
        lab.restart(&name)?;
        log(format!("restarted {name} with the same config"));
    }
    Ok(())
}

/// Puts the lab back in working order after an interrupted drill: thaws
/// stopped processes and restarts dead ones (partition rules are removed by
/// their guard). Safe to call on a healthy lab.
pub fn mend(lab: &mut Lab) -> Vec<String> {
    let mut done = Vec::new();
    let names: Vec<String> = lab
        .processes()
        .iter()
        .filter(|p| is_topology(p.kind()))
        .map(|p| p.name().to_string())
        .collect();
    for name in names {
        let Ok(p) = lab.process(&name) else { continue };
        let pid = p.pid();
        let alive = p.record().is_running();
        if alive && pid.and_then(belay_lab::process::proc_state) == Some('T') {
            if lab.resume(&name).is_ok() {
                done.push(format!("resumed {name}"));
            }
        } else if !alive && lab.restart(&name).is_ok() {
            done.push(format!("restarted {name}"));
        }
    }
    done
}

fn pause(lab: &mut Lab, name: &str, active: &mut ActiveFault) -> Result<()> {
    let pid = lab
        .process(name)?
        .pid()
        .with_context(|| format!("{name} has no pid: is it running?"))?;
    lab.pause(name)?;
    active.paused.push((name.to_string(), pid));
    Ok(())
}

fn endpoint(lab: &Lab, name: &str) -> Result<Endpoint> {
    let p = lab.process(name)?;
    Ok((p.record().host.clone(), p.port()))
}

/// `SENTINEL FAILOVER` on the first Sentinel that accepts it.
async fn manual_failover(lab: &Lab) -> Result<String> {
    let mut why = Vec::new();
    for addr in lab.sentinel_addrs() {
        let r = async {
            let mut c = Connection::connect_with(
                &addr,
                lab.tls(),
                Some(&lab.auth()),
                Duration::from_secs(2),
            )
            .await?;
            c.call_ok(&["SENTINEL", "FAILOVER", lab.master_name()])
                .await
        }
        .await;
        match r {
            Ok(v) => {
                return Ok(format!(
                    "{} accepted ({})",
                    addr,
                    v.to_text().unwrap_or_default()
                ))
            }
            Err(e) => why.push(e.to_string()),
        }
    }
    bail!("no Sentinel accepted SENTINEL FAILOVER: {}", why.join("; "))
}

/// Data nodes and Sentinels: what a drill breaks and mends (not the
/// gateway or the app in front of them).
/// Every data node and Sentinel of the lab but those named `except`.
fn topology_but(lab: &Lab, except: &[&str]) -> Vec<Endpoint> {
    lab.processes()
        .iter()
        .filter(|p| !except.contains(&p.name()) && is_topology(p.kind()))
        .map(|p| (p.record().host.clone(), p.port()))
        .collect()
}

fn is_topology(kind: ProcessKind) -> bool {
    matches!(kind, ProcessKind::DataNode | ProcessKind::Sentinel)
}
