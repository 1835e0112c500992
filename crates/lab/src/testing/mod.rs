//! Helpers for tests that start labs: a lab with the gateway and the web
//! app ([`app_lab_spec`]), a cluster with the gateway ([`cluster_gateway_spec`]), finding processes left behind, and (feature
//! `browser`) a real headless browser ([`browser`]).

#[cfg(feature = "browser")]
pub mod browser;

use std::path::Path;

use crate::cluster::ClusterSpec;
use crate::spec::{AppSpec, GatewaySpec, LabSpec};

/// [`LabSpec::for_tests`] with the gateway and the web app, both run from
/// `belay` (a test of the CLI crate passes `env!("CARGO_BIN_EXE_belay")`),
/// on ports of the lab's own free block.
pub fn app_lab_spec(dir: &Path, belay: &Path) -> LabSpec {
    let mut spec = LabSpec::for_tests(dir);
    spec.gateway = Some(GatewaySpec {
        exe: belay.to_path_buf(),
        port: 0,
        admin_port: Some(0),
        durable_writes: None,
        zone: None,
        read_from: None,
    });
    spec.app = Some(AppSpec {
        exe: belay.to_path_buf(),
        port: 0,
    });
    spec.assign_free_ports();
    spec
}

/// [`ClusterSpec::for_tests`] with the gateway in front (`belay gateway
/// --cluster <each master>`, run from `belay`: a test of the CLI crate
/// passes `env!("CARGO_BIN_EXE_belay")`) and its admin endpoint, on ports of
/// the cluster's own free block.
pub fn cluster_gateway_spec(dir: &Path, belay: &Path) -> ClusterSpec {
    let mut spec = ClusterSpec::for_tests(dir);
    spec.gateway = Some(GatewaySpec {
        exe: belay.to_path_buf(),
        port: 0,
        admin_port: Some(0),
        durable_writes: None,
        zone: None,
        read_from: None,
    });
    spec.assign_free_ports();
    spec
}

/// Pids of live (non-zombie) processes whose working directory is `dir` or
/// below it. Every lab child runs in its own dir under the state dir, and
/// redis `chdir`s there too, so after a lab is stopped this must be empty:
/// a test's orphan check that does not rely on the pids the lab recorded.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        if cwd.starts_with(&dir) && !matches!(crate::process::proc_state(pid), Some('Z') | None) {
            out.push(pid);
        }
    }
    out
}

/// True when `pid` runs (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    !matches!(
        crate::process::proc_state(pid),
        Some('Z') | Some('X') | None
    )
}

/// SIGKILLs every process whose working dir is under `dir` (see
/// [`processes_under`]) — a last-resort guard for tests that run the CLI,
/// whose children are not `Lab`-owned. Safe because `dir` is the test's
/// own temp dir: nothing else runs there.
pub fn kill_processes_under(dir: &Path) {
    for pid in processes_under(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
