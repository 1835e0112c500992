//! `PING`, `ECHO`, `SELECT`, `RESET`, `READONLY`/`READWRITE`: connection
//! commands answered from the session's state.

use belay_resp::Request;
use bytes::Bytes;

use super::{wrong_args, Action, Env};
use crate::reply;
use crate::session::state::SessionState;

pub fn ping(req: &Request, st: &SessionState) -> Action {
    match req.argc() {
        1 => Action::Reply(reply::simple("PONG")),
        2 => Action::Reply(reply::bulk(req.arg(1).unwrap_or_default())),
        _ if !st.authenticated => Action::Reply(reply::error("NOAUTH Authentication required.")),
        _ => wrong_args("ping"),
    }
}

pub fn echo(req: &Request) -> Action {
    match req.arg(1) {
        Some(msg) if req.argc() == 2 => Action::Reply(reply::bulk(msg)),
        _ => wrong_args("echo"),
    }
}

/// `READONLY`/`READWRITE` ask a cluster replica to serve reads; the gateway
/// always sends reads to replicas, so both are accepted as they are.
pub fn read_mode(req: &Request) -> Action {
    if req.argc() != 1 {
        let name = String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_lowercase();
        return wrong_args(&name);
    }
    Action::Reply(reply::ok())
}

pub fn select(req: &Request, st: &mut SessionState, env: &Env) -> Action {
    if req.argc() != 2 {
        return wrong_args("select");
    }
    let Some(db) = std::str::from_utf8(req.arg(1).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return Action::Reply(reply::error("ERR value is not an integer or out of range"));
    };
    if !(0..env.databases as i64).contains(&db) {
        return Action::Reply(reply::error("ERR DB index is out of range"));
    }
    let db = db as u32;
    if db == st.ctx.db {
        return Action::Reply(reply::ok());
    }
    st.ctx.db = db;
    Action::ReplyAfterReplay {
        reply: reply::ok(),
        replay: vec![vec![
            Bytes::from_static(b"SELECT"),
            Bytes::from(db.to_string()),
        ]],
    }
}

/// `RESET`: back to a fresh connection's state, logged out when the
/// gateway requires a password (as Redis does with `requirepass`). The
/// client loop handles it once everything before it is answered, and
/// closes the session's own connections.
pub fn reset(st: &mut SessionState, env: &Env) -> Action {
    *st = SessionState::new(env.cfg.required_client_password().is_none());
    Action::Reply(reply::simple("RESET"))
}
