//! The session in front of a Redis Cluster: which slot a command's keys
//! are in (the shard then routes it as a Sentinel group would), and the
//! commands whose keys span shards or that concern every shard, run at the
//! head of the queue — once everything the client sent before is answered
//! — as one command per slot on the shards' shared connections, their
//! replies merged (`cluster::spread`).

use std::sync::Arc;
use std::time::Duration;

use belay_resp::Request;
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::input::{Handled, Later};
use super::queue::Slot;
use super::state::TxBroken;
use super::Session;
use crate::backend::NodePool;
use crate::budget::OutputBudget;
use crate::cluster::{
    merge_everywhere, merge_split, rewrite_scan_reply, scan_cursor, split, split_replies,
    Everywhere, Part, Split, Spread, CROSSSLOT,
};
use crate::discovery::Event;
use crate::reply;
use crate::topology::Topology;

/// What runs at the head for a command that spans shards.
pub(super) enum Spanning {
    Split(Split),
    Everywhere(Everywhere),
}

/// How often a part waiting for its shard (no master, a refusal) looks at
/// the topology again.
const RECHECK: Duration = Duration::from_millis(50);

impl Session {
    /// In a cluster: the slot of `req`'s keys, or how the request is
    /// handled instead (`Err`). Outside one: `Ok(None)`.
    pub(super) fn cluster_slot(
        &mut self,
        name: &[u8],
        req: Request,
        topo: &Topology,
    ) -> Result<(Option<u16>, Request), Handled> {
        if topo.shards.is_none() {
            return Ok((None, req));
        }
        let keys = topo.commands.key_positions(name, &req);
        let how = match crate::cluster::spread(name, &req, &keys) {
            Spread::Slot(slot) => return Ok((slot, req)),
            Spread::CrossSlot => return Err(self.cross_slot()),
            Spread::Split(Split::AllOk) if req.argc() < 3 || req.argc().is_multiple_of(2) => {
                // MSET's keys and values come in pairs: Redis's own error.
                return Err(Handled::Slot(Slot::Ready(reply::error(&format!(
                    "ERR wrong number of arguments for '{}' command",
                    String::from_utf8_lossy(name)
                )))));
            }
            Spread::Split(s) => Spanning::Split(s),
            Spread::Everywhere(e) => Spanning::Everywhere(e),
        };
        if self.st.in_multi {
            // One transaction runs on one node.
            return Err(self.cross_slot());
        }
        if !self.at_head {
            return Err(Handled::Slot(Slot::Queued(req)));
        }
        Err(Handled::Later(Later::Spanning { req, how }))
    }

    fn cross_slot(&mut self) -> Handled {
        if self.st.in_multi {
            self.st.tx_broken.get_or_insert(TxBroken::CommandRefused);
        }
        Handled::Slot(Slot::Ready(reply::error(CROSSSLOT)))
    }

    /// Runs a command that spans shards (see [`Spanning`]).
    ///
    /// A merged reply larger than the client's output limit closes the
    /// client, as one reply of that size from a node would.
    pub(super) async fn spanning(&mut self, req: Request, how: Spanning) -> Slot {
        let reply = match how {
            Spanning::Split(s) => self.split(&req, s).await,
            Spanning::Everywhere(Everywhere::Scan) => self.scan(&req).await,
            Spanning::Everywhere(Everywhere::RandomKey) => self.random_key(&req).await,
            Spanning::Everywhere(e) => self.everywhere(&req, e).await,
        };
        let limit = self.io.budget.limit();
        if limit > 0 && (reply.len() > limit || self.io.budget.is_over()) {
            tracing::info!(
                session = self.id,
                bytes = reply.len(),
                "closing a client whose merged reply is over its output limit"
            );
            self.shared
                .metrics
                .error(crate::metrics::ErrorKind::OutputLimit);
            return Slot::Close;
        }
        Slot::Ready(reply)
    }

    async fn split(&mut self, req: &Request, how: Split) -> Bytes {
        let parts = split(req, how);
        let writes = how.writes();
        let mut replies: Vec<Option<Bytes>> = vec![None; parts.len()];
        let deadline = Instant::now() + self.cfg.failover_hold();
        loop {
            let pending: Vec<usize> = (0..parts.len()).filter(|&i| replies[i].is_none()).collect();
            let topo = self.topology().clone();
            // Every part's shard must be there before any part is sent: a
            // write split over shards runs everywhere or, while a shard
            // fails over, nowhere yet.
            let pools: Option<Vec<Arc<NodePool>>> = pending
                .iter()
                .map(|&i| shard_pool(&topo, Some(parts[i].slot), writes))
                .collect();
            match pools {
                Some(pools) => {
                    let answers = self.ask_grouped(&parts, &pending, pools, writes).await;
                    // Whether any part ran, this round or before: a part's
                    // error after that is a partial run.
                    let ran = replies.iter().any(|r| r.is_some())
                        || answers
                            .iter()
                            .any(|a| matches!(a, Ok(r) if !super::retry::is_refusal(r)));
                    for (&i, answer) in pending.iter().zip(answers) {
                        // A part whose keys are moving: once more, to the
                        // node that imports them, after ASKING.
                        let answer = match answer {
                            Ok(r) if r.starts_with(b"-ASK ") => {
                                let ctx = self.st.ctx.clone();
                                let target = super::retry::ask_target(&r).unwrap_or_default();
                                match self.asking(&ctx, &target, &parts[i].raw, writes).await {
                                    // Ran there, perhaps: the client's error.
                                    Some(reply)
                                        if reply.starts_with(b"-UNCERTAIN")
                                            || reply.starts_with(b"-UNREPLICATED") =>
                                    {
                                        Err(reply)
                                    }
                                    Some(reply) => Ok(reply),
                                    None => Ok(r),
                                }
                            }
                            answer => answer,
                        };
                        match answer {
                            Ok(r) if super::retry::is_refusal(&r) => {
                                self.suspect_map(&parts[i]);
                                if Instant::now() >= deadline {
                                    return r;
                                }
                            }
                            Ok(r) => replies[i] = Some(r),
                            Err(e) => return partial(req, e, writes && ran),
                        }
                    }
                }
                None if Instant::now() >= deadline => {
                    return reply::error(&format!(
                        "TRYAGAIN belay: {} spans shards and one of them has no master now (failover in progress?); {}",
                        name_of(req),
                        if replies.iter().any(|r| r.is_some()) {
                            "part of it ran"
                        } else {
                            "the command was not run"
                        }
                    ))
                }
                None => {}
            }
            if replies.iter().all(|r| r.is_some()) {
                let replies: Vec<Bytes> = replies.into_iter().flatten().collect();
                if writes {
                    self.wrote();
                }
                let nkeys = parts.iter().map(|p| p.keys.len()).sum();
                return merge_split(how, &name_of(req), &parts, &replies, nkeys);
            }
            self.topology_change(RECHECK).await;
        }
    }

    /// `KEYS`, `DBSIZE`, `FLUSHDB`, `FLUSHALL`: every shard, merged.
    async fn everywhere(&mut self, req: &Request, how: Everywhere) -> Bytes {
        let deadline = Instant::now() + self.cfg.failover_hold();
        loop {
            let topo = self.topology().clone();
            let pools: Option<Vec<Arc<NodePool>>> = topo
                .groups()
                .iter()
                .map(|g| group_pool(g, how.writes()))
                .collect();
            if let Some(pools) = pools.filter(|p| !p.is_empty()) {
                let sent = pools.into_iter().map(|p| (p, req.raw.clone())).collect();
                let mut replies = Vec::new();
                for answer in self.ask_each(sent, how.writes()).await {
                    match answer {
                        Ok(r) => replies.push(r),
                        Err(e) => return partial(req, e, how.writes()),
                    }
                }
                if how.writes() {
                    self.wrote();
                }
                return merge_everywhere(how, &replies);
            }
            if Instant::now() >= deadline {
                return reply::error(&format!(
                    "TRYAGAIN belay: {} goes to every shard and one has no master now (failover in progress?); the command was not run",
                    name_of(req)
                ));
            }
            self.topology_change(RECHECK).await;
        }
    }

    /// `SCAN`: the shard named in the cursor, with its own cursor.
    async fn scan(&mut self, req: &Request) -> Bytes {
        let Some((shard, cursor)) = req.arg(1).and_then(scan_cursor) else {
            return reply::error("ERR invalid cursor");
        };
        let deadline = Instant::now() + self.cfg.failover_hold();
        loop {
            let topo = self.topology().clone();
            let groups = topo.groups();
            let Some(group) = groups.get(shard) else {
                return reply::error("ERR invalid cursor");
            };
            if let Some(pool) = group_pool(group, false) {
                let mut args: Vec<&[u8]> = req.args().collect();
                let node_cursor = cursor.to_string();
                args[1] = node_cursor.as_bytes();
                let raw = belay_resp::encode_command(&args).freeze();
                let n = groups.len();
                return match self.ask_each(vec![(pool, raw)], false).await.remove(0) {
                    Ok(r) if r.first() == Some(&b'-') => r,
                    Ok(r) => rewrite_scan_reply(&r, shard, n).unwrap_or_else(|| {
                        reply::error(
                            "ERR belay: a shard answered SCAN with a reply the gateway cannot read",
                        )
                    }),
                    Err(e) => e,
                };
            }
            if Instant::now() >= deadline {
                return reply::error("TRYAGAIN belay: the shard this SCAN is at has no master now (failover in progress?)");
            }
            self.topology_change(RECHECK).await;
        }
    }

    /// `RANDOMKEY`: the shards in a random order, the first key found.
    async fn random_key(&mut self, req: &Request) -> Bytes {
        let topo = self.topology().clone();
        let mut pools: Vec<Arc<NodePool>> = topo
            .groups()
            .iter()
            .filter_map(|g| group_pool(g, false))
            .collect();
        rand::seq::SliceRandom::shuffle(&mut pools[..], &mut rand::thread_rng());
        let mut last = reply::null(self.st.ctx.resp3);
        for pool in pools {
            match self
                .ask_each(vec![(pool, req.raw.clone())], false)
                .await
                .remove(0)
            {
                Ok(r) if r.first() == Some(&b'$') && r.as_ref() != b"$-1\r\n" => return r,
                Ok(r) => last = r,
                Err(e) => return e,
            }
        }
        last
    }

    /// Sends each command to its node on the session's context's shared
    /// connection, concurrently; each one's reply, or the client's error
    /// when it got none (`TRYAGAIN`: not run; `UNCERTAIN`: may have run).
    async fn ask_each(
        &mut self,
        sent: Vec<(Arc<NodePool>, Bytes)>,
        writes: bool,
    ) -> Vec<Result<Bytes, Bytes>> {
        let ctx = self.st.ctx.clone();
        let hint = self.slot();
        let budget = &self.io.budget.clone();
        let asks = sent.into_iter().map(|(pool, raw)| {
            let ctx = ctx.clone();
            let written = writes.then(|| self.confirm_on(&pool));
            async move {
                let mut replies = ask_on(&pool, &ctx, hint, raw, 1, budget, written).await?;
                replies
                    .pop()
                    .ok_or_else(|| reply::error("ERR belay: an unreadable reply"))
            }
        });
        futures::future::join_all(asks).await
    }

    /// The parts `pending` of a split command, each to its pool
    /// (`pools[j]` for `parts[pending[j]]`): the parts for one node go as
    /// one request, the nodes concurrently. Each part's reply, or the
    /// client's error for a part that got none.
    async fn ask_grouped(
        &mut self,
        parts: &[Part],
        pending: &[usize],
        pools: Vec<Arc<NodePool>>,
        writes: bool,
    ) -> Vec<Result<Bytes, Bytes>> {
        // Per node: the pool, and which of `pending` go there.
        let mut nodes: Vec<(Arc<NodePool>, Vec<usize>)> = Vec::new();
        for (j, pool) in pools.into_iter().enumerate() {
            match nodes.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &pool)) {
                Some((_, js)) => js.push(j),
                None => nodes.push((pool, vec![j])),
            }
        }
        let ctx = self.st.ctx.clone();
        let hint = self.slot();
        let budget = &self.io.budget.clone();
        let asks = nodes.iter().map(|(pool, js)| {
            let mut raw = BytesMut::new();
            for &j in js {
                raw.extend_from_slice(&parts[pending[j]].raw);
            }
            let ctx = ctx.clone();
            let written = writes.then(|| self.confirm_on(pool));
            async move {
                let count = js.len() as u32;
                ask_on(pool, &ctx, hint, raw.freeze(), count, budget, written).await
            }
        });
        let answers = futures::future::join_all(asks).await;
        let mut out: Vec<Result<Bytes, Bytes>> = vec![Err(Bytes::new()); pending.len()];
        for ((_, js), answer) in nodes.iter().zip(answers) {
            match answer {
                Ok(replies) => {
                    for (&j, r) in js.iter().zip(replies) {
                        out[j] = Ok(r);
                    }
                }
                Err(e) => {
                    for &j in js {
                        out[j] = Err(e.clone());
                    }
                }
            }
        }
        out
    }

    /// `count` commands (back to back in `raw`) to `pool`, their replies,
    /// run as `ctx` (the user, database and protocol a command was sent
    /// under, which the session may have left since).
    async fn ask_replies(
        &mut self,
        ctx: &crate::context::Context,
        pool: Arc<NodePool>,
        raw: Bytes,
        count: u32,
        writes: bool,
    ) -> Result<Vec<Bytes>, Bytes> {
        let budget = self.io.budget.clone();
        let written = writes.then(|| self.confirm_on(&pool));
        ask_on(&pool, ctx, self.slot(), raw, count, &budget, written).await
    }

    /// Durable writes: what a write sent to master `pool` must be
    /// confirmed by, from its shard's followers (none for a master that
    /// serves no slot yet).
    fn confirm_on(&self, pool: &Arc<NodePool>) -> Option<crate::backend::Confirm> {
        let topo = self.topo_rx.borrow().clone();
        let group = topo
            .groups()
            .into_iter()
            .find(|g| g.read_master.as_ref().is_some_and(|m| Arc::ptr_eq(m, pool)));
        match group {
            Some(g) => self.confirm(g),
            None => self.cfg.durable_writes.map(|d| crate::backend::Confirm {
                replicas: d.required(0),
                timeout_ms: self.cfg.durable_timeout_ms,
            }),
        }
    }

    /// Sends `job` once to `target` (a master of the cluster), after
    /// `ASKING`: the node importing the slot runs it. Its reply, or an
    /// error that it may have run (`UNCERTAIN`: never sent again); `None`
    /// when it was not run (no such master, not sent, or refused there):
    /// the job then waits for the slot map like any refused command.
    pub(super) async fn send_asking(
        &mut self,
        job: &super::job::Job,
        target: &str,
    ) -> Option<Bytes> {
        let writes = job.class().has_effect();
        let reply = self.asking(&job.ctx, target, &job.raw, writes).await?;
        if writes && reply.first() != Some(&b'-') {
            self.wrote();
        }
        Some(reply)
    }

    /// `raw` (one command) to `target` after `ASKING`, as `ctx`: its
    /// reply, or an error that it may have run; `None` when it was not run
    /// (`target` unknown — discovery is told to look again — not sent, or
    /// refused there).
    async fn asking(
        &mut self,
        ctx: &crate::context::Context,
        target: &str,
        raw: &[u8],
        writes: bool,
    ) -> Option<Bytes> {
        let topo = self.topology().clone();
        let pool = topo
            .groups()
            .into_iter()
            .filter_map(|g| g.read_master.clone())
            .find(|m| m.addr == target)
            .or_else(|| topo.shards.as_ref()?.idle_master(target).cloned());
        let Some(pool) = pool else {
            let _ = self.shared.events.send(Event::Suspect {
                addr: target.to_string(),
            });
            return None;
        };
        let mut asked = BytesMut::from(&b"*1\r\n$6\r\nASKING\r\n"[..]);
        asked.extend_from_slice(raw);
        let replies = match self.ask_replies(ctx, pool, asked.freeze(), 2, writes).await {
            Ok(replies) => replies,
            Err(not_run) if not_run.starts_with(b"-TRYAGAIN") => return None,
            Err(may_have_run) => return Some(may_have_run),
        };
        let reply = replies.into_iter().nth(1)?;
        (!super::retry::is_refusal(&reply)).then_some(reply)
    }

    /// The session's writes were acknowledged now: its reads go to a
    /// replica only once it has them (read-your-writes).
    fn wrote(&mut self) {
        self.st.fence = Some(crate::router::Fence {
            acked_at: Instant::now(),
        });
    }

    /// A node refused a part (`MOVED`, `CLUSTERDOWN`, …): the slot map may
    /// be out of date; discovery looks again.
    fn suspect_map(&self, part: &Part) {
        let _ = self.shared.events.send(Event::Suspect {
            addr: format!("slot {}", part.slot),
        });
    }

    /// Waits until discovery publishes a new topology, or `at_most`.
    async fn topology_change(&mut self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.topo_rx.changed()).await;
    }
}

/// Sends `count` commands on `pool`'s shared connection of `ctx`; their
/// replies, or the client's error when they got none (`TRYAGAIN`: not run;
/// `UNCERTAIN`: may have run).
///
/// The replies count against the client's output `budget` as they arrive,
/// like any reply: one over the limit ends the wait (and the session closes
/// the client), so a `KEYS *` of a huge keyspace cannot make the gateway
/// hold more for one client than its limit.
///
/// `written`: they are writes (with the confirmation durable writes need):
/// acknowledged by a master since replaced, or not confirmed by enough of
/// its replicas, they are the client's error (`UNCERTAIN`,
/// `UNREPLICATED`), as for any write; they ran, and are not sent again.
async fn ask_on(
    pool: &Arc<NodePool>,
    ctx: &crate::context::Context,
    hint: usize,
    raw: Bytes,
    count: u32,
    budget: &Arc<OutputBudget>,
    written: Option<Option<crate::backend::Confirm>>,
) -> Result<Vec<Bytes>, Bytes> {
    let confirm = written.flatten();
    if let Err(e) = pool.connect_shared(ctx, hint).await {
        return Err(reply::error(&format!(
            "TRYAGAIN belay: cannot reach {} ({e}); the command was not run",
            pool.addr
        )));
    }
    let rx = pool
        .try_send_shared(ctx, hint, raw, count, Some(budget.clone()), confirm)
        .map_err(|_| {
            reply::error(&format!(
                "TRYAGAIN belay: the connection to {} closed; the command was not run",
                pool.addr
            ))
        })?;
    let answer = tokio::select! {
        answer = rx => answer,
        _ = std::future::poll_fn(|cx| budget.poll_exceeded(cx)) => {
            return Err(reply::error(
                "ERR belay: the replies are over the client's output buffer limit",
            ));
        }
    };
    match answer {
        Ok(Ok(replies)) => {
            budget.taken(replies.frames.len());
            if written.is_some() && replies.after_retired {
                return Err(reply::error(&format!(
                    "UNCERTAIN belay: the write was answered by {} after it was replaced as master; it may be lost with it; it was not sent again",
                    pool.addr
                )));
            }
            if let Some(why) =
                confirm.and_then(|c| super::head::unconfirmed(c, replies.replication.as_ref()))
            {
                return Err(reply::error(&why));
            }
            split_replies(&replies.frames, count as usize)
                .ok_or_else(|| reply::error("ERR belay: an unreadable reply"))
        }
        Ok(Err(e)) if e.retry_safe() => Err(reply::error(&format!(
            "TRYAGAIN belay: {e}; the command was not run"
        ))),
        Ok(Err(e)) => Err(reply::error(&format!(
            "UNCERTAIN belay: {e}; it may or may not have run"
        ))),
        Err(_) => Err(reply::error(
            "UNCERTAIN belay: the connection went away; it may or may not have run",
        )),
    }
}

/// Where a command for `slot` goes now: the shard's master for writes
/// (`None` while they are held), its confirmed master for reads.
fn shard_pool(topo: &Topology, slot: Option<u16>, writes: bool) -> Option<Arc<NodePool>> {
    group_pool(topo.group(slot)?, writes)
}

fn group_pool(group: &Topology, writes: bool) -> Option<Arc<NodePool>> {
    let pool = if writes {
        group.master.as_ref()
    } else {
        group.read_master.as_ref()
    };
    pool.filter(|p| p.is_usable() && !p.is_closed()).cloned()
}

fn name_of(req: &Request) -> String {
    String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_uppercase()
}

/// A part got no reply. When other parts of a write ran, the client must
/// know the command ran in part.
fn partial(req: &Request, err: Bytes, others_ran: bool) -> Bytes {
    if !others_ran {
        return err;
    }
    let why = String::from_utf8_lossy(&err[1..err.len().saturating_sub(2)]).into_owned();
    let mut out = BytesMut::new();
    out.extend_from_slice(&reply::error(&format!(
        "UNCERTAIN belay: {} was split across shards and ran on some of them; for one shard: {why}",
        name_of(req)
    )));
    out.freeze()
}
