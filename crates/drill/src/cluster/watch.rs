//! Watching a cluster during a drill: a cluster publishes no events a
//! client can subscribe to (Sentinel's `+switch-master`), so the nodes are
//! asked every 250 ms — all at once, a paused one costing its own timeout
//! only — and the first sighting of each step of the faulted shard's
//! failover is recorded on the drill's clock, for the report and the
//! picture beside what the clients saw:
//!
//! | event | seen when |
//! |---|---|
//! | `+pfail` | the majority view flags the old master `fail?` |
//! | `+fail` | the majority view flags it `fail` (the cluster agreed) |
//! | `+failover` | the shard's slots are on another node in the majority view |
//! | `+rejoined` | the old master says (`ROLE`) it is a replica |
//!
//! Each is timed when the node whose answer showed it answered: within a
//! poll (250 ms) of when it happened.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use belay_lab::cluster::view::{self, NodeView};
use belay_lab::cluster::ClusterQuery;
use tokio::sync::watch;

use crate::events::SentinelEvent;

/// Who reports the events in a cluster drill (in place of a Sentinel's name).
pub const SOURCE: &str = "cluster";

const POLL: Duration = Duration::from_millis(250);

/// A running watch. [`ClusterWatch::stop`] ends it.
pub struct ClusterWatch {
    stop: watch::Sender<bool>,
    events: Arc<Mutex<Vec<SentinelEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterWatch {
    /// Watches the shard serving `slot`, whose master is `old_master`.
    pub fn start(query: ClusterQuery, old_master: String, slot: u16, t0: Instant) -> ClusterWatch {
        let (stop, mut rx) = watch::channel(false);
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = events.clone();
        let task = tokio::spawn(async move {
            let mut seen = Seen::default();
            loop {
                let (views, times) = ask_all(&query, t0).await;
                for (event, detail, who) in seen.update(&views, &old_master, slot) {
                    // When the node that showed it answered (a paused node
                    // answers what it sees as it wakes, not when asked).
                    let t_ms = views
                        .iter()
                        .position(|v| v.addr == who)
                        .map(|i| times[i])
                        .unwrap_or_else(|| t0.elapsed().as_secs_f64() * 1000.0);
                    out.lock().expect("events lock").push(SentinelEvent {
                        t_ms,
                        sentinel: SOURCE.into(),
                        event: event.into(),
                        detail,
                    });
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = rx.changed() => return,
                }
            }
        });
        ClusterWatch { stop, events, task }
    }

    /// The latest event, for the progress bar.
    pub fn last(&self) -> String {
        self.events
            .lock()
            .expect("events lock")
            .last()
            .map(|e| format!("{} {}", e.event, e.detail))
            .unwrap_or_default()
    }

    /// Stops polling and returns what was seen, in time order.
    pub async fn stop(self) -> Vec<SentinelEvent> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let events = self.events.lock().expect("events lock").clone();
        events
    }
}

/// Every node's view, asked concurrently, in the query's node order, with
/// when each answered (ms on the drill clock).
async fn ask_all(q: &ClusterQuery, t0: Instant) -> (Vec<NodeView>, Vec<f64>) {
    let tasks: Vec<_> = q
        .nodes
        .iter()
        .cloned()
        .map(|t| {
            let (auth, timeout) = (q.auth.clone(), q.timeout);
            tokio::spawn(async move {
                let v = view::ask(&t, auth.as_ref(), timeout).await;
                (v, t0.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let (mut views, mut times) = (Vec::new(), Vec::new());
    for t in tasks {
        if let Ok((v, at)) = t.await {
            views.push(v);
            times.push(at);
        }
    }
    (views, times)
}

/// What has been seen so far.
#[derive(Default)]
struct Seen {
    pfail: bool,
    fail: bool,
    failover: bool,
    rejoined: bool,
}

impl Seen {
    /// The events first visible in `views`, each with the address of the
    /// node whose answer showed it.
    fn update(
        &mut self,
        views: &[NodeView],
        old: &str,
        slot: u16,
    ) -> Vec<(&'static str, String, String)> {
        let mut new = Vec::new();
        let Some((from, map)) = view::majority_view(views) else {
            return new;
        };
        if let Some(line) = from.table.iter().find(|n| n.addr == old) {
            if !self.pfail && line.is_failing() {
                self.pfail = true;
                new.push((
                    "+pfail",
                    format!("{old} flagged fail? ({})", from.label()),
                    from.addr.clone(),
                ));
            }
            if !self.fail && line.has_flag("fail") {
                self.fail = true;
                new.push((
                    "+fail",
                    format!("{old} flagged fail ({})", from.label()),
                    from.addr.clone(),
                ));
            }
        }
        let serving = map
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, m)| m.as_str());
        if let Some(master) = serving.filter(|m| *m != old) {
            if !self.failover {
                self.failover = true;
                new.push((
                    "+failover",
                    format!("{old} -> {master} (slot {slot}'s shard)"),
                    from.addr.clone(),
                ));
            }
        }
        let old_view = views.iter().find(|v| v.addr == old && v.reachable);
        if let Some(v) = old_view.filter(|v| v.role.as_deref() == Some("replica")) {
            if self.failover && !self.rejoined {
                self.rejoined = true;
                new.push((
                    "+rejoined",
                    format!(
                        "{old} replica of {}",
                        v.replicates_from.as_deref().unwrap_or("?")
                    ),
                    v.addr.clone(),
                ));
            }
        }
        new
    }
}
