//! Why a command got no reply from a node, as data: whether it may have run
//! (and so must never be sent again) and what happened. Sessions decide
//! retries from the variant, clients read the reason in the error, and the
//! drill classifies by the reply's code, never by its wording.

use std::time::Duration;

use thiserror::Error;

/// A command that got no reply. Only [`BackendError::NotSent`] is safe to
/// send again: the bytes never left the gateway.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Never written to the node.
    #[error("the command was not sent to {addr} ({why})")]
    NotSent { addr: String, why: NotSentWhy },
    /// Written (or possibly written) to the node, which then went away or
    /// was given up on: the command may or may not have run.
    #[error("the connection to {addr} was lost after the command was sent ({why}); it may or may not have run")]
    Lost { addr: String, why: LostWhy },
}

/// Why a command was never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSentWhy {
    /// The connection was closed before its turn to be written.
    ConnectionClosed,
    /// No connection to the node could be had.
    NoConnection,
}

/// Why a command in flight was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostWhy {
    /// The node owed replies and said nothing for this long.
    Silent(Duration),
    /// The socket failed or the node closed it.
    ConnectionClosed,
    /// The node sent bytes that are not RESP, or a reply nobody asked for.
    BadReply,
    /// The gateway closed the node's connections: it was demoted, replaced
    /// by a new master, or reported down by Sentinel.
    NodeReplaced,
}

impl std::fmt::Display for NotSentWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotSentWhy::ConnectionClosed => "its connection closed first",
            NotSentWhy::NoConnection => "no connection to the node",
        })
    }
}

impl std::fmt::Display for LostWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostWhy::Silent(d) => write!(f, "the node was silent for {} ms", d.as_millis()),
            LostWhy::ConnectionClosed => f.write_str("the connection closed"),
            LostWhy::BadReply => f.write_str("the node sent an invalid reply"),
            LostWhy::NodeReplaced => f.write_str("the node was demoted, replaced or reported down"),
        }
    }
}

impl BackendError {
    /// True when the command never left the gateway, so sending it again
    /// (anywhere) cannot run it twice.
    pub fn retry_safe(&self) -> bool {
        matches!(self, BackendError::NotSent { .. })
    }

    pub fn addr(&self) -> &str {
        match self {
            BackendError::NotSent { addr, .. } | BackendError::Lost { addr, .. } => addr,
        }
    }

    /// The error reply a client gets for a command lost this way. The code
    /// says what the client may assume: `UNCERTAIN` may have run, `TRYAGAIN`
    /// did not.
    pub fn to_reply(&self) -> bytes::Bytes {
        match self {
            BackendError::NotSent { .. } => crate::reply::error(&format!("TRYAGAIN belay: {self}")),
            BackendError::Lost { .. } => crate::reply::error(&format!("UNCERTAIN belay: {self}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_code_says_whether_it_may_have_run() {
        let lost = BackendError::Lost {
            addr: "127.0.0.1:6379".into(),
            why: LostWhy::Silent(Duration::from_secs(30)),
        };
        let text = String::from_utf8(lost.to_reply().to_vec()).unwrap();
        assert!(
            text.starts_with("-UNCERTAIN belay: the connection to 127.0.0.1:6379 was lost"),
            "{text}"
        );
        assert!(text.contains("silent for 30000 ms"), "{text}");
        assert!(!lost.retry_safe());
        let not_sent = BackendError::NotSent {
            addr: "a:1".into(),
            why: NotSentWhy::ConnectionClosed,
        };
        assert!(not_sent.retry_safe());
        assert!(not_sent.to_reply().starts_with(b"-TRYAGAIN "));
    }
}
