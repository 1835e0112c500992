//! What a reply, or the lack of one, means for a command: pass it on, send
//! it again, or tell the client it may or may not have run. The one rule:
//! nothing that may have run is ever sent again.
//!
//! A refusal (`READONLY`, `NOREPLICAS`, `LOADING`, `MASTERDOWN`) means "not
//! run" only when it is the node's own refusal of the command itself: a
//! script's or function's reply is whatever the script returned, so a
//! client could make one look like a refusal and have the gateway run its
//! script again and again. Those, and anything inside a transaction, are
//! passed on as they are.

use crate::commands::Class;
use crate::error::BackendError;

use super::job::Job;

/// What to do with a command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReply {
    /// Pass it on.
    Deliver,
    /// The node refused to run it (did not run): hold it and send it again
    /// once discovery has looked at the topology again.
    Refused,
    /// A replica does not have the script (`NOSCRIPT`): run it on the master.
    ScriptOnMaster,
    /// A replica is running a script (`BUSY`): mark it, read elsewhere.
    ReplicaBusy,
    /// A cluster node moving the key's slot out (`ASK slot host:port`): not
    /// run; send it once to the node named, after `ASKING`.
    Ask,
}

/// The node refuses the command itself, before running it. A cluster
/// node's `MOVED` and `ASK` (the slot is elsewhere, or moving),
/// `CLUSTERDOWN` and `TRYAGAIN` (a multi-key command during a resharding)
/// are refusals too: the command waits for discovery to read the slot map
/// again and goes where it says.
pub(super) fn is_refusal(frame: &[u8]) -> bool {
    [
        &b"-READONLY"[..],
        b"-NOREPLICAS",
        b"-LOADING",
        b"-MASTERDOWN",
        b"-MOVED",
        b"-ASK ",
        b"-CLUSTERDOWN",
        b"-TRYAGAIN",
    ]
    .iter()
    .any(|p| frame.starts_with(p))
}

/// Judges the reply `frame` to `job`, which went to the master or not.
pub fn on_reply(job: &Job, frame: &[u8], from_master: bool) -> OnReply {
    if frame.first() != Some(&b'-') || job.in_transaction() {
        return OnReply::Deliver;
    }
    if job.routing.scripted {
        // NOSCRIPT is the node's own: the script was not found, nothing
        // ran. Only read-only scripts go to replicas, so running it on the
        // master cannot run a write twice.
        if !from_master && !job.force_master() && frame.starts_with(b"-NOSCRIPT") {
            return OnReply::ScriptOnMaster;
        }
        return OnReply::Deliver;
    }
    if frame.starts_with(b"-ASK ") {
        // Followed on a connection shared with other sessions: not for a
        // command that must stay on the session's own (a blocking one
        // would block the importing master's shared connection). Those
        // wait for the slot's move to end, like any refusal.
        if job.conn == super::job::Conn::Shared && job.class() != Class::Blocking {
            return OnReply::Ask;
        }
        return OnReply::Refused;
    }
    if is_refusal(frame) {
        return OnReply::Refused;
    }
    if !from_master && job.class().is_read() && frame.starts_with(b"-BUSY") {
        return OnReply::ReplicaBusy;
    }
    OnReply::Deliver
}

/// Where an `ASK` reply sends the command: `host:port`.
pub fn ask_target(frame: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(frame).ok()?.trim_end();
    let mut words = text.strip_prefix("-ASK ")?.split(' ');
    let (_slot, addr) = (words.next()?, words.next()?);
    Some(addr.to_string())
}

/// What to do with a command that got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Never sent: send it again when there is somewhere to send it.
    Resend,
    /// A read was lost: it has no effect, so it is read again elsewhere.
    ReadAgain,
    /// The client gets the error: it may have run (`UNCERTAIN`), or it
    /// belonged to a transaction on a connection that is gone.
    Fail,
}

pub fn on_failure(job: &Job, err: &BackendError) -> OnFailure {
    if job.in_transaction() {
        return OnFailure::Fail;
    }
    if err.retry_safe() {
        return OnFailure::Resend;
    }
    if matches!(job.class(), Class::Read | Class::CursorRead) && job.attempts() < 2 {
        return OnFailure::ReadAgain;
    }
    OnFailure::Fail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Routing;
    use crate::context::Context;
    use crate::error::{LostWhy, NotSentWhy};
    use crate::session::job::Conn;
    use belay_resp::Request;

    fn job(class: Class, scripted: bool, conn: Conn) -> Job {
        Job::new(
            Request::from_args(["X"]),
            Routing { class, scripted },
            conn,
            Context::default(),
        )
    }

    #[test]
    fn a_scripts_refusal_is_the_scripts_own_words() {
        let script = job(Class::Write, true, Conn::Shared);
        assert_eq!(
            on_reply(&script, b"-READONLY x\r\n", true),
            OnReply::Deliver
        );
        assert_eq!(
            on_reply(&script, b"-NOREPLICAS x\r\n", true),
            OnReply::Deliver
        );
        let ro_script = job(Class::Read, true, Conn::Shared);
        assert_eq!(
            on_reply(&ro_script, b"-BUSY x\r\n", false),
            OnReply::Deliver
        );
        assert_eq!(
            on_reply(&ro_script, b"-NOSCRIPT No matching script\r\n", false),
            OnReply::ScriptOnMaster
        );
        let write = job(Class::Write, false, Conn::Shared);
        assert_eq!(
            on_reply(&write, b"-READONLY You can't write\r\n", true),
            OnReply::Refused
        );
        assert_eq!(on_reply(&write, b"-LOADING\r\n", true), OnReply::Refused);
        assert_eq!(
            on_reply(&write, b"-ERR wrong type\r\n", true),
            OnReply::Deliver
        );
        assert_eq!(on_reply(&write, b"+OK\r\n", true), OnReply::Deliver);
        let tx = job(Class::Write, false, Conn::Transaction);
        assert_eq!(on_reply(&tx, b"-READONLY x\r\n", true), OnReply::Deliver);
        let read = job(Class::Read, false, Conn::Shared);
        assert_eq!(
            on_reply(&read, b"-BUSY Redis is busy\r\n", false),
            OnReply::ReplicaBusy
        );
        assert_eq!(
            on_reply(&read, b"-BUSY Redis is busy\r\n", true),
            OnReply::Deliver
        );
    }

    #[test]
    fn asks_and_cluster_refusals() {
        let write = job(Class::Write, false, Conn::Shared);
        let ask = b"-ASK 3999 127.0.0.1:7002\r\n";
        assert_eq!(on_reply(&write, ask, true), OnReply::Ask);
        assert_eq!(ask_target(ask).as_deref(), Some("127.0.0.1:7002"));
        // Not followed on a shared connection: waits for the move to end.
        let blocking = job(Class::Blocking, false, Conn::Shared);
        assert_eq!(on_reply(&blocking, ask, true), OnReply::Refused);
        let own = job(Class::Write, false, Conn::Pinned);
        assert_eq!(on_reply(&own, ask, true), OnReply::Refused);
        for refusal in [
            "-MOVED 3999 127.0.0.1:7002",
            "-CLUSTERDOWN The cluster is down",
            "-TRYAGAIN x",
        ] {
            let frame = format!("{refusal}\r\n");
            assert_eq!(on_reply(&write, frame.as_bytes(), true), OnReply::Refused);
        }
        // A script's words are its own, even when they look like a redirect.
        let script = job(Class::Write, true, Conn::Shared);
        assert_eq!(on_reply(&script, ask, true), OnReply::Deliver);
    }

    #[test]
    fn only_what_never_left_or_has_no_effect_is_sent_again() {
        let not_sent = BackendError::NotSent {
            addr: "a:1".into(),
            why: NotSentWhy::ConnectionClosed,
        };
        let lost = BackendError::Lost {
            addr: "a:1".into(),
            why: LostWhy::ConnectionClosed,
        };
        let write = job(Class::Write, false, Conn::Shared);
        assert_eq!(on_failure(&write, &not_sent), OnFailure::Resend);
        assert_eq!(on_failure(&write, &lost), OnFailure::Fail);
        let mut read = job(Class::Read, false, Conn::Shared);
        assert_eq!(on_failure(&read, &lost), OnFailure::ReadAgain);
        read.retry_mut().attempts = 2;
        assert_eq!(on_failure(&read, &lost), OnFailure::Fail);
        let tx = job(Class::Write, false, Conn::Transaction);
        assert_eq!(on_failure(&tx, &not_sent), OnFailure::Fail);
    }
}
