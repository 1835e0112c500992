//! Blackout: the longest span in which no operation of a kind succeeded.

use serde::Serialize;

use super::ms;
use crate::history::{Micros, Op};

/// The longest span with no success.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Blackout {
    pub longest_ms: f64,
    pub from_ms: f64,
    pub to_ms: f64,
}

/// The longest gap between successful completions of writes (or reads),
/// counting from the start and to `end_us`.
pub(crate) fn blackout(ops: &[Op], writes: bool, end_us: Micros) -> Blackout {
    let mut ends: Vec<Micros> = ops
        .iter()
        .filter(|o| o.kind.is_write() == writes && o.outcome.is_ok())
        .map(|o| o.end_us)
        .collect();
    ends.sort_unstable();
    let mut best = Blackout::default();
    let mut prev = 0;
    for t in ends.into_iter().chain(std::iter::once(end_us.max(prev))) {
        let gap = t.saturating_sub(prev);
        if ms(gap) > best.longest_ms {
            best = Blackout {
                longest_ms: ms(gap),
                from_ms: ms(prev),
                to_ms: ms(t),
            };
        }
        prev = prev.max(t);
    }
    best
}
