//! One workload session's client: its connection to the target, opened
//! when first needed and reopened after it breaks, and why an operation
//! failed as a typed value. Where a failure happened decides whether the
//! command can have run; its type (the client error's variant, the error
//! reply's code) decides its kind, never the wording of a message.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use belay_client::{ClientError, Connection, Value};

use crate::history::{ErrorKind, Outcome};
use crate::workload::{Target, WorkloadSpec};

/// The direct-master target's own failure: no Sentinel named a master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMaster {
    pub master_name: String,
    /// Why each Sentinel asked gave no master, in the order asked.
    pub answers: Vec<String>,
}

impl fmt::Display for NoMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no Sentinel named a master for {}: {}",
            self.master_name,
            self.answers.join("; ")
        )
    }
}

/// Why one operation failed.
#[derive(Debug)]
pub enum Failure {
    /// Opening or setting up a connection failed (connect, AUTH,
    /// handshake): the command was never sent.
    Opening(ClientError),
    /// No Sentinel named a master: nothing was sent.
    NoMaster(NoMaster),
    /// The connection failed after the command was sent.
    InFlight(ClientError),
    /// The server answered with an error reply.
    Reply(String),
    /// The server answered something that is no answer to the command.
    Unexpected(String),
}

impl Failure {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::Opening(e) | Failure::InFlight(e) => ErrorKind::from_client_error(e),
            Failure::NoMaster(_) => ErrorKind::NoMaster,
            Failure::Reply(message) => ErrorKind::from_reply(message),
            Failure::Unexpected(_) => ErrorKind::Other,
        }
    }

    /// Whether the command was written to a connection (and so may have run).
    pub fn sent(&self) -> bool {
        !matches!(self, Failure::Opening(_) | Failure::NoMaster(_))
    }

    /// The failure as the history records it.
    pub fn outcome(&self) -> Outcome {
        Outcome::Err {
            kind: self.kind(),
            sent: self.sent(),
            message: self.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Opening(e) | Failure::InFlight(e) => e.fmt(f),
            Failure::NoMaster(n) => n.fmt(f),
            Failure::Reply(message) => f.write_str(message),
            Failure::Unexpected(reply) => write!(f, "unexpected reply {reply}"),
        }
    }
}

/// One connection to the target, reopened when it breaks.
pub struct Client {
    spec: Arc<WorkloadSpec>,
    conn: Option<Connection>,
    /// Which Sentinel to ask first (spreads sessions over Sentinels).
    first_sentinel: usize,
}

impl Client {
    pub fn new(spec: Arc<WorkloadSpec>, session: u32) -> Client {
        Client {
            spec,
            conn: None,
            first_sentinel: session as usize,
        }
    }

    fn connect_timeout(&self) -> Duration {
        self.spec.op_timeout.min(Duration::from_secs(2))
    }

    async fn connect(&mut self) -> Result<Connection, Failure> {
        let addr = match &self.spec.target {
            Target::Gateway { addr } => addr.clone(),
            Target::DirectMaster {
                sentinels,
                master_name,
            } => self
                .ask_sentinels(sentinels, master_name)
                .await
                .map_err(Failure::NoMaster)?,
        };
        let mut c = Connection::connect(&addr, Some(&self.spec.auth), self.connect_timeout())
            .await
            .map_err(Failure::Opening)?;
        c.set_timeout(self.spec.op_timeout);
        Ok(c)
    }

    /// The naive application's discovery: the first Sentinel that answers.
    async fn ask_sentinels(&self, sentinels: &[String], name: &str) -> Result<String, NoMaster> {
        let mut answers = Vec::new();
        for i in 0..sentinels.len() {
            let s = &sentinels[(self.first_sentinel + i) % sentinels.len()];
            let asked = async {
                let mut c =
                    Connection::connect(s, Some(&self.spec.auth), Duration::from_millis(500))
                        .await?;
                c.sentinel_master_addr(name).await
            }
            .await;
            match asked {
                Ok(Some((h, p))) => return Ok(format!("{h}:{p}")),
                Ok(None) => answers.push(format!("{s}: unknown master")),
                Err(e) => answers.push(e.to_string()),
            }
        }
        Err(NoMaster {
            master_name: name.to_string(),
            answers,
        })
    }

    /// Sends one command and returns its reply; an error reply is a
    /// [`Failure::Reply`].
    pub async fn call(&mut self, args: &[&str]) -> Result<Value, Failure> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        match conn.call(args).await {
            Ok(Value::Error(message)) => {
                if ErrorKind::from_reply(&message) == ErrorKind::ReadOnly {
                    // The node was demoted: look again (the gateway never
                    // sends READONLY; a direct client must re-resolve).
                    self.conn = None;
                }
                Err(Failure::Reply(message))
            }
            Ok(v) => Ok(v),
            Err(e) => {
                self.conn = None;
                Err(Failure::InFlight(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_failure_happened_decides_whether_the_command_was_sent() {
        let timeout = || ClientError::Timeout {
            addr: "127.0.0.1:7000".into(),
            op: "HELLO".into(),
            timeout: Duration::from_secs(2),
        };
        let opening = Failure::Opening(timeout());
        assert_eq!(opening.kind(), ErrorKind::Timeout);
        assert!(!opening.sent());
        assert!(!opening.outcome().may_have_applied());
        let in_flight = Failure::InFlight(timeout());
        assert!(in_flight.sent());
        assert!(in_flight.outcome().may_have_applied());

        let no_master = Failure::NoMaster(NoMaster {
            master_name: "mymaster".into(),
            answers: vec!["127.0.0.1:26379: unknown master".into()],
        });
        assert_eq!(no_master.kind(), ErrorKind::NoMaster);
        assert!(!no_master.sent());
        assert_eq!(
            no_master.to_string(),
            "no Sentinel named a master for mymaster: 127.0.0.1:26379: unknown master"
        );

        let uncertain = Failure::Reply("UNCERTAIN belay: lost after sending".into());
        assert_eq!(uncertain.kind(), ErrorKind::MaybeRan);
        assert!(uncertain.outcome().may_have_applied());
        let held = Failure::Reply("TRYAGAIN belay: no confirmed master".into());
        assert_eq!(held.kind(), ErrorKind::HoldTimeout);
        assert!(!held.outcome().may_have_applied());
        assert_eq!(
            held.outcome(),
            Outcome::Err {
                kind: ErrorKind::HoldTimeout,
                sent: true,
                message: "TRYAGAIN belay: no confirmed master".into()
            }
        );
        assert_eq!(
            Failure::Unexpected("Map([])".into()).kind(),
            ErrorKind::Other
        );
    }
}
