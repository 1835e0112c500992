//! The supervisor's unit: one child process of the lab. [`ProcessKind`] says
//! what it is and how to run it (adding a kind — the gateway, the web app, a
//! dashboard — is one variant here plus its readiness check in `ready.rs`);
//! [`ProcessRecord`] is what `lab.json` remembers about it (enough to find
//! and verify it from another shell); [`Process`] adds the `Child` handle
//! when this process started it.
//!
//! Pids are only ever signalled after checking they still are the process we
//! started (same pid *and* same kernel start time): a pid recycled by the OS
//! is never touched.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::spec::LabSpec;

/// The gateway's environment variables a lab's gateway must not inherit
/// from the user's shell: the lab's flags say everything (and a stray
/// `BELAY_CLUSTER` would clash with `--sentinel`, or `BELAY_SENTINELS` with
/// `--cluster`).
pub(crate) const GATEWAY_ENV: &[&str] = &[
    "BELAY_SENTINELS",
    "BELAY_CLUSTER",
    "BELAY_MASTER_NAME",
    "BELAY_ADMIN_LISTEN",
    "BELAY_NO_ADMIN",
    "BELAY_ADMIN_PASSWORD_FILE",
    "BELAY_DURABLE_WRITES",
    "BELAY_TLS_LISTEN",
    "BELAY_TLS_CERT_FILE",
    "BELAY_TLS_KEY_FILE",
    "BELAY_TLS_CA_FILE",
    "BELAY_BACKEND_TLS",
    "BELAY_BACKEND_TLS_CA_FILE",
    "BELAY_BACKEND_TLS_CERT_FILE",
    "BELAY_BACKEND_TLS_KEY_FILE",
    "BELAY_BACKEND_TLS_SERVER_NAME",
    "BELAY_ZONE",
    "BELAY_NODE_ZONES",
    "BELAY_READ_FROM",
];

/// What a lab process is; decides its command line, its readiness check and
/// its place in the stop order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessKind {
    /// A `redis-server` or `valkey-server` (master or replica: roles
    /// change, the kind doesn't).
    DataNode,
    /// A Sentinel (`redis-sentinel`, `valkey-sentinel`, `valkey-server --sentinel`).
    Sentinel,
    /// `belay gateway`, the RESP proxy in front of the topology.
    Gateway,
    /// `belay app`, the web app (newsroom): a client of the gateway, as
    /// applications are.
    App,
}

impl ProcessKind {
    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            ProcessKind::DataNode => "redis",
            ProcessKind::Sentinel => "sentinel",
            ProcessKind::Gateway => "gateway",
            ProcessKind::App => "app",
        }
    }

    /// Stop order: the application first, then what it uses (the gateway),
    /// then the Sentinels (so they do not fail over while the data nodes
    /// stop), then the data nodes.
    pub fn stop_rank(self) -> u8 {
        match self {
            ProcessKind::App => 0,
            ProcessKind::Gateway => 1,
            ProcessKind::Sentinel => 2,
            ProcessKind::DataNode => 3,
        }
    }

    /// The command that runs a process of this kind in a Sentinel lab.
    /// Binaries must already be resolved (see [`resolve_binary`]). (The
    /// cluster lab builds its nodes' and gateway's commands itself: see
    /// `crate::cluster`.)
    pub(crate) fn command(
        self,
        spec: &LabSpec,
        rec: &ProcessRecord,
        sentinel_addrs: &[String],
        password: &str,
    ) -> Command {
        match self {
            ProcessKind::DataNode => {
                let mut cmd = Command::new(&spec.programs().server);
                cmd.arg(rec.config.as_ref().expect("data nodes have a config"));
                cmd
            }
            ProcessKind::Sentinel => spec
                .programs()
                .sentinel
                .command(rec.config.as_ref().expect("sentinels have a config")),
            ProcessKind::Gateway => {
                let gw = spec.gateway.as_ref().expect("gateway spec");
                let mut cmd = Command::new(&gw.exe);
                cmd.arg("gateway");
                for s in sentinel_addrs {
                    cmd.arg("--sentinel").arg(s);
                }
                cmd.arg("--master-name").arg(&spec.master_name);
                if spec.tls {
                    let tls = spec.tls_files();
                    cmd.arg("--listen").arg("none");
                    cmd.arg("--tls-listen").arg(rec.addr());
                    cmd.arg("--tls-cert-file").arg(tls.server_cert());
                    cmd.arg("--tls-key-file").arg(tls.server_key());
                    cmd.arg("--backend-tls");
                    cmd.arg("--backend-tls-ca-file").arg(tls.ca());
                    cmd.arg("--backend-tls-cert-file").arg(tls.client_cert());
                    cmd.arg("--backend-tls-key-file").arg(tls.client_key());
                } else {
                    cmd.arg("--listen").arg(rec.addr());
                }
                if let Some(n) = &gw.durable_writes {
                    cmd.arg("--durable-writes").arg(n);
                }
                if let Some(zone) = spec.gateway_zone() {
                    cmd.arg("--zone").arg(zone);
                }
                for i in 0..=spec.replicas {
                    if let Some(zone) = spec.data_node_zone(i) {
                        let port = spec.base_port.saturating_add(i as u16);
                        let node = format!("{}:{port}", spec.data_node_host(i));
                        cmd.arg("--node-zone").arg(format!("{node}={zone}"));
                    }
                }
                if let Some(read_from) = &gw.read_from {
                    cmd.arg("--read-from").arg(read_from);
                }
                if let Some(port) = rec.admin_port {
                    cmd.arg("--admin-listen")
                        .arg(format!("{}:{port}", rec.admin_host()));
                }
                // The lab's settings, not whatever the user's shell has.
                for var in GATEWAY_ENV {
                    cmd.env_remove(var);
                }
                cmd.env("BELAY_PASSWORD", password);
                cmd
            }
            ProcessKind::App => {
                let app = spec.app.as_ref().expect("app spec");
                let gw = spec.gateway.as_ref().expect("the app needs the gateway");
                let mut cmd = Command::new(&app.exe);
                cmd.arg("app")
                    .arg("--gateway")
                    .arg(format!("{}:{}", spec.bind, gw.port))
                    .arg("--listen")
                    .arg(rec.addr());
                // The lab's settings, not whatever the user's shell has.
                for var in ["BELAY_PASSWORD_FILE", "BELAY_GATEWAY", "BELAY_APP_LISTEN"] {
                    cmd.env_remove(var);
                }
                cmd.env("BELAY_PASSWORD", password);
                cmd
            }
        }
    }
}

/// What the state file remembers about one process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    /// `redis-1` (the initial master), `redis-2`, ..., `sentinel-1`, ...,
    /// `gateway`, `app`.
    pub name: String,
    pub kind: ProcessKind,
    /// Address it binds to and announces.
    pub host: String,
    pub port: u16,
    /// The gateway's admin endpoint port (on loopback), if the lab chose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_port: Option<u16>,
    /// Its own directory (config, data, log); also its working directory.
    pub dir: PathBuf,
    /// Its config file (none for the gateway and the app, configured by arguments).
    pub config: Option<PathBuf>,
    /// Where its output goes.
    pub log: PathBuf,
    /// Pid of the running process, if started.
    pub pid: Option<u32>,
    /// Kernel start time of that pid (clock ticks since boot, from
    /// `/proc/<pid>/stat`), to tell our process from a recycled pid.
    pub start_time: Option<u64>,
}

impl ProcessRecord {
    /// Where the gateway's admin endpoint listens: its own host if that is
    /// a loopback address, else 127.0.0.1 (the lab gives it no password,
    /// and the gateway refuses to serve it elsewhere without one).
    pub fn admin_host(&self) -> &str {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_loopback() => &self.host,
            _ => "127.0.0.1",
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// True while the recorded pid is alive *and* still the process we
    /// started (not a zombie, same start time).
    pub fn is_running(&self) -> bool {
        match self.pid {
            Some(pid) => is_same_process(pid, self.start_time),
            None => false,
        }
    }
}

/// One process of a lab, as seen by the `Lab` that owns or attached to it.
#[derive(Debug)]
pub struct Process {
    pub(crate) record: ProcessRecord,
    /// Present when this process (the one holding the `Lab`) spawned it:
    /// then we can reap it and read its exit status.
    pub(crate) child: Option<Child>,
}

impl Process {
    pub fn name(&self) -> &str {
        &self.record.name
    }
    pub fn kind(&self) -> ProcessKind {
        self.record.kind
    }
    /// `host:port`.
    pub fn addr(&self) -> String {
        self.record.addr()
    }
    pub fn port(&self) -> u16 {
        self.record.port
    }
    /// Pid of the current incarnation (changes on `restart`).
    pub fn pid(&self) -> Option<u32> {
        self.record.pid
    }
    pub fn log_path(&self) -> &Path {
        &self.record.log
    }
    pub fn config_path(&self) -> Option<&Path> {
        self.record.config.as_deref()
    }
    pub fn dir(&self) -> &Path {
        &self.record.dir
    }
    pub fn record(&self) -> &ProcessRecord {
        &self.record
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.record.log, n)
    }

    /// `Some(description)` once the process has exited (reaping it when it
    /// is our child), `None` while it runs.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(describe_status(status)),
                Ok(None) => None,
                Err(e) => Some(format!("cannot wait for it: {e}")),
            },
            None => {
                if self.record.is_running() {
                    None
                } else {
                    Some("not running".into())
                }
            }
        }
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        self.record.pid.is_some() && self.exit_status().is_none()
    }

    /// Sends `sig` if the process is still the one we started; `Ok(false)`
    /// when it is already gone.
    pub(crate) fn signal(&mut self, sig: Signal) -> Result<bool> {
        if !self.is_running() {
            return Ok(false);
        }
        let pid = self.record.pid.expect("running implies pid");
        kill(Pid::from_raw(pid as i32), sig)
            .with_context(|| format!("sending {sig} to {} (pid {pid})", self.record.name))?;
        Ok(true)
    }

    /// SIGKILL and reap, without waiting on anything but our own child.
    pub(crate) fn kill_now(&mut self) {
        // SIGKILL also ends a stopped (paused) process.
        let _ = self.signal(Signal::SIGKILL);
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
    }
}

/// Starts `cmd` for `rec`: working dir = its dir (0700: it holds the
/// config with the password, which Redis rewrites as 0644), stdin closed, stdout and
/// stderr appended to its log (so a config error printed before the log
/// file is opened is still in the log), in its own process group so a
/// terminal's Ctrl-C reaches only the supervisor, which then stops children
/// in order.
///
/// `detached`: the child starts its own session and outlives us. Otherwise
/// it also gets `PR_SET_PDEATHSIG = SIGKILL`, so even a supervisor killed
/// with SIGKILL (or a test binary that aborts) leaves no orphan. The kernel
/// sends that signal when the *thread* that spawned the child exits, so
/// spawn from a long-lived thread (a tokio worker or the test's thread — not
/// `spawn_blocking`).
pub(crate) fn spawn(rec: &mut ProcessRecord, mut cmd: Command, detached: bool) -> Result<Child> {
    crate::secrets::private_dir(&rec.dir)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&rec.log)
        .with_context(|| format!("opening the log {}", rec.log.display()))?;
    cmd.current_dir(&rec.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if detached {
        // SAFETY: setsid is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
    } else {
        let parent = nix::unistd::getpid();
        cmd.process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL))?;
                // The parent may have died between fork and prctl.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("supervisor exited"));
                }
                Ok(())
            });
        }
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} ({program})", rec.name))?;
    rec.pid = Some(child.id());
    rec.start_time = proc_start_time(child.id());
    Ok(child)
}

/// Finds a program: a path with a `/` must exist and be executable; a bare
/// name is looked up on `PATH`. `flag` names the option that points belay
/// at it, `install` how to get it.
pub fn resolve_binary(
    program: &Path,
    flag: &'static str,
    install: &'static str,
) -> Result<PathBuf, LabError> {
    let name = program.display().to_string();
    if name.contains('/') {
        if is_executable(program) {
            return Ok(program.to_path_buf());
        }
        return Err(LabError::BinaryNotFound {
            program: name.clone(),
            looked: format!("{name} does not exist or is not executable"),
            flag,
            install,
        });
    }
    find_on_path(program).ok_or_else(|| LabError::BinaryNotFound {
        program: name.clone(),
        looked: format!(
            "no executable `{name}` on PATH ({})",
            std::env::var_os("PATH")
                .unwrap_or_default()
                .to_string_lossy()
        ),
        flag,
        install,
    })
}

/// The first executable file named `program` in a directory of `PATH`.
pub fn find_on_path(program: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), `None` if there is no such process.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); field 22 is index 19 from here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The state letter of `pid` (`R`, `S`, `T` stopped, `Z` zombie, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// True when `pid` exists, is not a zombie, and (when known) started at
/// `start_time` — i.e. it is still the process we started.
pub fn is_same_process(pid: u32, start_time: Option<u64>) -> bool {
    match proc_state(pid) {
        None | Some('Z') | Some('X') => false,
        Some(_) => match start_time {
            Some(t) => proc_start_time(pid) == Some(t),
            None => true,
        },
    }
}

/// The last `n` lines of a file, indented, or a note when it is unreadable.
pub fn log_tail(path: &Path, n: usize) -> String {
    let read = || -> std::io::Result<Vec<String>> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
        Ok(lines[lines.len().saturating_sub(n)..].to_vec())
    };
    match read() {
        Ok(lines) if lines.is_empty() => "    (the log is empty)".into(),
        Ok(lines) => lines
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

/// The process called `name` (`redis-1`, `node-2`, `gateway`) or listening
/// on `name` (`host:port`) among `processes`: its index, or an error
/// naming every one there is.
pub(crate) fn find(processes: &[Process], name: &str) -> Result<usize> {
    processes
        .iter()
        .position(|p| p.name() == name || p.addr() == name)
        .ok_or_else(|| {
            LabError::UnknownProcess {
                name: name.to_string(),
                known: processes
                    .iter()
                    .map(|p| format!("{} ({})", p.name(), p.addr()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into()
        })
}

/// Sends `sig` to the process called (or listening on) `name`; an error
/// if it is not running.
pub(crate) fn signal_named(processes: &mut [Process], name: &str, sig: Signal) -> Result<()> {
    let i = find(processes, name)?;
    let p = &mut processes[i];
    if !p.signal(sig)? {
        anyhow::bail!("{} is not running: cannot send {sig}", p.name());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_recognised_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let t = proc_start_time(me).expect("start time of self");
        assert!(is_same_process(me, Some(t)));
        assert!(!is_same_process(me, Some(t + 1)));
        assert!(!is_same_process(u32::MAX / 2, None));
    }

    #[test]
    fn missing_binary_names_the_fix() {
        let err = resolve_binary(
            Path::new("no-such-redis-xyz"),
            "--redis-server",
            "apt-get install redis-server redis-sentinel",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("apt-get install redis-server redis-sentinel"),
            "{msg}"
        );
        assert!(msg.contains("--redis-server PATH"), "{msg}");
    }
}
