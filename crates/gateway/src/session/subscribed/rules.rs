//! What a subscribed session needs to know besides the bytes it pipes: which
//! channels to subscribe to again after a failover, which of the client's
//! commands may go to the subscription connection at all, and when the
//! gateway's own answers may be written so that they keep their place among
//! the node's replies.

use std::collections::{BTreeSet, VecDeque};

use belay_resp::Request;
use bytes::Bytes;

/// Channels, patterns and shard channels a subscribed session listens to,
/// from the client's own (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE commands.
#[derive(Default)]
pub struct Subscriptions {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shard: BTreeSet<Bytes>,
}

impl Subscriptions {
    pub fn track(&mut self, req: &Request) {
        let args = (1..req.argc()).filter_map(|i| req.arg_bytes(i));
        let name = String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_lowercase();
        match name.as_str() {
            "subscribe" => self.channels.extend(args),
            "psubscribe" => self.patterns.extend(args),
            "ssubscribe" => self.shard.extend(args),
            "unsubscribe" if req.argc() == 1 => self.channels.clear(),
            "punsubscribe" if req.argc() == 1 => self.patterns.clear(),
            "sunsubscribe" if req.argc() == 1 => self.shard.clear(),
            "unsubscribe" => args.for_each(|a| {
                self.channels.remove(&a);
            }),
            "punsubscribe" => args.for_each(|a| {
                self.patterns.remove(&a);
            }),
            "sunsubscribe" => args.for_each(|a| {
                self.shard.remove(&a);
            }),
            _ => {}
        }
    }

    /// True once the client has unsubscribed from everything: Redis then
    /// takes the connection out of subscribed mode, and so does the gateway.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty()
    }

    pub fn groups(&self) -> [(&'static str, &BTreeSet<Bytes>); 3] {
        [
            ("SUBSCRIBE", &self.channels),
            ("PSUBSCRIBE", &self.patterns),
            ("SSUBSCRIBE", &self.shard),
        ]
    }
}

/// What a subscribed session does with one of its client's commands.
#[derive(Debug, PartialEq, Eq)]
pub enum InSubscription {
    /// Goes to the subscription connection as it is.
    Forward,
    /// Changes the subscriptions, and goes to the subscription connection.
    Track,
    /// `QUIT`: `+OK` once everything before it is answered, then close.
    Quit,
    /// `RESET`: leave subscribed mode once everything before it is
    /// answered, then handle it like any session.
    Reset,
    /// Anything else. Redis itself allows only these commands on a RESP2
    /// connection in subscribed mode; the subscription connection is also
    /// not where a write or a denied command (`MONITOR`, `SHUTDOWN`, …) may
    /// go, so the gateway answers with Redis's error.
    Refuse,
}

pub fn in_subscription(req: &Request) -> InSubscription {
    let name = req.name().unwrap_or_default().to_ascii_lowercase();
    match name.as_slice() {
        b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe" | b"punsubscribe"
        | b"sunsubscribe" => InSubscription::Track,
        b"ping" => InSubscription::Forward,
        b"quit" => InSubscription::Quit,
        b"reset" => InSubscription::Reset,
        _ => InSubscription::Refuse,
    }
}

/// True when the channels of `req` (an `SSUBSCRIBE`) are in several slots,
/// which Redis refuses (`CROSSSLOT`).
pub fn crosses_slots(req: &Request) -> bool {
    let mut slots = (1..req.argc())
        .filter_map(|i| req.arg(i))
        .map(crate::cluster::key_slot);
    let first = slots.next();
    slots.any(|s| Some(s) != first)
}

/// The error Redis gives for a command it does not allow in subscribed mode.
pub fn refusal(req: &Request) -> Bytes {
    let name = String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_lowercase();
    crate::reply::error(&format!(
        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    ))
}

/// What to do when a marker's turn comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterMarker {
    Continue,
    /// Leave subscribed mode (the client unsubscribed from everything, or RESET).
    Leave,
    /// End the session (QUIT).
    Close,
}

/// Places in the subscription connection's reply stream where the gateway
/// has something to do. Each is a `PING <token>` sent after the commands it
/// must follow: Redis answers in order, so when the echo of the token comes
/// back, every reply before it has been passed on, and the gateway's own
/// answer (a refusal, QUIT's `+OK`) or leaving subscribed mode is next. No
/// counting of confirmations is needed, however many channels an
/// UNSUBSCRIBE covers.
pub struct Markers {
    /// Random per subscription connection, so no published message can
    /// pass for it.
    token: Bytes,
    waiting: VecDeque<(Option<Bytes>, AfterMarker)>,
}

impl Default for Markers {
    fn default() -> Markers {
        Markers::new()
    }
}

impl Markers {
    pub fn new() -> Markers {
        Markers {
            token: Bytes::from(format!("__belay_marker_{:032x}", rand::random::<u128>())),
            waiting: VecDeque::new(),
        }
    }

    /// Notes a marker and returns the command to send for it.
    pub fn add(&mut self, reply: Option<Bytes>, then: AfterMarker) -> Bytes {
        self.waiting.push_back((reply, then));
        belay_resp::encode_command(&[&b"PING"[..], &self.token[..]]).freeze()
    }

    /// True when `frame` is the echo of a marker: `$<n> token` (outside
    /// subscribed mode, and in RESP3) or `*2 pong token` (RESP2 subscribed).
    pub fn is_marker(&self, frame: &[u8]) -> bool {
        !self.waiting.is_empty()
            && frame.len() <= self.token.len() + 32
            && frame.ends_with(b"\r\n")
            && frame[..frame.len() - 2].ends_with(&self.token)
    }

    /// The oldest marker's answer and what follows it.
    pub fn pop(&mut self) -> Option<(Option<Bytes>, AfterMarker)> {
        self.waiting.pop_front()
    }

    /// True while some marker asks to leave or close: the client's later
    /// commands are not read until then.
    pub fn ending(&self) -> bool {
        self.waiting
            .iter()
            .any(|(_, a)| *a != AfterMarker::Continue)
    }
}

/// True for a (p|s)subscribe confirmation, which a re-subscription after a
/// failover must not pass on to the client.
pub fn is_subscribe_confirmation(frame: &[u8]) -> bool {
    let head = &frame[..frame.len().min(32)];
    let lower: Vec<u8> = head.iter().map(|b| b.to_ascii_lowercase()).collect();
    lower.windows(9).any(|w| w == b"subscribe") && !lower.windows(7).any(|w| w == b"message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use belay_resp::{parse_request, Limits};
    use bytes::BytesMut;

    fn req(line: &str) -> Request {
        let mut buf = BytesMut::from(format!("{line}\r\n").as_str());
        parse_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn only_subscription_commands_reach_the_subscription_connection() {
        assert_eq!(in_subscription(&req("SUBSCRIBE a")), InSubscription::Track);
        assert_eq!(in_subscription(&req("sunsubscribe")), InSubscription::Track);
        assert_eq!(in_subscription(&req("PING")), InSubscription::Forward);
        assert_eq!(in_subscription(&req("quit")), InSubscription::Quit);
        assert_eq!(in_subscription(&req("RESET")), InSubscription::Reset);
        for refused in [
            "SHUTDOWN NOSAVE",
            "MONITOR",
            "SET k v",
            "GET k",
            "CONFIG SET x y",
        ] {
            assert_eq!(
                in_subscription(&req(refused)),
                InSubscription::Refuse,
                "{refused}"
            );
        }
        assert!(refusal(&req("Get k")).starts_with(b"-ERR Can't execute 'get'"));
    }

    #[test]
    fn empty_once_every_kind_is_unsubscribed() {
        let mut subs = Subscriptions::default();
        subs.track(&req("SUBSCRIBE a b"));
        subs.track(&req("PSUBSCRIBE p*"));
        subs.track(&req("UNSUBSCRIBE a"));
        subs.track(&req("UNSUBSCRIBE"));
        assert!(!subs.is_empty(), "the pattern is left");
        subs.track(&req("PUNSUBSCRIBE p*"));
        assert!(subs.is_empty());
    }

    #[test]
    fn a_marker_is_told_from_replies_and_messages() {
        let mut m = Markers::new();
        let token = String::from_utf8(m.token.to_vec()).unwrap();
        let bulk = format!("${}\r\n{token}\r\n", token.len());
        let pong = format!("*2\r\n$4\r\npong\r\n{bulk}");
        assert!(!m.is_marker(bulk.as_bytes()), "no marker is waiting");
        m.add(None, AfterMarker::Leave);
        assert!(m.ending());
        assert!(m.is_marker(bulk.as_bytes()));
        assert!(m.is_marker(pong.as_bytes()));
        assert!(!m.is_marker(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n"));
        assert!(!m.is_marker(b"$4\r\npong\r\n"));
        assert_eq!(m.pop(), Some((None, AfterMarker::Leave)));
        assert!(!m.ending());
    }
}
