//! The checker on synthetic histories, clean ones and ones built to fail.

use belay_client::ClientError;

use super::*;
use crate::client::Failure;
use crate::history::{ErrorKind, OpKind};

fn layout() -> Layout {
    Layout {
        prefix: "t".into(),
        writers: 2,
        readers: 1,
        counters: 1,
        regs_per_writer: 1,
        shard_tags: Vec::new(),
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
fn a_register_behind_its_last_acknowledged_value_is_lost_and_a_never_written_value_impossible() {
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
    assert_eq!(a.timeline[4].unreplicated, 0);
    // Errors never count as successes in the throughput.
    let total_ok: u32 = a.timeline.iter().map(|b| b.writes_ok + b.reads_ok).sum();
    assert_eq!(total_ok, 9);
}

#[test]
fn unconfirmed_durable_writes_are_marked_on_the_timeline() {
    let mut ops = clean_history();
    ops.push(err(
        1,
        OpKind::Incr { counter: 0 },
        1_000_000,
        1_100_000,
        Failure::Reply("UNREPLICATED belay: the write ran on the master, but 0 of the 1 replicas required confirmed it within 500 ms (durable writes)".into()),
    ));
    let a = analyse(&ops, &layout(), &clean_readback(), window(), 1000);
    assert_eq!(a.timeline[4].write_errors, 1);
    assert_eq!(a.timeline[4].unreplicated, 1);
    assert_eq!(a.errors[0].kind, ErrorKind::Unreplicated);
}
