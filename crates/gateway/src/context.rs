//! The context a command runs under: which user, which database, which
//! protocol. Every command carries the context it was sent in, and a backend
//! connection is set up for exactly one context, so a command can only ever
//! run as the user, in the database and with the protocol its client had
//! when it sent it — also when it is retried after a failover, whatever the
//! session did since (`SELECT`, `AUTH`, `RESET`, `HELLO`).
//!
//! Sessions with the same context share backend connections: ten thousand
//! RESP3 clients (go-redis and Lettuce say `HELLO 3` on every connection)
//! need a couple of connections per node, like RESP2 clients do.

use std::sync::Arc;

use belay_client::Auth;
use bytes::Bytes;

/// Who, where, and in which protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Context {
    /// The ACL user the client logged in as; `None`: the gateway's own
    /// credentials for the nodes (the client gave the gateway's password).
    pub user: Option<Arc<Auth>>,
    /// `SELECT`ed database.
    pub db: u32,
    /// `HELLO 3`.
    pub resp3: bool,
    /// `db` was selected under an earlier login: Redis keeps a connection's
    /// database across `AUTH`, so a user without `SELECT` may work in it.
    /// A connection for such a context is put in `db` by the gateway's own
    /// user before it logs in as `user`. Set only by a login, never by the
    /// session's `SELECT`, which is checked as the user.
    pub db_from_earlier_login: bool,
}

impl Context {
    /// The context of a client that changed nothing: most clients.
    pub fn is_default(&self) -> bool {
        self.user.is_none() && self.db == 0 && !self.resp3
    }

    /// Whether a fresh connection selects the database before it logs in
    /// as the user, as the gateway's own user (see
    /// [`Context::db_from_earlier_login`]).
    pub fn selects_before_login(&self) -> bool {
        self.user.is_some() && self.db != 0 && self.db_from_earlier_login
    }

    /// `SELECT db`.
    pub fn select_command(&self) -> Vec<Bytes> {
        vec![
            Bytes::from_static(b"SELECT"),
            Bytes::from(self.db.to_string()),
        ]
    }

    /// The commands that set a fresh connection up for this context after
    /// it authenticated (as `user`, see [`Context::auth`]).
    pub fn setup_commands(&self) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        if self.resp3 {
            out.push(vec![Bytes::from_static(b"HELLO"), Bytes::from_static(b"3")]);
        }
        if self.db != 0 && !self.selects_before_login() {
            out.push(self.select_command());
        }
        out
    }

    /// This context once the client has logged in as `user`: the database
    /// stays, as Redis keeps it across `AUTH`.
    pub fn logged_in_as(&self, user: Option<Arc<Auth>>) -> Context {
        let db_from_earlier_login =
            user.is_some() && self.db != 0 && (self.user != user || self.db_from_earlier_login);
        Context {
            user,
            db: self.db,
            resp3: self.resp3,
            db_from_earlier_login,
        }
    }

    /// The credentials a connection for this context logs in with, given
    /// the gateway's own.
    pub fn auth(&self, gateway: Option<&Auth>) -> Option<Auth> {
        match &self.user {
            Some(user) => Some((**user).clone()),
            None => gateway.cloned(),
        }
    }

    /// The user's name as `CLIENT INFO` shows it.
    pub fn user_name(&self) -> &str {
        self.user
            .as_ref()
            .and_then(|u| u.username.as_deref())
            .unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_is_set_up_by_what_differs_from_the_default() {
        assert!(Context::default().is_default());
        assert!(Context::default().setup_commands().is_empty());
        let ctx = Context {
            db: 3,
            resp3: true,
            ..Context::default()
        };
        assert!(!ctx.is_default());
        let setup: Vec<Vec<String>> = ctx
            .setup_commands()
            .iter()
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into())
                    .collect()
            })
            .collect();
        assert_eq!(setup, vec![vec!["HELLO", "3"], vec!["SELECT", "3"]]);
        let alice = Context {
            user: Some(Arc::new(Auth {
                username: Some("alice".into()),
                password: "pw".into(),
            })),
            ..Context::default()
        };
        assert_eq!(alice.user_name(), "alice");
        let gw = Auth::password("gw");
        assert_eq!(
            alice.auth(Some(&gw)).unwrap().username.as_deref(),
            Some("alice")
        );
        assert_eq!(Context::default().auth(Some(&gw)), Some(gw));
        assert_ne!(alice, Context::default());
    }
}
