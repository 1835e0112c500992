//! The figures a cluster drill adds to the report: each shard's own write
//! and read blackout (the fault is on one shard; the others should not
//! notice), from the history with every operation put on the shard of its
//! key.

use std::collections::HashMap;

use serde::Serialize;

use super::slots::{op_key, Shards};
use crate::checker::{self, Blackout};
use crate::history::{Layout, Micros, Op};

/// One shard's part of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ShardFigures {
    /// Its slots (`0-5460`).
    pub slots: String,
    /// Its master at the start and after the drill (`host:port`).
    pub master_before: String,
    pub master_after: String,
    /// The lab's name for the master at the start (`node-1`).
    pub master_name: Option<String>,
    /// Whether the fault hit this shard's master.
    pub faulted: bool,
    pub writes: usize,
    pub writes_ok: usize,
    pub reads: usize,
    pub reads_ok: usize,
    /// The longest span with no acknowledged write on this shard's keys.
    pub write_blackout: Blackout,
    /// The longest span with no successful read of this shard's keys.
    pub read_blackout: Blackout,
}

/// What a drill on a cluster adds to the report.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFigures {
    /// `cluster-node-timeout` of the lab.
    pub node_timeout_ms: u64,
    /// Index in `shards` of the shard whose master was broken.
    pub faulted_shard: usize,
    /// Why that shard: "the shard of <key> (slot N)".
    pub chosen_as: String,
    pub shards: Vec<ShardFigures>,
    /// The longest write blackout of any shard but the faulted one.
    pub others_write_blackout_ms: f64,
    /// Operations whose key's slot no shard served at the start (should be 0).
    pub unattributed_ops: usize,
}

impl ClusterFigures {
    pub fn faulted(&self) -> &ShardFigures {
        &self.shards[self.faulted_shard]
    }
}

/// Splits `ops` by shard and measures each shard. `slots` holds the slot
/// of every key in `ops`; `masters_after[i]` is shard `i`'s master after
/// the drill.
#[allow(clippy::too_many_arguments)]
pub fn figures(
    ops: &[Op],
    layout: &Layout,
    slots: &HashMap<String, u16>,
    shards: &Shards,
    masters_after: &[String],
    faulted_shard: usize,
    chosen_as: String,
    node_timeout_ms: u64,
    end_us: Micros,
) -> ClusterFigures {
    let mut by_shard: Vec<Vec<Op>> = vec![Vec::new(); shards.0.len()];
    let mut unattributed_ops = 0;
    for op in ops {
        let shard = slots
            .get(&op_key(layout, &op.kind))
            .and_then(|s| shards.of_slot(*s));
        match shard {
            Some(i) => by_shard[i].push(op.clone()),
            None => unattributed_ops += 1,
        }
    }
    let list: Vec<ShardFigures> = shards
        .0
        .iter()
        .zip(by_shard)
        .enumerate()
        .map(|(i, (s, ops))| {
            let count = |write: bool, ok: bool| {
                ops.iter()
                    .filter(|o| o.kind.is_write() == write && (!ok || o.outcome.is_ok()))
                    .count()
            };
            ShardFigures {
                slots: s.slots_text(),
                master_before: s.master.clone(),
                master_after: masters_after.get(i).cloned().unwrap_or_default(),
                master_name: s.master_name.clone(),
                faulted: i == faulted_shard,
                writes: count(true, false),
                writes_ok: count(true, true),
                reads: count(false, false),
                reads_ok: count(false, true),
                write_blackout: checker::blackout(&ops, true, end_us),
                read_blackout: checker::blackout(&ops, false, end_us),
            }
        })
        .collect();
    let others_write_blackout_ms = list
        .iter()
        .filter(|s| !s.faulted)
        .map(|s| s.write_blackout.longest_ms)
        .fold(0.0, f64::max);
    ClusterFigures {
        node_timeout_ms,
        faulted_shard,
        chosen_as,
        shards: list,
        others_write_blackout_ms,
        unattributed_ops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Outcome};

    fn layout() -> Layout {
        Layout {
            prefix: "p".into(),
            writers: 1,
            readers: 0,
            counters: 1,
            regs_per_writer: 1,
            shard_tags: Vec::new(),
        }
    }

    fn op(kind: OpKind, end_ms: u64, ok: bool) -> Op {
        Op {
            session: 0,
            kind,
            start_us: end_ms * 1000 - 500,
            end_us: end_ms * 1000,
            outcome: if ok {
                Outcome::Ok { value: None }
            } else {
                Outcome::Err {
                    kind: crate::history::ErrorKind::Timeout,
                    sent: true,
                    message: String::new(),
                }
            },
        }
    }

    #[test]
    fn each_shard_is_measured_on_its_own_keys() {
        let l = layout();
        let shards = Shards(vec![
            super::super::slots::StartShard {
                slots: vec![(0, 99)],
                master: "a".into(),
                master_name: None,
            },
            super::super::slots::StartShard {
                slots: vec![(100, 16383)],
                master: "b".into(),
                master_name: None,
            },
        ]);
        let mut slots = HashMap::new();
        slots.insert(l.set_key(0, 1), 5); // shard 0
        slots.insert(l.set_key(0, 2), 5);
        slots.insert(l.counter_key(0), 500); // shard 1
        let ops = vec![
            op(OpKind::Set { writer: 0, seq: 1 }, 100, true),
            op(OpKind::Incr { counter: 0 }, 200, true),
            op(OpKind::Incr { counter: 0 }, 3000, true),
            op(OpKind::Set { writer: 0, seq: 2 }, 4000, true),
            // Its key's slot was never asked: counted, not attributed.
            op(OpKind::Set { writer: 0, seq: 3 }, 4100, false),
        ];
        let f = figures(
            &ops,
            &l,
            &slots,
            &shards,
            &["a2".into(), "b".into()],
            0,
            "test".into(),
            1000,
            5_000_000,
        );
        assert_eq!(f.unattributed_ops, 1);
        let (s0, s1) = (&f.shards[0], &f.shards[1]);
        assert!(s0.faulted && !s1.faulted);
        assert_eq!((s0.writes, s0.writes_ok, s1.writes_ok), (2, 2, 2));
        // Shard 0: nothing acknowledged between 0.1 s and 4.0 s.
        assert_eq!(s0.write_blackout.longest_ms, 3900.0);
        // Shard 1: 0.2 s -> 3.0 s, then 3.0 s -> the end at 5 s is shorter.
        assert_eq!(s1.write_blackout.longest_ms, 2800.0);
        assert_eq!(f.others_write_blackout_ms, 2800.0);
        assert_eq!(s0.master_after, "a2");
        assert_eq!(f.faulted().slots, "0-99");
    }
}
