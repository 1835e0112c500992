//! What the gateway saw and did, as a stream of events: Sentinel's events
//! about our master, a master confirmed, writes held and released (and
//! why), replicas becoming eligible or not, nodes going silent or busy,
//! failovers started and done. The admin endpoint streams it (`/events`,
//! Server-Sent Events) to the dashboard; a new subscriber gets the recent
//! past first, so a page opened after a failover still shows it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for new subscribers.
const RECENT: usize = 500;

/// One event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Activity {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `sentinel`, `master`, `switch-master`, `hold`, `release`, `replica`,
    /// `node`, `failover`.
    pub kind: &'static str,
    /// The event in a sentence.
    pub text: String,
    /// Its facts, for programs (addresses, reasons, durations).
    pub detail: serde_json::Value,
}

pub struct ActivityLog {
    tx: broadcast::Sender<Activity>,
    recent: Mutex<VecDeque<Activity>>,
}

impl Default for ActivityLog {
    fn default() -> Self {
        ActivityLog {
            tx: broadcast::channel(1024).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

impl ActivityLog {
    /// Records an event and sends it to the subscribers.
    pub fn record(&self, kind: &'static str, text: String, detail: serde_json::Value) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let a = Activity {
            at_ms,
            kind,
            text,
            detail,
        };
        let mut recent = self.recent.lock().unwrap();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(a.clone());
        // Under the lock: a subscriber gets each event once, in the recent
        // past or live.
        let _ = self.tx.send(a);
    }

    /// The recent past, and the events from now on.
    pub fn subscribe(&self) -> (Vec<Activity>, broadcast::Receiver<Activity>) {
        let recent = self.recent.lock().unwrap();
        (recent.iter().cloned().collect(), self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_gets_the_recent_past_then_what_comes() {
        let log = ActivityLog::default();
        log.record(
            "master",
            "master confirmed: a:1".into(),
            serde_json::json!({"addr": "a:1"}),
        );
        let (past, mut live) = log.subscribe();
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].kind, "master");
        log.record(
            "hold",
            "writes held".into(),
            serde_json::json!({"reason": "x"}),
        );
        assert_eq!(live.recv().await.unwrap().kind, "hold");
        for i in 0..RECENT + 10 {
            log.record("node", format!("{i}"), serde_json::Value::Null);
        }
        let (past, _) = log.subscribe();
        assert_eq!(past.len(), RECENT);
        assert_eq!(past.last().unwrap().text, format!("{}", RECENT + 9));
    }
}
