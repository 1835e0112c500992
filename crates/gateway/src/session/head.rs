//! The head of the reply queue: replies written in order, a batch's replies
//! judged (delivered, or a command sent again where that is safe), and
//! what waited for its turn handled there — a command held through a
//! failover, a request that needs everything before it answered, the
//! switch into subscribed mode.

use std::sync::Arc;
use std::time::Duration;

use belay_resp::{frame_len, Limits};
use bytes::Bytes;
use smallvec::SmallVec;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::builtin::mask_config_secrets;
use super::dispatch::{Choice, Route};
use super::input::{Handled, Later};
use super::job::{Job, Rewrite, Waiting};
use super::queue::Slot;
use super::retry::{self, OnFailure, OnReply};
use super::state::{Lane, TxBroken};
use super::subscribed::{self, Pipe};
use super::{End, Session};
use crate::backend::{Confirm, NodePool, Replication, ReplyResult};
use crate::discovery::Event;
use crate::error::{BackendError, LostWhy};
use crate::metrics::ErrorKind;
use crate::reply;
use crate::router::Fence;

impl Session {
    /// Writes out every ready reply at the head and handles what waits for
    /// its turn there. Returns true when the session must end.
    pub(super) async fn settle_head(&mut self) -> Result<bool, End> {
        loop {
            match self.queue.front() {
                None => return Ok(false),
                Some(Slot::Sent { .. }) => {
                    // Collect replies that are already there without waiting.
                    match self.queue.head_receiver().map(|rx| rx.try_recv()) {
                        Some(Ok(r)) => self.resolve_head(Some(r)),
                        Some(Err(oneshot::error::TryRecvError::Closed)) => self.resolve_head(None),
                        _ => return Ok(false),
                    }
                }
                Some(Slot::Ready(_)) => {
                    if let Some(Slot::Ready(b)) = self.queue.pop_front() {
                        self.io.push(&b);
                    }
                }
                Some(Slot::Close) => {
                    Box::pin(self.io.flush(self.write_timeout())).await?;
                    return Ok(true);
                }
                Some(Slot::Queued(_)) => {
                    let Some(Slot::Queued(req)) = self.queue.pop_front() else {
                        unreachable!()
                    };
                    if self.topology().commands.is_empty() {
                        Box::pin(self.wait_for_command_table()).await;
                    }
                    self.at_head = true;
                    let handled = self.handle(req);
                    self.at_head = false;
                    let slot = match handled {
                        // Still no table: the command cannot be classified.
                        Handled::Slot(Slot::Queued(_)) => Slot::Ready(reply::error(&format!(
                            "TRYAGAIN belay: the gateway has not read the master's command table yet ({}); the command was not run",
                            self.topology().write_hold.map_or("no master answered COMMAND", |h| h.describe())
                        ))),
                        Handled::Slot(Slot::Held(job)) => Box::pin(self.dispatch_held(job)).await,
                        Handled::Slot(slot) => slot,
                        Handled::Staged => self.send_at_head(),
                        Handled::Quit => {
                            self.queue.push_front(Slot::Close);
                            Slot::Ready(reply::ok())
                        }
                        Handled::Later(later) => match Box::pin(self.later(later)).await {
                            Slot::Held(job) => Box::pin(self.dispatch_held(job)).await,
                            slot => slot,
                        },
                    };
                    self.queue.push_front(slot);
                }
                Some(Slot::Held(_)) => {
                    // The run of held commands at the head (a batch that
                    // failed before it was sent becomes one): the first
                    // waits for somewhere to go, the rest follow it there
                    // at once, in order, as one batch where they can.
                    let mut run = Vec::new();
                    while let Some(Slot::Held(_)) = self.queue.front() {
                        let Some(Slot::Held(job)) = self.queue.pop_front() else {
                            unreachable!()
                        };
                        run.push(job);
                    }
                    // Let the client see everything before this while it waits.
                    Box::pin(self.io.flush(self.write_timeout())).await?;
                    let later = self.queue.take_all();
                    let mut run = run.into_iter();
                    let first = run.next().expect("a held command");
                    let slot = Box::pin(self.dispatch_held(first)).await;
                    self.queue.push_back(slot);
                    let topo = self.topology().clone();
                    while let Some(job) = run.next() {
                        match self.route_job(job, &topo) {
                            Handled::Staged => {}
                            Handled::Slot(Slot::Held(job)) => {
                                // Not now after all: it and the rest wait.
                                self.push(Slot::Held(job));
                                run.by_ref().for_each(|job| self.push(Slot::Held(job)));
                            }
                            Handled::Slot(slot) => self.push(slot),
                            Handled::Later(Later::OwnConn { job, .. }) => {
                                self.push(Slot::Held(job));
                                run.by_ref().for_each(|job| self.push(Slot::Held(job)));
                            }
                            Handled::Later(_) | Handled::Quit => {
                                unreachable!("a routed command needs nothing else")
                            }
                        }
                    }
                    self.send_batch();
                    self.queue.append(later);
                }
                Some(Slot::Subscribe(_)) => {
                    let Some(Slot::Subscribe(req)) = self.queue.pop_front() else {
                        unreachable!()
                    };
                    Box::pin(self.io.flush(self.write_timeout())).await?;
                    let sharded = req
                        .name()
                        .is_some_and(|n| n.eq_ignore_ascii_case(b"ssubscribe"));
                    let slot = match (sharded, req.arg(1)) {
                        (true, Some(channel)) if self.topology().shards.is_some() => {
                            Some(crate::cluster::key_slot(channel))
                        }
                        _ => None,
                    };
                    // Shard channels of several slots: Redis's CROSSSLOT,
                    // and the session is not subscribed to anything.
                    if let Some(first) = slot {
                        let crosses = (2..req.argc())
                            .filter_map(|i| req.arg(i))
                            .any(|c| crate::cluster::key_slot(c) != first);
                        if crosses {
                            self.queue.resume_reading();
                            self.queue
                                .push_front(Slot::Ready(reply::error(crate::cluster::CROSSSLOT)));
                            if !self.io.inbuf.is_empty() {
                                Box::pin(self.parse_input()).await;
                            }
                            continue;
                        }
                    }
                    let pipe = Pipe {
                        slot,
                        io: &mut self.io,
                        ctx: &self.st.ctx,
                        cfg: &self.cfg,
                        topology: self.shared.topology.clone(),
                        id: self.id,
                        drain: &self.drain,
                        linger: super::DRAIN_LINGER,
                    };
                    match Box::pin(pipe.run(req)).await? {
                        subscribed::End::Closed => return Ok(true),
                        subscribed::End::Unsubscribed { then } => {
                            // A normal session again, with what the client sent meanwhile.
                            self.queue.resume_reading();
                            if let Some(req) = then {
                                let handled = self.handle(req);
                                Box::pin(self.place(handled)).await;
                            }
                            if !self.io.inbuf.is_empty() {
                                Box::pin(self.parse_input()).await;
                            }
                        }
                    }
                }
            }
        }
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.client_write_timeout_secs.max(1))
    }

    /// At the head, a staged command is sent at once (as a batch of one).
    fn send_at_head(&mut self) -> Slot {
        self.batch
            .send(&self.io.budget)
            .expect("a command was just staged")
    }

    /// Waits (up to the failover hold) for discovery to load the master's
    /// command table.
    async fn wait_for_command_table(&mut self) {
        let deadline = Instant::now() + self.cfg.failover_hold();
        let mut rx = self.shared.topology.clone();
        while self.topology().commands.is_empty() && Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        }
    }

    /// Sends a command that waited, once it can be: a master is confirmed,
    /// a replica can serve it, its shared connection is up. Gives up after
    /// the failover hold, counted from when it first waited.
    pub(super) async fn dispatch_held(&mut self, mut job: Job) -> Slot {
        let _waiting = crate::metrics::Waiting::new(&self.shared.metrics);
        let deadline = job.held_since(Instant::now()) + self.cfg.failover_hold();
        if let Some(target) = job.retry.as_mut().and_then(|r| r.ask.take()) {
            match Box::pin(self.send_asking(&job, &target)).await {
                Some(reply) => return Slot::Ready(reply),
                // Not run there (the migration ended meanwhile): sent again
                // where the slot map says, once discovery looked.
                None => {
                    let checks = self.topology().master_checks;
                    job.retry_mut().after_check = checks;
                }
            }
        }
        let mut topo_rx = self.shared.topology.clone();
        loop {
            topo_rx.borrow_and_update();
            let topo = self.topology().clone();
            if self.connect_for(&job, &topo).await {
                let handled = self.route_job(job, &topo);
                job = match handled {
                    Handled::Staged => return self.send_at_head(),
                    Handled::Slot(Slot::Held(job)) => job,
                    Handled::Slot(slot) => return slot,
                    Handled::Later(later) => match Box::pin(self.later(later)).await {
                        Slot::Held(job) => job,
                        slot => return slot,
                    },
                    Handled::Quit => unreachable!("a routed command is no QUIT"),
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return self.hold_expired(job);
            }
            // Wake on the next topology, or soon anyway (connect backoff).
            let wait = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(wait, topo_rx.changed()).await;
        }
    }

    /// Connects the shared connection `job` would go on, if it is down.
    /// False when that failed (the job waits and tries again).
    async fn connect_for(&mut self, job: &Job, topo: &Arc<crate::topology::Topology>) -> bool {
        let cfg = &self.cfg;
        let in_cluster = topo.shards.is_some();
        let shards = topo.shards.as_deref();
        let Some(topo) = self.group_of(job, topo) else {
            return true;
        };
        let route = Choice {
            st: &self.st,
            read_from: cfg.read_from,
            read_your_writes: cfg.read_your_writes,
            batch_replica: None,
            turn: self.shared.reads_turn(),
            cluster: in_cluster,
            shards,
        }
        .route(job, topo);
        let (pool, slot) = match route {
            Route::Replica(pool) => (pool.clone(), self.slot()),
            Route::Master {
                pool,
                lane: lane @ Lane::Shared(_),
            } => (
                pool.clone(),
                self.master_slot(pool, &lane, job, self.slot()),
            ),
            _ => return true,
        };
        if pool.shared_is_up(&job.ctx, slot) {
            return true;
        }
        match Box::pin(pool.connect_shared(&job.ctx, slot)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(session = self.id, error = %e, "connection unavailable; the command waits");
                false
            }
        }
    }

    /// The failover hold ran out for `job`: its last refusal, or TRYAGAIN.
    fn hold_expired(&mut self, job: Job) -> Slot {
        self.shared.metrics.error(ErrorKind::HoldTimeout);
        if job.in_transaction() && self.st.in_transaction() {
            self.st.tx_broken.get_or_insert(TxBroken::ConnectionLost);
        }
        let Some(retry) = job.retry else {
            return Slot::Ready(reply::error(
                "TRYAGAIN belay: the command could not be sent; it was not run",
            ));
        };
        if let Some(refusal) = retry.refusal {
            return Slot::Ready(refusal);
        }
        let topo = self.topology();
        let what = match retry.waited_for {
            Some(Waiting::NoReplica) => "no replica could serve it (read_from = replica)",
            Some(Waiting::NoMaster) if job.routing.class.is_read() => {
                "no replica or master could serve it"
            }
            Some(Waiting::NoMaster) | None => topo
                .write_hold
                .map_or("no confirmed master", |h| h.describe()),
            Some(Waiting::OtherConnection) => "the session's earlier commands were not answered",
            Some(Waiting::Refused) => "the master refused it",
        };
        Slot::Ready(reply::error(&format!(
            "TRYAGAIN belay: {what} for {} ms (failover in progress?); the command was not run",
            self.cfg.failover_hold_ms
        )))
    }

    /// The head's replies (or failure) arrived — `None`: its connection
    /// dropped the slot — decide what the client sees.
    pub(super) fn resolve_head(&mut self, r: Option<ReplyResult>) {
        let Some(Slot::Sent {
            mut jobs,
            pool,
            lane,
            inspect,
            sent_at,
            confirm,
            ..
        }) = self.queue.pop_front()
        else {
            return;
        };
        let from_master = lane.is_some();
        if let Some(sent_at) = sent_at {
            self.shared
                .metrics
                .round_trip(from_master, sent_at.elapsed());
        }
        let writes = if let Some(lane) = &lane {
            self.st.answered(&pool, lane, jobs.len());
            jobs.iter().filter(|j| j.class().has_effect()).count()
        } else {
            0
        };
        self.st.unacked_writes = self.st.unacked_writes.saturating_sub(writes);
        let result = r.unwrap_or_else(|| {
            Err(BackendError::Lost {
                addr: pool.addr.clone(),
                why: LostWhy::ConnectionClosed,
            })
        });
        let mut next: SmallVec<[Slot; 4]> = SmallVec::new();
        let mut suspected = false;
        match result {
            Ok(replies) => {
                self.io.budget.taken(replies.frames.len());
                let unconfirmed =
                    confirm.and_then(|c| unconfirmed(c, replies.replication.as_ref()));
                // Writes a replaced master acknowledged may be lost with it.
                let replaced = (from_master && replies.after_retired).then(|| pool.addr.clone());
                if !replies.has_error && !inspect && unconfirmed.is_none() && replaced.is_none() {
                    // The common case: every reply goes to the client as it is.
                    if writes > 0 {
                        self.st.fence = Some(Fence {
                            acked_at: Instant::now(),
                        });
                    }
                    next.push(Slot::Ready(replies.frames));
                    jobs.clear();
                } else {
                    let mut frames = replies.frames;
                    let limits = Limits::for_relayed_replies();
                    for job in jobs.drain(..) {
                        // The reader checked the framing; the fallback only
                        // keeps a malformed tail from being lost.
                        let n = match frame_len(&frames, &limits) {
                            Ok(Some(n)) => n,
                            _ => frames.len(),
                        };
                        let frame = frames.split_to(n);
                        if let Some(addr) = replaced
                            .as_deref()
                            .filter(|_| job.completes_writes() && !frame.starts_with(b"-"))
                        {
                            self.shared.metrics.error(ErrorKind::Uncertain);
                            next.push(Slot::Ready(reply::error(&format!(
                                "UNCERTAIN belay: the write was answered by {addr} after it was replaced as master; it may be lost with it; it was not sent again"
                            ))));
                            continue;
                        }
                        if let Some(why) = unconfirmed
                            .as_deref()
                            .filter(|_| job.completes_writes() && !frame.starts_with(b"-"))
                        {
                            // It ran on the master; its replicas did not
                            // confirm it. Said so, never sent again.
                            self.shared.metrics.error(ErrorKind::Unreplicated);
                            self.st.fence = Some(Fence {
                                acked_at: Instant::now(),
                            });
                            next.push(Slot::Ready(reply::error(why)));
                            continue;
                        }
                        next.push(self.on_reply(frame, job, &pool, lane.as_ref(), &mut suspected));
                    }
                }
            }
            Err(e) => {
                for job in jobs.drain(..) {
                    next.push(self.on_failure(&e, job, &pool, lane.as_ref(), &mut suspected));
                }
            }
        }
        for slot in next.into_iter().rev() {
            self.queue.push_front(slot);
        }
        self.batch.recycle(jobs);
        self.st.last_served = Some((pool, from_master));
    }

    /// Tells discovery, once per batch, that the master may have changed.
    fn suspect(&self, pool: &NodePool, suspected: &mut bool) {
        if !*suspected {
            *suspected = true;
            let _ = self.shared.events.send(Event::Suspect {
                addr: pool.addr.clone(),
            });
        }
    }

    fn on_reply(
        &mut self,
        frame: Bytes,
        mut job: Job,
        pool: &Arc<NodePool>,
        lane: Option<&Lane>,
        suspected: &mut bool,
    ) -> Slot {
        let from_master = lane.is_some();
        match retry::on_reply(&job, &frame, from_master) {
            OnReply::Deliver => {
                if from_master && job.class().has_effect() {
                    self.st.fence = Some(Fence {
                        acked_at: Instant::now(),
                    });
                }
                Slot::Ready(match job.rewrite {
                    Rewrite::None => frame,
                    Rewrite::MaskSecrets => mask_config_secrets(&frame),
                })
            }
            OnReply::Refused => {
                let now = Instant::now();
                if now >= job.held_since(now) + self.cfg.failover_hold() {
                    return Slot::Ready(frame);
                }
                if from_master {
                    // Not run: held until discovery has asked the master
                    // its role again, then sent wherever writes go then.
                    self.suspect(pool, suspected);
                }
                let checks = self.topology().master_checks;
                let r = job.retry_mut();
                r.refusal = Some(frame);
                r.attempts = r.attempts.saturating_add(1);
                r.after_check = if from_master { checks } else { 0 };
                // A read a replica refused goes to the master instead.
                r.force_master |= !from_master;
                Slot::Held(job)
            }
            OnReply::Ask => {
                let r = job.retry_mut();
                r.attempts = r.attempts.saturating_add(1);
                if r.attempts > 5 {
                    return Slot::Ready(frame);
                }
                r.ask = super::retry::ask_target(&frame);
                Slot::Held(job)
            }
            OnReply::ScriptOnMaster => {
                job.retry_mut().force_master = true;
                Slot::Held(job)
            }
            OnReply::ReplicaBusy => {
                if pool.health().set_busy(true) {
                    tracing::warn!(replica = %pool.addr, "the replica answers BUSY (a script or function is running): no reads go there until it is done");
                }
                if job.attempts() >= 2 {
                    return Slot::Ready(frame);
                }
                job.retry_mut().attempts += 1;
                Slot::Held(job)
            }
        }
    }

    /// A command got no reply: send it again where that is safe, else tell
    /// the client.
    fn on_failure(
        &mut self,
        e: &BackendError,
        mut job: Job,
        pool: &Arc<NodePool>,
        lane: Option<&Lane>,
        suspected: &mut bool,
    ) -> Slot {
        if lane.is_some() && !e.retry_safe() {
            self.suspect(pool, suspected);
        }
        if lane == Some(&Lane::Own) && self.st.own.as_ref().is_some_and(|o| !o.conn.is_alive()) {
            self.st.own = None;
            if self.st.tx_sent && self.st.in_transaction() {
                self.st.tx_broken.get_or_insert(TxBroken::ConnectionLost);
            }
        }
        match retry::on_failure(&job, e) {
            OnFailure::Resend | OnFailure::ReadAgain => {
                let r = job.retry_mut();
                r.attempts = r.attempts.saturating_add(1);
                Slot::Held(job)
            }
            OnFailure::Fail => {
                if !e.retry_safe() {
                    self.shared.metrics.error(ErrorKind::Uncertain);
                }
                if job.in_transaction() && self.st.in_transaction() {
                    self.st.tx_broken.get_or_insert(TxBroken::ConnectionLost);
                }
                Slot::Ready(e.to_reply())
            }
        }
    }
}

/// The error for writes that `WAIT` did not confirm, or `None` when it
/// did: durable writes answer a write only once `confirm.replicas` have it.
pub(super) fn unconfirmed(confirm: Confirm, said: Option<&Replication>) -> Option<String> {
    let why = match said {
        Some(Replication::Acked(n)) if *n >= confirm.replicas => return None,
        Some(Replication::Acked(n)) => format!(
            "{n} of the {} replicas required confirmed it within {} ms",
            confirm.replicas, confirm.timeout_ms
        ),
        Some(Replication::Unknown(why)) => why.clone(),
        None => "no WAIT answered for it".to_string(),
    };
    Some(format!(
        "UNREPLICATED belay: the write ran on the master, but {why} (durable writes): a failover now could lose it; it was not sent again"
    ))
}
