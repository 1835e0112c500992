//! `PING`, `ECHO`, `SELECT`, `RESET`, `READONLY`/`READWRITE`, `UNSUBSCRIBE`
//! outside subscribed mode: connection
//! commands answered from the session's state.

use belay_resp::Request;
use bytes::Bytes;

use super::{wrong_args, Action, Env};
use crate::reply;
use crate::session::state::SessionState;

/// Silence, while replies are owed, after which a `PING` asks the master.
const QUIET: std::time::Duration = std::time::Duration::from_millis(100);

/// `PING` is answered by the gateway: it must not wait for a master that
/// is paused or failing over (clients ping on every new connection and in
/// health checks). But when the master has owed replies for a while without
/// a word — a long script, or frozen — it is asked on a connection of its
/// own, briefly: a client that pings while a script runs there learns it is
/// `BUSY`, as it would directly.
pub fn ping(req: &Request, st: &SessionState, env: &Env) -> Action {
    let quiet_master = env.topology.read_master.as_ref().filter(|p| {
        st.authenticated
            && req.argc() <= 2
            && !p.is_closed()
            && (!p.is_usable() || p.owes_in_silence(&st.ctx, QUIET))
    });
    if let Some(pool) = quiet_master {
        return Action::PingQuietMaster(pool.clone());
    }
    match req.argc() {
        1 => Action::Reply(reply::simple("PONG")),
        2 => Action::Reply(reply::bulk(req.arg(1).unwrap_or_default())),
        _ if !st.authenticated => Action::Reply(reply::error("NOAUTH Authentication required.")),
        _ => wrong_args("ping"),
    }
}

/// `UNSUBSCRIBE` (and `P…`, `S…`) from a session subscribed to nothing:
/// Redis answers one reply per channel named (one with a nil channel when
/// none is), each saying 0 subscriptions are left — several replies to one
/// command, which a shared connection's one-reply-per-command bookkeeping
/// must never see. Answered here, as Redis would.
pub fn unsubscribe(name: &[u8], req: &Request, st: &SessionState) -> Action {
    let resp3 = st.ctx.resp3;
    let one = |channel: Option<&[u8]>| {
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
        out.extend_from_slice(&reply::bulk(name));
        match channel {
            Some(c) => out.extend_from_slice(&reply::bulk(c)),
            None => out.extend_from_slice(&reply::null(resp3)),
        }
        out.extend_from_slice(&reply::integer(0));
        out
    };
    let mut all = Vec::new();
    if req.argc() == 1 {
        all.extend_from_slice(&one(None));
    }
    for i in 1..req.argc() {
        all.extend_from_slice(&one(req.arg(i)));
    }
    Action::Reply(Bytes::from(all))
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
    if env.topology.shards.is_some() && db != 0 {
        // A Redis Cluster has database 0 only.
        return Action::Reply(reply::error("ERR SELECT is not allowed in cluster mode"));
    }
    if !(0..env.databases as i64).contains(&db) {
        return Action::Reply(reply::error("ERR DB index is out of range"));
    }
    let db = db as u32;
    if st.ctx.user.is_some() {
        // Redis checks the user's right to SELECT (this database), which
        // only a node can tell.
        return Action::SelectAsUser(db);
    }
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
