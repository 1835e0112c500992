use std::time::Duration;

use thiserror::Error;

/// What went wrong talking to one Redis or Sentinel, always naming its address.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer {op} within {timeout:?}")]
    Timeout {
        addr: String,
        op: String,
        timeout: Duration,
    },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("{addr} sent invalid RESP: {source}")]
    Protocol {
        addr: String,
        #[source]
        source: belay_resp::ProtocolError,
    },
    #[error("{addr} replied to {op} with an error: {message}")]
    Reply {
        addr: String,
        op: String,
        message: String,
    },
    #[error("{addr} sent an unexpected reply to {op}: {detail}")]
    Unexpected {
        addr: String,
        op: String,
        detail: String,
    },
}

impl ClientError {
    /// True for a node's `BUSY` refusal: a script or function is running.
    pub fn is_busy(&self) -> bool {
        matches!(self, ClientError::Reply { message, .. } if message.starts_with("BUSY"))
    }

    /// True when the server answered (so it is alive) but refused the command.
    pub fn is_reply(&self) -> bool {
        matches!(self, ClientError::Reply { .. })
    }

    /// True when a server refused `AUTH` because it has no password to check
    /// (`requirepass` unset): Redis 6+ says "AUTH <password> called without
    /// any password configured for the default user", older ones "Client
    /// sent AUTH, but no password is set". The connection is still usable,
    /// as the default user without a password.
    pub fn is_no_password_configured(&self) -> bool {
        match self {
            ClientError::Reply { op, message, .. } => {
                op == "AUTH"
                    && (message.contains("called without any password configured")
                        || message.contains("no password is set"))
            }
            _ => false,
        }
    }

    /// True for authentication failures (wrong password, no password set).
    pub fn is_auth(&self) -> bool {
        match self {
            ClientError::Reply { message, .. } => {
                message.starts_with("WRONGPASS")
                    || message.starts_with("NOAUTH")
                    || message.contains("invalid password")
                    || message.contains("AUTH <password> called without")
            }
            _ => false,
        }
    }
}
