//! Stale reads (a value older than one acknowledged before the read
//! started), read-your-writes violations, and reads of values never written.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::ms;
use crate::history::{Layout, Micros, Op, OpKind, Outcome};

/// Stale reads and read-your-writes violations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Staleness {
    pub stale_reads: usize,
    /// Stale reads that missed a write acknowledged more than `bound_ms`
    /// before the read started.
    pub beyond_bound: usize,
    pub bound_ms: f64,
    /// The stalest read: how long the value it missed had been acknowledged.
    pub max_staleness_ms: f64,
    pub ryw_violations: usize,
    /// Sessions with at least one read-your-writes violation.
    pub ryw_sessions: usize,
    /// When stale reads started (ms), for the picture (at most a few hundred).
    pub at_ms: Vec<f64>,
}

/// Judges every successful register read against the acknowledged
/// writes; also returns how many reads got a value never written.
pub(super) fn staleness(ops: &[Op], layout: &Layout, bound_us: Micros) -> (Staleness, usize) {
    // Per register: acknowledged writes as (ack time, value), and the
    // highest value ever attempted.
    let mut acks: HashMap<u32, Vec<(Micros, u64)>> = HashMap::new();
    let mut attempted: HashMap<u32, u64> = HashMap::new();
    for op in ops {
        if let OpKind::Write { reg, value } = op.kind {
            let a = attempted.entry(reg).or_default();
            *a = (*a).max(value);
            if op.outcome.is_ok() {
                acks.entry(reg).or_default().push((op.end_us, value));
            }
        }
    }
    for v in acks.values_mut() {
        v.sort();
    }
    let mut st = Staleness {
        bound_ms: ms(bound_us),
        ..Staleness::default()
    };
    let mut impossible = 0;
    let mut ryw_sessions = HashSet::new();
    for op in ops {
        let (OpKind::Read { reg }, Outcome::Ok { value }) = (&op.kind, &op.outcome) else {
            continue;
        };
        let got = value.unwrap_or(0);
        if got > attempted.get(reg).copied().unwrap_or(0) {
            impossible += 1;
            continue;
        }
        let Some(list) = acks.get(reg) else { continue };
        // Acknowledged before the read started.
        let n = list.partition_point(|(t, _)| *t < op.start_us);
        // The earliest of those whose value is newer than what was read
        // (values only grow, but sort by value to be safe).
        let newer = list[..n]
            .iter()
            .filter(|(_, v)| *v > got)
            .min_by_key(|(t, _)| *t);
        if let Some((acked_at, _)) = newer {
            st.stale_reads += 1;
            let behind = op.start_us.saturating_sub(*acked_at);
            if behind > bound_us {
                st.beyond_bound += 1;
            }
            st.max_staleness_ms = st.max_staleness_ms.max(ms(behind));
            if st.at_ms.len() < 500 {
                st.at_ms.push(ms(op.start_us));
            }
            if op.session == layout.owner(*reg) {
                st.ryw_violations += 1;
                ryw_sessions.insert(op.session);
            }
        }
    }
    st.ryw_sessions = ryw_sessions.len();
    (st, impossible)
}
