//! One shard of a cluster, watched as a Sentinel group is: its master
//! confirmed with `ROLE` and sampled for offsets, its replicas' links and
//! lag, its write hold, and (from the master's `CLUSTER NODES`) the slots
//! whose reads must go to the master while a resharding moves them.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::super::nodes::{is_busy, judge_replica, replica_node, Nodes};
use super::super::replication::OffsetHistory;
use super::super::report::Seen;
use super::super::sentinels::reason;
use super::super::{spec_for, REPLICA_CHECK_BUDGET, RETIRE_GRACE};
use super::ranges_text;
use crate::backend::{GatewayAuth, NodePool};
use crate::cluster::{unsettled, AgreedShard};
use crate::config::{GatewayConfig, ReadFrom};
use crate::metrics::Telemetry;
use crate::topology::{OffsetSample, ReplicaNode, WriteHold};

/// One shard, watched around the master the nodes agree on. A new master
/// (a failover) is a new `Shard`: offsets of two histories never mix.
pub(super) struct Shard {
    pub(super) ranges: Vec<(u16, u16)>,
    pub(super) master: Arc<NodePool>,
    /// `ROLE` said master in the last full round.
    pub(super) confirmed: bool,
    /// It did not answer its last offset sample.
    pub(super) unresponsive: bool,
    /// Most nodes mark it failed: the cluster is failing it over.
    pub(super) failed: bool,
    /// What was in flight on it was given up on (see `give_up_in_flight`),
    /// since it last answered.
    pub(super) given_up: bool,
    pub(super) replica_addrs: Vec<String>,
    pub(super) replica_pools: HashMap<String, Arc<NodePool>>,
    /// Control connections to this shard's nodes, its own: shards are asked
    /// concurrently.
    pub(super) nodes: Nodes,
    pub(super) history: OffsetHistory,
    pub(super) sample: Option<OffsetSample>,
    pub(super) replicas: Vec<ReplicaNode>,
    pub(super) seen: Seen,
    /// Slots the map places here whose reads the master must serve, not
    /// its replicas (see `cluster::unsettled`): it is moving them away, or
    /// moved them already. From the master's own word, every 100 ms.
    pub(super) unsettled: Vec<u16>,
    /// When the master last said it was moving a slot away: a resharding
    /// moves slot after slot, each in a few milliseconds, faster than the
    /// master is asked; so while one runs, and for `RESHARDING_GRACE`
    /// after, all the shard's reads go to the master.
    pub(super) resharding_seen: Option<Instant>,
    /// The master did not answer `CLUSTER NODES` last time (said once).
    pub(super) own_slots_unknown: bool,
}

/// How long after the master last said it moves slots its replicas wait
/// to serve reads again: longer than the gaps between two slots' moves.
const RESHARDING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Shard {
    pub(super) fn new(cfg: &GatewayConfig, auth: &GatewayAuth, agreed: &AgreedShard) -> Shard {
        tracing::info!(master = %agreed.master, slots = %ranges_text(&agreed.ranges), "cluster shard master named by the nodes");
        Shard {
            ranges: agreed.ranges.clone(),
            master: Arc::new(NodePool::new(
                spec_for(cfg, auth, &agreed.master, true),
                cfg.connections_per_node,
            )),
            confirmed: false,
            unresponsive: false,
            failed: agreed.master_failed,
            given_up: false,
            replica_addrs: agreed.replicas.clone(),
            replica_pools: HashMap::new(),
            nodes: Nodes::for_config(cfg),
            history: OffsetHistory::default(),
            sample: None,
            replicas: Vec::new(),
            seen: Seen::default(),
            unsettled: Vec::new(),
            resharding_seen: None,
            own_slots_unknown: false,
        }
    }

    pub(super) fn addr(&self) -> &str {
        &self.master.addr
    }

    /// `ROLE` on the master: only a node that says master gets writes. One
    /// that did not answer last time is given less time: a paused master
    /// must not slow the round that brings the news of its replacement.
    pub(super) async fn confirm(&mut self, cfg: &GatewayConfig) {
        let addr = self.addr().to_string();
        let timeout = match self.unresponsive {
            true => cfg.control_timeout().min(REPLICA_CHECK_BUDGET),
            false => cfg.control_timeout(),
        };
        match self.nodes.role_within(&addr, timeout).await {
            Ok(role) if role.is_master() => {
                if !self.confirmed {
                    tracing::info!(master = %addr, "cluster shard master confirmed");
                }
                self.confirmed = true;
                self.unresponsive = false;
                self.given_up = false;
            }
            Ok(role) => {
                tracing::warn!(master = %addr, role = role.name(), "the nodes' master of a shard says it is not a master; holding its writes");
                self.confirmed = false;
            }
            Err(e) if is_busy(&e) => self.unresponsive = false,
            Err(e) => {
                if !self.unresponsive {
                    tracing::warn!(master = %addr, "a shard's master does not answer ROLE ({}); holding its writes", reason(&e));
                }
                self.unresponsive = true;
            }
        }
    }

    /// The master's offsets, then the replicas'.
    pub(super) async fn watch(
        &mut self,
        cfg: &GatewayConfig,
        auth: &GatewayAuth,
        telemetry: &Telemetry,
    ) {
        let addr = self.addr().to_string();
        if self.confirmed && !self.unresponsive {
            match self.nodes.master_sample(&addr).await {
                Ok(sample) => {
                    if self.unresponsive {
                        tracing::info!(master = %addr, "a shard's master answers again");
                    }
                    self.unresponsive = false;
                    self.history.record(&sample);
                    self.sample = Some(sample);
                    if cfg.read_from != ReadFrom::Master {
                        self.check_slots(&addr).await;
                    }
                }
                Err(belay_client::ClientError::Unexpected { detail, .. }) => {
                    tracing::warn!(master = %addr, "{detail}; holding the shard's writes");
                    self.confirmed = false;
                }
                Err(e) if is_busy(&e) => self.unresponsive = false,
                Err(e) => {
                    if !self.unresponsive {
                        self.seen.failover_noticed(
                            &addr,
                            "the shard's master does not answer",
                            telemetry,
                        );
                        tracing::warn!(master = %addr, "a shard's master does not answer ({}); holding its writes", reason(&e));
                    }
                    self.unresponsive = true;
                }
            }
        }
        self.check_replicas(cfg, auth).await;
    }

    /// Which of its slots the master is moving, or no longer serves: reads
    /// of those go to it (it redirects them), since a replica would answer
    /// for keys already moved as if they did not exist. A master that does
    /// not say leaves the last word standing.
    async fn check_slots(&mut self, addr: &str) {
        let own = match self.nodes.own_slots(addr).await {
            Ok(own) => own,
            // Refused (an ACL without `cluster|nodes`); a master that does
            // not answer is the offset watch's business.
            Err(e @ belay_client::ClientError::Reply { .. }) => {
                if !self.own_slots_unknown {
                    self.own_slots_unknown = true;
                    tracing::warn!(master = %addr, "cannot ask a shard's master CLUSTER NODES ({}): during a resharding, reads may reach a replica that lost the keys moved", reason(&e));
                }
                return;
            }
            Err(_) => return,
        };
        self.own_slots_unknown = false;
        let was_resharding = self.is_resharding();
        if !own.migrating.is_empty() {
            self.resharding_seen = Some(Instant::now());
        }
        self.unsettled = unsettled(&self.ranges, &own);
        match (was_resharding, self.is_resharding()) {
            (false, true) => {
                tracing::info!(master = %addr, "a shard's master is moving slots away: the shard's reads go to it, not to its replicas, until it is done")
            }
            (true, false) => {
                tracing::info!(master = %addr, "a shard's master moves no slot any more: its replicas serve reads again")
            }
            _ => {}
        }
    }

    fn is_resharding(&self) -> bool {
        self.resharding_seen
            .is_some_and(|at| at.elapsed() < RESHARDING_GRACE)
    }

    /// The slots the map places here whose reads must go to the master.
    pub(super) fn unsettled_slots(&self) -> Vec<u16> {
        if !self.is_resharding() {
            return self.unsettled.clone();
        }
        let mut all = self.unsettled.clone();
        for &(from, to) in &self.ranges {
            all.extend(from..=to);
        }
        all
    }

    async fn check_replicas(&mut self, cfg: &GatewayConfig, auth: &GatewayAuth) {
        let timeout = cfg.control_timeout().min(REPLICA_CHECK_BUDGET);
        let addrs = self.replica_addrs.clone();
        let answers = self.nodes.replicas_info(&addrs, timeout, false).await;
        let now = Instant::now();
        let master = self.confirmed.then(|| self.master.addr.clone());
        let mut out = Vec::new();
        for answer in answers {
            let pool = self
                .replica_pools
                .entry(answer.addr.clone())
                .or_insert_with(|| {
                    Arc::new(NodePool::new(
                        spec_for(cfg, auth, &answer.addr, false),
                        cfg.connections_per_node,
                    ))
                })
                .clone();
            let gone = self.unresponsive;
            let history = &self.history;
            out.push(replica_node(
                pool,
                &answer.addr,
                &answer.info,
                master.is_some(),
                |info| {
                    judge_replica(
                        info,
                        master.as_deref(),
                        history,
                        now,
                        cfg.max_replica_lag(),
                        gone,
                    )
                },
            ));
        }
        let nodes = &mut self.nodes;
        self.replica_pools.retain(|addr, pool| {
            let keep = addrs.contains(addr);
            if !keep {
                pool.close();
                nodes.forget(addr);
            }
            keep
        });
        self.replicas = out;
    }

    /// The cluster marks the master failed (a majority of masters agree it
    /// is down, a replica's election is next): it is down, not slow. What
    /// is in flight there fails now as uncertain — a paused master that
    /// wakes after its replica's promotion would acknowledge it and then
    /// drop it as it turns replica — and its connections start afresh.
    pub(super) fn give_up_in_flight(&mut self, cfg: &GatewayConfig, auth: &GatewayAuth) {
        if self.given_up {
            return;
        }
        self.given_up = true;
        self.master.close();
        self.master = Arc::new(NodePool::new(
            spec_for(cfg, auth, &self.master.addr, true),
            cfg.connections_per_node,
        ));
    }

    pub(super) fn write_hold(&self) -> Option<WriteHold> {
        if !self.confirmed {
            Some(WriteHold::NoMaster)
        } else if self.unresponsive {
            Some(WriteHold::MasterSilent)
        } else if self.failed {
            Some(WriteHold::FailoverInProgress)
        } else {
            None
        }
    }

    /// The master left the shard (a failover, a resharding): one that
    /// still answers keeps its connections for what was sent there.
    pub(super) fn retire(self, cfg: &GatewayConfig) {
        if self.confirmed && !self.unresponsive && !self.master.health().is_silent() {
            self.master.retire(cfg.request_timeout() + RETIRE_GRACE);
        } else {
            self.master.close();
        }
        for p in self.replica_pools.values() {
            p.close();
        }
    }
}
