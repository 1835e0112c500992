//! One client connection: read its requests, route each command, write the
//! replies back in the order they were asked.
//!
//! The rooms, top uses bottom:
//!
//! ```text
//! mod.rs        Session: the client loop (this file), input.rs (a request's
//!               way in), head.rs (the queue's head: replies, retries, waits),
//!               actions.rs (what takes a node's answer: AUTH as an ACL user,
//!               WAIT, SCRIPT KILL, commands for every node)
//!  ├ builtin/   what the gateway answers itself, one unit per family; no I/O
//!  ├ subscribed/ subscribed mode, its own loop
//!  ├ dispatch   where a command goes: a typed decision
//!  ├ retry      what a reply or a failure means: deliver, resend, or not
//!  ├ batch      commands for one connection, sent together
//!  ├ io         the client's socket: requests in, replies out
//!  ├ state      SessionState: login, context, transaction, fence
//!  ├ job        a command with the context it was sent in
//!  └ queue      the ordered reply queue
//! ```
//!
//! A command is routed as soon as it is parsed (a pipeline fans out to master
//! and replicas at once) and its reply slot waits at its place in the queue.
//! A command that cannot be sent yet — no confirmed master during a failover,
//! a retry, another connection of the session still busy — waits for its
//! turn at the head, and so does every later command of the session: that
//! keeps a session's commands in the order it sent them.

mod actions;
mod batch;
mod builtin;
mod cluster;
mod dispatch;
mod head;
mod input;
mod io;
mod job;
mod queue;
mod retry;
mod state;
mod subscribed;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::backend::{NodePool, ReplyResult};
use crate::budget::OutputBudget;
use crate::commands::{CommandTable, Routing};
use crate::config::GatewayConfig;
use crate::drain::SessionDrain;
use crate::metrics::{ErrorKind, Tally};
use crate::server::Shared;
use crate::topology::Topology;
use batch::Batcher;
pub use io::ClientStream;
use io::{ClientIo, Ready};
use queue::ReplyQueue;
use state::SessionState;

pub struct Session {
    id: u64,
    shared: Arc<Shared>,
    /// The settings in effect, re-read once per turn of the loop (a
    /// reload swaps them; see `reload`).
    cfg: Arc<GatewayConfig>,
    /// Raised when the gateway drains: close at the next point between
    /// replies.
    drain: Arc<SessionDrain>,
    io: ClientIo,
    queue: ReplyQueue,
    batch: Batcher,
    st: SessionState,
    /// The replica the reads of the current input go to: their replies
    /// then come back together, one wake-up and one write to the client.
    batch_replica: Option<Arc<NodePool>>,
    /// This session's view of the topology, refreshed when it changes.
    /// `None` only while `handle` lends it out (see [`Session::handle`]).
    topo_rx: tokio::sync::watch::Receiver<Arc<Topology>>,
    topo: Option<Arc<Topology>>,
    /// How the fast path last routed a command name.
    last_command: Option<LastCommand>,
    /// A request is being handled at the head of the queue: every reply
    /// before it has arrived.
    at_head: bool,
    /// Commands counted since the last flush to the gateway's metrics.
    tally: Tally,
    /// The loop has been woken for the drain once (it is not woken again).
    drain_noticed: bool,
}

/// The last command name the session classified, as the client spelled
/// it, and its routing. Clients repeat commands (a pipeline of GETs, a
/// loop of SETs): a repeat then costs one short comparison instead of
/// lowercasing, the builtin check and a table lookup. Only names whose
/// routing does not depend on their arguments are kept, and only for the
/// command table they were classified by.
struct LastCommand {
    name: [u8; 24],
    len: u8,
    routing: Routing,
    table: Arc<CommandTable>,
}

impl LastCommand {
    fn new(name: &[u8], routing: Routing, table: &Arc<CommandTable>) -> Option<LastCommand> {
        let mut buf = [0u8; 24];
        buf.get_mut(..name.len())?.copy_from_slice(name);
        Some(LastCommand {
            name: buf,
            len: name.len() as u8,
            routing,
            table: table.clone(),
        })
    }

    /// The routing of `name` if it is this command and `table` is current.
    fn routing_of(&self, name: &[u8], table: &Arc<CommandTable>) -> Option<Routing> {
        (name == &self.name[..self.len as usize] && Arc::ptr_eq(&self.table, table))
            .then_some(self.routing)
    }
}

/// How long a drained session's socket stays open after its last reply
/// to read (and drop) what the client still sends, so that the close is an
/// orderly one and not a reset that could destroy replies not yet read.
pub(super) const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// A draining session that owes nothing and has heard nothing for this
/// long is closed (one that just got its reply is closed at once). Long
/// enough that a client between two commands of a loop (descheduled, or
/// waiting for its interpreter's lock) does not send one into the close.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// A connection younger than this may be in its client's handshake (AUTH,
/// HELLO, CLIENT SETINFO sent one after the other without a look at the
/// socket in between): a drain closes it only once it is quiet.
fn set_up(started: Instant) -> bool {
    started.elapsed() >= DRAIN_QUIET
}

/// How the session loop was woken.
enum Wake {
    Reply(Result<ReplyResult, oneshot::error::RecvError>),
    Io(Ready),
    Timer,
    Drain,
}

/// Why a session ended, for its log line.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("it holds {held} bytes of replies it has not read (limit {limit})")]
    OutputLimit { held: usize, limit: u64 },
    #[error("it did not authenticate within {0:?}")]
    AuthTimeout(Duration),
    #[error("it was idle for {0:?}")]
    Idle(Duration),
    #[error("the gateway is draining (closed between replies)")]
    Drained,
}

impl Session {
    pub fn new(id: u64, stream: ClientStream, shared: Arc<Shared>) -> Session {
        let cfg = shared.config.load();
        let authenticated = cfg.required_client_password().is_none();
        let limit = cfg.output_limit_normal().hard as usize;
        let mut topo_rx = shared.topology.clone();
        let topo = topo_rx.borrow_and_update().clone();
        let timed = cfg.metrics;
        let drain = shared.drain.register(id);
        Session {
            id,
            cfg,
            drain,
            drain_noticed: false,
            io: ClientIo::new(stream, Arc::new(OutputBudget::new(limit))),
            shared,
            queue: ReplyQueue::default(),
            batch: Batcher::new(timed),
            st: SessionState::new(authenticated),
            batch_replica: None,
            topo: Some(topo),
            topo_rx,
            last_command: None,
            at_head: false,
            tally: Tally::default(),
        }
    }

    pub async fn run(mut self) {
        let result = self.serve().await;
        self.shared.drain.unregister(self.id);
        match result {
            Ok(()) => {}
            Err(End::Drained) => {
                tracing::debug!(session = self.id, "client closed: the gateway drains")
            }
            Err(End::Io(e)) => {
                tracing::debug!(session = self.id, error = %e, "client connection ended")
            }
            Err(e) => {
                if matches!(e, End::OutputLimit { .. }) {
                    self.shared.metrics.error(ErrorKind::OutputLimit);
                }
                tracing::info!(session = self.id, peer = ?self.io.peer(), "closing the client: {e}")
            }
        }
        if self.cfg.metrics {
            self.tally.flush(&self.shared.metrics);
        }
    }

    async fn serve(&mut self) -> Result<(), End> {
        // Timers and limits stay as the session started (they need a
        // restart to change); what a reload changes is read off `self.cfg`.
        let cfg = self.cfg.clone();
        let started = Instant::now();
        let idle = (cfg.idle_timeout_secs > 0).then(|| Duration::from_secs(cfg.idle_timeout_secs));
        let auth_timeout = cfg.auth_timeout();
        let write_timeout = Duration::from_secs(cfg.client_write_timeout_secs.max(1));
        let soft = cfg.output_limit_normal();
        let mut last_write = Instant::now();
        let mut over_soft_since: Option<Instant> = None;
        // Draining: whether this turn wrote a reply held for the end of the
        // stream, and since when the client has sent nothing while owed
        // nothing.
        let mut wrote_held = false;
        let mut quiet_since: Option<Instant> = None;
        loop {
            if self.settle_head().await? {
                return Ok(());
            }
            if self.io.has_output() {
                let held = self.drain.is_asked();
                if self.flush(started)? {
                    last_write = Instant::now();
                    // Held back for the end of the stream (`MSG_MORE`)
                    // only if the drain was asked before it was written:
                    // a reply written plainly may have reached the client,
                    // whose next command may be on its way.
                    wrote_held = held && self.flush_holds(started);
                }
            }
            if self.queue.stops_reading() && self.queue.is_empty() && !self.io.has_output() {
                return Ok(());
            }
            if self.drain.is_asked() && self.between_replies() {
                // Right after its last reply (the end of the stream follows
                // it at once, before the client can send again), or once
                // it has been quiet a while: never while a command it just
                // sent may be on its way (nor in a handshake, `set_up`).
                let now = Instant::now();
                if wrote_held || quiet_since.is_some_and(|s| now >= s + DRAIN_QUIET) {
                    // Boxed: rare, and its buffer and timer would grow every
                    // session's future.
                    Box::pin(self.io.close_gracefully(DRAIN_LINGER)).await;
                    return Err(End::Drained);
                }
                quiet_since.get_or_insert(now);
            }
            wrote_held = false;
            self.shared.config.refresh(&mut self.cfg);
            let held = self.io.budget.held();
            if self.io.budget.is_over() {
                return Err(End::OutputLimit {
                    held,
                    limit: self.io.budget.limit() as u64,
                });
            }
            over_soft_since = (soft.soft > 0 && held as u64 > soft.soft)
                .then(|| over_soft_since.unwrap_or_else(Instant::now));
            // Timers only where one applies: none on the hot path.
            let has_output = self.io.has_output();
            let deadline = [
                auth_timeout
                    .filter(|_| !self.st.authenticated)
                    .map(|d| started + d),
                idle.filter(|_| self.queue.is_empty() && !has_output)
                    .map(|d| Instant::now() + d),
                has_output.then(|| last_write + write_timeout),
                over_soft_since.map(|s| s + Duration::from_secs(soft.soft_secs)),
                quiet_since.map(|s| s + DRAIN_QUIET),
            ]
            .into_iter()
            .flatten()
            .min();
            let can_read = !self.queue.stops_reading()
                && self.queue.commands() < cfg.max_pipeline
                && !self.io.output_backlogged();
            if cfg.metrics {
                self.tally.flush(&self.shared.metrics);
            }
            // Replies waiting beyond the head, or output the client has not
            // taken: watch the budget (one atomic swap to register).
            let watch_budget = has_output || self.queue.commands() > 1;
            let wake = {
                let head = self.queue.head_receiver();
                let io = &mut self.io;
                let drain = &self.drain;
                tokio::select! {
                    biased;
                    r = async { match head { Some(rx) => rx.await, None => std::future::pending().await } } => Wake::Reply(r),
                    ready = std::future::poll_fn(|cx| io.poll_ready(cx, can_read, has_output, watch_budget)) => Wake::Io(ready),
                    _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => Wake::Timer,
                    _ = std::future::poll_fn(|cx| drain.poll_asked(cx)), if !self.drain_noticed => Wake::Drain,
                }
            };
            match wake {
                Wake::Reply(r) => self.resolve_head(r.ok()),
                Wake::Io(Ready::Read(r)) => {
                    quiet_since = None;
                    if r? == 0 {
                        return Ok(());
                    }
                    self.parse_input().await;
                }
                Wake::Io(Ready::Writable(r)) => {
                    r?;
                    let held = self.drain.is_asked();
                    if self.flush(started)? {
                        last_write = Instant::now();
                        wrote_held = held && self.flush_holds(started);
                    }
                }
                Wake::Io(Ready::OverBudget) => {} // judged at the top of the loop
                Wake::Drain => self.drain_noticed = true, // judged at the top
                Wake::Timer => {
                    let now = Instant::now();
                    if quiet_since.is_some_and(|s| now >= s + DRAIN_QUIET) {
                        continue; // closed at the top
                    }
                    if let Some(d) =
                        auth_timeout.filter(|d| !self.st.authenticated && now >= started + *d)
                    {
                        self.io.push(&crate::reply::error(
                            "ERR belay: authentication timed out; closing the connection",
                        ));
                        let _ = self.io.try_flush();
                        return Err(End::AuthTimeout(d));
                    }
                    if has_output && now >= last_write + write_timeout {
                        return Err(End::Io(io::not_reading(write_timeout)));
                    }
                    if over_soft_since
                        .is_some_and(|s| now >= s + Duration::from_secs(soft.soft_secs))
                    {
                        return Err(End::OutputLimit {
                            held: self.io.budget.held(),
                            limit: soft.soft,
                        });
                    }
                    if let Some(d) = idle.filter(|_| self.queue.is_empty() && !has_output) {
                        return Err(End::Idle(d));
                    }
                }
            }
        }
    }

    /// A point where closing costs the client nothing: every reply
    /// written, no request half-read, no transaction open (a client in
    /// `MULTI` gets its `EXEC` answered first). A blocking command is a
    /// reply still owed, so it is answered first too.
    fn between_replies(&self) -> bool {
        self.queue.is_empty()
            && !self.io.has_output()
            && self.io.inbuf.is_empty()
            && !self.st.in_transaction()
    }

    /// Writes what the client is owed; held back by the kernel until the
    /// end of the stream when a drain closes the connection after it (see
    /// [`ClientIo::try_flush_held`]).
    fn flush(&mut self, started: Instant) -> std::io::Result<bool> {
        match self.flush_holds(started) {
            true => self.io.try_flush_held(),
            false => self.io.try_flush(),
        }
    }

    /// The output to write now is the last before a drain closes the
    /// connection: held for the end of the stream (see
    /// `ClientIo::try_flush_held`).
    fn flush_holds(&self, started: Instant) -> bool {
        self.drain.is_asked()
            && set_up(started)
            && self.queue.is_empty()
            && self.io.inbuf.is_empty()
            && !self.st.in_transaction()
    }

    /// The current topology; re-read only when discovery published a new one.
    fn topology(&mut self) -> &Arc<Topology> {
        if self.topo.is_none() || self.topo_rx.has_changed().unwrap_or(false) {
            self.topo = Some(self.topo_rx.borrow_and_update().clone());
        }
        self.topo.as_ref().expect("set above")
    }

    /// The current topology, taken out of the session for the length of
    /// one request's handling (no reference count touched per command);
    /// [`Session::put_topology`] puts it back.
    fn take_topology(&mut self) -> Arc<Topology> {
        self.topology();
        self.topo.take().expect("set by topology()")
    }

    /// Puts back what [`Session::take_topology`] took, unless something
    /// read a newer one meanwhile.
    fn put_topology(&mut self, topo: Arc<Topology>) {
        self.topo.get_or_insert(topo);
    }

    /// Which shared connection of a pool this session uses.
    fn slot(&self) -> usize {
        self.shared.slot(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_command_is_reused_only_for_the_same_name_and_table() {
        use crate::commands::Class;
        let table = Arc::new(CommandTable::default());
        let newer = Arc::new(CommandTable::default());
        let read = Routing::plain(Class::Read);
        let last = LastCommand::new(b"GET", read, &table).unwrap();
        assert_eq!(last.routing_of(b"GET", &table), Some(read));
        // Another spelling takes the full path (and gets the same answer).
        assert_eq!(last.routing_of(b"get", &table), None);
        assert_eq!(last.routing_of(b"GETEX", &table), None);
        assert_eq!(last.routing_of(b"GE", &table), None);
        // A new command table (the master's version changed) starts over.
        assert_eq!(last.routing_of(b"GET", &newer), None);
        assert!(LastCommand::new(&[b'x'; 25], read, &table).is_none());
        assert!(LastCommand::new(&[b'x'; 24], read, &table).is_some());
    }

    /// Every connected client costs its session's future, so it must stay
    /// small: rare, deep paths (subscriptions, logins, the failover wait)
    /// are boxed.
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
            let cfg = Arc::new(crate::reload::LiveConfig::new(
                crate::config::GatewayConfig::default(),
                None,
            ));
            let telemetry = crate::metrics::Telemetry::default();
            let (_discovery, topology, events) =
                crate::discovery::Discovery::new(cfg.clone(), telemetry.clone());
            let shared = Arc::new(Shared::new(cfg, topology, events, telemetry));
            let session = Session::new(1, ClientStream::Plain(stream), shared);
            let size = std::mem::size_of_val(&session.run());
            // About 2 KiB: 10 000 idle clients cost 22 MB of futures. (The
            // open batch's shared connection, for durable writes' choice of
            // connection: 8 bytes; the settings a reload swaps, the drain's
            // flag and its quiet timer: 48. A cluster's routing — the job's
            // hash slot and the subscription's shard: 64.)
            assert!(size <= 2296, "the session future grew to {size} bytes");
        });
    }
}

#[cfg(test)]
mod timers;
