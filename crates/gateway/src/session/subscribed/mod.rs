//! Subscribed mode: the session becomes a pipe to a subscription connection
//! on the master — made as the client's own user, so a user limited to some
//! channels gets those and no others — until the client unsubscribes from
//! everything (then it is a normal session again) or leaves. Only the
//! commands Redis allows in subscribed mode go through the pipe; the gateway
//! answers the others, in their turn (see [`Markers`]). If the subscription
//! connection is lost (the master failed or was demoted), the session's
//! subscriptions are made again on the new master, as the same user; the
//! client stays connected.
//!
//! The session reads the subscription connection itself (no task, no
//! queue between them): what it holds for a client that does not read is
//! its output buffer, bounded by the pub/sub output limit.

mod rules;

use std::sync::Arc;
use std::time::Duration;

use belay_resp::{FrameScanner, Limits, Request};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::io::{ClientIo, Ready};
use crate::cluster::key_slot;
use crate::config::GatewayConfig;
use crate::context::Context;
use crate::drain::SessionDrain;
use crate::reply;
use crate::topology::Topology;

use rules::{AfterMarker, InSubscription, Markers, Subscriptions};

/// How a subscribed session's time as a pipe ended.
pub enum End {
    /// The client quit or went away, or there was no master to subscribe on.
    Closed,
    /// The client unsubscribed from everything, or sent RESET (`then`):
    /// the session serves normally again.
    Unsubscribed { then: Option<Request> },
}

/// What the pipe needs from its session.
pub struct Pipe<'a> {
    pub io: &'a mut ClientIo,
    pub ctx: &'a Context,
    pub cfg: &'a GatewayConfig,
    pub topology: watch::Receiver<Arc<Topology>>,
    pub id: u64,
    /// In front of a Redis Cluster, the slot of the first sharded channel
    /// (`SSUBSCRIBE`): sharded messages stay within their shard, so the
    /// subscription lives on that shard's master. `None`: shard of slot 0
    /// (plain `SUBSCRIBE`: the cluster sends every message to every node).
    pub slot: Option<u16>,
    /// The gateway drains: the subscriber is closed once everything the
    /// node sent before the gateway asked is passed on (between messages),
    /// and subscribes again through the gateway that replaces this one.
    pub drain: &'a SessionDrain,
    /// How long the closed socket is read after the end of the stream.
    pub linger: Duration,
}

/// A subscription connection.
struct Node {
    // Split with `tokio::io::split` (TLS is one state machine for both
    // directions); its lock costs nothing next to a subscription's traffic.
    read: ReadHalf<belay_client::Stream>,
    write: WriteHalf<belay_client::Stream>,
    buf: BytesMut,
    scanner: FrameScanner,
    addr: String,
}

impl Pipe<'_> {
    /// Pipes until the client leaves subscribed mode or the session ends.
    pub async fn run(mut self, first: Request) -> std::io::Result<End> {
        let mut subs = Subscriptions::default();
        let mut first = Some(first);
        // A RESET read in subscribed mode, handled once the session is out of it.
        let mut reset: Option<Request> = None;
        let limit = self.cfg.output_limit_pubsub();
        let write_timeout = Duration::from_secs(self.cfg.client_write_timeout_secs.max(1));
        let mut over_soft_since: Option<Instant> = None;
        loop {
            if self.drain.is_asked() && first.is_none() {
                // Lost its subscription connection while draining: closed
                // now. (A first SUBSCRIBE is answered, then closed after.)
                self.io.flush(write_timeout).await?;
                self.io.close_gracefully(self.linger).await;
                return Ok(End::Closed);
            }
            let Some(mut node) = self.connect().await else {
                self.io.push(&reply::error(
                    "TRYAGAIN belay: no confirmed master to subscribe on",
                ));
                self.io.flush(write_timeout).await?;
                return Ok(End::Closed);
            };
            let mut markers = Markers::new();
            // (Re)subscribe; confirmations of a re-subscription are not the client's.
            let mut swallow = 0usize;
            if let Some(req) = first.take() {
                subs.track(&req);
                let _ = node.write.write_all(&req.raw).await;
                let _ = node.write.flush().await;
            } else {
                for (cmd, set) in subs.groups() {
                    if set.is_empty() {
                        continue;
                    }
                    swallow += set.len();
                    // Shard channels one by one: one SSUBSCRIBE may not
                    // span slots, even on one shard.
                    let per_command = if cmd == "SSUBSCRIBE" { 1 } else { set.len() };
                    let channels: Vec<&[u8]> = set.iter().map(|c| c.as_ref()).collect();
                    for some in channels.chunks(per_command) {
                        let mut args: Vec<&[u8]> = vec![cmd.as_bytes()];
                        args.extend_from_slice(some);
                        let _ = node
                            .write
                            .write_all(&belay_resp::encode_command(&args))
                            .await;
                    }
                }
                tracing::info!(session = self.id, master = %node.addr, "subscriptions re-established");
            }
            // Input that came with the SUBSCRIBE (or before the connection was lost).
            let mut input_ready = !self.io.inbuf.is_empty();
            let mut drain_marked = false;
            'pipe: loop {
                if input_ready && !markers.ending() {
                    input_ready = false;
                    match self
                        .client_commands(&mut node, &mut subs, &mut markers, &mut reset)
                        .await?
                    {
                        Flow::Go => {}
                        Flow::Close => return Ok(End::Closed),
                        Flow::NodeLost => break 'pipe,
                    }
                    continue;
                }
                self.io.try_flush()?;
                let held = self.io.budget.held() as u64;
                if limit.hard > 0 && held > limit.hard {
                    tracing::info!(session = self.id, held, "closing a subscriber over its output limit (it does not read its messages)");
                    return Ok(End::Closed);
                }
                over_soft_since = (limit.soft > 0 && held > limit.soft)
                    .then(|| over_soft_since.unwrap_or_else(Instant::now));
                let soft_deadline =
                    over_soft_since.map(|s| s + Duration::from_secs(limit.soft_secs));
                let can_read = !markers.ending() && !self.io.output_backlogged();
                let has_output = self.io.has_output();
                let io = &mut *self.io;
                tokio::select! {
                    n = node.read.read_buf(&mut node.buf) => {
                        if !matches!(n, Ok(n) if n > 0) {
                            break 'pipe;
                        }
                        while let Some(frame) = node.next_frame() {
                            let Some(frame) = frame else { break 'pipe };
                            if markers.is_marker(&frame) {
                                let marker = markers.pop().expect("a marker is waiting");
                                if let Some(end) = marker_turn(io, marker, &mut reset) {
                                    io.flush(write_timeout).await?;
                                    if drain_marked && matches!(end, End::Closed) {
                                        tracing::debug!(session = self.id, "draining: a subscriber closed between messages");
                                        io.close_gracefully(self.linger).await;
                                    }
                                    return Ok(end);
                                }
                                continue;
                            }
                            if swallow > 0 && rules::is_subscribe_confirmation(&frame) {
                                swallow -= 1;
                                continue;
                            }
                            io.push(&frame);
                        }
                    }
                    ready = std::future::poll_fn(|cx| io.poll_ready(cx, can_read, has_output, false)) => match ready {
                        Ready::Read(r) => {
                            if r? == 0 {
                                return Ok(End::Closed);
                            }
                            input_ready = true;
                        }
                        Ready::Writable(r) => r?,
                        Ready::OverBudget => {}
                    },
                    _ = self.topology.changed() => {
                        // A silent master (paused, cut off) never closes the
                        // connection: once its shard has another master, the
                        // subscriptions move there.
                        let moved = self
                            .topology
                            .borrow_and_update()
                            .group(self.slot)
                            .and_then(|g| g.read_master.as_ref())
                            .is_some_and(|m| m.addr != node.addr);
                        if moved {
                            break 'pipe;
                        }
                    }
                    _ = std::future::poll_fn(|cx| self.drain.poll_asked(cx)), if !drain_marked => {
                        // Closed once the echo of this marker shows that
                        // everything before it was passed on.
                        drain_marked = true;
                        let marker = markers.add(None, AfterMarker::Close);
                        if node.write.write_all(&marker).await.is_err() {
                            break 'pipe;
                        }
                        let _ = node.write.flush().await;
                    }
                    _ = sleep_until(soft_deadline) => {
                        tracing::info!(session = self.id, "closing a subscriber over its soft output limit for {} s", limit.soft_secs);
                        return Ok(End::Closed);
                    }
                }
            }
            // The connection is gone, and with it the replies still owed: the
            // gateway's own answers after them are due now.
            while let Some(marker) = markers.pop() {
                if let Some(end) = marker_turn(self.io, marker, &mut reset) {
                    self.io.flush(write_timeout).await?;
                    return Ok(end);
                }
            }
            tracing::info!(
                session = self.id,
                "subscription connection lost; re-subscribing"
            );
        }
    }

    /// A subscription connection to the master, as the client's user, within
    /// the failover hold.
    async fn connect(&mut self) -> Option<Node> {
        let since = Instant::now();
        loop {
            let master = self
                .topology
                .borrow_and_update()
                .group(self.slot)
                .and_then(|g| g.read_master.clone());
            if let Some(master) = master {
                match master.control_connection(self.ctx).await {
                    Ok(conn) => {
                        let (read, write) = tokio::io::split(conn.into_stream());
                        return Some(Node {
                            read,
                            write,
                            buf: BytesMut::with_capacity(16 * 1024),
                            scanner: FrameScanner::default(),
                            addr: master.addr.clone(),
                        });
                    }
                    Err(e) => {
                        tracing::debug!(session = self.id, error = %e, "cannot open a subscription connection")
                    }
                }
            }
            if since.elapsed() > self.cfg.failover_hold() {
                return None;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.topology.changed()).await;
        }
    }

    /// Why an `SSUBSCRIBE` cannot go to this subscription connection, as
    /// the client's error: in front of a cluster its channels must share a
    /// slot (Redis's `CROSSSLOT`) and live on the shard this session's
    /// shard channels are on (a node would answer `MOVED`, which a client
    /// that knows nothing of shards cannot follow). Refused, it is not
    /// tracked: the session is not left subscribed to what never was.
    pub fn shard_channels_refusal(&self, req: &Request) -> Option<Bytes> {
        let topo = self.topology.borrow();
        if topo.shards.is_none() || !req.name()?.eq_ignore_ascii_case(b"ssubscribe") {
            return None;
        }
        let first = req.arg(1).map(key_slot)?;
        if rules::crosses_slots(req) {
            return Some(reply::error(crate::cluster::CROSSSLOT));
        }
        let master = |slot| {
            topo.group(slot)
                .and_then(|g| g.read_master.as_ref())
                .map(|m| m.addr.clone())
        };
        (master(Some(first)) != master(self.slot)).then(|| {
            reply::error(
                "ERR belay: this connection's shard channels are on another shard; subscribe to this one on another connection",
            )
        })
    }

    /// Handles the client's complete commands in subscribed mode, up to one
    /// that ends it.
    async fn client_commands(
        &mut self,
        node: &mut Node,
        subs: &mut Subscriptions,
        markers: &mut Markers,
        reset: &mut Option<Request>,
    ) -> std::io::Result<Flow> {
        while !markers.ending() {
            let req = match self.io.next_request(&self.cfg.limits()) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    self.io.push(&reply::error(&format!("ERR {e}")));
                    let timeout = Duration::from_secs(self.cfg.client_write_timeout_secs.max(1));
                    self.io.flush(timeout).await?;
                    return Ok(Flow::Close);
                }
            };
            if req.is_empty() {
                continue;
            }
            let mut how = rules::in_subscription(&req);
            let refusal = match how {
                InSubscription::Track => self.shard_channels_refusal(&req),
                _ => None,
            };
            if refusal.is_some() {
                how = InSubscription::Refuse;
            }
            let raw = match how {
                InSubscription::Forward => req.raw.clone(),
                InSubscription::Refuse if refusal.is_some() => {
                    markers.add(refusal, AfterMarker::Continue)
                }
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
                    markers.add(Some(rules::refusal(&req)), AfterMarker::Continue)
                }
            };
            let write = async {
                node.write.write_all(&raw).await?;
                node.write.flush().await
            };
            match tokio::time::timeout(self.cfg.request_timeout(), write).await {
                Ok(Ok(())) => {}
                // Lost: subscribe again and answer the markers.
                _ => return Ok(Flow::NodeLost),
            }
        }
        Ok(Flow::Go)
    }
}

/// What the pipe does after the client's commands.
enum Flow {
    Go,
    Close,
    NodeLost,
}

impl Node {
    /// The next complete frame from the node: `None` when more bytes are
    /// needed, `Some(None)` when the stream is not RESP.
    fn next_frame(&mut self) -> Option<Option<Bytes>> {
        match self.scanner.scan(&self.buf, &Limits::for_relayed_replies()) {
            Ok(Some(n)) => Some(Some(self.buf.split_to(n).freeze())),
            Ok(None) => None,
            Err(_) => Some(None),
        }
    }
}

/// A marker's turn has come: writes the gateway's own answer, if any, and
/// says whether (and how) the session leaves the pipe.
fn marker_turn(
    io: &mut ClientIo,
    (answer, then): (Option<Bytes>, AfterMarker),
    reset: &mut Option<Request>,
) -> Option<End> {
    if let Some(answer) = answer {
        io.push(&answer);
    }
    match then {
        AfterMarker::Continue => None,
        AfterMarker::Leave => Some(End::Unsubscribed { then: reset.take() }),
        AfterMarker::Close => Some(End::Closed),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
