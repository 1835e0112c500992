//! `belay drill pause|kill` against a real Redis Cluster (3 shards × 1
//! replica, node timeout 1000 ms) through an in-process gateway, short
//! enough for CI. The fault hits one shard's master: nothing acknowledged
//! may be lost, and the other shards must keep taking writes while that
//! shard fails over. The lab's Drop reaps every node, also on failure.

use std::time::Duration;

use belay_drill::{DrillOptions, DrillReport, FaultKind, InProcessGateway, Quiet, TargetKind};
use belay_lab::cluster::{ClusterLab, ClusterSpec};
use belay_lab::NoProgress;

struct Env {
    lab: ClusterLab,
    gateway: InProcessGateway,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let lab = ClusterLab::start(ClusterSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("cluster starts");
    let gateway = InProcessGateway::start_cluster(&lab, true, None)
        .await
        .expect("gateway");
    Env {
        lab,
        gateway,
        _dir: dir,
    }
}

fn short(fault: FaultKind) -> DrillOptions {
    DrillOptions {
        fault,
        duration: Duration::from_millis(8000),
        fault_at: Duration::from_millis(1500),
        fault_for: Duration::from_millis(4500),
        writers: 3,
        readers: 3,
        target: TargetKind::Gateway,
        seed: 7,
        settle_timeout: Duration::from_secs(45),
        ..DrillOptions::default()
    }
}

async fn drill(env: &mut Env, fault: FaultKind) -> DrillReport {
    let addr = env.gateway.addr.clone();
    let r = belay_drill::cluster::run(
        &mut env.lab,
        &addr,
        Some(&env.gateway),
        &short(fault),
        &Quiet,
    )
    .await
    .expect("the drill runs");
    eprintln!("{}", belay_drill::report::render_text(&r));
    r
}

fn saw(r: &DrillReport, event: &str) -> Option<f64> {
    r.events
        .iter()
        .filter(|e| e.event == event)
        .map(|e| e.t_ms)
        .reduce(f64::min)
}

/// What both drills must show: the faulted shard failed over and its old
/// master rejoined, nothing acknowledged was lost, the write blackout was
/// that shard's only, reads kept flowing.
fn check(r: &DrillReport) {
    let a = &r.analysis;
    let c = r.cluster.as_ref().expect("cluster figures");
    assert_eq!(c.shards.len(), 3);
    assert_eq!(c.unattributed_ops, 0, "every op's key has a shard");
    assert_eq!(c.shards.iter().filter(|s| s.faulted).count(), 1);
    let f = c.faulted();
    assert_eq!(f.master_before, r.master_before);
    assert_eq!(f.master_after, r.master_after);
    assert_ne!(r.master_after, r.master_before, "the shard failed over");
    for s in c.shards.iter().filter(|s| !s.faulted) {
        assert_eq!(s.master_after, s.master_before, "only one shard moved");
    }
    // The workload spread over every shard.
    for s in &c.shards {
        assert!(s.writes_ok > 50 && s.reads_ok > 20, "{s:?}");
    }
    let failover = saw(r, "+failover").expect("the failover was seen");
    assert!(failover > r.fault.injected_ms, "{failover}");
    assert!(saw(r, "+rejoined").is_some(), "the old master rejoined");

    assert_eq!(a.lost.total, 0, "{:?}", a.lost);
    // The faulted shard's writes stopped at the fault, for at least the
    // node timeout, and came back around the failover.
    let wb = f.write_blackout;
    assert!(wb.longest_ms >= r.down_after_ms as f64, "{wb:?}");
    assert!(wb.from_ms <= r.fault.injected_ms + 100.0, "{wb:?}");
    assert!(
        wb.to_ms >= failover - 1000.0,
        "{wb:?} vs failover {failover}"
    );
    // The other shards kept taking writes.
    assert!(
        c.others_write_blackout_ms < wb.longest_ms / 3.0,
        "others {} vs faulted {}",
        c.others_write_blackout_ms,
        wb.longest_ms
    );
    // Reads kept flowing, the faulted shard's from its replica.
    assert!(a.read_blackout.longest_ms < 2000.0, "{:?}", a.read_blackout);
    assert!(
        f.read_blackout.longest_ms < wb.longest_ms / 2.0,
        "{:?}",
        f.read_blackout
    );
    assert!(r.verdict.starts_with("PASS"), "{}", r.verdict);
    assert!(r.verdict.contains("on the faulted shard"), "{}", r.verdict);
    assert!(r.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_of_one_shards_master_loses_nothing_and_blacks_out_that_shard_only() {
    let mut env = env().await;
    let r = drill(&mut env, FaultKind::Pause).await;
    check(&r);
    assert!(
        saw(&r, "+failover").unwrap() < r.fault.healed_ms.unwrap(),
        "failed over while paused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_one_shards_master_loses_nothing_and_the_old_master_rejoins() {
    let mut env = env().await;
    let r = drill(&mut env, FaultKind::Kill).await;
    check(&r);
    assert!(r.fault.steps.iter().any(|(_, s)| s.contains("restarted")));
}
