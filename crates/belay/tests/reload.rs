//! Reload and upgrade of `belay gateway`, on real processes: a lab (real
//! Redis and Sentinels) and gateway processes from the CLI binary.
//!
//! - SIGHUP and `POST /reload` apply a changed config file to a running
//!   gateway without dropping its clients; a bad file is refused and the
//!   running config kept; a setting that needs a restart is named.
//! - `belay gateway --upgrade` takes the listening sockets over under
//!   load: no command of a reconnecting client fails, no acknowledged
//!   write is lost, the old process drains and exits 0.
//!
//! Every gateway started here is killed and reaped on drop; the lab's own
//! drop does the same for Redis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use belay_client::{Auth, Connection};
use belay_lab::{Lab, LabSpec, NoProgress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn belay() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_belay"))
}

/// A `belay gateway` process, killed and reaped on drop.
struct GatewayProcess(Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl GatewayProcess {
    fn start(args: &[String]) -> GatewayProcess {
        let child = Command::new(belay())
            .arg("gateway")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .spawn()
            .expect("start belay gateway");
        GatewayProcess(child)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the process to exit; its status, or `None` on timeout.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_lab(dir: &Path) -> Lab {
    let mut spec = LabSpec::for_tests(dir);
    spec.assign_free_ports();
    Lab::start(spec, &NoProgress).await.expect("lab")
}

/// Waits until `addr` answers PING after AUTH with `password`.
async fn wait_serving(addr: &str, password: &str) {
    let auth = Auth {
        username: None,
        password: password.into(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Connection::connect(addr, Some(&auth), Duration::from_secs(1)).await {
            if c.call_ok(&["PING"]).await.is_ok() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway at {addr} never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a new connection to `addr` gets in with `password`.
async fn logs_in(addr: &str, password: &str) -> bool {
    let auth = Auth {
        username: None,
        password: password.into(),
    };
    match Connection::connect(addr, Some(&auth), Duration::from_secs(2)).await {
        Ok(mut c) => c.call_ok(&["PING"]).await.is_ok(),
        Err(_) => false,
    }
}

fn write_config(path: &Path, lab: &Lab, extra: &str) {
    let sentinels: Vec<String> = lab
        .sentinel_addrs()
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    std::fs::write(
        path,
        format!(
            "sentinels = [{}]\nmaster_name = {:?}\n{extra}\n",
            sentinels.join(", "),
            lab.master_name()
        ),
    )
    .unwrap();
}

async fn post_reload(admin: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_apply_a_new_config_without_dropping_clients() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path()).await;
    let config = dir.path().join("gateway.toml");
    write_config(&config, &lab, "client_password = \"first\"");
    let (port, admin_port) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let gateway = GatewayProcess::start(&[
        "--config".into(),
        config.display().to_string(),
        "--password".into(),
        lab.password().into(),
        "--listen".into(),
        addr.clone(),
        "--admin-listen".into(),
        admin.clone(),
    ]);
    wait_serving(&addr, "first").await;
    let first = Auth {
        username: None,
        password: "first".into(),
    };
    let mut kept = Connection::connect(&addr, Some(&first), Duration::from_secs(2))
        .await
        .unwrap();
    kept.call(&["SET", "reload:k", "v1"]).await.unwrap();

    // SIGHUP: the new client password is required of new clients; the
    // connected client stays, logged in.
    write_config(&config, &lab, "client_password = \"second\"");
    gateway.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs_in(&addr, "second").await {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the new password"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !logs_in(&addr, "first").await,
        "the old password still works"
    );
    let v = kept.call(&["GET", "reload:k"]).await.unwrap();
    assert_eq!(v.as_str(), Some("v1"));

    // A file that does not parse: refused, said why, the running config kept.
    std::fs::write(&config, "sentinels = [\"a:1\"\nclient_password = ").unwrap();
    let (status, body) = post_reload(&admin).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("rejected") && error.contains("line"),
        "{error}"
    );
    assert!(logs_in(&addr, "second").await);

    // A file that parses but does not validate: refused too.
    write_config(
        &config,
        &lab,
        "client_password = \"third\"\nrequest_timeout_ms = 0",
    );
    let (status, body) = post_reload(&admin).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("--request-timeout-ms"));
    assert!(logs_in(&addr, "second").await && !logs_in(&addr, "third").await);

    // A setting that needs a restart is named, not applied; the others are,
    // command overrides included. (`listen` in the file would not count:
    // the flag wins, as at start.)
    assert_eq!(
        kept.call(&["STRLEN", "reload:k"]).await.unwrap().as_int(),
        Some(2)
    );
    write_config(
        &config,
        &lab,
        "client_password = \"third\"\nlisten = \"127.0.0.1:1\"\nthreads = 3\nmax_clients = 7\nmax_replica_lag_ms = 400\n[commands]\n\"strlen\" = \"deny\"",
    );
    let (status, body) = post_reload(&admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["needs_restart"],
        serde_json::json!(["threads", "max_clients"])
    );
    assert_eq!(
        body["applied"],
        serde_json::json!(["client_password", "max_replica_lag_ms", "commands"])
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while kept.call_ok(&["STRLEN", "reload:k"]).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the reloaded override does not deny STRLEN"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logs_in(&addr, "third").await);
    let v = kept.call(&["GET", "reload:k"]).await.unwrap();
    assert_eq!(
        v.as_str(),
        Some("v1"),
        "the first client is still connected"
    );
    drop(gateway);
}

/// A client the way pooled client libraries behave (redis-py's pool
/// checks a connection for an end of stream before reusing it): it opens
/// a new connection when the server has closed the one it has, and never
/// sends a command twice.
struct ReconnectingClient {
    addr: String,
    password: String,
    conn: Option<TcpStream>,
}

impl ReconnectingClient {
    async fn connected(&mut self) -> std::io::Result<&mut TcpStream> {
        if let Some(c) = &self.conn {
            let mut probe = [0u8; 1];
            match c.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => self.conn = None, // closed (or unexpected bytes)
            }
        }
        if self.conn.is_none() {
            let mut c = TcpStream::connect(&self.addr).await?;
            c.set_nodelay(true)?;
            let auth = resp(&["AUTH", &self.password]);
            c.write_all(&auth).await?;
            expect_ok(&mut c).await?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().unwrap())
    }

    /// `SET key value`: Ok on `+OK`; any failure after sending is an error
    /// (the command may have run).
    async fn set(&mut self, key: &str, value: &str) -> std::io::Result<()> {
        let c = self.connected().await?;
        c.write_all(&resp(&["SET", key, value])).await?;
        let r = expect_ok(c).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

async fn expect_ok(c: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).await?;
    if &buf != b"+OK\r\n" {
        return Err(std::io::Error::other(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&buf)
        )));
    }
    Ok(())
}

/// What the load saw: acknowledged keys, failures, and the longest gap
/// between two successful commands of any client.
#[derive(Default)]
struct LoadReport {
    acked: Vec<String>,
    failures: Vec<String>,
    completions: Vec<Instant>,
}

async fn run_load(
    addr: String,
    password: String,
    clients: usize,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
) {
    let mut tasks = Vec::new();
    for n in 0..clients {
        let (addr, password, stop, report) =
            (addr.clone(), password.clone(), stop.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = ReconnectingClient {
                addr,
                password,
                conn: None,
            };
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("upgrade:{n}:{i}");
                let result = client.set(&key, &i.to_string()).await;
                let now = Instant::now();
                let mut r = report.lock().unwrap();
                match result {
                    Ok(()) => {
                        r.acked.push(key);
                        r.completions.push(now);
                    }
                    Err(e) => r.failures.push(format!("{key}: {e}")),
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn longest_gap(completions: &mut [Instant]) -> Duration {
    completions.sort();
    completions
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_fails_no_reconnecting_client_and_loses_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path()).await;
    let config = dir.path().join("gateway.toml");
    write_config(&config, &lab, "");
    let socket: PathBuf = dir.path().join("gateway.upgrade.sock");
    let (port, admin_port) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{port}");
    let args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--password".into(),
        lab.password().into(),
        "--listen".into(),
        addr.clone(),
        "--admin-listen".into(),
        format!("127.0.0.1:{admin_port}"),
        "--threads".into(),
        "2".into(),
        "--upgrade-socket".into(),
        socket.display().to_string(),
    ];
    let mut old = GatewayProcess::start(&args);
    wait_serving(&addr, lab.password()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let load = tokio::spawn(run_load(
        addr.clone(),
        lab.password().into(),
        8,
        stop.clone(),
        report.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut upgrade_args = args.clone();
    upgrade_args.push("--upgrade".into());
    let upgraded_at = Instant::now();
    let new = GatewayProcess::start(&upgrade_args);
    let status = tokio::task::spawn_blocking(move || {
        let status = old.wait_exit(Duration::from_secs(40));
        (status, old)
    })
    .await
    .unwrap();
    let old_exit = status
        .0
        .expect("the old gateway did not exit after the upgrade");
    assert!(old_exit.success(), "the old gateway exited with {old_exit}");
    let took = upgraded_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let mut r = std::mem::take(&mut *report.lock().unwrap());
    let blackout = longest_gap(&mut r.completions);
    eprintln!(
        "upgrade under load: {} writes acknowledged, {} failed, longest gap between successes {:?}, old gateway gone {:?} after the new one started",
        r.acked.len(),
        r.failures.len(),
        blackout,
        took
    );
    assert!(
        r.failures.is_empty(),
        "failed commands: {:?}",
        &r.failures[..r.failures.len().min(10)]
    );
    assert!(r.acked.len() > 1000, "too little load to say anything");

    // Every acknowledged write is on the master.
    let master = lab.current_master().await.unwrap();
    let mut m = Connection::connect(&master, Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    let mut lost = Vec::new();
    for key in &r.acked {
        let v = m.call(&["EXISTS", key.as_str()]).await.unwrap();
        if v.as_int() != Some(1) {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // The new gateway serves on the same address.
    wait_serving(&addr, lab.password()).await;
    drop(new);
}

/// A lab, and a gateway process in front of it on a free port with
/// `drain_timeout_secs`, serving.
async fn lab_and_gateway(dir: &Path, drain_timeout_secs: u64) -> (Lab, String, GatewayProcess) {
    let lab = start_lab(dir).await;
    let config = dir.join("gateway.toml");
    write_config(
        &config,
        &lab,
        &format!("drain_timeout_secs = {drain_timeout_secs}"),
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = GatewayProcess::start(&[
        "--config".into(),
        config.display().to_string(),
        "--password".into(),
        lab.password().into(),
        "--listen".into(),
        addr.clone(),
        "--no-admin".into(),
    ]);
    wait_serving(&addr, lab.password()).await;
    (lab, addr, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_blocking_command_and_a_transaction_get_their_replies_first() {
    let dir = tempfile::tempdir().unwrap();
    let (lab, addr, mut gateway) = lab_and_gateway(dir.path(), 20).await;
    let auth = lab.auth();
    let connect = || Connection::connect(&addr, Some(&auth), Duration::from_secs(2));
    let mut blocked = connect().await.unwrap();
    blocked.set_timeout(Duration::from_secs(30));
    blocked.send(&["BLPOP", "drain:list", "0"]).await.unwrap();
    let mut tx = connect().await.unwrap();
    tx.call(&["MULTI"]).await.unwrap();
    assert_eq!(
        tx.call(&["SET", "drain:tx", "1"]).await.unwrap().as_str(),
        Some("QUEUED")
    );
    let mut idle = connect().await.unwrap();
    idle.call(&["PING"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    // An idle client is closed after a second of quiet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // An idle client is closed (in order: it reads the end of the stream),
    // no new client is taken, and the gateway waits for the other two.
    assert!(
        idle.call(&["PING"]).await.is_err(),
        "the idle client was not closed"
    );
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "a draining gateway still accepts clients"
    );
    assert!(
        gateway.0.try_wait().unwrap().is_none(),
        "the gateway exited with replies owed"
    );

    // The blocked command gets its reply once there is something to pop.
    let master = lab.current_master().await.unwrap();
    let mut m = Connection::connect(&master, Some(&auth), Duration::from_secs(2))
        .await
        .unwrap();
    m.call(&["RPUSH", "drain:list", "x"]).await.unwrap();
    let popped = blocked.read_value().await.unwrap();
    assert_eq!(
        format!("{popped:?}").matches("drain:list").count(),
        1,
        "{popped:?}"
    );
    // The transaction finishes: EXEC runs it.
    let exec = tx.call(&["EXEC"]).await.unwrap();
    assert!(exec.as_array().is_some_and(|a| a.len() == 1), "{exec:?}");
    let v = m.call(&["GET", "drain:tx"]).await.unwrap();
    assert_eq!(v.as_str(), Some("1"));

    let status = tokio::task::spawn_blocking(move || {
        let s = gateway.wait_exit(Duration::from_secs(10));
        (s, gateway)
    })
    .await
    .unwrap()
    .0
    .expect("the gateway did not exit once its clients were answered");
    assert!(status.success(), "{status}");
}

/// A subscriber does not hold a draining gateway up until its drain
/// timeout: it gets every message published before, then the end of the
/// stream between two messages (a client subscribes again through the
/// gateway that replaces this one), and the gateway exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_a_subscriber_between_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (lab, addr, mut gateway) = lab_and_gateway(dir.path(), 30).await;
    let auth = lab.auth();
    let mut sub = Connection::connect(&addr, Some(&auth), Duration::from_secs(2))
        .await
        .unwrap();
    sub.set_timeout(Duration::from_secs(40));
    sub.send(&["SUBSCRIBE", "drain:news"]).await.unwrap();
    sub.read_value().await.unwrap();
    let master = lab.current_master().await.unwrap();
    let mut m = Connection::connect(&master, Some(&auth), Duration::from_secs(2))
        .await
        .unwrap();
    // Messages keep coming while the gateway drains.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                m.call(&["PUBLISH", "drain:news", &format!("{n:06}")])
                    .await
                    .unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    // Messages in order, each whole, then the end of the stream.
    let mut next = 0u64;
    let end = loop {
        match sub.read_value().await {
            Ok(v) => {
                let got = v
                    .as_array()
                    .and_then(|a| a.get(2))
                    .and_then(|m| m.to_text());
                assert_eq!(got, Some(format!("{next:06}")), "{v:?}");
                next += 1;
            }
            Err(e) => break e,
        }
    };
    let closed_after = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    assert!(next > 0 && next <= published, "{next} of {published}");
    assert!(
        closed_after < Duration::from_secs(5),
        "the subscriber was closed {closed_after:?} after SIGTERM ({end})"
    );
    let status = tokio::task::spawn_blocking(move || gateway.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the gateway did not exit once its subscriber was closed");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_right_sentinels_brings_up_a_gateway_started_with_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path()).await;
    let config = dir.path().join("gateway.toml");
    let nobody = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &config,
        format!(
            "sentinels = [{nobody:?}]\nmaster_name = {:?}\n",
            lab.master_name()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let gateway = GatewayProcess::start(&[
        "--config".into(),
        config.display().to_string(),
        "--password".into(),
        lab.password().into(),
        "--listen".into(),
        addr.clone(),
        "--admin-listen".into(),
        admin.clone(),
    ]);
    let readyz = || async {
        match reqwest::get(format!("http://{admin}/readyz")).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz().await != 503 {
        assert!(
            Instant::now() < deadline,
            "the admin endpoint never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(readyz().await, 503, "ready without a Sentinel that answers");

    write_config(&config, &lab, "");
    gateway.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    while readyz().await != 200 {
        assert!(
            Instant::now() < deadline,
            "the reloaded Sentinels were not asked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = Connection::connect(&addr, Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    c.call(&["SET", "reload:sentinels", "1"]).await.unwrap();
    drop(gateway);
}
