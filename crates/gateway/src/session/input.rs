//! A request's way in: parsed, classified (the gateway's own commands, its
//! refusals, the master's command table), routed, and staged in a batch or
//! queued.

use std::sync::Arc;

use belay_resp::{Limits, Request};
use bytes::Bytes;

use super::batch::TargetRef;
use super::builtin::{self, Action, Builtin, Env};
use super::dispatch::{Choice, Route};
use super::job::{Conn, Job};
use super::queue::Slot;
use super::state::{Lane, TxBroken};
use super::{LastCommand, Session};
use crate::backend::{Confirm, NodePool};
use crate::commands::{lower, Class, Routing};
use crate::metrics::{Counted, ErrorKind};
use crate::reply;
use crate::topology::Topology;

/// What handling a request came to.
pub(super) enum Handled {
    /// It joined the open batch; its slot is added when the batch is sent.
    Staged,
    /// Queue this slot.
    Slot(Slot),
    /// `+OK`, then close.
    Quit,
    /// Something to await first (a node's answer, a new connection).
    Later(Later),
}

/// Work that waits for a node.
pub(super) enum Later {
    /// Open the session's own connection to `pool`, then send `job` on it.
    OwnConn {
        job: Job,
        pool: Arc<NodePool>,
    },
    /// Check an ACL user's credentials.
    Login(builtin::Login),
    /// `PING` a master that has gone quiet.
    PingQuietMaster {
        req: Request,
        pool: Arc<NodePool>,
    },
    /// Check an ACL user may `SELECT` this database.
    SelectAsUser(u32),
    Wait(Request),
    Kill(Request),
    GroupAdmin(Request),
    /// Send to the master, and to every replica first (script cache).
    ToAll {
        req: Request,
        routing: Routing,
    },
    /// A command whose keys span a cluster's shards, or that every shard
    /// answers.
    Spanning {
        req: Request,
        how: super::cluster::Spanning,
    },
    /// A login from an address that failed too often: answered after `delay`.
    Throttled {
        req: Request,
        delay: std::time::Duration,
    },
}

/// Silence, while replies are owed, after which a shared connection is
/// taken to be stuck behind a long command (a script) and new commands go
/// to another one.
const STUCK: std::time::Duration = std::time::Duration::from_millis(100);

impl Session {
    /// Parses every complete request in the input buffer and handles it.
    pub(super) async fn parse_input(&mut self) {
        self.batch_replica = None;
        while !self.queue.stops_reading() {
            let limits = self.limits();
            match self.io.next_request(&limits) {
                Ok(Some(req)) => {
                    if req.is_empty() {
                        continue;
                    }
                    if self.queue.has_waiting() {
                        self.push(Slot::Queued(req));
                        continue;
                    }
                    let handled = self.handle(req);
                    self.place(handled).await;
                }
                Ok(None) => break,
                Err(e) => {
                    let msg = if self.st.authenticated {
                        e.to_string()
                    } else {
                        format!("{e} (before AUTH)")
                    };
                    tracing::info!(session = self.id, error = %msg, "closing client after a protocol error");
                    self.shared.metrics.error(ErrorKind::Protocol);
                    self.push(Slot::Ready(reply::error(&format!("ERR {msg}"))));
                    self.push(Slot::Close);
                    break;
                }
            }
        }
        self.send_batch();
    }

    /// Acts on what handling a request came to.
    pub(super) async fn place(&mut self, handled: Handled) {
        match handled {
            Handled::Staged => {}
            Handled::Slot(slot) => self.push(slot),
            Handled::Quit => {
                self.push(Slot::Ready(reply::ok()));
                self.push(Slot::Close);
            }
            Handled::Later(later) => {
                // Boxed: a rare path that would otherwise grow every
                // session's future.
                let slot = Box::pin(self.later(later)).await;
                self.push(slot);
            }
        }
    }

    fn limits(&self) -> Limits {
        if self.st.authenticated {
            self.shared.limits
        } else {
            // Like Redis: an unauthenticated client cannot make us buffer much.
            Limits {
                max_bulk_len: 16 * 1024,
                max_array_len: 10,
                ..self.shared.limits
            }
        }
    }

    /// Adds a slot at the end of the queue, after sending the open batch
    /// (which comes before it).
    pub(super) fn push(&mut self, slot: Slot) {
        self.send_batch();
        self.queue.push_back(slot);
    }

    /// Sends the open batch, if any, and queues its slot.
    pub(super) fn send_batch(&mut self) {
        if let Some(slot) = self.batch.send(&self.io.budget) {
            self.queue.push_back(slot);
        }
    }

    /// Classifies and routes one request, in session order.
    pub(super) fn handle(&mut self, req: Request) -> Handled {
        let topo = self.take_topology();
        let handled = self.handle_in(req, &topo);
        self.put_topology(topo);
        handled
    }

    fn handle_in(&mut self, req: Request, topo: &Arc<Topology>) -> Handled {
        let raw_name = req.name().unwrap_or_default();
        let cached = self
            .last_command
            .as_ref()
            .and_then(|l| l.routing_of(raw_name, &topo.commands))
            .filter(|_| self.st.authenticated && !self.st.in_multi);
        let routing = match cached {
            Some(routing) => routing,
            None => {
                let mut buf = [0u8; 64];
                let long;
                let name: &[u8] = if raw_name.len() <= buf.len() {
                    lower(raw_name, &mut buf)
                } else {
                    long = raw_name.to_ascii_lowercase();
                    &long
                };
                if let Some(b) = builtin::builtin(name, &req) {
                    return self.builtin(b, name, req, topo);
                }
                if !self.st.authenticated {
                    return Handled::Slot(Slot::Ready(reply::error(
                        "NOAUTH Authentication required.",
                    )));
                }
                match topo.commands.classify(name, &req) {
                    // No command table yet: it waits for one at the head.
                    None => return Handled::Slot(Slot::Queued(req)),
                    Some((
                        Routing {
                            class: Class::Denied(reason),
                            ..
                        },
                        _,
                    )) => {
                        if self.st.in_multi {
                            self.st.tx_broken.get_or_insert(TxBroken::CommandRefused);
                        }
                        self.shared.metrics.error(ErrorKind::Denied);
                        return Handled::Slot(Slot::Ready(denied(&req, reason)));
                    }
                    Some((routing, resolved)) => {
                        if resolved && !self.st.in_multi {
                            self.last_command = LastCommand::new(raw_name, routing, &topo.commands);
                        }
                        routing
                    }
                }
            }
        };
        let (slot, req) = if topo.shards.is_some() {
            let mut buf = [0u8; 64];
            let name = lower(raw_name, &mut buf);
            match self.cluster_slot(name, req, topo) {
                Ok(found) => found,
                Err(handled) => return handled,
            }
        } else {
            (None, req)
        };
        let conn = if self.st.in_multi {
            Conn::Transaction
        } else if routing.class.may_block() {
            Conn::Pinned
        } else {
            Conn::Shared
        };
        let mut job = Job::new(req, routing, conn, self.st.ctx.clone());
        job.slot = slot;
        self.route_job(job, topo)
    }

    /// A command the gateway handles itself.
    fn builtin(&mut self, b: Builtin, name: &[u8], req: Request, topo: &Arc<Topology>) -> Handled {
        if !self.st.authenticated && !b.before_auth() {
            return Handled::Slot(Slot::Ready(reply::error("NOAUTH Authentication required.")));
        }
        let sub = req.arg(1).map(|s| s.to_ascii_lowercase());
        if topo.commands.denied_by_config(name, sub.as_deref()) {
            self.shared.metrics.error(ErrorKind::Denied);
            return Handled::Slot(Slot::Ready(denied(
                &req,
                "denied by the gateway's configuration",
            )));
        }
        if !self.at_head && self.needs_head(b, &req) {
            return Handled::Slot(Slot::Queued(req));
        }
        let logs_in = b == Builtin::Auth
            || (b == Builtin::Hello && (2..req.argc()).any(|i| req.arg_is(i, "AUTH")));
        if logs_in {
            if let Some(delay) = self.shared.auth_throttle.delay(self.io.peer()) {
                return Handled::Later(Later::Throttled { req, delay });
            }
        }
        self.apply_builtin(b, name, req, topo)
    }

    /// [`Session::builtin`], once it may run.
    pub(super) fn apply_builtin(
        &mut self,
        b: Builtin,
        name: &[u8],
        req: Request,
        topo: &Arc<Topology>,
    ) -> Handled {
        let env = Env {
            cfg: &self.cfg,
            admin_log: &self.shared.admin_log,
            databases: self.shared.databases,
            topology: topo,
            id: self.id,
            peer: self.io.peer(),
            local: self.io.local(),
        };
        let user_before = self.st.ctx.user.clone();
        let deferred = self.st.multi_deferred;
        let action = builtin::apply(b, name, &req, &mut self.st, &env);
        self.tally.count(Counted::Gateway, 1);
        // A transaction the gateway ended itself (EXECABORT, a lost
        // connection): a MULTI still waiting for its first command was
        // never sent, and must not be sent with the session's next one.
        let deferred_ended =
            deferred && !self.st.in_multi && !matches!(action, Action::Forward { .. });
        if deferred_ended {
            self.st.multi_deferred = false;
        }
        if self.st.ctx.user != user_before {
            self.user_changed();
        }
        match action {
            Action::Reply(reply) => {
                if b == Builtin::Auth || b == Builtin::Hello {
                    let failed = reply.starts_with(b"-WRONGPASS");
                    if failed {
                        self.shared.metrics.error(ErrorKind::Auth);
                    }
                    self.shared.auth_throttle.record(self.io.peer(), failed);
                }
                Handled::Slot(Slot::Ready(reply))
            }
            Action::ReplyAfterReplay { reply, replay } => {
                // No node saw that MULTI: nothing to DISCARD there, but
                // what the client WATCHed is unwatched, as EXEC would.
                if !deferred_ended {
                    self.replay(&replay);
                } else if self.st.own.is_some() {
                    self.replay(&[vec![Bytes::from_static(b"UNWATCH")]]);
                }
                Handled::Slot(Slot::Ready(reply))
            }
            Action::Forward {
                routing,
                conn,
                rewrite,
            } => {
                if topo.shards.is_some() {
                    match b {
                        // Sent with the transaction's first command, on
                        // its shard (see `SessionState::multi_deferred`).
                        Builtin::Multi => {
                            self.st.multi_deferred = true;
                            return Handled::Slot(Slot::Ready(reply::ok()));
                        }
                        Builtin::Exec | Builtin::Discard if self.st.multi_deferred => {
                            // Nothing was queued: nothing was sent.
                            self.st.multi_deferred = false;
                            if self.st.own.is_some() {
                                self.replay(&[vec![Bytes::from_static(b"UNWATCH")]]);
                            }
                            return Handled::Slot(Slot::Ready(match b {
                                Builtin::Exec => Bytes::from_static(b"*0\r\n"),
                                _ => reply::ok(),
                            }));
                        }
                        _ => {}
                    }
                }
                let (slot, req) = match self.cluster_slot(name, req, topo) {
                    Ok(found) => found,
                    Err(handled) => return handled,
                };
                let mut job = Job::new(req, routing, conn, self.st.ctx.clone());
                job.slot = slot;
                job.rewrite = rewrite;
                job.ends_tx = matches!(b, Builtin::Exec | Builtin::Discard);
                self.route_job(job, topo)
            }
            Action::ForwardToAll { routing } => Handled::Later(Later::ToAll { req, routing }),
            Action::Login(login) => Handled::Later(Later::Login(login)),
            Action::PingQuietMaster(pool) => Handled::Later(Later::PingQuietMaster { req, pool }),
            Action::SelectAsUser(db) => Handled::Later(Later::SelectAsUser(db)),
            Action::Quit => Handled::Quit,
            Action::Subscribe => Handled::Slot(Slot::Subscribe(req)),
            Action::Wait => Handled::Later(Later::Wait(req)),
            Action::Kill => Handled::Later(Later::Kill(req)),
            Action::GroupAdmin => Handled::Later(Later::GroupAdmin(req)),
        }
    }

    /// Builtins that run only once everything before them is answered.
    fn needs_head(&self, b: Builtin, req: &Request) -> bool {
        match b {
            // Where the reply before it came from.
            Builtin::Belay => req.arg_is(1, "WHERE"),
            // Every node, in the order the client sent it.
            Builtin::GroupAdmin => true,
            // The writes before it must be answered before it is counted.
            Builtin::Wait => self.st.shared_writes && self.st.unacked_writes > 0,
            // They close the session's own connection: nothing may be in
            // flight there.
            Builtin::Reset | Builtin::Auth | Builtin::Hello => self.st.own.is_some(),
            _ => false,
        }
    }

    /// The session now runs as another user: its own connection (set up as
    /// the old one) is closed. A transaction on it is lost.
    fn user_changed(&mut self) {
        if self.st.own.take().is_some() && self.st.tx_sent {
            self.st.tx_broken.get_or_insert(TxBroken::ConnectionLost);
        }
    }

    /// Sends state changes on the session's own connection, in order after
    /// what was sent there before.
    pub(super) fn replay(&mut self, commands: &[Vec<Bytes>]) {
        self.send_batch();
        if let Some(own) = &mut self.st.own {
            for cmd in commands {
                own.conn
                    .send_ignoring_reply(belay_resp::encode_command(cmd).freeze());
            }
            own.ctx = self.st.ctx.clone();
        }
    }

    /// Stages `job` where `topo` says it goes, or queues it to wait.
    pub(super) fn route_job(&mut self, job: Job, topo: &Arc<Topology>) -> Handled {
        let cfg = &self.cfg;
        let in_cluster = topo.shards.is_some();
        let shards = topo.shards.as_deref();
        let layout = shards.map(crate::cluster::ShardMap::layout);
        let group = self.group_of(&job, topo);
        let Some(topo) = group else {
            // No shard serves the slot now (a failover, a resharding).
            let mut job = job;
            job.retry_mut().waited_for = Some(super::job::Waiting::NoMaster);
            return Handled::Slot(Slot::Held(job));
        };
        let choice = Choice {
            st: &self.st,
            read_from: cfg.read_from,
            read_your_writes: cfg.read_your_writes,
            batch_replica: self.batch_replica.as_ref(),
            turn: self.shared.reads_turn(),
            cluster: in_cluster,
            shards,
        };
        let route = choice.route(&job, topo);
        if matches!(route, Route::Master { .. }) && choice.is_ryw_fallback(&job, topo) {
            self.tally.ryw_fallback();
        }
        let hint = self.slot();
        let staged = match route {
            Route::Replica(pool) => {
                if job.class() == Class::CursorRead {
                    self.st.remember_scan_replica(topo, &pool.addr);
                } else if self.batch_replica.is_none() {
                    self.batch_replica = Some(pool.clone());
                }
                self.shared.count_read();
                self.tally.count(Counted::ReadReplica, 1);
                self.batch.stage(
                    TargetRef::Shared(pool),
                    None,
                    job,
                    hint,
                    &self.io.budget,
                    None,
                )
            }
            Route::Master {
                pool,
                lane: lane @ Lane::Shared(_),
            } => {
                if pool.is_closed() {
                    return Handled::Slot(Slot::Held(job));
                }
                let confirm = self.confirm(topo);
                let slot = self.master_slot(pool, &lane, &job, hint);
                self.note_master(&job, pool, lane.clone(), slot, layout);
                self.batch.stage(
                    TargetRef::Shared(pool),
                    Some(lane),
                    job,
                    slot,
                    &self.io.budget,
                    confirm,
                )
            }
            Route::Master {
                pool,
                lane: Lane::Own,
            } => {
                if job.in_transaction() && self.st.multi_deferred {
                    match &self.st.own {
                        // The transaction's first command: MULTI goes
                        // first, on its shard's connection.
                        Some(own) if own.serves(pool) => {
                            self.send_batch();
                            if let Some(own) = &self.st.own {
                                own.conn.send_ignoring_reply(Bytes::from_static(
                                    b"*1\r\n$5\r\nMULTI\r\n",
                                ));
                            }
                            self.st.multi_deferred = false;
                        }
                        // Keys WATCHed on another shard.
                        Some(own) if self.st.watching && !own.pool.is_closed() => {
                            self.st.tx_broken.get_or_insert(TxBroken::CommandRefused);
                            return Handled::Slot(Slot::Ready(reply::error(
                                crate::cluster::CROSSSLOT,
                            )));
                        }
                        _ => {}
                    }
                } else if job.in_transaction() && in_cluster {
                    if let Some(own) = self.st.own.as_ref().filter(|o| !o.serves(pool)) {
                        if !own.pool.is_closed() {
                            // A transaction runs on one shard.
                            self.st.tx_broken.get_or_insert(TxBroken::CommandRefused);
                            return Handled::Slot(Slot::Ready(reply::error(
                                crate::cluster::CROSSSLOT,
                            )));
                        }
                    }
                }
                let own = match &self.st.own {
                    Some(own) if own.serves(pool) => own,
                    _ => {
                        return Handled::Later(Later::OwnConn {
                            job,
                            pool: pool.clone(),
                        })
                    }
                };
                if own.ctx != job.ctx {
                    // A retry of a command sent before the session changed
                    // database, protocol or user: it runs as it was sent, or
                    // not at all.
                    return Handled::Slot(Slot::Ready(reply::error(
                        "TRYAGAIN belay: the command was not run: the session changed its database, protocol or user before it could be sent again",
                    )));
                }
                let conn = own.conn.clone();
                self.note_master(&job, pool, Lane::Own, 0, layout);
                let confirm = self.confirm(topo);
                self.batch.stage(
                    TargetRef::Own(pool, &conn),
                    Some(Lane::Own),
                    job,
                    hint,
                    &self.io.budget,
                    confirm,
                )
            }
            Route::Wait(why) => {
                let mut job = job;
                job.retry_mut().waited_for = Some(why);
                return Handled::Slot(Slot::Held(job));
            }
        };
        if let Some(sent) = staged {
            self.queue.push_back(sent);
        }
        Handled::Staged
    }

    /// The topology `job` routes in: in a cluster, the shard of its keys
    /// (`None` while no shard serves their slot); one without keys goes
    /// where the session's own connection is, if it needs that connection.
    pub(super) fn group_of<'t>(&self, job: &Job, topo: &'t Topology) -> Option<&'t Topology> {
        match (job.slot, &self.st.own) {
            _ if topo.shards.is_none() => Some(topo),
            (Some(slot), _) => topo.group(Some(slot)),
            (None, Some(own)) if job.conn != Conn::Shared => Some(
                topo.groups()
                    .into_iter()
                    .find(|g| {
                        g.read_master
                            .as_ref()
                            .is_some_and(|m| Arc::ptr_eq(m, &own.pool))
                    })
                    .unwrap_or(topo),
            ),
            (None, _) => Some(topo),
        }
    }

    /// Durable writes: what the writes sent to the master now must be
    /// confirmed by.
    pub(super) fn confirm(&self, topo: &Topology) -> Option<Confirm> {
        let cfg = &self.cfg;
        cfg.durable_writes.map(|d| Confirm {
            replicas: d.required(topo.followers),
            timeout_ms: cfg.durable_timeout_ms,
        })
    }

    /// Which shared connection of the master a job goes to: where the
    /// session's commands in flight there went; else, with durable writes,
    /// one chosen so that no read waits behind another session's `WAIT`;
    /// else not one stuck behind another session's long script.
    pub(super) fn master_slot(
        &self,
        pool: &Arc<NodePool>,
        lane: &Lane,
        job: &Job,
        hint: usize,
    ) -> usize {
        if let Some(slot) = self.st.slot_in_flight(pool, lane) {
            return slot;
        }
        match lane {
            Lane::Shared(ctx) if self.cfg.durable_writes.is_some() => {
                pool.choose_shared(ctx, hint, job.completes_writes())
            }
            Lane::Shared(ctx) => pool.unstuck_shared(ctx, hint, STUCK),
            _ => hint,
        }
    }

    /// Counts a job sent to the master (on shared connection `slot`).
    fn note_master(
        &mut self,
        job: &Job,
        pool: &Arc<NodePool>,
        lane: Lane,
        slot: usize,
        layout: Option<u64>,
    ) {
        self.tally.count(
            match job.class() {
                Class::Read | Class::CursorRead | Class::Admin => Counted::ReadMaster,
                Class::Blocking => Counted::Blocking,
                Class::Wait => Counted::Wait,
                Class::Write | Class::Denied(_) => Counted::Write,
            },
            1,
        );
        if job.class().has_effect() {
            self.st.unacked_writes += 1;
        }
        if job.class() == Class::Write && matches!(lane, Lane::Shared(_)) {
            self.st.shared_writes = true;
        }
        if job.in_transaction() {
            // EXEC and DISCARD end the transaction they were sent in.
            self.st.tx_sent = !job.ends_tx;
        }
        self.st.sent_on(pool, lane, slot, 1, layout);
    }
}

/// The error for a command the gateway refuses.
pub(super) fn denied(req: &Request, reason: &str) -> Bytes {
    let name = String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_uppercase();
    let sub = req
        .arg(1)
        .filter(|_| {
            matches!(
                name.as_str(),
                "CONFIG" | "CLIENT" | "ACL" | "SCRIPT" | "FUNCTION"
            )
        })
        .map(|s| format!(" {}", String::from_utf8_lossy(s).to_ascii_uppercase()))
        .unwrap_or_default();
    reply::error(&format!(
        "ERR belay: '{name}{sub}' is not supported through the gateway: {reason}"
    ))
}
