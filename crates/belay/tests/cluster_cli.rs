//! `belay up --cluster` / `status` / `down` as a user runs them: the real
//! binary, real redis-server nodes and the gateway, redis-cli through it.
//! Whatever still runs under the temp dir is SIGKILLed on drop.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use belay_lab::cluster::ClusterSpec;
use belay_lab::testing::{kill_processes_under, processes_under};

const PASSWORD: &str = "cluster-cli-pw";

/// A temp state dir and free ports (the nodes' cluster bus ports too).
struct Sandbox {
    dir: tempfile::TempDir,
    port: u16,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        // Six nodes, the gateway and its admin endpoint.
        let port = ClusterSpec::for_tests(dir.path()).base_port;
        Sandbox { dir, port }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    fn gateway_port(&self) -> u16 {
        self.port + 6
    }

    fn belay(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_belay"));
        cmd.arg(args[0]).arg("--dir").arg(self.state_dir());
        cmd.args(&args[1..]);
        for (k, _) in std::env::vars() {
            if k.starts_with("BELAY_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn up(&self, extra: &[&str]) -> Command {
        let p = self.port;
        let mut cmd = self.belay(&["up", "--cluster", "--detach"]);
        cmd.args(["--port", &p.to_string()])
            .args(["--gateway-port", &(p + 6).to_string()])
            .args(["--admin-port", &(p + 7).to_string()])
            .args(["--password", PASSWORD])
            .args(["--node-timeout-ms", "1000", "--ready-timeout", "45"])
            .args(extra);
        cmd
    }

    fn pid_of(&self, name: &str) -> u32 {
        let text = std::fs::read_to_string(self.state_dir().join("lab.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["pid"].as_u64())
            .unwrap() as u32
    }

    /// `redis-cli -p <gateway> ARGS`, the password in its environment.
    fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.gateway_port().to_string()])
            .args(args)
            .env("REDISCLI_AUTH", PASSWORD)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill_processes_under(self.dir.path());
    }
}

fn run(mut cmd: Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn up_cluster_status_gateway_and_down() {
    let sb = Sandbox::new();
    let (code, out, err) = run(sb.up(&[]));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("3 shards of 1 master + 1 replica"), "{out}");
    assert!(out.contains("0-5460"), "{out}");
    assert!(
        out.contains(&format!("redis-cli -p {} -a {PASSWORD}", sb.gateway_port())),
        "{out}"
    );
    assert!(out.contains("belay down --dir"), "{out}");

    let (code, out, err) = run(sb.belay(&["status"]));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        "SHARDS",
        "0-5460",
        "5461-10921",
        "10922-16383",
        "answers PING",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(
        out.contains("healthy: 3 shards, 6/6 nodes answering"),
        "{out}"
    );

    let (code, out, _) = run(sb.belay(&["status", "--json"]));
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "cluster");
    assert_eq!(v["shards"].as_array().unwrap().len(), 3);
    assert_eq!(v["shards"][0]["replicas"][0]["link"], "up");

    // Through the gateway: keys of every shard, one command across slots.
    assert_eq!(sb.redis_cli(&["SET", "foo", "bar"]), "OK");
    assert_eq!(sb.redis_cli(&["GET", "foo"]), "bar");
    assert_eq!(sb.redis_cli(&["MSET", "a", "1", "b", "2", "c", "3"]), "OK");
    assert_eq!(
        sb.redis_cli(&["MGET", "a", "b", "c", "foo"]),
        "1\n2\n3\nbar"
    );

    // A dead node is a problem, named.
    let pid = sb.pid_of("node-2");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (code, out, _) = run(sb.belay(&["status"]));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("PROBLEMS"), "{out}");
    assert!(out.contains("node-2 ("), "{out}");

    let (code, out, err) = run(sb.belay(&["down"]));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("stopped gateway"), "{out}");
    assert!(out.contains("node-2 was not running"), "{out}");
    assert!(out.contains("is down"), "{out}");
    assert!(!sb.state_dir().join("lab.json").exists());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_under(sb.dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_cluster_refuses_what_it_cannot_do() {
    let sb = Sandbox::new();
    for (flags, want) in [
        (&["--tls"][..], "--tls is not supported with --cluster"),
        (&["--app"][..], "--app is not supported with --cluster"),
        (&["--zones", "a,b"][..], "--zones and --gateway-zone"),
        (&["--sentinels", "5"][..], "cannot be used with"),
        (&["--shards", "2"][..], "at least 3 shards"),
    ] {
        let (code, out, err) = run(sb.up(flags));
        assert_ne!(code, Some(0), "{flags:?}: {out}");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    let (code, _, err) = run(sb.belay(&["up", "--shards", "3"]));
    assert_ne!(code, Some(0));
    assert!(err.contains("--cluster"), "{err}");
    assert!(processes_under(sb.dir.path()).is_empty());
}

/// The lab's own handle with the gateway from this binary: through a
/// master's failover, the gateway keeps serving that shard's keys.
#[tokio::test]
async fn the_gateway_serves_a_shard_again_after_its_failover() {
    use belay_client::Connection;
    use belay_lab::cluster::ClusterLab;
    use belay_lab::testing::cluster_gateway_spec;

    let dir = tempfile::tempdir().unwrap();
    let spec = cluster_gateway_spec(dir.path(), env!("CARGO_BIN_EXE_belay").as_ref());
    let mut lab = ClusterLab::start(spec, &belay_lab::NoProgress)
        .await
        .expect("cluster and gateway start");
    let gw = lab.gateway_addr().unwrap();
    let auth = lab.auth();
    let connect = || Connection::connect(&gw, Some(&auth), Duration::from_secs(2));
    let mut c = connect().await.unwrap();
    // `{06S}` hashes to slot 0: node-1's shard.
    c.call_ok(&["SET", "{06S}k", "before"]).await.unwrap();
    c.call_ok(&["SET", "foo", "other shard"]).await.unwrap();
    let old = lab.master_of_slot(0).await.unwrap();
    // The write must be on the replica before the master goes away.
    let mut m = Connection::connect(&old, Some(&lab.auth()), Duration::from_secs(2))
        .await
        .unwrap();
    m.call_ok(&["WAIT", "1", "2000"]).await.unwrap();
    drop(m);

    lab.pause(&old).unwrap();
    // Other shards keep serving while this one is down.
    let v = connect().await.unwrap().call_ok(&["GET", "foo"]).await;
    assert_eq!(v.unwrap().to_text().as_deref(), Some("other shard"));
    let new = lab
        .wait_for_failover(&old, Duration::from_secs(20))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = loop {
        let got = async {
            let mut c = connect().await?;
            c.call_ok(&["SET", "{06S}k2", "after"]).await?;
            c.call_ok(&["GET", "{06S}k"]).await
        }
        .await;
        match got {
            Ok(v) if v.to_text().as_deref() == Some("before") => break None,
            other if Instant::now() >= deadline => break Some(format!("{other:?}")),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(
        last.is_none(),
        "the gateway did not serve slot 0 from {new}: {last:?}"
    );
    lab.resume(&old).unwrap();
    lab.wait_healthy(Duration::from_secs(20)).await.unwrap();
    let report = lab.status().await;
    assert!(report.healthy, "{:?}", report.problems);
    assert!(report.gateway.is_some_and(|g| g.error.is_none()));
    drop(lab);
    kill_processes_under(dir.path());
}

/// `belay status --cluster` on a cluster it did not start (no state dir):
/// from one node it finds and asks them all; a dead replica is a problem
/// named by its address; a wrong password is said as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_any_cluster_from_one_of_its_nodes() {
    use belay_lab::cluster::ClusterLab;

    let dir = tempfile::tempdir().unwrap();
    let mut lab = ClusterLab::start(ClusterSpec::for_tests(dir.path()), &belay_lab::NoProgress)
        .await
        .expect("the cluster starts");
    let seed = lab.seeds()[0].clone();
    let password = lab.password().to_string();
    // Run from a dir with no lab in it: nothing comes from a state dir.
    let elsewhere = tempfile::tempdir().unwrap();
    let ask = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_belay"));
        cmd.current_dir(elsewhere.path())
            .args(["status", "--cluster", &seed])
            .args(extra)
            .env_remove("BELAY_DIR")
            .env_remove("BELAY_PASSWORD")
            .stdin(Stdio::null());
        run(cmd)
    };
    let (code, out, err) = ask(&["--password", &password]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("SHARDS"), "{out}");
    for addr in lab.node_addrs() {
        assert!(out.contains(&addr), "{addr} not in:\n{out}");
    }
    let (code, out, _) = ask(&["--password", &password, "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["kind"], "cluster");
    assert_eq!(json["shards"].as_array().map(Vec::len), Some(3), "{json}");

    let (code, out, _) = ask(&["--password", "wrong"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.to_lowercase().contains("password"), "{out}");

    // A replica killed: named, by its address, as a problem.
    let replica = lab.shards().await.unwrap()[0].replicas[0].addr.clone();
    lab.kill(&replica).unwrap();
    let (code, out, _) = ask(&["--password", &password]);
    assert_eq!(code, Some(1), "{out}");
    let problems = out.split("PROBLEMS").nth(1).unwrap_or_default();
    assert!(
        problems.contains(&replica),
        "{replica} not among the problems:\n{out}"
    );
    lab.stop(Duration::from_secs(10)).await.unwrap();
}
