//! A coordinated switchover under load through the gateway: writes paused
//! on the master, the chosen replica caught up, Sentinel promotes it, the
//! old master follows it, writes resume — and the clients see no error and
//! lose nothing: the writes that waited on the old master are refused there
//! (not run) and the gateway sends them to the new one, in order.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::sentinel::SentinelAuth;
use belay_client::switchover::Switchover;
use belay_client::Value;
use support::{bulk, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_load_loses_nothing_and_fails_nothing() {
    let env = start(|_| {}).await;
    let old = env.master().await;
    let replicas = env.replicas().await;
    let to = replicas[1].clone();
    let priorities_before = {
        let mut out = Vec::new();
        for r in &replicas {
            let mut c = env.node(r).await;
            out.push(
                c.call(&["CONFIG", "GET", "replica-priority"])
                    .await
                    .unwrap(),
            );
        }
        out
    };

    // Writers: each its own key, incremented, every reply checked; the
    // last value acknowledged is what the new master must have.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut c = env.client().await;
        c.set_timeout(Duration::from_secs(30));
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let key = format!("sw:{w}");
            let (mut acked, mut errors, mut longest) = (0i64, Vec::new(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match c.call(&["INCR", &key]).await {
                    Ok(Value::Integer(n)) => {
                        assert_eq!(n, acked + 1, "{key}: increments in order, none twice");
                        acked = n;
                    }
                    other => errors.push(format!("{other:?}")),
                }
                longest = longest.max(sent.elapsed());
            }
            (key, acked, errors, longest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut plan = Switchover::new(env.lab.master_name(), env.lab.sentinel_addrs());
    plan.node_auth = Some(env.auth());
    plan.sentinel_auth = SentinelAuth::NodeCredentials(env.auth());
    plan.to = Some(to.clone());
    let report = plan.run(&|s| eprintln!("switchover: {s}")).await.unwrap();
    assert_eq!(report.old_master, old);
    assert_eq!(report.new_master, to);
    assert!(report.old_master_demoted, "{report:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut master = env.node(&to).await;
    let mut slowest = Duration::ZERO;
    for w in writers {
        let (key, acked, errors, longest) = w.await.unwrap();
        assert!(errors.is_empty(), "{key}: {errors:?}");
        assert!(acked > 10, "{key}: the writer ran ({acked} writes)");
        assert_eq!(
            master.call(&["GET", &key]).await.unwrap(),
            bulk(&acked.to_string()),
            "{key}: every acknowledged increment is on the new master"
        );
        slowest = slowest.max(longest);
    }
    assert!(slowest < Duration::from_secs(5), "a write took {slowest:?}");
    // The other replica's priority is back.
    for (r, before) in replicas.iter().zip(priorities_before) {
        let mut c = env.node(r).await;
        assert_eq!(
            c.call(&["CONFIG", "GET", "replica-priority"])
                .await
                .unwrap(),
            before,
            "{r}"
        );
    }
    eprintln!(
        "switchover {old} -> {to}: writes paused {:?}, slowest write {slowest:?}, no errors",
        report.writes_paused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_a_node_that_is_not_a_replica_changes_nothing() {
    let env = start(|_| {}).await;
    let old = env.master().await;
    let mut plan = Switchover::new(env.lab.master_name(), env.lab.sentinel_addrs());
    plan.node_auth = Some(env.auth());
    plan.sentinel_auth = SentinelAuth::NodeCredentials(env.auth());
    plan.to = Some("127.0.0.1:1".into());
    let err = plan.run(&|_| {}).await.unwrap_err().to_string();
    assert!(err.contains("is not a healthy replica"), "{err}");
    assert_eq!(env.master().await, old);
    let mut c = env.client().await;
    assert_eq!(
        c.call(&["SET", "still", "writable"]).await.unwrap(),
        Value::Simple("OK".into())
    );
}
