//! A real Redis Cluster on loopback: N shards of a master and its replicas
//! as supervised `redis-server` (or `valkey-server`) children with
//! generated configs under a state dir — for the gateway's cluster tests
//! and for `belay up --cluster`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use belay_lab::cluster::{ClusterLab, ClusterSpec};
//! use std::time::Duration;
//! let dir = tempfile::tempdir()?;
//! let mut lab = ClusterLab::start(ClusterSpec::for_tests(dir.path()), &belay_lab::NoProgress).await?;
//! let old = lab.master_of_slot(0).await?;
//! lab.pause(&old)?;                                   // SIGSTOP
//! let new = lab.wait_for_failover(&old, Duration::from_secs(20)).await?;
//! lab.resume(&old)?;
//! lab.wait_until_replica_of(&old, &new, Duration::from_secs(20)).await?;
//! # Ok(()) }                                          // drop: every node is killed
//! ```
//!
//! Modules: [`spec`] (what to build), `config` (a node's redis.conf),
//! `form` (making the nodes one cluster), [`nodes`] (`CLUSTER NODES`
//! parsed), [`view`] (asking every node), `report` (judging what they
//! say), `wait` (the waits: whole, failed over, following a master).
//! Processes, their supervision, ports, secrets and the state file are
//! the Sentinel lab's ([`crate::process`], `crate::supervisor`,
//! [`crate::ports`], [`crate::secrets`], [`crate::state`]); `lab.json`
//! says `"kind": "cluster"`.

mod config;
mod form;
pub mod nodes;
mod report;
pub mod spec;
pub mod view;
mod wait;

pub use spec::ClusterSpec;
pub use view::{ClusterQuery, ClusterReport, GatewayCheck, NodeView, ReplicaView, ShardView};

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use belay_client::Auth;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::process::{self, Process, ProcessKind, ProcessRecord, GATEWAY_ENV};
use crate::progress::Progress;
use crate::state::{self, LabKind, STATE_VERSION};
use crate::status::Target;
use crate::supervisor::{StopReport, Supervisor};
use crate::{ports, secrets};

/// How to get the gateway's program (the `belay` binary).
const BUILD_BELAY: &str = "cargo build --release -p belay";

/// Deadline of each call the lab's own checks make: a paused node costs
/// this much per poll.
const PROBE_TIMEOUT: Duration = Duration::from_millis(600);

/// Contents of a cluster lab's `lab.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub version: u32,
    /// Always [`LabKind::Cluster`]: what tells `belay status`/`down` which
    /// lab this is.
    pub kind: LabKind,
    /// The spec the cluster was started with (without the password).
    pub spec: ClusterSpec,
    /// Every process, with its current pid.
    pub processes: Vec<ProcessRecord>,
    /// Pid of the `belay up` supervising it in the foreground.
    pub supervisor_pid: Option<u32>,
    /// `starting` until the cluster was ready, then `ready`.
    pub phase: String,
}

/// The cluster lab recorded in `dir`, if any.
pub fn recorded_state(dir: &Path) -> Result<Option<ClusterState>> {
    match state::recorded_kind(dir)? {
        Some(LabKind::Cluster) => {}
        Some(LabKind::Sentinel) => bail!(
            "the lab in {} is a Sentinel lab, not a Redis Cluster one",
            dir.display()
        ),
        None => return Ok(None),
    }
    let text = state::read_state(dir)?.unwrap_or_default();
    let s = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a belay cluster lab state file (delete it if no lab is running)",
            state::state_path(dir).display()
        )
    })?;
    Ok(Some(s))
}

/// Stops the cluster lab recorded in `dir` (`belay down`).
pub async fn down(dir: &Path, grace: Duration) -> Result<StopReport> {
    ClusterLab::attach(dir)?.stop(grace).await
}

/// A running cluster: its spec, its password and its processes.
///
/// Dropping a `ClusterLab` that is not detached kills (SIGKILL) and reaps
/// every process it started and removes `lab.json`.
pub struct ClusterLab {
    spec: ClusterSpec,
    password: String,
    /// Its processes, and whether they outlive it.
    procs: Supervisor,
}

impl ClusterLab {
    /// Starts the cluster described by `spec` and returns once it is ready:
    /// every node says `cluster_state:ok`, knows every other node and sees
    /// the same slot map covering all 16384 slots, every replica is linked
    /// to its master; then the gateway (if any) answers `PING`.
    ///
    /// A state dir whose nodes already formed a cluster (`belay up --cluster`
    /// again after `belay down`) is started as it is: each node rejoins from
    /// its `nodes.conf`, with its data. Otherwise the nodes are made one
    /// cluster (see `form`). If a child exits or readiness times out,
    /// everything started is killed. Children are tied to the starting
    /// thread (`PR_SET_PDEATHSIG`) unless `spec.detach`, as with [`crate::Lab::start`].
    pub async fn start(mut spec: ClusterSpec, progress: &dyn Progress) -> Result<ClusterLab> {
        spec.validate()?;
        spec.program = Some(crate::server::find_server(
            spec.server,
            spec.redis_server.as_deref(),
        )?);
        if let Some(gw) = &mut spec.gateway {
            gw.exe = process::resolve_binary(&gw.exe, "--gateway-exe", BUILD_BELAY)?;
        }
        // 0700: the configs hold the password, and nodes rewrite theirs.
        secrets::private_dir(&spec.dir)
            .with_context(|| format!("preparing the state dir {}", spec.dir.display()))?;
        spec.dir = std::fs::canonicalize(&spec.dir)
            .with_context(|| format!("resolving {}", spec.dir.display()))?;
        state::clear_stale(&spec.dir, progress)?;

        let mut plan = spec.plan();
        let mut reassigned = 0;
        while let Err(e) = check_ports(&spec, &plan) {
            if !(spec.reassign_busy_ports
                && reassigned < 5
                && matches!(e, LabError::PortInUse { .. }))
            {
                return Err(e.into());
            }
            reassigned += 1;
            spec.assign_free_ports();
            plan = spec.plan();
        }
        let password = state::password(&spec.dir, spec.password.as_deref())?;
        spec.password = Some(password.clone());
        let formed = form::earlier_cluster(&spec, &plan)?;
        for rec in &plan {
            secrets::private_dir(&rec.dir)?;
            if let Some(path) = &rec.config {
                secrets::write_private(path, &config::node_conf(&spec, rec, &password))?;
            }
        }

        let timeout = Duration::from_millis(spec.ready_timeout_ms);
        let detach = spec.detach;
        let mut lab = ClusterLab {
            spec,
            password,
            procs: Supervisor::new(),
        };
        for rec in plan.iter().filter(|r| r.kind == ProcessKind::DataNode) {
            lab.spawn_new(rec.clone(), progress)?;
        }
        if formed {
            progress.step("the nodes formed a cluster before: each rejoins from its nodes.conf");
        } else {
            form::form(&mut lab, timeout, progress).await?;
        }
        lab.wait_healthy_inner(timeout, progress).await?;
        if let Some(rec) = plan.iter().find(|r| r.kind == ProcessKind::Gateway) {
            lab.spawn_new(rec.clone(), progress)?;
            lab.wait_gateway(timeout, progress).await?;
        }
        lab.procs.detached = detach;
        lab.save_state("ready")?;
        progress.step("the cluster is ready");
        Ok(lab)
    }

    /// Attaches to the cluster lab recorded in `dir/lab.json` (started by
    /// another process). The returned lab is detached: dropping it leaves
    /// the processes running; [`ClusterLab::stop`] stops them.
    pub fn attach(dir: &Path) -> Result<ClusterLab> {
        let state = recorded_state(dir)?.ok_or_else(|| LabError::NoLab {
            dir: dir.to_path_buf(),
        })?;
        let password = state::read_password(dir)?.ok_or_else(|| {
            anyhow!(
                "{} is missing: cannot talk to the cluster's nodes",
                state::password_path(dir).display()
            )
        })?;
        let mut spec = state.spec;
        spec.password = Some(password.clone());
        Ok(ClusterLab {
            spec,
            password,
            procs: Supervisor::attached(state.processes),
        })
    }

    // ---- what the lab is -------------------------------------------------

    /// The spec it runs with (`password` filled in, `dir` absolute).
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }
    /// The password of every node (and the gateway).
    pub fn password(&self) -> &str {
        &self.password
    }
    /// [`Auth`] for the password.
    pub fn auth(&self) -> Auth {
        Auth::password(&self.password)
    }
    /// Every process, in start order.
    pub fn processes(&self) -> &[Process] {
        self.procs.all()
    }
    /// The cluster's nodes (`node-1` ..; the first `masters` started as masters).
    pub fn nodes(&self) -> Vec<&Process> {
        self.procs.of_kind(ProcessKind::DataNode).collect()
    }
    /// `host:port` of every node.
    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes().iter().map(|p| p.addr()).collect()
    }
    /// `host:port` of the nodes that started as masters: where a cluster
    /// client (the gateway's `--cluster`) starts. Any node would do: the
    /// rest is learned from it, also after failovers.
    pub fn seeds(&self) -> Vec<String> {
        self.spec.seed_addrs()
    }
    /// The gateway, when the lab runs one.
    pub fn gateway(&self) -> Option<&Process> {
        self.procs.of_kind(ProcessKind::Gateway).next()
    }
    /// `host:port` of the gateway.
    pub fn gateway_addr(&self) -> Option<String> {
        self.gateway().map(|p| p.addr())
    }
    /// `host:port` of the gateway's admin endpoint, if the lab chose its port.
    pub fn gateway_admin_addr(&self) -> Option<String> {
        let gw = self.gateway()?.record();
        Some(format!("{}:{}", gw.admin_host(), gw.admin_port?))
    }
    /// The process called `name` (`node-2`, `gateway`) or listening on
    /// `name` (`host:port`).
    pub fn process(&self, name: &str) -> Result<&Process> {
        self.procs.get(name)
    }
    /// True when the lab leaves its processes running when dropped.
    pub fn is_detached(&self) -> bool {
        self.procs.detached
    }

    // ---- breaking and mending ---------------------------------------------

    /// Freezes a node (SIGSTOP): its sockets stay open and silent, so the
    /// others see it stop answering, as with a hung machine. `node` is a
    /// name or an address.
    pub fn pause(&mut self, node: &str) -> Result<()> {
        self.procs.signal(node, Signal::SIGSTOP)
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&mut self, node: &str) -> Result<()> {
        self.procs.signal(node, Signal::SIGCONT)
    }

    /// Kills a node at once (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self, node: &str) -> Result<()> {
        self.procs.kill(node)
    }

    /// Starts a node again with the same config; it rejoins the cluster
    /// from its `nodes.conf` (a master whose slots moved meanwhile comes
    /// back as a replica of the node that took them). A process still
    /// running is killed first.
    pub fn restart(&mut self, node: &str) -> Result<()> {
        let cmd = self.command(self.process(node)?.record());
        self.procs.restart(node, cmd)?;
        if state::state_path(self.dir()).exists() {
            self.save_state("ready")?;
        }
        Ok(())
    }

    // ---- watching ------------------------------------------------------------

    /// The query `belay status` runs: every node, the gateway, the state dir.
    pub fn status_query(&self) -> ClusterQuery {
        let target = |p: &Process| Target {
            name: Some(p.name().to_string()),
            addr: p.addr(),
            pid: p.pid(),
        };
        ClusterQuery {
            nodes: self.nodes().into_iter().map(target).collect(),
            auth: Some(self.auth()),
            gateway: self.gateway().map(target),
            replicas_per_master: self.spec.replicas_per_master,
            state_dir: Some(self.spec.dir.clone()),
            timeout: Duration::from_millis(1500),
        }
    }

    /// What every node (and the gateway) says now, judged.
    pub async fn status(&self) -> ClusterReport {
        view::gather(&self.status_query()).await
    }

    /// The nodes alone, with the lab's short probe deadline.
    async fn nodes_report(&self) -> ClusterReport {
        let mut q = self.status_query();
        q.gateway = None;
        q.state_dir = None;
        q.timeout = PROBE_TIMEOUT;
        view::gather(&q).await
    }

    /// The shards serving slots, by first slot, as most reachable nodes see
    /// them, each replica with what it says itself (role, link, offset).
    pub async fn shards(&self) -> Result<Vec<ShardView>> {
        let r = self.nodes_report().await;
        if !r.nodes.iter().any(|n| n.reachable) {
            bail!("no node of the cluster answers: {}", r.problems.join("; "));
        }
        Ok(r.shards)
    }

    /// `host:port` of the master serving `slot`, as most reachable nodes see it.
    pub async fn master_of_slot(&self, slot: u16) -> Result<String> {
        let r = self.nodes_report().await;
        r.slot_map
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, m)| m.clone())
            .ok_or_else(|| {
                anyhow!(
                    "no master serves slot {slot}: {}",
                    if r.problems.is_empty() {
                        "no node answered".to_string()
                    } else {
                        r.problems.join("; ")
                    }
                )
            })
    }

    /// Processes that have exited since the last call: `(name, how)`.
    pub fn newly_exited(&mut self) -> Vec<(String, String)> {
        self.procs.newly_exited()
    }

    /// True while at least one process of the lab runs.
    pub fn any_running(&mut self) -> bool {
        self.procs.any_running()
    }

    // ---- stopping ------------------------------------------------------------

    /// Leaves the lab running after this handle is dropped.
    pub fn detach(&mut self) -> Result<()> {
        self.procs.detached = true;
        self.save_state("ready")
    }

    /// Stops the gateway, then the nodes (SIGTERM, SIGKILL after `grace`),
    /// and removes `lab.json`. Data, `nodes.conf` and logs stay.
    pub async fn stop(mut self, grace: Duration) -> Result<StopReport> {
        let report = self.procs.stop(grace).await?;
        state::remove(self.dir())?;
        self.procs.detached = true;
        Ok(report)
    }

    // ---- internals -----------------------------------------------------------

    fn command(&self, rec: &ProcessRecord) -> Command {
        match rec.kind {
            ProcessKind::Gateway => gateway_command(&self.spec, rec, &self.password),
            _ => {
                let mut cmd = Command::new(self.spec.program());
                cmd.arg(rec.config.as_ref().expect("nodes have a config"));
                cmd
            }
        }
    }

    fn spawn_new(&mut self, rec: ProcessRecord, progress: &dyn Progress) -> Result<()> {
        let cmd = self.command(&rec);
        self.procs.start(rec, cmd, self.spec.detach, progress)?;
        self.save_state("starting")
    }

    fn save_state(&self, phase: &str) -> Result<()> {
        let mut spec = self.spec.clone();
        spec.password = None;
        let s = ClusterState {
            version: STATE_VERSION,
            kind: LabKind::Cluster,
            spec,
            processes: self.procs.records(),
            supervisor_pid: (!self.procs.detached).then(std::process::id),
            phase: phase.to_string(),
        };
        state::save_json(self.dir(), &s)
    }
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        if self.procs.detached {
            return;
        }
        self.procs.kill_all();
        let _ = state::remove(&self.spec.dir);
    }
}

impl std::fmt::Debug for ClusterLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLab")
            .field("dir", &self.spec.dir)
            .field("processes", &self.procs.all())
            .field("detached", &self.procs.detached)
            .finish_non_exhaustive()
    }
}

/// Fails with [`LabError::PortInUse`] when a node's port, its cluster bus
/// port (port + 10000) or the gateway's ports are taken.
fn check_ports(spec: &ClusterSpec, plan: &[ProcessRecord]) -> Result<(), LabError> {
    ports::check_free(&spec.bind, plan)?;
    for rec in plan.iter().filter(|r| r.kind == ProcessKind::DataNode) {
        let bus = rec.port + 10_000;
        if std::net::TcpListener::bind((rec.host.as_str(), bus)).is_err() {
            return Err(LabError::PortInUse {
                port: bus,
                bind: rec.host.clone(),
                what: format!("{}'s cluster bus", rec.name),
                flag: "--port",
            });
        }
    }
    Ok(())
}

/// `belay gateway --cluster <seed> ... --listen BIND:PORT`, with the
/// password in its environment, like the Sentinel lab's gateway.
fn gateway_command(spec: &ClusterSpec, rec: &ProcessRecord, password: &str) -> Command {
    let gw = spec.gateway.as_ref().expect("gateway spec");
    let mut cmd = Command::new(&gw.exe);
    cmd.arg("gateway");
    for seed in spec.seed_addrs() {
        cmd.arg("--cluster").arg(seed);
    }
    cmd.arg("--listen").arg(rec.addr());
    if let Some(n) = &gw.durable_writes {
        cmd.arg("--durable-writes").arg(n);
    }
    if let Some(read_from) = &gw.read_from {
        cmd.arg("--read-from").arg(read_from);
    }
    if let Some(port) = rec.admin_port {
        cmd.arg("--admin-listen")
            .arg(format!("{}:{port}", rec.admin_host()));
    }
    for var in GATEWAY_ENV {
        cmd.env_remove(var);
    }
    cmd.env("BELAY_PASSWORD", password);
    cmd
}
