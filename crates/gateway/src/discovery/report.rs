//! What changed between two published topologies, reported to the metrics
//! and the event stream: writes held and released (and for how long), a
//! master confirmed, a failover from first sign to new master, replicas
//! becoming eligible for reads or not, nodes going silent or busy.

use std::collections::HashMap;

use serde_json::json;
use tokio::time::Instant;

use crate::metrics::Telemetry;
use crate::topology::{Topology, WriteHold};

/// What the last published topology showed.
#[derive(Default)]
pub(super) struct Seen {
    /// Since when writes are held, and why.
    held: Option<(Instant, Option<WriteHold>)>,
    master: Option<String>,
    /// A failover the gateway has seen start: when, and of which master.
    failover: Option<(Instant, String)>,
    /// Each replica's eligibility for reads.
    eligible: HashMap<String, bool>,
    /// Each node's (silent, busy).
    health: HashMap<String, (bool, bool)>,
}

impl Seen {
    /// The first sign of a failover of `master` (it went down or silent, a
    /// Sentinel started failing it over): the failover's clock starts.
    /// Signs about a master that is no longer ours (the other Sentinels'
    /// `+switch-master` after the new one is confirmed) start nothing.
    pub fn failover_noticed(&mut self, master: &str, why: &str, t: &Telemetry) {
        if self.failover.is_some() || self.master.as_deref().is_some_and(|m| m != master) {
            return;
        }
        self.failover = Some((Instant::now(), master.to_string()));
        t.activity.record(
            "failover",
            format!("failover of {master} noticed: {why}"),
            json!({"phase": "noticed", "master": master, "why": why}),
        );
    }

    /// Compares `topo` with what was seen last, and reports the changes.
    pub fn report(&mut self, topo: &Topology, t: &Telemetry) {
        self.report_hold(topo, t);
        let master = topo.read_master.as_ref().map(|p| p.addr.clone());
        if master != self.master {
            if let Some(m) = &master {
                t.activity.record(
                    "master",
                    format!("master confirmed: {m}"),
                    json!({"addr": m}),
                );
                if let Some((since, old)) = self.failover.take_if(|(_, old)| old != m) {
                    let took = since.elapsed();
                    t.metrics.failover(took);
                    t.activity.record(
                        "failover",
                        format!("failover done: {old} -> {m} in {} ms", took.as_millis()),
                        json!({"phase": "done", "old": old, "master": m, "took_ms": took.as_millis() as u64}),
                    );
                }
            }
            self.master = master;
        }
        for r in &topo.replicas {
            let addr = &r.pool.addr;
            let eligible = r.usable();
            if self.eligible.insert(addr.clone(), eligible) != Some(eligible) {
                let lag_ms = r.lag.map(|l| l.as_millis() as u64);
                let text = if eligible {
                    format!("{addr} serves reads (lag {} ms)", lag_ms.unwrap_or(0))
                } else {
                    format!("{addr} gets no reads")
                };
                t.activity.record(
                    "replica",
                    text,
                    json!({"addr": addr, "eligible": eligible, "lag_ms": lag_ms}),
                );
            }
        }
        for pool in topo.data_nodes() {
            let now = (pool.health().is_silent(), pool.health().is_busy());
            let before = self
                .health
                .insert(pool.addr.clone(), now)
                .unwrap_or((false, false));
            if now != before {
                let state = match now {
                    (true, _) => "silent",
                    (_, true) => "busy",
                    _ => "answering",
                };
                t.activity.record(
                    "node",
                    format!("{} is {state}", pool.addr),
                    json!({"addr": pool.addr, "state": state}),
                );
            }
        }
    }

    fn report_hold(&mut self, topo: &Topology, t: &Telemetry) {
        let held = topo.master.is_none();
        match (&self.held, held) {
            (None, true) => {
                self.held = Some((Instant::now(), topo.write_hold));
                hold_started(topo.write_hold, t);
            }
            (Some((_, why)), true) if *why != topo.write_hold => {
                let since = self
                    .held
                    .as_ref()
                    .map(|(s, _)| *s)
                    .unwrap_or_else(Instant::now);
                self.held = Some((since, topo.write_hold));
                hold_started(topo.write_hold, t);
            }
            (Some((since, _)), false) => {
                let held_for = since.elapsed();
                t.metrics.write_hold_ended(held_for);
                t.activity.record(
                    "release",
                    format!("writes flow again after {} ms", held_for.as_millis()),
                    json!({"held_ms": held_for.as_millis() as u64}),
                );
                self.held = None;
            }
            _ => {}
        }
    }
}

fn hold_started(why: Option<WriteHold>, t: &Telemetry) {
    let reason = why.map_or("no confirmed master", WriteHold::describe);
    t.activity.record(
        "hold",
        format!("writes held: {reason}"),
        json!({"reason": reason}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NodePool;
    use crate::commands::CommandTable;
    use crate::topology::ReplicaNode;
    use std::sync::Arc;
    use std::time::Duration;

    fn pool(port: u16) -> Arc<NodePool> {
        NodePool::for_test(port, 1)
    }

    fn held(why: WriteHold) -> Topology {
        let mut topo = Topology::empty(Arc::new(CommandTable::default()));
        topo.write_hold = Some(why);
        topo
    }

    fn kinds(t: &Telemetry) -> Vec<(&'static str, String)> {
        t.activity
            .subscribe()
            .0
            .into_iter()
            .map(|a| (a.kind, a.text))
            .collect()
    }

    /// A failover as discovery publishes it: writes held (the master went
    /// silent, then a failover), a new master, the replica set changing.
    #[tokio::test(start_paused = true)]
    async fn a_failover_is_reported_once_per_change_and_timed() {
        let t = Telemetry::default();
        let mut seen = Seen::default();
        let (a, b) = (pool(7000), pool(7001));
        let mut before = Topology::empty(Arc::new(CommandTable::default()));
        before.master = Some(a.clone());
        before.read_master = Some(a.clone());
        before.write_hold = None;
        before.replicas = vec![ReplicaNode {
            pool: b.clone(),
            offset: 10,
            replid: None,
            lag: Some(Duration::from_millis(2)),
            eligible: true,
            locality: Default::default(),
        }];
        seen.report(&before, &t);
        seen.report(&before, &t);

        seen.failover_noticed(&a.addr, "the master does not answer", &t);
        let mut silent = held(WriteHold::MasterSilent);
        silent.read_master = Some(a.clone());
        seen.report(&silent, &t);
        seen.report(&silent, &t);
        tokio::time::advance(Duration::from_millis(1000)).await;
        // The reason changes: reported; noticing again is not.
        seen.failover_noticed(&a.addr, "+odown", &t);
        let failing = held(WriteHold::FailoverInProgress);
        seen.report(&failing, &t);
        tokio::time::advance(Duration::from_millis(1500)).await;

        let mut after = Topology::empty(Arc::new(CommandTable::default()));
        after.master = Some(b.clone());
        after.read_master = Some(b.clone());
        after.write_hold = None;
        seen.report(&after, &t);
        seen.report(&after, &t);
        // The other Sentinels' +switch-master, late: not a new failover.
        seen.failover_noticed(&a.addr, "+switch-master", &t);

        let expected = [
            ("master", "master confirmed: 127.0.0.1:7000".to_string()),
            ("replica", "127.0.0.1:7001 serves reads (lag 2 ms)".into()),
            (
                "failover",
                "failover of 127.0.0.1:7000 noticed: the master does not answer".into(),
            ),
            ("hold", "writes held: the master does not answer".into()),
            ("hold", "writes held: a failover is in progress".into()),
            ("release", "writes flow again after 2500 ms".into()),
            ("master", "master confirmed: 127.0.0.1:7001".into()),
            (
                "failover",
                "failover done: 127.0.0.1:7000 -> 127.0.0.1:7001 in 2500 ms".into(),
            ),
        ];
        let got = kinds(&t);
        assert_eq!(got, expected.map(|(k, s)| (k, s)), "{got:#?}");
        let text = crate::metrics::render(&crate::metrics::registry(crate::metrics::Exporter {
            metrics: t.metrics.clone(),
            topology: tokio::sync::watch::channel(Arc::new(after)).1,
            clients: Default::default(),
        }));
        assert!(text.contains("belay_failovers_total 1"), "{text}");
        assert!(
            text.contains("belay_write_hold_duration_seconds_sum 2.5"),
            "{text}"
        );
        assert!(
            text.contains("belay_failover_duration_seconds_sum 2.5"),
            "{text}"
        );
    }
}
