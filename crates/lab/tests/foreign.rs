//! `belay status` (the library's `status::gather`) against a deployment
//! belay did not configure — the seed note's layout, built by
//! [`SeedDeployment`]: data nodes with a password, Sentinels without one.
//! Every failure to ask a node must say why. Each test's `SeedDeployment`
//! kills and reaps what it started when dropped, even when the test fails.

use std::path::Path;
use std::time::Duration;

use belay_client::{Auth, Connection};
use belay_lab::status::{self, StatusReport};
use belay_lab::testing::{pid_alive, processes_under};
use belay_lab::{SeedDeployment, SeedSpec};

fn assert_no_orphans(dir: &Path) {
    for _ in 0..50 {
        if processes_under(dir).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("processes left behind: {:?}", processes_under(dir));
}

/// The problem lines that mention `addr`.
fn about(report: &StatusReport, addr: &str) -> String {
    report
        .problems
        .iter()
        .filter(|p| p.contains(addr))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn seed_layout_is_what_the_note_describes_and_status_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SeedDeployment::start(dir.path(), SeedSpec::default())
        .await
        .expect("the seed deployment starts");
    let sentinel = &seed.sentinel_addrs()[0];
    // The Sentinel has no password: a client uses it without AUTH ...
    let mut c = Connection::connect(sentinel, None, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(c.call_ok(&["PING"]).await.is_ok());
    let err = c.auth(&seed.auth()).await.unwrap_err();
    assert!(err.is_no_password_configured(), "{err}");
    // ... while the data nodes require theirs.
    let mut n = Connection::connect(&seed.master_addr(), None, Duration::from_secs(2))
        .await
        .unwrap();
    let err = n.call_ok(&["PING"]).await.unwrap_err().to_string();
    assert!(err.contains("NOAUTH"), "{err}");

    let report = status::gather(&seed.status_query()).await;
    assert!(report.healthy, "{:?}", report.problems);
    assert_eq!(
        report.agreed_master.as_deref(),
        Some(seed.master_addr().as_str())
    );
    assert_eq!((report.masters, report.linked_replicas), (1, 1));
    assert_eq!(report.sentinels_agreeing, 1);
    assert_eq!(report.nodes.len(), 2, "found through the Sentinel");

    let pids: Vec<u32> = seed.processes().iter().filter_map(|p| p.pid()).collect();
    drop(seed);
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} survived the drop");
    }
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn each_node_that_cannot_be_asked_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = SeedDeployment::start(
        dir.path(),
        SeedSpec {
            replicas: 2,
            // Long: the Sentinel must not fail anything over meanwhile.
            down_after_ms: 60_000,
            ..SeedSpec::default()
        },
    )
    .await
    .expect("the seed deployment starts");
    let [stopped, paused] = [
        seed.replica_addrs()[0].clone(),
        seed.replica_addrs()[1].clone(),
    ];

    // A wrong password: the node's own words.
    let mut q = seed.status_query();
    q.auth = Some(Auth::password("not-the-password"));
    let report = status::gather(&q).await;
    let master = about(&report, &seed.master_addr());
    assert!(master.contains("rejected AUTH"), "{master}");
    assert!(
        master.contains("WRONGPASS invalid username-password pair"),
        "{master}"
    );
    // The Sentinel (no password) was still asked: it named every node.
    assert_eq!(report.sentinels_agreeing, 1, "{:?}", report.problems);
    assert_eq!(report.nodes.len(), 3);

    // A stopped node: connection refused.
    seed.kill(&stopped).unwrap();
    // A paused one: no answer, and to what.
    seed.pause(&paused).unwrap();
    let report = status::gather(&seed.status_query()).await;
    let line = about(&report, &stopped);
    assert!(line.contains("refuses connections"), "{line}");
    assert!(line.contains("Connection refused"), "{line}");
    let line = about(&report, &paused);
    assert!(line.contains("does not answer"), "{line}");
    assert!(line.contains("did not answer AUTH"), "{line}");
    assert!(line.contains("within 1.5s"), "{line}");
    assert!(!report.problems.iter().any(|p| p.contains("no answer")));
    seed.resume(&paused).unwrap();
    drop(seed);
    assert_no_orphans(dir.path());
}

/// The helper's failover tools work on this layout too (the gateway's tests
/// lean on them).
#[tokio::test]
async fn seed_deployment_fails_over_when_its_master_is_paused() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = SeedDeployment::start(dir.path(), SeedSpec::default())
        .await
        .expect("the seed deployment starts");
    let old = seed.current_master().await.unwrap();
    assert_eq!(old, seed.master_addr());
    let pid = seed.pid(&old).unwrap();
    seed.pause(&old).unwrap();
    assert_eq!(belay_lab::process::proc_state(pid), Some('T'));
    let new = seed
        .wait_for_failover(&old, Duration::from_secs(30))
        .await
        .expect("the Sentinel promotes the replica");
    assert_eq!(new, seed.replica_addrs()[0]);
    seed.resume(&old).unwrap();
    seed.wait_until_replica_of("redis-1", &new, Duration::from_secs(30))
        .await
        .expect("the old master rejoins as a replica");
    drop(seed);
    assert_no_orphans(dir.path());
}
