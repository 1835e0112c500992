//! The gateway as many users' entry point: every command runs as the ACL
//! user, in the database and with the protocol it was sent under; nothing a
//! client sends makes the gateway run something twice or with more rights
//! than the client has. Users are created on every node, as Redis needs.

mod support;

use std::time::{Duration, Instant};

use belay_client::{Auth, Connection, Value};
use support::{bulk, start, Env};

/// Runs `ACL SETUSER <rules>` on every data node.
async fn create_user(env: &Env, rules: &[&str]) {
    for node in env
        .lab
        .data_nodes()
        .iter()
        .map(|p| p.addr())
        .collect::<Vec<_>>()
    {
        let mut args = vec!["ACL", "SETUSER"];
        args.extend_from_slice(rules);
        env.node(&node).await.call_ok(&args).await.unwrap();
    }
}

fn user(name: &str, password: &str) -> Auth {
    Auth {
        username: Some(name.into()),
        password: password.into(),
    }
}

async fn connect(addr: &str, auth: &Auth) -> Connection {
    Connection::connect(addr, Some(auth), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{auth:?} connects to {addr}: {e}"))
}

/// Runs `commands` one after another on `c`, returning every reply.
async fn run(c: &mut Connection, commands: &[Vec<&str>]) -> Vec<Value> {
    let mut replies = Vec::new();
    for cmd in commands {
        replies.push(c.call(cmd).await.unwrap());
    }
    replies
}

fn error(v: Value) -> String {
    match v {
        Value::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Clients that pipeline writes on the gateway meanwhile; each counts the
/// errors it sees.
fn background_load(
    env: &Env,
    clients: usize,
) -> (
    tokio::task::JoinHandle<usize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (gw, auth) = (env.gateway.clone(), env.auth());
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..clients {
            let (gw, auth, stop) = (gw.clone(), auth.clone(), flag.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = connect(&gw, &auth).await;
                let mut errors = 0;
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for _ in 0..16 {
                        n += 1;
                        c.send(&["SET", &format!("load:{i}:{}", n % 100), "x"])
                            .await
                            .unwrap();
                    }
                    for _ in 0..16 {
                        if c.read_value().await.unwrap().is_error() {
                            errors += 1;
                        }
                    }
                }
                errors
            }));
        }
        let mut errors = 0;
        for t in tasks {
            errors += t.await.unwrap();
        }
        errors
    });
    (task, stop)
}

/// A reply a script makes up — `READONLY`, `NOREPLICAS`, `LOADING`,
/// `MASTERDOWN`, `BUSY` — is the script's own words, not the node's
/// refusal: the script runs once, the client gets its reply, and nobody
/// else's commands are touched (the master's connections stay up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_made_up_refusal_is_never_taken_for_the_nodes() {
    let env = start(|_| {}).await;
    let (load, stop) = background_load(&env, 6);
    let mut c = env.client().await;
    c.set_timeout(Duration::from_secs(30));
    let refusals = ["READONLY", "NOREPLICAS", "LOADING", "MASTERDOWN", "BUSY"];
    for round in 0..20 {
        for r in refusals {
            c.send(&[
                "EVAL",
                &format!("redis.call('INCR', KEYS[1]); return redis.error_reply('{r} made up')"),
                "1",
                &format!("ran:{r}:{round}"),
            ])
            .await
            .unwrap();
        }
        let started = Instant::now();
        for r in refusals {
            let e = error(c.read_value().await.unwrap());
            assert!(e.starts_with(&format!("{r} made up")), "{e}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the scripts' replies were not held: {:?}",
            started.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load.await.unwrap(), 0, "other clients saw errors");
    let mut m = env.node(&env.master().await).await;
    for round in 0..20 {
        for r in refusals {
            assert_eq!(
                m.call(&["GET", &format!("ran:{r}:{round}")]).await.unwrap(),
                bulk("1"),
                "the script returning {r} ran exactly once"
            );
        }
    }
}

/// Subscriptions are made as the session's user: a user limited to some
/// channels gets those and no others, exactly as from Redis directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_run_as_the_sessions_user() {
    let env = start(|_| {}).await;
    create_user(
        &env,
        &[
            "alice",
            "on",
            ">alice-pw",
            "~app:*",
            "resetchannels",
            "&app:*",
            "+@all",
        ],
    )
    .await;
    let alice = user("alice", "alice-pw");
    let master = env.master().await;
    // Redis itself refuses her a pattern over every channel…
    let mut direct = connect(&master, &alice).await;
    let direct_reply = error(direct.call(&["PSUBSCRIBE", "*"]).await.unwrap());
    assert!(direct_reply.starts_with("NOPERM"), "{direct_reply}");
    // …and so does the gateway.
    let mut through = connect(&env.gateway, &alice).await;
    through.set_timeout(Duration::from_secs(5));
    let reply = error(through.call(&["PSUBSCRIBE", "*"]).await.unwrap());
    assert_eq!(reply, direct_reply);
    // Her own channels work, and nothing else reaches her.
    let mut sub = connect(&env.gateway, &alice).await;
    sub.set_timeout(Duration::from_secs(5));
    sub.send(&["SUBSCRIBE", "app:news"]).await.unwrap();
    sub.read_value().await.unwrap();
    let mut c = env.client().await;
    c.call(&["PUBLISH", "other", "not for alice"])
        .await
        .unwrap();
    assert_eq!(
        c.call(&["PUBLISH", "app:news", "hello"]).await.unwrap(),
        Value::Integer(1)
    );
    assert_eq!(
        sub.read_value().await.unwrap(),
        Value::Array(vec![bulk("message"), bulk("app:news"), bulk("hello")])
    );
}

/// Logging in needs nothing beyond what `AUTH` needs: a user without
/// `ROLE` (`-@dangerous`) logs in, and `AUTH default …` after it switches
/// back to the gateway's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limited_as_redis_allows_logs_in() {
    let env = start(|_| {}).await;
    create_user(
        &env,
        &["bob", "on", ">bob-pw", "~*", "&*", "+@all", "-@dangerous"],
    )
    .await;
    let mut bob = Connection::connect(&env.gateway, None, Duration::from_secs(10))
        .await
        .unwrap();
    // A failed login says what Redis says, and names no node.
    let e = error(bob.call(&["AUTH", "bob", "wrong"]).await.unwrap());
    assert!(
        e.starts_with("WRONGPASS") && !e.contains("127.0.0.1"),
        "{e}"
    );
    assert_eq!(
        bob.call(&["AUTH", "bob", "bob-pw"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(bob.call(&["ACL", "WHOAMI"]).await.unwrap(), bulk("bob"));
    bob.call_ok(&["SET", "bob:k", "v"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bob.call(&["GET", "bob:k"]).await.unwrap(), bulk("v"));
    // What bob may not do, Redis refuses him.
    assert!(error(bob.call(&["INFO"]).await.unwrap()).starts_with("NOPERM"));
    // Back to the gateway's own user.
    assert_eq!(
        bob.call(&["AUTH", "default", env.lab.password()])
            .await
            .unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(bob.call(&["ACL", "WHOAMI"]).await.unwrap(), bulk("default"));
    assert!(!bob.call(&["INFO", "server"]).await.unwrap().is_error());
}

/// Redis runs a connection's commands in the order sent; so does the
/// gateway, across every change of connection, while other clients load it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_commands_keep_their_order_under_load() {
    let env = start(|_| {}).await;
    let (load, stop) = background_load(&env, 6);
    let ok = Value::Simple("OK".into());
    for i in 0..100 {
        let mut c = env.client().await;
        let k = format!("order:{i}");
        for cmd in [
            vec!["SET", &k, "1"],
            vec!["MULTI"],
            vec!["INCR", &k],
            vec!["EXEC"],
            vec!["GET", &k],
        ] {
            c.send(&cmd).await.unwrap();
        }
        assert_eq!(c.read_value().await.unwrap(), ok);
        assert_eq!(c.read_value().await.unwrap(), ok);
        assert_eq!(
            c.read_value().await.unwrap(),
            Value::Simple("QUEUED".into())
        );
        assert_eq!(
            c.read_value().await.unwrap(),
            Value::Array(vec![Value::Integer(2)]),
            "try {i}: EXEC ran before the SET sent ahead of it"
        );
        assert_eq!(c.read_value().await.unwrap(), bulk("2"), "try {i}");
    }
    for i in 0..50 {
        let mut c = env.client().await;
        let k = format!("watch:{i}");
        for cmd in [vec!["SET", &k, "v"], vec!["WATCH", &k], vec!["GET", &k]] {
            c.send(&cmd).await.unwrap();
        }
        assert_eq!(c.read_value().await.unwrap(), ok);
        assert_eq!(c.read_value().await.unwrap(), ok);
        assert_eq!(
            c.read_value().await.unwrap(),
            bulk("v"),
            "try {i}: GET after WATCH"
        );
        let mut c = env.client().await;
        let k = format!("named:{i}");
        for cmd in [
            vec!["SET", &k, "v"],
            vec!["CLIENT", "SETNAME", "n"],
            vec!["SELECT", "0"],
            vec!["HELLO", "2"],
            vec!["GET", &k],
        ] {
            c.send(&cmd).await.unwrap();
        }
        for _ in 0..4 {
            assert!(!c.read_value().await.unwrap().is_error());
        }
        assert_eq!(
            c.read_value().await.unwrap(),
            bulk("v"),
            "try {i}: GET after SETNAME"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load.await.unwrap(), 0, "other clients saw errors");
}

/// A command refused by the master (it did not run) is sent again in the
/// context it was sent in: its database and its user, whatever the session
/// did since (`SELECT`, `RESET`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_runs_in_the_context_it_was_sent_in() {
    let mut env = start(|cfg| {
        cfg.min_synced_replicas = 0;
        cfg.failover_hold_ms = 10_000;
    })
    .await;
    // The gateway's own user may only touch `gw:` keys; alice may touch
    // `app:` keys. A retry run as the gateway's user instead of hers fails.
    create_user(&env, &["gw", "on", ">gw-pw", "~gw:*", "&*", "+@all"]).await;
    create_user(&env, &["alice", "on", ">alice-pw", "~app:*", "&*", "+@all"]).await;
    let gw = env
        .extra_gateway(|cfg| {
            cfg.username = Some("gw".into());
            cfg.password = Some("gw-pw".into());
            cfg.sentinel_password = Some(env_password());
            cfg.client_password = Some("client-pw".into());
            cfg.min_synced_replicas = 0;
            cfg.failover_hold_ms = 10_000;
        })
        .await;
    let master = env.master().await;
    let mut m = env.node(&master).await;
    let refuse = |n: &'static str| ["CONFIG", "SET", "min-replicas-to-write", n];

    // SELECT 1, SET (refused, held), SELECT 0: the SET lands in db 1.
    let mut c = env.client().await;
    c.set_timeout(Duration::from_secs(20));
    m.call_ok(&refuse("3")).await.unwrap();
    for cmd in [
        vec!["SELECT", "1"],
        vec!["SET", "ctx:db", "one"],
        vec!["SELECT", "0"],
    ] {
        c.send(&cmd).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    m.call_ok(&refuse("1")).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.read_value().await.unwrap(), Value::Simple("OK".into()));
    }
    assert_eq!(
        m.call(&["GET", "ctx:db"]).await.unwrap(),
        Value::Nil,
        "not in db 0"
    );
    m.call_ok(&["SELECT", "1"]).await.unwrap();
    assert_eq!(
        m.call(&["GET", "ctx:db"]).await.unwrap(),
        bulk("one"),
        "in db 1"
    );
    m.call_ok(&["SELECT", "0"]).await.unwrap();

    // alice's SET (refused, held), then RESET: the SET still runs as alice.
    let mut a = Connection::connect(&gw, None, Duration::from_secs(10))
        .await
        .unwrap();
    a.set_timeout(Duration::from_secs(20));
    assert_eq!(
        a.call(&["AUTH", "alice", "alice-pw"]).await.unwrap(),
        Value::Simple("OK".into())
    );
    m.call_ok(&refuse("3")).await.unwrap();
    a.send(&["SET", "app:k", "alice"]).await.unwrap();
    a.send(&["RESET"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    m.call_ok(&refuse("1")).await.unwrap();
    assert_eq!(
        a.read_value().await.unwrap(),
        Value::Simple("OK".into()),
        "run as alice, who may write app:k (the gateway's user may not)"
    );
    assert_eq!(a.read_value().await.unwrap(), Value::Simple("RESET".into()));
    assert_eq!(m.call(&["GET", "app:k"]).await.unwrap(), bulk("alice"));
}

fn env_password() -> String {
    "belay-test-password".into()
}

/// The gateway's refusals do not depend on the master's command table: a
/// gateway whose user may not read `COMMAND` still refuses `CLIENT REPLY`
/// (which would shift every reply on a shared connection), answers what it
/// answers itself, and holds the rest until a table is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_hold_without_a_command_table() {
    let env = start(|_| {}).await;
    create_user(
        &env,
        &["notable", "on", ">nt-pw", "~*", "&*", "+@all", "-command"],
    )
    .await;
    let mut cfg = support::gateway_config(&env.lab);
    cfg.username = Some("notable".into());
    cfg.password = Some("nt-pw".into());
    cfg.sentinel_password = Some(env_password());
    cfg.client_password = Some("client-pw".into());
    cfg.failover_hold_ms = 1000;
    let gw = belay_gateway::Gateway::bind(cfg).await.unwrap();
    let addr = gw.local_addr().to_string();
    let mut topo = gw.topology();
    tokio::spawn(async move {
        let _ = gw.run(std::future::pending()).await;
    });
    // Discovery finds the master but cannot read its table.
    let deadline = Instant::now() + Duration::from_secs(10);
    while topo.borrow_and_update().master.is_none() {
        assert!(Instant::now() < deadline, "no master");
        let _ = tokio::time::timeout(Duration::from_millis(200), topo.changed()).await;
    }
    assert!(topo.borrow().commands.is_empty());
    let mut c = connect(&addr, &Auth::password("client-pw")).await;
    for cmd in [
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["CLIENT", "KILL", "TYPE", "normal"],
        vec!["MONITOR"],
        vec!["CONFIG", "REWRITE"],
    ] {
        let e = error(c.call(&cmd).await.unwrap());
        assert!(
            e.contains("not supported through the gateway"),
            "{cmd:?}: {e}"
        );
    }
    assert_eq!(
        c.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
    assert!(c
        .call(&["CLIENT", "SETINFO", "LIB-NAME", "x"])
        .await
        .is_ok());
    let e = error(c.call(&["GET", "k"]).await.unwrap());
    assert!(
        e.starts_with("TRYAGAIN") && e.contains("command table"),
        "{e}"
    );
}

/// A user limited as teams limit each other gets through the gateway
/// exactly what Redis gives it directly: the same replies, the same
/// refusals, the same keys and channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_user_gets_what_redis_gives_it() {
    let env = start(|_| {}).await;
    create_user(
        &env,
        &[
            "carol",
            "on",
            ">carol-pw",
            "~app:*",
            "resetchannels",
            "&app:*",
            "-@all",
            "+@read",
            "+@write",
            "+@connection",
            "+@transaction",
            "+@pubsub",
            "-@dangerous",
        ],
    )
    .await;
    let carol = user("carol", "carol-pw");
    let commands: Vec<Vec<&str>> = vec![
        vec!["SET", "app:1", "v"],
        vec!["GET", "app:1"],
        vec!["SET", "other", "v"],
        vec!["GET", "other"],
        vec!["INCR", "app:n"],
        vec!["HSET", "app:h", "f", "1"],
        vec!["HGETALL", "app:h"],
        vec!["MGET", "app:1", "other"],
        vec!["KEYS", "*"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "maxmemory"],
        vec!["CONFIG", "SET", "maxmemory", "0"],
        vec!["ACL", "WHOAMI"],
        vec!["ACL", "SETUSER", "mallory", "on", ">x", "+@all", "~*"],
        vec!["INFO"],
        vec!["EVAL", "return 1", "0"],
        vec!["PUBLISH", "app:c", "m"],
        vec!["PUBLISH", "other", "m"],
        vec!["MULTI"],
        vec!["SET", "app:2", "x"],
        vec!["SET", "other", "x"],
        vec!["EXEC"],
        vec!["SCRIPT", "KILL"],
        vec!["DEL", "app:1", "app:n", "app:h", "app:2"],
    ];
    let master = env.master().await;
    let mut direct = connect(&master, &carol).await;
    let want = run(&mut direct, &commands).await;
    // The same again through the gateway, on the same keys.
    let mut admin = env.node(&master).await;
    admin
        .call_ok(&["DEL", "app:1", "app:n", "app:h", "app:2", "other"])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut through = connect(&env.gateway, &carol).await;
    let got = run(&mut through, &commands).await;
    for ((cmd, want), got) in commands.iter().zip(&want).zip(&got) {
        assert_eq!(
            want, got,
            "{cmd:?}: Redis says {want:?}, the gateway {got:?}"
        );
    }
}

/// Redis keeps a connection's database across `AUTH`: a user without the
/// right to `SELECT` works in the database chosen before it logged in, and
/// is refused `SELECT` itself (`NOPERM`). Through the gateway the same, on
/// the same keys (this is how Redis's own test suite logs in as a limited
/// user after selecting database 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_chosen_before_login_stays_and_select_is_checked_as_the_user() {
    let env = start(|_| {}).await;
    create_user(&env, &["dave", "on", ">dave-pw", "~*", "+@all", "-select"]).await;
    create_user(
        &env,
        &[
            "erin",
            "on",
            ">erin-pw",
            "~*",
            "+@all",
            "-select",
            "+select|3",
        ],
    )
    .await;
    let commands: Vec<Vec<&str>> = vec![
        vec!["SELECT", "9"],
        vec!["SET", "db:k", "nine"],
        vec!["AUTH", "dave", "dave-pw"],
        vec!["GET", "db:k"],
        vec!["SET", "db:dave", "v"],
        vec!["SELECT", "0"],
        vec!["SELECT", "9"],
        vec!["GET", "db:dave"],
        vec!["EVAL", "return redis.call('GET', KEYS[1])", "1", "db:k"],
        vec!["AUTH", "erin", "erin-pw"],
        vec!["GET", "db:dave"],
        vec!["SELECT", "0"],
        vec!["SELECT", "3"],
        vec!["SET", "db:erin", "v"],
        vec!["GET", "db:k"],
        vec!["AUTH", "dave", "dave-pw"],
        vec!["GET", "db:erin"],
        vec!["SELECT", "3"],
    ];
    let master = env.master().await;
    let mut admin = env.node(&master).await;
    async fn wipe(admin: &mut Connection) {
        for db in ["9", "3"] {
            admin.call_ok(&["SELECT", db]).await.unwrap();
            admin
                .call_ok(&["DEL", "db:k", "db:dave", "db:erin"])
                .await
                .unwrap();
        }
        admin.call_ok(&["SELECT", "0"]).await.unwrap();
    }
    let mut direct = env.node(&master).await;
    let want = run(&mut direct, &commands).await;
    wipe(&mut admin).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut through = env.client().await;
    let got = run(&mut through, &commands).await;
    for ((cmd, want), got) in commands.iter().zip(&want).zip(&got) {
        assert_eq!(
            want, got,
            "{cmd:?}: Redis says {want:?}, the gateway {got:?}"
        );
    }
    // And the keys are where Redis put them.
    admin.call_ok(&["SELECT", "9"]).await.unwrap();
    assert_eq!(admin.call(&["GET", "db:dave"]).await.unwrap(), bulk("v"));
    admin.call_ok(&["SELECT", "3"]).await.unwrap();
    assert_eq!(admin.call(&["GET", "db:erin"]).await.unwrap(), bulk("v"));
    admin.call_ok(&["SELECT", "0"]).await.unwrap();
    assert_eq!(
        admin.call(&["EXISTS", "db:dave", "db:erin"]).await.unwrap(),
        Value::Integer(0)
    );
}
