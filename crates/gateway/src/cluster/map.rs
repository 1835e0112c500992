//! Which shard serves each hash slot, and each shard's own topology.

use std::sync::Arc;

use super::slot::SLOTS;
use crate::topology::Topology;

/// No shard serves the slot (not assigned, or its shard has no master).
const UNSERVED: u16 = u16::MAX;

/// A Redis Cluster as the gateway routes to it: one [`Topology`] per shard
/// — master, replicas, offsets, why writes are held — exactly what a
/// Sentinel group has, so the session routes within a shard as it does
/// within a group.
pub struct ShardMap {
    /// Per shard, in the order of their first slot.
    pub shards: Vec<Arc<Topology>>,
    /// The shard index of every slot.
    slots: Box<[u16]>,
    /// Which shard serves which slot, as one number: equal for two maps
    /// only if every slot is in the same shard in both.
    layout: u64,
    /// Slots whose reads go to their master, not its replicas: being moved
    /// to another shard, or moved already while this map is behind (see
    /// `cluster::unsettled`). Sorted; empty but during a resharding.
    unsettled: Vec<u16>,
    /// Masters that serve no slot yet (see `cluster::idle_masters`).
    idle: Vec<Arc<crate::backend::NodePool>>,
}

impl ShardMap {
    /// `ranges[i]` are the slot ranges (inclusive) shard `i` serves.
    pub fn new(shards: Vec<Arc<Topology>>, ranges: &[Vec<(u16, u16)>]) -> ShardMap {
        let mut slots = vec![UNSERVED; SLOTS].into_boxed_slice();
        for (i, shard) in ranges.iter().enumerate() {
            for &(from, to) in shard {
                for s in from..=to.min(SLOTS as u16 - 1) {
                    slots[s as usize] = i as u16;
                }
            }
        }
        // The slots' shards alone: a master confirmed or not, or replaced
        // by a failover, moves no slot (what was in flight on a replaced
        // master is waited for anyway: it is no shard's master now).
        let layout = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            slots.hash(&mut h);
            h.finish()
        };
        ShardMap {
            shards,
            slots,
            layout,
            unsettled: Vec::new(),
            idle: Vec::new(),
        }
    }

    /// The map, with the masters that serve no slot yet.
    pub fn with_idle(mut self, idle: Vec<Arc<crate::backend::NodePool>>) -> ShardMap {
        self.idle = idle;
        self
    }

    /// A master serving no slot yet, by address: where `ASK` may send a
    /// command while a resharding fills a node just added.
    pub fn idle_master(&self, addr: &str) -> Option<&Arc<crate::backend::NodePool>> {
        self.idle.iter().find(|p| p.addr == addr)
    }

    /// The map, with reads of `slots` kept off replicas.
    pub fn with_unsettled(mut self, mut slots: Vec<u16>) -> ShardMap {
        slots.sort_unstable();
        slots.dedup();
        self.unsettled = slots;
        self
    }

    /// Whether a replica may serve a read of `slot`: not while the slot is
    /// being moved to another shard.
    pub fn replicas_may_serve(&self, slot: u16) -> bool {
        self.unsettled.is_empty() || self.unsettled.binary_search(&slot).is_err()
    }

    /// How many slots of shard `i` are being moved (their reads go to its
    /// master).
    pub fn unsettled_in(&self, i: usize) -> usize {
        self.unsettled
            .iter()
            .filter(|&&s| self.index_of(s) == Some(i))
            .count()
    }

    /// Which master serves which slot (see the field): commands sent under
    /// one layout are known to be for other shards' slots only while it
    /// holds.
    pub fn layout(&self) -> u64 {
        self.layout
    }

    /// The shard that serves `slot`.
    pub fn shard_of(&self, slot: u16) -> Option<&Arc<Topology>> {
        let i = *self.slots.get(slot as usize)?;
        self.shards.get(i as usize)
    }

    /// The index of the shard that serves `slot`.
    pub fn index_of(&self, slot: u16) -> Option<usize> {
        let i = *self.slots.get(slot as usize)?;
        (i != UNSERVED).then_some(i as usize)
    }

    /// Slots no shard serves.
    pub fn unserved(&self) -> usize {
        self.slots.iter().filter(|&&i| i == UNSERVED).count()
    }

    /// The slot ranges shard `i` serves.
    pub fn ranges_of(&self, i: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (s, &owner) in self.slots.iter().enumerate() {
            if owner as usize != i {
                continue;
            }
            match out.last_mut() {
                Some((_, to)) if *to as usize + 1 == s => *to = s as u16,
                _ => out.push((s as u16, s as u16)),
            }
        }
        out
    }
}
