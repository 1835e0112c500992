//! Discovery: asks every Sentinel where the master and replicas are, checks
//! each node's own view (`ROLE`, `INFO replication`), listens to Sentinel
//! events, and publishes a new [`Topology`] whenever it learns something.
//!
//! The rules follow the Sentinel client contract: a master is trusted only
//! when a majority of the Sentinels that answer name it *and* it answers
//! `ROLE` as master; a replica serves reads only when no Sentinel flag says it
//! is down and it reports its link to that master up. Only this task writes
//! the topology.

mod cluster;
mod events;
mod nodes;
mod react;
mod replication;
mod report;
mod sentinels;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::backend::{ConnectSpec, GatewayAuth, NodeHealth, NodePool, Silence};
use crate::commands::{CommandTable, Software};
use crate::config::GatewayConfig;
use crate::locality::{read_tiers, Locality, Zones};
use crate::metrics::Telemetry;
use crate::reload::LiveConfig;
use crate::topology::{OffsetSample, ReplicaNode, SentinelStatus, Topology, WriteHold};

pub use cluster::ClusterDiscovery;
pub use events::Event;
use nodes::{is_busy, judge_replica, replica_node, Nodes, ReplicaAnswer};
use replication::{OffsetHistory, WriteGuard};
use report::Seen;
use sentinels::{reason, Answers, Sentinels};

/// Why the discovery loop woke.
enum Step {
    /// An urgent event (or `None`: the gateway is gone).
    Event(Option<Event>),
    RoundDone,
}

/// Waits for an urgent event, queueing the others.
async fn next_urgent(
    events: &mut mpsc::UnboundedReceiver<Event>,
    queued: &mut Vec<Event>,
) -> Option<Event> {
    loop {
        let ev = events.recv().await?;
        if ev.is_urgent() {
            return Some(ev);
        }
        queued.push(ev);
    }
}

/// The discovery task's state.
pub struct Discovery {
    /// The settings in effect, re-read once per loop (see `reconfigure`).
    live: Arc<LiveConfig>,
    cfg: Arc<GatewayConfig>,
    /// The gateway's credentials, shared by every pool.
    gateway_auth: GatewayAuth,
    /// The command overrides changed: read the table again.
    commands_stale: bool,
    sentinels: Sentinels,
    /// One event listener per Sentinel.
    subscribed: HashMap<String, tokio::task::JoinHandle<()>>,
    nodes: Nodes,
    master_pool: Option<Arc<NodePool>>,
    replica_pools: HashMap<String, Arc<NodePool>>,
    commands: Arc<CommandTable>,
    server: Software,
    generation: u64,
    /// Times the master was asked its role (see `Topology::master_checks`).
    master_checks: u64,
    /// Replicas from the last full round, minus those a Sentinel flags down.
    known_replicas: Vec<String>,
    /// Replicas the Sentinels know, up or down (the write guard's scale).
    replicas_known: usize,
    /// A failover of this master (addr) is under way until this instant.
    failover_hold: Option<(String, Instant)>,
    /// When the current master was confirmed.
    master_since: Instant,
    /// The master did not answer the last offset sample: writes are held.
    master_unresponsive: bool,
    /// The Sentinels did not agree on the master (or none answered) in the
    /// last round: writes are held, its connections kept.
    master_unconfirmed: bool,
    /// Masters replaced by a `+switch-master`, and when: never trusted
    /// again for `DEMOTED_MEMORY`.
    demoted: HashMap<String, Instant>,
    history: OffsetHistory,
    /// The master's last sample, republished as it is (never re-stamped:
    /// a fence compares its time with writes' acknowledgements).
    sample: Option<OffsetSample>,
    guard: WriteGuard,
    /// Nodes' zones, configured and reported.
    zones: Zones,
    /// Ask the replicas' zones in the next replica check (once per full
    /// round: a zone changes only by a `CONFIG SET`).
    zones_due: bool,
    telemetry: Telemetry,
    /// What each Sentinel said in the last full round.
    sentinel_status: Arc<[SentinelStatus]>,
    /// What the last publish showed, to report changes (see `Seen`).
    seen: Seen,
    tx: watch::Sender<Arc<Topology>>,
    events_tx: mpsc::UnboundedSender<Event>,
    /// Taken by `run`.
    events: Option<mpsc::UnboundedReceiver<Event>>,
}

/// How often replication offsets are sampled between full rounds.
pub(super) const OFFSET_INTERVAL: Duration = Duration::from_millis(100);

/// How long a master replaced by `+switch-master` stays untrusted: well past
/// the time every Sentinel needs to learn of the switch.
const DEMOTED_MEMORY: Duration = Duration::from_secs(60);

/// Full rounds asked for by events are at least this far apart.
pub(super) const MIN_ROUND_GAP: Duration = Duration::from_millis(50);

/// A failover hold set by an event is released by a round that shows no
/// failover only once it is this old.
const HOLD_GRACE: Duration = Duration::from_secs(1);

/// Longest wait for one replica's INFO in a round.
pub(super) const REPLICA_CHECK_BUDGET: Duration = Duration::from_millis(500);

/// How long a replaced master that still answers keeps its connections for
/// what was in flight (beyond the request timeout): a switchover pauses
/// writes on it for at most 5 s by default.
pub(super) const RETIRE_GRACE: Duration = Duration::from_secs(5);

impl Discovery {
    pub fn new(
        live: Arc<LiveConfig>,
        telemetry: Telemetry,
    ) -> (
        Discovery,
        watch::Receiver<Arc<Topology>>,
        mpsc::UnboundedSender<Event>,
    ) {
        let cfg = live.load();
        let commands = Arc::new(CommandTable::default());
        let (tx, rx) = watch::channel(Arc::new(Topology::empty(commands.clone())));
        let (events_tx, events) = mpsc::unbounded_channel();
        let d = Discovery {
            sentinels: Sentinels::new(
                cfg.sentinels.clone(),
                cfg.sentinel_auth(),
                cfg.backend_tls_client.clone(),
            ),
            subscribed: HashMap::new(),
            gateway_auth: GatewayAuth::with_tls(cfg.node_auth(), cfg.backend_tls_client.clone()),
            commands_stale: false,
            live,
            nodes: Nodes::for_config(&cfg),
            master_pool: None,
            replica_pools: HashMap::new(),
            commands,
            server: Software::default(),
            generation: 0,
            master_checks: 0,
            known_replicas: Vec::new(),
            replicas_known: 0,
            failover_hold: None,
            master_since: Instant::now(),
            master_unresponsive: false,
            master_unconfirmed: false,
            demoted: HashMap::new(),
            history: OffsetHistory::default(),
            sample: None,
            guard: WriteGuard::new(cfg.min_synced_replicas, cfg.write_guard_lag()),
            zones: Zones::new(&cfg),
            zones_due: true,
            telemetry,
            sentinel_status: Arc::from([]),
            seen: Seen::default(),
            cfg,
            tx,
            events_tx: events_tx.clone(),
            events: Some(events),
        };
        (d, rx, events_tx)
    }

    /// Runs until the gateway stops (the task is aborted).
    pub async fn run(mut self) {
        let Some(mut events) = self.events.take() else {
            return;
        };
        let mut next_full = Instant::now();
        let mut last_full = Instant::now() - MIN_ROUND_GAP;
        let mut queued: Vec<Event> = Vec::new();
        loop {
            let old = self.cfg.clone();
            if self.live.refresh(&mut self.cfg) {
                self.reconfigure(&old);
                next_full = Instant::now();
            }
            self.ensure_subscriptions();
            let full = Instant::now() >= next_full;
            // An urgent event (a switch, a failover starting) interrupts a
            // round in progress: a round can spend a whole control timeout
            // on a paused node, and the news must not wait for it. Other
            // events only ask for a full round once this one is done.
            let step = tokio::select! {
                biased;
                ev = next_urgent(&mut events, &mut queued) => Step::Event(ev),
                _ = self.round(full) => Step::RoundDone,
            };
            let mut changed = !queued.is_empty();
            for ev in queued.drain(..) {
                self.handle_event(ev);
            }
            match step {
                Step::Event(None) => return,
                Step::Event(Some(ev)) => {
                    self.handle_event(ev);
                    // Urgent: the next round starts now, whatever the gap.
                    last_full = Instant::now() - MIN_ROUND_GAP;
                    changed = true;
                }
                Step::RoundDone => {
                    if full {
                        last_full = Instant::now();
                        next_full = last_full + self.cfg.poll_interval();
                    }
                    if !changed {
                        let wait = OFFSET_INTERVAL
                            .min(next_full.saturating_duration_since(Instant::now()));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            ev = events.recv() => {
                                let Some(ev) = ev else { return };
                                self.handle_event(ev);
                                changed = true;
                            }
                        }
                    }
                }
            }
            if changed {
                // Coalesce a burst of events into one round, and rounds into
                // at most one per MIN_ROUND_GAP: sessions' suspicions can
                // come by the thousand.
                while let Ok(ev) = events.try_recv() {
                    self.handle_event(ev);
                }
                next_full = next_full.min(last_full + MIN_ROUND_GAP);
            }
        }
    }

    /// Takes a reloaded config in: new Sentinels or their credentials are
    /// asked (and listened to) from now on, new node credentials are used
    /// by every connection opened from now on (open ones stay logged in),
    /// new write-guard bounds apply to the next publish, new command
    /// overrides to a command table read again. Lag bounds and hold times
    /// are read off `self.cfg` where they are used.
    fn reconfigure(&mut self, old: &GatewayConfig) {
        let cfg = self.cfg.clone();
        // TLS files are read again on every reload: new ones may sit under
        // the old names.
        let tls = cfg.backend_tls_client.is_some();
        if cfg.sentinels != old.sentinels || cfg.sentinel_auth() != old.sentinel_auth() || tls {
            tracing::info!(sentinels = ?cfg.sentinels, "reload: asking these Sentinels from now on");
            self.sentinels = Sentinels::new(
                cfg.sentinels.clone(),
                cfg.sentinel_auth(),
                cfg.backend_tls_client.clone(),
            );
            for (_, listener) in self.subscribed.drain() {
                listener.abort();
            }
        }
        if cfg.node_auth() != old.node_auth() || tls {
            tracing::info!("reload: new credentials for the data nodes (used by new connections)");
            self.nodes = Nodes::for_config(&cfg);
            self.gateway_auth.set(cfg.node_auth());
            self.gateway_auth.set_tls(cfg.backend_tls_client.clone());
        }
        self.guard
            .set_bounds(cfg.min_synced_replicas, cfg.write_guard_lag());
        if cfg.commands != old.commands {
            self.commands_stale = true;
        }
        if cfg.node_zones != old.node_zones {
            self.zones.configure(&cfg);
        }
    }

    async fn round(&mut self, full: bool) {
        if full {
            self.full_round().await
        } else {
            self.offsets_round().await
        }
    }

    /// The master was replaced. One that still answers keeps its
    /// connections until what was sent there is answered (a switchover's
    /// paused writes are refused, then sent to the new master); a silent
    /// or unanswering one is dropped at once.
    fn retire_master(&mut self) {
        match self.master_pool.take() {
            Some(old) if !self.master_unresponsive && !old.health().is_silent() => {
                old.retire(self.cfg.request_timeout() + RETIRE_GRACE);
            }
            Some(old) => old.close(),
            None => {}
        }
    }

    fn drop_master(&mut self) {
        if let Some(old) = self.master_pool.take() {
            old.close();
        }
    }

    /// Publishes what is known now, with the last samples as they were.
    fn republish(&mut self) {
        let replicas = self
            .tx
            .borrow()
            .replicas
            .iter()
            .filter(|r| !r.pool.is_closed())
            .cloned()
            .collect();
        self.publish(replicas);
    }

    /// Asks every Sentinel, confirms the master with ROLE, checks replicas.
    async fn full_round(&mut self) {
        self.zones_due = true;
        let answers = self
            .sentinels
            .ask(&self.cfg.master_name, self.cfg.control_timeout())
            .await;
        self.sentinels.learn(&answers);
        self.sentinel_status = answers.statuses().into();
        self.note_replicas(&answers);
        let failing_over = answers.failing_over();
        let candidate = answers.agreed_master().filter(|c| {
            let demoted = self
                .demoted
                .get(c)
                .is_some_and(|at| at.elapsed() < DEMOTED_MEMORY);
            if demoted {
                tracing::info!(candidate = %c, "Sentinels still name a master that a +switch-master replaced; waiting for them");
            }
            !demoted
        });
        let Some(candidate) = candidate else {
            self.no_master(&answers).await;
            return;
        };
        // A failover seen in a round (the events may have been missed)
        // holds writes to the master being failed over — not to the replica
        // it promotes, once the Sentinels name that one; a hold ends when no
        // Sentinel reports a failover any more.
        match failing_over {
            Some(old) => {
                if self.failover_hold.as_ref().is_none_or(|(a, _)| *a != old) {
                    tracing::info!(master = %old, "the Sentinels report a failover of this master under way: no writes to it");
                }
                let expires = Instant::now() + self.cfg.failover_hold() * 2;
                self.failover_hold = Some((old, expires));
            }
            None => {
                // A hold an event set a moment ago stands until a round
                // after it shows no failover: a Sentinel sets its flag as
                // it starts the failover, right after `+odown`.
                let settled = self.failover_hold.as_ref().is_some_and(|(_, expires)| {
                    *expires < Instant::now() + self.cfg.failover_hold() * 2 - HOLD_GRACE
                });
                if settled {
                    if let Some((old, _)) = self.failover_hold.take() {
                        tracing::info!(master = %old, "no Sentinel reports a failover any more");
                    }
                }
            }
        }
        let role = self.nodes.role(&candidate).await;
        self.master_checks += 1;
        match role {
            Ok(role) if role.is_master() => {}
            Ok(role) => {
                if self.master_pool.is_some() {
                    tracing::warn!(candidate = %candidate, role = role.name(), "the Sentinels' master says it is not a master; holding writes");
                }
                self.retire_master();
                self.check_replicas(None).await;
                return;
            }
            Err(e) => {
                if self
                    .master_pool
                    .as_ref()
                    .is_some_and(|p| p.addr == candidate)
                {
                    if is_busy(&e) {
                        // Busy with a script: it answers, and says BUSY to
                        // what it cannot run now, as it would directly.
                        self.master_answers_busy(&candidate);
                        self.check_replicas(Some(&candidate)).await;
                        return;
                    }
                    // Silent, not demoted: busy with a slow command, or
                    // frozen. Writes wait; what was sent there keeps
                    // waiting for its reply (the connections' watchdog,
                    // Sentinel and the next rounds decide its fate).
                    if !self.master_unresponsive {
                        tracing::warn!(master = %candidate, "the master does not answer ROLE ({}); holding writes", reason(&e));
                        self.master_unresponsive = true;
                    }
                    self.check_replicas(Some(&candidate)).await;
                } else {
                    if self.master_pool.is_some() {
                        tracing::warn!(candidate = %candidate, "the Sentinels name a new master that does not confirm it ({}); holding writes", reason(&e));
                    }
                    self.drop_master();
                    self.check_replicas(None).await;
                }
                return;
            }
        }
        self.master_unconfirmed = false;
        if self
            .master_pool
            .as_ref()
            .is_none_or(|p| p.addr != candidate || p.is_closed())
        {
            self.new_master(&candidate);
            // Tell the sessions now: held writes should not wait for
            // the replica checks (a paused old master costs their
            // whole timeout).
            self.republish();
        }
        self.refresh_commands(&candidate).await;
        match self.nodes.zone(&candidate).await {
            Ok(zone) => self.zones.reported(&candidate, zone.as_deref()),
            Err(e) => {
                tracing::debug!(master = %candidate, "HELLO for its zone failed: {}", reason(&e))
            }
        }
        self.sample_master(&candidate).await;
        self.check_replicas(Some(&candidate)).await;
    }

    /// The replicas the Sentinels that agree (all, when none agree) know,
    /// minus the ones any of them flags down.
    fn note_replicas(&mut self, answers: &Answers) {
        let candidate = answers.agreed_master();
        let mut replicas: Vec<String> = Vec::new();
        let mut flagged_down: HashSet<String> = HashSet::new();
        for v in answers
            .views
            .iter()
            .filter(|v| candidate.is_none() || v.master == candidate)
        {
            for r in &v.replicas {
                let Some(addr) = r.addr() else { continue };
                if r.has_flag("s_down") || r.has_flag("o_down") || r.has_flag("disconnected") {
                    flagged_down.insert(addr.clone());
                }
                if !replicas.contains(&addr) {
                    replicas.push(addr);
                }
            }
        }
        self.replicas_known = replicas
            .iter()
            .filter(|a| candidate.as_ref() != Some(*a))
            .count();
        replicas.retain(|a| !flagged_down.contains(a) && candidate.as_ref() != Some(a));
        self.known_replicas = replicas;
    }

    /// No master the Sentinels agree on: writes wait. The master's
    /// connections stay open — it is not known to be gone, only not
    /// confirmed — so what was sent there still gets its replies.
    async fn no_master(&mut self, answers: &Answers) {
        if answers.views.is_empty() {
            // `Sentinels::ask` logged why each did not answer.
        } else if !self.master_unconfirmed {
            tracing::warn!(
                answered = answers.views.len(),
                "the Sentinels that answer do not agree on a master; holding writes"
            );
        }
        self.master_unconfirmed = true;
        let master = self.master_pool.as_ref().map(|p| p.addr.clone());
        self.check_replicas(master.as_deref()).await;
    }

    fn new_master(&mut self, addr: &str) {
        self.retire_master();
        self.history.clear();
        self.sample = None;
        self.master_since = Instant::now();
        tracing::info!(master = %addr, "master confirmed");
        let spec = self.spec(addr, true);
        self.master_pool = Some(Arc::new(NodePool::new(spec, self.cfg.connections_per_node)));
        // The master may now be a node we used to read from.
        if let Some(p) = self.replica_pools.remove(addr) {
            p.close();
        }
        self.master_unresponsive = false;
    }

    /// Between full rounds: fresh offsets for lag and read-your-writes.
    async fn offsets_round(&mut self) {
        let Some(master) = self.master_pool.as_ref().map(|p| p.addr.clone()) else {
            return;
        };
        if self.master_unresponsive {
            // Full rounds (every poll interval, and on events) check it again.
            return;
        }
        self.sample_master(&master).await;
        if self.master_pool.is_some() {
            self.check_replicas(Some(&master)).await;
        }
    }

    /// Takes the master's offset sample. A master that no longer says
    /// master stops getting writes at once; one that does not answer has
    /// new writes held (in-flight ones are left to its connections' watchdog
    /// and to Sentinel), and the next full round looks again.
    async fn sample_master(&mut self, master: &str) {
        let sample = self.nodes.master_sample(master).await;
        self.master_checks += 1;
        match sample {
            Ok(sample) => {
                if self.master_unresponsive {
                    tracing::info!(%master, "the master answers again");
                    self.master_unresponsive = false;
                }
                self.history.record(&sample);
                self.sample = Some(sample);
            }
            Err(belay_client::ClientError::Unexpected { detail, .. }) => {
                tracing::warn!(%master, "{detail}; holding writes");
                self.retire_master();
                let _ = self.events_tx.send(Event::Suspect {
                    addr: master.to_string(),
                });
                self.republish();
            }
            Err(e) if is_busy(&e) => self.master_answers_busy(master),
            Err(e) => {
                if !self.master_unresponsive {
                    self.seen.failover_noticed(
                        master,
                        "the master does not answer",
                        &self.telemetry,
                    );
                    tracing::warn!(%master, "the master does not answer ({}); holding writes", reason(&e));
                    self.master_unresponsive = true;
                    self.republish();
                }
            }
        }
    }

    /// The confirmed master answers `BUSY` (a script or function runs):
    /// it is there, so writes are not held — Redis answers them `BUSY`, or
    /// runs those it may (`FUNCTION STATS`, the kills), as it would for a
    /// client of its own. Should Sentinel replace it meanwhile, the new
    /// master is confirmed with `ROLE` as always.
    fn master_answers_busy(&mut self, master: &str) {
        if self.master_unresponsive {
            tracing::info!(%master, "the master answers again (BUSY: a script or function runs)");
            self.master_unresponsive = false;
            self.republish();
        }
    }

    async fn refresh_commands(&mut self, master: &str) {
        // An empty table as the current one makes it read again.
        let current = match self.commands_stale {
            true => Arc::new(CommandTable::default()),
            false => self.commands.clone(),
        };
        match self
            .nodes
            .command_table(master, &current, &self.cfg.commands)
            .await
        {
            Ok(Some(table)) => {
                self.commands_stale = false;
                tracing::info!(commands = table.len(), server = %table.software, "command table loaded from the master");
                self.server = table.software.clone();
                self.commands = Arc::new(table);
            }
            Ok(None) => {}
            Err(e) => {
                if self.commands.is_empty() {
                    tracing::warn!("cannot read COMMAND from the master ({}); commands the gateway does not answer itself wait for it", reason(&e));
                }
            }
        }
    }

    /// Checks each known replica's own view, concurrently, and publishes.
    async fn check_replicas(&mut self, master: Option<&str>) {
        let addrs = self.known_replicas.clone();
        // A paused or cut-off replica must not hold up the whole round (and
        // with it the news of a new master): healthy ones answer in ms.
        let timeout = self.cfg.control_timeout().min(REPLICA_CHECK_BUDGET);
        let ask_zone = std::mem::take(&mut self.zones_due);
        let results = self.nodes.replicas_info(&addrs, timeout, ask_zone).await;
        let now = Instant::now();
        let mut out = Vec::new();
        for ReplicaAnswer {
            addr,
            info: result,
            zone,
        } in results
        {
            if let Some(zone) = zone {
                self.zones.reported(&addr, zone.as_deref());
            }
            let pool = self
                .replica_pools
                .entry(addr.clone())
                .or_insert_with(|| {
                    Arc::new(NodePool::new(
                        spec_for(&self.cfg, &self.gateway_auth, &addr, false),
                        self.cfg.connections_per_node,
                    ))
                })
                .clone();
            let node = replica_node(pool, &addr, &result, master.is_some(), |info| {
                judge_replica(
                    info,
                    master,
                    &self.history,
                    now,
                    self.cfg.max_replica_lag(),
                    self.master_unresponsive,
                )
            });
            out.push(node);
        }
        // Pools of nodes that left the replica set are closed.
        let current: HashSet<&String> = addrs.iter().collect();
        let nodes = &mut self.nodes;
        let zones = &mut self.zones;
        self.replica_pools.retain(|addr, pool| {
            let keep = current.contains(addr);
            if !keep {
                pool.close();
                nodes.forget(addr);
                zones.forget(addr);
            }
            keep
        });
        self.publish(out);
    }

    fn publish(&mut self, mut replicas: Vec<ReplicaNode>) {
        self.generation += 1;
        let (master, write_hold) = self.writable_master(&replicas);
        for r in &mut replicas {
            r.locality = self.locality_of(&r.pool.addr);
        }
        let own_zone = self.cfg.zone.as_deref();
        let read_tiers = read_tiers(&mut replicas, self.cfg.read_from, own_zone);
        let master_locality = self
            .master_pool
            .as_ref()
            .map(|m| self.locality_of(&m.addr))
            .unwrap_or_default();
        let mut topo = Topology {
            generation: self.generation,
            master_checks: self.master_checks,
            master,
            write_hold,
            read_master: self.master_pool.clone(),
            replicas,
            read_tiers,
            master_locality,
            zone: own_zone.map(Into::into),
            master_sample: self.sample.clone().filter(|_| self.master_pool.is_some()),
            commands: self.commands.clone(),
            server: self.server.clone(),
            sentinels: self.sentinel_status.clone(),
            followers: 0,
            shards: None,
        };
        topo.followers = match &topo.master_sample {
            Some(s) => topo
                .replicas
                .iter()
                .filter(|r| r.replid.as_deref() == Some(&*s.replid))
                .count(),
            None => topo.replicas.len(),
        };
        self.seen.report(&topo, &self.telemetry);
        self.tx.send_replace(Arc::new(topo));
    }

    fn locality_of(&self, addr: &str) -> Locality {
        Locality {
            zone: self.zones.zone_of(addr),
            rtt: self.nodes.rtt(addr),
        }
    }

    /// The master writes may go to now, or why they are held: no confirmed
    /// master, a master that does not answer, a failover under way, or the
    /// write guard.
    fn writable_master(
        &mut self,
        replicas: &[ReplicaNode],
    ) -> (Option<Arc<NodePool>>, Option<WriteHold>) {
        let Some(master) = self.master_pool.clone() else {
            return (None, Some(WriteHold::NoMaster));
        };
        if self.master_unconfirmed {
            return (None, Some(WriteHold::NoMaster));
        }
        if self.master_unresponsive {
            return (None, Some(WriteHold::MasterSilent));
        }
        if let Some((addr, expires)) = &self.failover_hold {
            if *addr == master.addr && Instant::now() < *expires {
                return (None, Some(WriteHold::FailoverInProgress));
            }
            self.failover_hold = None;
        }
        if self.guard.holds(
            &master.addr,
            self.master_since,
            Instant::now(),
            self.replicas_known,
            replicas.iter().map(|r| r.lag),
        ) {
            return (None, Some(WriteHold::WriteGuard));
        }
        (Some(master), None)
    }

    fn spec(&self, addr: &str, require_master: bool) -> ConnectSpec {
        spec_for(&self.cfg, &self.gateway_auth, addr, require_master)
    }

    /// One subscriber task per known Sentinel.
    fn ensure_subscriptions(&mut self) {
        for addr in &self.sentinels.addrs {
            if !self.subscribed.contains_key(addr) {
                let listener = tokio::spawn(events::subscribe_events(
                    addr.clone(),
                    self.sentinels.auth().clone(),
                    self.sentinels.tls().cloned(),
                    self.cfg.master_name.clone(),
                    self.events_tx.clone(),
                    self.telemetry.activity.clone(),
                ));
                self.subscribed.insert(addr.clone(), listener);
            }
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for listener in self.subscribed.values() {
            listener.abort();
        }
        self.drop_master();
        for p in self.replica_pools.values() {
            p.close();
        }
    }
}

pub(super) fn spec_for(
    cfg: &GatewayConfig,
    gateway_auth: &GatewayAuth,
    addr: &str,
    require_master: bool,
) -> ConnectSpec {
    ConnectSpec {
        addr: addr.to_string(),
        gateway_auth: gateway_auth.clone(),
        require_master,
        connect_timeout: cfg.control_timeout(),
        silence: Some(Silence {
            flag_after: cfg.request_timeout(),
            abandon_after: cfg.abandon_after(),
        }),
        health: Arc::new(NodeHealth::default()),
        load: None,
        cluster_replica: !require_master && !cfg.cluster.is_empty(),
    }
}
