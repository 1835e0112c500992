//! The topology snapshot: who is master, which replicas may serve reads,
//! and why writes are held when they are.
//!
//! It is a value: discovery builds a new one and publishes it; sessions read
//! the current one without locks and never modify it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::NodePool;
use crate::cluster::ShardMap;
use crate::commands::{CommandTable, Software};
use crate::locality::Locality;

/// The master's replication position at one moment. Offsets mean something
/// only within one replication history, named by its replication ID: after
/// a failover the new master starts a new one, so offsets are compared only
/// between samples of the same ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetSample {
    pub replid: Arc<str>,
    pub offset: i64,
    /// When the master was asked: a sample describes writes acknowledged
    /// before this moment.
    pub taken_at: Instant,
}

/// A replica as last seen by discovery.
#[derive(Clone)]
pub struct ReplicaNode {
    pub pool: Arc<NodePool>,
    /// Replication offset the replica reported (`slave_repl_offset`),
    /// asked after the master's sample of the same snapshot.
    pub offset: i64,
    /// The replication ID of the history it follows (its `master_replid`).
    pub replid: Option<Arc<str>>,
    /// How stale the replica is: the age of the newest master offset it has
    /// reached. `None` when unknown (no confirmed master, or too far behind).
    pub lag: Option<Duration>,
    /// May serve reads: linked to the current master, not down, not
    /// loading, within the lag bound.
    pub eligible: bool,
    /// Its zone and round-trip time from the gateway.
    pub locality: Locality,
}

impl ReplicaNode {
    /// May take a read now: eligible, and its connections have noticed no
    /// silence or `BUSY` since.
    pub fn usable(&self) -> bool {
        self.eligible && self.pool.is_usable()
    }
}

/// Why writes wait instead of going to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteHold {
    /// No master the Sentinels agree on and that says it is master.
    NoMaster,
    /// The master did not answer discovery's last look.
    MasterSilent,
    /// A Sentinel started a failover of it.
    FailoverInProgress,
    /// Too few replicas are within the write guard's lag of it.
    WriteGuard,
}

impl WriteHold {
    pub fn describe(self) -> &'static str {
        match self {
            WriteHold::NoMaster => "no confirmed master",
            WriteHold::MasterSilent => "the master does not answer",
            WriteHold::FailoverInProgress => "a failover is in progress",
            WriteHold::WriteGuard => "too few replicas have caught up with the master",
        }
    }
}

/// One immutable picture of the deployment: a Sentinel group, or one
/// shard of a Redis Cluster — and then the whole cluster in `shards`.
#[derive(Clone)]
pub struct Topology {
    /// Bumped on every publish.
    pub generation: u64,
    /// How many times discovery has asked the master its role (`ROLE` or
    /// `INFO replication`): a write the master refused is sent again only
    /// once it has been asked since.
    pub master_checks: u64,
    /// Where writes go; `None` while they are held (see `write_hold`).
    pub master: Option<Arc<NodePool>>,
    /// Why writes are held, if they are.
    pub write_hold: Option<WriteHold>,
    /// The confirmed master even while writes are held: reads that must see
    /// the latest data (read-your-writes, no eligible replica) may use it.
    pub read_master: Option<Arc<NodePool>>,
    /// In order of preference for reads when `read_from` prefers by place
    /// (`zone_replica`, `nearest`), else as discovery found them.
    pub replicas: Vec<ReplicaNode>,
    /// Where each tier of `replicas` but the last ends: a read takes a
    /// replica of the first tier that has a usable one (see
    /// `locality::read_tiers`). Empty: one tier.
    pub read_tiers: Vec<usize>,
    /// The master's zone and round-trip time from the gateway.
    pub master_locality: Locality,
    /// The gateway's own zone.
    pub zone: Option<Arc<str>>,
    /// The master's position when this snapshot's replica offsets were
    /// asked for; `None` when unknown.
    pub master_sample: Option<OffsetSample>,
    /// How commands route (from the master's `COMMAND`).
    pub commands: Arc<CommandTable>,
    /// What the master runs (`redis 7.0.15`, `valkey 8.1.8`), for `HELLO`
    /// replies.
    pub server: Software,
    /// What each Sentinel said in the last full round.
    pub sentinels: Arc<[SentinelStatus]>,
    /// Replicas that follow the master's replication history (a node that
    /// still calls itself master, not yet converted, does not): what
    /// `durable_writes = "majority"` counts.
    pub followers: usize,
    /// A Redis Cluster: every shard's topology and who serves each slot.
    /// The fields above then describe the shard serving slot 0, where
    /// commands without keys go.
    pub shards: Option<Arc<ShardMap>>,
}

/// One Sentinel's answer in a round, as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SentinelStatus {
    pub addr: String,
    /// The master it names (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    pub master: Option<String>,
    /// Its `SENTINEL MASTER` flags for that master (`master`, `s_down`,
    /// `o_down`, `failover_in_progress`, …).
    pub flags: Vec<String>,
    /// It names the master the majority agreed on.
    pub agrees: bool,
    /// Why it did not answer.
    pub error: Option<String>,
}

impl Topology {
    pub fn empty(commands: Arc<CommandTable>) -> Topology {
        Topology {
            generation: 0,
            master_checks: 0,
            master: None,
            write_hold: Some(WriteHold::NoMaster),
            read_master: None,
            replicas: Vec::new(),
            read_tiers: Vec::new(),
            master_locality: Locality::default(),
            zone: None,
            master_sample: None,
            commands,
            server: Software::default(),
            sentinels: Arc::from([]),
            followers: 0,
            shards: None,
        }
    }

    /// The topology a command with keys in `slot` routes in: its shard's
    /// in a cluster (`None` while no shard serves the slot), else this one.
    pub fn group(&self, slot: Option<u16>) -> Option<&Topology> {
        match (&self.shards, slot) {
            (Some(map), Some(slot)) => map.shard_of(slot).map(|t| &**t),
            _ => Some(self),
        }
    }

    /// Every group's topology: the shards of a cluster, else this one.
    pub fn groups(&self) -> Vec<&Topology> {
        match &self.shards {
            Some(map) => map.shards.iter().map(|t| &**t).collect(),
            None => vec![self],
        }
    }

    /// Replicas that may serve reads now.
    pub fn eligible_replicas(&self) -> impl Iterator<Item = &ReplicaNode> {
        self.replicas.iter().filter(|r| r.usable())
    }

    /// Every data node the gateway knows (of every shard): each group's
    /// master first.
    pub fn data_nodes(&self) -> impl Iterator<Item = &Arc<NodePool>> {
        self.groups().into_iter().flat_map(|g| {
            g.read_master
                .iter()
                .chain(g.replicas.iter().map(|r| &r.pool))
        })
    }

    /// Ready to serve: a confirmed master and a command table.
    pub fn is_ready(&self) -> bool {
        self.master.is_some() && !self.commands.is_empty()
    }
}

/// The topology as JSON (`BELAY TOPOLOGY`): what the gateway writes to and
/// reads from, and why.
pub fn to_json(topo: &Topology) -> serde_json::Value {
    let replicas: Vec<serde_json::Value> = topo
        .replicas
        .iter()
        .map(|r| {
            serde_json::json!({
                "addr": r.pool.addr,
                "offset": r.offset,
                "lag_ms": r.lag.map(|l| l.as_millis() as u64),
                "eligible": r.usable(),
                "silent": r.pool.health().is_silent(),
                "busy": r.pool.health().is_busy(),
                "zone": r.locality.zone.as_deref(),
                "rtt_ms": rtt_ms(&r.locality),
            })
        })
        .collect();
    serde_json::json!({
        "master": topo.read_master.as_ref().map(|m| m.addr.clone()),
        "master_zone": topo.master_locality.zone.as_deref(),
        "master_rtt_ms": rtt_ms(&topo.master_locality),
        "gateway_zone": topo.zone.as_deref(),
        "writes_held": topo.master.is_none(),
        "writes_held_because": topo.write_hold.map(WriteHold::describe),
        "master_offset": topo.master_sample.as_ref().map_or(0, |s| s.offset),
        "master_replid": topo.master_sample.as_ref().map(|s| s.replid.to_string()),
        "replicas": replicas,
        "generation": topo.generation,
        "server_name": topo.server.name,
        "server_version": topo.server.version,
        "commands_known": topo.commands.len(),
        "sentinels": &*topo.sentinels,
        "shards": topo.shards.as_ref().map(|map| shards_json(map)),
    })
}

/// Each shard of a cluster: its slots and its own topology.
fn shards_json(map: &ShardMap) -> serde_json::Value {
    map.shards
        .iter()
        .enumerate()
        .map(|(i, shard)| {
            let mut one = to_json(shard);
            let slots: Vec<String> = map
                .ranges_of(i)
                .iter()
                .map(|(a, b)| format!("{a}-{b}"))
                .collect();
            one["slots"] = serde_json::json!(slots);
            // Slots whose reads go to the master, not replicas: moving away,
            // or all of a shard moving slots away (see discovery/cluster.rs).
            one["slots_read_on_master"] = serde_json::json!(map.unsettled_in(i));
            one
        })
        .collect()
}

/// Milliseconds with microseconds (loopback round trips are ~0.1 ms).
fn rtt_ms(at: &Locality) -> Option<f64> {
    at.rtt.map(|d| (d.as_micros() as f64) / 1000.0)
}
