//! Discovery: asks every Sentinel where the master and replicas are, checks
//! each node's own view (`ROLE`, `INFO replication`), listens to Sentinel
//! events, and publishes a new [`Topology`] whenever it learns something.
//!
//! The rules follow the Sentinel client contract: a master is trusted only
//! when a majority of the Sentinels that answer name it *and* it answers
//! `ROLE` as master; a replica serves reads only when no Sentinel flag says it
//! is down and it reports its link to that master up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::sentinel::{Entry, SentinelAuth, SentinelLogin};
use belay_client::{Auth, ClientError, Connection, Info, Role, Value};
use futures::future::join_all;
use tokio::sync::{mpsc, watch};

use crate::backend::ConnectSpec;
use crate::commands::CommandTable;
use crate::config::GatewayConfig;
use crate::pool::NodePool;
use crate::topology::{ReplicaNode, Topology};

/// Something that should make discovery look again, now.
#[derive(Debug, Clone)]
pub enum Event {
    /// A Sentinel announced a new master (`+switch-master`): stop writing to
    /// the old one at once.
    SwitchMaster { old_addr: String, new_addr: String },
    /// A Sentinel started a failover of this master (`+try-failover`), or
    /// the Sentinels agree it is down (`+odown`): hold writes now. Writes
    /// the old master acknowledges from here on would be lost when it is
    /// demoted.
    FailoverStarting { master_addr: String },
    /// The failover was called off (`-odown`, `-failover-abort-*`).
    FailoverCalledOff { master_addr: String },
    /// Any other Sentinel event about our master or its replicas.
    Changed,
    /// A session saw a sign the master changed (a `-READONLY` reply, a lost
    /// connection).
    Suspect { addr: String },
}

/// Sentinel channels worth waking up for.
const SENTINEL_CHANNELS: &[&str] = &[
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+convert-to-slave",
    "+slave",
    "+role-change",
    "-role-change",
    "+failover-end",
    "+try-failover",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "+failover-state-reconf-slaves",
    "+slave-reconf-done",
    "+sentinel",
    "+reboot",
];

/// Why the discovery loop woke.
enum Step {
    /// An urgent event (or `None`: the gateway is gone).
    Event(Option<Event>),
    RoundDone,
}

impl Event {
    /// Events that must be acted on at once, interrupting a round: a few
    /// per failover. (Sessions' suspicions can come by the thousand; they
    /// only ask for the next round.)
    fn is_urgent(&self) -> bool {
        matches!(
            self,
            Event::SwitchMaster { .. }
                | Event::FailoverStarting { .. }
                | Event::FailoverCalledOff { .. }
        )
    }
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

/// What one Sentinel said in one round.
struct SentinelView {
    master: Option<String>,
    replicas: Vec<Entry>,
    sentinels: Vec<Entry>,
}

/// The discovery task's state. Only this task writes the topology.
pub struct Discovery {
    cfg: Arc<GatewayConfig>,
    sentinels: Vec<String>,
    subscribed: HashSet<String>,
    sentinel_conns: HashMap<String, Connection>,
    node_conns: HashMap<String, Connection>,
    master_pool: Option<Arc<NodePool>>,
    replica_pools: HashMap<String, Arc<NodePool>>,
    commands: Arc<CommandTable>,
    server_version: String,
    generation: u64,
    /// Replicas from the last full round, minus those a Sentinel flags down.
    known_replicas: Vec<String>,
    /// A failover of this master (addr) is under way until this instant.
    failover_hold: Option<(String, Instant)>,
    /// When the current master was confirmed.
    master_since: Instant,
    /// The master did not answer the last offset sample: writes are held.
    master_unresponsive: bool,
    /// Masters replaced by a `+switch-master`, and when: never trusted
    /// again for `DEMOTED_MEMORY`.
    demoted: HashMap<String, Instant>,
    /// Replicas the Sentinels know, up or down (the write guard's scale).
    replicas_known: usize,
    /// The master whose replicas have been seen in sync (the guard applies
    /// to it from then on).
    guard_armed_for: Option<String>,
    /// Whether the write guard currently holds writes (for logging changes).
    write_guard_tripped: bool,
    /// Recent (time, master replication offset) samples, oldest first.
    master_offsets: VecDeque<(Instant, i64)>,
    tx: watch::Sender<Arc<Topology>>,
    events_tx: mpsc::UnboundedSender<Event>,
    /// Taken by `run`.
    events: Option<mpsc::UnboundedReceiver<Event>>,
}

/// How often replication offsets are sampled between full rounds.
const OFFSET_INTERVAL: Duration = Duration::from_millis(100);

/// How long a master replaced by `+switch-master` stays untrusted: well past
/// the time every Sentinel needs to learn of the switch.
const DEMOTED_MEMORY: Duration = Duration::from_secs(60);

/// The write guard arms only after a master has been confirmed this long.
const GUARD_ARM_DELAY: Duration = Duration::from_secs(2);

/// Full rounds asked for by events are at least this far apart.
const MIN_ROUND_GAP: Duration = Duration::from_millis(50);

/// Longest wait for one replica's INFO in a round.
const REPLICA_CHECK_BUDGET: Duration = Duration::from_millis(500);

/// How much master offset history is kept for replica lag estimates.
const LAG_HISTORY: Duration = Duration::from_secs(30);

impl Discovery {
    pub fn new(
        cfg: Arc<GatewayConfig>,
    ) -> (
        Discovery,
        watch::Receiver<Arc<Topology>>,
        mpsc::UnboundedSender<Event>,
    ) {
        let commands = Arc::new(CommandTable::default());
        let (tx, rx) = watch::channel(Arc::new(Topology::empty(commands.clone())));
        let (events_tx, events) = mpsc::unbounded_channel();
        let d = Discovery {
            sentinels: cfg.sentinels.clone(),
            cfg,
            subscribed: HashSet::new(),
            sentinel_conns: HashMap::new(),
            node_conns: HashMap::new(),
            master_pool: None,
            replica_pools: HashMap::new(),
            commands,
            server_version: String::new(),
            generation: 0,
            known_replicas: Vec::new(),
            master_offsets: VecDeque::new(),
            failover_hold: None,
            demoted: HashMap::new(),
            master_unresponsive: false,
            master_since: Instant::now(),
            replicas_known: 0,
            write_guard_tripped: false,
            guard_armed_for: None,
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

    async fn round(&mut self, full: bool) {
        if full {
            self.full_round().await
        } else {
            self.offsets_round().await
        }
    }

    fn handle_event(&mut self, ev: Event) {
        tracing::debug!(?ev, "discovery event");
        match ev {
            Event::SwitchMaster { old_addr, new_addr } => {
                self.failover_hold = None;
                // The old master is demoted for good (a new epoch won): even
                // if Sentinels that have not heard yet still name it, and it
                // still answers ROLE master, it gets no more writes.
                self.demoted.retain(|_, at| at.elapsed() < DEMOTED_MEMORY);
                self.demoted.remove(&new_addr);
                self.demoted.insert(old_addr, Instant::now());
                if self
                    .master_pool
                    .as_ref()
                    .is_some_and(|p| p.addr != new_addr)
                {
                    tracing::info!(new_master = %new_addr, "+switch-master: no more writes to the old master");
                    self.drop_master();
                    // Replicas keep serving reads while the new master is confirmed.
                    let replicas = self.tx.borrow().replicas.clone();
                    self.publish(0, replicas);
                }
            }
            Event::FailoverStarting { master_addr } => {
                if self
                    .master_pool
                    .as_ref()
                    .is_some_and(|p| p.addr == master_addr)
                {
                    if self.failover_hold.is_none() {
                        tracing::info!(master = %master_addr, "a failover of the master started: holding writes");
                    }
                    // Expires on its own in case the end of the failover is missed.
                    let expires = Instant::now() + self.cfg.failover_hold() * 2;
                    self.failover_hold = Some((master_addr, expires));
                    let replicas = self.tx.borrow().replicas.clone();
                    let offset = self.tx.borrow().master_offset;
                    self.publish(offset, replicas);
                }
            }
            Event::FailoverCalledOff { master_addr } => {
                if self
                    .failover_hold
                    .as_ref()
                    .is_some_and(|(a, _)| *a == master_addr)
                {
                    tracing::info!(master = %master_addr, "the failover was called off: writes resume");
                    self.failover_hold = None;
                }
            }
            Event::Changed => {}
            Event::Suspect { addr } => {
                tracing::info!(%addr, "a session saw signs that the master changed");
            }
        }
    }

    fn drop_master(&mut self) {
        if let Some(old) = self.master_pool.take() {
            old.close();
        }
    }

    /// Asks every Sentinel, confirms the master with ROLE, checks replicas.
    async fn full_round(&mut self) {
        let started = Instant::now();
        let views = self.ask_sentinels().await;
        let answered = views.len();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for v in &views {
            if let Some(m) = &v.master {
                *votes.entry(m.as_str()).or_default() += 1;
            }
        }
        let candidate = votes
            .iter()
            .find(|(_, n)| **n * 2 > answered)
            .map(|(addr, _)| addr.to_string());
        // Learn Sentinels added later.
        for v in &views {
            for s in &v.sentinels {
                if let Some(addr) = s.addr() {
                    if !self.sentinels.contains(&addr)
                        && !s.has_flag("s_down")
                        && !s.has_flag("o_down")
                    {
                        tracing::info!(sentinel = %addr, "learned a new Sentinel");
                        self.sentinels.push(addr);
                    }
                }
            }
        }
        // Replicas: from the Sentinels that agree (all of them when none
        // agree), minus the ones any of them flags down.
        let mut replicas: Vec<String> = Vec::new();
        let mut flagged_down: HashSet<String> = HashSet::new();
        for v in views
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

        let candidate = candidate.filter(|c| {
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
            if answered == 0 {
                tracing::warn!(sentinels = ?self.sentinels, "no Sentinel answered");
            } else {
                tracing::warn!(
                    answered,
                    "the Sentinels that answer do not agree on a master"
                );
            }
            self.drop_master();
            let replicas = self.check_replicas(None).await;
            self.publish(0, replicas);
            return;
        };

        match self.confirm_master(&candidate).await {
            Some(offset) => {
                if self
                    .master_pool
                    .as_ref()
                    .is_none_or(|p| p.addr != candidate || p.is_closed())
                {
                    self.drop_master();
                    self.master_offsets.clear();
                    self.master_since = Instant::now();
                    tracing::info!(master = %candidate, "master confirmed");
                    let spec = self.spec(&candidate, true);
                    self.master_pool =
                        Some(Arc::new(NodePool::new(spec, self.cfg.connections_per_node)));
                    // The master may now be a node we used to read from.
                    if let Some(p) = self.replica_pools.remove(&candidate) {
                        p.close();
                    }
                    self.master_unresponsive = false;
                    // Tell the sessions now: held writes should not wait for
                    // the replica checks (a paused old master costs their
                    // whole timeout).
                    self.record_master_offset(started, offset);
                    let replicas = self.tx.borrow().replicas.clone();
                    self.publish_with(offset, started, replicas);
                }
                self.master_unresponsive = false;
                self.refresh_commands(&candidate).await;
                self.record_master_offset(started, offset);
                let replicas = self.check_replicas(Some(&candidate)).await;
                self.publish_with(offset, started, replicas);
            }
            None => {
                if self.master_pool.is_some() {
                    tracing::warn!(candidate = %candidate, "the Sentinels' master does not confirm it is master; holding writes");
                }
                self.drop_master();
                let replicas = self.check_replicas(None).await;
                self.publish(0, replicas);
            }
        }
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
        let started = Instant::now();
        let offset = match self.node_info(&master).await {
            Ok(info) if info.get("role") == Some("master") => {
                info.get_i64("master_repl_offset").unwrap_or(0)
            }
            Ok(_) => {
                // The node no longer says master: stop writing to it now.
                tracing::warn!(%master, "the master reports another role; holding writes");
                self.drop_master();
                let replicas = self.check_replicas(None).await;
                self.publish(0, replicas);
                let _ = self.events_tx.send(Event::Suspect { addr: master });
                return;
            }
            Err(e) => {
                // Silent for the control timeout: paused, cut off or dying.
                // Hold new writes rather than queue them behind it; in-flight
                // ones are left to the connection watchdog, and the next
                // full round confirms the master again or replaces it.
                if !self.master_unresponsive {
                    tracing::warn!(%master, error = %e, "the master does not answer; holding writes");
                    self.master_unresponsive = true;
                    let replicas = self.tx.borrow().replicas.clone();
                    let offset = self.tx.borrow().master_offset;
                    self.publish(offset, replicas);
                }
                return;
            }
        };
        if self.master_unresponsive {
            tracing::info!(%master, "the master answers again");
            self.master_unresponsive = false;
        }
        self.record_master_offset(started, offset);
        let replicas = self.check_replicas(Some(&master)).await;
        self.publish_with(offset, started, replicas);
    }

    /// `ROLE` must say master; returns the master's replication offset.
    async fn confirm_master(&mut self, addr: &str) -> Option<i64> {
        let cached = self.node_conns.contains_key(addr);
        let mut conn = self.node_conn(addr).await.ok()?;
        let mut role = conn.role().await;
        if cached && role.as_ref().is_err_and(was_dropped) {
            // Sentinel kills client connections of a node it promotes
            // (CLIENT KILL TYPE normal): ask again on a fresh connection.
            conn = Connection::connect(
                addr,
                self.cfg.node_auth().as_ref(),
                self.cfg.control_timeout(),
            )
            .await
            .ok()?;
            role = conn.role().await;
        }
        match role {
            Ok(Role::Master { offset, .. }) => {
                self.node_conns.insert(addr.to_string(), conn);
                Some(offset)
            }
            Ok(other) => {
                self.node_conns.insert(addr.to_string(), conn);
                tracing::debug!(%addr, role = other.name(), "candidate master is not a master");
                None
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "candidate master did not answer ROLE");
                None
            }
        }
    }

    async fn refresh_commands(&mut self, master: &str) {
        let Ok(mut conn) = self.node_conn(master).await else {
            return;
        };
        let version = match conn.info("server").await {
            Ok(info) => info.get("redis_version").unwrap_or("").to_string(),
            Err(_) => return,
        };
        self.server_version = version.clone();
        if !self.commands.is_empty() && self.commands.version == version {
            self.node_conns.insert(master.to_string(), conn);
            return;
        }
        match conn.call_ok(&["COMMAND"]).await {
            Ok(reply) => {
                let table = CommandTable::from_command_reply(
                    &reply,
                    version.clone(),
                    self.cfg.commands.clone(),
                );
                tracing::info!(commands = table.len(), %version, "command table loaded from the master");
                self.commands = Arc::new(table);
                self.node_conns.insert(master.to_string(), conn);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read COMMAND from the master; routing unknown commands to the master")
            }
        }
    }

    /// Remembers that the master had `offset` at `at`, for lag estimates.
    fn record_master_offset(&mut self, at: Instant, offset: i64) {
        if self
            .master_offsets
            .back()
            .is_some_and(|&(_, o)| o == offset)
        {
            // No new writes: the newest sample with this offset stays, so a
            // replica that has it counts as current.
            self.master_offsets.pop_back();
        }
        self.master_offsets.push_back((at, offset));
        while self.master_offsets.len() > 1
            && self
                .master_offsets
                .front()
                .is_some_and(|(t, _)| t.elapsed() > LAG_HISTORY)
        {
            self.master_offsets.pop_front();
        }
    }

    /// How far behind a replica at `offset` is, in time: the age of the
    /// newest master sample the replica has reached. `None` when it has not
    /// reached any sample we still remember.
    fn lag_of(&self, offset: i64) -> Option<Duration> {
        let latest = self.master_offsets.back()?;
        if offset >= latest.1 {
            return Some(Duration::ZERO);
        }
        self.master_offsets
            .iter()
            .rev()
            .find(|(_, o)| *o <= offset)
            .map(|(t, _)| t.elapsed())
    }

    /// Checks each known replica's own view, concurrently. With a confirmed
    /// master a replica must be linked to it and within the lag bound; with
    /// none (a failover in progress) every replica that answers and that no
    /// Sentinel flags down keeps serving reads: there is nothing newer to
    /// read anywhere.
    async fn check_replicas(&mut self, master: Option<&str>) -> Vec<ReplicaNode> {
        let addrs = self.known_replicas.clone();
        let auth = self.cfg.node_auth();
        // A paused or cut-off replica must not hold up the whole round (and
        // with it the news of a new master): healthy ones answer in ms.
        let timeout = self.cfg.control_timeout().min(REPLICA_CHECK_BUDGET);
        let jobs = addrs.iter().map(|addr| {
            let conn = self.node_conns.remove(addr);
            let auth = auth.clone();
            async move {
                let result = info_with(addr, conn, auth.as_ref(), timeout).await;
                (addr.clone(), result)
            }
        });
        let results = join_all(jobs).await;
        let mut out = Vec::new();
        for (addr, result) in results {
            let (eligible, offset, lag) = match result {
                Ok((conn, info)) => {
                    self.node_conns.insert(addr.clone(), conn);
                    let offset = info.get_i64("slave_repl_offset").unwrap_or(0);
                    let is_replica = info.get("role") == Some("slave")
                        && info.get("master_sync_in_progress") != Some("1");
                    match master {
                        Some(master) => {
                            let linked_to = format!(
                                "{}:{}",
                                info.get("master_host").unwrap_or(""),
                                info.get("master_port").unwrap_or("")
                            );
                            let linked = is_replica
                                && same_node(&linked_to, master)
                                && info.get("master_link_status") == Some("up");
                            // Lag means something only for a replica of this
                            // master: one still following another (Sentinel
                            // has yet to reconfigure it) has none, so it
                            // neither serves reads nor counts for the write guard.
                            let lag = if linked { self.lag_of(offset) } else { None };
                            let ok = linked && lag.is_some_and(|l| l <= self.cfg.max_replica_lag());
                            if !ok && is_replica {
                                tracing::debug!(%addr, ?lag, link = info.get("master_link_status"), "replica not eligible for reads");
                            }
                            (ok, offset, lag)
                        }
                        None => (is_replica, offset, None),
                    }
                }
                Err(_) => (false, 0, None),
            };
            let pool = self
                .replica_pools
                .entry(addr.clone())
                .or_insert_with(|| {
                    Arc::new(NodePool::new(
                        spec_for(&self.cfg, &addr, false),
                        self.cfg.connections_per_node,
                    ))
                })
                .clone();
            out.push(ReplicaNode {
                pool,
                offset,
                lag,
                eligible,
            });
        }
        // Pools of nodes that left the replica set are closed.
        let current: HashSet<&String> = addrs.iter().collect();
        self.replica_pools.retain(|addr, pool| {
            let keep = current.contains(addr);
            if !keep {
                pool.close();
            }
            keep
        });
        out
    }

    fn publish(&mut self, master_offset: i64, replicas: Vec<ReplicaNode>) {
        self.publish_with(master_offset, Instant::now(), replicas)
    }

    fn publish_with(
        &mut self,
        master_offset: i64,
        sampled_at: Instant,
        replicas: Vec<ReplicaNode>,
    ) {
        self.generation += 1;
        let master = self.writable_master(&replicas);
        let topo = Topology {
            generation: self.generation,
            master,
            read_master: self.master_pool.clone(),
            replicas,
            master_offset,
            sampled_at,
            commands: self.commands.clone(),
            server_version: self.server_version.clone(),
        };
        self.tx.send_replace(Arc::new(topo));
    }

    /// The master writes may go to now: the confirmed master, unless a
    /// failover of it is under way, or none of its replicas has caught up
    /// with it within the lag bound (then it may be cut off from them, and
    /// writes it acknowledges could be lost: like `min-replicas-to-write`,
    /// measured by the gateway in milliseconds).
    fn writable_master(&mut self, replicas: &[ReplicaNode]) -> Option<Arc<NodePool>> {
        let master = self.master_pool.clone()?;
        if self.master_unresponsive {
            return None;
        }
        if let Some((addr, expires)) = &self.failover_hold {
            if *addr == master.addr && Instant::now() < *expires {
                return None;
            }
            self.failover_hold = None;
        }
        let wanted = self.cfg.min_synced_replicas.min(self.replicas_known);
        if wanted > 0 {
            let bound = self.cfg.write_guard_lag();
            let synced = replicas
                .iter()
                .filter(|r| r.lag.is_some_and(|l| l <= bound))
                .count();
            if synced >= wanted && self.master_since.elapsed() >= GUARD_ARM_DELAY {
                // Armed once this master has settled with its replicas in
                // sync: a brand-new master whose replicas Sentinel is still
                // reconfiguring (links dropping and re-syncing) is not held up.
                self.guard_armed_for = Some(master.addr.clone());
            }
            let armed = self.guard_armed_for.as_deref() == Some(master.addr.as_str());
            let unsynced = armed && synced < wanted;
            if unsynced != self.write_guard_tripped {
                self.write_guard_tripped = unsynced;
                if unsynced {
                    tracing::warn!(master = %master.addr, synced, wanted, "too few replicas have caught up with the master: holding writes");
                } else {
                    tracing::info!(master = %master.addr, synced, "the write guard releases: writes resume");
                }
            }
            if unsynced {
                return None;
            }
        }
        Some(master)
    }

    async fn ask_sentinels(&mut self) -> Vec<SentinelView> {
        let name = self.cfg.master_name.clone();
        let auth = self.cfg.sentinel_auth();
        let timeout = self.cfg.control_timeout();
        let jobs = self.sentinels.clone().into_iter().map(|addr| {
            let conn = self.sentinel_conns.remove(&addr);
            let (name, auth) = (name.clone(), auth.clone());
            async move {
                let r = ask_sentinel(&addr, conn, &auth, timeout, &name).await;
                (addr, r)
            }
        });
        let mut views = Vec::new();
        for (addr, r) in join_all(jobs).await {
            match r {
                Ok((conn, view)) => {
                    self.sentinel_conns.insert(addr, conn);
                    views.push(view);
                }
                Err(e) => tracing::debug!(sentinel = %addr, error = %e, "Sentinel did not answer"),
            }
        }
        views
    }

    async fn node_conn(&mut self, addr: &str) -> Result<Connection, ClientError> {
        match self.node_conns.remove(addr) {
            Some(c) => Ok(c),
            None => {
                Connection::connect(
                    addr,
                    self.cfg.node_auth().as_ref(),
                    self.cfg.control_timeout(),
                )
                .await
            }
        }
    }

    async fn node_info(&mut self, addr: &str) -> Result<Info, ClientError> {
        let conn = self.node_conns.remove(addr);
        let auth = self.cfg.node_auth();
        let (conn, info) = info_with(addr, conn, auth.as_ref(), self.cfg.control_timeout()).await?;
        self.node_conns.insert(addr.to_string(), conn);
        Ok(info)
    }

    fn spec(&self, addr: &str, require_master: bool) -> ConnectSpec {
        spec_for(&self.cfg, addr, require_master)
    }

    /// One subscriber task per known Sentinel.
    fn ensure_subscriptions(&mut self) {
        for addr in &self.sentinels {
            if self.subscribed.insert(addr.clone()) {
                tokio::spawn(subscribe_events(
                    addr.clone(),
                    self.cfg.sentinel_auth(),
                    self.cfg.master_name.clone(),
                    self.events_tx.clone(),
                ));
            }
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.drop_master();
        for p in self.replica_pools.values() {
            p.close();
        }
    }
}

fn spec_for(cfg: &GatewayConfig, addr: &str, require_master: bool) -> ConnectSpec {
    ConnectSpec {
        addr: addr.to_string(),
        auth: cfg.node_auth(),
        init: Vec::new(),
        require_master,
        connect_timeout: cfg.control_timeout(),
        request_timeout: Some(cfg.request_timeout()),
        load: None,
    }
}

/// `127.0.0.1:6379` and `localhost:6379` name the same node only if spelled
/// the same; Sentinel and the replica both report what the replica was told,
/// so a plain comparison is right here.
fn same_node(a: &str, b: &str) -> bool {
    a == b
}

async fn info_with(
    addr: &str,
    conn: Option<Connection>,
    auth: Option<&Auth>,
    timeout: Duration,
) -> Result<(Connection, Info), ClientError> {
    if let Some(mut conn) = conn {
        conn.set_timeout(timeout);
        match conn.info("replication").await {
            Ok(info) => return Ok((conn, info)),
            // Killed by a reconfiguration (CLIENT KILL): try a fresh one.
            Err(e) if was_dropped(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let mut conn = Connection::connect(addr, auth, timeout).await?;
    let info = conn.info("replication").await?;
    Ok((conn, info))
}

/// The connection was closed or reset under us (not a timeout, not a refusal).
fn was_dropped(e: &ClientError) -> bool {
    matches!(e, ClientError::Closed { .. } | ClientError::Io { .. })
}

async fn ask_sentinel(
    addr: &str,
    conn: Option<Connection>,
    auth: &SentinelAuth,
    timeout: Duration,
    name: &str,
) -> Result<(Connection, SentinelView), ClientError> {
    let mut conn = match conn {
        Some(c) => c,
        None => {
            let (conn, login) = Connection::connect_sentinel(addr, auth, timeout).await?;
            if login == SentinelLogin::WithoutPassword {
                tracing::debug!(sentinel = %addr, "the Sentinel has no password configured; going on without AUTH");
            }
            conn
        }
    };
    let master = conn
        .sentinel_master_addr(name)
        .await?
        .map(|(h, p)| format!("{h}:{p}"));
    let replicas = conn.sentinel_replicas(name).await.unwrap_or_default();
    let sentinels = conn.sentinel_sentinels(name).await.unwrap_or_default();
    Ok((
        conn,
        SentinelView {
            master,
            replicas,
            sentinels,
        },
    ))
}

/// Listens to one Sentinel's event channels forever, reconnecting with
/// backoff, and turns messages about our master into [`Event`]s.
async fn subscribe_events(
    addr: String,
    auth: SentinelAuth,
    master_name: String,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if events.is_closed() {
            return;
        }
        match listen_once(&addr, &auth, &master_name, &events).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(sentinel = %addr, error = %e, "Sentinel event subscription dropped; retrying")
            }
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    addr: &str,
    auth: &SentinelAuth,
    master_name: &str,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), ClientError> {
    let (mut conn, _) = Connection::connect_sentinel(addr, auth, Duration::from_secs(2)).await?;
    let mut cmd = vec!["SUBSCRIBE"];
    cmd.extend_from_slice(SENTINEL_CHANNELS);
    conn.send(&cmd).await?;
    loop {
        let msg = conn.read_value_unbounded().await?;
        let Some(parts) = msg.as_array() else {
            continue;
        };
        if parts.first().and_then(Value::as_str) != Some("message") {
            continue;
        }
        let channel = parts.get(1).and_then(Value::to_text).unwrap_or_default();
        let payload = parts.get(2).and_then(Value::to_text).unwrap_or_default();
        let words: Vec<&str> = payload.split_whitespace().collect();
        if !words.contains(&master_name) {
            continue;
        }
        tracing::debug!(sentinel = %addr, %channel, %payload, "Sentinel event");
        let ev = match channel.as_str() {
            // +switch-master <name> <old ip> <old port> <new ip> <new port>
            "+switch-master" if words.len() >= 5 => Event::SwitchMaster {
                old_addr: format!("{}:{}", words[1], words[2]),
                new_addr: format!("{}:{}", words[3], words[4]),
            },
            // <event> master <name> <ip> <port> ...
            "+odown" | "+try-failover" if words.first() == Some(&"master") && words.len() >= 4 => {
                Event::FailoverStarting {
                    master_addr: format!("{}:{}", words[2], words[3]),
                }
            }
            "-odown"
            | "-failover-abort-not-elected"
            | "-failover-abort-no-good-slave"
            | "-failover-abort-slave-timeout"
                if words.first() == Some(&"master") && words.len() >= 4 =>
            {
                Event::FailoverCalledOff {
                    master_addr: format!("{}:{}", words[2], words[3]),
                }
            }
            _ => Event::Changed,
        };
        if events.send(ev).is_err() {
            return Ok(());
        }
    }
}
