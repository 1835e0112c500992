//! The lab against real redis-server / redis-sentinel processes, with short
//! Sentinel timers. Every test's `Lab` kills what it started when dropped,
//! even when the test fails; each test also checks for orphans by scanning
//! for processes whose working dir is inside its temp dir.

use std::path::Path;
use std::time::Duration;

use belay_client::{Connection, Role};
use belay_lab::testing::{pid_alive, processes_under};
use belay_lab::{Lab, LabError, LabSpec, NoProgress, SentinelProgram, ServerPrograms};

/// Asserts no process is left under `dir` (waiting briefly for reaping).
fn assert_no_orphans(dir: &Path) {
    for _ in 0..50 {
        if processes_under(dir).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "processes left behind under {}: {:?}",
        dir.display(),
        processes_under(dir)
    );
}

fn pids(lab: &Lab) -> Vec<u32> {
    lab.processes().iter().filter_map(|p| p.pid()).collect()
}

async fn role(lab: &Lab, addr: &str) -> Role {
    let mut c = Connection::connect(addr, Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    c.role().await.unwrap()
}

#[tokio::test]
async fn lab_comes_up_and_status_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("lab starts");
    assert_eq!(lab.data_nodes().len(), 3);
    assert_eq!(lab.sentinel_addrs().len(), 3);
    let report = lab.status().await;
    assert!(report.healthy, "problems: {:?}", report.problems);
    assert_eq!(report.masters, 1);
    assert_eq!(report.linked_replicas, 2);
    assert_eq!(report.sentinels_agreeing, 3);
    assert_eq!(
        report.agreed_master.as_deref(),
        Some(lab.process("redis-1").unwrap().addr().as_str())
    );
    assert_eq!(
        lab.current_master().await.unwrap(),
        lab.process("redis-1").unwrap().addr()
    );
    // Everything the lab says about its files is there.
    for p in lab.processes() {
        assert!(p.log_path().exists(), "{}", p.log_path().display());
        assert!(p.config_path().unwrap().exists());
    }
    assert!(dir.path().join("lab.json").exists());
    let started = pids(&lab);
    drop(lab);
    for pid in started {
        assert!(!pid_alive(pid), "pid {pid} survived the Lab's drop");
    }
    assert!(!dir.path().join("lab.json").exists());
    assert_no_orphans(dir.path());
}

/// Lines of every Sentinel log, for checking the events Sentinel reported.
fn sentinel_logs(lab: &Lab) -> String {
    lab.sentinels()
        .iter()
        .map(|s| std::fs::read_to_string(s.log_path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The seed note's scenario: pause the master (what `docker compose pause`
/// does), a replica is promoted, the old master is resumed and comes back
/// as a replica of the new one.
#[tokio::test]
async fn paused_master_fails_over_and_rejoins_as_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("lab starts");
    let old = lab.current_master().await.unwrap();
    let old_name = lab.process_by_addr(&old).unwrap().name().to_string();

    lab.pause(&old_name).unwrap();
    let new = lab
        .wait_for_failover(&old, Duration::from_secs(30))
        .await
        .expect("Sentinel promotes a replica");
    assert_ne!(new, old);
    assert!(role(&lab, &new).await.is_master());
    let logs = sentinel_logs(&lab);
    let (nh, np) = new.rsplit_once(':').unwrap();
    let (oh, op) = old.rsplit_once(':').unwrap();
    let switch = format!("+switch-master {} {oh} {op} {nh} {np}", lab.master_name());
    assert!(
        logs.contains(&switch),
        "no `{switch}` in the Sentinel logs:\n{logs}"
    );

    // While it is paused, status calls it out.
    let report = lab.status().await;
    assert!(!report.healthy);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&old_name) && p.contains("does not answer")),
        "{:?}",
        report.problems
    );

    lab.resume(&old_name).unwrap();
    lab.wait_until_replica_of(&old_name, &new, Duration::from_secs(40))
        .await
        .expect("the old master comes back as a replica of the new one");
    assert!(sentinel_logs(&lab).contains("+convert-to-slave"));
    lab.wait_ready(Duration::from_secs(30)).await.unwrap();
    let report = lab.status().await;
    assert!(report.healthy, "{:?}", report.problems);
    assert_eq!(report.agreed_master.as_deref(), Some(new.as_str()));
    drop(lab);
    assert_no_orphans(dir.path());
}

/// kill -9 the master: Sentinel fails over; the old master, restarted with
/// its (unchanged) config, claims master again until Sentinel converts it.
#[tokio::test]
async fn killed_master_fails_over_and_restarted_master_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("lab starts");
    let old = lab.current_master().await.unwrap();
    let old_name = lab.process_by_addr(&old).unwrap().name().to_string();
    let old_pid = lab.process(&old_name).unwrap().pid().unwrap();

    lab.kill(&old_name).unwrap();
    assert!(!pid_alive(old_pid));
    let new = lab
        .wait_for_failover(&old, Duration::from_secs(30))
        .await
        .expect("Sentinel promotes a replica");

    assert_ne!(new, old);

    lab.restart(&old_name).unwrap();
    let new_pid = lab.process(&old_name).unwrap().pid().unwrap();
    assert_ne!(new_pid, old_pid);
    // Whatever master the Sentinels settle on (with 1 s timers a first
    // promotion can time out and another replica win), the restarted old
    // master must end up its replica.
    lab.wait_ready(Duration::from_secs(60))
        .await
        .expect("the topology settles with the restarted node");
    let settled = lab.current_master().await.unwrap();
    assert_ne!(
        settled, old,
        "the killed master must not come back as master"
    );
    lab.wait_until_replica_of(&old_name, &settled, Duration::from_secs(20))
        .await
        .expect("the restarted master rejoins as a replica");
    drop(lab);
    assert_no_orphans(dir.path());
}

/// `down` from "another shell": attach through lab.json, stop in order, and
/// leave none of the recorded pids alive.
#[tokio::test]
async fn down_stops_every_recorded_pid() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = LabSpec::for_tests(dir.path());
    spec.detach = true;
    let lab = Lab::start(spec, &NoProgress).await.expect("lab starts");
    assert!(lab.is_detached());
    let started = pids(&lab);
    drop(lab); // detached: keeps running
    for &pid in &started {
        assert!(pid_alive(pid), "detached lab's pid {pid} died on drop");
    }
    // One node paused: `down` must still stop it.
    let mut attached = Lab::attach(dir.path()).unwrap();
    attached.pause("redis-2").unwrap();
    let report = belay_lab::down(dir.path(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.stopped.len() + report.killed.len(), started.len());
    for pid in started {
        assert!(!pid_alive(pid), "pid {pid} survived `down`");
    }
    assert!(!dir.path().join("lab.json").exists());
    assert!(matches!(
        belay_lab::down(dir.path(), Duration::from_secs(1))
            .await
            .unwrap_err()
            .downcast_ref::<LabError>(),
        Some(LabError::NoLab { .. })
    ));
    assert_no_orphans(dir.path());
}

/// A `lab.json` written before Valkey (no `server`, no `programs`; the two
/// paths were the resolved programs) still attaches, and its restarts run
/// the programs it recorded.
#[tokio::test]
async fn a_lab_json_from_before_valkey_keeps_its_programs() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("lab starts");
    let programs = lab.spec().programs().clone();
    let sentinel = match &programs.sentinel {
        SentinelProgram::Program(p) | SentinelProgram::ServerMode(p) => p.clone(),
    };
    let path = dir.path().join("lab.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let spec = state["spec"].as_object_mut().unwrap();
    spec.remove("server");
    spec.remove("programs");
    spec.insert("redis_server".into(), serde_json::json!(programs.server));
    spec.insert("redis_sentinel".into(), serde_json::json!(sentinel));
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();

    let attached = Lab::attach(dir.path()).unwrap();
    assert_eq!(
        attached.spec().programs(),
        &ServerPrograms {
            server: programs.server.clone(),
            sentinel: SentinelProgram::Program(sentinel),
        }
    );
    drop(attached);
    drop(lab);
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn second_start_on_a_running_lab_is_refused_and_stale_state_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("lab starts");
    let err = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<LabError>(),
            Some(LabError::AlreadyRunning { .. })
        ),
        "{err:#}"
    );
    assert!(err.to_string().contains("belay down --dir"), "{err}");

    // Simulate a crash: keep lab.json, kill everything behind its back.
    let state = std::fs::read(dir.path().join("lab.json")).unwrap();
    drop(lab);
    std::fs::write(dir.path().join("lab.json"), state).unwrap();
    let lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("a stale lab.json does not block a new lab");
    drop(lab);
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn busy_port_is_reported_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = LabSpec::for_tests(dir.path());
    // This test wants the busy-port error, not a new block.
    spec.reassign_busy_ports = false;
    let busy = spec.sentinel_port() + 1;
    let _holder = std::net::TcpListener::bind(("127.0.0.1", busy)).unwrap();
    let err = Lab::start(spec, &NoProgress).await.unwrap_err();
    match err.downcast_ref::<LabError>() {
        Some(LabError::PortInUse { port, what, .. }) => {
            assert_eq!(*port, busy);
            assert_eq!(what, "sentinel-2");
        }
        _ => panic!("unexpected error: {err:#}"),
    }
    assert!(err.to_string().contains("--sentinel-port"), "{err}");
    assert!(!dir.path().join("lab.json").exists());
    assert!(
        !dir.path().join("redis-1").exists(),
        "nothing may be written or started"
    );
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn missing_binary_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = LabSpec::for_tests(dir.path());
    spec.redis_sentinel = Some("/nonexistent/redis-sentinel".into());
    let err = Lab::start(spec, &NoProgress).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(
        err.downcast_ref::<LabError>(),
        Some(LabError::BinaryNotFound { .. })
    ));
    assert!(
        msg.contains("apt-get install redis-server redis-sentinel"),
        "{msg}"
    );
    assert!(msg.contains("--redis-sentinel PATH"), "{msg}");
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn child_dying_at_start_is_named_with_its_log_and_the_rest_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = LabSpec::for_tests(dir.path());
    spec.extra_redis_config = vec!["no-such-directive yes".into()];
    let err = Lab::start(spec, &NoProgress).await.unwrap_err();
    let msg = err.to_string();
    match err.downcast_ref::<LabError>() {
        Some(LabError::ChildExited { name, .. }) => assert!(name.starts_with("redis-"), "{msg}"),
        _ => panic!("unexpected error: {err:#}"),
    }
    assert!(msg.contains("during start-up"), "{msg}");
    assert!(
        msg.contains("no-such-directive"),
        "the log tail is shown: {msg}"
    );
    assert!(!dir.path().join("lab.json").exists());
    assert_no_orphans(dir.path());
}

/// The future of `Lab::start` dropped mid-way (what Ctrl-C does in the
/// CLI): every child started so far is killed.
#[tokio::test]
async fn dropping_a_starting_lab_kills_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let spec = LabSpec::for_tests(dir.path());
    let start = Lab::start(spec, &NoProgress);
    let timed_out = tokio::time::timeout(Duration::from_millis(300), start).await;
    assert!(timed_out.is_err(), "the lab cannot be ready in 300 ms");
    assert!(!dir.path().join("lab.json").exists());
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn readiness_timeout_names_what_is_missing_and_stops_everything() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let silent = dir.path().join("silent-sentinel");
    std::fs::write(&silent, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&silent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = LabSpec::for_tests(&dir.path().join("lab"));
    spec.redis_sentinel = Some(silent);
    spec.ready_timeout_ms = 1500;
    let err = Lab::start(spec, &NoProgress).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<LabError>(),
            Some(LabError::NotReady { .. })
        ),
        "{err:#}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("sentinel-1: not accepting connections yet"),
        "{msg}"
    );
    assert_no_orphans(dir.path());
}

/// The lab's dirs are 0700 (an older lab's 0755 ones are tightened), so a
/// config file Redis rewrites as 0644 stays out of other users' reach; and
/// status calls out a secret that others can read, with the fix.
#[tokio::test]
async fn secrets_stay_private_and_status_flags_readable_ones() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let root = tempfile::tempdir().unwrap();
    // tempfile makes its dir 0700; open it, so that only the lab's own
    // dirs stand between other users and the files.
    chmod(root.path(), 0o755);
    let state = root.path().join("lab");
    // Left by an older belay: 0755 dirs.
    std::fs::create_dir_all(state.join("redis-1")).unwrap();
    chmod(&state, 0o755);
    chmod(&state.join("redis-1"), 0o755);
    let lab = Lab::start(LabSpec::for_tests(&state), &NoProgress)
        .await
        .expect("lab starts");
    assert_eq!(mode(&state), 0o700, "the state dir");
    for p in lab.processes() {
        assert_eq!(mode(p.dir()), 0o700, "{}", p.dir().display());
    }

    // Redis rewrites the config as 0644 (less the umask).
    let node = lab.process("redis-1").unwrap();
    let conf = node.config_path().unwrap().to_path_buf();
    let mut c = Connection::connect(&node.addr(), Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    c.call_ok(&["CONFIG", "REWRITE"]).await.unwrap();
    assert_eq!(mode(&conf), 0o644 & !umask(), "{}", conf.display());
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("requirepass"), "{text}");
    // ... and it is still private, because its dir is.
    assert!(belay_lab::secrets::exposed(&state).is_empty());
    let secret_problems = |r: &belay_lab::StatusReport| -> Vec<String> {
        r.problems
            .iter()
            .filter(|p| p.contains("can read it"))
            .cloned()
            .collect()
    };
    let report = lab.status().await;
    assert!(report.healthy, "{:?}", report.problems);
    if let Some(readable) = readable_by_nobody(&conf) {
        assert!(!readable, "user nobody can read {}", conf.display());
    }

    // Loosened by hand (the file as Redis leaves it under umask 022), status
    // says so.
    chmod(&conf, 0o644);
    chmod(&state, 0o755);
    chmod(node.dir(), 0o755);
    let report = lab.status().await;
    assert!(!report.healthy);
    let found = secret_problems(&report);
    assert_eq!(found.len(), 1, "only redis-1's config: {found:?}");
    let line = &found[0];
    assert!(
        line.contains(&format!("{} holds requirepass, masterauth", conf.display())),
        "{line}"
    );
    assert!(
        line.contains(&format!("chmod 700 {}", node.dir().display())),
        "{line}"
    );
    assert!(
        line.contains(&format!("chmod 600 {}", conf.display())),
        "{line}"
    );
    if is_root() {
        // The control: the same check sees it now.
        assert_eq!(readable_by_nobody(&conf), Some(true));
    }
    chmod(&state.join("password"), 0o644);
    let found = secret_problems(&lab.status().await);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found
        .iter()
        .any(|l| l.contains("password holds the password")));

    // The dirs restored (the config stays 0644): the warnings are gone.
    chmod(&state.join("password"), 0o600);
    chmod(node.dir(), 0o700);
    chmod(&state, 0o700);
    let report = lab.status().await;
    assert!(secret_problems(&report).is_empty(), "{:?}", report.problems);
    assert!(report.healthy, "{:?}", report.problems);
    drop(lab);
    assert_no_orphans(root.path());
}

/// This process's umask, from `/proc/self/status`.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2) == Some("0")
}

/// Whether user `nobody` can read `file`: `None` unless this test runs as
/// root with `setpriv` (only root can become another user).
fn readable_by_nobody(file: &Path) -> Option<bool> {
    if !is_root() {
        return None;
    }
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    Some(status.success())
}
