//! The admin endpoint seen from outside, over HTTP, against a real lab:
//! Prometheus metrics that count what clients did, the topology, health
//! and readiness, the event stream through a failover, and the rules for
//! where it may listen and who may ask.

mod support;

use std::time::{Duration, Instant};

use belay_client::Value;
use belay_gateway::{Gateway, GatewayConfig};
use futures::StreamExt;
use support::{gateway_config, start};

fn url(env: &support::Env, path: &str) -> String {
    format!(
        "http://{}{path}",
        env.admin.as_ref().expect("admin endpoint on")
    )
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("the admin endpoint answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the sample `line_start` (name and labels) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

/// Scrapes until `pred` holds for the exposition (a session flushes its
/// counts once per turn of its loop, just after its replies).
async fn metrics_until(env: &support::Env, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = get(&url(env, "/metrics")).await;
        assert_eq!(status, 200);
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_topology_and_health_say_what_clients_did() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let mut c = env.client().await;
    for i in 0..20 {
        c.call(&["SET", &format!("k{i}"), "v"]).await.unwrap();
    }
    // Another connection reads (no writes of its own: replicas serve it).
    let mut reader = env.client().await;
    for i in 0..30 {
        reader.call(&["GET", &format!("k{i}")]).await.unwrap();
    }
    // A read right after a write on the same connection goes to the master
    // (read-your-writes), and is counted as such.
    c.call(&["SET", "fresh", "1"]).await.unwrap();
    let read = c.call(&["GET", "fresh"]).await.unwrap();
    assert_eq!(read, support::bulk("1"));
    // A failed login and a refused command.
    let mut stranger =
        belay_client::Connection::connect(&env.gateway, None, Duration::from_secs(5))
            .await
            .unwrap();
    let wrong = stranger.call(&["AUTH", "not-the-password"]).await.unwrap();
    assert!(matches!(wrong, Value::Error(_)), "{wrong:?}");
    let refused = c.call(&["MONITOR"]).await.unwrap();
    assert!(matches!(refused, Value::Error(_)), "{refused:?}");

    let text = metrics_until(&env, "the commands counted", |t| {
        sample(
            t,
            "belay_commands_total{class=\"write\",destination=\"master\"}",
        )
        .is_some_and(|n| n >= 21.0)
            && sample(
                t,
                "belay_commands_total{class=\"read\",destination=\"replica\"}",
            )
            .is_some_and(|n| n >= 30.0)
    })
    .await;
    for line in [
        "# TYPE belay_commands counter",
        "# TYPE belay_backend_request_duration_seconds histogram",
        "# UNIT belay_backend_request_duration_seconds seconds",
        "# TYPE belay_replica_lag_seconds gauge",
        "# TYPE belay_replica_lag_bytes gauge",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
    let at_least = |line: &str, n: f64| {
        let v = sample(&text, line).unwrap_or_else(|| panic!("no {line}:\n{text}"));
        assert!(v >= n, "{line} = {v}, expected at least {n}");
    };
    at_least("belay_read_your_writes_fallbacks_total", 1.0);
    at_least("belay_errors_total{kind=\"auth\"}", 1.0);
    at_least("belay_errors_total{kind=\"denied\"}", 1.0);
    at_least("belay_client_connections", 3.0);
    at_least(
        "belay_backend_request_duration_seconds_count{destination=\"master\"}",
        21.0,
    );
    at_least(
        "belay_backend_request_duration_seconds_count{destination=\"replica\"}",
        1.0,
    );
    at_least(
        &format!("belay_node_commands_total{{node=\"{master}\",role=\"master\"}}"),
        21.0,
    );
    assert_eq!(sample(&text, "belay_writes_held"), Some(0.0), "{text}");
    for replica in env.replicas().await {
        assert_eq!(
            sample(
                &text,
                &format!("belay_replica_eligible{{node=\"{replica}\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            sample(
                &text,
                &format!("belay_replica_lag_bytes{{node=\"{replica}\"}}")
            )
            .is_some(),
            "{text}"
        );
    }
    // Nothing per key or per client.
    assert!(!text.contains("k1"), "{text}");

    let (status, topo) = get(&url(&env, "/topology")).await;
    assert_eq!(status, 200);
    let topo: serde_json::Value = serde_json::from_str(&topo).unwrap();
    assert_eq!(topo["master"], master.as_str());
    assert_eq!(topo["writes_held"], false);
    assert_eq!(topo["replicas"].as_array().unwrap().len(), 2);
    let sentinels = topo["sentinels"].as_array().unwrap();
    assert_eq!(sentinels.len(), 3, "{topo}");
    for s in sentinels {
        assert_eq!(s["master"], master.as_str(), "{s}");
        assert_eq!(s["agrees"], true, "{s}");
    }
    assert_eq!(get(&url(&env, "/healthz")).await, (200, "ok\n".into()));
    let (status, ready) = get(&url(&env, "/readyz")).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains(&master), "{ready}");
    // The dashboard and its assets are served from the binary.
    let (status, page) = get(&url(&env, "/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"dashboard.js\">"), "{page}");
    for asset in ["/dashboard.js", "/dashboard.css"] {
        let (status, body) = get(&url(&env, asset)).await;
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 1000, "{asset}");
    }
}

/// The event stream and readiness through a Sentinel failover: writes
/// held, then released, the new master confirmed, the failover timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_and_readiness_follow_a_failover() {
    let env = start(|_| {}).await;
    let old = env.master().await;
    let events = reqwest::get(url(&env, "/events")).await.unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = events.bytes_stream();

    // Readiness polled all along: not ready while writes are held.
    let ready_url = url(&env, "/readyz");
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.is_cancelled() {
                let (status, body) = get(&ready_url).await;
                if seen.last().map(|(s, _)| *s) != Some(status) {
                    seen.push((status, body));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    let new = env.sentinel_failover().await;
    assert_ne!(old, new);

    // Read events until the failover is done, in the order they came.
    let mut kinds: Vec<(String, serde_json::Value)> = Vec::new();
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !kinds
        .iter()
        .any(|(k, d)| k == "failover" && d["detail"]["phase"] == "done")
    {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the failover's events arrive")
            .expect("the stream stays open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let kind = frame
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(|k| k.trim().to_string());
            let data = frame.lines().find_map(|l| l.strip_prefix("data:"));
            if let (Some(kind), Some(data)) = (kind, data) {
                kinds.push((kind, serde_json::from_str(data.trim()).unwrap()));
            }
        }
    }
    let position = |pred: &dyn Fn(&(String, serde_json::Value)) -> bool, what: &str| {
        kinds
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} event in {kinds:#?}"))
    };
    let first_master = position(&|(k, _)| k == "master", "first master");
    let noticed = position(
        &|(k, d)| k == "failover" && d["detail"]["phase"] == "noticed",
        "failover noticed",
    );
    let hold = position(&|(k, _)| k == "hold", "hold");
    let switch = position(
        &|(k, d)| k == "sentinel" && d["detail"]["channel"] == "+switch-master",
        "+switch-master",
    );
    let release = position(&|(k, _)| k == "release", "release");
    let confirmed = position(
        &|(k, d)| k == "master" && d["detail"]["addr"] == new.as_str(),
        "new master confirmed",
    );
    let done = kinds.len() - 1;
    assert_eq!(kinds[first_master].1["detail"]["addr"], old.as_str());
    assert!(
        first_master < noticed
            && noticed <= hold
            && hold < release
            && switch < confirmed
            && confirmed < done,
        "{kinds:#?}"
    );
    assert_eq!(kinds[done].1["detail"]["master"], new.as_str());

    let text = metrics_until(&env, "the failover counted", |t| {
        sample(t, "belay_failovers_total") == Some(1.0)
    })
    .await;
    assert!(
        sample(&text, "belay_write_hold_duration_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "belay_writes_held"), Some(0.0), "{text}");

    // The timeline: one failover, over, old master to new, timed.
    let (status, failovers) = get(&url(&env, "/failovers")).await;
    assert_eq!(status, 200);
    let failovers: serde_json::Value = serde_json::from_str(&failovers).unwrap();
    let e = &failovers[0];
    assert_eq!(failovers.as_array().unwrap().len(), 1, "{failovers:#}");
    assert_eq!(e["failover"], true, "{e:#}");
    assert_eq!(e["ongoing"], false, "{e:#}");
    assert_eq!(e["old_master"], old.as_str(), "{e:#}");
    assert_eq!(e["new_master"], new.as_str(), "{e:#}");
    let held = e["held_ms"].as_u64().expect("the write blackout");
    assert!(held > 0 && held < 15_000, "{e:#}");
    assert!(e["switch_master_at_ms"].is_u64(), "{e:#}");

    // Readiness: ready, not ready while held (with the reason), ready again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let seen = poller.await.unwrap();
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 503, 200], "{seen:#?}");
    assert!(seen[1].1.contains("writes are held"), "{seen:#?}");
    assert!(seen[2].1.contains(&new), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_needs_a_password_off_loopback() {
    let env = start(|cfg| {
        cfg.admin_listen = Some("127.0.0.1:0".into());
        cfg.admin_password = Some("admin-secret".into());
    })
    .await;
    let client = reqwest::Client::new();
    for path in [
        "/metrics",
        "/topology",
        "/",
        "/events",
        "/readyz",
        "/healthz",
    ] {
        let r = client.get(url(&env, path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
        let wrong = client
            .get(url(&env, path))
            .bearer_auth("admin-secre")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    let bearer = client
        .get(url(&env, "/metrics"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let basic = client
        .get(url(&env, "/topology"))
        .basic_auth("anyone", Some("admin-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);

    // Reachable from other machines without a password: refused, clearly.
    let mut open = gateway_config(&env.lab);
    open.admin_listen = Some("0.0.0.0:0".into());
    let err = Gateway::bind(open)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("without a password"), "{err}");
    assert!(err.contains("--admin-password-file"), "{err}");
    // The default next to a public client address stays on loopback.
    let public = GatewayConfig {
        listen: "0.0.0.0:0".into(),
        ..gateway_config(&env.lab)
    };
    let gw = Gateway::bind(public).await.unwrap();
    assert!(gw.admin_addr().unwrap().ip().is_loopback());
    drop(gw);
    // Off when asked.
    let mut off = gateway_config(&env.lab);
    off.no_admin = true;
    let gw = Gateway::bind(off).await.unwrap();
    assert_eq!(gw.admin_addr(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_is_one_post_away() {
    let env = start(|_| {}).await;
    let old = env.master().await;
    let http = reqwest::Client::new();
    // Only a JSON body starts one: a web page cannot send that to another
    // origin without a preflight, which the endpoint never answers.
    let r = http
        .post(url(&env, "/switchover"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("to=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = http
        .post(url(&env, "/switchover"))
        .header("content-type", "application/json")
        .body(r#"{"to": "127.0.0.1:1"}"#)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a healthy replica"),
        "{body}"
    );
    assert_eq!(
        env.master().await,
        old,
        "a refused switchover changes nothing"
    );

    let r = http
        .post(url(&env, "/switchover"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["old_master"].as_str(), Some(old.as_str()), "{body}");
    let new = body["new_master"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(body["old_master_demoted"], true, "{body}");
    assert!(body["steps"].as_array().unwrap().len() >= 4, "{body}");
    // Writes through the gateway land on the new master.
    let mut c = env.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.call(&["SET", "after:switchover", "1"]).await.unwrap() != Value::Simple("OK".into()) {
        assert!(Instant::now() < deadline, "no write after the switchover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.node(&new)
            .await
            .call(&["GET", "after:switchover"])
            .await
            .unwrap(),
        support::bulk("1")
    );
}
