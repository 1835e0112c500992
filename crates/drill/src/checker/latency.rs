//! Latency before, during and after the fault.

use serde::Serialize;

use super::{ms, Window};
use crate::history::{Micros, Op};

/// Latency summary of one kind of operation in one phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Latencies of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseLatency {
    /// `before`, `during` or `after` the fault.
    pub phase: &'static str,
    pub writes: Latency,
    pub reads: Latency,
}

/// Percentiles of a set of latencies.
fn latency(mut v: Vec<Micros>) -> Latency {
    if v.is_empty() {
        return Latency::default();
    }
    v.sort_unstable();
    let q = |p: f64| ms(v[((v.len() as f64 - 1.0) * p).round() as usize]);
    Latency {
        count: v.len(),
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        max_ms: ms(*v.last().expect("non-empty")),
    }
}

/// Latencies of writes and reads before, during and after the fault.
pub(super) fn latencies(ops: &[Op], w: Window) -> Vec<PhaseLatency> {
    let phases: [(&'static str, Micros, Micros); 3] = [
        ("before", 0, w.fault_us),
        ("during", w.fault_us, w.recovered_us.max(w.fault_us)),
        ("after", w.recovered_us.max(w.fault_us), Micros::MAX),
    ];
    phases
        .iter()
        .map(|&(phase, from, to)| {
            let pick = |writes: bool| {
                latency(
                    ops.iter()
                        .filter(|o| o.kind.is_write() == writes)
                        .filter(|o| o.start_us >= from && o.start_us < to)
                        .map(Op::latency_us)
                        .collect(),
                )
            };
            PhaseLatency {
                phase,
                writes: pick(true),
                reads: pick(false),
            }
        })
        .collect()
}
