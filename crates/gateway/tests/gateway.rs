//! The gateway against a real lab: routing, session semantics, bad input,
//! and following a Sentinel failover.

mod support;

use std::time::Duration;

use belay_client::{Auth, Connection, Value};
use support::{bulk, raw_exchange, start};

/// Writes land on the master, reads on replicas, which take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_the_master_and_reads_to_replicas_that_take_turns() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let replicas = env.replicas().await;
    assert_eq!(replicas.len(), 2);
    // Writes land on the master, reads on replicas.
    let mut c = env.client().await;
    let sets_before = env.calls(&master, "set").await;
    let master_gets_before = env.calls(&master, "get").await;
    for i in 0..50 {
        assert_eq!(
            c.call(&["SET", &format!("k{i}"), "v"]).await.unwrap(),
            Value::Simple("OK".into())
        );
    }
    // Let replication and the offset sampler pass the read-your-writes fence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Enough reads for the current replica to change a few times (every 64
    // writes to nodes; one read at a time is one write).
    for i in 0..200 {
        assert_eq!(
            c.call(&["GET", &format!("k{}", i % 50)]).await.unwrap(),
            bulk("v")
        );
    }
    assert_eq!(env.calls(&master, "set").await - sets_before, 50);
    assert_eq!(
        env.calls(&master, "get").await,
        master_gets_before,
        "no GET should reach the master"
    );
    let mut replica_gets = 0;
    for r in &replicas {
        let gets = env.calls(r, "get").await;
        // Idle replicas take turns: both serve reads.
        assert!(gets >= 40, "{r} served {gets} of 200 reads");
        replica_gets += gets;
        // Replicas execute the replicated SETs; one sent to them by a client
        // would have been rejected as READONLY.
        assert_eq!(
            env.rejected_writes(r).await,
            0,
            "a replica was sent a write"
        );
    }
    assert_eq!(replica_gets, 200);
}

/// Read-your-writes inside one pipeline, and a pipelined mix in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_write_in_one_pipeline_sees_it() {
    let env = start(|_| {}).await;
    let mut c = env.client().await;
    // Read-your-writes inside one pipeline: the GET after the SET sees it.
    for i in 0..100 {
        let key = format!("ryw{i}");
        c.send(&["SET", &key, &i.to_string()]).await.unwrap();
        c.send(&["GET", &key]).await.unwrap();
        assert_eq!(c.read_value().await.unwrap(), Value::Simple("OK".into()));
        assert_eq!(c.read_value().await.unwrap(), bulk(&i.to_string()));
    }

    // A pipelined mix of 1,000 reads and writes: replies in order, right values.
    for i in 0..500 {
        c.send(&["SET", &format!("p{i}"), &format!("val{i}")])
            .await
            .unwrap();
        c.send(&["GET", &format!("p{}", i / 2)]).await.unwrap();
    }
    for i in 0..500 {
        assert_eq!(
            c.read_value().await.unwrap(),
            Value::Simple("OK".into()),
            "reply {i}"
        );
        assert_eq!(
            c.read_value().await.unwrap(),
            bulk(&format!("val{}", i / 2)),
            "reply {i}"
        );
    }
}

/// Scripts: EVAL to the master, EVAL_RO to a replica; the script cache
/// (SCRIPT LOAD, FLUSH) reaches the replicas too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_route_by_their_flags_and_the_script_cache_reaches_replicas() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let replicas = env.replicas().await;
    let mut c = env.client().await;
    // Scripts: EVAL to the master, EVAL_RO to a replica, EVALSHA_RO with a
    // script the replica lacks is retried on the master.
    let evals_before = env.calls(&master, "eval").await;
    assert_eq!(
        c.call(&["EVAL", "return redis.call('SET', KEYS[1], 'e')", "1", "ek"])
            .await
            .unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(env.calls(&master, "eval").await, evals_before + 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.call(&["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "ek"])
            .await
            .unwrap(),
        bulk("e")
    );
    let mut replica_eval_ro = 0;
    for r in &replicas {
        replica_eval_ro += env.calls(r, "eval_ro").await;
    }
    assert_eq!(replica_eval_ro, 1);
    let sha = env
        .node(&master)
        .await
        .call_ok(&["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"])
        .await
        .unwrap()
        .to_text()
        .unwrap();
    assert_eq!(
        c.call(&["EVALSHA_RO", &sha, "1", "ek"]).await.unwrap(),
        bulk("e")
    );
    // SCRIPT LOAD through the gateway loads the script on the replicas too
    // (Redis does not replicate the script cache): EVALSHA_RO then runs on
    // a replica at once.
    let loaded = c
        .call(&["SCRIPT", "LOAD", "return redis.call('STRLEN', KEYS[1])"])
        .await
        .unwrap()
        .to_text()
        .unwrap();
    let master_evalsha_ro = env.calls(&master, "evalsha_ro").await;
    // SCRIPT LOAD is no read: let the read-your-writes fence pass.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.call(&["EVALSHA_RO", &loaded, "1", "ek"]).await.unwrap(),
        Value::Integer(1)
    );
    for r in &replicas {
        assert!(
            script_exists(&env, r, &loaded).await,
            "{r} has the script loaded through the gateway"
        );
    }
    assert_eq!(
        env.calls(&master, "evalsha_ro").await,
        master_evalsha_ro,
        "EVALSHA_RO of a script loaded through the gateway ran on a replica"
    );

    // The same inside one pipeline written at once: the reads travel to a
    // replica as one batch, and the one refused there (NOSCRIPT) is retried
    // on the master while the replies keep their order; an error reply of
    // the master's stays where it belongs.
    let mut pipeline = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{}\r\n",
        env.lab.password().len(),
        env.lab.password()
    )
    .into_bytes();
    for args in [
        vec!["GET", "ek"],
        vec!["EVALSHA_RO", &sha, "1", "ek"],
        vec!["GET", "ek"],
        vec!["INCR", "ek"],
        vec!["GET", "no-such-key"],
        vec!["GET", "ek"],
    ] {
        pipeline.extend_from_slice(&belay_resp::encode_command(&args));
    }
    let expected = "+OK\r\n$1\r\ne\r\n$1\r\ne\r\n$1\r\ne\r\n-ERR value is not an integer or out of range\r\n$-1\r\n$1\r\ne\r\n";
    let (got, _) = raw_exchange(&env.gateway, &pipeline, expected.len()).await;
    assert_eq!(String::from_utf8_lossy(&got), expected);

    // SCRIPT FLUSH empties the replicas' caches too: no replica keeps
    // running a script the master forgot.
    assert_eq!(
        c.call(&["SCRIPT", "FLUSH"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    for r in &replicas {
        assert!(
            !script_exists(&env, r, &loaded).await,
            "{r} still has a script flushed through the gateway"
        );
    }
    let Value::Error(e) = c.call(&["EVALSHA_RO", &loaded, "1", "ek"]).await.unwrap() else {
        panic!("a flushed script still ran");
    };
    assert!(e.starts_with("NOSCRIPT"), "{e}");
}

/// Commands the gateway cannot honour get a clear error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_a_proxy_cannot_honour_are_refused_by_name() {
    let env = start(|_| {}).await;
    let mut c = env.client().await;
    // Commands the gateway cannot honour get a clear error, not a hang.
    for cmd in [
        vec!["MONITOR"],
        vec!["SHUTDOWN"],
        vec!["REPLICAOF", "NO", "ONE"],
        vec!["DEBUG", "SLEEP", "0"],
        vec!["DEBUG", "PROTOCOL", "push"],
        vec!["CONFIG", "REWRITE"],
        vec!["CLIENT", "KILL", "ID", "1"],
    ] {
        let reply = c.call(&cmd).await.unwrap();
        let Value::Error(msg) = reply else {
            panic!("{cmd:?} was not refused: {reply:?}")
        };
        assert!(
            msg.contains(&format!("'{}", cmd[0])),
            "error names the command: {msg}"
        );
        assert!(msg.contains("not supported through the gateway"), "{msg}");
    }
    assert!(c
        .call(&["CONFIG", "GET", "maxmemory"])
        .await
        .unwrap()
        .as_array()
        .is_some());
}

/// SELECT isolates databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_isolates_databases() {
    let env = start(|_| {}).await;
    let mut c = env.client().await;
    // SELECT isolates databases.
    let mut c1 = env.client().await;
    assert_eq!(
        c1.call(&["SELECT", "1"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    c1.call_ok(&["SET", "iso", "db1"]).await.unwrap();
    assert_eq!(c.call(&["GET", "iso"]).await.unwrap(), Value::Nil);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(c1.call(&["GET", "iso"]).await.unwrap(), bulk("db1"));
    assert!(c1.call(&["SELECT", "99"]).await.unwrap().is_error());
}

/// RESP3 through HELLO 3, and client names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_through_hello_3() {
    let env = start(|_| {}).await;
    // RESP3 through HELLO 3.
    let mut c3 = env.client().await;
    let hello = c3.call(&["HELLO", "3"]).await.unwrap();
    assert!(
        matches!(hello, Value::Map(_)),
        "HELLO 3 answers a map: {hello:?}"
    );
    c3.call_ok(&["HSET", "h", "f", "1"]).await.unwrap();
    let h = c3.call(&["HGETALL", "h"]).await.unwrap();
    assert_eq!(
        h,
        Value::Map(vec![(bulk("f"), bulk("1"))]),
        "RESP3 map reply"
    );
    assert_eq!(
        c3.call(&["CLIENT", "SETNAME", "three"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(
        c3.call(&["CLIENT", "GETNAME"]).await.unwrap(),
        bulk("three")
    );
}

/// `HELLO` through the gateway names the server and version the master's
/// own `HELLO` names: `valkey 8.1.x` in front of Valkey (whose `INFO` says
/// `redis_version:7.2.4` for old clients), `redis 7.0.x` in front of Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_names_the_masters_own_server_and_version() {
    let env = start(|_| {}).await;
    fn field(hello: &Value, key: &str) -> Value {
        let pairs: Vec<(Value, Value)> = match hello {
            Value::Map(m) => m.clone(),
            Value::Array(a) => a
                .chunks(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect(),
            other => panic!("HELLO answered {other:?}"),
        };
        pairs
            .into_iter()
            .find(|(k, _)| *k == bulk(key))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {hello:?}"))
    }
    let mut direct = env.node(&env.master().await).await;
    let mut through = env.client().await;
    for proto in ["2", "3"] {
        let node = direct.call(&["HELLO", proto]).await.unwrap();
        let gateway = through.call(&["HELLO", proto]).await.unwrap();
        for key in ["server", "version"] {
            assert_eq!(
                field(&gateway, key),
                field(&node, key),
                "HELLO {proto} {key}: the gateway's {gateway:?}, the master's {node:?}"
            );
        }
    }
}

/// Transactions with WATCH: a conflicting write aborts EXEC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_with_watch() {
    let env = start(|_| {}).await;
    // Transactions with WATCH: a conflicting write aborts EXEC.
    let mut a = env.client().await;
    let mut b = env.client().await;
    a.call_ok(&["SET", "w", "0"]).await.unwrap();
    assert_eq!(
        a.call(&["WATCH", "w"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    b.call_ok(&["SET", "w", "other"]).await.unwrap();
    assert_eq!(
        a.call(&["MULTI"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(
        a.call(&["SET", "w", "mine"]).await.unwrap(),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(
        a.call(&["EXEC"]).await.unwrap(),
        Value::Nil,
        "EXEC after a WATCH conflict is aborted"
    );
    // And without a conflict it runs.
    a.call_ok(&["WATCH", "w"]).await.unwrap();
    a.call_ok(&["MULTI"]).await.unwrap();
    a.call_ok(&["INCR", "ctr"]).await.unwrap();
    a.call_ok(&["GET", "w"]).await.unwrap();
    let exec = a.call(&["EXEC"]).await.unwrap();
    assert_eq!(exec.as_array().map(|v| v.len()), Some(2), "{exec:?}");
    assert_eq!(exec.as_array().unwrap()[1], bulk("other"));
}

/// A blocking pop is woken by a push; pub/sub across two clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_pops_and_pub_sub() {
    let env = start(|_| {}).await;
    let mut c = env.client().await;
    // A blocking pop is woken by a push through the gateway.
    let mut blocker = env.client().await;
    blocker.set_timeout(Duration::from_secs(10));
    blocker.send(&["BLPOP", "queue", "5"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other clients are not stuck behind the blocked one.
    assert_eq!(
        c.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
    c.call_ok(&["RPUSH", "queue", "job"]).await.unwrap();
    assert_eq!(
        blocker.read_value().await.unwrap(),
        Value::Array(vec![bulk("queue"), bulk("job")])
    );

    // Pub/sub across two gateway clients.
    let mut sub = env.client().await;
    sub.set_timeout(Duration::from_secs(5));
    sub.send(&["SUBSCRIBE", "news"]).await.unwrap();
    let confirm = sub.read_value().await.unwrap();
    assert_eq!(confirm.as_array().unwrap()[0], bulk("subscribe"));
    assert_eq!(
        c.call(&["PUBLISH", "news", "hello"]).await.unwrap(),
        Value::Integer(1)
    );
    let msg = sub.read_value().await.unwrap();
    assert_eq!(
        msg,
        Value::Array(vec![bulk("message"), bulk("news"), bulk("hello")])
    );
}

/// The gateway's own view (BELAY TOPOLOGY), and AUTH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_view_and_auth() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let mut c = env.client().await;
    c.call_ok(&["SET", "k1", "v"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The gateway's own view, for `belay status`.
    let view = c.call(&["BELAY", "TOPOLOGY"]).await.unwrap();
    let view: serde_json::Value = serde_json::from_str(view.as_str().unwrap()).unwrap();
    assert_eq!(view["master"], serde_json::json!(master));
    let eligible: Vec<_> = view["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["eligible"] == true)
        .collect();
    assert_eq!(eligible.len(), 2, "{view}");

    // AUTH: required, refused when wrong.
    let mut anon = Connection::connect(&env.gateway, None, Duration::from_secs(5))
        .await
        .unwrap();
    let noauth = anon.call(&["GET", "k1"]).await.unwrap();
    assert!(
        matches!(&noauth, Value::Error(m) if m.starts_with("NOAUTH")),
        "{noauth:?}"
    );
    let wrong = anon.call(&["AUTH", "nope"]).await.unwrap();
    assert!(
        matches!(&wrong, Value::Error(m) if m.starts_with("WRONGPASS")),
        "{wrong:?}"
    );
    assert!(Connection::connect(
        &env.gateway,
        Some(&Auth::password("nope")),
        Duration::from_secs(5)
    )
    .await
    .is_err());
    assert_eq!(
        anon.call(&["AUTH", env.lab.password()]).await.unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(anon.call(&["GET", "k1"]).await.unwrap(), bulk("v"));
}

/// Whether the node at `addr` has the script `sha` in its cache.
async fn script_exists(env: &support::Env, addr: &str, sha: &str) -> bool {
    let reply = env
        .node(addr)
        .await
        .call(&["SCRIPT", "EXISTS", sha])
        .await
        .unwrap();
    match reply {
        Value::Array(v) if v.len() == 1 => v[0] == Value::Integer(1),
        other => panic!("SCRIPT EXISTS on {addr}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_that_client() {
    let env = start(|cfg| {
        cfg.max_bulk_len = 1024;
        cfg.max_pipeline = 8;
        cfg.client_write_timeout_secs = 1;
    })
    .await;
    let mut good = env.client().await;
    good.call_ok(&["SET", "survivor", "yes"]).await.unwrap();
    let auth = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{}\r\n",
        env.lab.password().len(),
        env.lab.password()
    );
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "malformed".into(),
            format!("{auth}*1\r\n:5\r\n").into_bytes(),
            "Protocol error",
        ),
        (
            "bulk over the limit".into(),
            format!("{auth}*2\r\n$3\r\nGET\r\n$999999\r\n").into_bytes(),
            "invalid bulk length",
        ),
        (
            "bad length".into(),
            format!("{auth}*x\r\n").into_bytes(),
            "Protocol error",
        ),
        (
            "unauthenticated big request".into(),
            b"*1000\r\n".to_vec(),
            "multibulk length",
        ),
        (
            "unauthenticated big bulk".into(),
            b"*1\r\n$100000\r\n".to_vec(),
            "bulk length",
        ),
        (
            "unbalanced quotes".into(),
            format!("{auth}GET \"abc\r\n").into_bytes(),
            "unbalanced quotes",
        ),
    ];
    for (what, bytes, expect) in cases {
        let (got, closed) = raw_exchange(&env.gateway, &bytes, 1).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains(expect), "{what}: got {text:?}");
        assert!(
            text.lines().last().unwrap_or("").starts_with("-ERR"),
            "{what}: ends with an error: {text:?}"
        );
        assert!(closed, "{what}: the client is closed");
        // Everyone else carries on.
        assert_eq!(
            good.call(&["GET", "survivor"]).await.unwrap(),
            bulk("yes"),
            "after {what}"
        );
    }
    // A client that never reads its replies is not buffered for without
    // bound: the gateway stops reading from it after `max_pipeline` commands
    // and drops it when it does not accept replies; others carry on.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let big = "x".repeat(1000);
        let mut setter = env.node(&env.master().await).await;
        setter
            .call_ok(&["SET", "big", &big.repeat(512)])
            .await
            .unwrap();
        let mut slow = tokio::net::TcpStream::connect(&env.gateway).await.unwrap();
        slow.write_all(auth.as_bytes()).await.unwrap();
        let get = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(2000);
        // The writes may stall once the gateway stops reading; that is the point.
        let _ = tokio::time::timeout(Duration::from_secs(3), slow.write_all(&get)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            good.call(&["GET", "survivor"]).await.unwrap(),
            bulk("yes"),
            "others carry on"
        );
        // Drain: the gateway must have closed the slow client rather than
        // holding 2000 x 512 KB of replies for it.
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => total += n,
                Err(_) => break false,
            }
        };
        assert!(closed, "the slow client was closed");
        assert!(
            total < 200 * 512 * 1024,
            "it got {total} bytes, far fewer than the 2000 replies it asked for"
        );
    }

    // An inline command works like redis-cli over telnet.
    let (got, _) = raw_exchange(
        &env.gateway,
        format!("AUTH {}\r\nPING\r\n", env.lab.password()).as_bytes(),
        12,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&got), "+OK\r\n+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_sentinel_failover() {
    let env = start(|_| {}).await;
    let old = env.master().await;
    let mut c = env.client().await;
    c.call_ok(&["SET", "before", "1"]).await.unwrap();

    let new = env.sentinel_failover().await;
    assert_ne!(new, old);

    // Writes through the gateway now land on the new master, never the old one.
    c.set_timeout(Duration::from_secs(20));
    let new_sets_before = env.calls(&new, "set").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    while written < 20 {
        match c
            .call(&["SET", &format!("after{written}"), "x"])
            .await
            .unwrap()
        {
            Value::Simple(s) if s == "OK" => written += 1,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "writes never recovered: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        env.calls(&new, "set").await - new_sets_before >= 20,
        "writes went to the new master"
    );
    // The old master becomes a replica and never took a write from us after
    // the switch (a replica would have rejected it: no READONLY errors).
    env.wait_rejoined(&old, &new).await;
    assert_eq!(env.rejected_writes(&old).await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.call(&["GET", "after19"]).await.unwrap(), bulk("x"));
    assert_eq!(c.call(&["GET", "before"]).await.unwrap(), bulk("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_for_the_gateway_and_for_clients() {
    let mut env = start(|_| {}).await;
    // ACL users are per node: create them on every data node.
    for node in env
        .lab
        .data_nodes()
        .iter()
        .map(|p| p.addr())
        .collect::<Vec<_>>()
    {
        let mut c = env.node(&node).await;
        c.call_ok(&[
            "ACL",
            "SETUSER",
            "gw",
            "on",
            ">gw-secret",
            "~*",
            "&*",
            "+@all",
        ])
        .await
        .unwrap();
        c.call_ok(&[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">alice-secret",
            "~app:*",
            "+@all",
        ])
        .await
        .unwrap();
    }
    // A gateway that talks to the nodes as ACL user `gw`.
    let gw = env
        .extra_gateway(|cfg| {
            cfg.username = Some("gw".into());
            cfg.password = Some("gw-secret".into());
            cfg.sentinel_password = Some(env_password());
            cfg.client_password = Some("client-secret".into());
        })
        .await;
    let mut c = Connection::connect(
        &gw,
        Some(&Auth::password("client-secret")),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    c.call_ok(&["SET", "acl:k", "v"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.call(&["GET", "acl:k"]).await.unwrap(), bulk("v"));

    // A client that authenticates as another ACL user gets that user's rights
    // on the nodes (pinned connections with its credentials).
    let mut alice = Connection::connect(&env.gateway, None, Duration::from_secs(5))
        .await
        .unwrap();
    let wrong = alice.call(&["AUTH", "alice", "nope"]).await.unwrap();
    assert!(
        matches!(&wrong, Value::Error(m) if m.starts_with("WRONGPASS")),
        "{wrong:?}"
    );
    assert_eq!(
        alice
            .call(&["AUTH", "alice", "alice-secret"])
            .await
            .unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(
        alice.call(&["SET", "app:1", "x"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    let denied = alice.call(&["SET", "other", "x"]).await.unwrap();
    assert!(
        matches!(&denied, Value::Error(m) if m.starts_with("NOPERM")),
        "{denied:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alice.call(&["GET", "app:1"]).await.unwrap(), bulk("x"));
}

fn env_password() -> String {
    "belay-test-password".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_policies_and_scan_cursors() {
    let mut env = start(|_| {}).await;
    let master = env.master().await;
    let replicas = env.replicas().await;
    let mut c = env.client().await;
    for i in 0..300 {
        c.call_ok(&["SET", &format!("scan:{i}"), "x"])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A SCAN walk stays on the replica that issued its cursor and sees every key.
    let mut scans_before = Vec::new();
    for r in &replicas {
        scans_before.push(env.calls(r, "scan").await);
    }
    let mut cursor = "0".to_string();
    let mut seen = std::collections::HashSet::new();
    let mut steps = 0;
    loop {
        let reply = c
            .call(&["SCAN", &cursor, "MATCH", "scan:*", "COUNT", "20"])
            .await
            .unwrap();
        let parts = reply.as_array().unwrap();
        cursor = parts[0].to_text().unwrap();
        for k in parts[1].as_array().unwrap() {
            seen.insert(k.to_text().unwrap());
        }
        steps += 1;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        300,
        "a SCAN walk through the gateway sees every key"
    );
    let mut deltas = Vec::new();
    for (r, before) in replicas.iter().zip(&scans_before) {
        deltas.push(env.calls(r, "scan").await - before);
    }
    deltas.sort();
    assert_eq!(deltas, vec![0, steps], "the whole walk ran on one replica");

    // read_from = master: no read reaches a replica.
    let gw = env
        .extra_gateway(|cfg| cfg.read_from = belay_gateway::ReadFrom::Master)
        .await;
    let mut m = Connection::connect(&gw, Some(&env.auth()), Duration::from_secs(5))
        .await
        .unwrap();
    let before = env.calls(&master, "get").await;
    let replica_gets: i64 = {
        let mut n = 0;
        for r in &replicas {
            n += env.calls(r, "get").await;
        }
        n
    };
    for i in 0..50 {
        assert_eq!(
            m.call(&["GET", &format!("scan:{i}")]).await.unwrap(),
            bulk("x")
        );
    }
    assert_eq!(env.calls(&master, "get").await - before, 50);
    let mut after = 0;
    for r in &replicas {
        after += env.calls(r, "get").await;
    }
    assert_eq!(
        after, replica_gets,
        "read_from=master sent reads to a replica"
    );
}

/// A read that happens to take exactly what the input buffer has room for
/// leaves the socket drained while tokio still thinks it readable. The
/// session must then still deliver the replies the client waits for, not
/// sit in a read for input that will not come until they arrive. Which size
/// hits the buffer exactly depends on its growth, so a range is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_drains_the_socket_exactly_still_gets_its_reply() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = start(|_| {}).await;
    let password = env.lab.password();
    let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
    for total in 15_900..=16_500usize {
        let mut c = tokio::net::TcpStream::connect(&env.gateway).await.unwrap();
        c.write_all(auth.as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"+OK\r\n");
        // One SET of exactly `total` bytes: 30 bytes of framing around a
        // value with a 5-digit length.
        let len = total - 30;
        let set = format!(
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n{}\r\n",
            "v".repeat(len)
        );
        assert_eq!(set.len(), total);
        c.write_all(set.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply to a {total}-byte request"))
            .unwrap();
        assert_eq!(&buf[..n], b"+OK\r\n", "a {total}-byte request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_counts_this_sessions_writes_and_holds_up_no_one() {
    let env = start(|_| {}).await;
    let ok = Value::Simple("OK".into());
    // The gateway's marks (see below), watched on the master itself.
    let mut marks = env.node(&env.master().await).await;
    marks.send(&["SUBSCRIBE", "__belay__:wait"]).await.unwrap();
    marks.read_value().await.unwrap();

    // A WAIT that cannot be met (3 replicas asked, 2 exist) blocks for its
    // whole timeout. Sessions sharing backend connections carry on meanwhile.
    let mut waiter = env.client().await;
    assert_eq!(waiter.call(&["SET", "w", "1"]).await.unwrap(), ok);
    let wait = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let v = waiter.call(&["WAIT", "3", "1500"]).await.unwrap();
        (v, started.elapsed(), waiter)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Eight sessions over two shared connections per node: some share the
    // waiter's connection to the master.
    for i in 0..8 {
        let mut c = env.client().await;
        let started = std::time::Instant::now();
        assert_eq!(c.call(&["SET", &format!("o{i}"), "v"]).await.unwrap(), ok);
        assert_eq!(
            c.call(&["INCR", &format!("n{i}")]).await.unwrap(),
            Value::Integer(1)
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "client {i} was held up {took:?} by another client's WAIT"
        );
    }
    let (v, took, mut waiter) = wait.await.unwrap();
    assert_eq!(
        v,
        Value::Integer(2),
        "both replicas have the waiter's write"
    );
    assert!(
        took >= Duration::from_millis(1400),
        "WAIT returned after {took:?}"
    );
    // The session's writes now go on its own connection: a WAIT that can be
    // met returns as soon as the replicas acknowledge.
    assert_eq!(waiter.call(&["SET", "w", "2"]).await.unwrap(), ok);
    let started = std::time::Instant::now();
    assert_eq!(
        waiter.call(&["WAIT", "2", "5000"]).await.unwrap(),
        Value::Integer(2)
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A new session whose write went on a shared connection: its WAIT
    // counts that write, not the empty history of a fresh connection.
    let mut c = env.client().await;
    let stalls = env.stall_replication().await;
    assert_eq!(c.call(&["SET", "lagging", "1"]).await.unwrap(), ok);
    assert_eq!(
        c.call(&["WAIT", "1", "300"]).await.unwrap(),
        Value::Integer(0),
        "no replica can have acknowledged a write while replication is stalled"
    );
    drop(stalls);
    assert_eq!(
        c.call(&["WAIT", "2", "10000"]).await.unwrap(),
        Value::Integer(2),
        "once replication flows again both replicas acknowledge it"
    );
    // A new session's WAIT pipelined behind its writes still in flight on
    // a shared connection: it waits for their replies, then counts them;
    // what follows it keeps its place.
    let mut d = env.client().await;
    for i in 0..20 {
        d.send(&["SET", &format!("pw{i}"), "v"]).await.unwrap();
    }
    d.send(&["WAIT", "2", "5000"]).await.unwrap();
    d.send(&["INCR", "after-wait"]).await.unwrap();
    d.send(&["GET", "pw19"]).await.unwrap();
    for _ in 0..20 {
        assert_eq!(d.read_value().await.unwrap(), ok);
    }
    assert_eq!(d.read_value().await.unwrap(), Value::Integer(2));
    assert_eq!(d.read_value().await.unwrap(), Value::Integer(1));
    assert_eq!(d.read_value().await.unwrap(), bulk("v"));

    // Redis 7.0 moves a connection's replication offset with every command,
    // so a fresh connection's WAIT would count the earlier writes anyway;
    // from 7.2 only replicated commands move it. Hence the mark: one PUBLISH
    // per session whose writes went on a shared connection before its WAIT
    // (the waiter, `c` and `d`), none once its writes go on its own.
    let mut seen = 0;
    while let Ok(m) = tokio::time::timeout(Duration::from_millis(500), marks.read_value()).await {
        m.unwrap();
        seen += 1;
    }
    assert_eq!(
        seen, 3,
        "one mark per session that moved off shared connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_only_subscribes_and_is_a_normal_client_again_after_unsubscribing() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let mut c = env.client().await;
    let mut sub = env.client().await;
    sub.set_timeout(Duration::from_secs(5));
    let error = |v: Value| match v {
        Value::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    };

    // Pipelined behind the SUBSCRIBE and answered in order; nothing but the
    // subscription reaches the master.
    sub.send(&["SUBSCRIBE", "news", "sport"]).await.unwrap();
    sub.send(&["SHUTDOWN", "NOSAVE"]).await.unwrap();
    sub.send(&["SET", "k", "from-a-subscriber"]).await.unwrap();
    sub.send(&["PING"]).await.unwrap();
    for channel in ["news", "sport"] {
        let confirm = sub.read_value().await.unwrap();
        assert_eq!(confirm.as_array().unwrap()[1], bulk(channel));
    }
    for refused in ["shutdown", "set"] {
        let e = error(sub.read_value().await.unwrap());
        assert!(
            e.starts_with(&format!("ERR Can't execute '{refused}'")),
            "{e}"
        );
    }
    assert_eq!(
        sub.read_value().await.unwrap(),
        Value::Array(vec![bulk("pong"), bulk("")])
    );
    assert_eq!(
        env.node(&master).await.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into()),
        "the master is still up"
    );
    assert_eq!(c.call(&["GET", "k"]).await.unwrap(), Value::Nil);
    assert_eq!(
        c.call(&["PUBLISH", "news", "hello"]).await.unwrap(),
        Value::Integer(1)
    );
    assert_eq!(
        sub.read_value().await.unwrap(),
        Value::Array(vec![bulk("message"), bulk("news"), bulk("hello")])
    );

    // Unsubscribed from everything, it is served like any client, including
    // what it pipelined right behind the UNSUBSCRIBE.
    sub.send(&["UNSUBSCRIBE"]).await.unwrap();
    sub.send(&["SET", "k", "v"]).await.unwrap();
    sub.send(&["GET", "k"]).await.unwrap();
    sub.send(&["MONITOR"]).await.unwrap();
    let mut left = Vec::new();
    for _ in 0..2 {
        let confirm = sub.read_value().await.unwrap();
        let confirm = confirm.as_array().unwrap();
        assert_eq!(confirm[0], bulk("unsubscribe"));
        left.push(confirm[2].clone());
    }
    assert_eq!(left, vec![Value::Integer(1), Value::Integer(0)]);
    assert_eq!(sub.read_value().await.unwrap(), Value::Simple("OK".into()));
    assert_eq!(sub.read_value().await.unwrap(), bulk("v"));
    let e = error(sub.read_value().await.unwrap());
    assert!(e.contains("'MONITOR' is not supported"), "{e}");
    assert_eq!(
        c.call(&["PUBLISH", "news", "again"]).await.unwrap(),
        Value::Integer(0),
        "the subscription is gone"
    );

    // RESET leaves subscribed mode too, and (as in Redis, with a password
    // set) logs the connection out.
    sub.send(&["PSUBSCRIBE", "n*"]).await.unwrap();
    assert_eq!(
        sub.read_value().await.unwrap().as_array().unwrap()[0],
        bulk("psubscribe")
    );
    sub.send(&["RESET"]).await.unwrap();
    sub.send(&["PING"]).await.unwrap();
    assert_eq!(
        sub.read_value().await.unwrap(),
        Value::Simple("RESET".into())
    );
    let e = error(sub.read_value().await.unwrap());
    assert!(e.starts_with("NOAUTH"), "{e}");
    assert_eq!(
        c.call(&["PUBLISH", "news", "again"]).await.unwrap(),
        Value::Integer(0)
    );

    // In RESP3 Redis would run any command on a subscribed connection; the
    // gateway still refuses what does not belong there (a write would
    // bypass the failover hold).
    let mut resp3 = env.client().await;
    resp3.set_timeout(Duration::from_secs(5));
    assert!(matches!(
        resp3.call(&["HELLO", "3"]).await.unwrap(),
        Value::Map(_)
    ));
    resp3.send(&["SUBSCRIBE", "news"]).await.unwrap();
    resp3.read_value().await.unwrap();
    let e = error(resp3.call(&["SET", "k", "resp3"]).await.unwrap());
    assert!(e.starts_with("ERR Can't execute 'set'"), "{e}");
    assert_eq!(c.call(&["GET", "k"]).await.unwrap(), bulk("v"));
}

/// `BELAY WHERE` names the node that served the connection's last reply,
/// in turn: pipelined right behind a read, it names that read's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn belay_where_names_the_node_that_served_the_last_reply() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let replicas = env.replicas().await;
    let mut c = env.client().await;
    assert_eq!(c.call(&["BELAY", "WHERE"]).await.unwrap(), Value::Nil);
    c.call_ok(&["SET", "where", "x"]).await.unwrap();
    assert_eq!(
        c.call(&["BELAY", "WHERE"]).await.unwrap(),
        bulk(&format!("{master} master"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.send(&["GET", "where"]).await.unwrap();
    c.send(&["BELAY", "WHERE"]).await.unwrap();
    assert_eq!(c.read_value().await.unwrap(), bulk("x"));
    let at = c.read_value().await.unwrap().to_text().unwrap();
    let (node, role) = at.split_once(' ').unwrap();
    assert_eq!(role, "replica", "{at}");
    assert!(
        replicas.iter().any(|r| r == node),
        "{at} is one of {replicas:?}"
    );
}

/// A script that returns a table holding itself: Redis nests the reply
/// until Lua's stack runs out (thousands of levels) and then says so. A
/// valid reply, however deep, is passed on whole, and the node's
/// connection, shared with other clients, stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_nested_thousands_deep_is_passed_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = start(|_| {}).await;
    let mut s = tokio::net::TcpStream::connect(&env.gateway).await.unwrap();
    let mut out = belay_resp::encode_command(&["AUTH", env.lab.password()]).to_vec();
    out.extend_from_slice(&belay_resp::encode_command(&[
        "EVAL",
        "local a = {}; local b = {a}; a[1] = b; return a",
        "0",
    ]));
    out.extend_from_slice(&belay_resp::encode_command(&["PING"]));
    s.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !got.ends_with(b"+PONG\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the replies come")
            .unwrap();
        assert!(n > 0, "the gateway closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("+OK\r\n*1\r\n*1\r\n"),
        "{}",
        &text[..text.len().min(200)]
    );
    let depth = text.matches("*1\r\n").count();
    assert!(depth > 1000, "nested {depth} deep");
    assert!(
        text.contains("-ERR reached lua stack limit"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    assert!(
        !text.contains("UNCERTAIN"),
        "the node's connection was dropped"
    );
    // Another client on the same shared connection is unaffected.
    let mut c = env.client().await;
    assert_eq!(
        c.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
}

/// `UNSUBSCRIBE foo bar quux` from a client subscribed to nothing gets
/// three replies from Redis: the gateway answers exactly what Redis does,
/// and no shared connection ever sees a command with several replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_from_nothing_is_answered_as_redis_does() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let auth = belay_resp::encode_command(&["AUTH", env.lab.password()]).to_vec();
    for cmds in [
        vec![vec!["UNSUBSCRIBE", "foo", "bar", "quux"], vec!["PING"]],
        vec![
            vec!["PUNSUBSCRIBE"],
            vec!["SUNSUBSCRIBE", "x"],
            vec!["PING"],
        ],
    ] {
        let mut out = auth.clone();
        for c in &cmds {
            out.extend_from_slice(&belay_resp::encode_command(c));
        }
        let expected_end = b"+PONG\r\n";
        let (direct, _) = raw_exchange(&master, &out, 1).await;
        let (through, closed) = raw_exchange(&env.gateway, &out, direct.len()).await;
        assert!(direct.ends_with(expected_end));
        assert_eq!(
            String::from_utf8_lossy(&through),
            String::from_utf8_lossy(&direct),
            "{cmds:?}"
        );
        assert!(!closed);
    }
    // RESP3: push frames, as Redis sends them.
    let mut out = auth.clone();
    out.extend_from_slice(&belay_resp::encode_command(&["HELLO", "3"]));
    let (hello, _) = raw_exchange(&env.gateway, &out, 1).await;
    assert!(
        hello.starts_with(b"+OK\r\n%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    out.extend_from_slice(&belay_resp::encode_command(&["UNSUBSCRIBE", "a"]));
    let (got, _) = raw_exchange(&env.gateway, &out, hello.len() + 10).await;
    assert!(
        got[hello.len()..].starts_with(b">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"),
        "{}",
        String::from_utf8_lossy(&got[hello.len()..])
    );
    // The shared connections are intact: other clients carry on.
    let mut c = env.client().await;
    assert_eq!(
        c.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
}
