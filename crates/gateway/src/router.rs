//! Choosing the node for a read: the least busy eligible replica that is
//! recent enough for the session, else the master (per `read_from`).

use std::sync::Arc;
use std::time::Instant;

use crate::pool::NodePool;
use crate::topology::{ReplicaNode, Topology};

/// A session's read-your-writes fence: the moment its last write was
/// acknowledged. A replica may serve the session's reads only once an offset
/// sample taken after that moment shows it has caught up with the master.
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    pub acked_at: Instant,
}

impl Fence {
    /// True when `replica` provably holds every write acknowledged before the fence.
    pub fn satisfied_by(&self, topo: &Topology, replica: &ReplicaNode) -> bool {
        topo.sampled_at > self.acked_at
            && topo.master_offset > 0
            && replica.offset >= topo.master_offset
    }
}

/// A replica to keep using if it is still usable.
#[derive(Clone, Copy)]
pub enum Prefer<'a> {
    /// Spread by load.
    Any,
    /// The node at this address (a SCAN cursor lives there; pools may be
    /// replaced between calls).
    Addr(&'a str),
    /// This pool (earlier reads of the same client input went there, within
    /// one topology snapshot).
    Pool(&'a Arc<NodePool>),
}

/// The replica a read should go to, or `None` for "use the master": the one
/// with the fewest commands in flight; ties are broken from `turn` (the write
/// epoch), so an idle gateway still spreads reads while sessions routing in
/// the same turn of the event loop agree.
pub fn pick_replica<'a>(
    topo: &'a Topology,
    fence: Option<Fence>,
    prefer: Prefer<'_>,
    turn: usize,
) -> Option<&'a ReplicaNode> {
    let usable = |r: &&ReplicaNode| fence.is_none_or(|f| f.satisfied_by(topo, r));
    let preferred = match prefer {
        Prefer::Any => None,
        Prefer::Addr(addr) => topo.eligible_replicas().find(|r| r.pool.addr == addr),
        Prefer::Pool(pool) => topo
            .eligible_replicas()
            .find(|r| Arc::ptr_eq(&r.pool, pool)),
    };
    if let Some(r) = preferred.filter(usable) {
        return Some(r);
    }
    let start = turn % topo.replicas.len().max(1);
    topo.replicas[start..]
        .iter()
        .chain(&topo.replicas[..start])
        .filter(|r| r.eligible && !r.pool.is_closed())
        .filter(usable)
        .min_by_key(|r| r.pool.outstanding())
}
