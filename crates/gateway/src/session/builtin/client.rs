//! The `CLIENT` subcommands the gateway answers from the session's state:
//! `SETNAME`, `GETNAME`, `ID`, `INFO`, `SETINFO`. The name is replayed on
//! the session's own connections; shared connections carry no client's name.

use belay_resp::Request;
use bytes::Bytes;

use super::{wrong_args, Action, Env};
use crate::reply;
use crate::session::state::SessionState;

/// Redis's rule for client names and library names: printable, no spaces.
pub fn valid_name(name: &[u8]) -> Result<(), Bytes> {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        return Err(reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

pub fn setname(req: &Request, st: &mut SessionState) -> Action {
    let Some(name) = req.arg_bytes(2).filter(|_| req.argc() == 3) else {
        return wrong_args("client|setname");
    };
    if let Err(e) = valid_name(&name) {
        return Action::Reply(e);
    }
    st.name = Some(name.clone()).filter(|n| !n.is_empty());
    Action::ReplyAfterReplay {
        reply: reply::ok(),
        replay: vec![vec![
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"SETNAME"),
            name,
        ]],
    }
}

pub fn getname(st: &SessionState) -> Action {
    Action::Reply(match &st.name {
        Some(n) => reply::bulk(n),
        None => reply::null(st.ctx.resp3),
    })
}

pub fn id(req: &Request, env: &Env) -> Action {
    if req.argc() != 2 {
        return wrong_args("client|id");
    }
    Action::Reply(reply::integer(env.id as i64))
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER <value>`: kept for `CLIENT INFO`.
pub fn setinfo(req: &Request, st: &mut SessionState) -> Action {
    let (Some(attr), Some(value)) = (req.arg(2), req.arg_bytes(3)) else {
        return wrong_args("client|setinfo");
    };
    if req.argc() != 4 {
        return wrong_args("client|setinfo");
    }
    if valid_name(&value).is_err() {
        return Action::Reply(reply::error(&format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(attr).to_ascii_lowercase()
        )));
    }
    let lib = st.lib.get_or_insert_with(Default::default);
    if attr.eq_ignore_ascii_case(b"lib-name") {
        lib.name = Some(value);
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        lib.version = Some(value);
    } else {
        return Action::Reply(reply::error(&format!(
            "ERR Unrecognized option '{}'",
            String::from_utf8_lossy(attr)
        )));
    }
    Action::Reply(reply::ok())
}

/// `CLIENT INFO`: this client as the gateway sees it, in Redis's format.
pub fn info(req: &Request, st: &SessionState, env: &Env) -> Action {
    if req.argc() != 2 {
        return wrong_args("client|info");
    }
    let text = |b: &Option<Bytes>| {
        b.as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
            .into_owned()
    };
    let flags = if st.in_multi { "x" } else { "N" };
    let line = format!(
        "id={} addr={} laddr={} name={} db={} multi={} user={} resp={} lib-name={} lib-ver={} flags={}\n",
        env.id,
        env.peer.map(|a| a.to_string()).unwrap_or_default(),
        env.local.map(|a| a.to_string()).unwrap_or_default(),
        text(&st.name),
        st.ctx.db,
        if st.in_multi { 0 } else { -1 },
        st.ctx.user_name(),
        if st.ctx.resp3 { 3 } else { 2 },
        text(&st.lib.as_ref().and_then(|l| l.name.clone())),
        text(&st.lib.as_ref().and_then(|l| l.version.clone())),
        flags,
    );
    Action::Reply(reply::verbatim_or_bulk(st.ctx.resp3, line.as_bytes()))
}
