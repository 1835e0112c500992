//! The drill's result as a person reads it (a table and a one-line
//! verdict) and as a program reads it (JSON: the same struct, serialized).

use std::fmt::Write as _;

use belay_lab::text::table;
use serde::Serialize;

use crate::checker::{Analysis, Latency, Window};
use crate::cluster::ClusterFigures;
use crate::drill::DrillOptions;
use crate::events::{SentinelEvent, KEY_EVENTS};
use crate::faults::{FaultKind, FaultRecord};
use crate::workload::Target;

/// What the report says about the lab the drill ran on.
pub(crate) struct LabFacts {
    /// Sentinel down-after, or the cluster's node timeout.
    pub down_after_ms: u64,
    pub min_replicas_max_lag_s: u32,
    pub cluster: Option<ClusterFigures>,
}

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
    /// Sentinel `down-after-milliseconds` of the lab; for a Redis Cluster,
    /// its `cluster-node-timeout` (the same role: how long a silent master
    /// is given).
    pub down_after_ms: u64,
    /// `min-replicas-max-lag` of the lab (how long an isolated master keeps
    /// taking writes).
    pub min_replicas_max_lag_s: u32,
    /// The (faulted shard's) master before and after the drill.
    pub master_before: String,
    pub master_after: String,
    pub fault: FaultRecord,
    /// A drill on a Redis Cluster: the faulted shard and every shard's own
    /// blackouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFigures>,
    pub window: Window,
    /// Every Sentinel event seen, in time order (a cluster's: the steps of
    /// the faulted shard's failover as polling the nodes saw them).
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
        lab: LabFacts,
        master_before: String,
        master_after: String,
        fault: FaultRecord,
        events: Vec<SentinelEvent>,
        window: Window,
        settled_after_ms: f64,
        connections_opened: u64,
        analysis: Analysis,
    ) -> DrillReport {
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
            down_after_ms: lab.down_after_ms,
            min_replicas_max_lag_s: lab.min_replicas_max_lag_s,
            master_before,
            master_after,
            fault,
            cluster: lab.cluster,
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
    // In a cluster the fault is on one shard: its own blackout is the
    // figure, and the other shards' beside it (writes to them never stop,
    // so the overall blackout would hide the faulted shard's).
    let writes = match &r.cluster {
        None => format!(
            "write blackout {} (down-after {})",
            secs(a.write_blackout.longest_ms),
            secs(r.down_after_ms as f64)
        ),
        Some(c) => format!(
            "write blackout {} on the faulted shard (node timeout {}), {} on the other shards",
            secs(c.faulted().write_blackout.longest_ms),
            secs(c.node_timeout_ms as f64),
            secs(c.others_write_blackout_ms)
        ),
    };
    let reads = match &r.cluster {
        None => secs(a.read_blackout.longest_ms),
        Some(c) => format!(
            "{} ({} on the faulted shard)",
            secs(a.read_blackout.longest_ms),
            secs(c.faulted().read_blackout.longest_ms)
        ),
    };
    let mut s = format!(
        "{}: {} acknowledged writes lost, {writes}, read blackout {reads}, {} stale reads{}, {} read-your-writes violations",
        if r.passed { "PASS" } else { "FAIL" },
        a.lost.total,
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
    if let Some(c) = &r.cluster {
        let f = c.faulted();
        let _ = writeln!(
            o,
            "  Redis Cluster of {} shards; the fault on shard {} (slots {}), {}",
            c.shards.len(),
            c.faulted_shard + 1,
            f.slots,
            c.chosen_as
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
        // A Sentinel's detail ends in addresses and epochs; the cluster
        // watch's is a short sentence, kept whole.
        let words = if e.sentinel == crate::cluster::watch::SOURCE {
            usize::MAX
        } else {
            4
        };
        let who: String = e
            .detail
            .split_whitespace()
            .take(words)
            .collect::<Vec<_>>()
            .join(" ");
        match seen.iter_mut().find(|s| s.0 == e.event && s.1 == who) {
            Some(s) => s.3 += 1,
            None => seen.push((e.event.clone(), who, e.t_ms, 1, e.sentinel.clone())),
        }
    }
    for (event, who, t, n, first) in seen {
        if first == crate::cluster::watch::SOURCE {
            rows.push(vec![
                format!("{:7.2}", t / 1000.0),
                "cluster".into(),
                format!("{event} {who}  (seen polling the nodes)"),
            ]);
            continue;
        }
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

    if let Some(c) = &r.cluster {
        o.push_str(&shards_table(c));
    }

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

/// Each shard of a cluster drill: its master before and after, its
/// operations, its own blackouts.
fn shards_table(c: &ClusterFigures) -> String {
    let mut o = String::from("\nshards (each operation on the shard of its key)\n");
    let span = |b: &crate::checker::Blackout| {
        format!(
            "{}  ({:.2} -> {:.2})",
            secs(b.longest_ms),
            b.from_ms / 1000.0,
            b.to_ms / 1000.0
        )
    };
    let mut rows = vec![vec![
        "shard".into(),
        "slots".into(),
        "master before -> after".into(),
        "writes ok".into(),
        "reads ok".into(),
        "write blackout".into(),
        "read blackout".into(),
    ]];
    for (i, s) in c.shards.iter().enumerate() {
        rows.push(vec![
            format!("{}{}", i + 1, if s.faulted { " (faulted)" } else { "" }),
            s.slots.clone(),
            if s.master_after == s.master_before {
                s.master_before.clone()
            } else {
                format!("{} -> {}", s.master_before, s.master_after)
            },
            format!("{}/{}", s.writes_ok, s.writes),
            format!("{}/{}", s.reads_ok, s.reads),
            span(&s.write_blackout),
            span(&s.read_blackout),
        ]);
    }
    o.push_str(&table(&rows));
    if c.unattributed_ops > 0 {
        let _ = writeln!(
            o,
            "  {} operations on keys whose slot no shard served at the start",
            c.unattributed_ops
        );
    }
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
