//! One TCP connection to a Redis node, shared by the sessions of one
//! context or owned by one session.
//!
//! A connection is two tasks. The writer batches every request queued since
//! its last write into one `write`, and holds the next write while the node
//! still owes replies to the last one (that is what cuts syscalls and
//! wake-ups on the node when many clients share a connection). The reader
//! splits the reply stream at frame boundaries and hands the replies to
//! whoever is waiting, in order. Redis answers each connection's commands
//! in order, so a FIFO of waiting senders is all the bookkeeping needed.
//!
//! A request may carry several commands (a session's pipelined commands for
//! the same node): it has one reply slot, which receives all their replies
//! as one contiguous buffer. That keeps the per-command cost of the hot path
//! to copying bytes — no channel message, no wake-up, no allocation each.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use belay_client::{ClientError, Stream};
use belay_resp::{FrameScanner, Limits};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::confirm::{wait_reply, Confirm, Replication};
use super::health::NodeHealth;
use super::setup::{set_up, ConnectSpec};
use super::watchdog;
use crate::budget::OutputBudget;
use crate::context::Context;
use crate::error::{BackendError, LostWhy, NotSentWhy};

/// The replies to one request, in order, back to back.
#[derive(Debug)]
pub struct Replies {
    pub frames: Bytes,
    /// Some reply is an error (`-…`): the receiver must look at them one by
    /// one (refusals are retried). Otherwise it may pass them on as they are.
    pub has_error: bool,
    /// For a request sent with a [`Confirm`]: what the `WAIT` after it said.
    pub replication: Option<Replication>,
    /// The last reply came after the node, a master, was replaced: a write
    /// it acknowledged may be lost with it.
    pub after_retired: bool,
}

pub type ReplyResult = Result<Replies, BackendError>;

/// A request on its way to a node and the slot its replies go into.
struct BackendRequest {
    /// One or more complete commands.
    raw: Bytes,
    /// How many commands `raw` holds, so how many replies to wait for.
    count: u32,
    reply: oneshot::Sender<ReplyResult>,
    blocking: bool,
    /// The client's output budget, charged with the replies when handed over.
    budget: Option<Arc<OutputBudget>>,
    /// Its writes must be confirmed by replicas before it is answered.
    confirm: Option<Confirm>,
}

/// The reader's record of a request on the wire: a client's, or the
/// connection's own `WAIT` (no `reply`) for the confirmed requests before it.
struct InFlight {
    reply: Option<oneshot::Sender<ReplyResult>>,
    count: u32,
    blocking: bool,
    budget: Option<Arc<OutputBudget>>,
    /// Its replies wait for the next `WAIT`'s.
    confirmed: bool,
}

/// Handle to a live connection. Cloning shares the connection.
#[derive(Clone)]
pub struct BackendConn {
    tx: mpsc::UnboundedSender<BackendRequest>,
    shared: Arc<ConnState>,
}

pub(super) struct ConnState {
    pub(super) addr: String,
    alive: AtomicBool,
    /// Why the connection was closed (a [`LostWhy`] code), for the
    /// commands it leaves unanswered.
    closed_why: AtomicU8,
    /// How long it had been silent when given up on, in ms.
    silent_ms: AtomicU64,
    /// Commands written to the node and not yet answered; used for
    /// least-outstanding routing and for the silent-node watchdog. Counted
    /// when written, not when queued: every session routing in one turn of
    /// the event loop then sees the same figures and picks the same node,
    /// so their commands share one write (and one wake-up of the node).
    pub(super) outstanding: AtomicUsize,
    /// The pool-wide counter `outstanding` is mirrored to, if any.
    load: Option<Arc<AtomicUsize>>,
    /// Reads that returned bytes; the watchdog's sign of life.
    pub(super) reads: AtomicU64,
    /// Writes to the node so far (each carries every request collected).
    writes: AtomicU64,
    /// When the connection last wrote or read, in ms of [`clock_ms`]: how
    /// long a node that owes replies has been silent, at any moment.
    last_io_ms: AtomicU64,
    /// Blocking commands (BLPOP, WAIT, …) in flight: silence is expected
    /// while any is, so the watchdog stands down.
    pub(super) blocking: AtomicUsize,
    /// The connection's own `WAIT`s (durable writes) written and not yet
    /// answered: while one is, Redis runs nothing else of this connection.
    waits: AtomicUsize,
    /// Cancelled when the connection is closed, from outside or by either task.
    pub(super) closed: CancellationToken,
    /// Notified when `outstanding` falls to zero: the writer holds the
    /// next write until then.
    answered: Notify,
    pub(super) health: Arc<NodeHealth>,
}

impl ConnState {
    fn add_outstanding(&self, n: usize) {
        self.outstanding.fetch_add(n, Ordering::Relaxed);
        if let Some(load) = &self.load {
            load.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sub_outstanding(&self, n: usize) {
        if self.outstanding.fetch_sub(n, Ordering::Relaxed) == n {
            self.answered.notify_one();
        }
        if let Some(load) = &self.load {
            load.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Closes the connection, recording why (the first reason wins).
    pub(super) fn close(&self, why: LostWhy) {
        let code = match why {
            LostWhy::ConnectionClosed => 1,
            LostWhy::BadReply => 2,
            LostWhy::NodeReplaced => 3,
            LostWhy::Silent(d) => {
                self.silent_ms
                    .store(d.as_millis() as u64, Ordering::Relaxed);
                4
            }
        };
        let _ = self
            .closed_why
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Relaxed);
        self.alive.store(false, Ordering::Release);
        self.closed.cancel();
    }

    fn lost_why(&self) -> LostWhy {
        match self.closed_why.load(Ordering::Acquire) {
            2 => LostWhy::BadReply,
            3 => LostWhy::NodeReplaced,
            4 => LostWhy::Silent(Duration::from_millis(
                self.silent_ms.load(Ordering::Relaxed),
            )),
            _ => LostWhy::ConnectionClosed,
        }
    }

    fn not_sent(&self) -> BackendError {
        BackendError::NotSent {
            addr: self.addr.clone(),
            why: NotSentWhy::ConnectionClosed,
        }
    }
}

impl BackendConn {
    /// Connects, sets up the context, then starts the tasks.
    pub async fn open(
        spec: &ConnectSpec,
        ctx: &Context,
        extra: &[Vec<Bytes>],
    ) -> Result<BackendConn, ClientError> {
        let conn = set_up(spec, ctx, extra).await?;
        Ok(BackendConn::start(conn.into_stream(), spec))
    }

    /// Plain TCP is split into owned halves (no lock between reader and
    /// writer); TLS, one state machine for both directions, with
    /// `tokio::io::split`.
    fn start(stream: Stream, spec: &ConnectSpec) -> BackendConn {
        match stream {
            Stream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                BackendConn::start_halves(read, write, spec)
            }
            Stream::Tls(tls) => {
                let (read, write) = tokio::io::split(tls);
                BackendConn::start_halves(read, write, spec)
            }
        }
    }

    fn start_halves<R, W>(read: R, write: W, spec: &ConnectSpec) -> BackendConn
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let (inflight_tx, inflight_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ConnState {
            addr: spec.addr.clone(),
            alive: AtomicBool::new(true),
            closed_why: AtomicU8::new(0),
            silent_ms: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
            load: spec.load.clone(),
            blocking: AtomicUsize::new(0),
            waits: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            last_io_ms: AtomicU64::new(clock_ms()),
            closed: CancellationToken::new(),
            answered: Notify::new(),
            health: spec.health.clone(),
        });
        tokio::spawn(write_loop(write, rx, inflight_tx, shared.clone()));
        if let Some(silence) = spec.silence {
            tokio::spawn(watchdog::watch(shared.clone(), silence));
        }
        tokio::spawn(read_loop(read, inflight_rx, shared.clone()));
        BackendConn { tx, shared }
    }

    /// Queues `count` commands encoded back to back in `raw`; their replies
    /// arrive together on the returned receiver (charged to `budget`).
    /// `blocking`: one of them may legitimately keep the node silent for a
    /// long time (BLPOP, WAIT).
    pub fn send_batch(
        &self,
        raw: Bytes,
        count: u32,
        blocking: bool,
        budget: Option<Arc<OutputBudget>>,
    ) -> oneshot::Receiver<ReplyResult> {
        self.send_confirmed(raw, count, blocking, budget, None)
    }

    /// [`BackendConn::send_batch`], and with `confirm` the replies come only
    /// once a `WAIT` after the request has answered, with what it said.
    pub fn send_confirmed(
        &self,
        raw: Bytes,
        count: u32,
        blocking: bool,
        budget: Option<Arc<OutputBudget>>,
        confirm: Option<Confirm>,
    ) -> oneshot::Receiver<ReplyResult> {
        debug_assert!(count > 0, "a request carries at least one command");
        let (reply, rx) = oneshot::channel();
        if !self.is_alive() {
            let _ = reply.send(Err(self.shared.not_sent()));
            return rx;
        }
        if blocking {
            self.shared.blocking.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(mpsc::error::SendError(req)) = self.tx.send(BackendRequest {
            raw,
            count,
            reply,
            blocking,
            budget,
            confirm,
        }) {
            if blocking {
                self.shared.blocking.fetch_sub(1, Ordering::Relaxed);
            }
            let _ = req.reply.send(Err(self.shared.not_sent()));
        }
        rx
    }

    /// Sends one command and forgets its reply (a state replay on a
    /// session's own connection, a fire-and-forget script load).
    pub fn send_ignoring_reply(&self, raw: Bytes) {
        drop(self.send_batch(raw, 1, false, None));
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// True when both handles are the same connection.
    pub fn same_as(&self, other: &BackendConn) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Writes to the node so far.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// What the connections to this node have noticed about it.
    pub fn health(&self) -> &NodeHealth {
        &self.shared.health
    }

    /// A durable writes' `WAIT` is on the wire: what is sent now runs only
    /// once it answers (up to its timeout).
    pub fn is_waiting(&self) -> bool {
        self.shared.waits.load(Ordering::Relaxed) > 0
    }

    /// Commands written and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.shared.outstanding.load(Ordering::Relaxed)
    }

    /// It owes replies to commands that should not take long (no blocking
    /// command in flight) and has read nothing for `at_least`.
    pub fn owes_in_silence(&self, at_least: std::time::Duration) -> bool {
        let s = &self.shared;
        self.is_alive()
            && s.outstanding.load(Ordering::Relaxed) > 0
            && s.blocking.load(Ordering::Relaxed) == 0
            && clock_ms().saturating_sub(s.last_io_ms.load(Ordering::Relaxed))
                >= at_least.as_millis() as u64
    }

    /// Closes the connection now: queued requests fail as not sent, requests
    /// in flight as lost, for `why`.
    pub fn close(&self, why: LostWhy) {
        self.shared.close(why);
    }
}

const MAX_BATCH: usize = 256 * 1024;

/// A connection's read buffer is given back once empty when it grew past
/// this (a huge reply), so a connection does not keep its largest reply's
/// size for life.
const READ_BUF_KEEP: usize = 1024 * 1024;

/// Adds a request to the batch being written. The reader must find the
/// reply slot before the reply can arrive, so the slot goes first.
fn stage(
    buf: &mut BytesMut,
    inflight: &mpsc::UnboundedSender<InFlight>,
    state: &ConnState,
    req: BackendRequest,
) -> bool {
    let count = req.count as usize;
    let ok = inflight
        .send(InFlight {
            reply: Some(req.reply),
            count: req.count,
            blocking: req.blocking,
            budget: req.budget,
            confirmed: req.confirm.is_some(),
        })
        .is_ok();
    if ok {
        state.add_outstanding(count);
    }
    buf.extend_from_slice(&req.raw);
    ok
}

/// Adds the connection's own `WAIT` after the confirmed requests staged
/// before it.
fn stage_wait(
    buf: &mut BytesMut,
    inflight: &mpsc::UnboundedSender<InFlight>,
    state: &ConnState,
    confirm: Confirm,
) -> bool {
    let ok = inflight
        .send(InFlight {
            reply: None,
            count: 1,
            blocking: false,
            budget: None,
            confirmed: false,
        })
        .is_ok();
    if ok {
        state.add_outstanding(1);
        state.waits.fetch_add(1, Ordering::Relaxed);
    }
    confirm.encode_wait(buf);
    ok
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut rx: mpsc::UnboundedReceiver<BackendRequest>,
    inflight: mpsc::UnboundedSender<InFlight>,
    state: Arc<ConnState>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // The requests of the next write, not yet on the wire (so still safe to
    // send elsewhere if the connection dies first).
    let mut next = Collected::default();
    // One future for the whole loop: a new one per wait would join and
    // leave the token's waiter list each time.
    let closed = state.closed.cancelled();
    tokio::pin!(closed);
    'conn: loop {
        let first = tokio::select! {
            biased;
            req = rx.recv() => req,
            _ = &mut closed => None,
        };
        let Some(first) = first else { break };
        next.push(first);
        if !state.alive.load(Ordering::Acquire) {
            break;
        }
        // Write after the event loop's next look at the sockets, not now:
        // the sessions woken by it add their commands to this write. Like
        // twemproxy waiting for EPOLLOUT, it turns many small writes (each a
        // wake-up of the node) into a few larger ones.
        tokio::task::yield_now().await;
        next.take_queued(&mut rx);
        // And while the node still owes replies to the last write, keep
        // collecting: the node gets to this write only once it has answered
        // that one anyway, and every command that comes meanwhile shares it
        // (one wake-up of the node and of this task instead of several). Like
        // Nagle's algorithm, at most one write per connection is unanswered.
        // Held requests are not on the wire: if the connection dies first
        // they fail as not sent, so a session may safely send them elsewhere.
        // Not while a blocking command (BLPOP, WAIT) may keep the node silent.
        while next.bytes < MAX_BATCH
            && state.outstanding.load(Ordering::Relaxed) > 0
            && state.blocking.load(Ordering::Relaxed) == 0
        {
            tokio::select! {
                biased;
                _ = &mut closed => break 'conn,
                _ = state.answered.notified() => {}
                req = rx.recv() => match req {
                    Some(req) => next.push(req),
                    None => break,
                },
            }
            next.take_queued(&mut rx);
        }
        // One WAIT, right after the last request to be confirmed, for the
        // most replicas any of them needs: it covers them all.
        let last_confirmed = next.requests.iter().rposition(|r| r.confirm.is_some());
        let confirm = next
            .requests
            .iter()
            .filter_map(|r| r.confirm)
            .max_by_key(|c| (c.replicas, c.timeout_ms));
        let mut requests = next.take().enumerate();
        let mut commands = 0;
        while let Some((i, req)) = requests.next() {
            commands += req.count as u64;
            let staged = stage(&mut buf, &inflight, &state, req);
            let staged = staged
                && match (Some(i) == last_confirmed, confirm) {
                    (true, Some(c)) => {
                        commands += 1;
                        stage_wait(&mut buf, &inflight, &state, c)
                    }
                    _ => true,
                };
            if !staged {
                requests.for_each(|(_, req)| fail_unsent(&state, req));
                break 'conn;
            }
        }
        state.health.count_commands(commands);
        let written = tokio::select! {
            biased;
            // Flushed: TLS keeps what it is given until then.
            r = async { write.write_all(&buf).await?; write.flush().await } => r.is_ok(),
            _ = &mut closed => false,
        };
        buf.clear();
        state.writes.fetch_add(1, Ordering::Relaxed);
        state.last_io_ms.store(clock_ms(), Ordering::Relaxed);
        if !written {
            break;
        }
    }
    state.close(LostWhy::ConnectionClosed);
    let _ = write.shutdown().await;
    // Whatever is still held or queued never left the gateway.
    rx.close();
    for req in next.take() {
        fail_unsent(&state, req);
    }
    while let Ok(req) = rx.try_recv() {
        fail_unsent(&state, req);
    }
}

/// The requests collected for the next write, not yet on the wire.
#[derive(Default)]
struct Collected {
    requests: Vec<BackendRequest>,
    /// Their commands' size, so that one write stays under `MAX_BATCH`.
    bytes: usize,
}

impl Collected {
    fn push(&mut self, req: BackendRequest) {
        self.bytes += req.raw.len();
        self.requests.push(req);
    }

    /// Empties the collection, handing out its requests in order.
    fn take(&mut self) -> std::vec::Drain<'_, BackendRequest> {
        self.bytes = 0;
        self.requests.drain(..)
    }

    /// Adds what is already queued, up to the size of one write.
    fn take_queued(&mut self, rx: &mut mpsc::UnboundedReceiver<BackendRequest>) {
        while self.bytes < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => self.push(req),
                Err(_) => break,
            }
        }
    }
}

/// Answers a request that never left the gateway: safe to retry.
fn fail_unsent(state: &ConnState, req: BackendRequest) {
    if req.blocking {
        state.blocking.fetch_sub(1, Ordering::Relaxed);
    }
    let _ = req.reply.send(Err(state.not_sent()));
}

/// The request whose replies the reader is collecting.
struct Collecting {
    slot: InFlight,
    /// Bytes at the front of the buffer that hold replies to it so far.
    len: usize,
    /// How many of its replies those bytes hold.
    replies: u32,
    has_error: bool,
    /// Bytes of it charged to the client's budget so far.
    charged: usize,
    /// Its replies are read and dropped: nobody will take them.
    discard: bool,
}

impl Collecting {
    /// Charges what arrived since the last charge to the client's output
    /// budget. When nobody will take the replies (the client is closed, or
    /// will be for being over its budget), they are dropped instead of kept
    /// (they are at the front of `buf`). True when they are dropped.
    fn charge(&mut self, buf: &mut BytesMut) -> bool {
        let new = self.len - self.charged;
        let over = new > 0 && self.slot.budget.as_ref().is_some_and(|b| b.received(new));
        self.charged = self.len;
        let abandoned = self.slot.reply.as_ref().is_some_and(|r| r.is_closed());
        if over || self.discard || abandoned {
            let _ = buf.split_to(self.len);
            self.len = 0;
            self.charged = 0;
            self.discard = true;
        }
        self.discard
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    mut inflight: mpsc::UnboundedReceiver<InFlight>,
    state: Arc<ConnState>,
) {
    let limits = Limits::for_relayed_replies();
    let mut buf = BytesMut::with_capacity(32 * 1024);
    let mut current: Option<Collecting> = None;
    // Where the next reply starts in `buf` is `current.len`; the scanner
    // keeps its place in a reply that arrives over several reads, so a
    // reply of any size is scanned once.
    let mut scanner = FrameScanner::default();
    let mut why = LostWhy::ConnectionClosed;
    // Replies to confirmed requests, held until the WAIT after them answers.
    let mut awaiting: Vec<(
        oneshot::Sender<ReplyResult>,
        Replies,
        Option<Arc<OutputBudget>>,
    )> = Vec::new();
    // One future for the whole loop (see `write_loop`).
    let closed = state.closed.clone().cancelled_owned();
    tokio::pin!(closed);
    'conn: loop {
        if buf.is_empty() && buf.capacity() > READ_BUF_KEEP {
            // Give back what a huge reply grew it to.
            buf = BytesMut::with_capacity(32 * 1024);
        } else if buf.capacity() - buf.len() < 4096 {
            buf.reserve(32 * 1024);
        }
        let read_result = tokio::select! {
            biased;
            _ = &mut closed => break 'conn,
            r = read.read_buf(&mut buf) => r,
        };
        match read_result {
            Ok(0) | Err(_) => break 'conn,
            Ok(_) => {}
        }
        // Any bytes are a sign of life for the watchdog, even part of a reply.
        state.reads.fetch_add(1, Ordering::Relaxed);
        state.last_io_ms.store(clock_ms(), Ordering::Relaxed);
        loop {
            let start = current.as_ref().map_or(0, |c| c.len);
            match scanner.scan(&buf[start..], &limits) {
                Ok(Some(n)) => {
                    if buf[start] == b'>' {
                        // RESP3 out-of-band push on a request connection
                        // (e.g. a stray invalidation): not a reply; drop it.
                        let mut rest = buf.split_off(start);
                        rest.advance(n);
                        buf.unsplit(rest);
                        continue;
                    }
                    if current.is_none() {
                        match inflight.try_recv() {
                            Ok(slot) => {
                                current = Some(Collecting {
                                    slot,
                                    len: 0,
                                    replies: 0,
                                    has_error: false,
                                    charged: 0,
                                    discard: false,
                                })
                            }
                            Err(_) => {
                                tracing::error!(addr = %state.addr, "reply with no request waiting; closing the connection");
                                why = LostWhy::BadReply;
                                break 'conn;
                            }
                        }
                    }
                    let c = current.as_mut().expect("set above");
                    c.has_error |= buf[start] == b'-';
                    c.replies += 1;
                    // Charged reply by reply, not when the request's last
                    // reply is in: a pipeline's replies may be huge, and a
                    // client over its budget is closed before they all are.
                    c.len += n;
                    if c.replies == c.slot.count {
                        let mut c = current.take().expect("set above");
                        state.sub_outstanding(c.slot.count as usize);
                        if c.slot.blocking {
                            state.blocking.fetch_sub(1, Ordering::Relaxed);
                        }
                        if c.charge(&mut buf) {
                            // The receiver sees its sender dropped.
                            continue;
                        }
                        let frames = buf.split_to(c.len).freeze();
                        let replies = Replies {
                            frames,
                            has_error: c.has_error,
                            replication: None,
                            after_retired: state.health.is_retired(),
                        };
                        match c.slot.reply {
                            // The connection's own WAIT: its count goes to
                            // every request it confirms.
                            None => {
                                state.waits.fetch_sub(1, Ordering::Relaxed);
                                let said = wait_reply(&replies.frames);
                                for (reply, mut replies, budget) in awaiting.drain(..) {
                                    replies.replication = Some(said.clone());
                                    deliver(reply, replies, budget.as_deref());
                                }
                            }
                            Some(reply) if c.slot.confirmed => {
                                awaiting.push((reply, replies, c.slot.budget));
                            }
                            Some(reply) => deliver(reply, replies, c.slot.budget.as_deref()),
                        }
                    }
                }
                Ok(None) => {
                    // A request's replies still coming: charged as they
                    // arrive (they may be huge), once per read.
                    if let Some(c) = &mut current {
                        c.charge(&mut buf);
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(addr = %state.addr, error = %e, "invalid reply from node; closing the connection");
                    why = LostWhy::BadReply;
                    break 'conn;
                }
            }
        }
    }
    state.close(why);
    let why = state.lost_why();
    // They ran; whether replicas have them is not known.
    for (reply, mut replies, budget) in awaiting.drain(..) {
        replies.replication = Some(Replication::Unknown(format!(
            "the connection to {} was lost before WAIT answered",
            state.addr
        )));
        deliver(reply, replies, budget.as_deref());
    }
    inflight.close();
    let lost = current
        .map(|c| c.slot)
        .into_iter()
        .chain(std::iter::from_fn(|| inflight.try_recv().ok()));
    for slot in lost {
        state.sub_outstanding(slot.count as usize);
        if slot.blocking {
            state.blocking.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(reply) = slot.reply {
            let _ = reply.send(Err(BackendError::Lost {
                addr: state.addr.clone(),
                why,
            }));
        }
    }
}

/// Hands `replies` to the session waiting for them.
fn deliver(reply: oneshot::Sender<ReplyResult>, replies: Replies, budget: Option<&OutputBudget>) {
    if let Err(Ok(replies)) = reply.send(Ok(replies)) {
        // The session is gone: its budget goes with it, but keep the books
        // straight anyway.
        if let Some(budget) = budget {
            budget.taken(replies.frames.len());
        }
    }
}

/// Milliseconds since the first call: a clock cheap to store in an atomic.
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}
