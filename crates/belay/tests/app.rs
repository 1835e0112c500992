//! newsroom (`belay app`) on a real lab, over HTTP: the gateway's promises
//! as a web application sees them. Pages name the node that served them and
//! keep coming from the replicas while the master is paused; a story
//! published while the gateway holds writes is answered late, not with an
//! error, and lands on the new master; the app says why it cannot use a
//! gateway, and comes back when the gateway restarts. (`browser.rs` walks
//! the same path in a real browser.)
//!
//! Every lab is a `Lab` (its drop kills every process it started, the
//! app's included); `belay app` runs started here are killed on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::Connection;
use belay_lab::http::{self, Answer};
use belay_lab::testing::app_lab_spec;
use belay_lab::{Lab, NoProgress};

const T: Duration = Duration::from_secs(10);

fn belay() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_belay"))
}

async fn start_lab(dir: &Path) -> Lab {
    Lab::start(app_lab_spec(dir, belay()), &NoProgress)
        .await
        .expect("lab with the gateway and the app")
}

async fn publish(app: &str, title: &str) -> (Answer, serde_json::Value) {
    let body = serde_json::json!({ "title": title, "body": "Some words.\n\nMore words." });
    let a = http::post(
        app,
        "/api/stories",
        "application/json",
        body.to_string().as_bytes(),
        Duration::from_secs(40),
    )
    .await
    .expect("an HTTP answer to publishing");
    let v = serde_json::from_str(&a.body).unwrap_or(serde_json::Value::Null);
    (a, v)
}

/// One page load as a reader saw it.
#[derive(Debug)]
#[allow(dead_code)] // `path` and `error` are read by the failure messages
struct Load {
    path: String,
    status: Option<u16>,
    served_by: Option<String>,
    took: Duration,
    done: Instant,
    error: Option<String>,
}

/// Loads the front page and `story` in turn until `stop`.
async fn read_pages(app: String, story: String, stop: Arc<AtomicBool>) -> Vec<Load> {
    let mut out = Vec::new();
    let paths = ["/".to_string(), format!("/stories/{story}")];
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let path = &paths[i % 2];
        i += 1;
        let started = Instant::now();
        let r = http::get(&app, path, T).await;
        out.push(match r {
            Ok(a) => Load {
                path: path.clone(),
                status: Some(a.status),
                served_by: a.header("x-served-by").map(str::to_string),
                took: started.elapsed(),
                done: Instant::now(),
                error: None,
            },
            Err(e) => Load {
                path: path.clone(),
                status: None,
                served_by: None,
                took: started.elapsed(),
                done: Instant::now(),
                error: Some(e.to_string()),
            },
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

/// Waits until the gateway says it holds writes.
async fn wait_writes_held(lab: &Lab) {
    let gw = lab.gateway_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held = async {
            let mut c = Connection::connect(&gw, Some(&lab.auth()), Duration::from_secs(1)).await?;
            let v = c.call_ok(&["BELAY", "TOPOLOGY"]).await?;
            let view: serde_json::Value =
                serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
            Ok::<_, belay_client::ClientError>(view["writes_held"] == true)
        }
        .await;
        if held.unwrap_or(false) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never held writes after the pause"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_keep_coming_from_replicas_and_a_story_published_in_the_failover_waits_for_the_new_master(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start_lab(dir.path()).await;
    let app = lab.app().unwrap().addr();

    // Published, then read back on the connection that wrote it.
    let (a, before) = publish(&app, "Before the pause").await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(before["created"], true, "{before}");
    assert!(
        before["read_back_from"]["addr"].is_string(),
        "the read-back names its node: {before}"
    );
    let first = before["story"]["id"].as_str().unwrap().to_string();
    let page = http::get(&app, &format!("/stories/{first}"), T)
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Before the pause"), "{}", page.body);
    let by = page.header("x-served-by").unwrap_or_default().to_string();
    assert!(by.ends_with(" replica"), "X-Served-By: {by:?}");
    assert!(
        page.body
            .contains(&format!("data-node=\"{}\"", by.split(' ').next().unwrap())),
        "the footer names the same node: {}",
        page.body
    );

    // Pause the master; readers load pages throughout.
    let old = lab.current_master().await.unwrap();
    let old_name = lab.process_by_addr(&old).unwrap().name().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let readers = tokio::spawn(read_pages(app.clone(), first.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    lab.pause(&old_name).unwrap();
    wait_writes_held(&lab).await;

    // Published while the gateway holds writes: answered late, not failed.
    let sent = Instant::now();
    let (b, during) = publish(&app, "During the failover").await;
    let waited = sent.elapsed();
    let answered = Instant::now();
    assert_eq!(b.status, 201, "{}", b.body);
    let second = during["story"]["id"].as_str().unwrap().to_string();
    let new = lab
        .wait_for_failover(&old, Duration::from_secs(30))
        .await
        .unwrap();
    let mut on_new = Connection::connect(&new, Some(&lab.auth()), T)
        .await
        .unwrap();
    let title = on_new
        .call(&["HGET", &format!("story:{second}"), "title"])
        .await
        .unwrap();
    assert_eq!(
        title.as_str(),
        Some("During the failover"),
        "the story published in the failover is on the new master {new}"
    );
    assert_ne!(
        during["read_back_from"]["addr"].as_str(),
        Some(old.as_str()),
        "{during}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let loads = readers.await.unwrap();

    let failed: Vec<&Load> = loads.iter().filter(|l| l.status != Some(200)).collect();
    assert!(failed.is_empty(), "pages that did not load: {failed:#?}");
    // Pages kept coming while the story waited (a page read behind the
    // held write would have waited with it).
    let meanwhile = loads
        .iter()
        .filter(|l| l.done > sent && l.done < answered)
        .count();
    assert!(
        meanwhile >= 3,
        "only {meanwhile} page(s) loaded while the publication was held for {waited:?}"
    );
    // From the replicas, or from the new master once the gateway switched
    // to it (the remaining replica re-syncs with it for a moment); never
    // from the paused master.
    let elsewhere: Vec<&Load> = loads
        .iter()
        .filter(|l| {
            let by = l.served_by.as_deref().unwrap_or_default();
            !(by.ends_with(" replica") || by == format!("{new} master"))
        })
        .collect();
    assert!(
        elsewhere.is_empty(),
        "pages from neither a replica nor the new master {new}: {elsewhere:#?}"
    );
    let from_replicas = loads
        .iter()
        .filter(|l| {
            l.served_by
                .as_deref()
                .is_some_and(|s| s.ends_with(" replica"))
        })
        .count();
    let slowest = loads.iter().map(|l| l.took).max().unwrap();
    eprintln!(
        "{} page loads during the pause and failover, all 200 ({from_replicas} from replicas, the others from \
         the new master; {meanwhile} while the publication was held), slowest {slowest:?}; \
         the story published while writes were held answered 201 after {waited:?} \
         (sent {} time(s))",
        loads.len(),
        during["attempts"]
    );

    // The old master comes back as a replica; both stories are there.
    lab.resume(&old_name).unwrap();
    lab.wait_until_replica_of(&old_name, &new, Duration::from_secs(30))
        .await
        .unwrap();
    let deadline = Instant::now() + T;
    loop {
        let front = http::get(&app, "/api/stories", T).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&front.body).unwrap();
        let ids: Vec<&str> = v["stories"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        if ids.contains(&first.as_str()) && ids.contains(&second.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "front page: {}", front.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lab.stop(Duration::from_secs(10)).await.unwrap();
}

/// `belay app` run here, killed on drop.
struct AppRun(std::process::Child);

impl Drop for AppRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `belay app ARGS` until it exits (within 20 s): exit code, stderr.
fn app_exits(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(belay());
    cmd.arg("app").args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("BELAY_") {
            cmd.env_remove(k);
        }
    }
    let mut run = AppRun(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = run.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "belay app did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    run.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

#[test]
fn the_app_says_why_it_cannot_reach_the_gateway() {
    let port = belay_lab::reserve_block(1);
    let gw = format!("127.0.0.1:{port}");
    let (code, err) = app_exits(&[
        "--gateway",
        &gw,
        "--password",
        "x",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the gateway at {gw}: connection refused"
        )),
        "{err}"
    );
    assert!(err.contains("--gateway"), "{err}");
    let (code, err) = app_exits(&["--gateway", "nowhere", "--password", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not HOST:PORT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_refuses_a_wrong_password_and_comes_back_when_the_gateway_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start_lab(dir.path()).await;
    let app = lab.app().unwrap().addr();
    let gw = lab.gateway_addr().unwrap();

    let (code, err) = app_exits(&[
        "--gateway",
        &gw,
        "--password",
        "not-the-password",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("the gateway at {gw} refused the login")),
        "{err}"
    );

    let (a, _) = publish(&app, "Before the restart").await;
    assert_eq!(a.status, 201, "{}", a.body);

    // The gateway gone: pages say so, and why.
    lab.kill("gateway").unwrap();
    let down = http::get(&app, "/", T).await.unwrap();
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(
        down.body
            .contains(&format!("the gateway at {gw} cannot be reached")),
        "{}",
        down.body
    );
    let health = http::get(&app, "/healthz", T).await.unwrap();
    assert_eq!(health.status, 503, "{}", health.body);

    // Back: the app makes a new connection by itself.
    lab.restart("gateway").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = http::get(&app, "/", T).await.unwrap();
        if page.status == 200 {
            assert!(page.body.contains("Before the restart"), "{}", page.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the app did not come back: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (a, v) = publish(&app, "After the restart").await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(v["story"]["title"], "After the restart");
    lab.stop(Duration::from_secs(10)).await.unwrap();
}
