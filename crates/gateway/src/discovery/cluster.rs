//! Discovery for a Redis Cluster: every node is asked `CLUSTER SHARDS`
//! (`CLUSTER SLOTS` before Redis 7), each shard's master is the one most
//! nodes name *and* that answers `ROLE` as master, and each shard is then
//! watched as a Sentinel group is: the master's offsets every 100 ms, each
//! replica's link and lag, writes held while the master is silent or
//! failed. It publishes one [`Topology`] per shard inside a
//! [`ShardMap`]: the session routes within a shard as within a group.
//!
//! Shards are watched concurrently: a paused master costs its own shard a
//! control timeout, never the others.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::nodes::Nodes;
use super::sentinels::reason;
use super::{spec_for, Event, MIN_ROUND_GAP, OFFSET_INTERVAL, REPLICA_CHECK_BUDGET};
use crate::backend::{GatewayAuth, NodePool};
use crate::cluster::{agree, idle_masters, parse_shards, parse_slots, ShardMap};
use crate::commands::{CommandTable, Software};
use crate::config::GatewayConfig;
use crate::locality::{read_tiers, Locality};
use crate::metrics::Telemetry;
use crate::reload::LiveConfig;
use crate::topology::Topology;

mod shard;

use shard::Shard;

/// The discovery task for a cluster.
pub struct ClusterDiscovery {
    live: Arc<LiveConfig>,
    cfg: Arc<GatewayConfig>,
    gateway_auth: GatewayAuth,
    /// Connections for asking nodes about the cluster, and for `COMMAND`.
    views: Nodes,
    /// Every node to ask: the configured ones and every one learned.
    known: Vec<String>,
    /// By master address.
    shards: HashMap<String, Shard>,
    /// Masters that serve no slot yet, by address (see
    /// `cluster::idle_masters`).
    idle: HashMap<String, Arc<NodePool>>,
    commands: Arc<CommandTable>,
    commands_stale: bool,
    server: Software,
    generation: u64,
    master_checks: u64,
    unserved_logged: usize,
    telemetry: Telemetry,
    tx: watch::Sender<Arc<Topology>>,
    events: Option<mpsc::UnboundedReceiver<Event>>,
}

impl ClusterDiscovery {
    pub fn new(
        live: Arc<LiveConfig>,
        telemetry: Telemetry,
    ) -> (
        ClusterDiscovery,
        watch::Receiver<Arc<Topology>>,
        mpsc::UnboundedSender<Event>,
    ) {
        let cfg = live.load();
        let commands = Arc::new(CommandTable::default());
        let (tx, rx) = watch::channel(Arc::new(Topology::empty(commands.clone())));
        let (events_tx, events) = mpsc::unbounded_channel();
        let d = ClusterDiscovery {
            gateway_auth: GatewayAuth::with_tls(cfg.node_auth(), cfg.backend_tls_client.clone()),
            views: Nodes::for_config(&cfg),
            known: cfg.cluster.clone(),
            shards: HashMap::new(),
            idle: HashMap::new(),
            commands,
            commands_stale: false,
            server: Software::default(),
            generation: 0,
            master_checks: 0,
            unserved_logged: 0,
            telemetry,
            tx,
            events: Some(events),
            live,
            cfg,
        };
        (d, rx, events_tx)
    }

    /// Runs until the gateway stops (the task is aborted).
    pub async fn run(mut self) {
        let Some(mut events) = self.events.take() else {
            return;
        };
        let mut next_full = Instant::now();
        loop {
            let old = self.cfg.clone();
            if self.live.refresh(&mut self.cfg) {
                self.reconfigure(&old);
                next_full = Instant::now();
            }
            if Instant::now() >= next_full {
                self.full_round().await;
                next_full = Instant::now() + self.cfg.poll_interval();
            } else {
                self.offsets_round().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(OFFSET_INTERVAL) => {}
                ev = events.recv() => {
                    if ev.is_none() {
                        return;
                    }
                    // A session saw a sign (MOVED, a refusal, a lost
                    // connection): look at the whole cluster again soon.
                    while events.try_recv().is_ok() {}
                    next_full = next_full.min(Instant::now() + MIN_ROUND_GAP);
                }
            }
        }
    }

    /// New credentials (or TLS files) for connections opened from now on.
    fn reconfigure(&mut self, old: &GatewayConfig) {
        let cfg = self.cfg.clone();
        if cfg.node_auth() != old.node_auth() || cfg.backend_tls_client.is_some() {
            tracing::info!(
                "reload: new credentials for the cluster's nodes (used by new connections)"
            );
            self.gateway_auth.set(cfg.node_auth());
            self.gateway_auth.set_tls(cfg.backend_tls_client.clone());
            let fresh = || Nodes::for_config(&cfg);
            self.views = fresh();
            for shard in self.shards.values_mut() {
                shard.nodes = fresh();
            }
        }
        if cfg.commands != old.commands {
            self.commands_stale = true;
        }
    }

    /// Every known node's view, agreed; shards re-formed around the masters
    /// named; each master confirmed with `ROLE`; then the offsets.
    async fn full_round(&mut self) {
        let timeout = self.cfg.control_timeout().min(REPLICA_CHECK_BUDGET);
        let tls = self.cfg.backend_tls_client.is_some();
        let known = self.known.clone();
        let answers = self
            .views
            .ask_all(&known, timeout, &["CLUSTER", "SHARDS"])
            .await;
        let mut views = Vec::new();
        let mut need_slots = Vec::new();
        for (addr, answer) in answers {
            match answer {
                Ok(v) => match parse_shards(&v, tls) {
                    Some(view) => views.push(view),
                    None => {
                        tracing::warn!(node = %addr, "CLUSTER SHARDS: a reply the gateway cannot read")
                    }
                },
                Err(belay_client::ClientError::Reply { .. }) => need_slots.push(addr),
                Err(e) => {
                    tracing::debug!(node = %addr, "cluster node does not answer: {}", reason(&e))
                }
            }
        }
        // Before Redis 7: CLUSTER SLOTS.
        for (addr, answer) in self
            .views
            .ask_all(&need_slots, timeout, &["CLUSTER", "SLOTS"])
            .await
        {
            match answer.ok().as_ref().and_then(parse_slots) {
                Some(view) => views.push(view),
                None => {
                    tracing::warn!(node = %addr, "neither CLUSTER SHARDS nor CLUSTER SLOTS answered: is it a cluster node?")
                }
            }
        }
        if views.is_empty() {
            tracing::warn!(nodes = ?self.known, "no cluster node answered; writes are held");
            for shard in self.shards.values_mut() {
                shard.unresponsive = true;
            }
            self.publish();
            return;
        }
        let agreed = agree(&views);
        let idle = idle_masters(&views, &agreed);
        // Ask, from now on, the configured nodes and every node the cluster
        // names: a node removed from it is forgotten.
        let mut known = self.cfg.cluster.clone();
        for shard in &agreed {
            for addr in std::iter::once(&shard.master).chain(&shard.replicas) {
                if !known.contains(addr) {
                    known.push(addr.clone());
                }
            }
        }
        for addr in &idle {
            if !known.contains(addr) {
                known.push(addr.clone());
            }
        }
        self.known = known;
        self.idle.retain(|addr, pool| {
            let keep = idle.contains(addr);
            if !keep {
                pool.close();
            }
            keep
        });
        for addr in idle {
            if !self.idle.contains_key(&addr) {
                tracing::info!(master = %addr, "a master serving no slot yet (a node added): commands follow ASK to it");
                let pool = NodePool::new(
                    spec_for(&self.cfg, &self.gateway_auth, &addr, true),
                    self.cfg.connections_per_node,
                );
                self.idle.insert(addr, Arc::new(pool));
            }
        }
        // Shards whose master is no longer named: retired.
        let named: Vec<&String> = agreed.iter().map(|s| &s.master).collect();
        let gone: Vec<String> = self
            .shards
            .keys()
            .filter(|a| !named.contains(a))
            .cloned()
            .collect();
        for addr in gone {
            if let Some(shard) = self.shards.remove(&addr) {
                tracing::info!(master = %addr, "no longer a shard's master");
                shard.retire(&self.cfg);
            }
        }
        for a in &agreed {
            match self.shards.get_mut(&a.master) {
                Some(shard) => {
                    shard.ranges = a.ranges.clone();
                    shard.replica_addrs = a.replicas.clone();
                    if a.master_failed && !shard.failed {
                        tracing::warn!(master = %a.master, "the cluster marks a shard's master failed; holding its writes and giving up on what is in flight there");
                        shard.seen.failover_noticed(
                            &a.master,
                            "the cluster marks it failed",
                            &self.telemetry,
                        );
                        shard.give_up_in_flight(&self.cfg, &self.gateway_auth);
                    }
                    shard.failed = a.master_failed;
                }
                None => {
                    let shard = Shard::new(&self.cfg, &self.gateway_auth, a);
                    self.shards.insert(a.master.clone(), shard);
                }
            }
        }
        let (cfg, auth, telemetry) = (&self.cfg, &self.gateway_auth, &self.telemetry);
        join_all(self.shards.values_mut().map(|s| async move {
            s.confirm(cfg).await;
            s.watch(cfg, auth, telemetry).await;
        }))
        .await;
        self.master_checks += 2;
        self.check_silent_masters().await;
        self.refresh_commands().await;
        self.publish();
    }

    /// A shard's master that does not answer the gateway: do the other
    /// nodes flag it failing (`fail?`/`fail` in their `CLUSTER NODES`)? If
    /// most that answer do, it is down, not slow — the gateway's `+odown` —
    /// and what is in flight there is given up on before a replica's
    /// promotion could make a late acknowledgement a lie.
    async fn check_silent_masters(&mut self) {
        let silent: Vec<String> = self
            .shards
            .values()
            .filter(|s| s.unresponsive && !s.given_up)
            .map(|s| s.addr().to_string())
            .collect();
        if silent.is_empty() {
            return;
        }
        let askable: Vec<String> = self
            .known
            .iter()
            .filter(|a| !silent.contains(a))
            .take(5)
            .cloned()
            .collect();
        let answers = self
            .views
            .ask_all(&askable, REPLICA_CHECK_BUDGET / 2, &["CLUSTER", "NODES"])
            .await;
        let texts: Vec<String> = answers
            .into_iter()
            .filter_map(|(_, r)| r.ok().and_then(|v| v.to_text()))
            .collect();
        for addr in silent {
            let votes: Vec<bool> = texts
                .iter()
                .filter_map(|t| crate::cluster::flags_failing(t, &addr))
                .collect();
            let failing = votes.iter().filter(|f| **f).count();
            if failing * 2 > votes.len() {
                if let Some(shard) = self.shards.get_mut(&addr) {
                    tracing::warn!(master = %addr, nodes = votes.len(), failing, "the cluster's nodes flag a silent shard master failing: giving up on what is in flight there");
                    shard.seen.failover_noticed(
                        &addr,
                        "the cluster's nodes flag it failing",
                        &self.telemetry,
                    );
                    shard.give_up_in_flight(&self.cfg, &self.gateway_auth);
                }
            }
        }
    }

    async fn offsets_round(&mut self) {
        self.check_silent_masters().await;
        let (cfg, auth, telemetry) = (&self.cfg, &self.gateway_auth, &self.telemetry);
        join_all(
            self.shards
                .values_mut()
                .filter(|s| !s.unresponsive)
                .map(|s| s.watch(cfg, auth, telemetry)),
        )
        .await;
        self.master_checks += 1;
        self.publish();
    }

    /// The command table, from the first confirmed master.
    async fn refresh_commands(&mut self) {
        let Some(master) = self
            .shards
            .values()
            .filter(|s| s.confirmed && !s.unresponsive)
            .map(|s| s.addr().to_string())
            .min()
        else {
            return;
        };
        let current = match self.commands_stale {
            true => Arc::new(CommandTable::default()),
            false => self.commands.clone(),
        };
        match self
            .views
            .command_table(&master, &current, &self.cfg.commands)
            .await
        {
            Ok(Some(table)) => {
                self.commands_stale = false;
                tracing::info!(commands = table.len(), server = %table.software, "command table loaded from a cluster master");
                self.server = table.software.clone();
                self.commands = Arc::new(table);
            }
            Ok(None) => {}
            Err(e) => {
                if self.commands.is_empty() {
                    tracing::warn!("cannot read COMMAND from {master} ({}); commands the gateway does not answer itself wait for it", reason(&e));
                }
            }
        }
    }

    fn publish(&mut self) {
        self.generation += 1;
        let mut order: Vec<&mut Shard> = self.shards.values_mut().collect();
        order.sort_by_key(|s| s.ranges.first().copied());
        let mut groups = Vec::new();
        let mut ranges = Vec::new();
        let mut unsettled = Vec::new();
        for shard in order {
            unsettled.extend(shard.unsettled_slots());
            let mut replicas = shard.replicas.clone();
            for r in &mut replicas {
                r.locality = Locality {
                    zone: None,
                    rtt: shard.nodes.rtt(&r.pool.addr),
                };
            }
            let tiers = read_tiers(&mut replicas, self.cfg.read_from, self.cfg.zone.as_deref());
            let write_hold = shard.write_hold();
            let sample = shard.sample.clone().filter(|_| shard.confirmed);
            let followers = match &sample {
                Some(s) => replicas
                    .iter()
                    .filter(|r| r.replid.as_deref() == Some(&*s.replid))
                    .count(),
                None => replicas.len(),
            };
            let topo = Topology {
                generation: self.generation,
                master_checks: self.master_checks,
                master: write_hold.is_none().then(|| shard.master.clone()),
                write_hold,
                read_master: Some(shard.master.clone()).filter(|_| shard.confirmed),
                replicas,
                read_tiers: tiers,
                master_locality: Locality {
                    zone: None,
                    rtt: shard.nodes.rtt(shard.addr()),
                },
                zone: self.cfg.zone.as_deref().map(Into::into),
                master_sample: sample,
                commands: self.commands.clone(),
                server: self.server.clone(),
                sentinels: Arc::from([]),
                followers,
                shards: None,
            };
            shard.seen.report(&topo, &self.telemetry);
            groups.push(Arc::new(topo));
            ranges.push(shard.ranges.clone());
        }
        let map = ShardMap::new(groups, &ranges)
            .with_unsettled(unsettled)
            .with_idle(self.idle.values().cloned().collect());
        let unserved = map.unserved();
        if unserved != self.unserved_logged {
            if unserved > 0 {
                tracing::warn!(
                    slots = unserved,
                    "slots no shard serves: commands for them are held"
                );
            }
            self.unserved_logged = unserved;
        }
        let mut top = match map.shard_of(0).or(map.shards.first()) {
            Some(first) => (**first).clone(),
            None => {
                let mut t = Topology::empty(self.commands.clone());
                t.generation = self.generation;
                t.master_checks = self.master_checks;
                t.server = self.server.clone();
                t
            }
        };
        top.shards = Some(Arc::new(map));
        self.tx.send_replace(Arc::new(top));
    }
}

impl Drop for ClusterDiscovery {
    fn drop(&mut self) {
        for pool in self.idle.values() {
            pool.close();
        }
        for shard in self.shards.values() {
            shard.master.close();
            for p in shard.replica_pools.values() {
                p.close();
            }
        }
    }
}

/// `0-5460,6000-6001`, for logs.
pub(crate) fn ranges_text(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
