//! What the gateway saw and did, as a stream of events: Sentinel's events
//! about our master, a master confirmed, writes held and released (and
//! why), replicas becoming eligible or not, nodes going silent or busy,
//! failovers started and done. The admin endpoint streams it (`/events`,
//! Server-Sent Events) to the dashboard; a new subscriber gets the recent
//! past first, so a page opened after a failover still shows it.
//!
//! From the same events it keeps the last failovers and episodes of held
//! writes as a timeline (`/failovers`): when the fault was noticed, writes
//! held, `+switch-master`, the new master confirmed, writes released, and
//! the write blackout — so the dashboard and `belay status --watch` show
//! one account of them.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
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
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    events: VecDeque<Activity>,
    timeline: Timeline,
}

impl Default for ActivityLog {
    fn default() -> Self {
        ActivityLog {
            tx: broadcast::channel(1024).0,
            recent: Mutex::new(Recent::default()),
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
        if recent.events.len() == RECENT {
            recent.events.pop_front();
        }
        recent.timeline.add(&a);
        recent.events.push_back(a.clone());
        // Under the lock: a subscriber gets each event once, in the recent
        // past or live.
        let _ = self.tx.send(a);
    }

    /// The recent past, and the events from now on.
    pub fn subscribe(&self) -> (Vec<Activity>, broadcast::Receiver<Activity>) {
        let recent = self.recent.lock().unwrap();
        (recent.events.iter().cloned().collect(), self.tx.subscribe())
    }

    /// The last failovers and episodes of held writes, newest first.
    pub fn failovers(&self) -> Vec<Episode> {
        let recent = self.recent.lock().unwrap();
        recent.timeline.episodes.iter().rev().cloned().collect()
    }
}

/// Episodes kept.
const EPISODES: usize = 10;

/// A failover, or writes held without one (the write guard, a master
/// silent for a while), from its first sign to writes flowing again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Episode {
    pub started_at_ms: u64,
    /// A change of master was seen coming (not only held writes).
    pub failover: bool,
    pub old_master: Option<String>,
    pub new_master: Option<String>,
    pub hold_started_at_ms: Option<u64>,
    pub switch_master_at_ms: Option<u64>,
    pub released_at_ms: Option<u64>,
    /// The write blackout: how long writes were held.
    pub held_ms: Option<u64>,
    /// From the first sign to the new master confirmed.
    pub took_ms: Option<u64>,
    /// Not over yet: writes still held, or the new master not confirmed.
    pub ongoing: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub at_ms: u64,
    pub text: String,
}

/// Sentinel events worth a step in an episode (about the master).
const NOTABLE: [&str; 9] = [
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+try-failover",
    "+elected-leader",
    "+switch-master",
    "+failover-end",
    "-failover-abort-not-elected",
];

#[derive(Default)]
struct Timeline {
    episodes: VecDeque<Episode>,
}

impl Timeline {
    fn current(&mut self) -> Option<&mut Episode> {
        self.episodes.back_mut().filter(|e| e.ongoing)
    }

    /// The ongoing episode, or a new one from `at_ms`.
    fn open(&mut self, at_ms: u64) -> &mut Episode {
        if self.current().is_none() {
            if self.episodes.len() == EPISODES {
                self.episodes.pop_front();
            }
            self.episodes.push_back(Episode {
                started_at_ms: at_ms,
                failover: false,
                old_master: None,
                new_master: None,
                hold_started_at_ms: None,
                switch_master_at_ms: None,
                released_at_ms: None,
                held_ms: None,
                took_ms: None,
                ongoing: true,
                steps: Vec::new(),
            });
        }
        self.episodes.back_mut().expect("just made sure")
    }

    fn add(&mut self, a: &Activity) {
        let d = &a.detail;
        let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let n = |k: &str| d.get(k).and_then(|v| v.as_u64());
        let at = a.at_ms;
        match a.kind {
            "failover" if s("phase").as_deref() == Some("noticed") => {
                let e = self.open(at);
                e.failover = true;
                e.old_master = e.old_master.take().or(s("master"));
                e.step(
                    at,
                    format!("fault noticed: {}", s("why").unwrap_or_default()),
                );
            }
            "failover" => {
                if let Some(e) = self.current() {
                    e.new_master = s("master");
                    e.took_ms = n("took_ms");
                    e.step(at, a.text.clone());
                    e.ongoing = e.released_at_ms.is_none();
                }
            }
            "hold" => {
                let e = self.open(at);
                e.hold_started_at_ms.get_or_insert(at);
                e.step(at, a.text.clone());
            }
            "release" => {
                if let Some(e) = self.current() {
                    e.released_at_ms = Some(at);
                    e.held_ms = n("held_ms");
                    e.step(at, a.text.clone());
                    // A failover is over once its new master is confirmed too.
                    e.ongoing = e.failover && e.took_ms.is_none();
                }
            }
            "master" => {
                if let Some(e) = self.current() {
                    e.step(at, a.text.clone());
                }
            }
            "sentinel" => {
                let channel = s("channel").unwrap_or_default();
                let payload = s("payload").unwrap_or_default();
                let about_master = payload.starts_with("master ")
                    || channel == "+switch-master"
                    || channel == "+try-failover";
                if !NOTABLE.contains(&channel.as_str()) || !about_master {
                    return;
                }
                let e = if channel == "+sdown" || channel == "+odown" {
                    self.open(at)
                } else {
                    match self.current() {
                        Some(e) => e,
                        None => return,
                    }
                };
                if channel == "+switch-master" {
                    e.switch_master_at_ms.get_or_insert(at);
                }
                // Every Sentinel sends the same events: one step each.
                let text = format!("Sentinel {channel} {payload}");
                if !e.steps.iter().any(|st| st.text == text) {
                    e.step(at, text);
                }
            }
            _ => {}
        }
    }
}

impl Episode {
    fn step(&mut self, at_ms: u64, text: String) {
        self.steps.push(Step { at_ms, text });
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

    #[test]
    fn a_failover_becomes_one_episode_from_first_sign_to_writes_released() {
        let log = ActivityLog::default();
        let sentinel = |channel: &str, payload: &str| serde_json::json!({"sentinel": "s:1", "channel": channel, "payload": payload});
        log.record(
            "master",
            "master confirmed: a:1".into(),
            serde_json::json!({"addr": "a:1"}),
        );
        assert!(log.failovers().is_empty(), "no episode before any fault");
        log.record(
            "sentinel",
            "+sdown".into(),
            sentinel("+sdown", "master mymaster a 1"),
        );
        log.record(
            "failover",
            "failover of a:1 noticed".into(),
            serde_json::json!({"phase": "noticed", "master": "a:1", "why": "+odown"}),
        );
        log.record(
            "hold",
            "writes held: a failover".into(),
            serde_json::json!({"reason": "x"}),
        );
        // Three Sentinels report the same switch: one step.
        for _ in 0..3 {
            log.record(
                "sentinel",
                "+switch-master".into(),
                sentinel("+switch-master", "mymaster a 1 b 2"),
            );
        }
        // A replica event is not part of it.
        log.record(
            "sentinel",
            "+sdown".into(),
            sentinel("+sdown", "slave b:2 b 2 @ mymaster a 1"),
        );
        log.record(
            "release",
            "writes flow again".into(),
            serde_json::json!({"held_ms": 2400}),
        );
        let ongoing = log.failovers();
        assert!(
            ongoing[0].ongoing,
            "a failover is over once its new master is confirmed"
        );
        log.record(
            "master",
            "master confirmed: b:2".into(),
            serde_json::json!({"addr": "b:2"}),
        );
        log.record(
            "failover",
            "failover done".into(),
            serde_json::json!({"phase": "done", "old": "a:1", "master": "b:2", "took_ms": 2600}),
        );
        let episodes = log.failovers();
        assert_eq!(episodes.len(), 1);
        let e = &episodes[0];
        assert!(e.failover && !e.ongoing);
        assert_eq!(e.old_master.as_deref(), Some("a:1"));
        assert_eq!(e.new_master.as_deref(), Some("b:2"));
        assert_eq!((e.held_ms, e.took_ms), (Some(2400), Some(2600)));
        assert!(e.hold_started_at_ms.is_some() && e.switch_master_at_ms.is_some());
        assert_eq!(e.steps.len(), 7, "{:#?}", e.steps);
        // A hold without a failover (the write guard) is an episode of its own.
        log.record(
            "hold",
            "writes held: guard".into(),
            serde_json::json!({"reason": "guard"}),
        );
        log.record(
            "release",
            "writes flow again".into(),
            serde_json::json!({"held_ms": 300}),
        );
        let episodes = log.failovers();
        assert_eq!(episodes.len(), 2);
        assert!(!episodes[0].failover && !episodes[0].ongoing);
        assert_eq!(episodes[0].held_ms, Some(300));
    }
}
