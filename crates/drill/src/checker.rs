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

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{ErrorKind, Layout, Micros, Op, OpKind, Outcome, Readback};

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

/// The longest span with no success.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Blackout {
    pub longest_ms: f64,
    pub from_ms: f64,
    pub to_ms: f64,
}

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

/// How many operations failed one way.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    /// `write` or `read`.
    pub op: &'static str,
    pub kind: ErrorKind,
    /// Whether the commands were sent; `false`: they failed while a
    /// connection was being opened (connect, handshake, Sentinel lookup).
    pub sent: bool,
    pub label: String,
    pub count: usize,
    /// First time seen / last time seen (ms on the drill clock).
    pub first_ms: f64,
    pub last_ms: f64,
    /// One message as the client got it.
    pub example: String,
}

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

/// Throughput and errors in one slice of time, for the picture.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bucket {
    pub t_ms: f64,
    pub writes_ok: u32,
    pub reads_ok: u32,
    pub write_errors: u32,
    pub read_errors: u32,
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

const BUCKET_US: Micros = 250_000;

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
    let (lost, mut phantoms) = lost_writes(ops, layout, readback);
    let (staleness, impossible) = staleness(ops, layout, stale_bound_us);
    phantoms.impossible_reads = impossible;
    let end = window.end_us;
    Analysis {
        counts,
        lost,
        phantoms,
        staleness,
        write_blackout: blackout(ops, true, end),
        read_blackout: blackout(ops, false, end),
        errors: errors(ops),
        latency: latencies(ops, window),
        bucket_ms: BUCKET_US as f64 / 1000.0,
        timeline: timeline(ops, end),
    }
}

fn ms(us: Micros) -> f64 {
    us as f64 / 1000.0
}

fn lost_writes(ops: &[Op], layout: &Layout, rb: &Readback) -> (LostWrites, Phantoms) {
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

fn staleness(ops: &[Op], layout: &Layout, bound_us: Micros) -> (Staleness, usize) {
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
    let mut ryw_sessions = std::collections::HashSet::new();
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

fn blackout(ops: &[Op], writes: bool, end_us: Micros) -> Blackout {
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

fn errors(ops: &[Op]) -> Vec<ErrorCount> {
    let mut by: BTreeMap<(bool, ErrorKind, bool), ErrorCount> = BTreeMap::new();
    for op in ops {
        let Outcome::Err {
            kind,
            sent,
            message,
        } = &op.outcome
        else {
            continue;
        };
        let w = op.kind.is_write();
        let e = by.entry((!w, *kind, !sent)).or_insert_with(|| ErrorCount {
            op: if w { "write" } else { "read" },
            kind: *kind,
            sent: *sent,
            label: if *sent {
                kind.label().to_string()
            } else {
                format!("{} (opening a connection)", kind.label())
            },
            count: 0,
            first_ms: ms(op.start_us),
            last_ms: 0.0,
            example: message.clone(),
        });
        e.count += 1;
        e.first_ms = e.first_ms.min(ms(op.start_us));
        e.last_ms = e.last_ms.max(ms(op.end_us));
    }
    by.into_values().collect()
}

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

fn latencies(ops: &[Op], w: Window) -> Vec<PhaseLatency> {
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

fn timeline(ops: &[Op], end_us: Micros) -> Vec<Bucket> {
    // Whole buckets only: a last, partly filled bucket would read as a drop.
    let n = ((end_us / BUCKET_US) as usize).max(1);
    let mut b: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            t_ms: ms(i as Micros * BUCKET_US),
            ..Bucket::default()
        })
        .collect();
    for op in ops {
        let i = ((op.end_us / BUCKET_US) as usize).min(n - 1);
        let x = &mut b[i];
        match (op.kind.is_write(), op.outcome.is_ok()) {
            (true, true) => x.writes_ok += 1,
            (false, true) => x.reads_ok += 1,
            (true, false) => x.write_errors += 1,
            (false, false) => x.read_errors += 1,
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Failure;
    use belay_client::ClientError;

    fn layout() -> Layout {
        Layout {
            prefix: "t".into(),
            writers: 2,
            readers: 1,
            counters: 1,
            regs_per_writer: 1,
        }
    }

    fn ok(session: u32, kind: OpKind, start: Micros, end: Micros, value: Option<u64>) -> Op {
        Op {
            session,
            kind,
            start_us: start,
            end_us: end,
            outcome: Outcome::Ok { value },
        }
    }

    fn err(session: u32, kind: OpKind, start: Micros, end: Micros, failure: Failure) -> Op {
        Op {
            session,
            kind,
            start_us: start,
            end_us: end,
            outcome: failure.outcome(),
        }
    }

    fn timeout() -> ClientError {
        ClientError::Timeout {
            addr: "127.0.0.1:1".into(),
            op: "SET".into(),
            timeout: std::time::Duration::from_secs(1),
        }
    }

    fn window() -> Window {
        Window {
            fault_us: 1_000_000,
            recovered_us: 2_000_000,
            end_us: 3_000_000,
        }
    }

    fn clean_readback() -> Readback {
        let mut rb = Readback::default();
        rb.sets.insert((0, 1), Some("1".into()));
        rb.sets.insert((0, 2), Some("2".into()));
        rb.counters.insert(0, 2);
        rb.regs.insert(0, Some("2".into()));
        rb
    }

    fn clean_history() -> Vec<Op> {
        vec![
            ok(0, OpKind::Set { writer: 0, seq: 1 }, 0, 100, None),
            ok(0, OpKind::Set { writer: 0, seq: 2 }, 200, 300, None),
            ok(1, OpKind::Incr { counter: 0 }, 0, 100, Some(1)),
            ok(1, OpKind::Incr { counter: 0 }, 200, 300, Some(2)),
            ok(0, OpKind::Write { reg: 0, value: 1 }, 400, 500, None),
            ok(0, OpKind::Read { reg: 0 }, 500, 600, Some(1)),
            ok(
                0,
                OpKind::Write { reg: 0, value: 2 },
                2_500_000,
                2_500_100,
                None,
            ),
            // Concurrent with the write: either value is fine.
            ok(2, OpKind::Read { reg: 0 }, 2_500_050, 2_500_200, Some(1)),
            ok(2, OpKind::Read { reg: 0 }, 2_600_000, 2_600_100, Some(2)),
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        let a = analyse(
            &clean_history(),
            &layout(),
            &clean_readback(),
            window(),
            1000,
        );
        assert_eq!(a.lost.total, 0, "{:?}", a.lost);
        assert_eq!(a.staleness.stale_reads, 0);
        assert_eq!(a.phantoms.extra_increments, 0);
        assert!(a.passed());
        assert_eq!(a.counts.writes_ok, 6);
        assert_eq!(a.counts.reads_ok, 3);
    }

    #[test]
    fn a_missing_acknowledged_set_is_a_lost_write() {
        let mut rb = clean_readback();
        rb.sets.insert((0, 2), None);
        let a = analyse(&clean_history(), &layout(), &rb, window(), 1000);
        assert_eq!(a.lost.sets, 1);
        assert_eq!(a.lost.examples, vec!["t:k:0:2".to_string()]);
        assert_eq!(a.lost.acked_at_ms, vec![0.3]);
        assert!(!a.passed());
    }

    #[test]
    fn a_wrong_value_is_a_lost_write_but_a_failed_write_is_not() {
        let mut ops = clean_history();
        ops.push(err(
            0,
            OpKind::Set { writer: 0, seq: 3 },
            700,
            800,
            Failure::InFlight(timeout()),
        ));
        let mut rb = clean_readback();
        rb.sets.insert((0, 1), Some("999".into()));
        let a = analyse(&ops, &layout(), &rb, window(), 1000);
        assert_eq!(a.lost.sets, 1);
        assert_eq!(a.counts.writes_maybe, 1);
    }

    #[test]
    fn counters_below_acknowledged_increments_lose_writes_above_are_phantoms() {
        let mut rb = clean_readback();
        rb.counters.insert(0, 1);
        let a = analyse(&clean_history(), &layout(), &rb, window(), 1000);
        assert_eq!(a.lost.increments, 1);
        assert!(!a.passed());

        // One maybe-applied increment explains a 3; a 4 is a double apply.
        let mut ops = clean_history();
        ops.push(err(
            1,
            OpKind::Incr { counter: 0 },
            900,
            950,
            Failure::Reply(
                "UNCERTAIN belay: the connection to x was lost after the command was sent; it may or may not have run".into(),
            ),
        ));
        rb.counters.insert(0, 3);
        let a = analyse(&ops, &layout(), &rb, window(), 1000);
        assert_eq!(a.lost.increments, 0);
        assert_eq!(a.phantoms.extra_increments, 0);
        rb.counters.insert(0, 4);
        let a = analyse(&ops, &layout(), &rb, window(), 1000);
        assert_eq!(a.phantoms.extra_increments, 1);
        assert!(!a.passed());
    }

    #[test]
    fn a_command_that_failed_before_it_was_sent_excuses_nothing() {
        // An INCR whose connection timed out in its handshake never left
        // the client: a counter one above the acknowledged INCRs is a
        // double apply, not that INCR.
        let mut ops = clean_history();
        ops.push(err(
            1,
            OpKind::Incr { counter: 0 },
            900,
            950,
            Failure::Opening(timeout()),
        ));
        ops.push(err(
            1,
            OpKind::Incr { counter: 0 },
            1000,
            1050,
            Failure::InFlight(timeout()),
        ));
        let mut rb = clean_readback();
        rb.counters.insert(0, 4);
        let a = analyse(&ops, &layout(), &rb, window(), 1000);
        assert_eq!(a.counts.writes_maybe, 1);
        assert_eq!(a.phantoms.extra_increments, 1);
        assert!(!a.passed());
        // Same kind, told apart in the error table by where it happened.
        assert_eq!(a.errors.len(), 2);
        assert!(a.errors.iter().all(|e| e.kind == ErrorKind::Timeout));
        let opening = a.errors.iter().find(|e| !e.sent).expect("an opening row");
        assert_eq!(opening.label, "timeout (opening a connection)");
        assert_eq!(opening.count, 1);
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_stale() {
        let mut ops = clean_history();
        // Another session reads 1 after 2 was acknowledged 100 ms earlier.
        ops.push(ok(
            2,
            OpKind::Read { reg: 0 },
            2_600_100,
            2_600_200,
            Some(1),
        ));
        // The writer itself reads nothing after writing: a RYW violation.
        ops.push(ok(0, OpKind::Read { reg: 0 }, 2_500_200, 2_500_300, None));
        let a = analyse(&ops, &layout(), &clean_readback(), window(), 1000);
        assert_eq!(a.staleness.stale_reads, 2);
        assert_eq!(a.staleness.ryw_violations, 1);
        assert_eq!(a.staleness.ryw_sessions, 1);
        // 100 ms and 2500 ms behind: both beyond a 1 ms bound, one beyond 1 s.
        assert_eq!(a.staleness.beyond_bound, 2);
        let relaxed = analyse(&ops, &layout(), &clean_readback(), window(), 1_000_000);
        assert_eq!(relaxed.staleness.beyond_bound, 1);
        // A read-your-writes violation fails the drill whatever the bound.
        let no_ryw: Vec<Op> = ops
            .iter()
            .filter(|o| !(o.session == 0 && o.start_us == 2_500_200))
            .cloned()
            .collect();
        let lenient = analyse(&no_ryw, &layout(), &clean_readback(), window(), 1_000_000);
        assert_eq!(lenient.staleness.stale_reads, 1);
        assert_eq!(lenient.staleness.beyond_bound, 0);
        assert!(
            lenient.passed(),
            "a 100 ms stale read is within a 1 s bound"
        );
        // The writer's read missed value 1, acknowledged at 0.5 ms.
        assert!((a.staleness.max_staleness_ms - 2499.7).abs() < 0.01);
        assert!(!a.passed());
    }

    #[test]
    fn a_register_behind_its_last_acknowledged_value_is_lost_and_a_never_written_value_impossible()
    {
        let mut rb = clean_readback();
        rb.regs.insert(0, Some("1".into()));
        let mut ops = clean_history();
        ops.push(ok(
            2,
            OpKind::Read { reg: 0 },
            2_700_000,
            2_700_100,
            Some(7),
        ));
        let a = analyse(&ops, &layout(), &rb, window(), 1000);
        assert_eq!(a.lost.registers, 1);
        assert_eq!(a.phantoms.impossible_reads, 1);
    }

    #[test]
    fn blackouts_latencies_errors_and_timeline() {
        let mut ops = clean_history();
        for i in 0..5 {
            ops.push(err(
                1,
                OpKind::Incr { counter: 0 },
                1_000_000 + i * 100_000,
                1_000_000 + i * 100_000 + 50_000,
                Failure::Reply(
                    "TRYAGAIN belay: no confirmed master for 10 ms; the command was not run".into(),
                ),
            ));
        }
        let a = analyse(&ops, &layout(), &clean_readback(), window(), 1000);
        // Writes succeeded at 0.5 ms and then at 2500.1 ms.
        assert!(
            (a.write_blackout.longest_ms - 2499.6).abs() < 0.01,
            "{:?}",
            a.write_blackout
        );
        assert!((a.write_blackout.from_ms - 0.5).abs() < 0.01);
        assert_eq!(a.errors.len(), 1);
        assert_eq!(a.errors[0].kind, ErrorKind::HoldTimeout);
        assert_eq!(a.errors[0].count, 5);
        assert_eq!(a.errors[0].op, "write");
        let during = &a.latency[1];
        assert_eq!(during.phase, "during");
        assert_eq!(during.writes.count, 5);
        assert!((during.writes.max_ms - 50.0).abs() < 0.01);
        assert_eq!(a.timeline.len(), 12);
        assert_eq!(a.timeline[4].write_errors, 2);
        // Errors never count as successes in the throughput.
        let total_ok: u32 = a.timeline.iter().map(|b| b.writes_ok + b.reads_ok).sum();
        assert_eq!(total_ok, 9);
    }
}
