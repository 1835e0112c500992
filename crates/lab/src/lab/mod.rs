//! [`Lab`]: a running topology and the handle to operate it — start it,
//! break it (pause, kill), mend it (resume, restart), watch it fail over,
//! and stop it. The same type serves `belay up` (which owns the children),
//! `belay down`/`status` from another shell (attached through `lab.json`),
//! and the gateway's and drills' tests (where `Drop` is the guard that
//! never leaves a redis-server behind).

mod wait;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use belay_client::sentinel::SentinelAuth;
use belay_client::{Auth, TlsClient};
use nix::sys::signal::Signal;

use crate::config;
use crate::error::LabError;
use crate::master::Watch;
use crate::ports;
use crate::process::{self, Process, ProcessKind, ProcessRecord};
use crate::progress::Progress;
use crate::secrets;
use crate::server::ServerPrograms;
use crate::spec::LabSpec;
use crate::state::{self, LabState, STATE_VERSION};
use crate::status::{self, StatusQuery, StatusReport, Target};
use crate::supervisor::{StopReport, Supervisor};

/// How to get the gateway's and the app's program (the `belay` binary).
const BUILD_BELAY: &str = "cargo build --release -p belay";

/// A lab topology: its spec, its password and its processes.
///
/// Dropping a `Lab` that is not detached kills (SIGKILL) and reaps every
/// process it started and removes `lab.json`, so a panicking test or an
/// interrupted start-up leaves nothing behind. Use [`Lab::stop`] for an
/// orderly stop, [`Lab::detach`] to leave the lab running.
pub struct Lab {
    spec: LabSpec,
    password: String,
    /// Its processes, and whether they outlive it (`up --detach`, attached labs).
    procs: Supervisor,
    /// How the lab's own checks reach its nodes, when it runs TLS.
    tls: Option<TlsClient>,
}

impl Lab {
    /// Starts the lab described by `spec` and returns once it is ready (see
    /// `ready.rs`): every replica linked, every Sentinel knowing the master,
    /// all replicas and all other Sentinels, CKQUORUM OK, the gateway
    /// answering PING, the app answering `GET /healthz` with 200.
    ///
    /// Before starting anything it checks the binaries exist, that no lab is
    /// already running in `spec.dir` (a stale `lab.json` is removed) and that
    /// every port is free. If a child exits, readiness times out, or the
    /// returned future is dropped (Ctrl-C), every process started so far is
    /// killed.
    ///
    /// Unless `spec.detach`, children are also tied to the *thread* that
    /// starts them (`PR_SET_PDEATHSIG`): if it exits, they get SIGKILL. Start
    /// a lab from a thread that outlives it — a test's own thread or a tokio
    /// worker — and not from `spawn_blocking` or a lab shared across tests
    /// through a static started by whichever test came first.
    pub async fn start(mut spec: LabSpec, progress: &dyn Progress) -> Result<Lab> {
        spec.validate()?;
        spec.programs = Some(ServerPrograms::find(
            spec.server,
            spec.redis_server.as_deref(),
            spec.redis_sentinel.as_deref(),
        )?);
        if let Some(gw) = &mut spec.gateway {
            gw.exe = process::resolve_binary(&gw.exe, "--gateway-exe", BUILD_BELAY)?;
        }
        if let Some(app) = &mut spec.app {
            app.exe = process::resolve_binary(&app.exe, "--app-exe", BUILD_BELAY)?;
        }
        // 0700: Redis and Sentinel rewrite the config files below as 0644.
        secrets::private_dir(&spec.dir)
            .with_context(|| format!("preparing the state dir {}", spec.dir.display()))?;
        // Make the dir absolute: children run in their own dirs, and config
        // files name paths.
        spec.dir = std::fs::canonicalize(&spec.dir)
            .with_context(|| format!("resolving {}", spec.dir.display()))?;

        state::clear_stale(&spec.dir, progress)?;

        let mut plan = spec.plan();
        let mut reassigned = 0;
        while let Err(e) = ports::check_free(&spec.bind, &plan) {
            // Test ports are reserved a moment before use and can be taken
            // meanwhile; a user's ports are never moved.
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
        let tls = if spec.tls {
            let mut hosts: Vec<String> = plan.iter().map(|r| r.host.clone()).collect();
            hosts.push(spec.bind.clone());
            spec.tls_files().generate(&hosts)?;
            Some(spec.tls_files().client()?)
        } else {
            None
        };
        write_configs(&spec, &plan, &password)?;

        let timeout = Duration::from_millis(spec.ready_timeout_ms);
        let detach = spec.detach;
        let mut lab = Lab {
            spec,
            password,
            procs: Supervisor::new(),
            tls,
        };
        // Data nodes first, and Sentinels only once the replicas are linked:
        // a Sentinel learns the replicas from the master's INFO, which it
        // refreshes only every 10 s, so this order saves that wait.
        let master = lab.spec.initial_master_addr();
        for kind in [ProcessKind::DataNode, ProcessKind::Sentinel] {
            for rec in plan.iter().filter(|r| r.kind == kind) {
                lab.spawn_new(rec.clone(), progress)?;
            }
            lab.wait_ready_inner(Some(master.clone()), timeout, progress)
                .await?;
        }
        if let Some(rec) = plan.iter().find(|r| r.kind == ProcessKind::Gateway) {
            lab.spawn_new(rec.clone(), progress)?;
            lab.wait_gateway(timeout, progress).await?;
        }
        // The app checks the gateway when it starts: it comes last.
        if let Some(rec) = plan.iter().find(|r| r.kind == ProcessKind::App) {
            lab.spawn_new(rec.clone(), progress)?;
            lab.wait_app(timeout, progress).await?;
        }
        lab.procs.detached = detach;
        lab.save_state("ready")?;
        progress.step("the lab is ready");
        Ok(lab)
    }

    /// Attaches to the lab recorded in `dir/lab.json` (started by another
    /// process, e.g. `belay up --detach`). The returned `Lab` is detached:
    /// dropping it leaves the processes running; [`Lab::stop`] stops them.
    pub fn attach(dir: &Path) -> Result<Lab> {
        let state = state::load(dir)?.ok_or_else(|| LabError::NoLab {
            dir: dir.to_path_buf(),
        })?;
        let password = state::read_password(dir)?.ok_or_else(|| {
            anyhow!(
                "{} is missing: cannot talk to the lab's processes",
                state::password_path(dir).display()
            )
        })?;
        let mut spec = state.spec;
        spec.password = Some(password.clone());
        if spec.programs.is_none() {
            // A lab.json from before Valkey: the two paths were the programs.
            if let (Some(server), Some(sentinel)) = (&spec.redis_server, &spec.redis_sentinel) {
                spec.programs = Some(ServerPrograms::recorded(server.clone(), sentinel.clone()));
            }
        }
        let tls = if spec.tls {
            Some(spec.tls_files().client()?)
        } else {
            None
        };
        Ok(Lab {
            tls,
            spec,
            password,
            procs: Supervisor::attached(state.processes),
        })
    }

    // ---- what the lab is -------------------------------------------------

    /// The spec the lab runs with (its `password` is filled in, `dir` absolute).
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }
    /// The state dir.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }
    /// The password of every node and Sentinel (and the gateway).
    pub fn password(&self) -> &str {
        &self.password
    }
    /// [`Auth`] for the lab's password, for [`belay_client::Connection::connect`].
    pub fn auth(&self) -> Auth {
        Auth::password(&self.password)
    }
    /// How to log in to the lab's Sentinels (they require the lab's
    /// password), for [`belay_client::Connection::connect_sentinel`].
    pub fn sentinel_auth(&self) -> SentinelAuth {
        SentinelAuth::Required(self.auth())
    }
    /// TLS to the lab's nodes and Sentinels (and gateway), when it runs
    /// TLS: for [`belay_client::Connection::connect_with`].
    pub fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }
    /// The name the Sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.spec.master_name
    }
    /// Every process, in start order.
    pub fn processes(&self) -> &[Process] {
        self.procs.all()
    }
    /// The data nodes (`redis-1` started as master).
    pub fn data_nodes(&self) -> Vec<&Process> {
        self.procs.of_kind(ProcessKind::DataNode).collect()
    }
    /// The Sentinels.
    pub fn sentinels(&self) -> Vec<&Process> {
        self.procs.of_kind(ProcessKind::Sentinel).collect()
    }
    /// `host:port` of every Sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels().iter().map(|p| p.addr()).collect()
    }
    /// The gateway, when the lab runs one.
    pub fn gateway(&self) -> Option<&Process> {
        self.procs.of_kind(ProcessKind::Gateway).next()
    }
    /// `host:port` of the gateway.
    pub fn gateway_addr(&self) -> Option<String> {
        self.gateway().map(|p| p.addr())
    }
    /// `host:port` of the gateway's admin endpoint (dashboard, metrics),
    /// if the lab chose its port.
    pub fn gateway_admin_addr(&self) -> Option<String> {
        let gw = self.gateway()?.record();
        Some(format!("{}:{}", gw.admin_host(), gw.admin_port?))
    }
    /// The web app, when the lab runs one.
    pub fn app(&self) -> Option<&Process> {
        self.procs.of_kind(ProcessKind::App).next()
    }
    /// The app's address as a browser takes it: `http://host:port/`.
    pub fn app_url(&self) -> Option<String> {
        self.app().map(|p| format!("http://{}/", p.addr()))
    }
    /// The process called `name` (`redis-2`, `sentinel-1`, `gateway`, `app`).
    pub fn process(&self, name: &str) -> Result<&Process> {
        self.procs.get(name)
    }
    /// The process listening on `addr` (`host:port`), e.g. the one
    /// [`Lab::current_master`] names.
    pub fn process_by_addr(&self, addr: &str) -> Option<&Process> {
        self.procs.all().iter().find(|p| p.addr() == addr)
    }
    /// True when the Lab leaves its processes running when dropped.
    pub fn is_detached(&self) -> bool {
        self.procs.detached
    }

    // ---- breaking and mending ---------------------------------------------

    /// Freezes a process (SIGSTOP), like `docker compose pause`: its sockets
    /// stay open and silent. `node` is a name or an address.
    pub fn pause(&mut self, node: &str) -> Result<()> {
        self.procs.signal(node, Signal::SIGSTOP)
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&mut self, node: &str) -> Result<()> {
        self.procs.signal(node, Signal::SIGCONT)
    }

    /// Kills a process at once (SIGKILL, like a crash or `kill -9`) and
    /// waits until it is gone. [`Lab::restart`] brings it back.
    pub fn kill(&mut self, node: &str) -> Result<()> {
        self.procs.kill(node)
    }

    /// Starts a process again with the same config file — which Sentinel
    /// may have rewritten meanwhile (a demoted master comes back with the
    /// `replicaof` line Sentinel gave it), as with a real restart. A process
    /// still running is killed first.
    pub fn restart(&mut self, node: &str) -> Result<()> {
        let cmd = self.command(self.process(node)?.record());
        self.procs.restart(node, cmd)?;
        if state::state_path(self.dir()).exists() {
            self.save_state("ready")?;
        }
        Ok(())
    }

    // ---- watching ------------------------------------------------------------

    /// The master as a client should find it: the address a majority of the
    /// Sentinels give for the master name, confirmed by that node answering
    /// `ROLE` with master.
    pub async fn current_master(&self) -> Result<String> {
        self.watch().current_master().await
    }

    /// Waits until a master other than `old_master` (`host:port`) is agreed
    /// on by the Sentinels and confirmed by `ROLE`; returns its address.
    pub async fn wait_for_failover(&self, old_master: &str, timeout: Duration) -> Result<String> {
        self.watch().wait_for_failover(old_master, timeout).await
    }

    /// Waits until `node` (name or address) says (`ROLE`) it is a replica of
    /// `master` (`host:port`) with its link up.
    pub async fn wait_until_replica_of(
        &self,
        node: &str,
        master: &str,
        timeout: Duration,
    ) -> Result<()> {
        let addr = self.process(node)?.addr();
        self.watch()
            .wait_until_replica_of(node, &addr, master, timeout)
            .await
    }

    fn watch(&self) -> Watch<'_> {
        Watch {
            master_name: &self.spec.master_name,
            sentinels: self.sentinel_addrs(),
            sentinel_auth: self.sentinel_auth(),
            auth: Some(self.auth()),
            tls: self.tls.clone(),
        }
    }

    /// The query `belay status` runs for this lab.
    pub fn status_query(&self) -> StatusQuery {
        let target = |p: &Process| Target {
            name: Some(p.name().to_string()),
            addr: p.addr(),
            pid: p.pid(),
        };
        StatusQuery {
            master_name: self.spec.master_name.clone(),
            auth: Some(self.auth()),
            sentinel_auth: self.sentinel_auth(),
            tls: self.tls.clone(),
            sentinels: self.sentinels().into_iter().map(target).collect(),
            data_nodes: self.data_nodes().into_iter().map(target).collect(),
            gateway: self.gateway().map(target),
            app: self.app().map(target),
            state_dir: Some(self.spec.dir.clone()),
        }
    }

    /// What every node and Sentinel says now (see [`status::gather`]).
    pub async fn status(&self) -> StatusReport {
        status::gather(&self.status_query()).await
    }

    /// Processes that have exited since the last call: `(name, how)`. For a
    /// supervisor that reports crashes (it does not restart them: drills
    /// break things on purpose).
    pub fn newly_exited(&mut self) -> Vec<(String, String)> {
        self.procs.newly_exited()
    }

    /// True while at least one process of the lab runs.
    pub fn any_running(&mut self) -> bool {
        self.procs.any_running()
    }

    // ---- stopping ------------------------------------------------------------

    /// Leaves the lab running after this `Lab` is dropped; records in
    /// `lab.json` that no foreground supervisor watches it any more.
    pub fn detach(&mut self) -> Result<()> {
        self.procs.detached = true;
        self.save_state("ready")
    }

    /// Stops every process in order — app, gateway, Sentinels, data nodes
    /// ([`ProcessKind::stop_rank`]) — each group with SIGTERM (paused ones get SIGCONT first), SIGKILL for what
    /// still runs after `grace`; then removes `lab.json`. Only pids verified
    /// to be the processes the lab started are signalled.
    pub async fn stop(mut self, grace: Duration) -> Result<StopReport> {
        let report = self.procs.stop(grace).await?;
        state::remove(self.dir())?;
        self.procs.detached = true; // nothing left for Drop to do
        Ok(report)
    }

    // ---- internals -----------------------------------------------------------

    fn command(&self, rec: &ProcessRecord) -> Command {
        rec.kind
            .command(&self.spec, rec, &self.sentinel_addrs(), &self.password)
    }

    fn spawn_new(&mut self, rec: ProcessRecord, progress: &dyn Progress) -> Result<()> {
        let cmd = self.command(&rec);
        self.procs.start(rec, cmd, self.spec.detach, progress)?;
        self.save_state("starting")
    }

    fn save_state(&self, phase: &str) -> Result<()> {
        let mut spec = self.spec.clone();
        spec.password = None;
        state::save(
            self.dir(),
            &LabState {
                version: STATE_VERSION,
                spec,
                processes: self.procs.records(),
                supervisor_pid: (!self.procs.detached).then(std::process::id),
                phase: phase.to_string(),
            },
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.procs.detached {
            return;
        }
        self.procs.kill_all();
        let _ = state::remove(&self.spec.dir);
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("dir", &self.spec.dir)
            .field("processes", &self.procs.all())
            .field("detached", &self.procs.detached)
            .finish_non_exhaustive()
    }
}

/// Stops the lab recorded in `dir` (`belay down`): see [`Lab::stop`].
pub async fn down(dir: &Path, grace: Duration) -> Result<StopReport> {
    Lab::attach(dir)?.stop(grace).await
}

/// The lab state recorded in `dir`, if any (for `status`/`down` to tell a
/// running lab from a stale one).
pub fn recorded_state(dir: &Path) -> Result<Option<LabState>> {
    state::load(dir)
}

fn named(ps: &[&Process]) -> Vec<(String, String)> {
    ps.iter()
        .map(|p| (p.name().to_string(), p.addr()))
        .collect()
}

fn write_configs(spec: &LabSpec, plan: &[ProcessRecord], password: &str) -> Result<()> {
    let master_host = spec.data_node_host(0);
    let master = (master_host.as_str(), spec.base_port);
    for (i, rec) in plan.iter().enumerate() {
        secrets::private_dir(&rec.dir)?;
        let text = match rec.kind {
            ProcessKind::DataNode => {
                config::redis_conf(spec, rec, (i > 0).then_some(master), password)
            }
            ProcessKind::Sentinel => config::sentinel_conf(spec, rec, master, password),
            ProcessKind::Gateway | ProcessKind::App => continue,
        };
        let path: &PathBuf = rec.config.as_ref().expect("config path");
        secrets::write_private(path, &text)?;
    }
    Ok(())
}
