//! The checker: from the history and what was read back at the end, what
//! the application actually experienced. Everything here is a pure
//! function of its inputs, so it is unit-tested on synthetic histories —
//! including ones built to fail, because a checker that cannot fail proves
//! nothing.
//!
//! Definitions (also in ARCHITECTURE notes of the drill crate docs):
//! - **lost write**: an acknowledged unique SET whose key is missing or holds
//!   another value at the end; a counter whose final value is below the
//!   number of acknowledged INCRs (each missing increment counts once); a
//!   register whose final value is below its last acknowledged value.
//! - **phantom**: a counter above acknowledged + maybe-applied INCRs (an
//!   increment applied twice), or a read of a register value never written.
//! - **stale read**: a successful GET of a register that returned a value
//!   older than one whose write was acknowledged *before the read started*.
//!   Its staleness is how long that newer value had been acknowledged.
//!   A stale read *beyond the bound* missed a write acknowledged more than
//!   `stale_bound` earlier: replicas are asynchronous, so a read from a
//!   replica may trail a write by replication lag (the gateway bounds that
//!   lag, 1 s by default); only reads staler than the bound fail a drill.
//! - **read-your-writes violation**: a stale read made by the session that
//!   wrote the register (it missed its own acknowledged write).
//! - **blackout**: the longest span in which no operation of that kind
//!   succeeded (between consecutive successful completions, and from the
//!   start / to the end of the run).
//!
//! One module per check: `lost` (lost writes and phantoms), `stale` (stale
//! reads and read-your-writes), `blackout`, `errors`, `latency` and
//! `timeline` (the picture's buckets); here the counts and the verdict.

mod blackout;
mod errors;
mod latency;
mod lost;
mod stale;
mod timeline;

pub(crate) use blackout::blackout;
pub use blackout::Blackout;
pub use errors::ErrorCount;
pub use latency::{Latency, PhaseLatency};
pub use lost::{LostWrites, Phantoms};
pub use stale::Staleness;
pub use timeline::Bucket;

use serde::Serialize;

use crate::history::{Layout, Micros, Op, Outcome, Readback};

/// When the fault happened, on the drill's clock, to split latencies into
/// before / during / after.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Window {
    /// The fault was injected.
    pub fault_us: Micros,
    /// The fault was over: healed, and the Sentinels had switched master if
    /// they were going to.
    pub recovered_us: Micros,
    /// The workload stopped.
    pub end_us: Micros,
}

/// Operation counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub writes: usize,
    pub writes_ok: usize,
    /// Failed writes that may still have been applied.
    pub writes_maybe: usize,
    pub reads: usize,
    pub reads_ok: usize,
}

/// Everything the checker concluded.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub counts: Counts,
    pub lost: LostWrites,
    pub phantoms: Phantoms,
    pub staleness: Staleness,
    pub write_blackout: Blackout,
    pub read_blackout: Blackout,
    pub errors: Vec<ErrorCount>,
    pub latency: Vec<PhaseLatency>,
    pub bucket_ms: f64,
    pub timeline: Vec<Bucket>,
}

impl Analysis {
    /// The drill passes when nothing acknowledged was lost, nothing
    /// impossible happened, no session missed its own write and no read
    /// was staler than the bound.
    pub fn passed(&self) -> bool {
        self.lost.total == 0
            && self.phantoms.extra_increments == 0
            && self.phantoms.impossible_reads == 0
            && self.staleness.beyond_bound == 0
            && self.staleness.ryw_violations == 0
    }
}

/// Analyses a history. `ops` may be in any order.
pub fn analyse(
    ops: &[Op],
    layout: &Layout,
    readback: &Readback,
    window: Window,
    stale_bound_us: Micros,
) -> Analysis {
    let mut counts = Counts::default();
    for op in ops {
        if op.kind.is_write() {
            counts.writes += 1;
            match &op.outcome {
                Outcome::Ok { .. } => counts.writes_ok += 1,
                o if o.may_have_applied() => counts.writes_maybe += 1,
                Outcome::Err { .. } => {}
            }
        } else {
            counts.reads += 1;
            if op.outcome.is_ok() {
                counts.reads_ok += 1;
            }
        }
    }
    let (lost, mut phantoms) = lost::lost_writes(ops, layout, readback);
    let (staleness, impossible) = stale::staleness(ops, layout, stale_bound_us);
    phantoms.impossible_reads = impossible;
    let end = window.end_us;
    Analysis {
        counts,
        lost,
        phantoms,
        staleness,
        write_blackout: blackout::blackout(ops, true, end),
        read_blackout: blackout::blackout(ops, false, end),
        errors: errors::errors(ops),
        latency: latency::latencies(ops, window),
        bucket_ms: ms(timeline::BUCKET_US),
        timeline: timeline::timeline(ops, end),
    }
}

/// Microseconds on the drill clock as milliseconds, for the report.
fn ms(us: Micros) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests;
