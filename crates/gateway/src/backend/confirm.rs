//! Durable writes on a connection: the `WAIT` a connection sends after the
//! requests whose writes replicas must confirm, and what its reply says.
//! (The connection holds those requests' replies until it answers; see
//! `conn.rs`.)

use bytes::BytesMut;

/// Durable writes: after a request whose writes must be on replicas before
/// they are acknowledged, the connection sends `WAIT replicas timeout_ms`,
/// one for every request of the same write to the node (a `WAIT` covers
/// every write the connection sent before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Confirm {
    pub replicas: u32,
    pub timeout_ms: u64,
}

/// What the `WAIT` after a request said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// This many replicas acknowledged the writes.
    Acked(u32),
    /// No count: `WAIT` was refused (its error), or the connection was lost
    /// before it answered.
    Unknown(String),
}

impl Confirm {
    /// `WAIT <replicas> <timeout_ms>`, as sent on the wire.
    pub(super) fn encode_wait(self, buf: &mut BytesMut) {
        let replicas = self.replicas.to_string();
        let timeout = self.timeout_ms.to_string();
        buf.extend_from_slice(b"*3\r\n$4\r\nWAIT\r\n");
        for arg in [&replicas, &timeout] {
            buf.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
    }
}

/// What the connection's `WAIT` answered: `:<replicas>`, or an error
/// (`NOPERM` for a user without WAIT, …).
pub(super) fn wait_reply(frame: &[u8]) -> Replication {
    let line = frame.strip_suffix(b"\r\n").unwrap_or(frame);
    match line.split_first() {
        Some((b':', n)) => match std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()) {
            Some(n) => Replication::Acked(n),
            None => Replication::Unknown(format!(
                "WAIT answered {:?}",
                String::from_utf8_lossy(frame)
            )),
        },
        Some((b'-', e)) => {
            Replication::Unknown(format!("WAIT was refused: {}", String::from_utf8_lossy(e)))
        }
        _ => Replication::Unknown(format!(
            "WAIT answered {:?}",
            String::from_utf8_lossy(frame)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_and_what_it_said() {
        let mut buf = BytesMut::new();
        Confirm {
            replicas: 2,
            timeout_ms: 1000,
        }
        .encode_wait(&mut buf);
        assert_eq!(&buf[..], b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$4\r\n1000\r\n");
        assert_eq!(wait_reply(b":2\r\n"), Replication::Acked(2));
        assert!(
            matches!(wait_reply(b"-NOPERM no\r\n"), Replication::Unknown(e) if e.contains("NOPERM"))
        );
        assert!(matches!(wait_reply(b"+OK\r\n"), Replication::Unknown(_)));
    }
}
