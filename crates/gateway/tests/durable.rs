//! Durable writes (`durable_writes`): a write is acknowledged only once
//! the replicas confirm it with `WAIT`, one `WAIT` per batch of writes sent
//! together (counted on the master), and a write they do not confirm in
//! time is an error that says it ran — never a success, never sent again.
//! Transactions and scripts are covered, and the `WAIT` runs as the
//! client's own user.

mod support;

use std::time::{Duration, Instant};

use belay_client::{Auth, Connection, Value};
use belay_gateway::Durable;
use support::{bulk, start};

/// Writes `bytes` at once and reads until `replies` simple replies came.
async fn pipelined(addr: &str, bytes: &[u8], replies: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    while got.iter().filter(|b| **b == b'\n').count() < replies {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

fn error(v: &Value) -> &str {
    match v {
        Value::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_confirmed_with_one_wait_per_batch() {
    let env = start(|cfg| {
        cfg.durable_writes = Some(Durable::Replicas(2));
    })
    .await;
    let master = env.master().await;
    let mut c = env.client().await;
    assert_eq!(
        c.call(&["SET", "warm", "1"]).await.unwrap(),
        Value::Simple("OK".into())
    );

    // One pipeline of 200 writes, read by the gateway as one batch: one WAIT.
    let waits = env.calls(&master, "wait").await;
    let mut pipeline = belay_resp::encode_command(&["AUTH", env.lab.password()]).to_vec();
    for i in 0..200 {
        pipeline.extend_from_slice(&belay_resp::encode_command(&[
            "SET".to_string(),
            format!("p{i}"),
            i.to_string(),
        ]));
    }
    let replies = pipelined(&env.gateway, &pipeline, 201).await;
    assert_eq!(replies.matches("+OK\r\n").count(), 201, "{replies}");
    let after = env.calls(&master, "wait").await;
    assert!(
        (1..=2).contains(&(after - waits)),
        "{} WAITs for a pipeline of 200 writes",
        after - waits
    );
    // Every acknowledged write is on both replicas the moment it is acked.
    for replica in env.replicas().await {
        let mut r = env.node(&replica).await;
        assert_eq!(
            r.call(&["GET", "p199"]).await.unwrap(),
            bulk("199"),
            "{replica}"
        );
    }

    // Many clients writing at once share WAITs: fewer than their writes.
    let waits = env.calls(&master, "wait").await;
    let sets = env.calls(&master, "set").await;
    let mut tasks = Vec::new();
    for w in 0..20 {
        let mut c = env.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let r = c.call(&["SET", &format!("w{w}:{i}"), "x"]).await.unwrap();
                assert_eq!(r, Value::Simple("OK".into()));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let writes = env.calls(&master, "set").await - sets;
    let confirmations = env.calls(&master, "wait").await - waits;
    assert_eq!(writes, 1000);
    assert!(
        confirmations < writes / 2,
        "{confirmations} WAITs for {writes} writes from 20 clients"
    );
    // Reads are not confirmed: no WAIT for them.
    let waits = env.calls(&master, "wait").await;
    for i in 0..20 {
        c.call(&["GET", &format!("p{i}")]).await.unwrap();
    }
    assert_eq!(env.calls(&master, "wait").await, waits);

    // A blocking command that writes (BLMOVE) is confirmed like any write:
    // it is answered once the replicas have the element it moved.
    let mut feeder = env.client().await;
    let waits = env.calls(&master, "wait").await;
    let blocked = tokio::spawn(async move {
        c.call(&["BLMOVE", "src", "dst", "LEFT", "RIGHT", "5"])
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    feeder.call(&["RPUSH", "src", "item"]).await.unwrap();
    assert_eq!(blocked.await.unwrap(), bulk("item"));
    assert!(
        env.calls(&master, "wait").await >= waits + 2,
        "one WAIT for RPUSH, one for BLMOVE"
    );
    for replica in env.replicas().await {
        let mut r = env.node(&replica).await;
        assert_eq!(
            r.call(&["LRANGE", "dst", "0", "-1"]).await.unwrap(),
            Value::Array(vec![bulk("item")]),
            "{replica}"
        );
    }
    eprintln!("durable: 1000 writes from 20 clients took {confirmations} WAITs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_write_is_an_error_that_says_it_ran_and_is_not_sent_again() {
    let mut env = start(|cfg| {
        cfg.durable_writes = Some(Durable::Majority);
        cfg.durable_timeout_ms = 300;
        // Not the write guard's hold: this is about WAIT.
        cfg.min_synced_replicas = 0;
    })
    .await;
    let master = env.master().await;
    let mut c = env.client().await;
    // A transaction and a script, confirmed.
    let waits = env.calls(&master, "wait").await;
    assert_eq!(
        c.call(&["MULTI"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(
        c.call(&["SET", "t", "1"]).await.unwrap(),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(
        c.call(&["INCR", "t"]).await.unwrap(),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(
        c.call(&["EXEC"]).await.unwrap(),
        Value::Array(vec![Value::Simple("OK".into()), Value::Integer(2)])
    );
    let script = "return redis.call('INCR', KEYS[1])";
    assert_eq!(
        c.call(&["EVAL", script, "1", "t"]).await.unwrap(),
        Value::Integer(3)
    );
    assert_eq!(
        env.calls(&master, "wait").await - waits,
        2,
        "one after EXEC, one after EVAL"
    );

    // Both replicas stop answering: nothing confirms.
    let replicas = env.replicas().await;
    let names: Vec<String> = replicas.iter().map(|a| env.name_of(a)).collect();
    for n in &names {
        env.lab.pause(n).unwrap();
    }
    let sets = env.calls(&master, "set").await;
    let started = Instant::now();
    let r = c.call(&["SET", "lonely", "1"]).await.unwrap();
    let took = started.elapsed();
    let e = error(&r);
    assert!(e.starts_with("UNREPLICATED "), "{e}");
    assert!(e.contains("ran on the master"), "{e}");
    assert!(e.contains("0 of the 2 replicas"), "{e}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // It ran, once.
    assert_eq!(env.calls(&master, "set").await - sets, 1);
    let mut m = env.node(&master).await;
    assert_eq!(m.call(&["GET", "lonely"]).await.unwrap(), bulk("1"));
    // A transaction: EXEC's reply is the error; a script's too; reads are not.
    c.call(&["MULTI"]).await.unwrap();
    c.call(&["INCR", "t"]).await.unwrap();
    let e = c.call(&["EXEC"]).await.unwrap();
    assert!(error(&e).starts_with("UNREPLICATED "), "{e:?}");
    let e = c.call(&["EVAL", script, "1", "t"]).await.unwrap();
    assert!(error(&e).starts_with("UNREPLICATED "), "{e:?}");
    assert_eq!(m.call(&["GET", "t"]).await.unwrap(), bulk("5"));
    assert_eq!(c.call(&["GET", "t"]).await.unwrap(), bulk("5"));
    // An error reply stays what it was.
    let e = c.call(&["LPUSH", "t", "x"]).await.unwrap();
    assert!(error(&e).starts_with("WRONGTYPE"), "{e:?}");

    for n in &names {
        env.lab.resume(n).unwrap();
    }
    // Confirmed again once the replicas are back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.call(&["SET", "back", "1"]).await.unwrap();
        if r == Value::Simple("OK".into()) {
            break;
        }
        assert!(Instant::now() < deadline, "still {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `WAIT` runs as the client's user: a user who may not run it gets
/// its writes answered as not confirmed, with Redis's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_runs_as_the_clients_own_user() {
    let env = start(|cfg| cfg.durable_writes = Some(Durable::Replicas(1))).await;
    let mut admin = env.client().await;
    for rules in [
        &[
            "ACL", "SETUSER", "nowait", "on", ">pw", "~*", "+@all", "-wait",
        ][..],
        &["ACL", "SETUSER", "writer", "on", ">pw", "~*", "+@all"][..],
    ] {
        assert_eq!(admin.call(rules).await.unwrap(), Value::Simple("OK".into()));
    }
    let login = |user: &str| Auth {
        username: Some(user.into()),
        password: "pw".into(),
    };
    let mut ok = Connection::connect(&env.gateway, Some(&login("writer")), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        ok.call(&["SET", "u", "1"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    let mut nowait =
        Connection::connect(&env.gateway, Some(&login("nowait")), Duration::from_secs(5))
            .await
            .unwrap();
    let r = nowait.call(&["SET", "u", "2"]).await.unwrap();
    let e = error(&r);
    assert!(
        e.starts_with("UNREPLICATED ") && e.contains("NOPERM"),
        "{e}"
    );
    // It ran (as that user could), and said so.
    assert_eq!(ok.call(&["GET", "u"]).await.unwrap(), bulk("2"));
}

/// Reads on the master never wait behind another session's `WAIT`: a `WAIT`
/// that cannot be satisfied holds its connection for the whole timeout, and
/// reads sharing that connection would take as long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_behind_a_durable_writes_wait() {
    let mut env = start(|cfg| {
        cfg.durable_writes = Some(Durable::Replicas(2));
        cfg.durable_timeout_ms = 900;
        cfg.min_synced_replicas = 0;
        cfg.read_from = belay_gateway::ReadFrom::Master;
    })
    .await;
    let mut c = env.client().await;
    c.call(&["SET", "r", "1"]).await.unwrap();
    let replicas = env.replicas().await;
    let names: Vec<String> = replicas.iter().map(|a| env.name_of(a)).collect();
    for n in &names {
        env.lab.pause(n).unwrap();
    }
    // Writers on every shared connection, each write's WAIT timing out.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let mut c = env.client().await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut unreplicated = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c.call(&["SET", &format!("w{w}"), "x"]).await.unwrap();
                unreplicated +=
                    matches!(&r, Value::Error(e) if e.starts_with("UNREPLICATED ")) as u32;
            }
            unreplicated
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        // A new client each time: whichever shared connection it is given.
        let mut reader = env.client().await;
        for _ in 0..10 {
            let started = Instant::now();
            assert_eq!(reader.call(&["GET", "r"]).await.unwrap(), bulk("1"));
            slowest = slowest.max(started.elapsed());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut unreplicated = 0;
    for w in writers {
        unreplicated += w.await.unwrap();
    }
    for n in &names {
        env.lab.resume(n).unwrap();
    }
    assert!(
        unreplicated >= 6,
        "the writers' WAITs did time out ({unreplicated})"
    );
    assert!(
        slowest < Duration::from_millis(400),
        "a read on the master waited {slowest:?} behind a WAIT"
    );
}
