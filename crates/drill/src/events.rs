//! Watching the Sentinels during a drill: one subscription (`PSUBSCRIBE *`)
//! per Sentinel, every event recorded with its time on the drill's clock,
//! so the report can put `+sdown`, `+odown`, `+switch-master` and
//! `+convert-to-slave` beside what the clients saw. A Sentinel that dies
//! (the sentinel-loss drill) is reconnected to when it comes back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use belay_client::sentinel::SentinelAuth;
use belay_client::{Connection, Value};
use serde::Serialize;
use tokio::sync::watch;

/// One event a Sentinel published.
#[derive(Debug, Clone, Serialize)]
pub struct SentinelEvent {
    pub t_ms: f64,
    /// The lab's name for the Sentinel (`sentinel-2`).
    pub sentinel: String,
    /// `+sdown`, `+switch-master`, ...
    pub event: String,
    /// The rest of the message (`master mymaster 127.0.0.2 7000 ...`).
    pub detail: String,
}

/// The events a report calls out (others are kept in the JSON only).
pub const KEY_EVENTS: &[&str] = &[
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+switch-master",
    "+convert-to-slave",
    "+failover-end",
    // A cluster's, seen by polling (`cluster::watch`).
    "+fail",
    "+failover",
    "+rejoined",
];

/// Running subscriptions. [`SentinelWatch::stop`] ends them.
pub struct SentinelWatch {
    stop: watch::Sender<bool>,
    events: Arc<Mutex<Vec<SentinelEvent>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SentinelWatch {
    /// Subscribes to every Sentinel `(name, addr)`, logging in as `auth`
    /// says (a Sentinel often has no password of its own).
    pub fn start(
        sentinels: Vec<(String, String)>,
        auth: SentinelAuth,
        tls: Option<belay_client::TlsClient>,
        t0: Instant,
    ) -> SentinelWatch {
        let (stop, rx) = watch::channel(false);
        let events = Arc::new(Mutex::new(Vec::new()));
        let tasks = sentinels
            .into_iter()
            .map(|(name, addr)| {
                let (auth, tls, events, rx) =
                    (auth.clone(), tls.clone(), events.clone(), rx.clone());
                tokio::spawn(watch_one(name, addr, auth, tls, t0, events, rx))
            })
            .collect();
        SentinelWatch {
            stop,
            events,
            tasks,
        }
    }

    /// The events so far (for the progress display).
    pub fn snapshot(&self) -> Vec<SentinelEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends the subscriptions; returns every event in time order.
    pub async fn stop(self) -> Vec<SentinelEvent> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut v = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        v
    }
}

async fn watch_one(
    name: String,
    addr: String,
    auth: SentinelAuth,
    tls: Option<belay_client::TlsClient>,
    t0: Instant,
    events: Arc<Mutex<Vec<SentinelEvent>>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let subscribed = async {
            let (mut c, _) = Connection::connect_sentinel_with(
                &addr,
                tls.as_ref(),
                &auth,
                Duration::from_secs(1),
            )
            .await?;
            c.send(&["PSUBSCRIBE", "*"]).await?;
            Ok::<_, belay_client::ClientError>(c)
        }
        .await;
        let Ok(mut conn) = subscribed else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                _ = stop.changed() => return,
            }
        };
        loop {
            let v = tokio::select! {
                v = conn.read_value_unbounded() => v,
                _ = stop.changed() => return,
            };
            let Ok(v) = v else { break };
            if let Some((event, detail)) = pmessage(&v) {
                if event.starts_with('+') || event.starts_with('-') {
                    events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(SentinelEvent {
                            t_ms: t0.elapsed().as_secs_f64() * 1000.0,
                            sentinel: name.clone(),
                            event,
                            detail,
                        });
                }
            }
        }
    }
}

/// `["pmessage", pattern, channel, payload]` → (channel, payload).
fn pmessage(v: &Value) -> Option<(String, String)> {
    let items = v.as_array()?;
    if items.len() != 4 || items[0].to_text()? != "pmessage" {
        return None;
    }
    Some((items[2].to_text()?, items[3].to_text()?))
}
