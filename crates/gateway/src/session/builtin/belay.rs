//! `BELAY TOPOLOGY` (the gateway's view as JSON, for `belay status` and for
//! people debugging routing), `BELAY WHERE` (which node served this
//! connection's last reply: an application can show it) and `BELAY HELP`.

use belay_resp::Request;
use bytes::{BufMut, BytesMut};

use super::{Action, Env};
use crate::reply;
use crate::session::state::SessionState;

pub fn apply(req: &Request, st: &SessionState, env: &Env) -> Action {
    if req.arg_is(1, "WHERE") && req.argc() == 2 {
        // Handled in turn: every reply before it has come.
        return Action::Reply(match &st.last_served {
            Some((pool, master)) => {
                let role = if *master { "master" } else { "replica" };
                reply::bulk(format!("{} {role}", pool.addr).as_bytes())
            }
            None => reply::null(st.ctx.resp3),
        });
    }
    if req.arg_is(1, "TOPOLOGY") && req.argc() == 2 {
        let json = crate::admin_log::view(env.topology, env.admin_log);
        return Action::Reply(reply::bulk(json.to_string().as_bytes()));
    }
    if req.arg_is(1, "HELP") || req.argc() == 1 {
        let lines = [
            "BELAY TOPOLOGY -- the gateway's view as JSON: confirmed master, why writes are held, replicas with offset, lag and read eligibility",
            "BELAY WHERE -- the node that served this connection's last reply, as \"<host:port> master|replica\" (nil before any)",
            "BELAY HELP -- this text",
        ];
        let mut out = BytesMut::new();
        out.put_slice(format!("*{}\r\n", lines.len()).as_bytes());
        for l in lines {
            out.put_slice(&reply::simple(l));
        }
        return Action::Reply(out.freeze());
    }
    Action::Reply(reply::error(&format!(
        "ERR unknown subcommand '{}'. Try BELAY HELP.",
        String::from_utf8_lossy(req.arg(1).unwrap_or_default())
    )))
}
