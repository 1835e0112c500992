//! The gateway in front of a real Redis Cluster (3 masters × 1 replica,
//! cluster-node-timeout 1 s): plain clients that know nothing of slots,
//! commands split across shards checked against what the nodes hold, and
//! a shard failover that holds only that shard's writes.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::{Connection, Value};
use support::cluster::{start_cluster, start_failing_cluster, ClusterEnv};

fn text(v: &Value) -> String {
    v.to_text().unwrap_or_else(|| format!("{v:?}"))
}

fn err(v: &Value) -> String {
    match v {
        Value::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn call(c: &mut Connection, args: &[&str]) -> Value {
    c.call(args).await.expect("a reply")
}

/// Keys spread over every shard.
fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

#[tokio::test]
async fn split_and_keyspace_commands_match_what_the_nodes_hold() {
    let env = start_cluster(|_| {}).await;
    let mut c = env.client().await;
    let ks = keys("split", 24);
    let mut mset = vec!["MSET"];
    let values: Vec<String> = ks.iter().map(|k| format!("v-{k}")).collect();
    for (k, v) in ks.iter().zip(&values) {
        mset.push(k);
        mset.push(v);
    }
    assert_eq!(text(&call(&mut c, &mset).await), "OK");
    // Every key landed on its own master, with its own value.
    for (k, v) in ks.iter().zip(&values) {
        assert_eq!(text(&env.direct_get(k).await), *v, "{k} on its master");
    }
    // MGET across shards: the values in the order asked, nil for a missing key.
    let mut mget = vec!["MGET"];
    mget.extend(ks.iter().rev().map(String::as_str));
    mget.push("split:missing");
    let got = call(&mut c, &mget).await;
    let got = got.as_array().expect("an array");
    assert_eq!(got.len(), ks.len() + 1);
    for (k, v) in ks.iter().rev().zip(got) {
        assert_eq!(*v, env.direct_get(k).await, "MGET's value of {k}");
    }
    assert_eq!(got[ks.len()], Value::Nil);
    // Counts: EXISTS (a key twice counts twice), TOUCH, then DEL and UNLINK.
    let exists = call(
        &mut c,
        &["EXISTS", &ks[0], &ks[1], &ks[2], &ks[0], "split:missing"],
    )
    .await;
    assert_eq!(exists.as_int(), Some(4));
    let touch = call(&mut c, &["TOUCH", &ks[3], &ks[4], &ks[5], "nope"]).await;
    assert_eq!(touch.as_int(), Some(3));
    let del = call(&mut c, &["DEL", &ks[0], &ks[1], &ks[2], &ks[3], "nope"]).await;
    assert_eq!(del.as_int(), Some(4));
    let unlink = call(&mut c, &["UNLINK", &ks[4], &ks[5], &ks[0]]).await;
    assert_eq!(unlink.as_int(), Some(2));
    for k in &ks[..6] {
        assert_eq!(env.direct_get(k).await, Value::Nil, "{k} is gone");
    }
    // The whole keyspace: KEYS, DBSIZE and a full SCAN see what the
    // masters hold, no more, no less.
    let direct = env.direct_keys().await;
    let mut all: Vec<String> = call(&mut c, &["KEYS", "*"])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    all.sort();
    assert_eq!(all, direct);
    assert_eq!(
        call(&mut c, &["DBSIZE"]).await.as_int(),
        Some(direct.len() as i64)
    );
    let mut scanned = BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let r = call(&mut c, &["SCAN", &cursor, "COUNT", "5"]).await;
        let r = r.as_array().expect("SCAN's reply");
        cursor = text(&r[0]);
        scanned.extend(r[1].as_array().unwrap().iter().map(text));
        rounds += 1;
        if cursor == "0" {
            break;
        }
        assert!(rounds < 100, "SCAN never ends");
    }
    assert_eq!(scanned.into_iter().collect::<Vec<_>>(), direct);
    assert_eq!(
        err(&call(&mut c, &["SCAN", "12345678901234567890123"]).await),
        "ERR invalid cursor"
    );
    let random = text(&call(&mut c, &["RANDOMKEY"]).await);
    assert!(direct.contains(&random), "{random} is a key");
    // What cannot be split gets Redis's own error; SELECT as a cluster says.
    assert!(err(&call(&mut c, &["SUNIONSTORE", "a", "b", "c"]).await).starts_with("CROSSSLOT"));
    assert!(err(&call(&mut c, &["RENAME", "a", "b"]).await).starts_with("CROSSSLOT"));
    let eval = call(&mut c, &["EVAL", "return 1", "2", "a", "b"]).await;
    assert!(err(&eval).starts_with("CROSSSLOT"));
    // Keys sharing a hash tag go through as one command.
    assert_eq!(text(&call(&mut c, &["SET", "{u1}.a", "1"]).await), "OK");
    assert_eq!(
        text(&call(&mut c, &["RENAME", "{u1}.a", "{u1}.b"]).await),
        "OK"
    );
    assert_eq!(text(&call(&mut c, &["GET", "{u1}.b"]).await), "1");
    assert_eq!(
        err(&call(&mut c, &["SELECT", "1"]).await),
        "ERR SELECT is not allowed in cluster mode"
    );
    assert_eq!(text(&call(&mut c, &["SELECT", "0"]).await), "OK");
    // A key without its value is Redis's arity error, not a key set to "".
    let odd = call(&mut c, &["MSET", "odd:a", "1", "odd:b"]).await;
    assert_eq!(
        err(&odd),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(env.direct_get("odd:b").await, Value::Nil);
    // FLUSHDB empties every shard.
    assert_eq!(text(&call(&mut c, &["FLUSHDB"]).await), "OK");
    assert!(env.direct_keys().await.is_empty());
    assert_eq!(call(&mut c, &["RANDOMKEY"]).await, Value::Nil);
}

#[tokio::test]
async fn transactions_scripts_and_reads_run_on_the_shard_of_their_keys() {
    let env = start_cluster(|_| {}).await;
    let tags = env.tags_by_master().await;
    let mut c = env.client().await;
    // A transaction on each shard, on that shard's master.
    for tag in tags.values() {
        let k = format!("{tag}counter");
        for cmd in [vec!["MULTI"], vec!["SET", &k, "1"], vec!["INCR", &k]] {
            c.send(&cmd).await.unwrap();
        }
        c.send(&["EXEC"]).await.unwrap();
        assert_eq!(text(&c.read_value().await.unwrap()), "OK");
        assert_eq!(text(&c.read_value().await.unwrap()), "QUEUED");
        assert_eq!(text(&c.read_value().await.unwrap()), "QUEUED");
        let exec = c.read_value().await.unwrap();
        assert_eq!(exec.as_array().map(|a| a.len()), Some(2), "{exec:?}");
        assert_eq!(text(&env.direct_get(&k).await), "2");
    }
    // One spanning two shards is refused as Redis refuses it.
    let mut spread = tags.values();
    let (a, b) = (spread.next().unwrap(), spread.next().unwrap());
    let (ka, kb) = (format!("{a}x"), format!("{b}x"));
    assert_eq!(text(&call(&mut c, &["MULTI"]).await), "OK");
    assert_eq!(text(&call(&mut c, &["SET", &ka, "1"]).await), "QUEUED");
    assert!(err(&call(&mut c, &["SET", &kb, "1"]).await).starts_with("CROSSSLOT"));
    assert!(err(&call(&mut c, &["EXEC"]).await).starts_with("EXECABORT"));
    assert_eq!(env.direct_get(&ka).await, Value::Nil);
    // A script loaded once runs on every shard.
    let sha = text(
        &call(
            &mut c,
            &["SCRIPT", "LOAD", "return redis.call('INCR', KEYS[1])"],
        )
        .await,
    );
    for tag in tags.values() {
        let k = format!("{tag}script");
        assert_eq!(
            call(&mut c, &["EVALSHA", &sha, "1", &k]).await.as_int(),
            Some(1)
        );
    }
    // A write, then reads at once: the session reads its own write on
    // every shard (replicas serve only once they have it).
    for i in 0..60 {
        let k = format!("ryw:{i}");
        let v = format!("{i}");
        assert_eq!(text(&call(&mut c, &["SET", &k, &v]).await), "OK");
        assert_eq!(
            text(&call(&mut c, &["GET", &k]).await),
            v,
            "read-your-writes on {k}"
        );
    }
    // WAIT would count one shard's replicas: refused with the reason.
    assert!(err(&call(&mut c, &["WAIT", "1", "100"]).await).contains("durable-writes"));
    // A function library is loaded on every shard: FCALL works for a key
    // of any of them; deleted, it is gone from all.
    let library = "#!lua name=belaylib\nredis.register_function('getk', function(keys) return redis.call('GET', keys[1]) end)";
    assert_eq!(
        text(&call(&mut c, &["FUNCTION", "LOAD", library]).await),
        "belaylib"
    );
    for tag in tags.values() {
        let k = format!("{tag}counter");
        assert_eq!(text(&call(&mut c, &["FCALL", "getk", "1", &k]).await), "2");
    }
    assert_eq!(
        text(&call(&mut c, &["FUNCTION", "DELETE", "belaylib"]).await),
        "OK"
    );
    for tag in tags.values() {
        let k = format!("{tag}counter");
        let gone = call(&mut c, &["FCALL", "getk", "1", &k]).await;
        assert!(err(&gone).contains("Function not found"), "{gone:?}");
    }
}

/// A plain (not cluster-aware) redis-py client: a mixed workload, every
/// reply checked, then every key compared with what redis-py's own
/// cluster client reads from the nodes directly.
const REDIS_PY_WORKLOAD: &str = r#"
import sys, random, redis
from redis.cluster import RedisCluster, ClusterNode
gw_port, node_port, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
gw = redis.Redis(host="127.0.0.1", port=gw_port, password=password, socket_timeout=30)
direct = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node_port)], password=password)
rnd = random.Random(7)
expect = {}
errors = []
def check(what, got, want):
    if got != want:
        errors.append(f"{what}: got {got!r}, want {want!r}")
for i in range(1500):
    k = f"py:{rnd.randrange(200)}"
    op = rnd.randrange(8)
    try:
        if op == 0:
            v = str(i).encode(); check("set", gw.set(k, v), True); expect[k] = v
        elif op == 1:
            check("get " + k, gw.get(k), expect.get(k))
        elif op == 2:
            ks = [f"py:{rnd.randrange(200)}" for _ in range(5)]
            check("mget", gw.mget(ks), [expect.get(x) for x in ks])
        elif op == 3:
            pairs = {f"py:{rnd.randrange(200)}": str(i).encode() for _ in range(4)}
            check("mset", gw.mset(pairs), True); expect.update(pairs)
        elif op == 4:
            ks = list({f"py:{rnd.randrange(200)}" for _ in range(3)})
            check("delete", gw.delete(*ks), sum(1 for x in ks if x in expect))
            for x in ks: expect.pop(x, None)
        elif op == 5:
            ks = [f"py:{rnd.randrange(200)}" for _ in range(4)]
            check("exists", gw.exists(*ks), sum(1 for x in ks if x in expect))
        elif op == 6:
            p = gw.pipeline(transaction=False)
            ks = [f"py:{rnd.randrange(200)}" for _ in range(6)]
            for x in ks: p.set(x, f"p{i}")
            for x in ks: p.get(x)
            out = p.execute()
            for x in ks: expect[x] = f"p{i}".encode()
            check("pipeline", out, [True] * 6 + [f"p{i}".encode()] * 6)
        else:
            h = "{py}h"
            check("hincrby", gw.hincrby(h, "n", 1), int(expect.get(h, 0)) + 1)
            expect[h] = gw.hincrby(h, "n", 0)
    except Exception as e:
        errors.append(f"op {op} on {k}: {e!r}")
check("dbsize", gw.dbsize(), len(expect))
for k, v in expect.items():
    if k == "{py}h":
        continue
    check("direct " + k, direct.get(k), v)
print(len(errors))
for e in errors[:20]:
    print(e)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_redis_py_and_redis_cli_see_one_redis() {
    let env = start_cluster(|_| {}).await;
    let gw_port = env.gateway.rsplit(':').next().unwrap().to_string();
    let node_port = env.lab.seeds()[0].rsplit(':').next().unwrap().to_string();
    let password = env.lab.password().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", REDIS_PY_WORKLOAD, &gw_port, &node_port, &password])
            .output()
            .expect("python3 (scripts/setup --for-tests installs it with redis-py)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().next(),
        Some("0"),
        "redis-py's errors:\n{stdout}"
    );
    // redis-cli, as a person would type it.
    let gw_port = env.gateway.rsplit(':').next().unwrap().to_string();
    let password = env.lab.password().to_string();
    let cli = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &gw_port, "--no-auth-warning", "-a", &password])
                .args(args)
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        (
            run(&["MSET", "cli:a", "1", "cli:b", "2", "cli:c", "3"]),
            run(&["MGET", "cli:c", "cli:b", "cli:a"]),
            run(&["DEL", "cli:a", "cli:b", "cli:c"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(cli, ("OK".into(), "3\n2\n1".into(), "3".into()));
}

/// Writers, one per shard, each on keys of its shard; every outcome kept.
struct ShardWriters {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

struct Outcome {
    master: String,
    key: String,
    at: Instant,
    result: Result<(), String>,
}

impl ShardWriters {
    async fn start(env: &ClusterEnv) -> ShardWriters {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (master, tag) in env.tags_by_master().await {
            let mut c = env.client().await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{tag}w{i}");
                    let r = c.call(&["SET", &key, "v"]).await;
                    let result = match r {
                        Ok(Value::Simple(s)) if s == "OK" => Ok(()),
                        Ok(other) => Err(format!("{other:?}")),
                        Err(e) => Err(e.to_string()),
                    };
                    out.push(Outcome {
                        master: master.clone(),
                        key,
                        at: Instant::now(),
                        result,
                    });
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out
            }));
        }
        ShardWriters { stop, tasks }
    }

    async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

#[tokio::test]
async fn a_paused_shard_master_holds_only_its_own_writes() {
    let mut env = start_failing_cluster(|_| {}).await;
    let writers = ShardWriters::start(&env).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shards = env.lab.shards().await.unwrap();
    let victim = shards[1].master.clone();
    let paused_at = Instant::now();
    env.lab.pause(&victim).unwrap();
    let new = env
        .lab
        .wait_for_failover(&victim, Duration::from_secs(30))
        .await
        .expect("the cluster promotes the replica");
    let failed_over_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.lab.resume(&victim).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ops = writers.stop().await;
    // Other shards never waited: their writes went on while the victim
    // was paused, and none failed.
    for o in ops.iter().filter(|o| o.master != victim) {
        assert!(
            o.result.is_ok(),
            "{} on another shard: {:?}",
            o.key,
            o.result
        );
    }
    let others_during = ops
        .iter()
        .filter(|o| {
            o.master != victim
                && o.at > paused_at + Duration::from_millis(300)
                && o.at < failed_over_at
        })
        .count();
    assert!(
        others_during > 20,
        "other shards' writes went on during the failover ({others_during})"
    );
    // The victim's writes were held, not failed: at most the one in flight
    // when it froze may or may not have run.
    let failed: Vec<&Outcome> = ops
        .iter()
        .filter(|o| o.master == victim && o.result.is_err())
        .collect();
    assert!(
        failed.len() <= 1,
        "held writes failed: {:?}",
        failed.iter().map(|o| &o.result).collect::<Vec<_>>()
    );
    for o in &failed {
        assert!(
            o.result.as_ref().unwrap_err().contains("UNCERTAIN"),
            "{:?}",
            o.result
        );
    }
    let after = ops
        .iter()
        .filter(|o| o.master == victim && o.at > failed_over_at && o.result.is_ok())
        .count();
    assert!(after > 0, "the shard takes writes on its new master {new}");
    // Nothing acknowledged was lost, but for a write the frozen master
    // acknowledged as it froze and never sent to its replica: Redis's
    // asynchronous window, which only WAIT closes (see failover.rs).
    let window = paused_at - Duration::from_millis(100)..paused_at + Duration::from_millis(100);
    let mut in_window = Vec::new();
    for o in ops.iter().filter(|o| o.result.is_ok()) {
        if env.direct_get(&o.key).await != Value::Bulk("v".into()) {
            assert!(
                o.master == victim && window.contains(&o.at),
                "{} (on {}, victim {victim}) was acknowledged {:?} after the pause and is lost: {:?}",
                o.key,
                o.master,
                o.at.checked_duration_since(paused_at),
                env.direct_get(&o.key).await
            );
            in_window.push(o.key.clone());
        }
    }
    assert!(in_window.len() <= 1, "lost in the window: {in_window:?}");
}

#[tokio::test]
async fn subscriptions_survive_a_shard_failover() {
    let mut env = start_failing_cluster(|_| {}).await;
    let tags = env.tags_by_master().await;
    let shards = env.lab.shards().await.unwrap();
    let victim = shards[0].master.clone();
    let channel = format!("{}news", tags[&victim]);
    // A second shard channel of the same shard, in another slot: each is
    // subscribed to again on its own (one SSUBSCRIBE may not span slots).
    let mut second = None;
    for i in 0.. {
        let tag = format!("{{s{i}}}");
        if env.master_of(&tag).await == victim
            && env.slot_of(&tag).await != env.slot_of(&channel).await
        {
            second = Some(format!("{tag}sport"));
            break;
        }
    }
    let second = second.unwrap();
    let mut sub = env.client().await;
    sub.send(&["SSUBSCRIBE", &channel]).await.unwrap();
    let confirm = sub.read_value().await.unwrap();
    assert_eq!(text(&confirm.as_array().unwrap()[0]), "ssubscribe");
    sub.send(&["SSUBSCRIBE", &second]).await.unwrap();
    sub.read_value().await.unwrap();
    // Shard channels of two slots at once: Redis's CROSSSLOT, and the
    // client is not left subscribed.
    let mut crossing = env.client().await;
    let refused = call(&mut crossing, &["SSUBSCRIBE", &channel, "{other}x"]).await;
    assert!(err(&refused).starts_with("CROSSSLOT"), "{refused:?}");
    assert_eq!(
        text(&call(&mut crossing, &["SET", "sub:k", "v"]).await),
        "OK"
    );
    let mut plain = env.client().await;
    plain.send(&["SUBSCRIBE", "all-news"]).await.unwrap();
    plain.read_value().await.unwrap();
    let mut publisher = env.client().await;
    let received = |v: Value| text(&v.as_array().unwrap()[2]);
    assert_eq!(
        call(&mut publisher, &["SPUBLISH", &channel, "before"])
            .await
            .as_int(),
        Some(1)
    );
    assert_eq!(received(sub.read_value().await.unwrap()), "before");
    call(&mut publisher, &["PUBLISH", "all-news", "before"]).await;
    assert_eq!(received(plain.read_value().await.unwrap()), "before");
    env.lab.pause(&victim).unwrap();
    env.lab
        .wait_for_failover(&victim, Duration::from_secs(30))
        .await
        .expect("the cluster promotes the replica");
    // The subscription is made again on the shard's new master: a message
    // published there reaches the client (publishes retried until it has).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = call(&mut publisher, &["SPUBLISH", &channel, "after"]).await;
        if n.as_int() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no subscriber on the new master: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(next_news(&mut sub).await, "after");
    let deadline = Instant::now() + Duration::from_secs(5);
    while call(&mut publisher, &["SPUBLISH", &second, "after"])
        .await
        .as_int()
        != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "no subscriber of {second} on the new master"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(next_news(&mut sub).await, "after");
    env.lab.resume(&victim).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = call(&mut publisher, &["PUBLISH", "all-news", "after"]).await;
        if n.as_int() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no plain subscriber after the failover: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(next_news(&mut plain).await, "after");
}

/// The next message but for a late copy of "before": the paused master
/// may still hold, unsent, the cluster-bus copies of a message published
/// on it just before its pause, and send them when it wakes, to nodes the
/// subscription has moved to meanwhile. The cluster delivers it so to any
/// subscriber of those nodes; the gateway passes on what it is given.
async fn next_news(c: &mut Connection) -> String {
    loop {
        let v = c.read_value().await.unwrap();
        let message = text(&v.as_array().unwrap()[2]);
        if message != "before" {
            return message;
        }
    }
}

/// A slot moved from one master to another by hand, as `redis-cli
/// --cluster reshard` does: while it migrates, the source answers `ASK` for
/// keys it no longer has, and the gateway follows with `ASKING`; once the
/// slot is the target's, `MOVED`, and the gateway reads the map again.
#[tokio::test]
async fn a_slot_being_moved_is_followed_with_asking_then_moved() {
    let env = start_cluster(|cfg| cfg.read_from = belay_gateway::ReadFrom::Master).await;
    let key = "{moving}a";
    let mut mv = SlotMove::of(&env, key).await;
    let mut c = env.client().await;
    assert_eq!(text(&call(&mut c, &["SET", key, "1"]).await), "OK");
    mv.start_and_migrate(&env, key).await;
    // The key is on the target now; the source says ASK.
    let direct = call(&mut mv.src, &["GET", key]).await;
    assert!(err(&direct).starts_with("ASK "), "{direct:?}");
    assert_eq!(text(&call(&mut c, &["GET", key]).await), "1");
    assert_eq!(call(&mut c, &["INCR", key]).await.as_int(), Some(2));
    // Commands split over shards follow ASK for their part in the slot.
    let mget = call(&mut c, &["MGET", key, "{elsewhere}x"]).await;
    assert_eq!(
        mget.as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>()),
        Some(vec!["2".to_string(), "Nil".to_string()]),
        "{mget:?}"
    );
    let mset = call(
        &mut c,
        &["MSET", "{moving}split", "s", "{elsewhere}split", "t"],
    )
    .await;
    assert_eq!(text(&mset), "OK");
    // A new key of the slot goes to the target too.
    assert_eq!(
        text(&call(&mut c, &["SET", "{moving}b", "new"]).await),
        "OK"
    );
    let mut asking = env.node(&mv.target).await;
    asking.send(&["ASKING"]).await.unwrap();
    asking.send(&["GET", "{moving}b"]).await.unwrap();
    asking.read_value().await.unwrap();
    assert_eq!(text(&asking.read_value().await.unwrap()), "new");
    // The slot is the target's: every master is told, the gateway follows MOVED.
    mv.finish(&env).await;
    assert_eq!(text(&call(&mut c, &["GET", key]).await), "2");
    assert_eq!(text(&call(&mut c, &["GET", "{moving}b"]).await), "new");
    assert_eq!(text(&call(&mut c, &["SET", "{moving}c", "3"]).await), "OK");
    assert_eq!(text(&env.direct_get("{moving}c").await), "3");
}

/// A blocking command on a key that is not there, in a slot being moved:
/// the source says `ASK`. It is not followed on a connection shared with
/// other sessions (it would block the importing master's shared
/// connection, and the gateway would take that master for silent); it
/// waits for the move to end, then blocks on the new owner as the
/// session's own, and the shard's other writes never stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_told_ask_waits_for_the_move_and_blocks_nobody() {
    let env = start_cluster(|_| {}).await;
    let mut mv = SlotMove::of(&env, "{q}moved").await;
    let mut c = env.client().await;
    assert_eq!(text(&call(&mut c, &["SET", "{q}moved", "1"]).await), "OK");
    mv.start_and_migrate(&env, "{q}moved").await;
    let mut blocked = env.client().await;
    blocked.send(&["BLPOP", "{q}list", "0"]).await.unwrap();
    // Longer than a request may take before its node counts as silent.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Other clients' writes to the importing master's shard, whichever
    // of its shared connections they are given, go through: single-key
    // ones, and ones split over shards.
    let tags = env.tags_by_master().await;
    let write = format!("{}other", tags[&mv.target]);
    let elsewhere = format!("{}other", tags[&mv.source]);
    for i in 0..8 {
        let mut other = env.client().await;
        for cmd in [
            vec!["SET", write.as_str(), "x"],
            vec!["MSET", write.as_str(), "y", elsewhere.as_str(), "z"],
        ] {
            let reply = tokio::time::timeout(Duration::from_secs(2), call(&mut other, &cmd))
                .await
                .unwrap_or_else(|_| {
                    panic!("client {i}'s {cmd:?} to the importing master's shard waited")
                });
            assert_eq!(text(&reply), "OK");
        }
    }
    mv.finish(&env).await;
    // Once the BLPOP waits on the new owner, a push wakes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let popped = loop {
        call(&mut c, &["RPUSH", "{q}list", "v"]).await;
        match tokio::time::timeout(Duration::from_millis(300), blocked.read_value()).await {
            Ok(v) => break v.unwrap(),
            Err(_) => assert!(Instant::now() < deadline, "the BLPOP never returned"),
        }
    };
    assert_eq!(
        popped
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>()),
        Some(vec!["{q}list".to_string(), "v".to_string()])
    );
}

/// Scaling out: a node added to the cluster (here a replica reset and met
/// again, as an empty master) gets its first slot by a resharding. While
/// that slot moves, the source's `ASK` names a node that serves no slot
/// yet: the gateway follows it there too, for the key moved and for a new
/// key of the slot.
#[tokio::test]
async fn ask_to_a_node_just_added_is_followed() {
    let env = start_failing_cluster(|cfg| cfg.read_from = belay_gateway::ReadFrom::Master).await;
    let shards = env.lab.shards().await.unwrap();
    let spare = shards[2].replicas[0].addr.clone();
    let mut node = env.node(&spare).await;
    let old_id = text(&call(&mut node, &["CLUSTER", "MYID"]).await);
    node.call_ok(&["CLUSTER", "RESET", "HARD"]).await.unwrap();
    let others: Vec<String> = env
        .lab
        .node_addrs()
        .into_iter()
        .filter(|a| *a != spare)
        .collect();
    for addr in &others {
        env.node(addr)
            .await
            .call_ok(&["CLUSTER", "FORGET", &old_id])
            .await
            .unwrap();
    }
    let (host, port) = spare.rsplit_once(':').unwrap();
    env.node(&others[0])
        .await
        .call_ok(&["CLUSTER", "MEET", host, port])
        .await
        .unwrap();
    let new_id = text(&call(&mut node, &["CLUSTER", "MYID"]).await);
    let deadline = Instant::now() + Duration::from_secs(15);
    for addr in &others {
        let mut n = env.node(addr).await;
        loop {
            let nodes = text(&call(&mut n, &["CLUSTER", "NODES"]).await);
            let known = nodes
                .lines()
                .any(|l| l.starts_with(&new_id) && l.contains("master") && l.contains("connected"));
            if known {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} never met {spare}:\n{nodes}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And it knows who serves every slot.
    loop {
        let info = text(&call(&mut node, &["CLUSTER", "INFO"]).await);
        if info.contains("cluster_slots_assigned:16384") && info.contains("cluster_state:ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{spare} never learned the slot map:\n{info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = "{moving}a";
    let mut c = env.client().await;
    assert_eq!(text(&call(&mut c, &["SET", key, "1"]).await), "OK");
    let mut mv = SlotMove::to(&env, key, &spare).await;
    mv.start_and_migrate(&env, key).await;
    let direct = call(&mut mv.src, &["GET", key]).await;
    assert!(
        err(&direct).starts_with(&format!("ASK {} {spare}", mv.slot)),
        "{direct:?}"
    );
    assert_eq!(text(&call(&mut c, &["GET", key]).await), "1");
    assert_eq!(
        text(&call(&mut c, &["SET", "{moving}b", "new"]).await),
        "OK"
    );
    let mut asking = env.node(&spare).await;
    asking.send(&["ASKING"]).await.unwrap();
    asking.send(&["GET", "{moving}b"]).await.unwrap();
    asking.read_value().await.unwrap();
    assert_eq!(text(&asking.read_value().await.unwrap()), "new");
}

/// Reads from replicas (the default) of a slot being moved: the source's
/// replica has the deletions of the keys moved already (`MIGRATE` deletes
/// them) but knows nothing of the move, and answers as if they did not
/// exist. The gateway, told by the master that it moves the slot, sends
/// its reads to the master, which redirects them; the same once the move
/// is done, until the gateway's map follows.
#[tokio::test]
async fn reads_of_a_slot_being_moved_are_not_served_by_a_replica_that_lost_its_keys() {
    let env = start_cluster(|_| {}).await;
    let key = "{moving}a";
    let mut mv = SlotMove::of(&env, key).await;
    let shards = env.lab.shards().await.unwrap();
    let source_shard = shards.iter().find(|s| s.master == mv.source).unwrap();
    let replica = source_shard.replicas[0].addr.clone();
    let mut rep = env.node(&replica).await;
    rep.call_ok(&["READONLY"]).await.unwrap();
    let mut c = env.client().await;
    assert_eq!(text(&call(&mut c, &["SET", key, "1"]).await), "OK");
    let deadline = Instant::now() + Duration::from_secs(10);
    while text(&call(&mut rep, &["GET", key]).await) != "1" {
        assert!(Instant::now() < deadline, "the replica never got the key");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mv.start_and_migrate(&env, key).await;
    // The source's replica, asked directly, no longer has the key: Redis
    // answers nil, Valkey (which tells replicas of the move) `ASK`.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let direct = call(&mut rep, &["GET", key]).await;
        if direct == Value::Nil || matches!(&direct, Value::Error(e) if e.starts_with("ASK ")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica still has the key: {direct:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The gateway hears of the move from the master within 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // All the source's slots: a resharding moves slot after slot.
    let source_slots: u64 = source_shard
        .slots
        .iter()
        .map(|&(a, b)| u64::from(b - a) + 1)
        .sum();
    assert_eq!(slots_read_on_master(&mut c).await, source_slots);
    for i in 0..20 {
        assert_eq!(
            text(&call(&mut c, &["GET", key]).await),
            "1",
            "read {i} while the slot moves"
        );
    }
    mv.finish(&env).await;
    for i in 0..20 {
        assert_eq!(
            text(&call(&mut c, &["GET", key]).await),
            "1",
            "read {i} once the slot moved"
        );
    }
    // The gateway's map follows; no slot is moving any more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slots_read_on_master(&mut c).await != 0 {
        assert!(Instant::now() < deadline, "the slot still shows as moving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(text(&call(&mut c, &["GET", key]).await), "1");
}

/// Slots whose reads go to masters, over every shard, as `BELAY TOPOLOGY`
/// says.
async fn slots_read_on_master(c: &mut Connection) -> u64 {
    let topo: serde_json::Value =
        serde_json::from_str(&text(&call(c, &["BELAY", "TOPOLOGY"]).await)).unwrap();
    topo["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slots_read_on_master"].as_u64().unwrap())
        .sum()
}

/// A slot moved by hand from its master to another, as `redis-cli
/// --cluster reshard` does it.
struct SlotMove {
    slot: String,
    source: String,
    target: String,
    src: Connection,
    tgt: Connection,
}

impl SlotMove {
    /// The slot of `key`, from its master to another shard's.
    async fn of(env: &ClusterEnv, key: &str) -> SlotMove {
        let source = env.master_of(key).await;
        let target = env
            .lab
            .shards()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.master != source)
            .unwrap()
            .master;
        SlotMove::to(env, key, &target).await
    }

    /// The slot of `key`, from its master to `target`.
    async fn to(env: &ClusterEnv, key: &str, target: &str) -> SlotMove {
        let slot = env.slot_of(key).await.to_string();
        let source = env.master_of(key).await;
        let target = target.to_string();
        let (src, tgt) = (env.node(&source).await, env.node(&target).await);
        SlotMove {
            slot,
            source,
            target,
            src,
            tgt,
        }
    }

    async fn ids(&mut self) -> (String, String) {
        (
            text(&call(&mut self.src, &["CLUSTER", "MYID"]).await),
            text(&call(&mut self.tgt, &["CLUSTER", "MYID"]).await),
        )
    }

    /// Importing on the target, migrating on the source, then `key` moved.
    async fn start_and_migrate(&mut self, env: &ClusterEnv, key: &str) {
        let (source_id, target_id) = self.ids().await;
        let slot = self.slot.clone();
        self.tgt
            .call_ok(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id])
            .await
            .unwrap();
        self.src
            .call_ok(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id])
            .await
            .unwrap();
        let (host, port) = self.target.rsplit_once(':').unwrap();
        let password = env.lab.password().to_string();
        self.src
            .call_ok(&[
                "MIGRATE", host, port, "", "0", "5000", "AUTH", &password, "KEYS", key,
            ])
            .await
            .unwrap();
    }

    /// The slot is the target's: every master is told.
    async fn finish(&mut self, env: &ClusterEnv) {
        let (_, target_id) = self.ids().await;
        for shard in env.lab.shards().await.unwrap() {
            env.node(&shard.master)
                .await
                .call_ok(&["CLUSTER", "SETSLOT", &self.slot, "NODE", &target_id])
                .await
                .unwrap();
        }
    }
}

/// A live resharding as an operator runs it (`redis-cli --cluster
/// reshard`: slot after slot set migrating, its keys moved with `MIGRATE`,
/// then given to the target) while plain clients read and write through
/// the gateway, reads from replicas as by default: no command fails, every
/// read is right, every increment counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_resharding_under_load_loses_nothing_and_reads_stay_right() {
    const KEYS: usize = 3000;
    let env = start_cluster(|_| {}).await;
    let mut c = env.client().await;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let pairs: Vec<String> = chunk
            .iter()
            .flat_map(|i| [format!("k:{i}"), i.to_string()])
            .collect();
        let mut mset = vec!["MSET"];
        mset.extend(pairs.iter().map(String::as_str));
        assert_eq!(text(&call(&mut c, &mset).await), "OK");
    }
    // The slots that move: the first of shard 0's, as redis-cli picks
    // them. Valkey tells replicas of each move and waits for them, so each
    // slot takes it ~10 ms: fewer there (its replicas redirect reads of
    // moved keys themselves).
    let shards = env.lab.shards().await.unwrap();
    let count = match belay_lab::ServerChoice::for_tests() {
        belay_lab::ServerChoice::Valkey => 300,
        _ => 2000,
    };
    let moved: Vec<u16> = shards[0]
        .slots
        .iter()
        .flat_map(|&(a, b)| a..=b)
        .take(count)
        .collect();
    let mut node = env.node(&env.lab.seeds()[0]).await;
    for i in 0..KEYS {
        node.send(&["CLUSTER", "KEYSLOT", &format!("k:{i}")])
            .await
            .unwrap();
    }
    let mut moving = Vec::new();
    for i in 0..KEYS {
        let slot = node.read_value().await.unwrap().as_int().unwrap() as u16;
        if moved.contains(&slot) {
            moving.push(i);
        }
    }
    let moving = Arc::new(moving);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut readers = Vec::new();
    for r in 0..2usize {
        let mut c = env.client().await;
        let (stop, moving) = (stop.clone(), moving.clone());
        readers.push(tokio::spawn(async move {
            let (mut reads, mut wrong) = (0u64, Vec::new());
            let mut at = r * 7919;
            while !stop.load(Ordering::Relaxed) {
                at = (at + 7919) % moving.len();
                let i = moving[at];
                let got = call(&mut c, &["GET", &format!("k:{i}")]).await;
                if text(&got) != i.to_string() {
                    wrong.push((start.elapsed(), format!("k:{i} = {got:?}")));
                }
                reads += 1;
            }
            (reads, wrong)
        }));
    }
    let writer = {
        let mut c = env.client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut counts = [0i64; 64];
            let mut bad = Vec::new();
            let mut j = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let n = j % counts.len();
                counts[n] += 1;
                let got = call(&mut c, &["INCR", &format!("n:{n}")]).await;
                if got.as_int() != Some(counts[n]) {
                    bad.push(format!("INCR n:{n} = {got:?}, want {}", counts[n]));
                }
                j += 1;
            }
            (counts, bad)
        })
    };
    let (from, to) = (shards[0].id.clone(), shards[1].id.clone());
    let slots = moved.len();
    let seed = env.lab.seeds()[0].clone();
    let password = env.lab.password().to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resharding = start.elapsed();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("redis-cli")
            .args([
                "--no-auth-warning",
                "-a",
                &password,
                "--cluster",
                "reshard",
                &seed,
            ])
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster reshard: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let resharded = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        let (n, wrong) = r.await.unwrap();
        reads += n;
        // The gateway hears of a resharding from the source master, asked
        // every 100 ms: a read in its first moments may still reach the
        // replica. None may after (the margin is for a busy machine).
        let late = wrong
            .iter()
            .filter(|(at, _)| *at > resharding + Duration::from_millis(500))
            .count();
        assert_eq!(
            late,
            0,
            "resharding from {resharding:?} to {resharded:?}: {} wrong reads of {n}: {wrong:?}",
            wrong.len()
        );
    }
    let (counts, bad) = writer.await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(reads > 100, "only {reads} reads");
    for (n, want) in counts.iter().enumerate() {
        assert_eq!(
            env.direct_get(&format!("n:{n}")).await.to_text(),
            Some(want.to_string()).filter(|_| *want > 0),
            "n:{n}"
        );
    }
}

/// A transaction the gateway refuses itself (a command in it crosses
/// slots, so `EXEC` answers `EXECABORT`) leaves the session as Redis
/// would: the next `WATCH` and commands run at once, not inside a `MULTI`
/// that was waiting to be sent.
#[tokio::test]
async fn a_transaction_the_gateway_aborts_leaves_no_multi_behind() {
    let env = start_cluster(|_| {}).await;
    let mut c = env.client().await;
    for _ in 0..2 {
        assert_eq!(text(&call(&mut c, &["MULTI"]).await), "OK");
        let cross = call(&mut c, &["MGET", "a", "b"]).await;
        assert!(err(&cross).starts_with("CROSSSLOT"), "{cross:?}");
        let exec = call(&mut c, &["EXEC"]).await;
        assert!(err(&exec).starts_with("EXECABORT"), "{exec:?}");
    }
    assert_eq!(text(&call(&mut c, &["WATCH", "tx:k"]).await), "OK");
    assert_eq!(call(&mut c, &["GET", "tx:k"]).await, Value::Nil);
    assert_eq!(text(&call(&mut c, &["MULTI"]).await), "OK");
    assert_eq!(text(&call(&mut c, &["SET", "tx:k", "1"]).await), "QUEUED");
    let exec = call(&mut c, &["EXEC"]).await;
    assert_eq!(exec.as_array().map(|a| a.len()), Some(1), "{exec:?}");
    assert_eq!(text(&env.direct_get("tx:k").await), "1");
    // Not after a first command on its own shard either.
    assert_eq!(text(&call(&mut c, &["WATCH", "tx:k"]).await), "OK");
    assert_eq!(text(&call(&mut c, &["MULTI"]).await), "OK");
    assert_eq!(text(&call(&mut c, &["SET", "tx:k", "2"]).await), "QUEUED");
    let cross = call(&mut c, &["MGET", "a", "b"]).await;
    assert!(err(&cross).starts_with("CROSSSLOT"), "{cross:?}");
    let exec = call(&mut c, &["EXEC"]).await;
    assert!(err(&exec).starts_with("EXECABORT"), "{exec:?}");
    assert_eq!(text(&call(&mut c, &["GET", "tx:k"]).await), "1");
}

/// `--durable-writes` in front of a cluster: each write is confirmed by its
/// own shard's replica; a shard whose replica is frozen answers its writes
/// `UNREPLICATED` (they ran; never sent again), the others `OK`.
#[tokio::test]
async fn durable_writes_are_confirmed_by_each_shards_own_replica() {
    let mut env = start_cluster(|cfg| {
        cfg.durable_writes = Some(belay_gateway::Durable::Majority);
        cfg.durable_timeout_ms = 300;
    })
    .await;
    let tags = env.tags_by_master().await;
    let mut c = env.client().await;
    for tag in tags.values() {
        let k = format!("{tag}durable");
        assert_eq!(text(&call(&mut c, &["SET", &k, "1"]).await), "OK");
    }
    let shards = env.lab.shards().await.unwrap();
    let stalled = &shards[2];
    let replica = stalled.replicas[0].addr.clone();
    env.lab.pause(&replica).unwrap();
    for (master, tag) in &tags {
        let k = format!("{tag}durable");
        let r = call(&mut c, &["SET", &k, "2"]).await;
        if *master == stalled.master {
            assert!(err(&r).starts_with("UNREPLICATED"), "{r:?}");
        } else {
            assert_eq!(text(&r), "OK", "{k} on a shard whose replica answers");
        }
        // It ran on its master either way.
        assert_eq!(text(&env.direct_get(&k).await), "2");
    }
    // A write split over every shard: the stalled shard's part ran but is
    // not confirmed, and the client is told (not a plain OK).
    let mut mset = vec!["MSET".to_string()];
    for tag in tags.values() {
        mset.extend([format!("{tag}split"), "3".to_string()]);
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    let r = call(&mut c, &mset).await;
    let e = err(&r);
    assert!(e.contains("UNREPLICATED"), "{r:?}");
    assert!(
        e.starts_with("UNCERTAIN") || e.starts_with("UNREPLICATED"),
        "{r:?}"
    );
    for tag in tags.values() {
        assert_eq!(text(&env.direct_get(&format!("{tag}split")).await), "3");
    }
    env.lab.resume(&replica).unwrap();
}

/// One client's pipeline over every shard — writes, reads of what it just
/// wrote, counters — answered in order while other clients load the same
/// gateway: a command for one shard never overtakes one sent before it for
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_over_every_shard_keeps_its_order_under_load() {
    let env = start_cluster(|_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for l in 0..4 {
        let mut c = env.client().await;
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("load:{l}:{}", i % 50);
                c.call_ok(&["SET", &k, "x"]).await.unwrap();
                c.call_ok(&["MGET", &k, "load:other", "load:more"])
                    .await
                    .unwrap();
                i += 1;
            }
        }));
    }
    let mut c = env.client().await;
    for round in 0..20 {
        let mut sent = 0;
        for i in 0..30 {
            let k = format!("order:{i}");
            let v = format!("{round}-{i}");
            c.send(&["SET", &k, &v]).await.unwrap();
            c.send(&["GET", &k]).await.unwrap();
            c.send(&["INCR", &format!("count:{}", i % 7)])
                .await
                .unwrap();
            sent += 3;
        }
        let mut replies = Vec::new();
        for _ in 0..sent {
            replies.push(c.read_value().await.unwrap());
        }
        for (i, r) in replies.chunks(3).enumerate() {
            assert_eq!(text(&r[0]), "OK");
            assert_eq!(
                text(&r[1]),
                format!("{round}-{i}"),
                "GET after its SET, round {round}"
            );
            // Each counter is incremented once per use, in order.
            let uses_before = round * (30 / 7 + usize::from(i % 7 < 30 % 7)) + i / 7;
            assert_eq!(
                r[2].as_int(),
                Some(uses_before as i64 + 1),
                "count:{} in round {round}",
                i % 7
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
}

/// The replies a split command gathers count against the client's output
/// limit as they arrive: past it the client is closed, as for any reply,
/// and the gateway goes on serving the others.
#[tokio::test]
async fn a_split_reply_over_the_output_limit_closes_only_that_client() {
    let env = start_cluster(|cfg| cfg.client_output_buffer_limit_normal = "256kb 0 0".into()).await;
    let big = "x".repeat(100 * 1024);
    let mut c = env.client().await;
    let keys = keys("big", 6);
    for k in &keys {
        assert_eq!(text(&call(&mut c, &["SET", k, &big]).await), "OK");
    }
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let over = c.call(&mget).await;
    assert!(
        over.is_err(),
        "600 KB of replies past a 256 KB limit: {:?}",
        over.map(|v| format!("{v:?}").len())
    );
    let mut other = env.client().await;
    assert_eq!(
        call(&mut other, &["MGET", &keys[0], &keys[1]])
            .await
            .as_array()
            .map(|a| a.len()),
        Some(2)
    );
}

/// A limited ACL user through the gateway gets, for every command, what a
/// cluster node gives that user: split commands run each part as the user,
/// so one key it may not touch refuses the command; nothing runs with the
/// gateway's own rights.
#[tokio::test]
async fn a_limited_user_gets_what_the_nodes_give_it() {
    let env = start_cluster(|_| {}).await;
    for addr in env.lab.node_addrs() {
        env.node(&addr)
            .await
            .call_ok(&[
                "ACL",
                "SETUSER",
                "app",
                "on",
                ">app-pw",
                "~app:*",
                "+@all",
                "-flushdb",
                "-flushall",
                "-keys",
            ])
            .await
            .unwrap();
    }
    let app = belay_client::Auth {
        username: Some("app".into()),
        password: "app-pw".into(),
    };
    let mut admin = env.client().await;
    assert_eq!(
        text(&call(&mut admin, &["MSET", "secret:a", "s", "secret:b", "s"]).await),
        "OK"
    );
    let mut c = Connection::connect(&env.gateway, Some(&app), Duration::from_secs(10))
        .await
        .expect("the ACL user logs in through the gateway");
    // Its own keys, across shards: fine.
    assert_eq!(
        text(&call(&mut c, &["MSET", "app:1", "a", "app:2", "b", "app:3", "c"]).await),
        "OK"
    );
    let got = call(&mut c, &["MGET", "app:1", "app:2", "app:3"]).await;
    assert_eq!(
        got.as_array().unwrap().iter().map(text).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    // Another's key, one of many or alone: what a node says to this user.
    let mut node = Connection::connect(
        &env.master_of("secret:a").await,
        Some(&app),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let direct = err(&call(&mut node, &["GET", "secret:a"]).await);
    assert!(direct.starts_with("NOPERM"), "{direct}");
    assert_eq!(err(&call(&mut c, &["GET", "secret:a"]).await), direct);
    let mget = err(&call(&mut c, &["MGET", "app:1", "secret:a", "app:2"]).await);
    assert!(mget.starts_with("NOPERM"), "{mget}");
    // Split, the part for app:1 ran: the error says so (a node of a
    // cluster would have refused the whole command as CROSSSLOT).
    let del = err(&call(&mut c, &["DEL", "app:1", "secret:b"]).await);
    assert!(
        del.starts_with("NOPERM") && del.contains("the parts for 1 of them ran"),
        "{del}"
    );
    assert_eq!(env.direct_get("app:1").await, Value::Nil);
    for k in ["secret:a", "secret:b"] {
        assert_eq!(text(&env.direct_get(k).await), "s", "{k} untouched");
    }
    // Commands every shard answers run as the user too.
    let direct_flush = err(&call(&mut node, &["FLUSHDB"]).await);
    assert_eq!(err(&call(&mut c, &["FLUSHDB"]).await), direct_flush);
    assert!(err(&call(&mut c, &["KEYS", "*"]).await).starts_with("NOPERM"));
    assert_eq!(
        text(&env.direct_get("secret:a").await),
        "s",
        "FLUSHDB ran nowhere"
    );
}
