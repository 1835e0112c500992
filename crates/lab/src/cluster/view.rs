//! What a cluster is doing, as its nodes say: every node is asked for its
//! own view (`CLUSTER INFO`, `CLUSTER NODES`, `ROLE`, `INFO replication`),
//! the slot map most reachable nodes agree on gives the shards, and
//! `report` judges it. Used by `belay status`, by the lab's waits,
//! and by tests ([`super::ClusterLab::shards`]).

use std::path::PathBuf;
use std::time::Duration;

use belay_client::{Auth, Connection, Role};
use serde::Serialize;

use super::nodes::{self, NodeLine, SlotMap};
use crate::status::Target;
use crate::why;

/// Where to look, and what the layout should be.
#[derive(Clone, Debug)]
pub struct ClusterQuery {
    /// Every node of the cluster.
    pub nodes: Vec<Target>,
    /// The nodes' credentials.
    pub auth: Option<Auth>,
    /// The gateway in front of the cluster, if any.
    pub gateway: Option<Target>,
    /// Replicas each shard should have linked (0: not checked).
    pub replicas_per_master: usize,
    /// A lab's state dir: readable secrets in it are problems too.
    pub state_dir: Option<PathBuf>,
    /// Deadline of each call: a paused node costs this much.
    pub timeout: Duration,
}

/// One node's answers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeView {
    pub name: Option<String>,
    pub addr: String,
    pub pid: Option<u32>,
    /// It answered every question.
    pub reachable: bool,
    /// Why it could not be asked.
    pub error: Option<String>,
    /// Its node id.
    pub id: Option<String>,
    /// `ok` or `fail`, from `CLUSTER INFO`.
    pub cluster_state: Option<String>,
    /// `master` or `replica`, from `ROLE`.
    pub role: Option<String>,
    /// For a replica: the master it follows (`host:port`).
    pub replicates_from: Option<String>,
    /// For a replica: `master_link_status` (`up`, `down`).
    pub link: Option<String>,
    /// Replication offset (a master's own, a replica's processed).
    pub offset: Option<i64>,
    /// Its `CLUSTER NODES` table.
    #[serde(skip)]
    pub table: Vec<NodeLine>,
}

impl NodeView {
    /// `name (addr)`, or the address alone.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} ({})", self.addr),
            None => self.addr.clone(),
        }
    }
    /// The slot map this node sees.
    pub fn slot_map(&self) -> SlotMap {
        nodes::slot_map(&self.table)
    }
}

/// A replica as its shard's view lists it, with what it says itself.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaView {
    pub name: Option<String>,
    pub addr: String,
    pub id: String,
    /// What it says it is (`ROLE`); `None` when it could not be asked.
    pub role: Option<String>,
    /// The master it says it follows.
    pub replicates_from: Option<String>,
    /// `master_link_status`.
    pub link: Option<String>,
    pub offset: Option<i64>,
    /// The master's offset minus this one's, in bytes.
    pub lag_bytes: Option<i64>,
    /// Flagged `fail`/`fail?` by the node the view comes from.
    pub failing: bool,
}

impl ReplicaView {
    /// Linked to `master`: says it is its replica, with the link up.
    pub fn linked_to(&self, master: &str) -> bool {
        self.role.as_deref() == Some("replica")
            && self.replicates_from.as_deref() == Some(master)
            && self.link.as_deref() == Some("up")
    }
}

/// A shard: a master serving slots, and the replicas following it.
#[derive(Clone, Debug, Serialize)]
pub struct ShardView {
    /// The master's node id (a shard is known by its master).
    pub id: String,
    /// Slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
    /// `host:port` of the master.
    pub master: String,
    pub master_name: Option<String>,
    /// The master is flagged `fail`/`fail?` (not serving: a failover is due).
    pub master_failing: bool,
    /// The master answered.
    pub master_reachable: bool,
    pub master_offset: Option<i64>,
    pub replicas: Vec<ReplicaView>,
}

impl ShardView {
    /// Whether `slot` is one of this shard's.
    pub fn has_slot(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// Everything asked, the shards, and the problems.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    pub nodes: Vec<NodeView>,
    /// Shards serving slots, by first slot, as most reachable nodes see them.
    pub shards: Vec<ShardView>,
    /// The slot map most reachable nodes agree on: `(first, last, master)`.
    pub slot_map: SlotMap,
    /// Slot ranges no master serves in that map.
    pub uncovered: Vec<(u16, u16)>,
    /// The gateway, when there is one.
    pub gateway: Option<GatewayCheck>,
    /// In plain words; empty when healthy.
    pub problems: Vec<String>,
    pub healthy: bool,
}

impl ClusterReport {
    /// One line: "healthy: ..." or the number of problems.
    pub fn summary(&self) -> String {
        let answering = self.nodes.iter().filter(|n| n.reachable).count();
        let base = format!(
            "{} shard{}, {}/{} nodes answering, {} slots unserved",
            self.shards.len(),
            if self.shards.len() == 1 { "" } else { "s" },
            answering,
            self.nodes.len(),
            self.uncovered
                .iter()
                .map(|&(a, b)| (b - a) as usize + 1)
                .sum::<usize>()
        );
        if self.healthy {
            format!("healthy: {base}")
        } else {
            format!(
                "NOT healthy ({} problem{}): {base}",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            )
        }
    }
}

impl ClusterQuery {
    /// A cluster belay did not start (`belay status --cluster`): the
    /// nodes are the `seeds` and every node their `CLUSTER NODES` names,
    /// so a node down or removed is still asked (and said to be down)
    /// while any node lists it. Nothing about the layout is checked.
    pub async fn from_seeds(
        seeds: &[String],
        auth: Option<Auth>,
        timeout: Duration,
    ) -> ClusterQuery {
        let mut addrs: Vec<String> = seeds.to_vec();
        for seed in seeds {
            let answer = async {
                let mut c = Connection::connect(seed, auth.as_ref(), timeout).await?;
                c.call_ok(&["CLUSTER", "NODES"]).await
            }
            .await;
            let Ok(table) = answer else { continue };
            for node in nodes::parse(&table.to_text().unwrap_or_default()) {
                if !node.addr.is_empty() && !addrs.contains(&node.addr) {
                    addrs.push(node.addr);
                }
            }
        }
        addrs.sort();
        ClusterQuery {
            nodes: addrs
                .into_iter()
                .map(|addr| Target {
                    addr,
                    ..Target::default()
                })
                .collect(),
            auth,
            gateway: None,
            replicas_per_master: 0,
            state_dir: None,
            timeout,
        }
    }
}

/// The gateway's answer to `PING` after `AUTH`.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayCheck {
    pub addr: String,
    pub pid: Option<u32>,
    /// Why it does not answer `PONG`; `None` when it does.
    pub error: Option<String>,
}

/// Asks one node for its view.
pub async fn ask(t: &Target, auth: Option<&Auth>, timeout: Duration) -> NodeView {
    let mut v = NodeView {
        name: t.name.clone(),
        addr: t.addr.clone(),
        pid: t.pid,
        ..NodeView::default()
    };
    let answers = async {
        let mut c = Connection::connect(&t.addr, auth, timeout).await?;
        let info = c.call_ok(&["CLUSTER", "INFO"]).await?;
        let table = c.call_ok(&["CLUSTER", "NODES"]).await?;
        let role = c.role().await?;
        let repl = c.info("replication").await?;
        Ok::<_, belay_client::ClientError>((info, table, role, repl))
    }
    .await;
    let (info, table, role, repl) = match answers {
        Ok(a) => a,
        Err(e) => {
            v.error = Some(why::failure(&e));
            return v;
        }
    };
    v.reachable = true;
    let info = belay_client::Info::parse(&info.to_text().unwrap_or_default());
    v.cluster_state = info.get("cluster_state").map(str::to_string);
    v.table = nodes::parse(&table.to_text().unwrap_or_default());
    v.id = v
        .table
        .iter()
        .find(|n| n.has_flag("myself"))
        .map(|n| n.id.clone());
    match role {
        Role::Master { offset, .. } => {
            v.role = Some("master".into());
            v.offset = Some(offset);
        }
        Role::Replica {
            master_host,
            master_port,
            offset,
            ..
        } => {
            v.role = Some("replica".into());
            v.replicates_from = Some(format!("{master_host}:{master_port}"));
            v.offset = Some(offset);
            v.link = repl.get("master_link_status").map(str::to_string);
        }
        other => v.role = Some(other.name().to_string()),
    }
    v
}

/// Asks every node (and the gateway) and judges what they say.
pub async fn gather(q: &ClusterQuery) -> ClusterReport {
    let mut views = Vec::new();
    for t in &q.nodes {
        views.push(ask(t, q.auth.as_ref(), q.timeout).await);
    }
    let gateway = match &q.gateway {
        Some(t) => {
            let password = q.auth.as_ref().map(|a| a.password.as_str()).unwrap_or("");
            Some(GatewayCheck {
                addr: t.addr.clone(),
                pid: t.pid,
                error: crate::ready::gateway_pending(&t.addr, None, password).await,
            })
        }
        None => None,
    };
    let exposed = q
        .state_dir
        .as_deref()
        .map(crate::secrets::exposed)
        .unwrap_or_default();
    super::report::judge(q, views, gateway, exposed)
}

/// The slot map most reachable nodes agree on, and the first node with it
/// (the view shards are read from). `None` when no node answered.
pub fn majority_view(views: &[NodeView]) -> Option<(&NodeView, SlotMap)> {
    let maps: Vec<(usize, SlotMap)> = views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.reachable)
        .map(|(i, v)| (i, v.slot_map()))
        .collect();
    let best = maps
        .iter()
        .max_by_key(|(i, m)| {
            let votes = maps.iter().filter(|(_, o)| o == m).count();
            // Most votes; on a tie, the earliest node.
            (votes, std::cmp::Reverse(*i))
        })?
        .clone();
    Some((&views[best.0], best.1))
}

/// The shards in `from`'s table, enriched with what each node says itself.
pub fn shards(from: &NodeView, views: &[NodeView]) -> Vec<ShardView> {
    let said = |addr: &str| views.iter().find(|v| v.addr == addr && v.reachable);
    let mut out: Vec<ShardView> = from
        .table
        .iter()
        .filter(|n| n.is_master() && !n.slots.is_empty())
        .map(|m| {
            let own = said(&m.addr);
            let master_offset = own.and_then(|v| v.offset);
            let replicas = from
                .table
                .iter()
                .filter(|r| r.master_id.as_deref() == Some(m.id.as_str()))
                .map(|r| {
                    let v = said(&r.addr);
                    let offset = v.and_then(|v| v.offset);
                    ReplicaView {
                        name: views
                            .iter()
                            .find(|x| x.addr == r.addr)
                            .and_then(|x| x.name.clone()),
                        addr: r.addr.clone(),
                        id: r.id.clone(),
                        role: v.and_then(|v| v.role.clone()),
                        replicates_from: v.and_then(|v| v.replicates_from.clone()),
                        link: v.and_then(|v| v.link.clone()),
                        offset,
                        lag_bytes: match (master_offset, offset) {
                            (Some(m), Some(o)) => Some((m - o).max(0)),
                            _ => None,
                        },
                        failing: r.is_failing(),
                    }
                })
                .collect();
            let mut slots = m.slots.clone();
            slots.sort();
            ShardView {
                id: m.id.clone(),
                slots,
                master: m.addr.clone(),
                master_name: views
                    .iter()
                    .find(|x| x.addr == m.addr)
                    .and_then(|x| x.name.clone()),
                master_failing: m.is_failing(),
                master_reachable: own.is_some(),
                master_offset,
                replicas,
            }
        })
        .collect();
    out.sort_by_key(|s| s.slots.first().copied());
    out
}
