//! A real Redis Cluster (3 masters × 1 replica, `belay_lab::cluster`) with
//! an in-process gateway in front of it (`--cluster`). Dropping the
//! `ClusterEnv` kills every process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use belay_client::{Auth, Connection, Value};
use belay_gateway::{Gateway, GatewayConfig, Topology};
use belay_lab::cluster::{ClusterLab, ClusterSpec};
use belay_lab::NoProgress;

pub struct ClusterEnv {
    pub lab: ClusterLab,
    pub gateway: String,
    pub topology: tokio::sync::watch::Receiver<Arc<Topology>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for ClusterEnv {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A cluster from [`ClusterSpec::for_tests`] and a ready gateway in front
/// of it, its settings changed by `tweak`. Its nodes flag a silent one
/// failing after 5 s: a test that does not fault a node must not see a
/// failover because a loaded machine starved one for a second.
pub async fn start_cluster(tweak: impl FnOnce(&mut GatewayConfig)) -> ClusterEnv {
    start_cluster_timing(5_000, tweak).await
}

/// [`start_cluster`] for a test that fails a node over: the nodes' own
/// 1 s timeout (`cluster-node-timeout`), so failovers come fast.
pub async fn start_failing_cluster(tweak: impl FnOnce(&mut GatewayConfig)) -> ClusterEnv {
    start_cluster_timing(1_000, tweak).await
}

async fn start_cluster_timing(
    node_timeout_ms: u64,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> ClusterEnv {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = ClusterSpec::for_tests(dir.path());
    spec.node_timeout_ms = node_timeout_ms;
    let lab = ClusterLab::start(spec, &NoProgress)
        .await
        .expect("cluster starts");
    assert_runs_the_chosen_server(&lab).await;
    let mut cfg = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        cluster: lab.seeds(),
        password: Some(lab.password().to_string()),
        poll_interval_ms: 500,
        ..GatewayConfig::default()
    };
    tweak(&mut cfg);
    let gw = Gateway::bind(cfg).await.expect("gateway binds");
    let gateway = gw.local_addr().to_string();
    let topology = gw.topology();
    gw.wait_ready(1, Duration::from_secs(30))
        .await
        .expect("the gateway sees every shard");
    let task = tokio::spawn(async move {
        let _ = gw.run(std::future::pending()).await;
    });
    ClusterEnv {
        lab,
        gateway,
        topology,
        task,
        _dir: dir,
    }
}

/// The nodes run the server `BELAY_TEST_SERVER` asks for (see
/// `super::assert_runs_the_chosen_server`).
async fn assert_runs_the_chosen_server(lab: &ClusterLab) {
    let want = match belay_lab::ServerChoice::for_tests() {
        belay_lab::ServerChoice::Auto => return,
        belay_lab::ServerChoice::Redis => "redis",
        belay_lab::ServerChoice::Valkey => "valkey",
    };
    let mut c = Connection::connect(&lab.seeds()[0], Some(&lab.auth()), Duration::from_secs(5))
        .await
        .expect("connect to a node");
    let info = c.info("server").await.expect("INFO server");
    let runs = info.get("server_name").unwrap_or("redis");
    assert_eq!(
        runs, want,
        "BELAY_TEST_SERVER asks for {want}; the cluster runs {runs}"
    );
}

impl ClusterEnv {
    pub fn auth(&self) -> Auth {
        Auth::password(self.lab.password())
    }

    /// A client of the gateway, logged in.
    pub async fn client(&self) -> Connection {
        Connection::connect(&self.gateway, Some(&self.auth()), Duration::from_secs(30))
            .await
            .expect("connect to the gateway")
    }

    /// A client of one node, logged in.
    pub async fn node(&self, addr: &str) -> Connection {
        Connection::connect(addr, Some(&self.auth()), Duration::from_secs(5))
            .await
            .expect("connect to a node")
    }

    /// The node's own slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let mut c = self.node(&self.lab.seeds()[0]).await;
        c.call_ok(&["CLUSTER", "KEYSLOT", key])
            .await
            .expect("CLUSTER KEYSLOT")
            .as_int()
            .expect("a slot") as u16
    }

    /// The master serving `key`'s slot, as the nodes say.
    pub async fn master_of(&self, key: &str) -> String {
        let slot = self.slot_of(key).await;
        self.lab
            .master_of_slot(slot)
            .await
            .expect("a master serves the slot")
    }

    /// One hash tag (`{t3}`) per shard, by master address.
    pub async fn tags_by_master(&self) -> HashMap<String, String> {
        let masters = self.lab.shards().await.expect("shards").len();
        let mut out = HashMap::new();
        for i in 0.. {
            let tag = format!("{{t{i}}}");
            let master = self.master_of(&tag).await;
            out.entry(master).or_insert(tag);
            if out.len() == masters {
                return out;
            }
        }
        unreachable!()
    }

    /// What the cluster itself holds under `key`: asked of its master
    /// directly, not through the gateway.
    pub async fn direct_get(&self, key: &str) -> Value {
        let master = self.master_of(key).await;
        self.node(&master)
            .await
            .call_ok(&["GET", key])
            .await
            .expect("GET on the key's master")
    }

    /// Every key the cluster holds, asked of each master directly.
    pub async fn direct_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for shard in self.lab.shards().await.expect("shards") {
            let v = self
                .node(&shard.master)
                .await
                .call_ok(&["KEYS", "*"])
                .await
                .expect("KEYS");
            keys.extend(v.as_array().unwrap().iter().map(|k| k.to_text().unwrap()));
        }
        keys.sort();
        keys
    }
}
