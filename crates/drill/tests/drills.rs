//! Every drill end to end against a real topology (redis-server and
//! redis-sentinel processes on their own loopback addresses), short
//! enough for CI: a few seconds of workload each. Each test checks that the
//! verdict matches what actually happened, and that nothing is left behind
//! (processes: the Lab's Drop reaps them; partition rules: checked).

use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::sentinel::SentinelAuth;
use belay_client::Value;
use belay_drill::client::Client;
use belay_drill::events::SentinelWatch;
use belay_drill::history::Layout;
use belay_drill::partition;
use belay_drill::workload::{Target, WorkloadSpec};
use belay_drill::{DrillOptions, DrillReport, FaultKind, InProcessGateway, Quiet, TargetKind};
use belay_lab::{Lab, LabSpec, NoProgress, SeedDeployment, SeedSpec};

/// A lab for drills: short timers (down-after 1000 ms), each process on
/// its own 127.0.0.X so partitions work.
struct Env {
    lab: Lab,
    gateway: Option<InProcessGateway>,
    dir: tempfile::TempDir,
}

async fn env(gateway: bool) -> Env {
    env_with(gateway, None).await
}

async fn env_with(gateway: bool, durable: Option<belay_gateway::Durable>) -> Env {
    env_of(gateway, durable, false).await
}

async fn env_of(gateway: bool, durable: Option<belay_gateway::Durable>, tls: bool) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = LabSpec::for_tests(dir.path());
    spec.own_loopback_addrs = true;
    spec.tls = tls;
    let lab = Lab::start(spec, &NoProgress).await.expect("lab starts");
    let gateway = if gateway {
        Some(
            InProcessGateway::start(&lab, true, durable)
                .await
                .expect("gateway"),
        )
    } else {
        None
    };
    Env { lab, gateway, dir }
}

fn short(fault: FaultKind, target: TargetKind) -> DrillOptions {
    DrillOptions {
        fault,
        duration: Duration::from_millis(8000),
        fault_at: Duration::from_millis(1500),
        fault_for: Duration::from_millis(4500),
        writers: 3,
        readers: 3,
        target,
        seed: 7,
        settle_timeout: Duration::from_secs(45),
        ..DrillOptions::default()
    }
}

async fn drill(env: &mut Env, opts: &DrillOptions) -> DrillReport {
    let gw = env.gateway.as_ref().map(|g| g.addr.clone());
    let report = belay_drill::run(&mut env.lab, gw.as_deref(), opts, &Quiet)
        .await
        .expect("the drill runs");
    eprintln!("{}", belay_drill::report::render_text(&report));
    report
}

/// The facts every drill must get right, whatever its verdict.
fn check_consistent(r: &DrillReport) {
    let a = &r.analysis;
    assert_eq!(r.passed, a.passed());
    assert_eq!(r.verdict.starts_with("PASS"), r.passed, "{}", r.verdict);
    assert!(r
        .verdict
        .contains(&format!("{} acknowledged writes lost", a.lost.total)));
    assert!(a.counts.writes_ok > 100, "the workload ran: {:?}", a.counts);
    assert!(a.counts.reads_ok > 100, "the workload ran: {:?}", a.counts);
    // The topology settled around a master the Sentinels agree on.
    assert!(!r.master_after.is_empty());
}

fn saw(r: &DrillReport, event: &str) -> Option<f64> {
    r.events
        .iter()
        .filter(|e| e.event == event)
        .map(|e| e.t_ms)
        .reduce(f64::min)
}

/// The seed note's drill: pause the master; the gateway holds writes, reads
/// keep flowing, nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_through_the_gateway_fails_over_and_loses_nothing() {
    let mut env = env(true).await;
    let r = drill(&mut env, &short(FaultKind::Pause, TargetKind::Gateway)).await;
    check_consistent(&r);
    assert_ne!(r.master_after, r.master_before, "the Sentinels failed over");
    let switched = saw(&r, "+switch-master").expect("+switch-master seen");
    assert!(saw(&r, "+odown").expect("+odown seen") < switched);
    assert!(
        switched < r.fault.healed_ms.unwrap(),
        "failed over while paused"
    );
    assert!(
        saw(&r, "+convert-to-slave").is_some(),
        "the old master rejoined as a replica"
    );
    let a = &r.analysis;
    assert_eq!(a.lost.total, 0, "{:?}", a.lost);
    // Writes stopped at the pause and came back only after the failover.
    let wb = a.write_blackout;
    assert!(wb.longest_ms >= r.down_after_ms as f64, "{wb:?}");
    assert!(wb.from_ms <= r.fault.injected_ms + 100.0, "{wb:?}");
    assert!(wb.to_ms >= switched - 1000.0, "{wb:?}");
    // Reads kept flowing: the read blackout is far shorter than the write
    // blackout. (Observed: one stall of exactly the gateway's 1 s request
    // timeout right after +switch-master; see the drill crate's notes.)
    assert!(a.read_blackout.longest_ms < 2000.0, "{:?}", a.read_blackout);
    assert!(
        a.read_blackout.longest_ms < wb.longest_ms / 2.0,
        "{:?}",
        a.read_blackout
    );
    assert!(r.passed, "{}", r.verdict);
}

/// Connection churn (`--reconnect-every 20`): every session replaces its
/// connection every 20 operations with a HELLO 3 handshake, through a
/// pause. The mechanism, the report, and that reads keep flowing: new
/// connections' handshakes do not wait for the paused master.
/// The same over TLS on every hop (`belay drill --tls`): the workload's
/// clients, the drill's gateway, the Sentinel watch, the faults and the
/// final read-back all speak TLS to a TLS-only lab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_over_tls_fails_over_and_loses_nothing() {
    let mut env = env_of(true, None, true).await;
    let r = drill(&mut env, &short(FaultKind::Pause, TargetKind::Gateway)).await;
    check_consistent(&r);
    assert_ne!(r.master_after, r.master_before, "the Sentinels failed over");
    assert!(
        saw(&r, "+switch-master").is_some(),
        "the Sentinel watch works over TLS"
    );
    assert_eq!(r.analysis.lost.total, 0, "{:?}", r.analysis.lost);
    assert!(r.passed, "{}", r.verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_through_the_gateway_with_connection_churn_is_reported() {
    let mut env = env(true).await;
    let mut opts = short(FaultKind::Pause, TargetKind::Gateway);
    opts.duration = Duration::from_millis(7000);
    opts.reconnect_every = 20;
    let r = drill(&mut env, &opts).await;
    check_consistent(&r);
    assert_eq!(r.reconnect_every, 20);
    let a = &r.analysis;
    let ops = (a.counts.writes + a.counts.reads) as u64;
    let not_sent: u64 = a
        .errors
        .iter()
        .filter(|e| !e.sent)
        .map(|e| e.count as u64)
        .sum();
    // A connection serves at most 20 commands (21 when the read-your-writes
    // probe follows the 20th), and an operation opens at most one.
    assert!(
        r.connections_opened * 21 >= ops - not_sent,
        "{} connections for {ops} operations",
        r.connections_opened
    );
    assert!(r.connections_opened <= ops);
    assert!(r.connections_opened > 10 * (r.writers + r.readers) as u64);
    let json = serde_json::to_value(&r).expect("the report serializes");
    assert_eq!(json["reconnect_every"], 20);
    assert_eq!(json["connections_opened"], r.connections_opened);
    let text = belay_drill::report::render_text(&r);
    assert!(
        text.contains("churn: a new one every 20 operations"),
        "{text}"
    );
    assert!(r.verdict.starts_with("PASS") || r.verdict.starts_with("FAIL"));
    let reads_stopped = a.read_blackout.longest_ms;
    assert!(
        reads_stopped < 1000.0,
        "reads stopped for {reads_stopped} ms while connections churned"
    );
}

/// kill -9 and restart: the old master comes back from its AOF, is turned
/// into a replica, and writes resume on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_through_the_gateway_fails_over_and_the_old_master_rejoins() {
    let mut env = env(true).await;
    let r = drill(&mut env, &short(FaultKind::Kill, TargetKind::Gateway)).await;
    check_consistent(&r);
    assert_ne!(r.master_after, r.master_before);
    assert!(saw(&r, "+switch-master").is_some());
    assert!(r
        .fault
        .steps
        .iter()
        .any(|(_, s)| s.starts_with("restarted")));
    // Async replication may lose a write acknowledged in the last instant
    // before SIGKILL; the verdict must then say so.
    let a = &r.analysis;
    if a.lost.total > 0 {
        assert!(!r.passed);
        for t in &a.lost.acked_at_ms {
            assert!(
                *t <= r.fault.injected_ms + 50.0,
                "lost a write acknowledged after the kill at {t}"
            );
        }
    }
    // Errors are the ones a failover explains, not anything else.
    for e in &a.errors {
        assert!(
            e.kind != belay_drill::history::ErrorKind::Other,
            "unexplained error: {e:?}"
        );
    }
    // Reads kept coming from the replicas: their links dropped with the
    // master, but they have everything it acknowledged. (They used to get
    // no reads until Sentinel's +odown, down-after later.)
    assert!(
        a.read_blackout.longest_ms < 800.0,
        "reads stopped for {:?}",
        a.read_blackout
    );
}

/// The same partition with durable writes: the cut-off master's writes are
/// never confirmed by its replicas, so none is acknowledged and none is
/// lost (each got UNREPLICATED: it ran there, and the drill counts it as
/// may-have-applied, not as acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_with_durable_writes_loses_no_acknowledged_write() {
    let mut env = env_with(true, Some(belay_gateway::Durable::Majority)).await;
    let mut opts = short(FaultKind::Partition, TargetKind::Gateway);
    opts.durable_writes = Some("a majority of the".into());
    let r = drill(&mut env, &opts).await;
    check_consistent(&r);
    assert_ne!(r.master_after, r.master_before);
    let a = &r.analysis;
    assert_eq!(a.lost.total, 0, "{:?}", a.lost);
    assert!(
        a.errors
            .iter()
            .any(|e| e.kind == belay_drill::history::ErrorKind::Unreplicated),
        "the cut-off master's writes were answered UNREPLICATED: {:?}",
        a.errors
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["durable_writes"], "a majority of the");
}

/// A partition through the gateway: the Sentinels fail over; writes the
/// isolated old master acknowledged before the gateway learned of it are
/// lost — Redis's asynchronous replication, measured. Nothing is left in
/// iptables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_through_the_gateway_is_measured_and_leaves_no_rule() {
    let mut env = env(true).await;
    let r = drill(&mut env, &short(FaultKind::Partition, TargetKind::Gateway)).await;
    check_consistent(&r);
    let tag = r.fault.partition_tag.clone().expect("a partition tag");
    assert!(
        partition::rules_with_tag(&tag).is_empty(),
        "rules left behind"
    );
    assert_ne!(r.master_after, r.master_before);
    let switched = saw(&r, "+switch-master").expect("+switch-master seen");
    // Whatever was lost was acknowledged by the isolated master, after the
    // partition began and before the failover (plus the gateway's poll).
    for t in &r.analysis.lost.acked_at_ms {
        assert!(
            *t >= r.fault.injected_ms - 50.0 && *t <= switched + 1500.0,
            "lost write acknowledged at {t} ms, outside the partition window"
        );
    }
    assert_eq!(
        r.passed,
        r.analysis.lost.total == 0 && r.analysis.staleness.stale_reads == 0
    );
}

/// The checker can fail: a naive client (straight to the master a Sentinel
/// named) keeps writing to the isolated old master, which acknowledges for
/// up to min-replicas-max-lag; when the partition heals it becomes a
/// replica and those writes vanish, and later reads are stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_direct_to_the_master_loses_acknowledged_writes_and_the_checker_says_so() {
    let mut env = env(false).await;
    // The naive client leaves the isolated master only when the Sentinels
    // turn it into a replica (CLIENT KILL), up to ~10 s after the heal (their
    // INFO period): run long enough to see its reads after that.
    let mut opts = short(FaultKind::Partition, TargetKind::DirectMaster);
    opts.fault_for = Duration::from_millis(3000);
    opts.duration = Duration::from_millis(16_500);
    let r = drill(&mut env, &opts).await;
    check_consistent(&r);
    let tag = r.fault.partition_tag.clone().expect("a partition tag");
    assert!(
        partition::rules_with_tag(&tag).is_empty(),
        "rules left behind"
    );
    let a = &r.analysis;
    assert!(
        a.lost.total > 50,
        "writes to the isolated master are lost: {:?}",
        a.lost
    );
    assert!(a.lost.sets > 0);
    assert!(
        saw(&r, "+convert-to-slave").is_some_and(|t| t < r.window.end_us as f64 / 1000.0),
        "the old master was demoted during the run"
    );
    assert!(
        a.staleness.stale_reads > 0,
        "reads after the demotion are stale"
    );
    assert!(!r.passed);
    assert!(r.verdict.starts_with("FAIL"), "{}", r.verdict);
    // The lost writes were acknowledged by the isolated master: after the
    // partition began and before the Sentinels demoted it (the naive client
    // keeps writing there after the heal, until NOREPLICAS or the demotion).
    let demoted = saw(&r, "+convert-to-slave").unwrap();
    let inside = a
        .lost
        .acked_at_ms
        .iter()
        .filter(|t| **t >= r.fault.injected_ms - 50.0 && **t <= demoted)
        .count();
    assert_eq!(inside, a.lost.acked_at_ms.len(), "{:?}", a.lost.acked_at_ms);
}

/// One Sentinel dies, then the master is paused: the two left still reach
/// quorum and fail over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_loss_still_fails_over_with_two_sentinels() {
    let mut env = env(true).await;
    let r = drill(
        &mut env,
        &short(FaultKind::SentinelLoss, TargetKind::Gateway),
    )
    .await;
    check_consistent(&r);
    let killed = r
        .fault
        .steps
        .iter()
        .find_map(|(_, s)| {
            s.strip_prefix("killed ")
                .map(|s| s.split_whitespace().next().unwrap().to_string())
        })
        .expect("a Sentinel was killed");
    assert!(killed.starts_with("sentinel-"));
    assert_ne!(r.master_after, r.master_before, "the other two failed over");
    let switch_by: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.event == "+switch-master" && e.t_ms < r.fault.healed_ms.unwrap())
        .map(|e| e.sentinel.clone())
        .collect();
    assert!(!switch_by.is_empty());
    assert!(
        !switch_by.contains(&killed),
        "a dead Sentinel reported {switch_by:?}"
    );
    assert_eq!(r.analysis.lost.total, 0, "{:?}", r.analysis.lost);
    // All three run again.
    for s in env.lab.sentinels() {
        assert!(s.record().is_running(), "{} runs", s.name());
    }
}

/// SENTINEL FAILOVER under load: a planned switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_under_load() {
    let mut env = env(true).await;
    let mut opts = short(FaultKind::Manual, TargetKind::Gateway);
    opts.duration = Duration::from_millis(6000);
    let r = drill(&mut env, &opts).await;
    check_consistent(&r);
    assert_ne!(r.master_after, r.master_before);
    assert!(saw(&r, "+switch-master").is_some());
    assert!(r.fault.healed_ms.is_none());
    // No fault to wait out: writes are back within a few seconds.
    assert!(
        r.analysis.write_blackout.longest_ms < 5000.0,
        "{:?}",
        r.analysis.write_blackout
    );
}

/// Nothing is left behind by a drill's lab once it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_drill_lab_leaves_no_process() {
    let e = env(false).await;
    let dir = e.dir.path().to_path_buf();
    assert!(!belay_lab::testing::processes_under(&dir).is_empty());
    drop(e.gateway);
    drop(e.lab);
    assert!(belay_lab::testing::processes_under(&dir).is_empty());
}

/// The drill's Sentinel clients against the seed note's deployment, whose
/// Sentinels have no password of their own (the common case): the nodes'
/// password is tried on them and skipped. The direct-master target finds
/// the master, and the Sentinel watch hears a replica go down. (Asked with
/// the nodes' password as `AUTH`, every Sentinel refused both.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_master_and_the_sentinel_watch_work_with_sentinels_without_a_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut seed = SeedDeployment::start(dir.path(), SeedSpec::default())
        .await
        .expect("the seed deployment starts");
    let sentinel_auth = SentinelAuth::choose(None, Some(seed.auth()));
    let spec = WorkloadSpec {
        target: Target::DirectMaster {
            sentinels: seed.sentinel_addrs(),
            master_name: seed.master_name().to_string(),
        },
        auth: seed.auth(),
        sentinel_auth: sentinel_auth.clone(),
        tls: None,
        layout: Layout {
            prefix: "belay-drill:direct".into(),
            writers: 1,
            readers: 0,
            counters: 1,
            regs_per_writer: 1,
            shard_tags: Vec::new(),
        },
        seed: 1,
        op_timeout: Duration::from_secs(2),
        think: Duration::ZERO,
        reconnect_every: 0,
    };
    let mut client = Client::new(Arc::new(spec), Arc::default(), 0);
    let reply = client
        .call(&["SET", "belay-drill:direct", "1"])
        .await
        .expect("the Sentinel named the master and the SET went there");
    assert_eq!(reply, Value::Simple("OK".into()));

    let sentinels = vec![("sentinel-1".to_string(), seed.sentinel_addrs()[0].clone())];
    let watch = SentinelWatch::start(sentinels, sentinel_auth, None, Instant::now());
    // Subscribed before the replica stops: the watch retries every 200 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    seed.pause("redis-2").expect("pause the replica");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watch.snapshot().iter().any(|e| e.event == "+sdown") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seed.resume("redis-2").expect("resume the replica");
    let events = watch.stop().await;
    assert!(
        events
            .iter()
            .any(|e| e.event == "+sdown" && e.detail.starts_with("slave")),
        "{events:?}"
    );
}
