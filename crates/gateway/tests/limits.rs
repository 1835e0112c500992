//! What one client can cost the gateway: its unread replies are bounded in
//! bytes, a huge request or reply costs time linear in its size, and
//! clients in other contexts (RESP3, another database) share backend
//! connections like default clients do.

mod support;

use std::time::{Duration, Instant};

use belay_client::Value;
use support::{bulk, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A client that pipelines GETs of a 1 MB value and never reads is closed
/// once the replies held for it pass its output limit; the gateway's memory
/// stays near that limit, and other clients are not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_closed_at_its_output_limit() {
    let env = start(|cfg| {
        cfg.client_output_buffer_limit_normal = "8mb 0 0".into();
        cfg.max_pipeline = 10_000;
    })
    .await;
    let mut good = env.client().await;
    good.call_ok(&["SET", "big", &"x".repeat(1 << 20)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss();
    let mut slow = tokio::net::TcpStream::connect(&env.gateway).await.unwrap();
    let pw = env.lab.password();
    slow.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len()).as_bytes())
        .await
        .unwrap();
    // 1,000 replies of 1 MB asked for: 1 GB if the gateway kept them.
    let gets = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(1000);
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.write_all(&gets)).await;
    // Others carry on meanwhile.
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(
            good.call(&["PING"]).await.unwrap(),
            Value::Simple("PONG".into())
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grew = rss().saturating_sub(before);
    // Drain: the gateway closed it after far fewer than 1,000 replies.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => total += n,
            Err(_) => break false,
        }
    };
    assert!(closed, "the client that does not read was closed");
    assert!(
        total < 100 << 20,
        "it got {total} bytes before being closed"
    );
    eprintln!(
        "the test process grew by {} MiB while the client did not read",
        grew >> 20
    );
    assert!(
        grew < 24 << 20,
        "memory grew by {} MiB for a client with an 8 MiB limit",
        grew >> 20
    );
    assert_eq!(
        good.call(&["GET", "big"])
            .await
            .unwrap()
            .as_str()
            .map(|s| s.len()),
        Some(1 << 20)
    );
}

/// Clients that switched protocol (`HELLO 3`, which go-redis and Lettuce
/// send on every connection) or database share backend connections per
/// context: a thousand of them need a handful of connections per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_in_other_contexts_share_backend_connections() {
    let env = start(|_| {}).await;
    let nodes: Vec<String> = env.lab.data_nodes().iter().map(|p| p.addr()).collect();
    let mut before = Vec::new();
    for n in &nodes {
        before.push(client_count(&env, n).await);
    }
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut c = env.client().await;
        if i % 2 == 0 {
            c.call(&["HELLO", "3"]).await.unwrap();
        } else {
            c.call_ok(&["SELECT", "2"]).await.unwrap();
        }
        assert!(!c
            .call(&["SET", &format!("ctx:{i}"), "v"])
            .await
            .unwrap()
            .is_error());
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in clients.iter_mut().step_by(10) {
        assert!(!c.call(&["GET", "ctx:0"]).await.unwrap().is_error());
    }
    for (n, before) in nodes.iter().zip(before) {
        let now = client_count(&env, n).await;
        eprintln!(
            "{n}: {} backend connections for 1,000 clients in 2 contexts",
            now - before
        );
        assert!(
            now - before <= 12,
            "{n} has {} more connections for 1,000 clients",
            now - before
        );
    }
    drop(clients);
}

async fn client_count(env: &support::Env, node: &str) -> usize {
    let list = env
        .node(node)
        .await
        .call_ok(&["CLIENT", "LIST", "TYPE", "normal"])
        .await
        .unwrap()
        .to_text()
        .unwrap();
    list.lines().count()
}

/// A request of a million arguments sent in small pieces, and a reply of a
/// million items, cost time linear in their size (the parser resumes where
/// it stopped); the gateway answers others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_requests_and_replies_in_pieces() {
    let env = start(|_| {}).await;
    let mut c = env.client().await;
    c.set_timeout(Duration::from_secs(60));
    // A million-argument RPUSH, written 1 KB at a time.
    let mut args: Vec<String> = vec!["RPUSH".into(), "huge".into()];
    args.extend((0..1_000_000).map(|i| format!("{i}")));
    let request = belay_resp::encode_command(&args);
    let mut s = tokio::net::TcpStream::connect(&env.gateway).await.unwrap();
    let pw = env.lab.password();
    s.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len()).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for chunk in request.chunks(1024) {
            s.write_all(chunk).await.unwrap();
        }
        let mut buf = vec![0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b":1000000\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    // Others are served while it arrives.
    while !writer.is_finished() {
        let t = Instant::now();
        assert_eq!(
            c.call(&["PING"]).await.unwrap(),
            Value::Simple("PONG".into())
        );
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = writer.await.unwrap();
    assert!(
        got.starts_with(b"+OK\r\n:1000000\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    eprintln!(
        "a 1,000,000-argument request in 1 KB pieces took {:?}",
        started.elapsed()
    );
    // And the million items back, in one reply.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let reply = c.call(&["LRANGE", "huge", "0", "-1"]).await.unwrap();
    assert_eq!(reply.as_array().map(|a| a.len()), Some(1_000_000));
    assert_eq!(reply.as_array().unwrap()[999_999], bulk("999999"));
    eprintln!("LRANGE of 1,000,000 items took {:?}", started.elapsed());
}
