//! The processes one handle looks after — started by it, or attached to
//! through `lab.json` — and what is done to them by name: start, pause,
//! resume, kill, restart, notice exits, wait for readiness, stop in order.
//! The Sentinel lab ([`crate::Lab`]), the cluster lab and the seed
//! deployment differ only in how a process's command line is built and
//! what their state file says, so this is the one copy of the rest.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use belay_client::TlsClient;
use nix::sys::signal::Signal;

use crate::error::LabError;
use crate::master::POLL;
use crate::process::{self, Process, ProcessKind, ProcessRecord};
use crate::progress::Progress;
use crate::ready;

/// What [`crate::Lab::stop`] / [`crate::down`] did, process by process.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StopReport {
    /// Stopped by SIGTERM within the grace period: `(name, pid)`.
    pub stopped: Vec<(String, u32)>,
    /// Still running after the grace period, then SIGKILLed.
    pub killed: Vec<(String, u32)>,
    /// Already gone (or its pid now belongs to another process, left alone).
    pub already_gone: Vec<String>,
}

/// A handle's processes, in start order, and whether they outlive it.
#[derive(Debug)]
pub(crate) struct Supervisor {
    processes: Vec<Process>,
    /// Leave the processes running when the handle is dropped (`up
    /// --detach`, attached labs): no kill on drop, no exit checks.
    pub(crate) detached: bool,
}

impl Supervisor {
    /// None yet; they are added by [`Supervisor::start`].
    pub(crate) fn new() -> Supervisor {
        Supervisor {
            processes: Vec::new(),
            detached: false,
        }
    }

    /// The processes another process started, as `lab.json` records them
    /// (detached: dropping the handle leaves them running).
    pub(crate) fn attached(records: Vec<ProcessRecord>) -> Supervisor {
        Supervisor {
            processes: records
                .into_iter()
                .map(|record| Process {
                    record,
                    child: None,
                })
                .collect(),
            detached: true,
        }
    }

    /// Every process, in start order.
    pub(crate) fn all(&self) -> &[Process] {
        &self.processes
    }

    /// What `lab.json` records of each process.
    pub(crate) fn records(&self) -> Vec<ProcessRecord> {
        self.processes.iter().map(|p| p.record.clone()).collect()
    }

    /// The processes of one kind, in start order.
    pub(crate) fn of_kind(&self, kind: ProcessKind) -> impl Iterator<Item = &Process> {
        self.processes.iter().filter(move |p| p.kind() == kind)
    }

    /// The process called `name` or listening on `name` (`host:port`).
    pub(crate) fn get(&self, name: &str) -> Result<&Process> {
        Ok(&self.processes[process::find(&self.processes, name)?])
    }

    /// Starts `rec` with `cmd` (its own session when `detach`), says so,
    /// and adds it to the end.
    pub(crate) fn start(
        &mut self,
        mut rec: ProcessRecord,
        cmd: Command,
        detach: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        let child = process::spawn(&mut rec, cmd, detach)?;
        progress.step(&format!(
            "started {} (pid {}) on {}",
            rec.name,
            child.id(),
            rec.addr()
        ));
        self.processes.push(Process {
            record: rec,
            child: Some(child),
        });
        Ok(())
    }

    /// Sends `sig` to the process called (or listening on) `name`; an
    /// error if it is not running.
    pub(crate) fn signal(&mut self, name: &str, sig: Signal) -> Result<()> {
        process::signal_named(&mut self.processes, name, sig)
    }

    /// Kills a process at once (SIGKILL) and waits until it is gone.
    pub(crate) fn kill(&mut self, name: &str) -> Result<()> {
        let i = process::find(&self.processes, name)?;
        let p = &mut self.processes[i];
        if !p.signal(Signal::SIGKILL)? {
            bail!("{} is not running", p.name());
        }
        wait_gone(p, Duration::from_secs(5))
    }

    /// Starts a process again with `cmd` (built from its record: the same
    /// config file), killing it first if it still runs.
    pub(crate) fn restart(&mut self, name: &str, cmd: Command) -> Result<()> {
        let i = process::find(&self.processes, name)?;
        let p = &mut self.processes[i];
        if p.is_running() {
            p.signal(Signal::SIGKILL)?;
            wait_gone(p, Duration::from_secs(5))?;
        }
        let mut rec = p.record.clone();
        let child = process::spawn(&mut rec, cmd, self.detached)?;
        self.processes[i] = Process {
            record: rec,
            child: Some(child),
        };
        Ok(())
    }

    /// Processes that have exited since the last call: `(name, how)`. For a
    /// supervisor that reports crashes (it does not restart them: drills
    /// break things on purpose).
    pub(crate) fn newly_exited(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in &mut self.processes {
            if p.child.is_some() {
                if let Some(how) = p.exit_status() {
                    out.push((p.name().to_string(), how));
                    // Reaped: forget the handle so it is reported once.
                    p.child = None;
                    p.record.pid = None;
                }
            }
        }
        out
    }

    /// True while at least one process runs.
    pub(crate) fn any_running(&mut self) -> bool {
        self.processes.iter_mut().any(|p| p.is_running())
    }

    /// Fails with [`LabError::ChildExited`] when a process has died.
    fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.processes {
            if let Some(status) = p.exit_status() {
                return Err(LabError::ChildExited {
                    name: p.name().to_string(),
                    status,
                    log: p.log_path().to_path_buf(),
                    tail: p.log_tail(12),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Polls `pending` until it says nothing is missing, failing when a
    /// process exits (unless detached) or `timeout` passes ([`LabError::NotReady`]
    /// naming the state `dir`).
    pub(crate) async fn wait_for<F, Fut>(
        &mut self,
        dir: &Path,
        timeout: Duration,
        progress: &dyn Progress,
        pending: F,
    ) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<String>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.detached {
                self.check_alive()?;
            }
            let Some(pending) = pending().await else {
                return Ok(());
            };
            progress.waiting(&pending);
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    timeout,
                    pending,
                    dir: dir.to_path_buf(),
                }
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the gateway answers `PING` after `AUTH` with `password`.
    pub(crate) async fn wait_gateway(
        &mut self,
        dir: &Path,
        timeout: Duration,
        progress: &dyn Progress,
        tls: Option<&TlsClient>,
        password: &str,
    ) -> Result<()> {
        let gateway = self.of_kind(ProcessKind::Gateway).next();
        let addr = gateway.expect("gateway started").addr();
        self.wait_for(dir, timeout, progress, || {
            ready::gateway_pending(&addr, tls, password)
        })
        .await
    }

    /// Stops every process in [`ProcessKind::stop_rank`] order, each rank
    /// with SIGTERM (paused ones get SIGCONT first), SIGKILL for what still
    /// runs after `grace`. Only pids verified to be the processes started
    /// are signalled.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Result<StopReport> {
        let processes = &mut self.processes;
        let mut report = StopReport::default();
        let last = processes
            .iter()
            .map(|p| p.kind().stop_rank())
            .max()
            .unwrap_or(0);
        for rank in 0..=last {
            let group: Vec<usize> = (0..processes.len())
                .filter(|&i| processes[i].kind().stop_rank() == rank)
                .collect();
            let mut signalled = Vec::new();
            for &i in &group {
                let p = &mut processes[i];
                let pid = p.pid();
                let _ = p.signal(Signal::SIGCONT);
                match (p.signal(Signal::SIGTERM), pid) {
                    (Ok(true), Some(pid)) => signalled.push((i, pid)),
                    (Err(e), _) => return Err(e),
                    _ => report.already_gone.push(p.name().to_string()),
                }
            }
            let deadline = Instant::now() + grace;
            loop {
                let still: Vec<_> = signalled
                    .iter()
                    .filter(|(i, _)| processes[*i].is_running())
                    .collect();
                if still.is_empty() || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for (i, pid) in signalled {
                let p = &mut processes[i];
                let name = p.name().to_string();
                if p.is_running() {
                    p.kill_now();
                    wait_gone(p, Duration::from_secs(5))?;
                    report.killed.push((name, pid));
                } else {
                    report.stopped.push((name, pid));
                }
            }
        }
        Ok(report)
    }

    /// SIGKILLs and reaps every process, last started first (Sentinels
    /// before the nodes they watch, so none fails over meanwhile); SIGKILL
    /// needs no grace.
    pub(crate) fn kill_all(&mut self) {
        for p in self.processes.iter_mut().rev() {
            p.kill_now();
        }
    }
}

/// Waits until `p` has exited (reaped when it is our child; a zombie of
/// someone else's counts as gone).
fn wait_gone(p: &mut Process, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    if let Some(child) = &mut p.child {
        child
            .wait()
            .with_context(|| format!("waiting for {} to exit", p.record.name))?;
        return Ok(());
    }
    while p.record.is_running() {
        if Instant::now() >= deadline {
            bail!(
                "{} (pid {:?}) still runs {timeout:?} after SIGKILL",
                p.record.name,
                p.record.pid
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
