//! What cluster to build: [`ClusterSpec`] (shards, replicas, timers, ports)
//! and the plan derived from it — which node gets which name, port and
//! files, and which nodes start as masters. Nothing here touches the system.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::process::{ProcessKind, ProcessRecord};
use crate::server::ServerChoice;
use crate::spec::GatewaySpec;

/// Redis Cluster's number of hash slots.
pub const SLOTS: u16 = 16384;

/// Everything that decides the shape of a cluster lab. `Default`: 3 shards
/// of 1 master + 1 replica on 7000..7005, auth everywhere, AOF on, node
/// timeout 2000 ms.
///
/// The password is never serialized (it lives in `<dir>/password`, mode 0600).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// State dir: `lab.json`, `password`, one sub-dir per node (`node-1`, ...).
    pub dir: PathBuf,
    /// Number of shards, each with its own master and slot range.
    pub masters: usize,
    /// Replicas of each master.
    pub replicas_per_master: usize,
    /// Port of `node-1`; the others follow. The masters are `node-1` ..
    /// `node-<masters>`, then the replicas of shard 1, 2, ... in turn.
    pub base_port: u16,
    /// Address every node binds to and announces.
    pub bind: String,
    /// Password of every node (`requirepass` and `masterauth`); `None` =
    /// generate one (or reuse the one already in the state dir).
    #[serde(skip)]
    pub password: Option<String>,
    /// `cluster-node-timeout`: how long a silent node is tolerated before it
    /// is flagged failing, and so the scale of every failover.
    pub node_timeout_ms: u64,
    /// AOF on (`false`: no persistence at all).
    pub persistence: bool,
    /// Redis or Valkey; a program named below wins.
    pub server: ServerChoice,
    /// The nodes' program, when named (`--redis-server`).
    pub redis_server: Option<PathBuf>,
    /// What runs, found by `ClusterLab::start` (see
    /// [`crate::server::find_server`]) and kept in `lab.json`.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// The gateway to start in front of the cluster (`--cluster` to every
    /// initial master), if any. Its zone is not used: cluster nodes have none.
    pub gateway: Option<GatewaySpec>,
    /// Children outlive the process that started them (`up --detach`).
    pub detach: bool,
    /// How long `ClusterLab::start` waits for the cluster to be ready.
    pub ready_timeout_ms: u64,
    /// Extra lines appended to every node's `redis.conf`.
    pub extra_redis_config: Vec<String>,
    /// The ports came from [`crate::ports::reserve_block`] (tests): take a
    /// new block if one is taken before start. Never set for a user's ports.
    #[serde(skip)]
    pub reassign_busy_ports: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            dir: PathBuf::from(".belay"),
            masters: 3,
            replicas_per_master: 1,
            base_port: 7000,
            bind: "127.0.0.1".into(),
            password: None,
            node_timeout_ms: 2000,
            persistence: true,
            server: ServerChoice::Auto,
            redis_server: None,
            program: None,
            gateway: None,
            detach: false,
            ready_timeout_ms: 60_000,
            extra_redis_config: Vec::new(),
            reassign_busy_ports: false,
        }
    }
}

impl ClusterSpec {
    /// A spec for tests: state in `dir`, free ports, node timeout 1000 ms, a
    /// fixed password, the server of `BELAY_TEST_SERVER`. No gateway.
    pub fn for_tests(dir: &Path) -> ClusterSpec {
        let mut spec = ClusterSpec {
            dir: dir.to_path_buf(),
            password: Some("belay-test-password".into()),
            node_timeout_ms: 1000,
            server: ServerChoice::for_tests(),
            ready_timeout_ms: 45_000,
            reassign_busy_ports: true,
            ..ClusterSpec::default()
        };
        spec.assign_free_ports();
        spec
    }

    /// Moves every port onto one block of free ports: the nodes, then the
    /// gateway and its admin endpoint (when `gateway` is set). For tests.
    ///
    /// Each node also listens on its port + 10000 (the cluster bus): the
    /// block is one whose ports + 10000 are free too and stay below the
    /// kernel's ephemeral range (32768 up), where any outgoing connection
    /// on the machine could take one between this check and the start.
    pub fn assign_free_ports(&mut self) {
        let nodes = self.nodes() as u16;
        let n = nodes + 2;
        let bus_free = |first: u16| {
            (first..first + n)
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok())
        };
        let first = (0..5000)
            .map(|_| crate::ports::reserve_block(n))
            .find(|&first| (first as u32 + n as u32 + 10_000) < 32_768 && bus_free(first))
            .expect("a block of free ports whose cluster bus ports are free too");
        self.base_port = first;
        if let Some(gw) = &mut self.gateway {
            gw.port = first + nodes;
            if gw.admin_port.is_some() {
                gw.admin_port = Some(first + nodes + 1);
            }
        }
    }

    /// Number of nodes: masters and their replicas.
    pub fn nodes(&self) -> usize {
        self.masters * (1 + self.replicas_per_master)
    }

    /// The nodes' program, found by `ClusterLab::start`.
    ///
    /// # Panics
    /// Before `ClusterLab::start` (or `attach`) filled it in.
    pub fn program(&self) -> &Path {
        self.program
            .as_deref()
            .expect("the server program is found by ClusterLab::start")
    }

    /// The shard (0-based) node `i` (0-based, plan order) starts in.
    pub fn shard_of(&self, i: usize) -> usize {
        i % self.masters
    }

    /// True when node `i` starts as its shard's master.
    pub fn starts_as_master(&self, i: usize) -> bool {
        i < self.masters
    }

    /// The slots shard `s` starts with: an even split of 0..16383, as
    /// `redis-cli --cluster create` makes it.
    pub fn initial_slots(&self, s: usize) -> (u16, u16) {
        let per = SLOTS as usize / self.masters;
        let first = s * per;
        let last = if s + 1 == self.masters {
            SLOTS as usize - 1
        } else {
            first + per - 1
        };
        (first as u16, last as u16)
    }

    /// `host:port` of the initial masters: the seeds a cluster client (the
    /// gateway) starts from.
    pub fn seed_addrs(&self) -> Vec<String> {
        (0..self.masters)
            .map(|i| format!("{}:{}", self.bind, self.base_port + i as u16))
            .collect()
    }

    /// Checks the spec describes a cluster that can work.
    pub fn validate(&self) -> Result<(), LabError> {
        let bad = |m: String| Err(LabError::InvalidSpec(m));
        if self.masters < 3 {
            // Failover needs a majority of the masters to vote, and a
            // majority of two is both: one shard down would stall the other.
            return bad(format!(
                "a Redis Cluster needs at least 3 shards for failover (a majority of the masters must vote); got {} (--shards)",
                self.masters
            ));
        }
        if self.masters > 100 {
            return bad("more than 100 shards is beyond a lab (--shards)".into());
        }
        if self.replicas_per_master == 0 {
            return bad(
                "at least one replica per shard is needed for failover (--replicas)".into(),
            );
        }
        if let Some(p) = &self.password {
            if p.is_empty() || p.contains(['\n', '\r', '\0']) {
                return bad("the password must be non-empty and on one line (--password)".into());
            }
        }
        if self.node_timeout_ms < 100 {
            return bad("the node timeout must be at least 100 ms".into());
        }
        // The cluster bus listens on port + 10000.
        let last = self.base_port as u32 + self.nodes() as u32 - 1 + 10_000;
        if last > 65535 || self.base_port == 0 {
            return bad(format!(
                "ports run past 65535 (each node also uses its port + 10000 for the cluster bus): choose a --port below {}",
                65535 - 10_000 - self.nodes() as u32 + 1
            ));
        }
        let planned = self.plan();
        for (i, a) in planned.iter().enumerate() {
            if let Some(b) = planned[..i].iter().find(|b| {
                b.port == a.port
                    || (b.kind == ProcessKind::DataNode && b.port as u32 + 10_000 == a.port as u32)
                    || (a.kind == ProcessKind::DataNode && a.port as u32 + 10_000 == b.port as u32)
            }) {
                return bad(format!(
                    "{} and {} would both use port {} (a node's cluster bus is its port + 10000): move one with --port or --gateway-port",
                    b.name, a.name, a.port
                ));
            }
        }
        Ok(())
    }

    /// Every process, in start order: the nodes (`node-1` .. first), then
    /// the gateway. Pids are empty.
    pub fn plan(&self) -> Vec<ProcessRecord> {
        let rec = |name: String, kind: ProcessKind, port: u16| {
            let dir = self.dir.join(&name);
            let (config, log) = match kind {
                ProcessKind::DataNode => (Some(dir.join("redis.conf")), dir.join("redis.log")),
                _ => (None, dir.join("gateway.log")),
            };
            ProcessRecord {
                name,
                kind,
                host: self.bind.clone(),
                port,
                admin_port: None,
                dir,
                config,
                log,
                pid: None,
                start_time: None,
            }
        };
        let mut out: Vec<ProcessRecord> = (0..self.nodes())
            .map(|i| {
                rec(
                    format!("node-{}", i + 1),
                    ProcessKind::DataNode,
                    self.base_port.saturating_add(i as u16),
                )
            })
            .collect();
        if let Some(gw) = &self.gateway {
            let mut g = rec("gateway".into(), ProcessKind::Gateway, gw.port);
            g.admin_port = gw.admin_port;
            out.push(g);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_puts_masters_first_and_splits_the_slots() {
        let spec = ClusterSpec::default();
        spec.validate().unwrap();
        let plan = spec.plan();
        let ports: Vec<_> = plan.iter().map(|p| (p.name.as_str(), p.port)).collect();
        assert_eq!(
            ports,
            [
                ("node-1", 7000),
                ("node-2", 7001),
                ("node-3", 7002),
                ("node-4", 7003),
                ("node-5", 7004),
                ("node-6", 7005)
            ]
        );
        assert!(spec.starts_as_master(2) && !spec.starts_as_master(3));
        assert_eq!(spec.shard_of(4), 1);
        assert_eq!(spec.initial_slots(0), (0, 5460));
        assert_eq!(spec.initial_slots(1), (5461, 10921));
        assert_eq!(spec.initial_slots(2), (10922, 16383));
        assert_eq!(spec.seed_addrs()[2], "127.0.0.1:7002");
    }

    #[test]
    fn refuses_what_cannot_fail_over() {
        let two = ClusterSpec {
            masters: 2,
            ..ClusterSpec::default()
        };
        assert!(two.validate().unwrap_err().to_string().contains("--shards"));
        let none = ClusterSpec {
            replicas_per_master: 0,
            ..ClusterSpec::default()
        };
        assert!(none
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--replicas"));
        let high = ClusterSpec {
            base_port: 60000,
            ..ClusterSpec::default()
        };
        assert!(high.validate().unwrap_err().to_string().contains("+ 10000"));
    }
}
