//! The gateway in front of what users really run: a Sentinel deployment
//! belay did not configure (the seed note's: Sentinels without a password),
//! client libraries' connection handshakes during a failover, scripts that
//! must be killed where they run, and slow commands that are not dead nodes.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use belay_client::{Connection, Value};
use belay_gateway::{Gateway, GatewayConfig};
use belay_lab::foreign::{SeedDeployment, SeedSpec};
use support::{bulk, start, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The seed note's layout — data nodes with `requirepass` and `masterauth`,
/// one replica, one Sentinel with `sentinel auth-pass` and no password of
/// its own, quorum 1 — and a gateway given only `--sentinel`,
/// `--master-name` and `--password`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_notes_deployment_needs_only_sentinel_master_name_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = SeedDeployment::start(dir.path(), SeedSpec::default())
        .await
        .expect("the seed note's deployment starts");
    let cfg = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        sentinels: seed.sentinel_addrs(),
        master_name: seed.master_name().to_string(),
        password: Some(seed.password().to_string()),
        ..GatewayConfig::default()
    };
    let gw = Gateway::bind(cfg).await.unwrap();
    let addr = gw.local_addr().to_string();
    gw.wait_ready(1, Duration::from_secs(20))
        .await
        .expect("the gateway finds the master through a password-less Sentinel");
    let task = tokio::spawn(async move {
        let _ = gw.run(std::future::pending()).await;
    });
    let mut c = Connection::connect(&addr, Some(&seed.auth()), Duration::from_secs(20))
        .await
        .unwrap();
    c.call_ok(&["SET", "seed", "1"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.call(&["GET", "seed"]).await.unwrap(), bulk("1"));

    // The note's experiment: pause the master, write meanwhile, watch the
    // write land on the promoted replica.
    let old = seed.master_addr();
    seed.pause(&old).unwrap();
    // Once the gateway sees the master silent it holds writes (a write sent
    // before that is in flight on the paused master: it may or may not run).
    let mut watcher = Connection::connect(&addr, Some(&seed.auth()), Duration::from_secs(5))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = watcher.call(&["BELAY", "TOPOLOGY"]).await.unwrap();
        let view: serde_json::Value = serde_json::from_str(view.as_str().unwrap()).unwrap();
        if view["writes_held"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "writes never held: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let write = tokio::spawn(async move {
        let r = c.call(&["SET", "during", "pause"]).await;
        (r, c)
    });
    let new = seed
        .wait_for_failover(&old, Duration::from_secs(30))
        .await
        .expect("Sentinel promotes the replica");
    let (r, mut c) = write.await.unwrap();
    assert_eq!(
        r.unwrap(),
        Value::Simple("OK".into()),
        "the write was held and sent to the new master"
    );
    let mut direct = Connection::connect(&new, Some(&seed.auth()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        direct.call(&["GET", "during"]).await.unwrap(),
        bulk("pause")
    );
    seed.resume(&old).unwrap();
    seed.wait_until_replica_of(&old, &new, Duration::from_secs(30))
        .await
        .expect("the old master comes back as a replica");
    let view = c.call(&["BELAY", "TOPOLOGY"]).await.unwrap();
    let view: serde_json::Value = serde_json::from_str(view.as_str().unwrap()).unwrap();
    assert_eq!(view["master"], serde_json::json!(new));
    task.abort();
}

/// Sends `commands` on a new connection and reads one reply each; returns
/// the replies' text and how long it took from connecting.
async fn handshake(addr: &str, commands: &[Vec<&str>]) -> (String, Duration) {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    for c in commands {
        out.extend_from_slice(&belay_resp::encode_command(c));
    }
    s.write_all(&out).await.unwrap();
    let mut got = bytes::BytesMut::new();
    let mut frames = 0;
    let limits = belay_resp::Limits::for_replies();
    while frames < commands.len() {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read_buf(&mut got))
            .await
            .expect("replies within 20 s")
            .unwrap();
        assert!(n > 0, "the gateway closed the connection");
        frames = 0;
        let mut at = 0;
        while let Ok(Some(len)) = belay_resp::frame_len(&got[at..], &limits) {
            at += len;
            frames += 1;
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// redis-py (which sends `CLIENT SETINFO` on connect, and `HELLO 3` with
/// protocol 3) reading once per new connection; prints each one's time.
const REDIS_PY: &str = r#"
import sys, time, redis
port, password, protocol, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    started = time.monotonic()
    r = redis.Redis(host="127.0.0.1", port=port, password=password, protocol=protocol,
                    socket_timeout=30, lib_name="redis-py", lib_version=redis.__version__)
    value = r.get("handshake-key")
    took = time.monotonic() - started
    assert value == b"v", value
    print(f"{took:.4f}")
    r.close()
"#;

fn redis_py(addr: &str, password: &str, protocol: u8, n: usize) -> Vec<Duration> {
    let port = addr.rsplit(':').next().unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            REDIS_PY,
            port,
            password,
            &protocol.to_string(),
            &n.to_string(),
        ])
        .output()
        .expect("python3 (scripts/setup --for-tests installs it with redis-py)");
    assert!(
        out.status.success(),
        "redis-py failed (is it installed? scripts/setup --for-tests installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Duration::from_secs_f64(l.parse().unwrap()))
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// With the master paused, new connections of modern clients — whose
/// handshakes (`HELLO 3`, `CLIENT SETINFO`, `SELECT`, …) Redis would run on
/// the master — read from the replicas at once instead of waiting for the
/// failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_handshakes_do_not_wait_for_a_paused_master() {
    let mut env = start(|_| {}).await;
    let password = env.lab.password().to_string();
    let mut c = env.client().await;
    c.call_ok(&["SET", "handshake-key", "v"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master = env.master().await;
    env.lab.pause(&master).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A go-redis / Lettuce style handshake, then a read.
    let mut times = Vec::new();
    for i in 0..10 {
        let name = format!("client-{i}");
        let (replies, took) = handshake(
            &env.gateway,
            &[
                vec!["HELLO", "3", "AUTH", "default", &password, "SETNAME", &name],
                vec!["CLIENT", "SETINFO", "LIB-NAME", "go-redis(belay-test)"],
                vec!["CLIENT", "SETINFO", "LIB-VER", "9.7.0"],
                vec!["SELECT", "0"],
                vec!["PING"],
                vec!["ECHO", "hi"],
                vec!["CLIENT", "GETNAME"],
                vec!["READONLY"],
                vec!["GET", "handshake-key"],
            ],
        )
        .await;
        assert!(replies.ends_with("$1\r\nv\r\n"), "{replies:?}");
        assert!(!replies.contains("\r\n-"), "no errors: {replies:?}");
        assert!(
            took < Duration::from_secs(1),
            "handshake {i} waited {took:?}"
        );
        times.push(took);
    }
    let raw = median(times);
    // redis-py, RESP2 and RESP3.
    let (addr, pw) = (env.gateway.clone(), password.clone());
    let (resp2, resp3) = tokio::task::spawn_blocking(move || {
        (redis_py(&addr, &pw, 2, 10), redis_py(&addr, &pw, 3, 10))
    })
    .await
    .unwrap();
    for (what, times) in [("redis-py RESP2", &resp2), ("redis-py RESP3", &resp3)] {
        for t in times {
            assert!(
                *t < Duration::from_secs(1),
                "{what} waited {t:?}: {times:?}"
            );
        }
    }
    let (py2, py3) = (median(resp2), median(resp3));
    eprintln!("with the master paused: handshake + read, median of 10: raw HELLO 3 {raw:?}, redis-py RESP2 {py2:?}, RESP3 {py3:?}");
    for (what, m) in [
        ("raw", raw),
        ("redis-py RESP2", py2),
        ("redis-py RESP3", py3),
    ] {
        assert!(m <= Duration::from_millis(100), "{what}: median {m:?}");
    }
    env.lab.resume(&master).unwrap();
}

/// A read-only script may run on a replica: `SCRIPT KILL` and `FUNCTION
/// KILL` reach it there, and a replica busy with one gets no reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_killed_where_they_run_and_busy_replicas_get_no_reads() {
    let env = start_with(
        |lab| {
            lab.extra_redis_config
                .push("busy-reply-threshold 100".into())
        },
        |_| {},
    )
    .await;
    let mut c = env.client().await;
    c.call_ok(&["SET", "k", "v"]).await.unwrap();
    c.call_ok(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=spinlib\nredis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}",
    ])
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (start, kill) in [
        (
            vec!["EVAL_RO", "while true do end", "0"],
            vec!["SCRIPT", "KILL"],
        ),
        (vec!["FCALL_RO", "spin", "0"], vec!["FUNCTION", "KILL"]),
    ] {
        let mut spinner = env.client().await;
        spinner.set_timeout(Duration::from_secs(30));
        spinner.send(&start).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Reads keep flowing, and not to the busy replica.
        for _ in 0..20 {
            assert_eq!(c.call(&["GET", "k"]).await.unwrap(), bulk("v"), "{start:?}");
        }
        let view = c.call(&["BELAY", "TOPOLOGY"]).await.unwrap();
        let view: serde_json::Value = serde_json::from_str(view.as_str().unwrap()).unwrap();
        let busy: Vec<_> = view["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["busy"] == true)
            .collect();
        assert_eq!(busy.len(), 1, "one replica is busy with the script: {view}");
        assert_eq!(busy[0]["eligible"], false, "{view}");
        // Killed where it runs: the replica, not the master.
        assert_eq!(
            c.call(&kill).await.unwrap(),
            Value::Simple("OK".into()),
            "{kill:?}"
        );
        let Value::Error(e) = spinner.read_value().await.unwrap() else {
            panic!("the spinning script was not killed");
        };
        assert!(e.contains("killed"), "{e}");
        // Nothing runs any more: Redis's own answer.
        let Value::Error(e) = c.call(&kill).await.unwrap() else {
            panic!("{kill:?} with nothing running succeeded");
        };
        assert!(e.starts_with("NOTBUSY"), "{e}");
        // The replica serves reads again once discovery sees it answer.
        let busy_addr = busy[0]["addr"].as_str().unwrap().to_string();
        env.wait_eligible(&busy_addr, true, Duration::from_secs(5))
            .await;
    }
}

/// While a script or function runs on the master, a client's `PING` gets
/// Redis's `BUSY` (a health check learns the master cannot take commands),
/// other clients get at once what Redis gives them (`FUNCTION STATS`, a
/// write's `BUSY`), and the wrong kind of kill gets Redis's `BUSY` too, not
/// a replica's `NOTBUSY`; once it is killed, `PING` says `PONG` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_master_says_busy_to_ping_as_redis_does() {
    let env = start_with(
        |lab| {
            lab.down_after_ms = 20_000;
            lab.extra_redis_config
                .push("busy-reply-threshold 100".into())
        },
        |_| {},
    )
    .await;
    let mut c = env.client().await;
    c.set_timeout(Duration::from_secs(30));
    // In another database, as Redis's own tests are: the kill must not
    // need a SELECT, which a busy node refuses, nor may a connection the
    // others need.
    c.call_ok(&["SELECT", "9"]).await.unwrap();
    let mut same_db = env.client().await;
    same_db.set_timeout(Duration::from_secs(5));
    same_db.call_ok(&["SELECT", "9"]).await.unwrap();
    let master = env.master().await;
    assert_eq!(
        c.call(&["PING"]).await.unwrap(),
        Value::Simple("PONG".into())
    );
    c.call_ok(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=busylib\nredis.register_function('busy', function() while true do end end)",
    ])
    .await
    .unwrap();
    for (start, wrong_kill, kill) in [
        (
            vec!["FCALL", "busy", "0"],
            vec!["SCRIPT", "KILL"],
            vec!["FUNCTION", "KILL"],
        ),
        (
            vec!["EVAL", "while true do end", "0"],
            vec!["FUNCTION", "KILL"],
            vec!["SCRIPT", "KILL"],
        ),
    ] {
        let mut spinner = env.client().await;
        spinner.set_timeout(Duration::from_secs(30));
        spinner.call_ok(&["SELECT", "9"]).await.unwrap();
        spinner.send(&start).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let Value::Error(e) = c.call(&["PING"]).await.unwrap() else {
            panic!(
                "PING while {start:?} runs on the master did not say BUSY: {:?}",
                c.call(&["BELAY", "TOPOLOGY"]).await
            );
        };
        assert!(e.starts_with("BUSY"), "{e}");
        // A client in the spinner's own database (its shared connections,
        // one of them stuck behind the script) gets what Redis gives it at
        // once: FUNCTION STATS runs while a script does, a write is
        // refused with BUSY (not held until the script ends).
        let stats = same_db.call(&["FUNCTION", "STATS"]).await.unwrap();
        let mut direct = env.node(&master).await;
        let want = direct.call(&["FUNCTION", "STATS"]).await.unwrap();
        match (&want, &stats) {
            // An EVAL runs: Redis says BUSY to FUNCTION STATS.
            (Value::Error(w), Value::Error(g)) => assert_eq!(w, g),
            _ => {
                assert!(format!("{want:?}").contains("running_script"), "{want:?}");
                assert!(format!("{stats:?}").contains("running_script"), "{stats:?}");
            }
        }
        let Value::Error(e) = same_db.call(&["SET", "while-busy", "x"]).await.unwrap() else {
            panic!("a write while {start:?} runs was not refused");
        };
        assert!(e.starts_with("BUSY"), "{e}");
        let Value::Error(e) = c.call(&wrong_kill).await.unwrap() else {
            panic!("{wrong_kill:?} while {start:?} runs succeeded");
        };
        assert!(e.starts_with("BUSY"), "{wrong_kill:?}: {e}");
        assert_eq!(c.call(&kill).await.unwrap(), Value::Simple("OK".into()));
        let Value::Error(e) = spinner.read_value().await.unwrap() else {
            panic!("{start:?} was not killed");
        };
        assert!(e.contains("killed"), "{e}");
        // The master answers again: writes flow, and PING says PONG.
        c.call_ok(&["SET", "after", "kill"]).await.unwrap();
        assert_eq!(
            c.call(&["PING"]).await.unwrap(),
            Value::Simple("PONG".into())
        );
        assert_eq!(c.call(&["PING", "hi"]).await.unwrap(), bulk("hi"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while c
            .call(&["BELAY", "TOPOLOGY"])
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .contains("\"writes_held\":true")
        {
            assert!(
                Instant::now() < deadline,
                "writes still held after the kill"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `DEBUG` runs on the master, as the client's user, only where the master
/// runs it from any address: with `enable-debug-command local` the gateway
/// (a local connection) would lend a remote client a right Redis gives only
/// to local ones. Subcommands that crash a node or answer with push frames
/// are refused everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_runs_only_where_the_master_runs_it_for_anyone() {
    for (setting, allowed) in [("yes", true), ("local", false)] {
        let env = start_with(
            |lab| {
                lab.extra_redis_config
                    .push(format!("enable-debug-command {setting}"))
            },
            |_| {},
        )
        .await;
        let mut c = env.client().await;
        c.call_ok(&["SET", "dbg", "v"]).await.unwrap();
        let mut direct = env.node(&env.master().await).await;
        let direct_reply = direct.call(&["DEBUG", "OBJECT", "dbg"]).await.unwrap();
        assert!(
            direct_reply
                .as_str()
                .is_some_and(|s| s.starts_with("Value at:")),
            "{direct_reply:?}"
        );
        let through = c.call(&["DEBUG", "OBJECT", "dbg"]).await.unwrap();
        if allowed {
            assert!(
                through.as_str().is_some_and(|s| s.starts_with("Value at:")),
                "{through:?}"
            );
            assert_eq!(
                c.call(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]).await.unwrap(),
                Value::Simple("OK".into())
            );
        } else {
            let Value::Error(e) = through else {
                panic!("DEBUG ran through the gateway on a local-only master: {through:?}");
            };
            assert!(e.contains("enable-debug-command yes"), "{e}");
        }
        for refused in [vec!["DEBUG", "PROTOCOL", "push"], vec!["DEBUG", "SEGFAULT"]] {
            let Value::Error(e) = c.call(&refused).await.unwrap() else {
                panic!("{refused:?} was not refused");
            };
            assert!(e.contains("not supported through the gateway"), "{e}");
        }
        assert_eq!(c.call(&["GET", "dbg"]).await.unwrap(), bulk("v"));
        assert_eq!(
            direct.call(&["PING"]).await.unwrap(),
            Value::Simple("PONG".into())
        );
    }
}

/// A command that legitimately runs longer than the request timeout gets
/// its real reply (it is not taken for a dead node), and other clients
/// carry on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_commands_get_their_real_replies() {
    // The gateway's default settings: a 2 s request timeout. Sentinel's
    // down-after is longer than the script, as `belay up`'s 5 s is (with the
    // tests' usual 1 s, Sentinel itself would fail the busy master over);
    // Redis answers BUSY to others after its own 5 s threshold.
    let mut env = start_with(|lab| lab.down_after_ms = 10_000, |_| {}).await;
    let mut c = env.client().await;
    c.set_timeout(Duration::from_secs(30));
    c.call_ok(&["SET", "other", "x"]).await.unwrap();
    // A script that runs for 4 s, then writes.
    let slow_script = "local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]; \
        repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 4000000; \
        return redis.call('SET', KEYS[1], 'done')";
    let gw = env.gateway.clone();
    let auth = env.auth();
    let slow = tokio::spawn(async move {
        let mut s = Connection::connect(&gw, Some(&auth), Duration::from_secs(30))
            .await
            .unwrap();
        let started = Instant::now();
        let r = s
            .call(&["EVAL", slow_script, "1", "slow-key"])
            .await
            .unwrap();
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Other clients' reads (from the replicas) are not held up meanwhile.
    let mut reader = env.client().await;
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(reader.call(&["GET", "other"]).await.unwrap(), bulk("x"));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(300), "a read took {took:?}");
    }
    let (r, took) = slow.await.unwrap();
    assert_eq!(r, Value::Simple("OK".into()), "after {took:?}");
    assert!(took >= Duration::from_millis(3900), "{took:?}");

    // A SORT ... STORE that takes longer than the request timeout, the same
    // way (on a gateway whose timeout is short enough for a list this size).
    for chunk in 0..200 {
        let mut cmd = vec!["RPUSH".to_string(), "big".to_string()];
        for i in 0..1000 {
            cmd.push(format!("item-{:08}", (chunk * 1000 + i) * 7919 % 200_000));
        }
        c.send(&cmd).await.unwrap();
    }
    for _ in 0..200 {
        c.read_value().await.unwrap();
    }
    let impatient = env.extra_gateway(|cfg| cfg.request_timeout_ms = 10).await;
    let mut s = Connection::connect(&impatient, Some(&env.auth()), Duration::from_secs(10))
        .await
        .unwrap();
    s.set_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let r = s
        .call(&[
            "SORT", "big", "ALPHA", "GET", "#", "GET", "w_*", "STORE", "sorted",
        ])
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r, Value::Integer(400_000), "after {took:?}");
    eprintln!("SORT ALPHA STORE of 200,000 items took {took:?} (request timeout 10 ms)");
    assert!(
        took > Duration::from_millis(10),
        "the SORT finished within the request timeout ({took:?}): make the list longer"
    );
}
