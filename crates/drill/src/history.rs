//! The record of a drill: every operation the workload made, with when it
//! started, when it ended and what it got. Operations are stored as ids
//! (writer, sequence, register, value) rather than key strings: the checker
//! reasons about ids, and a 20-second run at a few thousand operations a
//! second stays small.

use belay_client::ClientError;
use serde::Serialize;

/// Microseconds since the drill's clock started (the workload's start).
pub type Micros = u64;

/// What an operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum OpKind {
    /// `SET` of a key written exactly once (`k:<writer>:<seq>` = `<seq>`):
    /// if it was acknowledged it must be there at the end.
    Set { writer: u32, seq: u64 },
    /// `INCR` of a shared counter: the final value must be at least the
    /// number of acknowledged increments.
    Incr { counter: u32 },
    /// `SET` of a register to the next value of an increasing sequence. Each
    /// register has one writer, so "older" and "newer" values are decidable
    /// and a read can be judged stale.
    Write { reg: u32, value: u64 },
    /// `GET` of a register.
    Read { reg: u32 },
}

impl OpKind {
    /// Writes change data; reads do not.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Read { .. })
    }
}

/// Why an operation failed, as an application would tell the cases apart:
/// by the client library's error type, or by an error reply's code (its
/// first word), never by the wording of a message, which servers and the
/// gateway are free to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Could not connect (nothing listening, refused, unreachable).
    Refused,
    /// No reply within the client's deadline (a paused or cut-off server).
    Timeout,
    /// The connection broke (closed or reset) while a reply was owed.
    Closed,
    /// `-READONLY`: a write reached a replica.
    ReadOnly,
    /// `-NOREPLICAS`: the master refused a write for lack of in-sync
    /// replicas (`min-replicas-to-write`).
    NoReplicas,
    /// `-TRYAGAIN` from the gateway: no confirmed master appeared within
    /// its failover hold; the command was not run.
    HoldTimeout,
    /// `-UNCERTAIN` from the gateway: it lost the master with the command
    /// in flight, so it may or may not have run (never replayed).
    MaybeRan,
    /// `-UNREPLICATED` from the gateway (durable writes): the write ran on
    /// the master but the replicas did not confirm it in time.
    Unreplicated,
    /// `-MASTERDOWN`: a replica whose master link is down refused a read.
    MasterDown,
    /// `-LOADING`: the node is loading its data set.
    Loading,
    /// `-BUSY`: the node is running a script or function and refused.
    Busy,
    /// `-NOAUTH` / `-WRONGPASS`: the credentials were refused.
    Auth,
    /// No Sentinel named a master (direct-master target only).
    NoMaster,
    /// Anything else: another error code, an invalid or unexpected reply.
    Other,
}

impl ErrorKind {
    /// Classifies an error reply by its code, the first word (`READONLY
    /// You can't write against a read only replica.` is `READONLY`).
    pub fn from_reply(message: &str) -> ErrorKind {
        match message.split_whitespace().next().unwrap_or("") {
            "READONLY" => ErrorKind::ReadOnly,
            "NOREPLICAS" => ErrorKind::NoReplicas,
            "MASTERDOWN" => ErrorKind::MasterDown,
            "LOADING" => ErrorKind::Loading,
            "BUSY" => ErrorKind::Busy,
            "TRYAGAIN" => ErrorKind::HoldTimeout,
            "UNCERTAIN" => ErrorKind::MaybeRan,
            "UNREPLICATED" => ErrorKind::Unreplicated,
            "NOAUTH" | "WRONGPASS" => ErrorKind::Auth,
            _ => ErrorKind::Other,
        }
    }

    /// Classifies a failure of the client library by its variant; an error
    /// reply it carries (a refused `AUTH`) by its code.
    pub fn from_client_error(e: &ClientError) -> ErrorKind {
        match e {
            // A failed TLS handshake is a connection not opened: nothing ran.
            ClientError::Connect { .. } | ClientError::Tls { .. } => ErrorKind::Refused,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Closed { .. } | ClientError::Io { .. } => ErrorKind::Closed,
            ClientError::Reply { message, .. } => ErrorKind::from_reply(message),
            ClientError::Protocol { .. } | ClientError::Unexpected { .. } => ErrorKind::Other,
        }
    }

    /// Whether a *write* that was sent and failed this way may still have
    /// been applied. Such writes are neither counted as lost when missing
    /// nor as phantoms when present. Codes not known to mean "not run"
    /// count as applied, to be safe.
    pub fn may_have_applied(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::Closed
                | ErrorKind::MaybeRan
                | ErrorKind::Unreplicated
                | ErrorKind::Other
        )
    }

    /// Short label for tables and the picture.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Refused => "cannot connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "connection closed",
            ErrorKind::ReadOnly => "READONLY",
            ErrorKind::NoReplicas => "NOREPLICAS",
            ErrorKind::HoldTimeout => "TRYAGAIN (gateway hold timed out)",
            ErrorKind::MaybeRan => "UNCERTAIN (lost in flight, may or may not have run)",
            ErrorKind::Unreplicated => "UNREPLICATED (ran on the master, replicas did not confirm)",
            ErrorKind::MasterDown => "MASTERDOWN",
            ErrorKind::Loading => "LOADING",
            ErrorKind::Busy => "BUSY",
            ErrorKind::Auth => "NOAUTH / WRONGPASS",
            ErrorKind::NoMaster => "no master from Sentinel",
            ErrorKind::Other => "other",
        }
    }
}

/// What an operation got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// Success. For reads, the register's value (`None`: the key did not
    /// exist); for INCR, the counter's new value.
    Ok { value: Option<u64> },
    /// Failure, classified, with the text as the client saw it.
    Err {
        kind: ErrorKind,
        /// Whether the command was written to a connection. `false` when
        /// opening or setting up the connection failed (connect, handshake,
        /// Sentinel lookup): then it cannot have run, whatever the kind.
        sent: bool,
        message: String,
    },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
    /// A failed write that may still have been applied: it was sent, and
    /// its failure does not say it was not run.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Outcome::Err { kind, sent, .. } => *sent && kind.may_have_applied(),
            Outcome::Ok { .. } => false,
        }
    }
}

/// One operation of one session.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// The client connection (session) that made it: writers first, then readers.
    pub session: u32,
    pub kind: OpKind,
    pub start_us: Micros,
    pub end_us: Micros,
    pub outcome: Outcome,
}

impl Op {
    pub fn latency_us(&self) -> Micros {
        self.end_us.saturating_sub(self.start_us)
    }
}

/// The shape of the workload: how many of each thing, and how keys are
/// named. The checker needs it to know who owns which register.
///
/// In front of a Redis Cluster the keys are split into groups, one per
/// shard, by a hash tag that lands on that shard (`shard_tags`): writer
/// `w` and its registers are in group `w % groups`, counter `c` in `c %
/// groups`, and each writer INCRs, each reader reads, only keys of its own
/// group. A session runs one command at a time, so a session waiting on
/// the faulted shard would otherwise stop its traffic to every other shard
/// too, and "the other shards kept working" could not be measured. With
/// no tags (a Sentinel group) there is one group and the keys are as ever.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    /// Every key starts with this, so drills never touch other data and
    /// runs never see each other's keys.
    pub prefix: String,
    pub writers: u32,
    pub readers: u32,
    /// Shared INCR counters.
    pub counters: u32,
    /// Registers each writer owns (register `r` belongs to writer
    /// `r / regs_per_writer`).
    pub regs_per_writer: u32,
    /// One hash tag per group (`{t3}`); empty: one group, no tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shard_tags: Vec<String>,
}

impl Layout {
    pub fn set_key(&self, writer: u32, seq: u64) -> String {
        format!(
            "{}:{}k:{writer}:{seq}",
            self.prefix,
            self.tag(self.group_of_writer(writer))
        )
    }
    pub fn counter_key(&self, counter: u32) -> String {
        format!(
            "{}:{}c:{counter}",
            self.prefix,
            self.tag(counter % self.groups())
        )
    }
    pub fn reg_key(&self, reg: u32) -> String {
        format!(
            "{}:{}r:{reg}",
            self.prefix,
            self.tag(self.group_of_writer(self.owner(reg)))
        )
    }
    pub fn registers(&self) -> u32 {
        self.writers * self.regs_per_writer
    }
    /// The session that writes register `reg`.
    pub fn owner(&self, reg: u32) -> u32 {
        reg / self.regs_per_writer.max(1)
    }
    /// How many key groups (shards) there are: 1 without tags.
    pub fn groups(&self) -> u32 {
        (self.shard_tags.len() as u32).max(1)
    }
    /// The group of writer `w`'s keys.
    pub fn group_of_writer(&self, writer: u32) -> u32 {
        writer % self.groups()
    }
    /// The group whose registers session `session` reads (readers are
    /// numbered after the writers).
    pub fn group_of_reader(&self, session: u32) -> u32 {
        session.saturating_sub(self.writers) % self.groups()
    }
    /// The counters in `group` (all of them with one group).
    pub fn counters_of(&self, group: u32) -> Vec<u32> {
        (0..self.counters)
            .filter(|c| c % self.groups() == group)
            .collect()
    }
    /// The registers in `group` (all of them with one group).
    pub fn registers_of(&self, group: u32) -> Vec<u32> {
        (0..self.registers())
            .filter(|r| self.group_of_writer(self.owner(*r)) == group)
            .collect()
    }
    /// `{t3}:` for a group with a tag, else nothing.
    fn tag(&self, group: u32) -> String {
        match self.shard_tags.get(group as usize) {
            Some(t) => format!("{t}:"),
            None => String::new(),
        }
    }
}

/// What was read back from the final master after the topology settled.
#[derive(Debug, Clone, Default)]
pub struct Readback {
    /// Value of each acknowledged unique key, by (writer, seq); `None` = missing.
    pub sets: std::collections::HashMap<(u32, u64), Option<String>>,
    /// Final value of each counter (a missing key reads as 0).
    pub counters: std::collections::HashMap<u32, i64>,
    /// Final value of each register (`None` = missing).
    pub regs: std::collections::HashMap<u32, Option<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(tags: &[&str]) -> Layout {
        Layout {
            prefix: "p".into(),
            writers: 4,
            readers: 4,
            counters: 6,
            regs_per_writer: 2,
            shard_tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn without_tags_there_is_one_group_and_keys_are_untagged() {
        let l = layout(&[]);
        assert_eq!(l.groups(), 1);
        assert_eq!(l.set_key(1, 7), "p:k:1:7");
        assert_eq!(l.counter_key(2), "p:c:2");
        assert_eq!(l.reg_key(3), "p:r:3");
        assert_eq!(l.counters_of(0), (0..6).collect::<Vec<_>>());
        assert_eq!(l.registers_of(0), (0..8).collect::<Vec<_>>());
        assert_eq!(l.group_of_reader(6), 0);
    }

    #[test]
    fn with_tags_each_session_keeps_to_its_groups_keys() {
        let l = layout(&["{a}", "{b}", "{c}"]);
        assert_eq!(l.groups(), 3);
        // Writer 1 and its registers (2, 3) in group 1; writer 3 in group 0.
        assert_eq!(l.set_key(1, 7), "p:{b}:k:1:7");
        assert_eq!(l.reg_key(2), "p:{b}:r:2");
        assert_eq!(l.reg_key(6), "p:{a}:r:6");
        assert_eq!(l.counter_key(5), "p:{c}:c:5");
        assert_eq!(l.counters_of(1), vec![1, 4]);
        assert_eq!(l.registers_of(0), vec![0, 1, 6, 7]);
        // Readers are numbered after the 4 writers: session 5 is reader 1.
        assert_eq!(l.group_of_reader(5), 1);
        assert_eq!(l.group_of_reader(7), 0);
    }

    #[test]
    fn error_replies_are_classified_by_their_code() {
        use ErrorKind::*;
        let cases = [
            ("READONLY You can't write against a read only replica.", ReadOnly),
            ("NOREPLICAS Not enough good replicas to write.", NoReplicas),
            ("TRYAGAIN belay: no confirmed master for 10000 ms (failover in progress?); the command was not run", HoldTimeout),
            ("UNCERTAIN belay: the connection to 127.0.0.1:6379 was lost after the command was sent (node silent for 30s); it may or may not have run", MaybeRan),
            ("UNREPLICATED belay: the write ran on the master, but 0 of the 1 replicas required confirmed it within 1000 ms (durable writes): a failover now could lose it; it was not sent again", Unreplicated),
            ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", MasterDown),
            ("LOADING Redis is loading the dataset in memory", Loading),
            ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.", Busy),
            ("WRONGPASS invalid username-password pair or user is disabled.", Auth),
            ("NOAUTH Authentication required.", Auth),
            // The words do not matter, the code does: an ERR that talks
            // like an uncertain one is still just an ERR.
            ("ERR belay: the connection was lost; it may or may not have run", Other),
            ("readonly lower case is not a code", Other),
            ("", Other),
        ];
        for (text, want) in cases {
            assert_eq!(ErrorKind::from_reply(text), want, "{text}");
        }
    }

    #[test]
    fn client_errors_are_classified_by_their_variant() {
        use std::io;
        use ErrorKind::*;
        let addr = || "127.0.0.1:7000".to_string();
        let cases = [
            (
                ClientError::Connect {
                    addr: addr(),
                    source: io::Error::from(io::ErrorKind::ConnectionRefused),
                },
                Refused,
            ),
            (
                ClientError::Timeout {
                    addr: addr(),
                    op: "SET".into(),
                    timeout: std::time::Duration::from_secs(2),
                },
                Timeout,
            ),
            (ClientError::Closed { addr: addr() }, Closed),
            (
                ClientError::Io {
                    addr: addr(),
                    source: io::Error::from(io::ErrorKind::ConnectionReset),
                },
                Closed,
            ),
            (
                ClientError::Protocol {
                    addr: addr(),
                    source: belay_resp::ProtocolError::UnknownType('?'),
                },
                Other,
            ),
            (
                ClientError::Reply {
                    addr: addr(),
                    op: "HELLO".into(),
                    message: "WRONGPASS invalid username-password pair".into(),
                },
                Auth,
            ),
            (
                ClientError::Unexpected {
                    addr: addr(),
                    op: "GET".into(),
                    detail: "Map([])".into(),
                },
                Other,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(ErrorKind::from_client_error(&e), want, "{e}");
        }
    }

    #[test]
    fn only_a_sent_write_with_an_uncertain_failure_may_have_applied() {
        use ErrorKind::*;
        for kind in [MaybeRan, Timeout, Closed, Other] {
            assert!(kind.may_have_applied(), "{kind:?}");
        }
        for kind in [
            HoldTimeout,
            ReadOnly,
            NoReplicas,
            MasterDown,
            Loading,
            Busy,
            Auth,
            Refused,
            NoMaster,
        ] {
            assert!(!kind.may_have_applied(), "{kind:?}");
        }
        let failed = |kind, sent| Outcome::Err {
            kind,
            sent,
            message: String::new(),
        };
        assert!(failed(Timeout, true).may_have_applied());
        // A timeout while opening the connection: the command never left.
        assert!(!failed(Timeout, false).may_have_applied());
        assert!(!failed(HoldTimeout, true).may_have_applied());
        assert!(!Outcome::Ok { value: None }.may_have_applied());
    }
}
