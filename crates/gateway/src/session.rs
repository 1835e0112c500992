//! One client connection: parse its requests, keep its Redis session state,
//! route each command, and write replies back in the order they were asked.
//!
//! Replies are kept in a FIFO of [`Pending`] entries. A command is dispatched
//! as soon as it is parsed (so a pipeline fans out to master and replicas at
//! once), and its entry waits at its place in the FIFO. An entry that cannot
//! be dispatched yet — no confirmed master during a failover, or a retry — is
//! *deferred*: it and every later command of this session are dispatched only
//! when they reach the head, which keeps the session's commands in order.
//!
//! Consecutive commands of one read that go to the same backend connection
//! are sent as one batch with one FIFO entry: the replies come back as one
//! buffer that is passed on whole unless one of them is an error to look at.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::Auth;
use belay_resp::{frame_len, parse_request, Limits, Request};
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::backend::{BackendConn, BackendError, ReplyResult, Tunnel};
use crate::commands::{Class, CommandTable};
use crate::config::ReadFrom;
use crate::discovery::Event;
use crate::pool::NodePool;
use crate::pubsub::{self, AfterMarker, InSubscription, Markers, Subscriptions};
use crate::reply;
use crate::router::{pick_replica, Fence, Prefer};
use crate::server::Shared;
use crate::topology::{ReplicaNode, Topology};

/// What a command needs from the backend side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    /// A read whose cursor only makes sense on the node that issued it (SCAN).
    CursorRead,
    Write,
    Blocking,
    /// `WAIT`/`WAITAOF`: may block, writes nothing, and may run while
    /// writes are held (it then tells how far the replicas are behind).
    Wait,
}

impl Kind {
    /// May keep its connection silent for long (BLPOP, WAIT, …).
    fn may_block(self) -> bool {
        matches!(self, Kind::Blocking | Kind::Wait)
    }
}

/// A routed command, kept until its reply is final so that it can be retried
/// where that is safe.
struct Job {
    /// The command as the client sent it.
    raw: Bytes,
    kind: Kind,
    /// Runs on the session's pinned master connection (transactions, blocking
    /// commands, non-default session state).
    pin: bool,
    /// Part of a MULTI/WATCH transaction: never retried on another connection.
    in_tx: bool,
    /// Must go to the master even though it reads (NOSCRIPT on a replica).
    force_master: bool,
    /// When the command was first deferred, for the failover hold deadline
    /// (set lazily: reading the clock per command is measurable).
    since: Option<Instant>,
    attempts: u8,
    /// The last refusal (READONLY, NOREPLICAS, …) it got, passed on if the
    /// hold runs out.
    refusal: Option<Bytes>,
}

impl Job {
    fn new(raw: Bytes, kind: Kind, pin: bool, in_tx: bool) -> Job {
        Job {
            raw,
            kind,
            pin,
            in_tx,
            force_master: false,
            since: None,
            attempts: 0,
            refusal: None,
        }
    }
}

/// The commands of one batch, in order (usually one, or a pipeline's worth).
type Jobs = Vec<Job>;

/// One reply slot in the session's FIFO.
enum Pending {
    /// The reply is known.
    Ready(Bytes),
    /// Sent as one batch; the replies of all its commands arrive on `rx`.
    Waiting {
        rx: oneshot::Receiver<ReplyResult>,
        jobs: Jobs,
        /// The pool the commands went to, if they went to the master.
        master: Option<Arc<NodePool>>,
    },
    /// Routed but not sent: waits for a master, or for its turn.
    Deferred(Job),
    /// Parsed but not yet handled, because something before it is deferred.
    Queued(Request),
    /// A subscribe command: the session becomes a pub/sub tunnel once every
    /// earlier reply is written.
    Subscribe(Request),
    /// `QUIT`: close once everything before it is written.
    Quit,
    /// Not an entry: routing's answer when the command joined the open
    /// batch, whose entry is added when the batch is sent. Never stored.
    Staged,
}

/// Where a batch is sent.
enum Target {
    /// A connection shared with other default-state sessions.
    Shared(Arc<NodePool>),
    /// One of this session's own connections.
    Own(BackendConn),
}

/// A [`Target`] as routing names it: only a batch that opens keeps one.
enum TargetRef<'a> {
    Shared(&'a Arc<NodePool>),
    Own(BackendConn),
}

/// Commands routed to the same connection, one after another, not yet sent:
/// they go out as one request when something else comes along or the
/// current input is used up.
struct OpenBatch {
    target: Target,
    /// The master pool, when the target is on the master.
    master: Option<Arc<NodePool>>,
    jobs: Jobs,
    /// One of the commands may keep the node silent (BLPOP, WAIT, …).
    blocking: bool,
}

/// A connection of this session alone.
struct Pinned {
    pool: Arc<NodePool>,
    conn: BackendConn,
}

/// Redis session state the gateway keeps on the client's behalf.
#[derive(Default)]
struct State {
    authenticated: bool,
    db: i64,
    resp3: bool,
    name: Option<Bytes>,
    /// Credentials of an ACL user the client authenticated as (passed through
    /// to the nodes on pinned connections).
    user: Option<Auth>,
    in_multi: bool,
    watching: bool,
    /// The pinned master connection was lost mid-transaction.
    tx_broken: bool,
    master_conn: Option<Pinned>,
    replica_conn: Option<Pinned>,
    /// Where this session's SCAN cursors live.
    scan_replica: Option<String>,
    fence: Option<Fence>,
    /// Writes sent and not yet answered; reads wait on the master behind them.
    unacked_writes: usize,
    /// Master pool of this session's unanswered master commands; a session
    /// never has commands in flight on two masters at once.
    inflight_master: Option<Arc<NodePool>>,
    inflight_master_count: usize,
    /// Writes went to the master on a shared connection since the last
    /// `WAIT`: the session's own connection must first be moved past them.
    shared_writes: bool,
}

impl State {
    /// Sessions in the default state may share backend connections.
    fn is_default(&self) -> bool {
        self.db == 0 && !self.resp3 && self.name.is_none() && self.user.is_none()
    }

    /// Commands replayed on a new pinned connection so it matches the session.
    fn init_commands(&self) -> Vec<Vec<Bytes>> {
        let mut init = Vec::new();
        if self.resp3 {
            init.push(vec![Bytes::from_static(b"HELLO"), Bytes::from_static(b"3")]);
        }
        if self.db != 0 {
            init.push(vec![
                Bytes::from_static(b"SELECT"),
                Bytes::from(self.db.to_string()),
            ]);
        }
        if let Some(name) = &self.name {
            init.push(vec![
                Bytes::from_static(b"CLIENT"),
                Bytes::from_static(b"SETNAME"),
                name.clone(),
            ]);
        }
        init
    }
}

pub struct Session {
    id: u64,
    shared: Arc<Shared>,
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    inbuf: BytesMut,
    out: BytesMut,
    pending: VecDeque<Pending>,
    /// Commands in `pending` beyond one per entry (batches hold several),
    /// so the pipeline limit counts commands.
    batched_extra: usize,
    /// Routed commands waiting to be sent together.
    batch: Option<OpenBatch>,
    /// Entries in `pending` that are Deferred, Queued or Subscribe.
    held: usize,
    st: State,
    /// Stop reading: QUIT, a subscribe handover, or a protocol error.
    stop_reading: bool,
    /// Set by QUIT: close after its `+OK`.
    quit_requested: bool,
    /// A queued request is being handled at the head of the FIFO: every
    /// reply before it has arrived.
    at_head: bool,
    /// The replica the reads of the current input go to.
    batch_replica: Option<Arc<NodePool>>,
    /// A batch's emptied job list, kept for the next batch: a pipeline's
    /// list then grows once, not once per read.
    spare_jobs: Option<Jobs>,
    /// How long a client may take to accept a reply before it is dropped:
    /// with `max_pipeline`, this bounds what a client that does not read can
    /// make the gateway hold.
    write_timeout: Duration,
    /// This session's view of the topology, refreshed when it changes.
    topo_rx: tokio::sync::watch::Receiver<Arc<Topology>>,
    topo: Arc<Topology>,
    /// How the fast path last routed a command name.
    last_command: Option<LastCommand>,
}

/// The last command name [`Session::handle_now`] classified, as the client
/// spelled it, and the kind it got. Clients repeat commands (a pipeline of
/// GETs, a loop of SETs): a repeat then costs one short comparison instead
/// of lowercasing, the session-command check and a table lookup. Only
/// names whose class does not depend on their arguments are kept, and only
/// for the command table they were classified by.
struct LastCommand {
    name: [u8; 24],
    len: u8,
    kind: Kind,
    table: Arc<CommandTable>,
}

impl LastCommand {
    fn new(name: &[u8], kind: Kind, table: &Arc<CommandTable>) -> Option<LastCommand> {
        let mut buf = [0u8; 24];
        buf.get_mut(..name.len())?.copy_from_slice(name);
        Some(LastCommand {
            name: buf,
            len: name.len() as u8,
            kind,
            table: table.clone(),
        })
    }

    /// The kind of `name` if it is this command and `table` is still current.
    fn kind_of(&self, name: &[u8], table: &Arc<CommandTable>) -> Option<Kind> {
        (name == &self.name[..self.len as usize] && Arc::ptr_eq(&self.table, table))
            .then_some(self.kind)
    }
}

/// How the session loop was woken.
enum Wake {
    Reply(Result<ReplyResult, oneshot::error::RecvError>),
    /// Bytes read from the client (0: it closed).
    Read(std::io::Result<usize>),
    Idle,
}

/// Reads what the client sent, once the socket says there is something.
///
/// Polled beside the head's reply, never awaited alone: a readiness that
/// turns out stale (the last read happened to drain the socket exactly)
/// leaves the session waiting on both, not stuck in a read while replies the
/// client waits for pile up. The buffer grows only once there is input, so
/// idle clients cost no buffer; a short read tells tokio the socket is
/// drained, which saves an EAGAIN syscall per request.
fn poll_read_client(
    read: &mut OwnedReadHalf,
    inbuf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<usize>> {
    std::task::ready!(read.as_ref().poll_read_ready(cx))?;
    if inbuf.capacity() - inbuf.len() < 4096 {
        inbuf.reserve(16 * 1024);
    }
    tokio_util::io::poll_read_buf(std::pin::Pin::new(read), cx, inbuf)
}

impl Session {
    pub fn new(id: u64, stream: TcpStream, shared: Arc<Shared>) -> Session {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let authenticated = shared.cfg.required_client_password().is_none();
        let write_timeout = Duration::from_secs(shared.cfg.client_write_timeout_secs.max(1));
        let mut topo_rx = shared.topology.clone();
        let topo = topo_rx.borrow_and_update().clone();
        Session {
            id,
            shared,
            read,
            write,
            // Allocated on first use: ten thousand idle clients cost no buffers.
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            pending: VecDeque::new(),
            batched_extra: 0,
            batch: None,
            held: 0,
            st: State {
                authenticated,
                ..State::default()
            },
            stop_reading: false,
            quit_requested: false,
            at_head: false,
            batch_replica: None,
            spare_jobs: None,
            write_timeout,
            topo,
            topo_rx,
            last_command: None,
        }
    }

    pub async fn run(mut self) {
        if let Err(e) = self.serve().await {
            tracing::debug!(session = self.id, error = %e, "client connection ended");
        }
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        let idle = match self.shared.cfg.idle_timeout_secs {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        loop {
            if self.settle_head().await? {
                return Ok(());
            }
            if !self.out.is_empty() {
                write_client(&mut self.write, &self.out, self.write_timeout).await?;
                self.out.clear();
            }
            if self.stop_reading && self.pending.is_empty() {
                return Ok(());
            }
            let can_read = !self.stop_reading
                && self.pending.len() + self.batched_extra < self.shared.cfg.max_pipeline;
            let idle_armed = idle.is_some() && self.pending.is_empty();
            let wake = {
                let head = match self.pending.front_mut() {
                    Some(Pending::Waiting { rx, .. }) => Some(rx),
                    _ => None,
                };
                let (read, inbuf) = (&mut self.read, &mut self.inbuf);
                tokio::select! {
                    biased;
                    r = async { match head { Some(rx) => rx.await, None => std::future::pending().await } } => Wake::Reply(r),
                    r = std::future::poll_fn(|cx| poll_read_client(read, inbuf, cx)), if can_read => Wake::Read(r),
                    _ = async {
                        match idle {
                            Some(d) if idle_armed => tokio::time::sleep(d).await,
                            _ => std::future::pending().await,
                        }
                    } => Wake::Idle,
                }
            };
            match wake {
                Wake::Reply(r) => self.resolve_head(r),
                Wake::Read(Ok(0)) => return Ok(()),
                Wake::Read(Ok(_)) => self.parse_input().await,
                Wake::Read(Err(e)) => return Err(e),
                Wake::Idle => return Ok(()),
            }
        }
    }

    /// Parses every complete request in the input buffer and handles it.
    async fn parse_input(&mut self) {
        // Reads of one batch go to one replica, so their replies come back
        // together: one wake-up and one write to the client instead of several.
        self.batch_replica = None;
        while !self.stop_reading {
            let limits = self.limits();
            match parse_request(&mut self.inbuf, &limits) {
                Ok(Some(req)) => {
                    if req.is_empty() {
                        continue;
                    }
                    if self.held > 0 {
                        self.push(Pending::Queued(req));
                    } else {
                        let p = match self.handle_now(req) {
                            Ok(p) => p,
                            Err(req) => self.handle(req).await,
                        };
                        self.push(p);
                        if std::mem::take(&mut self.quit_requested) {
                            self.push(Pending::Quit);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let msg = if self.st.authenticated {
                        e.to_string()
                    } else {
                        format!("{e} (before AUTH)")
                    };
                    tracing::info!(session = self.id, error = %msg, "closing client after a protocol error");
                    self.push(Pending::Ready(reply::error(&format!("ERR {msg}"))));
                    self.push(Pending::Quit);
                    break;
                }
            }
        }
        self.send_batch();
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

    /// Adds an entry at the end of the FIFO, after sending the open batch
    /// (which comes before it). `Staged` adds nothing: the command is in the batch.
    fn push(&mut self, p: Pending) {
        if matches!(p, Pending::Staged) {
            return;
        }
        self.send_batch();
        self.enqueue(p);
    }

    fn enqueue(&mut self, p: Pending) {
        debug_assert!(!matches!(p, Pending::Staged));
        if matches!(
            p,
            Pending::Deferred(_) | Pending::Queued(_) | Pending::Subscribe(_)
        ) {
            self.held += 1;
        }
        if matches!(p, Pending::Quit | Pending::Subscribe(_)) {
            self.stop_reading = true;
        }
        self.pending.push_back(p);
    }

    /// Writes out every ready reply at the head and dispatches deferred work
    /// that reached the head. Returns true when the session must end.
    async fn settle_head(&mut self) -> std::io::Result<bool> {
        loop {
            match self.pending.front_mut() {
                None | Some(Pending::Waiting { .. }) => {
                    // Collect replies that are already there without waiting.
                    if let Some(Pending::Waiting { rx, .. }) = self.pending.front_mut() {
                        if let Ok(r) = rx.try_recv() {
                            self.resolve_head(Ok(r));
                            continue;
                        }
                    }
                    return Ok(false);
                }
                Some(Pending::Ready(_)) => {
                    if let Some(Pending::Ready(b)) = self.pending.pop_front() {
                        self.out.extend_from_slice(&b);
                    }
                }
                Some(Pending::Quit) => {
                    write_client(&mut self.write, &self.out, self.write_timeout).await?;
                    self.out.clear();
                    return Ok(true);
                }
                Some(Pending::Queued(_)) => {
                    let Some(Pending::Queued(req)) = self.pending.pop_front() else {
                        unreachable!()
                    };
                    self.held -= 1;
                    self.at_head = true;
                    let p = self.handle(req).await;
                    self.at_head = false;
                    let p = self.unless_staged(p).await;
                    if std::mem::take(&mut self.quit_requested) {
                        self.stop_reading = true;
                        self.pending.push_front(Pending::Quit);
                    }
                    self.replace_head(p);
                }
                Some(Pending::Deferred(_)) => {
                    let Some(Pending::Deferred(job)) = self.pending.pop_front() else {
                        unreachable!()
                    };
                    self.held -= 1;
                    // Let the client see everything before this while we wait.
                    if !self.out.is_empty() {
                        write_client(&mut self.write, &self.out, self.write_timeout).await?;
                        self.out.clear();
                    }
                    let p = Box::pin(self.dispatch_at_head(job)).await;
                    let p = self.unless_staged(p).await;
                    self.replace_head(p);
                }
                Some(Pending::Subscribe(_)) => {
                    let Some(Pending::Subscribe(req)) = self.pending.pop_front() else {
                        unreachable!()
                    };
                    self.held -= 1;
                    write_client(&mut self.write, &self.out, self.write_timeout).await?;
                    self.out.clear();
                    match Box::pin(self.tunnel(req)).await? {
                        TunnelEnd::Closed => return Ok(true),
                        TunnelEnd::Unsubscribed { then } => {
                            // A normal session again, with what the client sent meanwhile.
                            self.stop_reading = false;
                            if let Some(req) = then {
                                let p = self.handle(req).await;
                                self.push(p);
                            }
                            if !self.inbuf.is_empty() {
                                Box::pin(self.parse_input()).await;
                            }
                        }
                    }
                }
                Some(Pending::Staged) => unreachable!("never stored"),
            }
        }
    }

    /// At the head, a staged command is sent at once (as a batch of one)
    /// and its entry takes the head's place.
    async fn unless_staged(&mut self, p: Pending) -> Pending {
        if !matches!(p, Pending::Staged) {
            return p;
        }
        debug_assert!(self.batch.as_ref().is_some_and(|b| b.jobs.len() == 1));
        self.connect_batch_target().await;
        self.batch_entry()
            .expect("a staged command is in the open batch")
    }

    /// Sends the open batch, if any, and adds its entry to the FIFO. A
    /// shared connection that is down fails the batch as not sent, and its
    /// commands are retried at the head, where connecting is awaited.
    fn send_batch(&mut self) {
        if let Some(p) = self.batch_entry() {
            self.enqueue(p);
        }
    }

    /// Connects the shared connection the open batch goes to, if it is down.
    async fn connect_batch_target(&mut self) {
        let slot = self.shared.slot(self.id);
        let pool = match self.batch.as_ref().map(|b| &b.target) {
            Some(Target::Shared(pool)) if !pool.shared_is_up(slot) => pool.clone(),
            _ => return,
        };
        // Rare, and boxed so that the common path's future stays small. A
        // failure shows when the batch is sent: it is then retried.
        if let Err(e) = Box::pin(pool.shared(slot)).await {
            tracing::debug!(session = self.id, error = %e, "connection unavailable");
        }
    }

    /// Sends the open batch, if any, and returns its FIFO entry.
    fn batch_entry(&mut self) -> Option<Pending> {
        let batch = self.batch.take()?;
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
        let rx = match batch.target {
            Target::Shared(pool) => pool
                .try_send_shared(self.shared.slot(self.id), raw, count as u32)
                .unwrap_or_else(|_| {
                    // Resolved like any request that never left: retried.
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(Err(BackendError::NotSent {
                        addr: pool.addr.clone(),
                    }));
                    rx
                }),
            Target::Own(conn) => conn.send_batch(raw, count as u32, batch.blocking),
        };
        self.batched_extra += count - 1;
        Some(Pending::Waiting {
            rx,
            jobs: batch.jobs,
            master: batch.master,
        })
    }

    /// Adds a routed command to the open batch; a batch for another
    /// connection is sent first.
    fn stage(&mut self, target: TargetRef<'_>, master: Option<&Arc<NodePool>>, job: Job) {
        let joins = self.batch.as_ref().is_some_and(|b| {
            b.master.is_some() == master.is_some()
                && match (&b.target, &target) {
                    (Target::Shared(a), TargetRef::Shared(b)) => Arc::ptr_eq(a, b),
                    (Target::Own(a), TargetRef::Own(b)) => a.same_as(b),
                    _ => false,
                }
        });
        if !joins {
            self.send_batch();
            self.batch = Some(OpenBatch {
                target: match target {
                    TargetRef::Shared(pool) => Target::Shared(pool.clone()),
                    TargetRef::Own(conn) => Target::Own(conn),
                },
                master: master.cloned(),
                jobs: self.spare_jobs.take().unwrap_or_default(),
                blocking: false,
            });
        }
        let batch = self.batch.as_mut().expect("opened above");
        batch.blocking |= job.kind.may_block();
        batch.jobs.push(job);
    }

    fn replace_head(&mut self, p: Pending) {
        if matches!(
            p,
            Pending::Deferred(_) | Pending::Queued(_) | Pending::Subscribe(_)
        ) {
            self.held += 1;
        }
        if matches!(p, Pending::Quit | Pending::Subscribe(_)) {
            self.stop_reading = true;
        }
        self.pending.push_front(p);
    }

    /// The head's replies (or failure) arrived: decide what the client sees.
    fn resolve_head(&mut self, r: Result<ReplyResult, oneshot::error::RecvError>) {
        let Some(Pending::Waiting {
            mut jobs, master, ..
        }) = self.pending.pop_front()
        else {
            return;
        };
        self.batched_extra -= jobs.len() - 1;
        if master.is_some() {
            self.st.inflight_master_count =
                self.st.inflight_master_count.saturating_sub(jobs.len());
            if self.st.inflight_master_count == 0 {
                self.st.inflight_master = None;
            }
        }
        let writes = jobs
            .iter()
            .filter(|j| matches!(j.kind, Kind::Write | Kind::Blocking))
            .count();
        self.st.unacked_writes = self.st.unacked_writes.saturating_sub(writes);
        let result = r.unwrap_or_else(|_| {
            Err(BackendError::Lost {
                addr: master.as_ref().map(|p| p.addr.clone()).unwrap_or_default(),
            })
        });
        let mut next: SmallVec<[Pending; 4]> = SmallVec::new();
        match result {
            Ok(replies) if !replies.has_error => {
                // The common case: every reply goes to the client as it is.
                if master.is_some() && writes > 0 {
                    self.st.fence = Some(Fence {
                        acked_at: Instant::now(),
                    });
                }
                next.push(Pending::Ready(replies.frames));
                jobs.clear();
            }
            Ok(replies) => {
                let mut frames = replies.frames;
                let limits = Limits::for_replies();
                for job in jobs.drain(..) {
                    // The reader checked the framing; the fallback only
                    // keeps a malformed tail from being lost.
                    let n = match frame_len(&frames, &limits) {
                        Ok(Some(n)) => n,
                        _ => frames.len(),
                    };
                    let frame = frames.split_to(n);
                    next.push(self.on_reply(frame, job, master.clone()));
                }
            }
            Err(e) => {
                let mut suspected = false;
                for job in jobs.drain(..) {
                    next.push(self.on_failure(&e, job, master.as_ref(), &mut suspected));
                }
            }
        }
        for p in next.into_iter().rev() {
            self.replace_head(p);
        }
        // Kept unless a large pipeline made it big.
        if jobs.capacity() <= 64 {
            self.spare_jobs = Some(jobs);
        }
    }

    /// A command got no reply: retry it where that is safe, else tell the client.
    fn on_failure(
        &mut self,
        e: &BackendError,
        job: Job,
        master: Option<&Arc<NodePool>>,
        suspected: &mut bool,
    ) -> Pending {
        if !e.was_sent() && !job.in_tx {
            // Never reached the node: safe to send again once there is somewhere to send it.
            return Pending::Deferred(Job {
                attempts: job.attempts.saturating_add(1),
                ..job
            });
        }
        if let Some(m) = master.filter(|_| !*suspected) {
            *suspected = true;
            let _ = self.shared.events.send(Event::Suspect {
                addr: m.addr.clone(),
            });
        }
        if matches!(job.kind, Kind::Read | Kind::CursorRead) && job.attempts < 2 && !job.in_tx {
            // A read has no effect: try it elsewhere.
            return Pending::Deferred(Job {
                attempts: job.attempts.saturating_add(1),
                ..job
            });
        }
        if job.in_tx || job.pin {
            self.st.master_conn = None;
            if self.st.in_multi || self.st.watching {
                self.st.tx_broken = true;
            }
        }
        Pending::Ready(reply::error(&format!("ERR belay: {e}")))
    }

    fn on_reply(&mut self, bytes: Bytes, mut job: Job, master: Option<Arc<NodePool>>) -> Pending {
        // Refusals that mean "not run, and another node or a moment later
        // may take it": a demoted master (READONLY), a master that lost its
        // replicas (NOREPLICAS, e.g. during a failover), a node loading its
        // data or a replica cut off from its master. Held and retried within
        // the failover hold, then the refusal is passed on.
        let refused = [
            &b"-READONLY"[..],
            b"-NOREPLICAS",
            b"-LOADING",
            b"-MASTERDOWN",
        ]
        .iter()
        .any(|p| bytes.starts_with(p));
        if refused && !job.in_tx {
            let since = *job.since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.shared.cfg.failover_hold() {
                if let Some(m) = master.as_ref().filter(|_| job.refusal.is_none()) {
                    let _ = self.shared.events.send(Event::Suspect {
                        addr: m.addr.clone(),
                    });
                    if bytes.starts_with(b"-READONLY") {
                        m.close();
                    }
                }
                // A read a replica refused goes to the master instead.
                let force_master = job.force_master || master.is_none();
                return Pending::Deferred(Job {
                    attempts: job.attempts.saturating_add(1),
                    refusal: Some(bytes),
                    force_master,
                    ..job
                });
            }
        }
        if bytes.starts_with(b"-NOSCRIPT") && master.is_none() && !job.force_master {
            // The script is loaded on the master but not on this replica.
            return Pending::Deferred(Job {
                force_master: true,
                ..job
            });
        }
        if master.is_some() && matches!(job.kind, Kind::Write | Kind::Blocking) {
            self.st.fence = Some(Fence {
                acked_at: Instant::now(),
            });
        }
        Pending::Ready(bytes)
    }

    /// Handles one request in session order.
    async fn handle(&mut self, req: Request) -> Pending {
        let mut name_buf = [0u8; 24];
        let name = lower_name(req.name().unwrap_or_default(), &mut name_buf);
        if !self.st.authenticated && !matches!(name, b"auth" | b"hello" | b"quit" | b"reset") {
            return Pending::Ready(reply::error("NOAUTH Authentication required."));
        }
        if self.st.in_multi
            && !matches!(
                name,
                b"exec" | b"discard" | b"multi" | b"watch" | b"quit" | b"reset"
            )
        {
            if self.st.tx_broken {
                return Pending::Ready(reply::error(
                    "ERR belay: transaction aborted: the connection to the master was lost",
                ));
            }
            // Redis queues it; a denied command must not be queued either.
            if let Class::Denied(reason) = self.classify(name, &req) {
                return denied(&req, reason);
            }
            return self.route(req, Kind::Write, true, true).await;
        }
        let command = session_command(name);
        match command {
            Some(SessionCommand::Auth) => Box::pin(self.auth(&req)).await,
            Some(SessionCommand::Hello) => Box::pin(self.hello(&req)).await,
            Some(SessionCommand::Select) => self.select(&req),
            Some(SessionCommand::Quit) => {
                self.quit_requested = true;
                Pending::Ready(reply::ok())
            }
            Some(SessionCommand::Reset) => {
                let authenticated = self.shared.cfg.required_client_password().is_none();
                self.st = State {
                    authenticated,
                    ..State::default()
                };
                Pending::Ready(reply::simple("RESET"))
            }
            Some(SessionCommand::Ping) if req.argc() <= 2 => match req.arg(1) {
                Some(msg) => Pending::Ready(reply::bulk(msg)),
                None => Pending::Ready(reply::simple("PONG")),
            },
            Some(SessionCommand::Multi) => {
                if self.st.in_multi {
                    return Pending::Ready(reply::error("ERR MULTI calls can not be nested"));
                }
                self.st.in_multi = true;
                self.route(req, Kind::Write, true, true).await
            }
            Some(SessionCommand::ExecOrDiscard) => {
                if !self.st.in_multi {
                    return Pending::Ready(reply::error(&format!(
                        "ERR {} without MULTI",
                        String::from_utf8_lossy(name).to_ascii_uppercase()
                    )));
                }
                let broken = self.st.tx_broken;
                self.st.in_multi = false;
                self.st.watching = false;
                self.st.tx_broken = false;
                if broken {
                    self.st.master_conn = None;
                    return Pending::Ready(if name == b"exec" {
                        reply::error("EXECABORT Transaction discarded because the connection to the master was lost")
                    } else {
                        reply::ok()
                    });
                }
                self.route(req, Kind::Write, true, true).await
            }
            Some(SessionCommand::Watch) => {
                if self.st.in_multi {
                    return Pending::Ready(reply::error("ERR WATCH inside MULTI is not allowed"));
                }
                self.st.watching = true;
                self.route(req, Kind::Write, true, true).await
            }
            Some(SessionCommand::Unwatch) => {
                self.st.watching = false;
                if self.st.master_conn.is_some() {
                    self.route(req, Kind::Write, true, false).await
                } else {
                    Pending::Ready(reply::ok())
                }
            }
            Some(SessionCommand::Subscribe) => Pending::Subscribe(req),
            Some(SessionCommand::Client) if req.arg_is(1, "SETNAME") => self.client_setname(&req),
            Some(SessionCommand::Client) if req.arg_is(1, "GETNAME") => {
                Pending::Ready(match &self.st.name {
                    Some(n) => reply::bulk(n),
                    None => reply::null(self.st.resp3),
                })
            }
            Some(SessionCommand::Client) if req.arg_is(1, "ID") => {
                Pending::Ready(reply::integer(self.id as i64))
            }
            Some(SessionCommand::Belay) => self.belay_command(&req),
            Some(SessionCommand::Wait) => match self.classify(name, &req) {
                Class::Denied(reason) => denied(&req, reason),
                _ => Box::pin(self.wait(req)).await,
            },
            _ => {
                if command == Some(SessionCommand::Script)
                    && (req.arg_is(1, "LOAD") || req.arg_is(1, "FLUSH"))
                {
                    self.script_cache_on_replicas(&req);
                }
                match self.classify(name, &req) {
                    Class::Denied(reason) => denied(&req, reason),
                    Class::Read => self.route(req, read_kind(name), false, false).await,
                    Class::Write => {
                        let pin = self.st.master_conn.is_some() || !self.st.is_default();
                        self.route(req, Kind::Write, pin, false).await
                    }
                    Class::Blocking => self.route(req, Kind::Blocking, true, false).await,
                }
            }
        }
    }

    /// `SCRIPT LOAD` and `SCRIPT FLUSH` go to the master like any command;
    /// Redis does not replicate the script cache, so the gateway also sends
    /// them to every replica, on this session's shared connections, and
    /// ignores their replies. An `EVALSHA_RO` of the session, sent after a
    /// load on the same connections, then runs on a replica instead of
    /// bouncing off it with `NOSCRIPT` (still retried on the master for a
    /// replica that missed it: one that was down, or joined later); after a
    /// flush, no replica runs a script the master forgot. Not for a client
    /// logged in as another ACL user: the gateway's own credentials might
    /// let it do what its own may not.
    fn script_cache_on_replicas(&mut self, req: &Request) {
        if self.st.user.is_some() {
            return;
        }
        let slot = self.shared.slot(self.id);
        for replica in &self.current_topology().replicas {
            // The reply receiver is dropped at once: nobody waits for it.
            let _ = replica.pool.try_send_shared(slot, req.raw.clone(), 1);
        }
    }

    /// The command's class; `name` is its lowercase name from [`lower_name`].
    fn classify(&mut self, name: &[u8], req: &Request) -> Class {
        classify_in(&self.current_topology().commands, name, req).0
    }

    /// The current topology; re-read only when discovery published a new one.
    fn topology(&mut self) -> Arc<Topology> {
        self.current_topology().clone()
    }

    /// Like [`Session::topology`], borrowed: no reference count touched.
    fn current_topology(&mut self) -> &Arc<Topology> {
        if self.topo_rx.has_changed().unwrap_or(false) {
            self.topo = self.topo_rx.borrow_and_update().clone();
        }
        &self.topo
    }

    async fn route(&mut self, req: Request, kind: Kind, pin: bool, in_tx: bool) -> Pending {
        let job = Job::new(req.raw, kind, pin, in_tx);
        match self.try_dispatch(job).await {
            Ok(p) => p,
            Err(job) => Pending::Deferred(job),
        }
    }

    /// [`Session::handle`] for the common case, without the async
    /// machinery: a read or write of a session that shares connections.
    /// Gives the request back when `handle` must take it.
    fn handle_now(&mut self, req: Request) -> Result<Pending, Request> {
        if !self.st.authenticated
            || self.st.in_multi
            || !self.st.is_default()
            || self.st.master_conn.is_some()
        {
            return Err(req);
        }
        // One look at the topology for both classifying and routing.
        let topo = self.topology();
        let raw_name = req.name().unwrap_or_default();
        let kind = match self
            .last_command
            .as_ref()
            .and_then(|l| l.kind_of(raw_name, &topo.commands))
        {
            Some(kind) => kind,
            None => {
                let mut name_buf = [0u8; 24];
                let name = lower_name(raw_name, &mut name_buf);
                if session_command(name).is_some() {
                    return Err(req);
                }
                let (class, resolved) = classify_in(&topo.commands, name, &req);
                let kind = match class {
                    Class::Read => read_kind(name),
                    Class::Write => Kind::Write,
                    Class::Blocking | Class::Denied(_) => return Err(req),
                };
                if resolved {
                    self.last_command = LastCommand::new(raw_name, kind, &topo.commands);
                }
                kind
            }
        };
        let job = Job::new(req.raw, kind, false, false);
        Ok(self
            .try_dispatch_shared(&topo, job)
            .unwrap_or_else(Pending::Deferred))
    }

    /// True when the job may go on a connection shared with other sessions.
    fn shares_connections(&self, job: &Job) -> bool {
        !job.pin && self.st.is_default() && self.st.master_conn.is_none()
    }

    /// The replica a read should go to, if it should go to one.
    fn choose_replica<'t>(&self, topo: &'t Topology, job: &Job) -> Option<&'t ReplicaNode> {
        if !self.wants_replica(job) {
            return None;
        }
        let fence = self.st.fence.filter(|_| self.shared.cfg.read_your_writes);
        let prefer = if job.kind == Kind::CursorRead {
            self.st
                .scan_replica
                .as_deref()
                .map_or(Prefer::Any, Prefer::Addr)
        } else {
            self.batch_replica
                .as_ref()
                .map_or(Prefer::Any, Prefer::Pool)
        };
        pick_replica(topo, fence, prefer, crate::backend::write_epoch())
    }

    fn wants_replica(&self, job: &Job) -> bool {
        matches!(job.kind, Kind::Read | Kind::CursorRead)
            && !job.force_master
            && !job.pin
            && self.shared.cfg.read_from != ReadFrom::Master
            && (self.st.unacked_writes == 0 || !self.shared.cfg.read_your_writes)
    }

    /// Remembers where a read went: SCAN cursors live on one node, and the
    /// other reads of this input follow the first.
    fn note_replica(&mut self, job: &Job, pool: &Arc<NodePool>) {
        if job.kind == Kind::CursorRead {
            self.st.scan_replica = Some(pool.addr.clone());
        } else if self.batch_replica.is_none() {
            self.batch_replica = Some(pool.clone());
        }
    }

    /// The master pool the job may go to now, if any.
    fn choose_master<'t>(&self, topo: &'t Topology, job: &Job) -> Option<&'t Arc<NodePool>> {
        // Reads (and WAIT) may use the master even while writes are held.
        let reads = matches!(job.kind, Kind::Read | Kind::CursorRead | Kind::Wait) && !job.in_tx;
        let pool = if reads {
            topo.read_master.as_ref()
        } else {
            topo.master.as_ref()
        }?;
        match &self.st.inflight_master {
            // Commands still in flight on the old master: wait for them.
            Some(prev) if !Arc::ptr_eq(prev, pool) => None,
            _ => Some(pool),
        }
    }

    /// Counts a job sent to the master.
    fn note_master(&mut self, job: &Job, pool: &Arc<NodePool>) {
        if matches!(job.kind, Kind::Write | Kind::Blocking) {
            self.st.unacked_writes += 1;
        }
        if self.st.inflight_master.is_none() {
            self.st.inflight_master = Some(pool.clone());
        }
        self.st.inflight_master_count += 1;
    }

    /// [`Session::try_dispatch`] for a job on shared connections: nothing
    /// to open, so nothing to await.
    fn try_dispatch_shared(&mut self, topo: &Topology, job: Job) -> Result<Pending, Job> {
        debug_assert!(self.shares_connections(&job));
        if let Some(replica) = self.choose_replica(topo, &job) {
            self.note_replica(&job, &replica.pool);
            self.stage(TargetRef::Shared(&replica.pool), None, job);
            return Ok(Pending::Staged);
        }
        if self.wants_replica(&job) && self.shared.cfg.read_from == ReadFrom::Replica {
            return Err(job);
        }
        let Some(pool) = self.choose_master(topo, &job) else {
            return Err(job);
        };
        if pool.is_closed() {
            return Err(job);
        }
        self.note_master(&job, pool);
        self.st.shared_writes |= job.kind == Kind::Write;
        self.stage(TargetRef::Shared(pool), Some(pool), job);
        Ok(Pending::Staged)
    }

    /// Sends the job now if it can be; gives it back if it must wait.
    async fn try_dispatch(&mut self, job: Job) -> Result<Pending, Job> {
        let topo = self.topology();
        if self.shares_connections(&job) {
            return self.try_dispatch_shared(&topo, job);
        }
        if let Some(replica) = self.choose_replica(&topo, &job) {
            // Reads share connections unless the session's state says otherwise.
            let target = if self.st.is_default() {
                Some(TargetRef::Shared(&replica.pool))
            } else {
                self.replica_conn(&replica.pool).await.map(TargetRef::Own)
            };
            if let Some(target) = target {
                self.note_replica(&job, &replica.pool);
                self.stage(target, None, job);
                return Ok(Pending::Staged);
            }
        }
        if self.wants_replica(&job) && self.shared.cfg.read_from == ReadFrom::Replica {
            return Err(job);
        }
        let Some(pool) = self.choose_master(&topo, &job) else {
            return Err(job);
        };
        let conn = match self.master_conn(pool, job.in_tx).await {
            Some(c) => c,
            None if job.in_tx && (self.st.in_multi || self.st.watching || self.st.tx_broken) => {
                return Ok(Pending::Ready(reply::error(
                    "ERR belay: transaction aborted: the connection to the master was lost",
                )));
            }
            None => return Err(job),
        };
        self.note_master(&job, pool);
        self.stage(TargetRef::Own(conn), Some(pool), job);
        Ok(Pending::Staged)
    }

    /// Dispatches a deferred job at the head of the FIFO, waiting for a
    /// master up to the failover hold.
    async fn dispatch_at_head(&mut self, mut job: Job) -> Pending {
        let since = *job.since.get_or_insert_with(Instant::now);
        let deadline = since + self.shared.cfg.failover_hold();
        let mut topo_rx = self.shared.topology.clone();
        if job.refusal.is_some() {
            // Sending it straight back to the node that refused it is
            // pointless: give the node and the topology a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            topo_rx.borrow_and_update();
            job = match self.try_dispatch(job).await {
                Ok(p) => return p,
                Err(job) => job,
            };
            let now = Instant::now();
            if now >= deadline {
                if let Some(refusal) = job.refusal {
                    return Pending::Ready(refusal);
                }
                let what = if matches!(job.kind, Kind::Read | Kind::CursorRead) {
                    "no replica or master"
                } else {
                    "no confirmed master"
                };
                return Pending::Ready(reply::error(&format!(
                    "TRYAGAIN belay: {what} for {} ms (failover in progress?); the command was not run",
                    self.shared.cfg.failover_hold_ms
                )));
            }
            // Wake on the next topology, or soon anyway (connect backoff).
            let wait = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(wait, topo_rx.changed()).await;
        }
    }

    /// This session's own master connection, opened (and set up) if needed.
    async fn master_conn(&mut self, pool: &Arc<NodePool>, in_tx: bool) -> Option<BackendConn> {
        if let Some(p) = &self.st.master_conn {
            if Arc::ptr_eq(&p.pool, pool) && p.conn.is_alive() && !pool.is_closed() {
                return Some(p.conn.clone());
            }
            // Lost: a transaction on it cannot continue on another connection.
            self.st.master_conn = None;
            if in_tx || self.st.in_multi || self.st.watching {
                self.st.tx_broken = true;
                return None;
            }
        }
        // Boxed: a rare path that would otherwise grow every session's future.
        match Box::pin(pool.dedicated(self.st.init_commands(), self.st.user.clone(), false)).await {
            Ok(conn) => {
                self.st.master_conn = Some(Pinned {
                    pool: pool.clone(),
                    conn: conn.clone(),
                });
                Some(conn)
            }
            Err(e) => {
                tracing::debug!(session = self.id, error = %e, "cannot open a pinned master connection");
                None
            }
        }
    }

    /// This session's pinned connection to `pool`, opened if needed.
    async fn replica_conn(&mut self, pool: &Arc<NodePool>) -> Option<BackendConn> {
        if let Some(p) = &self.st.replica_conn {
            if Arc::ptr_eq(&p.pool, pool) && p.conn.is_alive() {
                return Some(p.conn.clone());
            }
        }
        // Boxed: a rare path that would otherwise grow every session's future.
        match Box::pin(pool.dedicated(self.st.init_commands(), self.st.user.clone(), false)).await {
            Ok(conn) => {
                self.st.replica_conn = Some(Pinned {
                    pool: pool.clone(),
                    conn: conn.clone(),
                });
                Some(conn)
            }
            Err(_) => None,
        }
    }

    /// Replays a state change on pinned connections (their replies are not
    /// the client's). The open batch goes first: it may hold commands for
    /// those connections that were sent before the change.
    fn replay_on_pinned(&mut self, args: &[&[u8]]) {
        self.send_batch();
        let raw = belay_resp::encode_command(args).freeze();
        for p in [&self.st.master_conn, &self.st.replica_conn]
            .into_iter()
            .flatten()
        {
            p.conn.send_ignoring_reply(raw.clone());
        }
    }

    async fn auth(&mut self, req: &Request) -> Pending {
        let (user, pass) = match req.argc() {
            2 => (None, req.arg_bytes(1).unwrap_or_default()),
            3 => (req.arg_bytes(1), req.arg_bytes(2).unwrap_or_default()),
            _ => {
                return Pending::Ready(reply::error(
                    "ERR wrong number of arguments for 'auth' command",
                ))
            }
        };
        match self.check_credentials(user.as_ref(), &pass).await {
            Ok(()) => Pending::Ready(reply::ok()),
            Err(e) => Pending::Ready(e),
        }
    }

    /// Checks credentials the way Redis would; on success the session is
    /// authenticated (as the gateway's client user, or as an ACL user whose
    /// credentials are then used on this session's pinned connections).
    async fn check_credentials(&mut self, user: Option<&Bytes>, pass: &Bytes) -> Result<(), Bytes> {
        let is_default = user.is_none_or(|u| u.as_ref() == b"default");
        if is_default {
            return match self.shared.cfg.required_client_password() {
                None => Err(reply::error(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                )),
                Some(p) if constant_time_eq(p.as_bytes(), pass) => {
                    self.st.authenticated = true;
                    Ok(())
                }
                Some(_) => Err(reply::error(
                    "WRONGPASS invalid username-password pair or user is disabled.",
                )),
            };
        }
        // Another ACL user: let the master decide, then use those credentials.
        let auth = Auth {
            username: user.map(|u| String::from_utf8_lossy(u).into_owned()),
            password: String::from_utf8_lossy(pass).into_owned(),
        };
        let topo = self.topology();
        let Some(master) = topo.master.clone() else {
            return Err(reply::error(
                "TRYAGAIN belay: no confirmed master to check the credentials against",
            ));
        };
        match master
            .dedicated(self.st.init_commands(), Some(auth.clone()), false)
            .await
        {
            Ok(conn) => {
                self.st.user = Some(auth);
                self.st.authenticated = true;
                self.st.master_conn = Some(Pinned { pool: master, conn });
                self.st.replica_conn = None;
                Ok(())
            }
            Err(crate::pool::PoolError::Connect(e)) if e.is_auth() => Err(reply::error(
                "WRONGPASS invalid username-password pair or user is disabled.",
            )),
            Err(e) => Err(reply::error(&format!(
                "ERR belay: cannot check credentials: {e}"
            ))),
        }
    }

    async fn hello(&mut self, req: &Request) -> Pending {
        let mut resp3 = self.st.resp3;
        let mut i = 1;
        if let Some(v) = req.arg(1) {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                Some(2) => resp3 = false,
                Some(3) => resp3 = true,
                Some(_) => {
                    return Pending::Ready(reply::error("NOPROTO unsupported protocol version"))
                }
                None => {
                    return Pending::Ready(reply::error(
                        "ERR Protocol version is not an integer or out of range",
                    ))
                }
            }
            i = 2;
        }
        let mut name = None;
        while i < req.argc() {
            if req.arg_is(i, "AUTH") && i + 2 < req.argc() {
                let (u, p) = (
                    req.arg_bytes(i + 1),
                    req.arg_bytes(i + 2).unwrap_or_default(),
                );
                if let Err(e) = self.check_credentials(u.as_ref(), &p).await {
                    return Pending::Ready(e);
                }
                i += 3;
            } else if req.arg_is(i, "SETNAME") && i + 1 < req.argc() {
                name = req.arg_bytes(i + 1);
                i += 2;
            } else {
                return Pending::Ready(reply::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(req.arg(i).unwrap_or_default())
                )));
            }
        }
        if !self.st.authenticated {
            return Pending::Ready(reply::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            ));
        }
        if resp3 != self.st.resp3 {
            self.st.resp3 = resp3;
            let proto: &[u8] = if resp3 { b"3" } else { b"2" };
            self.replay_on_pinned(&[b"HELLO", proto]);
        }
        if let Some(n) = name {
            self.st.name = Some(n.clone());
            self.replay_on_pinned(&[b"CLIENT", b"SETNAME", &n]);
        }
        let version = self.topology().server_version.clone();
        Pending::Ready(reply::hello(self.st.resp3, &version, self.id))
    }

    fn select(&mut self, req: &Request) -> Pending {
        if req.argc() != 2 {
            return Pending::Ready(reply::error(
                "ERR wrong number of arguments for 'select' command",
            ));
        }
        let Some(db) = std::str::from_utf8(req.arg(1).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return Pending::Ready(reply::error("ERR value is not an integer or out of range"));
        };
        if !(0..self.shared.databases).contains(&db) {
            return Pending::Ready(reply::error("ERR DB index is out of range"));
        }
        if db != self.st.db {
            self.st.db = db;
            self.replay_on_pinned(&[b"SELECT", req.arg(1).unwrap_or_default()]);
        }
        Pending::Ready(reply::ok())
    }

    fn client_setname(&mut self, req: &Request) -> Pending {
        let Some(name) = req.arg_bytes(2).filter(|_| req.argc() == 3) else {
            return Pending::Ready(reply::error(
                "ERR wrong number of arguments for 'client|setname' command",
            ));
        };
        if name.iter().any(|&b| b <= b' ' || b > b'~') {
            return Pending::Ready(reply::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        self.st.name = if name.is_empty() {
            None
        } else {
            Some(name.clone())
        };
        self.replay_on_pinned(&[b"CLIENT", b"SETNAME", &name]);
        Pending::Ready(reply::ok())
    }

    /// `WAIT` and `WAITAOF` count the replicas that acknowledged the writes
    /// of the *connection* they run on. On a connection shared with other
    /// sessions that would be the wrong writes, and the wait would hold up
    /// every session behind it for its whole timeout. So they run on the
    /// session's own master connection, where its writes go from then on.
    ///
    /// When earlier writes went on a shared connection, the own connection
    /// must first be moved past them: once every one of them is answered,
    /// the session sends a `PUBLISH` to a gateway channel on it, the one
    /// command that replicates without touching data. Its replication
    /// offset is then beyond those writes, and the `WAIT` counts them.
    async fn wait(&mut self, req: Request) -> Pending {
        if self.st.shared_writes {
            if self.st.unacked_writes > 0 && !self.at_head {
                // Handled again at the head of the FIFO, once they are
                // answered (there, nothing before it is left unanswered).
                return Pending::Queued(req);
            }
            // The confirmed master, even while writes are held (see `choose_master`).
            let topo = self.topology();
            let conn = match topo.read_master.as_ref() {
                Some(pool) => self.master_conn(pool, false).await,
                None => None,
            };
            let Some(conn) = conn else {
                return Pending::Ready(reply::error(&format!(
                    "ERR belay: {} cannot run now: no connection to the master (failover in progress?)",
                    String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_uppercase()
                )));
            };
            self.send_batch();
            conn.send_ignoring_reply(Bytes::from_static(WAIT_MARK));
            self.st.shared_writes = false;
        }
        self.route(req, Kind::Wait, true, false).await
    }

    /// `BELAY TOPOLOGY`: the gateway's own view, as JSON, for `belay status`
    /// and for people debugging routing. `BELAY HELP` lists subcommands.
    fn belay_command(&mut self, req: &Request) -> Pending {
        if req.arg_is(1, "TOPOLOGY") && req.argc() == 2 {
            let topo = self.topology();
            return Pending::Ready(reply::bulk(crate::topology::to_json(&topo).as_bytes()));
        }
        if req.arg_is(1, "HELP") || req.argc() == 1 {
            let lines = [
                "BELAY TOPOLOGY -- the gateway's view as JSON: confirmed master, replicas with offset, lag and read eligibility",
                "BELAY HELP -- this text",
            ];
            let mut out = BytesMut::new();
            out.extend_from_slice(format!("*{}\r\n", lines.len()).as_bytes());
            for l in lines {
                out.extend_from_slice(&reply::simple(l));
            }
            return Pending::Ready(out.freeze());
        }
        Pending::Ready(reply::error(&format!(
            "ERR unknown subcommand '{}'. Try BELAY HELP.",
            String::from_utf8_lossy(req.arg(1).unwrap_or_default())
        )))
    }

    /// Pub/sub: the session becomes a pipe to a subscription connection on
    /// the master until the client unsubscribes from everything (then it is
    /// a normal session again) or leaves. Only the commands Redis allows in
    /// subscribed mode go through the pipe; the gateway answers the others,
    /// in their turn (see [`Markers`]). If that connection is lost (the
    /// master failed or was demoted), the session's subscriptions are made
    /// again on the new master; the client stays connected.
    async fn tunnel(&mut self, first: Request) -> std::io::Result<TunnelEnd> {
        let mut subs = Subscriptions::default();
        let mut pending_first = Some(first);
        // A RESET read in subscribed mode, handled once the session is out of it.
        let mut reset: Option<Request> = None;
        loop {
            let since = Instant::now();
            let tunnel = loop {
                let topo = self.topology();
                if let Some(master) = topo.master.clone() {
                    match Tunnel::open(&master.tunnel_spec(self.st.init_commands())).await {
                        Ok(t) => break Some(t),
                        Err(e) => {
                            tracing::debug!(session = self.id, error = %e, "cannot open a subscription connection")
                        }
                    }
                }
                if since.elapsed() > self.shared.cfg.failover_hold() {
                    break None;
                }
                let mut rx = self.shared.topology.clone();
                let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
            };
            let Some(mut tunnel) = tunnel else {
                write_client(
                    &mut self.write,
                    &reply::error("TRYAGAIN belay: no confirmed master to subscribe on"),
                    self.write_timeout,
                )
                .await?;
                return Ok(TunnelEnd::Closed);
            };
            let mut markers = Markers::new();
            // (Re)subscribe; confirmations of a re-subscription are not the client's.
            let mut swallow = 0usize;
            if let Some(req) = pending_first.take() {
                subs.track(&req);
                tunnel.write.write_all(&req.raw).await?;
            } else {
                for (cmd, set) in subs.groups() {
                    if set.is_empty() {
                        continue;
                    }
                    swallow += set.len();
                    let mut args: Vec<&[u8]> = vec![cmd.as_bytes()];
                    args.extend(set.iter().map(|c| c.as_ref()));
                    let raw = belay_resp::encode_command(&args);
                    if tunnel.write.write_all(&raw).await.is_err() {
                        continue;
                    }
                }
                tracing::info!(session = self.id, master = %tunnel.addr, "subscriptions re-established");
            }
            // Input that came with the SUBSCRIBE (or before the connection was lost).
            let mut input_ready = !self.inbuf.is_empty();
            // Pipe until either side ends.
            loop {
                if input_ready && !markers.ending() {
                    input_ready = false;
                    if !self
                        .tunnel_client_input(&mut tunnel, &mut subs, &mut markers, &mut reset)
                        .await?
                    {
                        return Ok(TunnelEnd::Closed);
                    }
                    continue;
                }
                tokio::select! {
                    frame = tunnel.frames.recv() => {
                        let Some(frame) = frame else { break };
                        if markers.is_marker(&frame) {
                            let marker = markers.pop().expect("a marker is waiting");
                            if let Some(end) = self.marker_turn(marker, &mut reset).await? {
                                return Ok(end);
                            }
                            continue;
                        }
                        if swallow > 0 && pubsub::is_subscribe_confirmation(&frame) {
                            swallow -= 1;
                            continue;
                        }
                        write_client(&mut self.write, &frame, self.write_timeout).await?;
                    }
                    n = self.read.read_buf(&mut self.inbuf), if !markers.ending() => {
                        if n? == 0 {
                            return Ok(TunnelEnd::Closed);
                        }
                        input_ready = true;
                    }
                }
            }
            // The connection is gone, and with it the replies still owed: the
            // gateway's own answers after them are due now.
            while let Some(marker) = markers.pop() {
                if let Some(end) = self.marker_turn(marker, &mut reset).await? {
                    return Ok(end);
                }
            }
            tracing::info!(
                session = self.id,
                "subscription connection lost; re-subscribing"
            );
        }
    }

    /// A marker's turn has come: writes the gateway's own answer, if any,
    /// and says whether (and how) the session leaves the pipe.
    async fn marker_turn(
        &mut self,
        (answer, then): (Option<Bytes>, AfterMarker),
        reset: &mut Option<Request>,
    ) -> std::io::Result<Option<TunnelEnd>> {
        if let Some(answer) = answer {
            write_client(&mut self.write, &answer, self.write_timeout).await?;
        }
        Ok(match then {
            AfterMarker::Continue => None,
            AfterMarker::Leave => Some(TunnelEnd::Unsubscribed { then: reset.take() }),
            AfterMarker::Close => Some(TunnelEnd::Closed),
        })
    }

    /// Handles the client's complete commands in subscribed mode, up to one
    /// that ends it. Returns false when the session must end at once.
    async fn tunnel_client_input(
        &mut self,
        tunnel: &mut Tunnel,
        subs: &mut Subscriptions,
        markers: &mut Markers,
        reset: &mut Option<Request>,
    ) -> std::io::Result<bool> {
        while !markers.ending() {
            let req = match parse_request(&mut self.inbuf, &self.shared.limits) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    write_client(
                        &mut self.write,
                        &reply::error(&format!("ERR {e}")),
                        self.write_timeout,
                    )
                    .await?;
                    return Ok(false);
                }
            };
            if req.is_empty() {
                continue;
            }
            let raw = match pubsub::in_subscription(&req) {
                InSubscription::Forward => req.raw.clone(),
                InSubscription::Track => {
                    subs.track(&req);
                    if subs.is_empty() {
                        // Out of subscribed mode once Redis has confirmed it.
                        let mut raw = BytesMut::from(&req.raw[..]);
                        raw.extend_from_slice(&markers.add(None, AfterMarker::Leave));
                        raw.freeze()
                    } else {
                        req.raw.clone()
                    }
                }
                InSubscription::Quit => markers.add(Some(reply::ok()), AfterMarker::Close),
                InSubscription::Reset => {
                    *reset = Some(req);
                    markers.add(None, AfterMarker::Leave)
                }
                InSubscription::Refuse => {
                    markers.add(Some(pubsub::refusal(&req)), AfterMarker::Continue)
                }
            };
            if tunnel.write.write_all(&raw).await.is_err() {
                // Lost: the caller subscribes again and answers the markers.
                break;
            }
        }
        Ok(true)
    }
}

/// How a subscribed session's time as a pipe ended.
enum TunnelEnd {
    /// The client quit or went away, or there was no master to subscribe on.
    Closed,
    /// The client unsubscribed from everything, or sent RESET (`then`):
    /// the session serves normally again.
    Unsubscribed { then: Option<Request> },
}

/// Writes to the client, giving up on a client that does not read.
async fn write_client(
    write: &mut OwnedWriteHalf,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    // Nearly every write completes at once: then no timer is set up.
    let bytes = match write.try_write(bytes) {
        Ok(n) if n == bytes.len() => return Ok(()),
        Ok(n) => &bytes[n..],
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => bytes,
        Err(e) => return Err(e),
    };
    match tokio::time::timeout(timeout, write.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client did not read its replies for {timeout:?}; closing it"),
        )),
    }
}

fn denied(req: &Request, reason: &str) -> Pending {
    let name = String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_uppercase();
    let sub = req
        .arg(1)
        .filter(|_| matches!(name.as_str(), "CONFIG" | "CLIENT"))
        .map(|s| format!(" {}", String::from_utf8_lossy(s).to_ascii_uppercase()))
        .unwrap_or_default();
    Pending::Ready(reply::error(&format!(
        "ERR belay: '{name}{sub}' is not supported through the gateway: {reason}"
    )))
}

/// What [`Session::wait`] sends to move its own connection's replication
/// offset: a message to a channel only the gateway uses.
const WAIT_MARK: &[u8] = b"*3\r\n$7\r\nPUBLISH\r\n$14\r\n__belay__:wait\r\n$0\r\n\r\n";

/// Commands the session answers or acts on itself (some only with certain
/// arguments; with others they route like any command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionCommand {
    Auth,
    Hello,
    Select,
    Quit,
    Reset,
    Ping,
    Multi,
    ExecOrDiscard,
    Watch,
    Unwatch,
    Subscribe,
    Client,
    Belay,
    /// `WAIT`/`WAITAOF`: counted per connection by Redis.
    Wait,
    /// `SCRIPT LOAD` and `SCRIPT FLUSH` are also sent to the replicas.
    Script,
}

/// `name` (lowercase) as a [`SessionCommand`], if it is one.
fn session_command(name: &[u8]) -> Option<SessionCommand> {
    Some(match name {
        b"auth" => SessionCommand::Auth,
        b"hello" => SessionCommand::Hello,
        b"select" => SessionCommand::Select,
        b"quit" => SessionCommand::Quit,
        b"reset" => SessionCommand::Reset,
        b"ping" => SessionCommand::Ping,
        b"multi" => SessionCommand::Multi,
        b"exec" | b"discard" => SessionCommand::ExecOrDiscard,
        b"watch" => SessionCommand::Watch,
        b"unwatch" => SessionCommand::Unwatch,
        b"subscribe" | b"psubscribe" | b"ssubscribe" => SessionCommand::Subscribe,
        b"client" => SessionCommand::Client,
        b"belay" => SessionCommand::Belay,
        b"wait" | b"waitaof" => SessionCommand::Wait,
        b"script" => SessionCommand::Script,
        _ => return None,
    })
}

/// The class of a command, and whether it holds for every use of its name
/// (see [`CommandTable::classify_lowercase_resolved`]); `name` is its
/// lowercase name from [`lower_name`].
fn classify_in(commands: &CommandTable, name: &[u8], req: &Request) -> (Class, bool) {
    if name.is_empty() {
        // Longer than lower_name's buffer: the table lowercases it.
        (commands.classify(req), false)
    } else {
        commands.classify_lowercase_resolved(name, req)
    }
}

/// The kind of a read: SCAN-family cursors are only valid on one node.
fn read_kind(name: &[u8]) -> Kind {
    if matches!(name, b"scan" | b"sscan" | b"hscan" | b"zscan") {
        Kind::CursorRead
    } else {
        Kind::Read
    }
}

/// The command name in lowercase, in `buf`; empty when it is longer than
/// any name the session itself handles (it is then classified in full).
fn lower_name<'a>(name: &[u8], buf: &'a mut [u8; 24]) -> &'a [u8] {
    if name.len() > buf.len() {
        return b"";
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    &buf[..name.len()]
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod last_command_tests {
    use super::*;

    #[test]
    fn the_last_command_is_reused_only_for_the_same_name_and_table() {
        let table = Arc::new(CommandTable::default());
        let newer = Arc::new(CommandTable::default());
        let last = LastCommand::new(b"GET", Kind::Read, &table).unwrap();
        assert_eq!(last.kind_of(b"GET", &table), Some(Kind::Read));
        // Another spelling takes the full path (and gets the same answer).
        assert_eq!(last.kind_of(b"get", &table), None);
        assert_eq!(last.kind_of(b"GETEX", &table), None);
        assert_eq!(last.kind_of(b"GE", &table), None);
        // A new command table (the master's version changed) starts over.
        assert_eq!(last.kind_of(b"GET", &newer), None);
        assert!(LastCommand::new(&[b'x'; 25], Kind::Read, &table).is_none());
        let longest = LastCommand::new(&[b'x'; 24], Kind::Write, &table).unwrap();
        assert_eq!(longest.kind_of(&[b'x'; 24], &table), Some(Kind::Write));
    }
}

#[cfg(test)]
mod size_tests {
    /// Every connected client costs its session's future, so it must stay
    /// small: rare, deep paths (subscriptions, connects, the failover wait)
    /// are boxed. 10,000 idle clients measured ~74 MiB in all with this.
    #[test]
    fn a_session_future_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let cfg = std::sync::Arc::new(crate::config::GatewayConfig::default());
            let (_discovery, topology, events) = crate::discovery::Discovery::new(cfg.clone());
            let shared = std::sync::Arc::new(crate::server::Shared::new(cfg, topology, events));
            let session = super::Session::new(1, stream, shared);
            let size = std::mem::size_of_val(&session.run());
            assert!(size <= 2048, "the session future grew to {size} bytes");
        });
    }
}
