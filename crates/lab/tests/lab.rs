//! The lab against real redis-server / redis-sentinel processes, with short
//! Sentinel timers. Every test's `Lab` kills what it started when dropped,
//! even when the test fails; each test also checks for orphans by scanning
//! for processes whose working dir is inside its temp dir.

use std::path::Path;
use std::time::Duration;

use belay_client::{Connection, Role};
use belay_lab::testing::{pid_alive, processes_under};
use belay_lab::{Lab, LabError, LabSpec, NoProgress};

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
    let lab = Lab::start(
        LabSpec::for_tests(dir.path()),
        &belay_lab::LineProgress::default(),
    )
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
