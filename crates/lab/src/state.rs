//! The state dir, the lab's memory between commands: `lab.json` (the spec
//! and every process's pid, port and files, written atomically) and
//! `password` (mode 0600), in a directory only its owner may enter (see
//! [`crate::secrets`]). `belay status` and `belay down` from another
//! shell work from these alone.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::process::ProcessRecord;
use crate::spec::LabSpec;

/// Version of the `lab.json` layout.
pub const STATE_VERSION: u32 = 1;

/// Contents of `lab.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    /// The spec the lab was started with (without the password).
    pub spec: LabSpec,
    /// Every process, with its current pid.
    pub processes: Vec<ProcessRecord>,
    /// Pid of the `belay up` that supervises the lab in the foreground
    /// (`None` once detached).
    pub supervisor_pid: Option<u32>,
    /// `starting` until the topology was ready, then `ready`.
    pub phase: String,
}

impl LabState {
    /// Processes still running (verified pid + start time).
    pub fn running(&self) -> Vec<&ProcessRecord> {
        self.processes.iter().filter(|p| p.is_running()).collect()
    }

    /// Addresses of the Sentinels.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.processes
            .iter()
            .filter(|p| p.kind == crate::ProcessKind::Sentinel)
            .map(|p| p.addr())
            .collect()
    }
}

/// `<dir>/lab.json`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

/// `<dir>/password`.
pub fn password_path(dir: &Path) -> PathBuf {
    dir.join("password")
}

/// What kind of lab a `lab.json` describes: its `kind` field, absent
/// (Sentinel) in every file from before the cluster lab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabKind {
    /// Master, replicas, Sentinels ([`crate::Lab`]).
    #[default]
    Sentinel,
    /// A Redis Cluster ([`crate::cluster::ClusterLab`]).
    Cluster,
}

/// The kind of lab recorded in `dir`; `Ok(None)` when there is none.
pub fn recorded_kind(dir: &Path) -> Result<Option<LabKind>> {
    let Some(text) = read_state(dir)? else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Kind {
        #[serde(default)]
        kind: LabKind,
    }
    let k: Kind = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a belay lab state file (delete it if no lab is running)",
            state_path(dir).display()
        )
    })?;
    Ok(Some(k.kind))
}

/// The processes recorded in `lab.json`, whatever the kind of lab;
/// `Ok(None)` when there is none.
pub fn recorded_processes(dir: &Path) -> Result<Option<Vec<ProcessRecord>>> {
    let Some(text) = read_state(dir)? else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Processes {
        processes: Vec<ProcessRecord>,
    }
    let p: Processes = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a belay lab state file (delete it if no lab is running)",
            state_path(dir).display()
        )
    })?;
    Ok(Some(p.processes))
}

/// Before a lab starts in `dir`: fails with [`LabError::AlreadyRunning`]
/// when a lab of either kind still runs there, and removes the state of
/// one that no longer does.
pub(crate) fn clear_stale(dir: &Path, progress: &dyn crate::Progress) -> Result<()> {
    let Some(old) = recorded_processes(dir)? else {
        return Ok(());
    };
    let running: Vec<&ProcessRecord> = old.iter().filter(|p| p.is_running()).collect();
    if !running.is_empty() {
        let pids = running
            .iter()
            .map(|p| format!("{} {}", p.name, p.pid.unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(crate::LabError::AlreadyRunning {
            dir: dir.to_path_buf(),
            pids,
        }
        .into());
    }
    progress.step(&format!(
        "found state of a lab that is no longer running in {}; cleaning it up",
        dir.display()
    ));
    remove(dir)
}

/// The text of `lab.json`; `Ok(None)` when there is none.
pub(crate) fn read_state(dir: &Path) -> Result<Option<String>> {
    let path = state_path(dir);
    match fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads `lab.json`; `Ok(None)` when there is none. A cluster lab's file is
/// refused with a clear error: it has no Sentinels to offer.
pub fn load(dir: &Path) -> Result<Option<LabState>> {
    let path = state_path(dir);
    if recorded_kind(dir)? == Some(LabKind::Cluster) {
        anyhow::bail!(
            "the lab in {} is a Redis Cluster lab (belay up --cluster), not a Sentinel one: \
             this works only on a Sentinel lab",
            dir.display()
        );
    }
    let Some(text) = read_state(dir)? else {
        return Ok(None);
    };
    let state: LabState = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a belay lab state file (delete it if no lab is running)",
            path.display()
        )
    })?;
    Ok(Some(state))
}

/// Writes `lab.json` atomically (temp file + rename), so a reader never
/// sees half a file.
pub fn save(dir: &Path, state: &LabState) -> Result<()> {
    save_json(dir, state)
}

/// Writes any lab's state as `lab.json`, atomically.
pub(crate) fn save_json<T: Serialize>(dir: &Path, state: &T) -> Result<()> {
    let path = state_path(dir);
    let tmp = dir.join(format!(".lab.json.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(state)?;
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Removes `lab.json` (the data and logs stay).
pub fn remove(dir: &Path) -> Result<()> {
    match fs::remove_file(state_path(dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", state_path(dir).display())),
    }
}

/// The lab's password: `chosen` if given (then saved), else the one already
/// saved in the state dir, else a new random one (saved). The file is 0600.
pub fn password(dir: &Path, chosen: Option<&str>) -> Result<String> {
    let path = password_path(dir);
    if let Some(p) = chosen {
        write_secret(&path, p)?;
        return Ok(p.to_string());
    }
    if let Some(p) = read_password(dir)? {
        return Ok(p);
    }
    let p = generate_password();
    write_secret(&path, &p)?;
    Ok(p)
}

/// The saved password, if any.
pub fn read_password(dir: &Path) -> Result<Option<String>> {
    let path = password_path(dir);
    match fs::read_to_string(&path) {
        Ok(p) if !p.trim().is_empty() => Ok(Some(p.trim_end_matches(['\n', '\r']).to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// 32 random alphanumeric characters (~190 bits): safe in a shell line and
/// in a config file.
pub fn generate_password() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn write_secret(path: &Path, secret: &str) -> Result<()> {
    crate::secrets::write_private(path, &format!("{secret}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn password_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = password(dir.path(), None).unwrap();
        assert_eq!(p1.len(), 32);
        assert_eq!(password(dir.path(), None).unwrap(), p1);
        let mode = fs::metadata(password_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(password(dir.path(), Some("chosen")).unwrap(), "chosen");
        assert_eq!(
            read_password(dir.path()).unwrap().as_deref(),
            Some("chosen")
        );
    }

    #[test]
    fn state_round_trips_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LabSpec {
            dir: dir.path().into(),
            password: Some("secret".into()),
            ..LabSpec::default()
        };
        let state = LabState {
            version: STATE_VERSION,
            processes: spec.plan(),
            spec,
            supervisor_pid: Some(1),
            phase: "ready".into(),
        };
        save(dir.path(), &state).unwrap();
        let text = fs::read_to_string(state_path(dir.path())).unwrap();
        assert!(!text.contains("secret"));
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.processes, state.processes);
        assert!(back.spec.password.is_none());
        remove(dir.path()).unwrap();
        assert!(load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn the_kind_of_lab_is_read_and_a_cluster_is_not_taken_for_a_sentinel_lab() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_kind(dir.path()).unwrap(), None);
        let spec = LabSpec {
            dir: dir.path().into(),
            ..LabSpec::default()
        };
        let state = LabState {
            version: STATE_VERSION,
            processes: spec.plan(),
            spec,
            supervisor_pid: None,
            phase: "ready".into(),
        };
        save(dir.path(), &state).unwrap();
        // Files from before the cluster lab have no `kind`: Sentinel.
        assert_eq!(recorded_kind(dir.path()).unwrap(), Some(LabKind::Sentinel));
        assert_eq!(recorded_processes(dir.path()).unwrap().unwrap().len(), 6);

        let cluster = serde_json::json!({
            "kind": "cluster",
            "processes": state.processes,
        });
        save_json(dir.path(), &cluster).unwrap();
        assert_eq!(recorded_kind(dir.path()).unwrap(), Some(LabKind::Cluster));
        assert_eq!(recorded_processes(dir.path()).unwrap().unwrap().len(), 6);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a Redis Cluster lab"), "{err}");
    }
}
