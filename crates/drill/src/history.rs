//! The record of a drill: every operation the workload made, with when it
//! started, when it ended and what it got. Operations are stored as ids
//! (writer, sequence, register, value) rather than key strings: the checker
//! reasons about ids, and a 20-second run at a few thousand operations a
//! second stays small.

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

/// Why an operation failed, as an application would tell the cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Could not connect (nothing listening, or the connect was refused).
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
    /// The gateway lost the master with the command in flight: it may or
    /// may not have run (never replayed).
    MaybeRan,
    /// `-MASTERDOWN`: a replica whose master link is down refused a read.
    MasterDown,
    /// `-LOADING`: the node is loading its data set.
    Loading,
    /// No Sentinel named a master (direct-master target only).
    NoMaster,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Classifies an error reply or a client-side error text.
    pub fn classify(message: &str) -> ErrorKind {
        let m = message;
        let code = m.split_whitespace().next().unwrap_or("");
        match code {
            "READONLY" => return ErrorKind::ReadOnly,
            "NOREPLICAS" => return ErrorKind::NoReplicas,
            "MASTERDOWN" => return ErrorKind::MasterDown,
            "LOADING" => return ErrorKind::Loading,
            "TRYAGAIN" => return ErrorKind::HoldTimeout,
            _ => {}
        }
        if m.contains("may or may not have run") {
            ErrorKind::MaybeRan
        } else if m.starts_with("cannot connect") {
            if m.contains("did not answer") || m.contains("timed out") {
                ErrorKind::Timeout
            } else {
                ErrorKind::Refused
            }
        } else if m.contains("did not answer") {
            ErrorKind::Timeout
        } else if m.contains("closed the connection")
            || m.contains("i/o error")
            || m.contains("reset by peer")
            || m.contains("Broken pipe")
        {
            ErrorKind::Closed
        } else if m.starts_with("no Sentinel named a master") {
            ErrorKind::NoMaster
        } else {
            ErrorKind::Other
        }
    }

    /// Whether a *write* that failed this way may still have been applied.
    /// Such writes are neither counted as lost when missing nor as phantoms
    /// when present.
    pub fn may_have_applied(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Closed | ErrorKind::MaybeRan | ErrorKind::Other
        )
    }

    /// Short label for tables and the picture.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Refused => "connection refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "connection closed",
            ErrorKind::ReadOnly => "READONLY",
            ErrorKind::NoReplicas => "NOREPLICAS",
            ErrorKind::HoldTimeout => "TRYAGAIN (gateway hold timed out)",
            ErrorKind::MaybeRan => "lost in flight (may or may not have run)",
            ErrorKind::MasterDown => "MASTERDOWN",
            ErrorKind::Loading => "LOADING",
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
    Err { kind: ErrorKind, message: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Outcome::Err { kind, .. } => Some(*kind),
            Outcome::Ok { .. } => None,
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
}

impl Layout {
    pub fn set_key(&self, writer: u32, seq: u64) -> String {
        format!("{}:k:{writer}:{seq}", self.prefix)
    }
    pub fn counter_key(&self, counter: u32) -> String {
        format!("{}:c:{counter}", self.prefix)
    }
    pub fn reg_key(&self, reg: u32) -> String {
        format!("{}:r:{reg}", self.prefix)
    }
    pub fn registers(&self) -> u32 {
        self.writers * self.regs_per_writer
    }
    /// The session that writes register `reg`.
    pub fn owner(&self, reg: u32) -> u32 {
        reg / self.regs_per_writer.max(1)
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

    #[test]
    fn errors_are_classified_like_an_application_would() {
        use ErrorKind::*;
        let cases = [
            ("READONLY You can't write against a read only replica.", ReadOnly),
            ("NOREPLICAS Not enough good replicas to write.", NoReplicas),
            ("TRYAGAIN belay: no confirmed master for 10000 ms (failover in progress?); the command was not run", HoldTimeout),
            ("ERR belay: connection to 127.0.0.2:7000 was lost after the command was sent; it may or may not have run", MaybeRan),
            ("cannot connect to 127.0.0.1:7000: Connection refused (os error 111)", Refused),
            ("127.0.0.1:7000 did not answer SET within 2s", Timeout),
            ("127.0.0.1:7000 closed the connection", Closed),
            ("i/o error talking to 127.0.0.1:7000: Connection reset by peer (os error 104)", Closed),
            ("MASTERDOWN Link with MASTER is down", MasterDown),
            ("LOADING Redis is loading the dataset in memory", Loading),
            ("ERR something else", Other),
        ];
        for (text, want) in cases {
            assert_eq!(ErrorKind::classify(text), want, "{text}");
        }
        assert!(MaybeRan.may_have_applied());
        assert!(Timeout.may_have_applied());
        assert!(!HoldTimeout.may_have_applied());
        assert!(!ReadOnly.may_have_applied());
        assert!(!Refused.may_have_applied());
    }
}
