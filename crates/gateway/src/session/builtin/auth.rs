//! `AUTH` and `HELLO`. The gateway's own user (the client password) is
//! checked here; any other ACL user is checked against a data node by the
//! client loop ([`Login`]), with nothing beyond what `AUTH` itself needs.

use belay_resp::Request;
use bytes::Bytes;

use super::{client, wrong_args, Action, Env};
use crate::config::GatewayConfig;
use crate::reply;
use crate::session::state::SessionState;

/// Credentials of an ACL user to check against a node, and the rest of the
/// `HELLO` that carried them, if one did.
pub struct Login {
    pub user: Bytes,
    pub password: Bytes,
    pub hello: Option<HelloArgs>,
}

/// What a `HELLO` asks for besides credentials.
#[derive(Default)]
pub struct HelloArgs {
    pub resp3: Option<bool>,
    pub name: Option<Bytes>,
}

/// Checks `password` against the gateway's client password.
pub fn check_gateway_password(cfg: &GatewayConfig, password: &[u8]) -> Result<(), Bytes> {
    match cfg.required_client_password() {
        None => Err(reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        )),
        Some(p) if constant_time_eq(p.as_bytes(), password) => Ok(()),
        Some(_) => Err(wrong_password()),
    }
}

pub fn wrong_password() -> Bytes {
    reply::error("WRONGPASS invalid username-password pair or user is disabled.")
}

/// Logs in as the gateway's own user: the client's commands run with the
/// gateway's credentials for the nodes.
fn log_in_as_gateway(st: &mut SessionState) {
    st.authenticated = true;
    st.ctx = st.ctx.logged_in_as(None);
}

pub fn auth(req: &Request, st: &mut SessionState, env: &Env) -> Action {
    let (user, password) = match req.argc() {
        2 => (None, req.arg_bytes(1).unwrap_or_default()),
        3 => (req.arg_bytes(1), req.arg_bytes(2).unwrap_or_default()),
        _ => return wrong_args("auth"),
    };
    match user {
        Some(user) if user.as_ref() != b"default" => Action::Login(Login {
            user,
            password,
            hello: None,
        }),
        _ => match check_gateway_password(env.cfg, &password) {
            Ok(()) => {
                log_in_as_gateway(st);
                Action::Reply(reply::ok())
            }
            Err(e) => Action::Reply(e),
        },
    }
}

pub fn hello(req: &Request, st: &mut SessionState, env: &Env) -> Action {
    let mut args = HelloArgs::default();
    let mut i = 1;
    if let Some(v) = req.arg(1) {
        match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(2) => args.resp3 = Some(false),
            Some(3) => args.resp3 = Some(true),
            Some(_) => return Action::Reply(reply::error("NOPROTO unsupported protocol version")),
            None => {
                return Action::Reply(reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
        }
        i = 2;
    }
    let mut login = None;
    while i < req.argc() {
        if req.arg_is(i, "AUTH") && i + 2 < req.argc() {
            login = Some((
                req.arg_bytes(i + 1).unwrap_or_default(),
                req.arg_bytes(i + 2).unwrap_or_default(),
            ));
            i += 3;
        } else if req.arg_is(i, "SETNAME") && i + 1 < req.argc() {
            let name = req.arg_bytes(i + 1).unwrap_or_default();
            if let Err(e) = client::valid_name(&name) {
                return Action::Reply(e);
            }
            args.name = Some(name);
            i += 2;
        } else {
            return Action::Reply(reply::error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(req.arg(i).unwrap_or_default())
            )));
        }
    }
    match login {
        Some((user, password)) if user.as_ref() != b"default" => {
            return Action::Login(Login {
                user,
                password,
                hello: Some(args),
            })
        }
        Some((_, password)) => {
            if let Err(e) = check_gateway_password(env.cfg, &password) {
                return Action::Reply(e);
            }
            log_in_as_gateway(st);
        }
        None => {}
    }
    if !st.authenticated {
        return Action::Reply(reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    apply_hello(args, st, env)
}

/// The rest of a `HELLO` once the client is logged in: protocol and name,
/// replayed on the session's own connection, and the `HELLO` reply.
pub fn apply_hello(args: HelloArgs, st: &mut SessionState, env: &Env) -> Action {
    let mut replay = Vec::new();
    if let Some(resp3) = args.resp3.filter(|r| *r != st.ctx.resp3) {
        st.ctx.resp3 = resp3;
        let proto = if resp3 { "3" } else { "2" };
        replay.push(vec![
            Bytes::from_static(b"HELLO"),
            Bytes::from_static(proto.as_bytes()),
        ]);
    }
    if let Some(name) = args.name {
        replay.push(vec![
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"SETNAME"),
            name.clone(),
        ]);
        st.name = Some(name).filter(|n| !n.is_empty());
    }
    let reply = reply::hello(st.ctx.resp3, &env.topology.server, env.id);
    if replay.is_empty() {
        Action::Reply(reply)
    } else {
        Action::ReplyAfterReplay { reply, replay }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
