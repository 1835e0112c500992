//! What the gateway enforces besides Redis's own rules: a deadline for
//! logging in, a brake on password guessing, no node secret in `CONFIG
//! GET`, transactions that cannot be desynchronized, and admin commands
//! that reach every node as the client's own user.

mod support;

use std::time::{Duration, Instant};

use belay_client::{Auth, Connection, Value};
use support::{bulk, raw_exchange, start};

fn error(v: Value) -> String {
    match v {
        Value::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_has_a_deadline_and_guessing_is_slowed_down() {
    let env = start(|cfg| cfg.auth_timeout_secs = 1).await;
    // A client that never authenticates is closed after the deadline.
    let started = Instant::now();
    let (got, closed) = raw_exchange(&env.gateway, b"", 1).await;
    assert!(closed, "the unauthenticated client was closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("authentication timed out"), "{text}");
    // An authenticated client is not.
    let mut c = env.client().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        c.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );

    // Wrong passwords: after a few from one address, each is answered later.
    let mut guesser = Connection::connect(&env.gateway, None, Duration::from_secs(30))
        .await
        .unwrap();
    let mut times = Vec::new();
    for i in 0..9 {
        let started = Instant::now();
        let e = error(
            guesser
                .call(&["AUTH", &format!("guess-{i}")])
                .await
                .unwrap(),
        );
        assert!(e.starts_with("WRONGPASS"), "{e}");
        times.push(started.elapsed());
        // Within the deadline: a new connection each time.
        if i % 3 == 2 {
            guesser = Connection::connect(&env.gateway, None, Duration::from_secs(30))
                .await
                .unwrap();
        }
    }
    assert!(times[0] < Duration::from_millis(100), "{times:?}");
    assert!(
        times[8] >= Duration::from_millis(400),
        "the ninth guess was answered at once: {times:?}"
    );
    // The right password still works (after its wait).
    assert_eq!(
        guesser.call(&["AUTH", env.lab.password()]).await.unwrap(),
        Value::Simple("OK".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_get_does_not_show_the_nodes_passwords() {
    let env = start(|cfg| cfg.client_password = Some("only-for-clients".into())).await;
    let mut c = Connection::connect(
        &env.gateway,
        Some(&Auth::password("only-for-clients")),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let reply = c
        .call(&["CONFIG", "GET", "*pass*", "masterauth"])
        .await
        .unwrap()
        .to_pairs()
        .unwrap();
    let requirepass = reply
        .iter()
        .find(|(k, _)| k == "requirepass")
        .unwrap_or_else(|| panic!("{reply:?}"));
    assert_eq!(requirepass.1, "(hidden by belay)");
    let masterauth = reply.iter().find(|(k, _)| k == "masterauth").unwrap();
    assert_eq!(masterauth.1, "(hidden by belay)");
    assert!(!format!("{reply:?}").contains(env.lab.password()));
    // Other parameters come as they are.
    let reply = c
        .call(&["CONFIG", "GET", "maxmemory-policy"])
        .await
        .unwrap();
    assert_eq!(reply.to_pairs().unwrap()[0].1, "noeviction");
    // And so in RESP3 (a map).
    c.call(&["HELLO", "3"]).await.unwrap();
    let reply = c.call(&["CONFIG", "GET", "requirepass"]).await.unwrap();
    assert!(matches!(&reply, Value::Map(_)), "{reply:?}");
    assert_eq!(reply.to_pairs().unwrap()[0].1, "(hidden by belay)");
}

/// Commands that would change the session's state inside MULTI are refused
/// there, and EXEC then discards the transaction, as Redis does for a
/// command it rejects while queueing: nothing of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cannot_desynchronize_the_session() {
    let env = start(|_| {}).await;
    let master = env.master().await;
    let mut c = env.client().await;
    for refused in [
        vec!["SELECT", "1"],
        vec!["SUBSCRIBE", "ch"],
        vec!["AUTH", "x"],
    ] {
        c.call_ok(&["MULTI"]).await.unwrap();
        assert_eq!(
            c.call(&["SET", "tx:k", "v"]).await.unwrap(),
            Value::Simple("QUEUED".into())
        );
        let e = error(c.call(&refused).await.unwrap());
        assert!(e.contains("inside MULTI"), "{refused:?}: {e}");
        let e = error(c.call(&["EXEC"]).await.unwrap());
        assert!(e.starts_with("EXECABORT"), "{refused:?}: {e}");
        assert_eq!(
            env.node(&master)
                .await
                .call(&["GET", "tx:k"])
                .await
                .unwrap(),
            Value::Nil,
            "nothing of the discarded transaction ran"
        );
        // The session is still in db 0, and not subscribed.
        c.call_ok(&["SET", "tx:after", "1"]).await.unwrap();
        assert_eq!(
            env.node(&master)
                .await
                .call(&["GET", "tx:after"])
                .await
                .unwrap(),
            bulk("1")
        );
    }
}

/// `SCRIPT LOAD` is checked before it reaches any node: denied by the
/// gateway's config, no replica gets it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_script_load_reaches_no_node() {
    let env = start(|cfg| {
        cfg.commands
            .insert("script|load".into(), belay_gateway::CommandOverride::Deny);
    })
    .await;
    let mut c = env.client().await;
    // Reads first, so the gateway has connections to the replicas.
    for _ in 0..200 {
        c.call(&["GET", "warm"]).await.unwrap();
    }
    let e = error(
        c.call(&["SCRIPT", "LOAD", "return 'denied'"])
            .await
            .unwrap(),
    );
    assert!(e.contains("denied by the gateway's configuration"), "{e}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for node in env
        .lab
        .data_nodes()
        .iter()
        .map(|p| p.addr())
        .collect::<Vec<_>>()
    {
        // sha1("return 'denied'")
        let exists = env
            .node(&node)
            .await
            .call(&[
                "SCRIPT",
                "EXISTS",
                "c6ce9b28b998488b7ad2eb6e0a130447dcc15d4e",
            ])
            .await
            .unwrap();
        assert_eq!(exists, Value::Array(vec![Value::Integer(0)]), "{node}");
    }
}

/// `CONFIG SET` and `ACL SETUSER` are per node in Redis: through the
/// gateway they reach every data node, as the client's own user; a partial
/// failure names the nodes that did not take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_reach_every_node() {
    let mut env = start(|_| {}).await;
    let mut c = env.client().await;
    let nodes: Vec<String> = env.lab.data_nodes().iter().map(|p| p.addr()).collect();
    // Keyspace notifications, as client libraries set them for expiry events.
    assert_eq!(
        c.call(&["CONFIG", "SET", "notify-keyspace-events", "Ex"])
            .await
            .unwrap(),
        Value::Simple("OK".into())
    );
    for node in &nodes {
        let v = env
            .node(node)
            .await
            .call_ok(&["CONFIG", "GET", "notify-keyspace-events"])
            .await
            .unwrap();
        assert_eq!(v.to_pairs().unwrap()[0].1, "xE", "{node}");
    }
    // A user made through the gateway can log in and read from replicas.
    assert_eq!(
        c.call(&["ACL", "SETUSER", "dave", "on", ">dave-pw", "~*", "+@all"])
            .await
            .unwrap(),
        Value::Simple("OK".into())
    );
    for node in &nodes {
        let mut d = Connection::connect(
            node,
            Some(&Auth {
                username: Some("dave".into()),
                password: "dave-pw".into(),
            }),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("dave on {node}: {e}"));
        assert_eq!(d.call(&["ACL", "WHOAMI"]).await.unwrap(), bulk("dave"));
    }
    // A user Redis would not let do it is refused, by Redis's own words.
    c.call_ok(&[
        "ACL", "SETUSER", "erin", "on", ">erin-pw", "~*", "+@all", "-@admin",
    ])
    .await
    .unwrap();
    let mut erin = Connection::connect(
        &env.gateway,
        Some(&Auth {
            username: Some("erin".into()),
            password: "erin-pw".into(),
        }),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let e = error(
        erin.call(&["CONFIG", "SET", "maxmemory", "1"])
            .await
            .unwrap(),
    );
    assert!(e.starts_with("NOPERM"), "{e}");
    // A replica that cannot be reached is named.
    let down = env.replicas().await[0].clone();
    env.lab.pause(&down).unwrap();
    let e = error(
        c.call(&["CONFIG", "SET", "maxmemory-samples", "7"])
            .await
            .unwrap(),
    );
    assert!(e.contains("but not on") && e.contains(&down), "{e}");
    env.lab.resume(&down).unwrap();
    // And the drift is reported.
    let view = c.call(&["BELAY", "TOPOLOGY"]).await.unwrap();
    let view: serde_json::Value = serde_json::from_str(view.as_str().unwrap()).unwrap();
    assert_eq!(
        view["admin_drift"][&down],
        serde_json::json!(["CONFIG SET maxmemory-samples"]),
        "{view}"
    );
    let gone = error(c.call(&["CONFIG", "REWRITE"]).await.unwrap());
    assert!(gone.contains("not supported through the gateway"), "{gone}");
}
