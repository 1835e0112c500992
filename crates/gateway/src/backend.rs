//! One TCP connection to a Redis node, shared by many sessions or pinned to one.
//!
//! A connection is two tasks. The writer batches every request queued since
//! its last write into one `write`, and holds the next write while the node
//! still owes replies to the last one (that is what cuts syscalls and
//! wake-ups on the node when many clients share a connection). The reader
//! splits the reply stream at frame boundaries and hands the replies to
//! whoever is waiting, in order. Redis answers each connection's commands in order, so a FIFO of
//! waiting senders is all the bookkeeping needed.
//!
//! A request may carry several commands (a session's pipelined commands for
//! the same node): it has one reply slot, which receives all their replies
//! as one contiguous buffer. That keeps the per-command cost of the hot path
//! to copying bytes — no channel message, no wake-up, no allocation each.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use belay_client::{Auth, ClientError, Connection, Role};
use belay_resp::{frame_len, Limits};
use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// Why a request got no reply. The distinction decides whether a retry is
/// safe: only a request that never left the gateway may be sent again.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The request was never written to the node; retrying elsewhere is safe.
    #[error("connection to {addr} is closed; the command was not sent")]
    NotSent { addr: String },
    /// The request may have reached the node, which then went away.
    #[error(
        "connection to {addr} was lost after the command was sent; it may or may not have run"
    )]
    Lost { addr: String },
}

impl BackendError {
    pub fn was_sent(&self) -> bool {
        matches!(self, BackendError::Lost { .. })
    }
}

/// The replies to one request, in order, back to back.
#[derive(Debug)]
pub struct Replies {
    pub frames: Bytes,
    /// Some reply is an error (`-…`): the receiver must look at them one by
    /// one (refusals are retried). Otherwise it may pass them on as they are.
    pub has_error: bool,
}

pub type ReplyResult = Result<Replies, BackendError>;

/// A request on its way to a node and the slot its replies go into.
pub struct BackendRequest {
    /// One or more complete commands.
    pub raw: Bytes,
    /// How many commands `raw` holds, so how many replies to wait for.
    pub count: u32,
    pub reply: oneshot::Sender<ReplyResult>,
    pub blocking: bool,
}

/// The reader's record of a request on the wire.
struct InFlight {
    reply: oneshot::Sender<ReplyResult>,
    count: u32,
    blocking: bool,
}

/// How to open a connection: who we are and what to set up before use.
#[derive(Clone, Debug)]
pub struct ConnectSpec {
    pub addr: String,
    pub auth: Option<Auth>,
    /// Commands run (and checked) before the connection is handed out:
    /// `SELECT`, `HELLO 3`, `CLIENT SETNAME` replayed for a pinned session.
    pub init: Vec<Vec<Bytes>>,
    /// Refuse the connection unless the node answers `ROLE` as master: a write
    /// connection is never opened to a demoted master.
    pub require_master: bool,
    pub connect_timeout: Duration,
    /// Silence while replies are owed for this long marks the node dead.
    /// `None` for connections that may block (BLPOP, WAIT, subscriptions).
    pub request_timeout: Option<Duration>,
    /// A counter this connection's outstanding commands are also added to:
    /// a pool's shared connections report their load in one place, which
    /// routing reads once per command.
    pub load: Option<Arc<AtomicUsize>>,
}

/// Handle to a live connection. Cloning shares the connection.
#[derive(Clone)]
pub struct BackendConn {
    tx: mpsc::UnboundedSender<BackendRequest>,
    shared: Arc<ConnState>,
}

struct ConnState {
    addr: String,
    alive: AtomicBool,
    /// Commands written to the node and not yet answered; used for
    /// least-outstanding routing and for the silent-node watchdog. Counted
    /// when written, not when queued: every session routing in one turn of
    /// the event loop then sees the same figures and picks the same node,
    /// so their commands share one write (and one wake-up of the node).
    outstanding: AtomicUsize,
    /// The pool-wide counter `outstanding` is mirrored to, if any.
    load: Option<Arc<AtomicUsize>>,
    /// Reads that returned bytes; the watchdog's sign of life.
    reads: AtomicU64,
    /// Blocking commands (BLPOP, WAIT, …) in flight: silence is expected
    /// while any is, so the watchdog stands down.
    blocking: AtomicUsize,
    /// Cancelled when the connection is closed, from outside or by either task.
    closed: CancellationToken,
    /// Notified when `outstanding` falls to zero: the writer holds the
    /// next write until then.
    answered: Notify,
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
}

impl BackendConn {
    /// Connects, authenticates, runs the init commands, then starts the tasks.
    pub async fn open(spec: &ConnectSpec) -> Result<BackendConn, ClientError> {
        let mut conn =
            Connection::connect(&spec.addr, spec.auth.as_ref(), spec.connect_timeout).await?;
        if spec.require_master {
            let role = conn.role().await?;
            if !role.is_master() {
                return Err(ClientError::Unexpected {
                    addr: spec.addr.clone(),
                    op: "ROLE".into(),
                    detail: format!("expected a master, the node is a {}", role_name(&role)),
                });
            }
        }
        for cmd in &spec.init {
            conn.call_ok(cmd).await?;
        }
        let stream = conn.into_stream();
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (inflight_tx, inflight_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ConnState {
            addr: spec.addr.clone(),
            alive: AtomicBool::new(true),
            outstanding: AtomicUsize::new(0),
            load: spec.load.clone(),
            blocking: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
            closed: CancellationToken::new(),
            answered: Notify::new(),
        });
        tokio::spawn(write_loop(write, rx, inflight_tx, shared.clone()));
        tokio::spawn(read_loop(
            read,
            inflight_rx,
            shared.clone(),
            spec.request_timeout,
        ));
        Ok(BackendConn { tx, shared })
    }

    /// Queues one command; the reply (or why there is none) arrives on the
    /// returned receiver.
    pub fn send(&self, raw: Bytes) -> oneshot::Receiver<ReplyResult> {
        self.send_batch(raw, 1, false)
    }

    /// Queues `count` commands encoded back to back in `raw`; their replies
    /// arrive together on the returned receiver. `blocking`: one of them may
    /// legitimately keep the node silent for a long time (BLPOP, WAIT).
    pub fn send_batch(
        &self,
        raw: Bytes,
        count: u32,
        blocking: bool,
    ) -> oneshot::Receiver<ReplyResult> {
        debug_assert!(count > 0, "a request carries at least one command");
        let (reply, rx) = oneshot::channel();
        if !self.is_alive() {
            let _ = reply.send(Err(self.not_sent()));
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
        }) {
            if blocking {
                self.shared.blocking.fetch_sub(1, Ordering::Relaxed);
            }
            let _ = req.reply.send(Err(self.not_sent()));
        }
        rx
    }

    /// Sends and forgets the reply (state replay on pinned connections).
    pub fn send_ignoring_reply(&self, raw: Bytes) {
        drop(self.send(raw));
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// True when both handles are the same connection.
    pub fn same_as(&self, other: &BackendConn) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Closes the connection now: queued requests fail as not sent, requests
    /// in flight as lost. Used when a master is demoted.
    pub fn close(&self) {
        self.shared.alive.store(false, Ordering::Release);
        self.shared.closed.cancel();
    }

    fn not_sent(&self) -> BackendError {
        BackendError::NotSent {
            addr: self.shared.addr.clone(),
        }
    }
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Master { .. } => "master",
        Role::Replica { .. } => "replica",
        Role::Sentinel { .. } => "sentinel",
    }
}

const MAX_BATCH: usize = 256 * 1024;

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
            reply: req.reply,
            count: req.count,
            blocking: req.blocking,
        })
        .is_ok();
    if ok {
        state.add_outstanding(count);
    }
    buf.extend_from_slice(&req.raw);
    ok
}

/// Writes to nodes so far, by every connection of this process.
static WRITES: AtomicUsize = AtomicUsize::new(0);

/// Changes after each write to a node, and only then: routing breaks ties
/// with it, so that all the sessions routing between two writes agree.
pub fn write_epoch() -> usize {
    WRITES.load(Ordering::Relaxed)
}

async fn write_loop(
    mut write: OwnedWriteHalf,
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
        // wake-up of the node) into a few larger ones: at one request per
        // client it cut the node's wake-ups by 40% and raised throughput.
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
        let mut requests = next.take();
        while let Some(req) = requests.next() {
            if !stage(&mut buf, &inflight, &state, req) {
                requests.for_each(|req| fail_unsent(&state, req));
                break 'conn;
            }
        }
        let written = tokio::select! {
            biased;
            r = write.write_all(&buf) => r.is_ok(),
            _ = &mut closed => false,
        };
        buf.clear();
        WRITES.fetch_add(1, Ordering::Relaxed);
        if !written {
            break;
        }
    }
    state.alive.store(false, Ordering::Release);
    state.closed.cancel();
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
    let _ = req.reply.send(Err(BackendError::NotSent {
        addr: state.addr.clone(),
    }));
}

/// The request whose replies the reader is collecting.
struct Collecting {
    slot: InFlight,
    /// Bytes at the front of the buffer that hold replies to it so far.
    len: usize,
    /// How many of its replies those bytes hold.
    replies: u32,
    has_error: bool,
}

async fn read_loop(
    mut read: OwnedReadHalf,
    mut inflight: mpsc::UnboundedReceiver<InFlight>,
    state: Arc<ConnState>,
    request_timeout: Option<Duration>,
) {
    let limits = Limits::for_replies();
    let mut buf = BytesMut::with_capacity(32 * 1024);
    if let Some(timeout) = request_timeout {
        tokio::spawn(watchdog(state.clone(), timeout));
    }
    let mut current: Option<Collecting> = None;
    // One future for the whole loop (see `write_loop`).
    let closed = state.closed.clone().cancelled_owned();
    tokio::pin!(closed);
    'conn: loop {
        if buf.capacity() - buf.len() < 4096 {
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
        loop {
            let scanned = current.as_ref().map_or(0, |c| c.len);
            match frame_len(&buf[scanned..], &limits) {
                Ok(Some(n)) => {
                    if buf[scanned] == b'>' {
                        // RESP3 out-of-band push on a request connection
                        // (e.g. a stray invalidation): not a reply; drop it.
                        let mut rest = buf.split_off(scanned);
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
                                })
                            }
                            Err(_) => {
                                tracing::error!(addr = %state.addr, "reply with no request waiting; closing the connection");
                                break 'conn;
                            }
                        }
                    }
                    let c = current.as_mut().expect("set above");
                    c.has_error |= buf[scanned] == b'-';
                    c.len += n;
                    c.replies += 1;
                    if c.replies == c.slot.count {
                        let c = current.take().expect("set above");
                        state.sub_outstanding(c.slot.count as usize);
                        if c.slot.blocking {
                            state.blocking.fetch_sub(1, Ordering::Relaxed);
                        }
                        let _ = c.slot.reply.send(Ok(Replies {
                            frames: buf.split_to(c.len).freeze(),
                            has_error: c.has_error,
                        }));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(addr = %state.addr, error = %e, "invalid reply from node; closing the connection");
                    break 'conn;
                }
            }
        }
    }
    state.alive.store(false, Ordering::Release);
    state.closed.cancel();
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
        let _ = slot.reply.send(Err(BackendError::Lost {
            addr: state.addr.clone(),
        }));
    }
}

/// Declares the node dead when it owes replies and has sent none for
/// `timeout` (a paused master keeps its socket open and silent). Checking a
/// counter twice a period costs far less than a timer on every read.
async fn watchdog(state: Arc<ConnState>, timeout: Duration) {
    let mut tick = tokio::time::interval(timeout / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_reads = state.reads.load(Ordering::Relaxed);
    let mut stalled_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.closed.cancelled() => return,
        }
        let reads = state.reads.load(Ordering::Relaxed);
        let owing = state.outstanding.load(Ordering::Relaxed) > 0
            && state.blocking.load(Ordering::Relaxed) == 0;
        if owing && reads == last_reads {
            let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= timeout {
                tracing::warn!(addr = %state.addr, "node owes replies and has been silent for {:?}; treating it as down", timeout);
                state.alive.store(false, Ordering::Release);
                state.closed.cancel();
                return;
            }
        } else {
            stalled_since = None;
        }
        last_reads = reads;
    }
}

/// A subscription connection: everything the node sends is passed through to
/// the session as it comes (pub/sub messages are not replies to requests).
pub struct Tunnel {
    pub write: OwnedWriteHalf,
    pub frames: mpsc::Receiver<Bytes>,
    pub addr: String,
}

impl Tunnel {
    pub async fn open(spec: &ConnectSpec) -> Result<Tunnel, ClientError> {
        let mut conn =
            Connection::connect(&spec.addr, spec.auth.as_ref(), spec.connect_timeout).await?;
        for cmd in &spec.init {
            conn.call_ok(cmd).await?;
        }
        let (mut read, write) = conn.into_stream().into_split();
        let (tx, frames) = mpsc::channel(1024);
        let addr = spec.addr.clone();
        tokio::spawn(async move {
            let limits = Limits::for_replies();
            let mut buf = BytesMut::with_capacity(16 * 1024);
            loop {
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                loop {
                    match frame_len(&buf, &limits) {
                        Ok(Some(n)) => {
                            if tx.send(buf.split_to(n).freeze()).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
        });
        Ok(Tunnel {
            write,
            frames,
            addr,
        })
    }
}
