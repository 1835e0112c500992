//! Lost writes (acknowledged, gone at the end) and phantoms (increments
//! applied twice), from the history and the final read-back.

use std::collections::HashMap;

use serde::Serialize;

use super::ms;
use crate::history::{Layout, Micros, Op, OpKind, Readback};

/// Writes that were acknowledged and are gone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LostWrites {
    /// Total: unique SETs + missing INCRs + registers behind.
    pub total: usize,
    pub sets: usize,
    /// Acknowledged INCRs missing from the counters' final values.
    pub increments: u64,
    /// Registers whose final value is below the last acknowledged one.
    pub registers: usize,
    /// A few lost keys, for the report.
    pub examples: Vec<String>,
    /// When the lost unique SETs were acknowledged (ms), for the picture.
    pub acked_at_ms: Vec<f64>,
}

/// Effects that should be impossible: double-applied increments, values
/// never written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phantoms {
    pub extra_increments: u64,
    pub impossible_reads: usize,
}

/// Compares what was acknowledged with what was read back at the end.
pub(super) fn lost_writes(ops: &[Op], layout: &Layout, rb: &Readback) -> (LostWrites, Phantoms) {
    let mut lost = LostWrites::default();
    let mut phantoms = Phantoms::default();
    // Unique SETs.
    let mut lost_sets: Vec<(Micros, String)> = Vec::new();
    // Counters: acknowledged and maybe-applied increments.
    let mut incr_acked: HashMap<u32, u64> = HashMap::new();
    let mut incr_maybe: HashMap<u32, u64> = HashMap::new();
    // Registers: last acknowledged value.
    let mut reg_acked: HashMap<u32, u64> = HashMap::new();
    for op in ops {
        let acked = op.outcome.is_ok();
        let maybe = op.outcome.may_have_applied();
        match op.kind {
            OpKind::Set { writer, seq } if acked => {
                let want = seq.to_string();
                match rb.sets.get(&(writer, seq)) {
                    Some(Some(v)) if *v == want => {}
                    _ => lost_sets.push((op.end_us, layout.set_key(writer, seq))),
                }
            }
            OpKind::Incr { counter } if acked => *incr_acked.entry(counter).or_default() += 1,
            OpKind::Incr { counter } if maybe => *incr_maybe.entry(counter).or_default() += 1,
            OpKind::Write { reg, value } if acked => {
                let e = reg_acked.entry(reg).or_default();
                *e = (*e).max(value);
            }
            _ => {}
        }
    }
    lost_sets.sort();
    lost.sets = lost_sets.len();
    lost.acked_at_ms = lost_sets.iter().map(|(t, _)| ms(*t)).collect();
    lost.examples = lost_sets.iter().take(5).map(|(_, k)| k.clone()).collect();
    for c in 0..layout.counters {
        let final_value = rb.counters.get(&c).copied().unwrap_or(0).max(0) as u64;
        let acked = incr_acked.get(&c).copied().unwrap_or(0);
        let maybe = incr_maybe.get(&c).copied().unwrap_or(0);
        if final_value < acked {
            lost.increments += acked - final_value;
            if lost.examples.len() < 8 {
                lost.examples.push(format!(
                    "{} = {final_value}, {acked} INCRs acknowledged",
                    layout.counter_key(c)
                ));
            }
        } else if final_value > acked + maybe {
            phantoms.extra_increments += final_value - acked - maybe;
        }
    }
    for (&reg, &want) in &reg_acked {
        let got = rb
            .regs
            .get(&reg)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if got < want {
            lost.registers += 1;
            if lost.examples.len() < 10 {
                lost.examples.push(format!(
                    "{} = {got}, {want} acknowledged",
                    layout.reg_key(reg)
                ));
            }
        }
    }
    lost.total = lost.sets + lost.increments as usize + lost.registers;
    (lost, phantoms)
}
