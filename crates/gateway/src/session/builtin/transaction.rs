//! `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`: a transaction runs on the
//! session's own master connection, where Redis keeps it. A command the
//! gateway refuses inside MULTI makes EXEC fail with `EXECABORT`, as a
//! command Redis itself rejects while queueing does.

use belay_resp::Request;
use bytes::Bytes;

use super::{Action, Builtin};
use crate::commands::{Class, Routing};
use crate::reply;
use crate::session::job::{Conn, Rewrite};
use crate::session::state::{SessionState, TxBroken};

fn forward() -> Action {
    Action::Forward {
        routing: Routing::plain(Class::Write),
        conn: Conn::Transaction,
        rewrite: Rewrite::None,
    }
}

pub fn apply(b: Builtin, name: &[u8], _req: &Request, st: &mut SessionState) -> Action {
    match b {
        Builtin::Multi => {
            if st.in_multi {
                return Action::Reply(reply::error("ERR MULTI calls can not be nested"));
            }
            st.in_multi = true;
            forward()
        }
        Builtin::Exec | Builtin::Discard => {
            let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
            if !st.in_multi {
                return Action::Reply(reply::error(&format!("ERR {upper} without MULTI")));
            }
            st.in_multi = false;
            st.watching = false;
            st.tx_sent = false;
            match st.tx_broken.take() {
                None => forward(),
                Some(TxBroken::ConnectionLost) => {
                    st.own = None;
                    Action::Reply(if b == Builtin::Exec {
                        reply::error("EXECABORT Transaction discarded because the connection to the master was lost")
                    } else {
                        reply::ok()
                    })
                }
                Some(TxBroken::CommandRefused) if b == Builtin::Exec => Action::ReplyAfterReplay {
                    reply: reply::error(
                        "EXECABORT Transaction discarded because of previous errors.",
                    ),
                    replay: vec![vec![Bytes::from_static(b"DISCARD")]],
                },
                Some(TxBroken::CommandRefused) => forward(),
            }
        }
        Builtin::Watch => {
            if st.in_multi {
                return Action::Reply(reply::error("ERR WATCH inside MULTI is not allowed"));
            }
            st.watching = true;
            forward()
        }
        Builtin::Unwatch => {
            st.watching = false;
            st.tx_sent = false;
            if st.own.is_some() {
                forward()
            } else {
                Action::Reply(reply::ok())
            }
        }
        _ => unreachable!("not a transaction command"),
    }
}

/// A builtin sent inside MULTI. Redis would queue it; the harmless ones are
/// queued on the node, the ones that change the session (SELECT, AUTH,
/// SUBSCRIBE, …) or act outside the transaction are refused, and EXEC then
/// fails as Redis fails a transaction with a rejected command.
pub fn inside_multi(b: Builtin, name: &[u8], _req: &Request, st: &mut SessionState) -> Action {
    if matches!(b, Builtin::Ping | Builtin::Echo | Builtin::ScriptCache) {
        return forward();
    }
    st.tx_broken.get_or_insert(TxBroken::CommandRefused);
    Action::Reply(refused_in_multi(name))
}

/// The error for a command the gateway refuses inside MULTI.
pub fn refused_in_multi(name: &[u8]) -> Bytes {
    reply::error(&format!(
        "ERR belay: '{}' inside MULTI is not supported through the gateway; the transaction will be discarded at EXEC",
        String::from_utf8_lossy(name).to_ascii_uppercase()
    ))
}
