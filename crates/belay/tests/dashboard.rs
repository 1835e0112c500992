//! The gateway's dashboard in a real browser (headless Chromium through
//! chromedriver), on a real lab whose gateway runs as `belay gateway`,
//! checked by the DOM, not pixels: the master, the replicas and the
//! Sentinels are shown; traffic is counted; when the master is paused the
//! page shows writes held, then the new master and the finished failover
//! with its write blackout, then the old master back as a replica — each
//! within seconds of the gateway itself knowing it.
//!
//! With `BELAY_DASHBOARD_SCREENSHOT=<path>` it also saves a PNG of the page
//! while writes are held (the README's picture comes from there).
//!
//! Skipped, saying why, only when chromedriver or Chromium is not installed
//! (`scripts/setup --for-tests` installs them).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::Connection;
use belay_lab::testing::browser::{Driver, Missing, Session};
use belay_lab::{GatewaySpec, Lab, LabSpec, NoProgress};

/// How long after the gateway knows something the page may take to show
/// it: the page asks every second, and at once on each event.
const SHOWN_WITHIN: Duration = Duration::from_secs(3);

async fn topology(admin: &str) -> serde_json::Value {
    reqwest::get(format!("http://{admin}/topology"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `gateway` (what the gateway says) and `page` (what the page shows)
/// until both hold; returns when each first did.
async fn both(
    what: &str,
    timeout: Duration,
    mut gateway: impl FnMut(&serde_json::Value) -> bool,
    admin: &str,
    page: &Session,
    shown: impl AsyncFn(&Session) -> bool,
) -> (Instant, Instant) {
    let deadline = Instant::now() + timeout;
    let (mut gw_at, mut page_at) = (None, None);
    loop {
        if gw_at.is_none() && gateway(&topology(admin).await) {
            gw_at = Some(Instant::now());
        }
        if page_at.is_none() && shown(page).await {
            page_at = Some(Instant::now());
        }
        if let (Some(g), Some(p)) = (gw_at, page_at) {
            return (g, p);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: gateway {gw_at:?}, page {page_at:?}; the page's header says {:?}",
            page.text("header").await.ok()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attr(page: &Session, css: &str, name: &str) -> Option<String> {
    page.attr(css, name).await.ok().flatten()
}

/// Writes on one connection and reads on another (so replicas serve them)
/// through the gateway until stopped, reconnecting whenever a connection is
/// lost: the page then has traffic to show.
fn load(
    gateway: String,
    password: String,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    ["SET", "GET"]
        .into_iter()
        .map(|command| {
            let (gateway, password, stop) = (gateway.clone(), password.clone(), stop.clone());
            tokio::spawn(async move {
                let auth = belay_client::Auth {
                    username: None,
                    password,
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) =
                        Connection::connect(&gateway, Some(&auth), Duration::from_secs(2)).await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let key = format!("dash:{}", i % 100);
                        let args: &[&str] = if command == "SET" {
                            &["SET", &key, "v"]
                        } else {
                            &["GET", &key]
                        };
                        if c.call(args).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failover_as_it_happens() {
    let started = Instant::now();
    let driver = match Driver::start().await {
        Ok(d) => d,
        Err(e) if e.is::<Missing>() => {
            eprintln!("SKIPPED the dashboard's browser test: {e}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = LabSpec::for_tests(dir.path());
    spec.gateway = Some(GatewaySpec {
        exe: Path::new(env!("CARGO_BIN_EXE_belay")).to_path_buf(),
        port: 0,
        admin_port: Some(0),
        durable_writes: None,
        zone: None,
        read_from: None,
    });
    spec.assign_free_ports();
    let mut lab = Lab::start(spec, &NoProgress).await.unwrap();
    let admin = lab
        .gateway_admin_addr()
        .expect("the lab's gateway has an admin endpoint");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(
        lab.gateway_addr().unwrap(),
        lab.password().to_string(),
        stop.clone(),
    );

    let page = driver.session().await.unwrap();
    // A laptop screen.
    page.client().set_window_size(1440, 960).await.unwrap();
    page.goto(&format!("http://{admin}/")).await.unwrap();
    let old = lab.current_master().await.unwrap();
    let replicas_shown = |n: usize| {
        move |t: &serde_json::Value| t["replicas"].as_array().is_some_and(|r| r.len() == n)
    };
    both(
        "the page shows the master and both replicas",
        Duration::from_secs(15),
        replicas_shown(2),
        &admin,
        &page,
        async |p: &Session| {
            p.text("#master-addr").await.ok().as_deref() == Some(old.as_str())
                && attr(p, "#write-state", "data-held").await.as_deref() == Some("false")
                && p.texts("#nodes tbody tr[data-role=replica]")
                    .await
                    .is_ok_and(|r| r.len() == 2)
                && p.texts("#sentinels tbody tr")
                    .await
                    .is_ok_and(|r| r.len() == 3)
        },
    )
    .await;
    // Traffic: rates need two scrapes, a second apart.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ops = page.text("#ops-master").await.unwrap();
        let share = page.text("#read-share").await.unwrap();
        if ops != "—" && ops != "0.0" && share.ends_with('%') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no traffic shown: ops {ops:?}, read share {share:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agreement = page.text("#agreement").await.unwrap();
    assert!(agreement.starts_with("3 of 3"), "{agreement}");

    // Pause the master: the page shows writes held.
    let old_name = lab.process_by_addr(&old).unwrap().name().to_string();
    lab.pause(&old_name).unwrap();
    let (gw, shown) = both(
        "the page shows writes held",
        Duration::from_secs(20),
        |t| t["writes_held"] == true,
        &admin,
        &page,
        async |p: &Session| attr(p, "#write-state", "data-held").await.as_deref() == Some("true"),
    )
    .await;
    let held_lag = shown.saturating_duration_since(gw);
    let pill = page.text("#write-state").await.unwrap();
    assert!(pill.starts_with("writes held"), "{pill}");
    if let Some(path) = std::env::var_os("BELAY_DASHBOARD_SCREENSHOT") {
        // Wait for the timeline to show the failover under way.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let png = page.client().screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        eprintln!(
            "dashboard screenshot saved to {}",
            Path::new(&path).display()
        );
    }

    // The new master, and the failover with its blackout.
    let (gw, shown) = both(
        "the page shows a new master taking writes",
        Duration::from_secs(30),
        |t| t["writes_held"] == false && t["master"].as_str().is_some_and(|m| m != old),
        &admin,
        &page,
        async |p: &Session| {
            p.text("#master-addr")
                .await
                .is_ok_and(|m| m != old && m.contains(':'))
                && attr(p, "#write-state", "data-held").await.as_deref() == Some("false")
        },
    )
    .await;
    let new_master_lag = shown.saturating_duration_since(gw);
    let new = lab.current_master().await.unwrap();
    assert_eq!(page.text("#master-addr").await.unwrap(), new);
    let deadline = Instant::now() + SHOWN_WITHIN;
    let done = format!("#failovers > li[data-state=done][data-new-master=\"{new}\"]");
    while !page.exists(&done).await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "the timeline shows no finished failover to {new}: {:?}",
            page.text("#failovers").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let blackout: u64 = attr(&page, &done, "data-held-ms")
        .await
        .expect("the failover's write blackout")
        .parse()
        .unwrap();
    assert!(blackout > 0 && blackout < 20_000, "{blackout} ms");
    let steps = page.text(&done).await.unwrap();
    for step in [
        "fault noticed",
        "writes held",
        "+switch-master",
        "writes flow again",
        "master confirmed",
    ] {
        assert!(
            steps.contains(step),
            "no {step:?} in the timeline:\n{steps}"
        );
    }

    // The old master back, as a replica.
    lab.resume(&old_name).unwrap();
    let old_as_replica = format!("#nodes tbody tr[data-addr=\"{old}\"][data-role=replica]");
    let (gw, shown) = both(
        "the page shows the old master back as a replica",
        Duration::from_secs(30),
        |t| {
            t["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["addr"] == old.as_str()))
        },
        &admin,
        &page,
        async |p: &Session| p.exists(&old_as_replica).await.unwrap_or(false),
    )
    .await;
    let rejoin_lag = shown.saturating_duration_since(gw);
    let events = page.text("#events").await.unwrap();
    assert!(events.contains("+switch-master"), "{events}");

    for (what, lag) in [
        ("writes held", held_lag),
        ("new master", new_master_lag),
        ("old master back as a replica", rejoin_lag),
    ] {
        assert!(
            lag <= SHOWN_WITHIN,
            "the page showed {what} {lag:?} after the gateway knew it"
        );
    }
    eprintln!(
        "dashboard: shown {held_lag:?} after the gateway held writes, {new_master_lag:?} after \
         it confirmed {new}, {rejoin_lag:?} after it saw {old} back as a replica; write blackout \
         {blackout} ms; the whole test took {:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
    page.close().await.unwrap();
    driver.stop().unwrap();
    lab.stop(Duration::from_secs(10)).await.unwrap();
}

/// In front of a Redis Cluster the page shows every shard — its slots, its
/// master and replicas, whether its writes flow — and no Sentinels; when
/// one shard's master is paused, that shard alone shows writes held, then
/// its new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_shard_of_a_cluster() {
    use belay_lab::cluster::ClusterLab;
    use belay_lab::testing::cluster_gateway_spec;

    let driver = match Driver::start().await {
        Ok(d) => d,
        Err(e) if e.is::<Missing>() => {
            eprintln!("SKIPPED the dashboard's cluster browser test: {e}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = cluster_gateway_spec(dir.path(), env!("CARGO_BIN_EXE_belay").as_ref());
    let mut lab = ClusterLab::start(spec, &NoProgress).await.unwrap();
    let admin = lab
        .gateway_admin_addr()
        .expect("the lab's gateway has an admin endpoint");
    let page = driver.session().await.unwrap();
    page.client().set_window_size(1440, 960).await.unwrap();
    page.goto(&format!("http://{admin}/")).await.unwrap();
    let shards = lab.shards().await.unwrap();
    let every_shard = |held: Option<usize>| {
        let masters: Vec<String> = shards.iter().map(|s| s.master.clone()).collect();
        async move |p: &Session| {
            let rows = p.texts("#nodes tbody tr.shard").await.unwrap_or_default();
            let mut held_shown = Vec::new();
            for i in 0..rows.len() {
                let css = format!("#nodes tbody tr.shard[data-shard=\"{i}\"]");
                if attr(p, &css, "data-held").await.as_deref() == Some("true") {
                    held_shown.push(i);
                }
            }
            let master_rows = p
                .texts("#nodes tbody tr[data-role=master]")
                .await
                .unwrap_or_default();
            rows.len() == 3
                && held_shown == held.into_iter().collect::<Vec<_>>()
                && (held.is_some()
                    || masters
                        .iter()
                        .all(|m| master_rows.iter().any(|r| r.contains(m.as_str()))))
        }
    };
    both(
        "the page shows three shards, each with its master and replica",
        Duration::from_secs(15),
        |t| t["shards"].as_array().is_some_and(|s| s.len() == 3),
        &admin,
        &page,
        async |p: &Session| {
            every_shard(None)(p).await
                && p.text("#master-addr").await.ok().as_deref() == Some("3 shards")
                && p.text("#headline-label").await.ok().as_deref() == Some("cluster")
                && attr(p, "#write-state", "data-held").await.as_deref() == Some("false")
                && p.texts("#nodes tbody tr[data-role=replica]")
                    .await
                    .is_ok_and(|r| r.len() == 3)
                && !p.displayed("#sentinels-section").await.unwrap_or(true)
        },
    )
    .await;
    let first = shards[0]
        .slots
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(", ");
    let header = page
        .text("#nodes tbody tr.shard[data-shard=\"0\"]")
        .await
        .unwrap();
    assert!(header.contains(&first), "{header} does not name {first}");

    // One shard's master paused: that shard alone holds its writes.
    let old = shards[0].master.clone();
    lab.pause(&old).unwrap();
    both(
        "the page shows the first shard's writes held, and only its",
        Duration::from_secs(20),
        |t| t["shards"][0]["writes_held"] == true,
        &admin,
        &page,
        async |p: &Session| {
            every_shard(Some(0))(p).await
                && attr(p, "#write-state", "data-held").await.as_deref() == Some("true")
        },
    )
    .await;
    let new = lab
        .wait_for_failover(&old, Duration::from_secs(30))
        .await
        .unwrap();
    let new_master =
        format!("#nodes tbody tr[data-shard=\"0\"][data-role=master][data-addr=\"{new}\"]");
    both(
        "the page shows the first shard's new master taking writes",
        Duration::from_secs(30),
        |t| t["shards"][0]["master"] == new.as_str(),
        &admin,
        &page,
        async |p: &Session| {
            p.exists(&new_master).await.unwrap_or(false)
                && attr(p, "#write-state", "data-held").await.as_deref() == Some("false")
        },
    )
    .await;
    lab.resume(&old).unwrap();
    page.close().await.unwrap();
    driver.stop().unwrap();
    lab.stop(Duration::from_secs(10)).await.unwrap();
}
