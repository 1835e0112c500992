//! What the gateway counts, and its Prometheus exposition.
//!
//! On the hot path a session only adds to a tally of its own (no atomic
//! per command) and flushes it once per turn of its loop; a request's round
//! trip is timed once per batch. Everything that can be read off the
//! topology — connections, in-flight commands, lag, eligibility, why writes
//! are held — is read at scrape time, not counted as it happens. The
//! exposition goes through `prometheus-client`'s text encoder from a
//! [`Collector`], so names, `HELP`, units and types follow its conventions;
//! no label is per key or per client (nodes are the only open-ended label,
//! and there are few of them).

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::backend::NodePool;
use crate::topology::{Topology, WriteHold};

/// Where a command went, by its class: the `class` and `destination`
/// labels of `belay_commands_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    ReadReplica,
    ReadMaster,
    Write,
    Blocking,
    Wait,
    /// Answered by the gateway itself (`HELLO`, `PING`, `CLIENT SETINFO`, …).
    Gateway,
}

impl Counted {
    const ALL: [Counted; 6] = [
        Counted::ReadReplica,
        Counted::ReadMaster,
        Counted::Write,
        Counted::Blocking,
        Counted::Wait,
        Counted::Gateway,
    ];

    fn labels(self) -> [(&'static str, &'static str); 2] {
        let (class, destination) = match self {
            Counted::ReadReplica => ("read", "replica"),
            Counted::ReadMaster => ("read", "master"),
            Counted::Write => ("write", "master"),
            Counted::Blocking => ("blocking", "master"),
            Counted::Wait => ("wait", "master"),
            Counted::Gateway => ("gateway", "gateway"),
        };
        [("class", class), ("destination", destination)]
    }
}

/// Errors the gateway gives clients, or closes them for: the `kind` label
/// of `belay_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Lost after it was sent: `UNCERTAIN` (may or may not have run).
    Uncertain,
    /// The failover hold ran out: `TRYAGAIN` (not run).
    HoldTimeout,
    /// Refused by the gateway (`MONITOR`, `CLIENT KILL`, …).
    Denied,
    /// Malformed input; the client was closed.
    Protocol,
    /// A client over its output limit was closed.
    OutputLimit,
    /// A failed login.
    Auth,
    /// Durable writes: ran on the master, not confirmed by the replicas.
    Unreplicated,
}

impl ErrorKind {
    const ALL: [ErrorKind; 7] = [
        ErrorKind::Uncertain,
        ErrorKind::HoldTimeout,
        ErrorKind::Denied,
        ErrorKind::Protocol,
        ErrorKind::OutputLimit,
        ErrorKind::Auth,
        ErrorKind::Unreplicated,
    ];

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Uncertain => "uncertain",
            ErrorKind::HoldTimeout => "hold_timeout",
            ErrorKind::Denied => "denied",
            ErrorKind::Protocol => "protocol",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::Auth => "auth",
            ErrorKind::Unreplicated => "unreplicated",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds: 100 µs to 30 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 30.0,
];

/// A histogram of durations, lock-free: one atomic add per bucket hit,
/// one for the count, one for the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn encode(&self, m: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        // The encoder makes the counts cumulative itself.
        let count = self.count.load(Ordering::Relaxed);
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                let n = n.load(Ordering::Relaxed);
                below += n;
                (*b, n)
            })
            .collect();
        // The encoder writes `f64::MAX` as `le="+Inf"`.
        buckets.push((f64::MAX, count.saturating_sub(below)));
        m.encode_histogram::<NoLabelSet>(
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            &buckets,
            None,
        )
    }
}

/// The gateway's counters, shared by every worker and discovery.
#[derive(Debug, Default)]
pub struct Metrics {
    commands: [AtomicU64; Counted::ALL.len()],
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// Round trips of requests to the master and to replicas.
    latency: [Histogram; 2],
    /// Commands waiting at the head of a session's queue (a failover hold,
    /// a retry) now.
    held_commands: AtomicI64,
    write_holds: Histogram,
    failovers: AtomicU64,
    failover_durations: Histogram,
    ryw_fallbacks: AtomicU64,
    rejected_clients: AtomicU64,
}

impl Metrics {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request to a node answered after `d` (`to_master`: the master).
    pub fn round_trip(&self, to_master: bool, d: Duration) {
        self.latency[!to_master as usize].observe(d);
    }

    /// Writes were held for `d` and flow again.
    pub fn write_hold_ended(&self, d: Duration) {
        self.write_holds.observe(d);
    }

    /// A failover ended `d` after the gateway first saw it.
    pub fn failover(&self, d: Duration) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
        self.failover_durations.observe(d);
    }

    pub fn rejected_client(&self) {
        self.rejected_clients.fetch_add(1, Ordering::Relaxed);
    }
}

/// A command waiting at the head of a session's queue, counted in
/// `belay_held_commands` while this lives.
pub struct Waiting(Arc<Metrics>);

impl Waiting {
    pub fn new(m: &Arc<Metrics>) -> Waiting {
        m.held_commands.fetch_add(1, Ordering::Relaxed);
        Waiting(m.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.held_commands.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the gateway's parts report to: counters and the event stream.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub activity: Arc<crate::activity::ActivityLog>,
}

/// A session's own count of its commands, flushed to [`Metrics`] once per
/// turn of its loop: no atomic operation per command.
#[derive(Debug, Default)]
pub struct Tally {
    commands: [u32; Counted::ALL.len()],
    ryw_fallbacks: u32,
}

impl Tally {
    #[inline]
    pub fn count(&mut self, c: Counted, n: u32) {
        self.commands[c as usize] += n;
    }

    /// A read went to the master for read-your-writes.
    pub fn ryw_fallback(&mut self) {
        self.ryw_fallbacks += 1;
    }

    pub fn flush(&mut self, m: &Metrics) {
        if self.ryw_fallbacks == 0 && self.commands.iter().all(|n| *n == 0) {
            return;
        }
        if self.ryw_fallbacks > 0 {
            m.ryw_fallbacks
                .fetch_add(self.ryw_fallbacks as u64, Ordering::Relaxed);
            self.ryw_fallbacks = 0;
        }
        for (n, total) in self.commands.iter_mut().zip(&m.commands) {
            if *n > 0 {
                total.fetch_add(*n as u64, Ordering::Relaxed);
                *n = 0;
            }
        }
    }
}

/// Encodes everything on each scrape.
pub struct Exporter {
    pub metrics: Arc<Metrics>,
    pub topology: watch::Receiver<Arc<Topology>>,
    /// Clients connected now, across workers.
    pub clients: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.metrics;
        let topo = self.topology.borrow().clone();

        let mut f = e.encode_descriptor(
            "belay_commands",
            "Commands handled, by class and where they went (the master, a replica, or answered by the gateway itself).",
            None,
            MetricType::Counter,
        )?;
        for c in Counted::ALL {
            let v = m.commands[c as usize].load(Ordering::Relaxed);
            ConstCounter::new(v).encode(f.encode_family(&c.labels())?)?;
        }
        let mut f = e.encode_descriptor(
            "belay_backend_request_duration",
            "Round trip of a request to a node, from the write to the last reply (a batch of pipelined commands is one request).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (i, dest) in ["master", "replica"].iter().enumerate() {
            m.latency[i].encode(&mut f.encode_family(&[("destination", *dest)])?)?;
        }
        let mut f = e.encode_descriptor(
            "belay_errors",
            "Errors given to clients, or clients closed, by kind: uncertain (lost after it was sent: may or may not have run), hold_timeout (not run: no master within the failover hold), denied (refused by the gateway), protocol (malformed input), output_limit (client not reading), auth (failed login), unreplicated (durable writes: ran on the master, not confirmed by enough replicas in time).",
            None,
            MetricType::Counter,
        )?;
        for k in ErrorKind::ALL {
            let v = m.errors[k as usize].load(Ordering::Relaxed);
            ConstCounter::new(v).encode(f.encode_family(&[("kind", k.label())])?)?;
        }
        gauge(
            &mut e,
            "belay_held_commands",
            "Commands waiting now for a master or a retry (held, not failed).",
            None,
            m.held_commands.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "belay_writes_held",
            "1 while writes are held (no confirmed master, a silent master, a failover under way, or the write guard), else 0. In front of a Redis Cluster: writes of some shard.",
            None,
            topo.groups().iter().any(|g| g.master.is_none()) as i64,
        )?;
        let mut f = e.encode_descriptor(
            "belay_writes_held_reason",
            "1 for the reason writes are held now, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for (hold, label) in [
            (WriteHold::NoMaster, "no_master"),
            (WriteHold::MasterSilent, "master_silent"),
            (WriteHold::FailoverInProgress, "failover"),
            (WriteHold::WriteGuard, "write_guard"),
        ] {
            let on = topo
                .groups()
                .iter()
                .any(|g| g.write_hold == Some(hold) && g.master.is_none());
            ConstGauge::new(on as i64).encode(f.encode_family(&[("reason", label)])?)?;
        }
        let mut f = e.encode_descriptor(
            "belay_write_hold_duration",
            "How long each episode of held writes lasted.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        m.write_holds.encode(&mut f)?;
        counter(
            &mut e,
            "belay_failovers",
            "Changes of master the gateway followed.",
            m.failovers.load(Ordering::Relaxed),
        )?;
        let mut f = e.encode_descriptor(
            "belay_failover_duration",
            "From the gateway first seeing a failover (master down or silent, a failover started) to the new master confirmed.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        m.failover_durations.encode(&mut f)?;
        gauge(
            &mut e,
            "belay_topology_generation",
            "Topology snapshots published so far.",
            None,
            topo.generation as i64,
        )?;
        counter(
            &mut e,
            "belay_read_your_writes_fallbacks",
            "Reads sent to the master because no replica had the session's own last write yet.",
            m.ryw_fallbacks.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "belay_client_connections",
            "Clients connected now.",
            None,
            self.clients.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            &mut e,
            "belay_client_connections_rejected",
            "Clients turned away at max_clients.",
            m.rejected_clients.load(Ordering::Relaxed),
        )?;
        encode_nodes(&mut e, &topo.groups())
    }
}

/// Per-node gauges of one group (a Sentinel group, or one shard of a
/// cluster: nodes are labelled by address, so shards do not collide).
fn encode_nodes(e: &mut DescriptorEncoder, groups: &[&Topology]) -> std::fmt::Result {
    let nodes: Vec<(&NodePool, &str)> = groups
        .iter()
        .flat_map(|topo| {
            topo.read_master
                .iter()
                .map(|p| (&**p, "master"))
                .chain(topo.replicas.iter().map(|r| (&*r.pool, "replica")))
        })
        .collect();
    let replicas = || groups.iter().flat_map(|g| g.replicas.iter());
    let mut f = e.encode_descriptor(
        "belay_node_commands",
        "Commands written to a node, on every kind of connection (the gateway's traffic to it).",
        None,
        MetricType::Counter,
    )?;
    for (pool, role) in &nodes {
        ConstCounter::new(pool.health().commands())
            .encode(f.encode_family(&[("node", pool.addr.as_str()), ("role", *role)])?)?;
    }
    node_gauge(
        e,
        &nodes,
        "belay_backend_shared_connections",
        "Open connections to a node shared by sessions (all contexts).",
        |p| p.shared_connections() as i64,
    )?;
    node_gauge(
        e,
        &nodes,
        "belay_backend_in_flight",
        "Commands written to a node on shared connections and not yet answered.",
        |p| p.outstanding() as i64,
    )?;
    node_gauge(
        e,
        &nodes,
        "belay_node_silent",
        "1 while a node owes replies and has been silent past the request timeout (it gets no new commands).",
        |p| p.health().is_silent() as i64,
    )?;
    node_gauge(
        e,
        &nodes,
        "belay_node_busy",
        "1 while a node answers BUSY (a script or function running): it gets no reads.",
        |p| p.health().is_busy() as i64,
    )?;
    let mut f = e.encode_descriptor(
        "belay_replica_lag",
        "How far behind the master a replica is, in time: the age of the newest master offset it has reached (absent when unknown).",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for r in replicas() {
        if let Some(lag) = r.lag {
            ConstGauge::new(lag.as_secs_f64())
                .encode(f.encode_family(&[("node", r.pool.addr.as_str())])?)?;
        }
    }
    let mut f = e.encode_descriptor(
        "belay_replica_lag",
        "How far behind the master a replica is, in bytes of the replication stream (only for a replica of the current master's history).",
        Some(&Unit::Bytes),
        MetricType::Gauge,
    )?;
    for topo in groups {
        let Some(sample) = &topo.master_sample else {
            continue;
        };
        for r in replicas() {
            if r.replid.as_deref() == Some(&*sample.replid) {
                ConstGauge::new((sample.offset - r.offset).max(0))
                    .encode(f.encode_family(&[("node", r.pool.addr.as_str())])?)?;
            }
        }
    }
    let mut f = e.encode_descriptor(
        "belay_node_rtt",
        "Smoothed round-trip time of the gateway's control calls to a node (ROLE, INFO, HELLO; what read_from = nearest goes by), with the node's zone (empty when unknown).",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    let places = groups.iter().flat_map(|topo| {
        topo.read_master
            .iter()
            .map(|p| (&p.addr, "master", &topo.master_locality))
            .chain(
                topo.replicas
                    .iter()
                    .map(|r| (&r.pool.addr, "replica", &r.locality)),
            )
    });
    for (addr, role, at) in places {
        if let Some(rtt) = at.rtt {
            let zone = at.zone.as_deref().unwrap_or("");
            ConstGauge::new(rtt.as_secs_f64()).encode(f.encode_family(&[
                ("node", addr.as_str()),
                ("role", role),
                ("zone", zone),
            ])?)?;
        }
    }
    let mut f = e.encode_descriptor(
        "belay_replica_eligible",
        "1 while a replica may serve reads (linked to the master, within the lag bound, answering), else 0.",
        None,
        MetricType::Gauge,
    )?;
    for r in replicas() {
        ConstGauge::new(r.usable() as i64)
            .encode(f.encode_family(&[("node", r.pool.addr.as_str())])?)?;
    }
    Ok(())
}

/// One gauge for every node.
fn node_gauge(
    e: &mut DescriptorEncoder,
    nodes: &[(&NodePool, &str)],
    name: &str,
    help: &str,
    value: impl Fn(&NodePool) -> i64,
) -> std::fmt::Result {
    let mut f = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (pool, role) in nodes {
        ConstGauge::new(value(pool))
            .encode(f.encode_family(&[("node", pool.addr.as_str()), ("role", *role)])?)?;
    }
    Ok(())
}

/// The exposition in Prometheus/OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// A registry holding `exporter`.
pub fn registry(exporter: Exporter) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(exporter));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::CommandTable;

    #[test]
    fn the_exposition_names_follow_prometheus_conventions() {
        let metrics = Arc::new(Metrics::default());
        let mut tally = Tally::default();
        tally.count(Counted::ReadReplica, 16);
        tally.count(Counted::Gateway, 1);
        tally.flush(&metrics);
        metrics.error(ErrorKind::Uncertain);
        metrics.round_trip(true, Duration::from_micros(300));
        metrics.round_trip(false, Duration::from_millis(3));
        metrics.failover(Duration::from_millis(3300));
        let (_tx, rx) =
            watch::channel(Arc::new(Topology::empty(Arc::new(CommandTable::default()))));
        let text = render(&registry(Exporter {
            metrics,
            topology: rx,
            clients: Arc::new(AtomicUsize::new(3)),
        }));
        for line in [
            "belay_commands_total{class=\"read\",destination=\"replica\"} 16",
            "belay_commands_total{class=\"gateway\",destination=\"gateway\"} 1",
            "belay_errors_total{kind=\"uncertain\"} 1",
            "# TYPE belay_backend_request_duration_seconds histogram",
            "belay_backend_request_duration_seconds_bucket{le=\"0.0005\",destination=\"master\"} 1",
            "belay_backend_request_duration_seconds_bucket{le=\"30.0\",destination=\"master\"} 1",
            "belay_backend_request_duration_seconds_bucket{le=\"+Inf\",destination=\"master\"} 1",
            "belay_backend_request_duration_seconds_count{destination=\"replica\"} 1",
            "belay_failovers_total 1",
            "belay_failover_duration_seconds_sum 3.3",
            "belay_writes_held 1",
            "belay_writes_held_reason{reason=\"no_master\"} 1",
            "belay_client_connections 3",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            text.contains("# HELP belay_commands Commands handled"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
