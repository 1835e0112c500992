//! The drill's result as a person reads it (a table and a one-line
//! verdict) and as a program reads it (JSON: the same struct, serialized).

use std::fmt::Write as _;

use belay_lab::text::table;
use belay_lab::Lab;
use serde::Serialize;

use crate::checker::{Analysis, Latency, Window};
use crate::drill::DrillOptions;
use crate::events::{SentinelEvent, KEY_EVENTS};
use crate::faults::{FaultKind, FaultRecord};
use crate::workload::Target;

/// Everything one drill found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub drill: FaultKind,
    /// `gateway` or `direct-master`.
    pub target: String,
    pub seed: u64,
    pub duration_s: f64,
    pub fault_at_s: f64,
    pub fault_for_s: f64,
    pub writers: u32,
    pub readers: u32,
    pub op_timeout_ms: u64,
    /// Connection churn: each session opened a new connection (with a
    /// `HELLO 3` handshake) every this many operations; 0: never.
    pub reconnect_every: u32,
    /// Durable writes in the gateway: how many replicas confirm each write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable_writes: Option<String>,
    /// Connections the workload opened, first ones and reconnects after
    /// failures included.
    pub connections_opened: u64,
    /// Sentinel `down-after-milliseconds` of the lab.
    pub down_after_ms: u64,
    /// `min-replicas-max-lag` of the lab (how long an isolated master keeps
    /// taking writes).
    pub min_replicas_max_lag_s: u32,
    pub master_before: String,
    pub master_after: String,
    pub fault: FaultRecord,
    pub window: Window,
    /// Every Sentinel event seen, in time order.
    pub events: Vec<SentinelEvent>,
    /// How long the topology took to settle after the workload stopped.
    pub settled_after_ms: f64,
    pub analysis: Analysis,
    pub passed: bool,
    /// The one-line verdict.
    pub verdict: String,
}

impl DrillReport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        opts: &DrillOptions,
        target: &Target,
        lab: &Lab,
        master_before: String,
        master_after: String,
        fault: FaultRecord,
        events: Vec<SentinelEvent>,
        window: Window,
        settled_after_ms: f64,
        connections_opened: u64,
        analysis: Analysis,
    ) -> DrillReport {
        let spec = lab.spec();
        let passed = analysis.passed();
        let mut r = DrillReport {
            drill: opts.fault,
            target: target.name().to_string(),
            seed: opts.seed,
            duration_s: opts.duration.as_secs_f64(),
            fault_at_s: opts.fault_at.as_secs_f64(),
            fault_for_s: if opts.fault.has_duration() {
                opts.fault_for.as_secs_f64()
            } else {
                0.0
            },
            writers: opts.writers,
            readers: opts.readers,
            op_timeout_ms: opts.op_timeout().as_millis() as u64,
            reconnect_every: opts.reconnect_every,
            durable_writes: opts.durable_writes.clone(),
            connections_opened,
            down_after_ms: spec.down_after_ms,
            min_replicas_max_lag_s: spec.min_replicas_max_lag,
            master_before,
            master_after,
            fault,
            window,
            events,
            settled_after_ms,
            analysis,
            passed,
            verdict: String::new(),
        };
        r.verdict = verdict_line(&r);
        r
    }
}

fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

/// `PASS: 0 acknowledged writes lost, write blackout 2.31 s (down-after 2.00 s), ...`
pub fn verdict_line(r: &DrillReport) -> String {
    let a = &r.analysis;
    let mut s = format!(
        "{}: {} acknowledged writes lost, write blackout {} (down-after {}), read blackout {}, {} stale reads{}, {} read-your-writes violations",
        if r.passed { "PASS" } else { "FAIL" },
        a.lost.total,
        secs(a.write_blackout.longest_ms),
        secs(r.down_after_ms as f64),
        secs(a.read_blackout.longest_ms),
        a.staleness.stale_reads,
        if a.staleness.stale_reads == 0 {
            String::new()
        } else {
            format!(
                " ({} beyond {:.0} ms, stalest {:.1} ms)",
                a.staleness.beyond_bound, a.staleness.bound_ms, a.staleness.max_staleness_ms
            )
        },
        a.staleness.ryw_violations,
    );
    if a.phantoms.extra_increments > 0 {
        let _ = write!(
            s,
            ", {} increments applied twice",
            a.phantoms.extra_increments
        );
    }
    if a.phantoms.impossible_reads > 0 {
        let _ = write!(
            s,
            ", {} reads of never-written values",
            a.phantoms.impossible_reads
        );
    }
    s
}

/// How the workload used connections, so a report says whether it ran
/// with churn.
pub fn connections_line(reconnect_every: u32, opened: u64) -> String {
    let how = match reconnect_every {
        0 => "one per session, reopened only after a failure".to_string(),
        n => format!(
            "churn: a new one every {n} operation{} per session, each with a HELLO 3 handshake",
            if n == 1 { "" } else { "s" }
        ),
    };
    format!("connections: {how}; {opened} opened")
}

fn lat(l: &Latency) -> String {
    if l.count == 0 {
        return "-".into();
    }
    format!("{:.1} / {:.1} / {:.0} ms", l.p50_ms, l.p99_ms, l.max_ms)
}

/// The report as text: what was done, what the clients saw, what the
/// Sentinels said, and the verdict last.
pub fn render_text(r: &DrillReport) -> String {
    let a = &r.analysis;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\ndrill {} via {} — {} writers, {} readers, {:.0} s, fault at {:.1} s{}; seed {}",
        r.drill.name(),
        r.target,
        r.writers,
        r.readers,
        r.duration_s,
        r.fault_at_s,
        if r.fault_for_s > 0.0 {
            format!(" for {:.1} s", r.fault_for_s)
        } else {
            String::new()
        },
        r.seed
    );
    let _ = writeln!(
        o,
        "  {}",
        connections_line(r.reconnect_every, r.connections_opened)
    );
    if let Some(n) = &r.durable_writes {
        let _ = writeln!(
            o,
            "  durable writes: each write acknowledged only once {n} replica(s) confirmed it (WAIT)"
        );
    }
    let _ = writeln!(
        o,
        "  master {} ({}) -> {}; settled {} after the run\n",
        r.fault.master,
        r.master_before,
        r.master_after,
        secs(r.settled_after_ms)
    );

    let _ = writeln!(o, "timeline (s)");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (t, what) in &r.fault.steps {
        rows.push(vec![
            format!("{:7.2}", t / 1000.0),
            "fault".into(),
            what.clone(),
        ]);
    }
    // Key Sentinel events, one line per event kind and target (the first
    // Sentinel to report it, and how many did).
    let mut seen: Vec<(String, String, f64, usize, String)> = Vec::new();
    for e in r
        .events
        .iter()
        .filter(|e| KEY_EVENTS.contains(&e.event.as_str()))
    {
        let who: String = e
            .detail
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        match seen.iter_mut().find(|s| s.0 == e.event && s.1 == who) {
            Some(s) => s.3 += 1,
            None => seen.push((e.event.clone(), who, e.t_ms, 1, e.sentinel.clone())),
        }
    }
    for (event, who, t, n, first) in seen {
        rows.push(vec![
            format!("{:7.2}", t / 1000.0),
            "sentinel".into(),
            format!(
                "{event} {who}  ({first} first, {n} Sentinel{})",
                if n == 1 { "" } else { "s" }
            ),
        ]);
    }
    let wb = &a.write_blackout;
    rows.push(vec![
        format!("{:7.2}", wb.from_ms / 1000.0),
        "clients".into(),
        format!(
            "last acknowledged write before the longest write blackout ({})",
            secs(wb.longest_ms)
        ),
    ]);
    rows.push(vec![
        format!("{:7.2}", wb.to_ms / 1000.0),
        "clients".into(),
        "writes acknowledged again".into(),
    ]);
    for e in &a.errors {
        rows.push(vec![
            format!("{:7.2}", e.first_ms / 1000.0),
            "clients".into(),
            format!(
                "first {} error: {} (until {:.2} s)",
                e.op,
                e.label,
                e.last_ms / 1000.0
            ),
        ]);
    }
    rows.sort_by(|x, y| {
        x[0].trim()
            .parse::<f64>()
            .unwrap_or(0.0)
            .total_cmp(&y[0].trim().parse::<f64>().unwrap_or(0.0))
    });
    o.push_str(&table(&rows));

    let _ = writeln!(o, "\noperations");
    let c = &a.counts;
    o.push_str(&table(&[
        vec![
            "".into(),
            "total".into(),
            "ok".into(),
            "failed".into(),
            "maybe applied".into(),
        ],
        vec![
            "writes".into(),
            c.writes.to_string(),
            c.writes_ok.to_string(),
            (c.writes - c.writes_ok).to_string(),
            c.writes_maybe.to_string(),
        ],
        vec![
            "reads".into(),
            c.reads.to_string(),
            c.reads_ok.to_string(),
            (c.reads - c.reads_ok).to_string(),
            "-".into(),
        ],
    ]));

    if !a.errors.is_empty() {
        let _ = writeln!(o, "\nerrors by kind");
        let mut rows = vec![vec![
            "op".into(),
            "kind".into(),
            "count".into(),
            "example".into(),
        ]];
        for e in &a.errors {
            let mut ex = e.example.clone();
            if ex.chars().count() > 90 {
                ex = ex.chars().take(87).collect::<String>() + "...";
            }
            rows.push(vec![e.op.into(), e.label.clone(), e.count.to_string(), ex]);
        }
        o.push_str(&table(&rows));
    }

    let _ = writeln!(
        o,
        "\nlatency p50 / p99 / max (all operations, failed ones included)"
    );
    let mut rows = vec![vec!["phase".into(), "writes".into(), "reads".into()]];
    for p in &a.latency {
        rows.push(vec![p.phase.into(), lat(&p.writes), lat(&p.reads)]);
    }
    o.push_str(&table(&rows));

    let _ = writeln!(o, "\nchecks");
    let l = &a.lost;
    let st = &a.staleness;
    o.push_str(&table(&[
        vec![
            "acknowledged writes lost".into(),
            format!(
                "{}  ({} SETs, {} INCRs, {} registers){}",
                l.total,
                l.sets,
                l.increments,
                l.registers,
                if l.examples.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  e.g. {}",
                        l.examples
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        ],
        vec![
            "write blackout".into(),
            format!(
                "{}  ({:.2} s -> {:.2} s)",
                secs(wb.longest_ms),
                wb.from_ms / 1000.0,
                wb.to_ms / 1000.0
            ),
        ],
        vec![
            "read blackout".into(),
            format!(
                "{}  ({:.2} s -> {:.2} s)",
                secs(a.read_blackout.longest_ms),
                a.read_blackout.from_ms / 1000.0,
                a.read_blackout.to_ms / 1000.0
            ),
        ],
        vec![
            "stale reads".into(),
            format!(
                "{}  (stalest missed a write acknowledged {:.1} ms earlier)",
                st.stale_reads, st.max_staleness_ms
            ),
        ],
        vec![
            "read-your-writes violations".into(),
            format!("{}  in {} sessions", st.ryw_violations, st.ryw_sessions),
        ],
        vec![
            "increments applied twice".into(),
            a.phantoms.extra_increments.to_string(),
        ],
        vec![
            "reads of never-written values".into(),
            a.phantoms.impossible_reads.to_string(),
        ],
    ]));
    let _ = writeln!(o, "\n{}", r.verdict);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_whether_the_run_had_connection_churn() {
        assert_eq!(
            connections_line(0, 8),
            "connections: one per session, reopened only after a failure; 8 opened"
        );
        assert_eq!(
            connections_line(20, 412),
            "connections: churn: a new one every 20 operations per session, each with a HELLO 3 handshake; 412 opened"
        );
        assert!(connections_line(1, 3).contains("every 1 operation per"));
    }
}
