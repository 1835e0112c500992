//! `BELAY TOPOLOGY` (the gateway's view as JSON, for `belay status` and for
//! people debugging routing) and `BELAY HELP`.

use belay_resp::Request;
use bytes::{BufMut, BytesMut};

use super::{Action, Env};
use crate::reply;

pub fn apply(req: &Request, env: &Env) -> Action {
    if req.arg_is(1, "TOPOLOGY") && req.argc() == 2 {
        let json = crate::topology::to_json(env.topology);
        return Action::Reply(reply::bulk(json.as_bytes()));
    }
    if req.arg_is(1, "HELP") || req.argc() == 1 {
        let lines = [
            "BELAY TOPOLOGY -- the gateway's view as JSON: confirmed master, why writes are held, replicas with offset, lag and read eligibility",
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
