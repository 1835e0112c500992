//! TLS on every hop: a lab whose nodes and Sentinels speak only TLS (and
//! check client certificates), the gateway's TLS listener in front, and
//! real clients — redis-cli and redis-py — through it, also during a
//! failover.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use belay_client::{Connection, TlsClient, TlsFiles, Value};
use support::{bulk, start_with, Env};

async fn tls_env(tweak: impl FnOnce(&mut belay_gateway::GatewayConfig)) -> Env {
    start_with(|spec| spec.tls = true, tweak).await
}

/// Runs a client program off the runtime: the gateway serves on this
/// test's own thread.
async fn run(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the client runs"))
        .await
        .unwrap()
}

async fn redis_cli(env: &Env, args: &[&str]) -> std::process::Output {
    let (host, port) = env.gateway.rsplit_once(':').unwrap();
    let ca = env.lab.spec().tls_files().ca();
    let mut cmd = Command::new("redis-cli");
    cmd.args(["--tls", "--cacert", ca.to_str().unwrap()])
        .args(["-h", host, "-p", port, "--no-auth-warning", "-a"])
        .arg(env.lab.password())
        .args(args);
    run(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_and_redis_py_work_through_the_tls_gateway_to_tls_only_nodes() {
    let env = tls_env(|_| {}).await;
    // The nodes take no plaintext at all: the lab is TLS on every hop.
    let master = env.master().await;
    let plain = Connection::connect(&master, Some(&env.auth()), Duration::from_secs(2)).await;
    assert!(plain.is_err(), "a TLS-only node answered plaintext");

    let out = redis_cli(&env, &["SET", "tls:cli", "hello"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let out = redis_cli(&env, &["GET", "tls:cli"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello",
        "{out:?}"
    );

    let (host, port) = env.gateway.rsplit_once(':').unwrap();
    let script = r#"
import sys, time, redis
host, port, password, ca = sys.argv[1:5]
r = redis.Redis(host=host, port=int(port), password=password, ssl=True, ssl_ca_certs=ca,
                decode_responses=True)
pipe = r.pipeline(transaction=False)
for i in range(200):
    pipe.set(f"tls:py:{i}", i)
pipe.execute()
# Both replicas have the writes, and the gateway has sampled the master
# since (read-your-writes then lets them serve this session's reads).
assert r.execute_command("WAIT", 2, 5000) == 2
time.sleep(1.5)
got = [r.get(f"tls:py:{i}") for i in range(200)]
assert got == [str(i) for i in range(200)], got
print("ok", r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "redis-py"))
"#;
    let ca = env.lab.spec().tls_files().ca();
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            host,
            port,
            env.lab.password(),
            ca.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "redis-py over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reads went to replicas, over TLS.
    let mut replica_gets = 0;
    for replica in env.replicas().await {
        replica_gets += env.calls(&replica, "get").await;
    }
    assert!(replica_gets >= 100, "replicas served {replica_gets} GETs");
}

#[tokio::test]
async fn the_tls_listener_refuses_plaintext_and_untrusted_or_missing_client_certificates() {
    let env = tls_env(|cfg| {
        // Require client certificates signed by the lab's CA.
        cfg.tls_ca_file = cfg.backend_tls_ca_file.clone();
    })
    .await;
    let files = env.lab.spec().tls_files();
    let timeout = Duration::from_secs(3);
    // Plaintext on the TLS port: no RESP reply, the connection is closed.
    let plain = async {
        let mut c = Connection::connect(&env.gateway, None, timeout).await?;
        c.call(&["PING"]).await
    }
    .await;
    assert!(plain.is_err(), "plaintext got {plain:?}");
    // TLS without a client certificate: refused in the handshake.
    let no_cert = TlsClient::from_files(
        &TlsFiles {
            ca: Some(files.ca()),
            ..TlsFiles::default()
        },
        None,
    )
    .unwrap();
    let r = async {
        let mut c = Connection::connect_with(&env.gateway, Some(&no_cert), None, timeout).await?;
        c.call(&["PING"]).await
    }
    .await;
    assert!(r.is_err(), "no client certificate got {r:?}");
    // A client that does not trust the gateway's certificate stops itself.
    let other = tempfile::tempdir().unwrap();
    let other_ca = belay_lab::tls::LabTls::in_state_dir(other.path());
    other_ca.generate(&["127.0.0.1".into()]).unwrap();
    let r = Connection::connect_with(
        &env.gateway,
        Some(&other_ca.client().unwrap()),
        None,
        timeout,
    )
    .await;
    assert!(
        matches!(r, Err(belay_client::ClientError::Tls { .. })),
        "an untrusted certificate was accepted: {:?}",
        r.err()
    );
    // With the lab's client certificate: served.
    let mut c = env.client().await;
    assert_eq!(
        c.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
    c.call_ok(&["SET", "k", "v"]).await.unwrap();
    assert_eq!(c.call(&["GET", "k"]).await.unwrap(), bulk("v"));
}

#[tokio::test]
async fn writes_are_held_through_a_failover_over_tls() {
    let mut env = tls_env(|_| {}).await;
    let mut c = env.client().await;
    c.call_ok(&["SET", "before", "1"]).await.unwrap();
    let old = env.master().await;
    let name = env.name_of(&old);
    env.lab.pause(&name).unwrap();
    // Once the gateway holds writes (the paused master is silent), each
    // write is held, then acknowledged once the new master is confirmed.
    let mut topology = env.topology.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        topology.wait_for(|t| t.write_hold.is_some()),
    )
    .await
    .expect("writes held within 10 s")
    .unwrap();
    let started = Instant::now();
    for i in 0..5 {
        let r = c.call(&["INCR", "counter"]).await.unwrap();
        assert_eq!(r, Value::Integer(i + 1), "write {i} during the failover");
    }
    let new = env
        .lab
        .wait_for_failover(&old, Duration::from_secs(20))
        .await
        .unwrap();
    assert_ne!(new, old);
    assert!(started.elapsed() < Duration::from_secs(20));
    env.lab.resume(&name).unwrap();
    assert_eq!(c.call(&["GET", "before"]).await.unwrap(), bulk("1"));
    let mut direct = env.node(&new).await;
    assert_eq!(direct.call(&["GET", "counter"]).await.unwrap(), bulk("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_new_certificates_in_use_and_keeps_the_old_on_a_bad_file() {
    let (_dir, lab) = support::start_lab(|spec| spec.tls = true).await;
    let cfg = support::gateway_config(&lab);
    let gw = belay_gateway::Gateway::bind(cfg.clone()).await.unwrap();
    let live = gw.config();
    let addr = gw.local_addr().to_string();
    gw.wait_ready(2, Duration::from_secs(20)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = gw.run(std::future::pending()).await;
    });
    let auth = lab.auth();
    let timeout = Duration::from_secs(5);
    let mut before = Connection::connect_with(&addr, lab.tls(), Some(&auth), timeout)
        .await
        .unwrap();

    // New certificates from another CA, in new files.
    let other = tempfile::tempdir().unwrap();
    let rotated = belay_lab::tls::LabTls::in_state_dir(other.path());
    rotated.generate(&["127.0.0.1".into()]).unwrap();
    let rotated_client = rotated.client().unwrap();
    let mut new = cfg.clone();
    new.tls_cert_file = Some(rotated.server_cert());
    new.tls_key_file = Some(rotated.server_key());
    let done = live.apply(new).unwrap();
    assert!(done.applied.contains(&"tls_cert_file"), "{done:?}");

    // The client connected before carries on.
    before.call_ok(&["SET", "k", "v"]).await.unwrap();
    // New handshakes get the new certificate.
    let mut c = Connection::connect_with(&addr, Some(&rotated_client), Some(&auth), timeout)
        .await
        .expect("a client of the new CA gets in");
    assert_eq!(c.call(&["GET", "k"]).await.unwrap(), bulk("v"));
    let old = Connection::connect_with(&addr, lab.tls(), Some(&auth), timeout).await;
    assert!(
        matches!(old, Err(belay_client::ClientError::Tls { .. })),
        "the old certificate is still served: {:?}",
        old.err()
    );

    // A missing file is refused, and what runs stays.
    let mut bad = cfg.clone();
    bad.tls_cert_file = Some(other.path().join("missing.crt"));
    let err = live.apply(bad).unwrap_err().to_string();
    assert!(err.contains("missing.crt"), "{err}");
    Connection::connect_with(&addr, Some(&rotated_client), Some(&auth), timeout)
        .await
        .expect("the certificate in use is kept");
    task.abort();
}
