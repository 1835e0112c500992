//! The cluster lab against real redis-server (or valkey-server) nodes with
//! a 1000 ms node timeout. Each test's `ClusterLab` kills what it started
//! when dropped; each test also checks nothing is left under its temp dir.

use std::path::Path;
use std::time::Duration;

use belay_client::{Connection, Role};
use belay_lab::cluster::{ClusterLab, ClusterSpec};
use belay_lab::testing::{pid_alive, processes_under};
use belay_lab::NoProgress;

fn assert_no_orphans(dir: &Path) {
    for _ in 0..50 {
        if processes_under(dir).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("processes left behind: {:?}", processes_under(dir));
}

async fn role(lab: &ClusterLab, addr: &str) -> Role {
    let mut c = Connection::connect(addr, Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    c.role().await.unwrap()
}

#[tokio::test]
async fn three_shards_cover_every_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    let lab = ClusterLab::start(ClusterSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("cluster starts");
    assert_eq!(lab.nodes().len(), 6);
    let shards = lab.shards().await.unwrap();
    assert_eq!(shards.len(), 3, "{shards:?}");
    let mut covered = vec![0u8; 16384];
    for s in &shards {
        for &(a, b) in &s.slots {
            for slot in a..=b {
                covered[slot as usize] += 1;
            }
        }
        assert_eq!(s.replicas.len(), 1, "{s:?}");
        let r = &s.replicas[0];
        assert!(r.linked_to(&s.master), "{r:?}");
        assert!(r.lag_bytes.is_some(), "{r:?}");
    }
    assert!(covered.iter().all(|&c| c == 1), "every slot exactly once");
    // The plan's layout: the seeds are the masters, slot 0 on node-1.
    let masters: Vec<String> = shards.iter().map(|s| s.master.clone()).collect();
    assert_eq!(masters, lab.seeds());
    assert_eq!(lab.master_of_slot(0).await.unwrap(), lab.seeds()[0]);
    assert_eq!(lab.master_of_slot(16383).await.unwrap(), lab.seeds()[2]);
    let report = lab.status().await;
    assert!(report.healthy, "{:?}", report.problems);
    assert!(report
        .nodes
        .iter()
        .all(|n| n.cluster_state.as_deref() == Some("ok")));

    // A key is served by its slot's master: `foo` is in slot 12182.
    let mut c = Connection::connect(&lab.seeds()[2], Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    c.call_ok(&["SET", "foo", "bar"]).await.unwrap();
    let mut wrong = Connection::connect(&lab.seeds()[0], Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    let moved = wrong.call(&["GET", "foo"]).await.unwrap();
    assert!(
        matches!(&moved, belay_client::Value::Error(e) if e.starts_with("MOVED 12182 ")),
        "{moved:?}"
    );

    // Every file is where the lab says, private.
    for p in lab.processes() {
        assert!(p.config_path().unwrap().exists());
        assert!(p.dir().join("nodes.conf").exists());
    }
    assert!(belay_lab::secrets::exposed(dir.path()).is_empty());
    let state = belay_lab::cluster::recorded_state(dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(state.processes.len(), 6);
    assert!(belay_lab::recorded_state(dir.path())
        .unwrap_err()
        .to_string()
        .contains("Redis Cluster lab"));

    let pids: Vec<u32> = lab.processes().iter().filter_map(|p| p.pid()).collect();
    drop(lab);
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} survived the drop");
    }
    assert!(!dir.path().join("lab.json").exists());
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn a_paused_master_fails_over_and_comes_back_as_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = ClusterLab::start(ClusterSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("cluster starts");
    let old = lab.master_of_slot(6000).await.unwrap();
    assert_eq!(old, lab.seeds()[1]);
    lab.pause(&old).unwrap();
    let new = lab
        .wait_for_failover(&old, Duration::from_secs(20))
        .await
        .expect("a replica takes over");
    assert_ne!(new, old);
    assert_eq!(lab.master_of_slot(6000).await.unwrap(), new);
    // The other shards kept serving while this one was down.
    let report = lab.status().await;
    assert!(!report.healthy);
    assert!(
        report.problems.iter().any(|p| p.contains(&old)),
        "{:?}",
        report.problems
    );
    lab.resume(&old).unwrap();
    lab.wait_until_replica_of(&old, &new, Duration::from_secs(20))
        .await
        .expect("the old master rejoins as a replica");
    assert!(matches!(role(&lab, &old).await, Role::Replica { .. }));
    lab.wait_healthy(Duration::from_secs(20)).await.unwrap();
    let shard = lab
        .shards()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.has_slot(6000))
        .unwrap();
    assert_eq!(shard.master, new);
    assert_eq!(shard.replicas[0].addr, old);
    drop(lab);
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn a_killed_master_is_replaced_and_a_restarted_one_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = ClusterLab::start(ClusterSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("cluster starts");
    let old = lab.seeds()[0].clone();
    let mut c = Connection::connect(&old, Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    // `{06S}` hashes to slot 0, node-1's.
    c.call_ok(&["SET", "{06S}k", "kept"]).await.unwrap();
    c.call_ok(&["WAIT", "1", "2000"]).await.unwrap();
    lab.kill("node-1").unwrap();
    let new = lab
        .wait_for_failover("node-1", Duration::from_secs(20))
        .await
        .expect("a replica takes over");
    let mut c = Connection::connect(&new, Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    let v = c.call_ok(&["GET", "{06S}k"]).await.unwrap();
    assert_eq!(v.to_text().as_deref(), Some("kept"));
    lab.restart("node-1").unwrap();
    lab.wait_until_replica_of("node-1", &new, Duration::from_secs(20))
        .await
        .expect("the restarted node rejoins as a replica");
    lab.wait_healthy(Duration::from_secs(20)).await.unwrap();
    drop(lab);
    assert_no_orphans(dir.path());
}

#[tokio::test]
async fn a_stopped_cluster_starts_again_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let lab = ClusterLab::start(ClusterSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("cluster starts");
    let spec = lab.spec().clone();
    let lab_port = spec.base_port;
    let mut c = Connection::connect(&lab.seeds()[2], Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    c.call_ok(&["SET", "foo", "kept"]).await.unwrap();
    let ids: Vec<String> = lab
        .shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let report = lab.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.stopped.len() + report.killed.len(), 6);
    assert!(!dir.path().join("lab.json").exists());

    let lab = ClusterLab::start(spec, &NoProgress)
        .await
        .expect("the same cluster starts again");
    let again: Vec<String> = lab
        .shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(again, ids, "the same nodes serve the same slots");
    let mut c = Connection::connect(&lab.seeds()[2], Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    let v = c.call_ok(&["GET", "foo"]).await.unwrap();
    assert_eq!(v.to_text().as_deref(), Some("kept"));
    drop(lab);

    // A plan with more nodes than the cluster had is refused, not half-joined.
    let mut bigger = ClusterSpec::for_tests(dir.path());
    bigger.base_port = lab_port;
    bigger.masters = 4;
    let err = ClusterLab::start(bigger, &NoProgress).await.unwrap_err();
    assert!(
        err.to_string().contains("part of an earlier cluster"),
        "{err:#}"
    );
    assert_no_orphans(dir.path());
}
