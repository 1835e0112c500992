//! Consecutive commands of one client read that go to the same backend
//! connection are sent as one request with one reply slot: one channel
//! message, one wake-up and one reply split per batch instead of per
//! command. A batch is sent when a command goes elsewhere, when anything
//! else is queued, and when the read is used up.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::job::{Job, Rewrite};
use super::queue::Slot;
use super::state::Lane;
use crate::backend::{BackendConn, Confirm, NodePool};
use crate::budget::OutputBudget;
use crate::context::Context;
use crate::error::{BackendError, NotSentWhy};

/// Where a batch goes.
pub enum Target {
    /// A connection of this context, shared with other sessions.
    Shared { pool: Arc<NodePool>, ctx: Context },
    /// The session's own connection to this node.
    Own {
        pool: Arc<NodePool>,
        conn: BackendConn,
    },
}

impl Target {
    fn pool(&self) -> &Arc<NodePool> {
        match self {
            Target::Shared { pool, .. } | Target::Own { pool, .. } => pool,
        }
    }
}

/// A [`Target`] as routing names it: only a batch that opens keeps one. A
/// shared target's context is the job's own.
pub enum TargetRef<'a> {
    Shared(&'a Arc<NodePool>),
    Own(&'a Arc<NodePool>, &'a BackendConn),
}

impl TargetRef<'_> {
    fn is(&self, target: &Target, job: &Job) -> bool {
        match (self, target) {
            (TargetRef::Shared(p), Target::Shared { pool, ctx }) => {
                Arc::ptr_eq(p, pool) && job.ctx == *ctx
            }
            (TargetRef::Own(_, c), Target::Own { conn, .. }) => c.same_as(conn),
            _ => false,
        }
    }

    fn to_owned(&self, job: &Job) -> Target {
        match self {
            TargetRef::Shared(pool) => Target::Shared {
                pool: (*pool).clone(),
                ctx: job.ctx.clone(),
            },
            TargetRef::Own(pool, conn) => Target::Own {
                pool: (*pool).clone(),
                conn: (*conn).clone(),
            },
        }
    }
}

/// Commands routed to the same connection, one after another, not yet sent.
struct OpenBatch {
    target: Target,
    /// The master lane, when the target is the master.
    lane: Option<Lane>,
    jobs: Vec<Job>,
    /// One of the commands may keep the node silent (BLPOP, WAIT, …).
    blocking: bool,
    /// A reply must be looked at even when none is an error.
    inspect: bool,
    /// Durable writes: the replicas that must confirm its writes.
    confirm: Option<Confirm>,
    /// Its last command leaves the connection inside MULTI (no WAIT can
    /// follow it there).
    open_tx: bool,
    /// Which of the target's shared connections (`hint % n`).
    slot: usize,
}

#[derive(Default)]
pub struct Batcher {
    /// Each request's round trip is timed (`metrics = true`).
    timed: bool,
    open: Option<OpenBatch>,
    /// A batch's emptied job list, kept for the next batch: a pipeline's
    /// list then grows once, not once per read.
    spare: Option<Vec<Job>>,
}

impl Batcher {
    pub fn new(timed: bool) -> Batcher {
        Batcher {
            timed,
            ..Batcher::default()
        }
    }

    /// Adds `job` for `target`; `lane` is set when the target is the master.
    /// A batch open for another target is sent first, and its slot returned.
    /// With `confirm` (durable writes), the writes it completes are answered
    /// only once that many replicas have them.
    pub fn stage(
        &mut self,
        target: TargetRef<'_>,
        lane: Option<Lane>,
        job: Job,
        hint: usize,
        budget: &Arc<OutputBudget>,
        confirm: Option<Confirm>,
    ) -> Option<Slot> {
        // Writes to confirm, then a transaction begins: they are sent on
        // their own, so that the WAIT can follow them outside MULTI.
        let splits = |b: &OpenBatch| b.confirm.is_some() && !b.open_tx && job.leaves_tx_open();
        let joins = self
            .open
            .as_ref()
            .is_some_and(|b| target.is(&b.target, &job) && !splits(b));
        let sent = if joins { None } else { self.send(budget) };
        let batch = self.open.get_or_insert_with(|| OpenBatch {
            target: target.to_owned(&job),
            lane,
            jobs: Vec::new(),
            blocking: false,
            inspect: false,
            confirm: None,
            open_tx: false,
            slot: hint,
        });
        if batch.jobs.capacity() == 0 {
            if let Some(spare) = self.spare.take() {
                batch.jobs = spare;
            }
        }
        batch.blocking |= job.class().may_block();
        batch.inspect |= job.rewrite != Rewrite::None;
        if let Some(c) = confirm.filter(|_| job.completes_writes()) {
            batch.confirm = Some(batch.confirm.map_or(c, |b| b.max(c)));
        }
        batch.open_tx = job.leaves_tx_open();
        batch.jobs.push(job);
        sent
    }

    /// Sends the open batch, if any, and returns its slot. A shared
    /// connection that is down fails the batch as not sent: its commands
    /// are retried at the head of the queue, where connecting is awaited.
    pub fn send(&mut self, budget: &Arc<OutputBudget>) -> Option<Slot> {
        let batch = self.open.take()?;
        let count = batch.jobs.len();
        let raw = if count == 1 {
            batch.jobs[0].raw.clone()
        } else {
            let mut raw = BytesMut::with_capacity(batch.jobs.iter().map(|j| j.raw.len()).sum());
            for job in &batch.jobs {
                raw.extend_from_slice(&job.raw);
            }
            raw.freeze()
        };
        let budget = Some(budget.clone());
        // Inside MULTI a WAIT would be queued, not run: the EXEC's batch
        // confirms the transaction's writes.
        let confirm = batch.confirm.filter(|_| !batch.open_tx);
        let rx = match &batch.target {
            Target::Shared { pool, ctx } => pool
                .try_send_shared(ctx, batch.slot, raw, count as u32, budget, confirm)
                .unwrap_or_else(|_: Bytes| not_sent(&pool.addr)),
            Target::Own { conn, .. } => {
                conn.send_confirmed(raw, count as u32, batch.blocking, budget, confirm)
            }
        };
        Some(Slot::Sent {
            rx,
            pool: batch.target.pool().clone(),
            lane: batch.lane,
            jobs: batch.jobs,
            inspect: batch.inspect,
            sent_at: self.timed.then(tokio::time::Instant::now),
            confirm,
        })
    }

    /// Keeps an emptied job list for the next batch, unless a large
    /// pipeline made it big.
    pub fn recycle(&mut self, jobs: Vec<Job>) {
        if jobs.capacity() <= 64 && jobs.is_empty() {
            self.spare = Some(jobs);
        }
    }
}

/// A reply slot resolved like any request that never left: retried.
fn not_sent(addr: &str) -> oneshot::Receiver<crate::backend::ReplyResult> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Err(BackendError::NotSent {
        addr: addr.to_string(),
        why: NotSentWhy::NoConnection,
    }));
    rx
}
