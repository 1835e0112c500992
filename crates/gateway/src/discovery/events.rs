//! What discovery wakes up for: Sentinel events, read from each Sentinel's
//! event channels, and signs sessions notice.

use std::time::Duration;

use belay_client::sentinel::SentinelAuth;
use belay_client::{ClientError, Connection, TlsClient, Value};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::activity::ActivityLog;

/// Something that should make discovery look again, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A Sentinel announced a new master (`+switch-master`): stop writing to
    /// the old one at once.
    SwitchMaster { old_addr: String, new_addr: String },
    /// A Sentinel started a failover of this master (`+try-failover`): hold
    /// writes now. Writes the old master acknowledges from here on would be
    /// lost when it is demoted.
    FailoverStarting { master_addr: String },
    /// The Sentinels agree the master is down (`+odown`): hold writes, and
    /// give up on what is in flight there: it is gone, not slow.
    MasterDown { master_addr: String },
    /// A failover was called off (`-failover-abort-*`).
    FailoverAborted { master_addr: String },
    /// A Sentinel sees a replica down (`+sdown slave …`): give up on what is
    /// in flight there (reads are retried elsewhere).
    ReplicaDown { addr: String },
    /// Any other Sentinel event about our master or its replicas.
    Changed,
    /// A session saw a sign the master may have changed (a refusal, a lost
    /// connection): confirm with `ROLE`.
    Suspect { addr: String },
}

impl Event {
    /// Events that must be acted on at once, interrupting a round: a few
    /// per failover. (Sessions' suspicions can come by the thousand; they
    /// only ask for the next round.)
    pub(super) fn is_urgent(&self) -> bool {
        matches!(
            self,
            Event::SwitchMaster { .. }
                | Event::FailoverStarting { .. }
                | Event::MasterDown { .. }
                | Event::FailoverAborted { .. }
                | Event::ReplicaDown { .. }
        )
    }
}

/// Sentinel channels worth waking up for.
pub(super) const SENTINEL_CHANNELS: &[&str] = &[
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+convert-to-slave",
    "+slave",
    "+role-change",
    "-role-change",
    "+failover-end",
    "+try-failover",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "+failover-state-reconf-slaves",
    "+slave-reconf-done",
    "+sentinel",
    "+reboot",
];

/// The [`Event`] a Sentinel message means for the master named
/// `master_name`, if it concerns it.
///
/// Messages read `<kind> <name> <ip> <port> @ <master name> <ip> <port>`,
/// or for the master itself `master <name> <ip> <port> …`, except
/// `+switch-master <name> <old ip> <old port> <new ip> <new port>`.
pub(super) fn parse_event(channel: &str, payload: &str, master_name: &str) -> Option<Event> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    if !words.contains(&master_name) {
        return None;
    }
    let about_master = words.first() == Some(&"master") && words.get(1) == Some(&master_name);
    let master_addr = || format!("{}:{}", words[2], words[3]);
    Some(match channel {
        "+switch-master" if words.len() >= 5 && words[0] == master_name => Event::SwitchMaster {
            old_addr: format!("{}:{}", words[1], words[2]),
            new_addr: format!("{}:{}", words[3], words[4]),
        },
        "+try-failover" if about_master && words.len() >= 4 => Event::FailoverStarting {
            master_addr: master_addr(),
        },
        "+odown" if about_master && words.len() >= 4 => Event::MasterDown {
            master_addr: master_addr(),
        },
        // `-odown` is not the end of a failover: Sentinel sends it when a
        // paused master comes back, possibly after a replica was promoted.
        // Only an abort, a switch or a round that finds no failover under
        // way lets writes go on.
        "-failover-abort-not-elected"
        | "-failover-abort-no-good-slave"
        | "-failover-abort-slave-timeout"
            if about_master && words.len() >= 4 =>
        {
            Event::FailoverAborted {
                master_addr: master_addr(),
            }
        }
        "+sdown" if words.first() == Some(&"slave") && words.len() >= 4 => Event::ReplicaDown {
            addr: format!("{}:{}", words[2], words[3]),
        },
        _ => Event::Changed,
    })
}

/// Listens to one Sentinel's event channels forever, reconnecting with
/// backoff, and turns messages about our master into [`Event`]s.
pub(super) async fn subscribe_events(
    addr: String,
    auth: SentinelAuth,
    tls: Option<TlsClient>,
    master_name: String,
    events: mpsc::UnboundedSender<Event>,
    activity: Arc<ActivityLog>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if events.is_closed() {
            return;
        }
        match listen_once(&addr, &auth, tls.as_ref(), &master_name, &events, &activity).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(sentinel = %addr, error = %e, "Sentinel event subscription dropped; retrying")
            }
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    addr: &str,
    auth: &SentinelAuth,
    tls: Option<&TlsClient>,
    master_name: &str,
    events: &mpsc::UnboundedSender<Event>,
    activity: &ActivityLog,
) -> Result<(), ClientError> {
    let (mut conn, _) =
        Connection::connect_sentinel_with(addr, tls, auth, Duration::from_secs(2)).await?;
    let mut cmd = vec!["SUBSCRIBE"];
    cmd.extend_from_slice(SENTINEL_CHANNELS);
    conn.send(&cmd).await?;
    loop {
        let msg = conn.read_value_unbounded().await?;
        let Some(parts) = msg.as_array() else {
            continue;
        };
        if parts.first().and_then(Value::as_str) != Some("message") {
            continue;
        }
        let channel = parts.get(1).and_then(Value::to_text).unwrap_or_default();
        let payload = parts.get(2).and_then(Value::to_text).unwrap_or_default();
        let Some(ev) = parse_event(&channel, &payload, master_name) else {
            continue;
        };
        tracing::debug!(sentinel = %addr, %channel, %payload, "Sentinel event");
        activity.record(
            "sentinel",
            format!("{channel} {payload}"),
            serde_json::json!({"sentinel": addr, "channel": channel, "payload": payload}),
        );
        if events.send(ev).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_messages_become_events() {
        let m = "mymaster";
        assert_eq!(
            parse_event(
                "+switch-master",
                "mymaster 127.0.0.1 6379 127.0.0.1 6380",
                m
            ),
            Some(Event::SwitchMaster {
                old_addr: "127.0.0.1:6379".into(),
                new_addr: "127.0.0.1:6380".into()
            })
        );
        assert_eq!(
            parse_event("+odown", "master mymaster 127.0.0.1 6379 #quorum 1/1", m),
            Some(Event::MasterDown {
                master_addr: "127.0.0.1:6379".into()
            })
        );
        assert_eq!(
            parse_event("+try-failover", "master mymaster 127.0.0.1 6379", m),
            Some(Event::FailoverStarting {
                master_addr: "127.0.0.1:6379".into()
            })
        );
        assert_eq!(
            parse_event(
                "+sdown",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
                m
            ),
            Some(Event::ReplicaDown {
                addr: "127.0.0.1:6380".into()
            })
        );
        // The master's own +sdown is one Sentinel's opinion: look again, no more.
        assert_eq!(
            parse_event("+sdown", "master mymaster 127.0.0.1 6379", m),
            Some(Event::Changed)
        );
        // -odown does not end a failover.
        assert_eq!(
            parse_event("-odown", "master mymaster 127.0.0.1 6379", m),
            Some(Event::Changed)
        );
        assert_eq!(
            parse_event(
                "-failover-abort-no-good-slave",
                "master mymaster 127.0.0.1 6379",
                m
            ),
            Some(Event::FailoverAborted {
                master_addr: "127.0.0.1:6379".into()
            })
        );
        assert_eq!(
            parse_event("+odown", "master othermaster 127.0.0.1 7000", m),
            None
        );
    }
}
