//! The commands the gateway answers or acts on itself, one small unit per
//! family. Each takes the request and the session's state and returns an
//! [`Action`]: a reply, or what the client loop must do (forward it, check
//! credentials against a node, run it on every node…). None does I/O.
//!
//! Connection set-up commands — `HELLO`, `AUTH` as the gateway's user,
//! `CLIENT SETINFO/SETNAME/GETNAME/ID/INFO`, `SELECT`, `PING`, `ECHO`,
//! `READONLY`/`READWRITE` — are answered from the session's state and never
//! wait for the master: every modern client sends some of them on each new
//! connection, and a failover must not stall connecting clients' reads.
//! (An ACL user's `SELECT` is checked as that user on a node first; a
//! `PING` while the master owes replies in silence asks it, briefly, so
//! that a master busy with a script says `BUSY` as Redis would.)

mod admin;
mod auth;
mod belay;
mod client;
mod connection;
mod transaction;

use std::net::SocketAddr;

use belay_resp::Request;
use bytes::Bytes;

use super::job::{Conn, Rewrite};
use super::state::SessionState;
use crate::commands::{lower, Routing};
use crate::config::GatewayConfig;
use crate::topology::Topology;

pub use admin::{group_admin_reply, kill_reply, mask_config_secrets, Fanout};
pub use auth::{apply_hello, Login};

/// A command the gateway handles itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Auth,
    Hello,
    Select,
    Quit,
    Reset,
    Ping,
    Echo,
    /// `READONLY`/`READWRITE`: the gateway always splits reads.
    ReadMode,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Subscribe,
    /// `UNSUBSCRIBE`/`PUNSUBSCRIBE`/`SUNSUBSCRIBE` outside subscribed mode.
    Unsubscribe,
    ClientSetName,
    ClientGetName,
    ClientId,
    ClientInfo,
    ClientSetInfo,
    Belay,
    /// `WAIT`/`WAITAOF`.
    Wait,
    /// `SCRIPT LOAD`/`FLUSH`: the master and every replica.
    ScriptCache,
    /// `SCRIPT KILL`/`FUNCTION KILL`: where the script runs.
    Kill,
    /// `CONFIG SET/RESETSTAT`, `ACL SETUSER/DELUSER`: every data node.
    GroupAdmin,
    /// `CONFIG GET`: the nodes' secrets masked.
    ConfigGet,
}

/// `req` (whose lowercase name is `name`) as a [`Builtin`], if it is one.
pub fn builtin(name: &[u8], req: &Request) -> Option<Builtin> {
    let mut buf = [0u8; 16];
    let sub = req.arg(1).map(|s| lower(s, &mut buf));
    Some(match name {
        b"auth" => Builtin::Auth,
        b"hello" => Builtin::Hello,
        b"select" => Builtin::Select,
        b"quit" => Builtin::Quit,
        b"reset" => Builtin::Reset,
        b"ping" => Builtin::Ping,
        b"echo" => Builtin::Echo,
        b"readonly" | b"readwrite" => Builtin::ReadMode,
        b"multi" => Builtin::Multi,
        b"exec" => Builtin::Exec,
        b"discard" => Builtin::Discard,
        b"watch" => Builtin::Watch,
        b"unwatch" => Builtin::Unwatch,
        b"subscribe" | b"psubscribe" | b"ssubscribe" => Builtin::Subscribe,
        b"unsubscribe" | b"punsubscribe" | b"sunsubscribe" => Builtin::Unsubscribe,
        b"belay" => Builtin::Belay,
        b"wait" | b"waitaof" => Builtin::Wait,
        b"client" => match sub? {
            b"setname" => Builtin::ClientSetName,
            b"getname" => Builtin::ClientGetName,
            b"id" => Builtin::ClientId,
            b"info" => Builtin::ClientInfo,
            b"setinfo" => Builtin::ClientSetInfo,
            _ => return None,
        },
        b"script" => match sub? {
            b"load" | b"flush" => Builtin::ScriptCache,
            b"kill" => Builtin::Kill,
            _ => return None,
        },
        b"function" => match sub? {
            b"kill" => Builtin::Kill,
            _ => return None,
        },
        b"config" => match sub? {
            b"set" | b"resetstat" => Builtin::GroupAdmin,
            b"get" => Builtin::ConfigGet,
            _ => return None,
        },
        b"acl" => match sub? {
            b"setuser" | b"deluser" => Builtin::GroupAdmin,
            _ => return None,
        },
        _ => return None,
    })
}

impl Builtin {
    /// Allowed before `AUTH`.
    pub fn before_auth(self) -> bool {
        matches!(
            self,
            Builtin::Auth | Builtin::Hello | Builtin::Quit | Builtin::Reset
        )
    }

    /// Allowed inside MULTI (Redis queues everything else; these act on
    /// the transaction, or are refused there).
    fn in_multi(self) -> bool {
        matches!(
            self,
            Builtin::Exec
                | Builtin::Discard
                | Builtin::Multi
                | Builtin::Watch
                | Builtin::Quit
                | Builtin::Reset
        )
    }
}

/// What the client loop must do for a builtin.
pub enum Action {
    /// Write this reply.
    Reply(Bytes),
    /// Write this reply, after sending `replay` on the session's own
    /// connection (a state change it must follow, in order).
    ReplyAfterReplay {
        reply: Bytes,
        replay: Vec<Vec<Bytes>>,
    },
    /// Forward it like any command, with this routing.
    Forward {
        routing: Routing,
        conn: Conn,
        rewrite: Rewrite,
    },
    /// Forward it, and also send it to every replica (script cache).
    ForwardToAll { routing: Routing },
    /// `PING` while the master owes replies and says nothing: asked on a
    /// connection of its own.
    PingQuietMaster(std::sync::Arc<crate::backend::NodePool>),
    /// `SELECT` from an ACL user: checked as that user on a data node,
    /// then applied like the gateway's user's.
    SelectAsUser(u32),
    /// Check the credentials against a data node, then log in.
    Login(Login),
    /// Close once everything before it is written.
    Quit,
    /// Turn into a subscription pipe.
    Subscribe,
    /// `WAIT` on the session's own master connection.
    Wait,
    /// `SCRIPT KILL`/`FUNCTION KILL` on every data node.
    Kill,
    /// Run on every data node, master first, once everything before it is
    /// answered.
    GroupAdmin,
}

/// What a builtin may know besides the session's state.
pub struct Env<'a> {
    pub cfg: &'a GatewayConfig,
    pub admin_log: &'a crate::admin_log::AdminLog,
    pub databases: u32,
    pub topology: &'a Topology,
    pub id: u64,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

/// Handles `b` for the session; `name` is the lowercase command name.
pub fn apply(b: Builtin, name: &[u8], req: &Request, st: &mut SessionState, env: &Env) -> Action {
    if st.in_multi && !b.in_multi() {
        return transaction::inside_multi(b, name, req, st);
    }
    match b {
        Builtin::Auth => auth::auth(req, st, env),
        Builtin::Hello => auth::hello(req, st, env),
        Builtin::Select => connection::select(req, st, env),
        Builtin::Quit => Action::Quit,
        Builtin::Reset => connection::reset(st, env),
        Builtin::Ping => connection::ping(req, st, env),
        Builtin::Echo => connection::echo(req),
        Builtin::ReadMode => connection::read_mode(req),
        Builtin::Multi | Builtin::Exec | Builtin::Discard | Builtin::Watch | Builtin::Unwatch => {
            transaction::apply(b, name, req, st)
        }
        Builtin::Subscribe => Action::Subscribe,
        Builtin::Unsubscribe => connection::unsubscribe(name, req, st),
        Builtin::ClientSetName => client::setname(req, st),
        Builtin::ClientGetName => client::getname(st),
        Builtin::ClientId => client::id(req, env),
        Builtin::ClientInfo => client::info(req, st, env),
        Builtin::ClientSetInfo => client::setinfo(req, st),
        Builtin::Belay => belay::apply(req, st, env),
        Builtin::Wait => Action::Wait,
        Builtin::ScriptCache => Action::ForwardToAll {
            routing: Routing::plain(crate::commands::Class::Write),
        },
        Builtin::Kill => Action::Kill,
        Builtin::GroupAdmin => Action::GroupAdmin,
        Builtin::ConfigGet => Action::Forward {
            routing: Routing::plain(crate::commands::Class::Write),
            conn: Conn::Shared,
            rewrite: Rewrite::MaskSecrets,
        },
    }
}

/// Redis's reply to a command with the wrong number of arguments.
fn wrong_args(name: &str) -> Action {
    Action::Reply(crate::reply::error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<Builtin> {
        let req = Request::from_args(s.split(' '));
        let mut buf = [0u8; 16];
        let name = lower(req.name().unwrap(), &mut buf).to_vec();
        builtin(&name, &req)
    }

    #[test]
    fn recognizes_the_gateways_own_commands() {
        assert_eq!(b("HELLO 3"), Some(Builtin::Hello));
        assert_eq!(b("client setinfo lib-name x"), Some(Builtin::ClientSetInfo));
        assert_eq!(b("CLIENT LIST"), None);
        assert_eq!(b("CLIENT"), None);
        assert_eq!(b("SCRIPT KILL"), Some(Builtin::Kill));
        assert_eq!(b("FUNCTION KILL"), Some(Builtin::Kill));
        assert_eq!(b("FUNCTION LIST"), None);
        assert_eq!(b("SCRIPT EXISTS x"), None);
        assert_eq!(b("CONFIG SET a b"), Some(Builtin::GroupAdmin));
        assert_eq!(b("ACL SETUSER bob"), Some(Builtin::GroupAdmin));
        assert_eq!(b("ACL WHOAMI"), None);
        assert_eq!(b("GET k"), None);
        assert_eq!(b("PUNSUBSCRIBE a"), Some(Builtin::Unsubscribe));
    }
}
