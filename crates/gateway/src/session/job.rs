//! A command on its way to a node: its bytes, how it routes, and the
//! context it was sent in. A job is kept until its reply is final, so it
//! can be retried where that is safe — and a retry runs in exactly the
//! context the client sent it in, whatever the session did since.

use belay_resp::Request;
use bytes::Bytes;
use tokio::time::Instant;

use crate::commands::{Class, Routing};
use crate::context::Context;

/// Which kind of master connection a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// Any connection of its context, shared with other sessions.
    Shared,
    /// The session's own connection: it blocks (BLPOP), counts the
    /// connection's writes (WAIT), or the session has one already.
    Pinned,
    /// The session's own connection, inside MULTI/WATCH: never retried on
    /// another connection, which would not have the transaction.
    Transaction,
}

/// What to do to a reply before the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    None,
    /// `CONFIG GET`: the nodes' passwords are not the client's to read
    /// (its password may be the gateway's own, not the nodes').
    MaskSecrets,
}

/// Why a job waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// No master to write to (a failover, the write guard, a silent master).
    NoMaster,
    /// Reads go to replicas only (`read_from = replica`) and none may serve.
    NoReplica,
    /// The session has commands in flight on another master connection;
    /// Redis orders only one connection's commands.
    OtherConnection,
    /// Refused by the master: waits for discovery to look again.
    Refused,
}

/// A routed command.
pub struct Job {
    /// The command as the client sent it.
    pub raw: Bytes,
    pub routing: Routing,
    pub conn: Conn,
    /// The user, database and protocol it was sent in.
    pub ctx: Context,
    pub rewrite: Rewrite,
    /// `EXEC` or `DISCARD`: the connection is out of its transaction after it.
    pub ends_tx: bool,
    /// Set once it has been held or retried (rare: kept out of line).
    pub retry: Option<Box<Retry>>,
    /// In front of a Redis Cluster: the hash slot of its keys (`None`: it
    /// has none), which picks the shard it routes in.
    pub slot: Option<u16>,
}

/// A job's history of waiting and retrying.
#[derive(Debug, Default)]
pub struct Retry {
    /// When it was first held, for the failover hold's deadline.
    pub since: Option<Instant>,
    pub attempts: u8,
    /// The last refusal (READONLY, NOREPLICAS, …) it got, passed on if the
    /// hold runs out.
    pub refusal: Option<Bytes>,
    /// Must go to the master even though it reads (NOSCRIPT or BUSY on a
    /// replica, or refused there).
    pub force_master: bool,
    /// Why it waited last.
    pub waited_for: Option<Waiting>,
    /// A cluster node answered `ASK` naming this node (`host:port`): the
    /// command goes there once, after `ASKING`.
    pub ask: Option<String>,
    /// A refused write waits until discovery has asked the master its role
    /// more times than this ([`Topology::master_checks`]).
    ///
    /// [`Topology::master_checks`]: crate::topology::Topology::master_checks
    pub after_check: u64,
}

impl Job {
    pub fn new(req: Request, routing: Routing, conn: Conn, ctx: Context) -> Job {
        Job {
            raw: req.raw,
            routing,
            conn,
            ctx,
            rewrite: Rewrite::None,
            ends_tx: false,
            retry: None,
            slot: None,
        }
    }

    /// Its effect is done once it is answered: a write outside a
    /// transaction, or the `EXEC` that runs one. (A command queued inside
    /// MULTI does nothing until EXEC.)
    pub fn completes_writes(&self) -> bool {
        if self.in_transaction() {
            self.ends_tx
        } else {
            self.class().has_effect()
        }
    }

    /// It leaves its connection inside a transaction (MULTI or a command
    /// queued after it).
    pub fn leaves_tx_open(&self) -> bool {
        self.in_transaction() && !self.ends_tx
    }

    pub fn class(&self) -> Class {
        self.routing.class
    }

    pub fn in_transaction(&self) -> bool {
        self.conn == Conn::Transaction
    }

    pub fn retry_mut(&mut self) -> &mut Retry {
        self.retry.get_or_insert_with(Default::default)
    }

    pub fn force_master(&self) -> bool {
        self.retry.as_ref().is_some_and(|r| r.force_master)
    }

    pub fn attempts(&self) -> u8 {
        self.retry.as_ref().map_or(0, |r| r.attempts)
    }

    /// When it started waiting (now, the first time this is asked).
    pub fn held_since(&mut self, now: Instant) -> Instant {
        *self.retry_mut().since.get_or_insert(now)
    }
}
