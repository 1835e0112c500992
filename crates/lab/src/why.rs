//! Why a node could not be asked, in words a person can act on. A
//! [`ClientError`] already names the address, the operation and the node's
//! own words; this puts a short verdict in front (refused, no answer,
//! credentials rejected, ...) so that a status line never just says "did
//! not answer".

use belay_client::ClientError;

/// `"<verdict>: <the error>"`, to follow the node's name:
///
/// - `refuses connections (is it running?): cannot connect to 127.0.0.1:6380: Connection refused (os error 111)`
/// - `does not answer: 127.0.0.1:6380 did not answer ROLE within 1.5s`
/// - `rejected AUTH: 127.0.0.1:6380 replied to AUTH with an error: WRONGPASS invalid username-password pair ...`
/// - `refused ROLE (not permitted): 127.0.0.1:6380 replied to ROLE with an error: NOPERM ...`
pub fn failure(e: &ClientError) -> String {
    format!("{}: {e}", verdict(e))
}

/// The verdict alone.
pub fn verdict(e: &ClientError) -> String {
    match e {
        ClientError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            "refuses connections (is it running?)".into()
        }
        ClientError::Connect { .. } => "cannot be reached".into(),
        ClientError::Tls { .. } => {
            "failed the TLS handshake (plaintext port, or a certificate it or we do not trust?)"
                .into()
        }
        ClientError::Io { .. } => "broke the connection".into(),
        ClientError::Closed { .. } => "closed the connection".into(),
        ClientError::Timeout { .. } => "does not answer".into(),
        ClientError::Reply { op, .. } if op == "AUTH" => "rejected AUTH".into(),
        ClientError::Reply { op, message, .. } if message.starts_with("NOPERM") => {
            format!("refused {op} (not permitted)")
        }
        ClientError::Reply { op, .. } => format!("refused {op}"),
        ClientError::Protocol { .. } | ClientError::Unexpected { .. } => {
            "answered something belay cannot read".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_failure_says_why() {
        let refused = ClientError::Connect {
            addr: "a:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let line = failure(&refused);
        assert!(line.starts_with("refuses connections"), "{line}");
        assert!(line.contains("cannot connect to a:1"), "{line}");

        let timeout = ClientError::Timeout {
            addr: "a:1".into(),
            op: "ROLE".into(),
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(
            failure(&timeout),
            "does not answer: a:1 did not answer ROLE within 1.5s"
        );

        let wrongpass = ClientError::Reply {
            addr: "a:1".into(),
            op: "AUTH".into(),
            message: "WRONGPASS invalid username-password pair or user is disabled.".into(),
        };
        let line = failure(&wrongpass);
        assert!(line.starts_with("rejected AUTH: "), "{line}");
        assert!(line.contains("WRONGPASS invalid"), "{line}");

        let noperm = ClientError::Reply {
            addr: "a:1".into(),
            op: "ROLE".into(),
            message: "NOPERM this user has no permissions to run the 'role' command".into(),
        };
        let line = failure(&noperm);
        assert!(line.starts_with("refused ROLE (not permitted): "), "{line}");
        assert!(line.contains("NOPERM this user"), "{line}");
    }
}
