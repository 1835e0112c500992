//! What the gateway keeps on a client's behalf: its login, context,
//! transaction, read-your-writes fence, and which master connection its
//! commands are in flight on (so its commands run in the order it sent
//! them, across every change of connection).

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{BackendConn, NodePool};
use crate::context::Context;
use crate::router::Fence;

/// A master connection of the session's own.
pub struct OwnConn {
    pub pool: Arc<NodePool>,
    pub conn: BackendConn,
    /// The context it is set up for now (kept in step with the session's
    /// by replaying `SELECT`/`HELLO` on it in order).
    pub ctx: Context,
}

impl OwnConn {
    /// Usable for `pool` now.
    pub fn serves(&self, pool: &Arc<NodePool>) -> bool {
        Arc::ptr_eq(&self.pool, pool) && self.conn.is_alive() && !pool.is_closed()
    }
}

/// The master connection a session's commands are in flight on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lane {
    /// A shared connection of this context.
    Shared(Context),
    /// The session's own connection.
    Own,
}

/// Commands of the session in flight on one master connection. A session
/// never has master commands in flight on two open connections at once:
/// Redis runs each connection's commands in order, but nothing orders two
/// connections, so a command for another one waits until these are
/// answered (at the head of the queue). A closed node (demoted, down,
/// replaced) orders nothing any more: what was sent there has failed or
/// never will run after a command sent elsewhere now (its replies are
/// still counted off as their slots come up).
pub struct InFlight {
    pub pool: Arc<NodePool>,
    pub lane: Lane,
    /// Which of the lane's shared connections (see `NodePool::choose_shared`).
    pub slot: usize,
    pub commands: usize,
    /// In front of a cluster, the slot map's layout they were sent under
    /// (`MIXED` once sent under two): they are another shard's only while
    /// it holds.
    pub layout: Option<u64>,
}

/// An `InFlight` whose commands were sent under two slot maps.
const MIXED: u64 = u64::MAX;

/// The client library's name and version (`CLIENT SETINFO`).
#[derive(Default)]
pub struct LibInfo {
    pub name: Option<Bytes>,
    pub version: Option<Bytes>,
}

/// Redis session state the gateway keeps for the client.
#[derive(Default)]
pub struct SessionState {
    pub authenticated: bool,
    /// User, database and protocol: what its commands run under.
    pub ctx: Context,
    pub name: Option<Bytes>,
    /// Set by few clients, kept out of line.
    pub lib: Option<Box<LibInfo>>,
    pub in_multi: bool,
    pub watching: bool,
    /// The transaction cannot succeed: its connection was lost, or the
    /// gateway refused a command inside it (Redis then discards at EXEC).
    pub tx_broken: Option<TxBroken>,
    /// Commands of the current transaction went out on the own connection:
    /// losing it loses the transaction.
    pub tx_sent: bool,
    /// In front of a Redis Cluster, `MULTI` waits to be sent with the
    /// transaction's first command: that command's shard is where the
    /// transaction runs.
    pub multi_deferred: bool,
    pub own: Option<OwnConn>,
    pub inflight: Vec<InFlight>,
    /// Where this session's SCAN cursors live: a cursor is good only on
    /// the node that gave it. One replica per group (per shard, in a
    /// cluster).
    scan_replicas: Vec<String>,
    pub fence: Option<Fence>,
    /// Writes sent and not yet answered; reads wait on the master behind them.
    pub unacked_writes: usize,
    /// Writes went to the master on a shared connection since the last
    /// `WAIT`: the session's own connection must first be moved past them.
    pub shared_writes: bool,
    /// The node that served the session's last reply from a node (`BELAY
    /// WHERE`), and whether it was the master.
    pub last_served: Option<(Arc<NodePool>, bool)>,
}

/// Why a transaction will not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxBroken {
    ConnectionLost,
    CommandRefused,
}

impl SessionState {
    pub fn new(authenticated: bool) -> SessionState {
        SessionState {
            authenticated,
            ..SessionState::default()
        }
    }

    /// The replica of `group` this session's cursor reads went to last.
    pub fn scan_replica_in(&self, group: &crate::topology::Topology) -> Option<&str> {
        self.scan_replicas
            .iter()
            .find(|a| group.replicas.iter().any(|r| r.pool.addr == **a))
            .map(String::as_str)
    }

    /// A cursor read of `group` went to replica `addr`: the group's next
    /// ones go there too.
    pub fn remember_scan_replica(&mut self, group: &crate::topology::Topology, addr: &str) {
        self.scan_replicas
            .retain(|a| !group.replicas.iter().any(|r| r.pool.addr == *a));
        self.scan_replicas.push(addr.to_string());
    }

    /// In MULTI or WATCH: the own connection holds state Redis keeps.
    pub fn in_transaction(&self) -> bool {
        self.in_multi || self.watching
    }

    /// The master lane a command for `pool` on `lane` may be sent on now:
    /// false when the session has commands in flight on another one whose
    /// connections are still open (a retired master's count: they may
    /// still be refused, and sent again, before what comes after them).
    ///
    /// Commands in flight on the pools `elsewhere` names do not count: in a
    /// Redis Cluster, another shard's master holds other keys, and nothing
    /// orders two shards (a cluster-aware client pipelines to every node
    /// at once). Commands in
    /// flight on this shard's replaced master still count.
    pub fn may_send_on(
        &self,
        pool: &Arc<NodePool>,
        lane: &Lane,
        elsewhere: impl Fn(&Arc<NodePool>) -> bool,
        layout: Option<u64>,
    ) -> bool {
        self.inflight.iter().all(|f| {
            (Arc::ptr_eq(&f.pool, pool) && f.lane == *lane)
                || f.pool.is_shut()
                // Another shard's under the map they were sent under: after
                // a slot moved, one of them may be refused (MOVED) and sent
                // again where this one goes, so they must be answered first.
                || (f.lane != Lane::Own && f.layout == layout && elsewhere(&f.pool))
        })
    }

    /// Counts `n` commands sent on a master lane (on its shared connection
    /// `slot`).
    pub fn sent_on(
        &mut self,
        pool: &Arc<NodePool>,
        lane: Lane,
        slot: usize,
        n: usize,
        layout: Option<u64>,
    ) {
        match self
            .inflight
            .iter_mut()
            .find(|f| Arc::ptr_eq(&f.pool, pool) && f.lane == lane)
        {
            Some(f) => {
                f.commands += n;
                if f.layout != layout {
                    f.layout = Some(MIXED);
                }
            }
            None => self.inflight.push(InFlight {
                pool: pool.clone(),
                lane,
                slot,
                commands: n,
                layout,
            }),
        }
    }

    /// The shared connection the session's commands in flight on `pool`'s
    /// `lane` went to: the next ones must follow them there.
    pub fn slot_in_flight(&self, pool: &Arc<NodePool>, lane: &Lane) -> Option<usize> {
        self.inflight
            .iter()
            .find(|f| Arc::ptr_eq(&f.pool, pool) && f.lane == *lane)
            .map(|f| f.slot)
    }

    /// `n` commands sent on `pool`'s `lane` were answered (or failed).
    pub fn answered(&mut self, pool: &Arc<NodePool>, lane: &Lane, n: usize) {
        if let Some(i) = self
            .inflight
            .iter()
            .position(|f| Arc::ptr_eq(&f.pool, pool) && f.lane == *lane)
        {
            let f = &mut self.inflight[i];
            f.commands = f.commands.saturating_sub(n);
            if f.commands == 0 {
                self.inflight.swap_remove(i);
            }
        }
    }
}
