//! A deployment belay did not configure: the seed note's layout.
//!
//! Data nodes started from the command line (`redis-server --port P
//! --requirepass X --masterauth X`, replicas with `--replicaof`), no config
//! file, and Sentinels whose own config file has `sentinel auth-pass` for
//! the nodes but **no `requirepass`**: clients use the Sentinels without a
//! password and the nodes with one. That is the most common deployment,
//! and not what [`crate::Lab`] builds (it gives the Sentinels the password
//! too), so tests of `belay status` and of the gateway that must meet
//! deployments as users run them build this one by hand:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use belay_lab::foreign::{SeedDeployment, SeedSpec};
//! let dir = tempfile::tempdir()?;
//! let mut seed = SeedDeployment::start(dir.path(), SeedSpec::default()).await?;
//! let master = seed.master_addr();
//! seed.pause(&master)?;                       // SIGSTOP by pid
//! let new = seed.wait_for_failover(&master, std::time::Duration::from_secs(20)).await?;
//! # Ok(()) }                                  // drop: every process is killed and reaped
//! ```
//!
//! Everything runs on 127.0.0.1, on ports from [`crate::reserve_block`],
//! under the given dir (one sub-dir per process, its working dir and log).
//! Only the timing differs from the note: short Sentinel timers and
//! `repl-diskless-sync-delay 0`, so that tests do not wait for nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use belay_client::sentinel::SentinelAuth;
use belay_client::Auth;
use nix::sys::signal::Signal;

use crate::config::quote;
use crate::error::LabError;
use crate::master::Watch;
use crate::process::{self, Process, ProcessKind, ProcessRecord};
use crate::ready::{self, Expected};
use crate::secrets;
use crate::server::{ServerChoice, ServerPrograms};
use crate::status::{StatusQuery, Target};
use crate::supervisor::Supervisor;

/// The shape of a [`SeedDeployment`]. `Default`: 1 master, 1 replica,
/// 1 Sentinel with quorum 1 (the note's), `down-after-milliseconds` 1000,
/// `failover-timeout` 4000.
#[derive(Clone, Debug)]
pub struct SeedSpec {
    /// Replicas next to the master.
    pub replicas: usize,
    /// Sentinels (none of them has a password).
    pub sentinels: usize,
    /// Sentinels that must agree the master is down.
    pub quorum: usize,
    /// Sentinel `down-after-milliseconds`.
    pub down_after_ms: u64,
    /// Sentinel `failover-timeout`.
    pub failover_timeout_ms: u64,
    /// The name the Sentinels monitor the master under.
    pub master_name: String,
    /// The data nodes' `requirepass` and `masterauth`.
    pub password: String,
    /// How long [`SeedDeployment::start`] waits for replication and the
    /// Sentinels to settle.
    pub ready_timeout: Duration,
    /// Redis or Valkey; `Default` reads `BELAY_TEST_SERVER` (see
    /// [`ServerChoice::for_tests`]).
    pub server: ServerChoice,
    /// The data nodes' program, when named (else the chosen server's own).
    pub redis_server: Option<PathBuf>,
    /// The Sentinels' program, when named.
    pub redis_sentinel: Option<PathBuf>,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            replicas: 1,
            sentinels: 1,
            quorum: 1,
            down_after_ms: 1000,
            failover_timeout_ms: 4000,
            master_name: "mymaster".into(),
            password: "seed-password".into(),
            ready_timeout: Duration::from_secs(30),
            server: ServerChoice::for_tests(),
            redis_server: None,
            redis_sentinel: None,
        }
    }
}

/// A running [`SeedSpec`] deployment. Dropping it SIGKILLs and reaps every
/// process it started; children also get `PR_SET_PDEATHSIG` (like the
/// lab's), so start it from a thread that outlives it — the test's own.
#[derive(Debug)]
pub struct SeedDeployment {
    spec: SeedSpec,
    programs: ServerPrograms,
    dir: PathBuf,
    /// `redis-1` (the initial master), `redis-2`, ..., then `sentinel-1`, ...
    procs: Supervisor,
}

impl SeedDeployment {
    /// Starts the data nodes, waits until every replica is linked, starts
    /// the Sentinels and waits until each knows the master, every replica
    /// and every other Sentinel, and `CKQUORUM` passes. On any failure
    /// everything started so far is killed.
    pub async fn start(dir: &Path, spec: SeedSpec) -> Result<SeedDeployment> {
        if spec.sentinels == 0 || spec.quorum == 0 || spec.quorum > spec.sentinels {
            return Err(LabError::InvalidSpec(format!(
                "a seed deployment needs at least one Sentinel and a quorum between 1 and \
                 the number of Sentinels (got {} Sentinels, quorum {})",
                spec.sentinels, spec.quorum
            ))
            .into());
        }
        let programs = ServerPrograms::find(
            spec.server,
            spec.redis_server.as_deref(),
            spec.redis_sentinel.as_deref(),
        )?;
        secrets::private_dir(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        let nodes = spec.replicas + 1;
        let first = crate::reserve_block((nodes + spec.sentinels) as u16);
        let mut seed = SeedDeployment {
            spec,
            programs,
            dir,
            procs: Supervisor::new(),
        };
        let master_port = first;
        for i in 0..nodes {
            let rec = seed.record(
                format!("redis-{}", i + 1),
                ProcessKind::DataNode,
                first + i as u16,
            );
            let mut cmd = Command::new(&seed.programs.server);
            cmd.args(["--port", &rec.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--requirepass", &seed.spec.password])
                .args(["--masterauth", &seed.spec.password])
                .arg("--dir")
                .arg(&rec.dir)
                .args(["--repl-diskless-sync-delay", "0"]);
            if i > 0 {
                cmd.args(["--replicaof", "127.0.0.1", &master_port.to_string()]);
            }
            seed.spawn(rec, cmd)?;
        }
        seed.wait_ready().await?;
        for i in 0..seed.spec.sentinels {
            let port = first + (nodes + i) as u16;
            let mut rec = seed.record(format!("sentinel-{}", i + 1), ProcessKind::Sentinel, port);
            let conf = rec.dir.join("sentinel.conf");
            secrets::private_dir(&rec.dir)?;
            secrets::write_private(&conf, &seed.sentinel_conf(&rec, master_port))?;
            rec.config = Some(conf.clone());
            let cmd = seed.programs.sentinel.command(&conf);
            seed.spawn(rec, cmd)?;
        }
        seed.wait_ready().await?;
        Ok(seed)
    }

    /// The state dir (one sub-dir per process).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The data nodes' password.
    pub fn password(&self) -> &str {
        &self.spec.password
    }
    /// [`Auth`] for the data nodes.
    pub fn auth(&self) -> Auth {
        Auth::password(&self.spec.password)
    }
    /// How a client logs in to these Sentinels: the nodes' password is
    /// tried, and each Sentinel, having none configured, is used without.
    pub fn sentinel_auth(&self) -> SentinelAuth {
        SentinelAuth::choose(None, Some(self.auth()))
    }
    /// The name the Sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.spec.master_name
    }
    /// The spec it was started with (binaries resolved).
    pub fn spec(&self) -> &SeedSpec {
        &self.spec
    }
    /// Every process: data nodes (`redis-1` first), then Sentinels.
    pub fn processes(&self) -> &[Process] {
        self.procs.all()
    }
    /// `host:port` of the initial master (`redis-1`); after a failover ask
    /// [`SeedDeployment::current_master`].
    pub fn master_addr(&self) -> String {
        self.procs.all()[0].addr()
    }
    /// `host:port` of the initial replicas.
    pub fn replica_addrs(&self) -> Vec<String> {
        self.procs
            .of_kind(ProcessKind::DataNode)
            .skip(1)
            .map(Process::addr)
            .collect()
    }
    /// `host:port` of every Sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.procs
            .of_kind(ProcessKind::Sentinel)
            .map(Process::addr)
            .collect()
    }
    /// The pid of a process (by name, `redis-2`, or `host:port`).
    pub fn pid(&self, node: &str) -> Result<u32> {
        let p = self.procs.get(node)?;
        p.pid()
            .ok_or_else(|| anyhow::anyhow!("{} has no pid (killed)", p.name()))
    }

    /// Freezes a process (SIGSTOP to its pid), like `docker compose pause`,
    /// and returns once the kernel reports it stopped (the signal is
    /// delivered asynchronously).
    pub fn pause(&mut self, node: &str) -> Result<()> {
        self.procs.signal(node, Signal::SIGSTOP)?;
        let pid = self.pid(node)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while process::proc_state(pid) != Some('T') {
            if Instant::now() >= deadline {
                bail!("{node} (pid {pid}) did not stop within 2s of SIGSTOP");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
    /// Thaws a paused process (SIGCONT).
    pub fn resume(&mut self, node: &str) -> Result<()> {
        self.procs.signal(node, Signal::SIGCONT)
    }
    /// Kills a process (SIGKILL, like a crash) and reaps it.
    pub fn kill(&mut self, node: &str) -> Result<()> {
        self.procs.kill(node)
    }

    /// The master a majority of the Sentinels name, confirmed by `ROLE`.
    pub async fn current_master(&self) -> Result<String> {
        self.watch().current_master().await
    }
    /// Waits until a master other than `old_master` is agreed on and
    /// confirmed; returns its address.
    pub async fn wait_for_failover(&self, old_master: &str, timeout: Duration) -> Result<String> {
        self.watch().wait_for_failover(old_master, timeout).await
    }
    /// Waits until `node` says it is a replica of `master` with its link up.
    pub async fn wait_until_replica_of(
        &self,
        node: &str,
        master: &str,
        timeout: Duration,
    ) -> Result<()> {
        let addr = self.procs.get(node)?.addr();
        self.watch()
            .wait_until_replica_of(node, &addr, master, timeout)
            .await
    }

    /// What `belay status --sentinel … --password <password>` asks.
    pub fn status_query(&self) -> StatusQuery {
        StatusQuery {
            master_name: self.spec.master_name.clone(),
            auth: Some(self.auth()),
            sentinel_auth: self.sentinel_auth(),
            sentinels: self
                .sentinel_addrs()
                .into_iter()
                .map(|addr| Target {
                    addr,
                    ..Target::default()
                })
                .collect(),
            ..StatusQuery::default()
        }
    }

    // ---- internals -------------------------------------------------------

    fn record(&self, name: String, kind: ProcessKind, port: u16) -> ProcessRecord {
        let dir = self.dir.join(&name);
        let log = dir.join(match kind {
            ProcessKind::Sentinel => "sentinel.log",
            _ => "redis.log",
        });
        ProcessRecord {
            name,
            kind,
            host: "127.0.0.1".into(),
            port,
            admin_port: None,
            dir,
            config: None,
            log,
            pid: None,
            start_time: None,
        }
    }

    fn spawn(&mut self, rec: ProcessRecord, cmd: Command) -> Result<()> {
        self.procs.start(rec, cmd, false, &crate::NoProgress)
    }

    /// The seed note's `sentinel.conf`: `sentinel auth-pass` for the nodes,
    /// no `requirepass` of its own. Bound to loopback (the note has no
    /// `bind`; tests do not listen on the network).
    fn sentinel_conf(&self, rec: &ProcessRecord, master_port: u16) -> String {
        let name = &self.spec.master_name;
        let mut c = String::new();
        let _ = writeln!(c, "port {}", rec.port);
        let _ = writeln!(c, "bind 127.0.0.1");
        let _ = writeln!(c, "daemonize no");
        let _ = writeln!(c, "dir {}", quote(&rec.dir.display().to_string()));
        let _ = writeln!(
            c,
            "sentinel monitor {name} 127.0.0.1 {master_port} {}",
            self.spec.quorum
        );
        let _ = writeln!(
            c,
            "sentinel auth-pass {name} {}",
            quote(&self.spec.password)
        );
        let _ = writeln!(
            c,
            "sentinel down-after-milliseconds {name} {}",
            self.spec.down_after_ms
        );
        let _ = writeln!(c, "sentinel parallel-syncs {name} 1");
        let _ = writeln!(
            c,
            "sentinel failover-timeout {name} {}",
            self.spec.failover_timeout_ms
        );
        c
    }

    fn watch(&self) -> Watch<'_> {
        Watch {
            tls: None,
            master_name: &self.spec.master_name,
            sentinels: self.sentinel_addrs(),
            sentinel_auth: self.sentinel_auth(),
            auth: Some(self.auth()),
        }
    }

    /// Waits until what has been started so far is ready (see `ready.rs`),
    /// failing at once when a process exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let (auth, sentinel_auth) = (self.auth(), self.sentinel_auth());
        let named = |kind| {
            self.procs
                .of_kind(kind)
                .map(|p| (p.name().to_string(), p.addr()))
                .collect::<Vec<_>>()
        };
        let exp = Expected {
            tls: None,
            master_name: &self.spec.master_name,
            auth: &auth,
            sentinel_auth: &sentinel_auth,
            master: self.master_addr(),
            data_nodes: named(ProcessKind::DataNode),
            sentinels: named(ProcessKind::Sentinel),
        };
        let exp = &exp;
        self.procs
            .wait_for(
                &self.dir,
                self.spec.ready_timeout,
                &crate::NoProgress,
                || async move {
                    let pending = ready::topology_pending(exp).await;
                    (!pending.is_empty()).then(|| pending.join("; "))
                },
            )
            .await
    }
}

impl Drop for SeedDeployment {
    fn drop(&mut self) {
        // Sentinels first, so that none fails over while the nodes go.
        self.procs.kill_all();
    }
}
