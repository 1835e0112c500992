//! The topology snapshot: who is master, which replicas may serve reads.
//!
//! It is a value: discovery builds a new one and publishes it; sessions read
//! the current one without locks and never modify it.

use std::sync::Arc;
use std::time::Instant;

use crate::commands::CommandTable;
use crate::pool::NodePool;

/// A replica as last seen by discovery.
#[derive(Clone)]
pub struct ReplicaNode {
    pub pool: Arc<NodePool>,
    /// Replication offset the replica reported (`slave_repl_offset`).
    pub offset: i64,
    /// How stale the replica is: the age of the newest master offset it has
    /// reached. `None` when unknown (no confirmed master, or too far behind).
    pub lag: Option<std::time::Duration>,
    /// May serve reads: linked to the current master, not down, not loading.
    pub eligible: bool,
}

/// One immutable picture of the deployment.
pub struct Topology {
    /// Bumped on every publish.
    pub generation: u64,
    /// Where writes go: the confirmed master (named by a majority of
    /// answering Sentinels and answering `ROLE` as master), unless writes are
    /// held (a failover under way, or the write guard). `None`: writes wait.
    pub master: Option<Arc<NodePool>>,
    /// The confirmed master even while writes are held: reads that must see
    /// the latest data (read-your-writes, no eligible replica) may use it.
    pub read_master: Option<Arc<NodePool>>,
    pub replicas: Vec<ReplicaNode>,
    /// The master's replication offset, sampled at `sampled_at`, before the
    /// replicas' offsets of this snapshot were sampled.
    pub master_offset: i64,
    /// When this round of sampling started.
    pub sampled_at: Instant,
    /// How commands route (from the master's `COMMAND`).
    pub commands: Arc<CommandTable>,
    /// The master's `redis_version`, for `HELLO` replies.
    pub server_version: String,
}

impl Topology {
    pub fn empty(commands: Arc<CommandTable>) -> Topology {
        Topology {
            generation: 0,
            master: None,
            read_master: None,
            replicas: Vec::new(),
            master_offset: 0,
            sampled_at: Instant::now(),
            commands,
            server_version: String::new(),
        }
    }

    /// Replicas that may serve reads.
    pub fn eligible_replicas(&self) -> impl Iterator<Item = &ReplicaNode> {
        self.replicas
            .iter()
            .filter(|r| r.eligible && !r.pool.is_closed())
    }
}

/// The topology as JSON (`BELAY TOPOLOGY`): what the gateway writes to and
/// reads from, and why.
pub fn to_json(topo: &Topology) -> String {
    let replicas: Vec<serde_json::Value> = topo
        .replicas
        .iter()
        .map(|r| {
            serde_json::json!({
                "addr": r.pool.addr,
                "offset": r.offset,
                "lag_ms": r.lag.map(|l| l.as_millis() as u64),
                "eligible": r.eligible && !r.pool.is_closed(),
            })
        })
        .collect();
    serde_json::json!({
        "master": topo.read_master.as_ref().map(|m| m.addr.clone()),
        "writes_held": topo.master.is_none(),
        "master_offset": topo.master_offset,
        "replicas": replicas,
        "generation": topo.generation,
        "server_version": topo.server_version,
        "commands_known": topo.commands.len(),
    })
    .to_string()
}
