//! A Sentinel's view: the master it believes in and its flags, the
//! replicas and other Sentinels it knows, its quorum check.

use belay_client::sentinel::SentinelAuth;
use belay_client::{ClientError, Connection};
use serde::Serialize;

use super::{Target, TIMEOUT};
use crate::why;

/// One Sentinel's view.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SentinelStatus {
    pub name: Option<String>,
    pub addr: String,
    pub pid: Option<u32>,
    /// It let us in.
    pub reachable: bool,
    /// It answered, but refused our credentials (`error` has its words).
    pub refused: bool,
    /// Why it could not be asked, or which question failed.
    pub error: Option<String>,
    /// The master it believes in.
    pub master: Option<String>,
    /// Its flags for that master (`master`, `s_down`, `o_down`, ...).
    pub master_flags: Option<String>,
    /// Replicas it knows that are not down.
    pub replicas_known: Option<usize>,
    /// Other Sentinels it knows that are not down.
    pub sentinels_known: Option<usize>,
    /// `SENTINEL CKQUORUM` answer (the error text when it fails).
    pub quorum: Option<String>,
    pub quorum_ok: bool,
}

/// A Sentinel's view, plus the data node addresses it mentions.
pub(super) async fn ask(
    t: &Target,
    name: &str,
    tls: Option<&belay_client::TlsClient>,
    auth: &SentinelAuth,
) -> (SentinelStatus, Vec<String>) {
    let mut s = SentinelStatus {
        name: t.name.clone(),
        addr: t.addr.clone(),
        pid: t.pid,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut c = match Connection::connect_sentinel_with(&t.addr, tls, auth, TIMEOUT).await {
        Ok((c, _)) => c,
        Err(e) => {
            s.refused = e.is_reply();
            s.error = Some(sentinel_login_failure(&e, auth));
            return (s, seen);
        }
    };
    s.reachable = true;
    match c.sentinel_master(name).await {
        Ok(m) => {
            s.master = m.addr();
            s.master_flags = m.get("flags").map(str::to_string);
            seen.extend(m.addr());
        }
        Err(ClientError::Reply { message, .. }) if message.contains("No such master") => {
            s.error = Some(format!("does not monitor {name:?} ({message})"));
            return (s, seen);
        }
        Err(e) => {
            s.error = Some(why::failure(&e));
            return (s, seen);
        }
    }
    // After a timeout or a broken connection, a late reply could be taken
    // for the next one: only an error reply lets the questions go on.
    match c.sentinel_replicas(name).await {
        Ok(replicas) => {
            s.replicas_known = Some(
                replicas
                    .iter()
                    .filter(|r| !r.has_flag("s_down") && !r.has_flag("disconnected"))
                    .count(),
            );
            seen.extend(replicas.iter().filter_map(|r| r.addr()));
        }
        Err(e) => {
            s.error = Some(why::failure(&e));
            if !e.is_reply() {
                return (s, seen);
            }
        }
    }
    match c.sentinel_sentinels(name).await {
        Ok(others) => {
            s.sentinels_known = Some(
                others
                    .iter()
                    .filter(|o| !o.has_flag("s_down") && !o.has_flag("disconnected"))
                    .count(),
            );
        }
        Err(e) => {
            s.error.get_or_insert_with(|| why::failure(&e));
            if !e.is_reply() {
                return (s, seen);
            }
        }
    }
    match c.sentinel_ckquorum(name).await {
        Ok(msg) => {
            s.quorum = Some(msg);
            s.quorum_ok = true;
        }
        Err(e) => s.quorum = Some(e.to_string()),
    }
    (s, seen)
}

/// Why logging in to a Sentinel failed, with the likely fix when it is
/// about the password.
fn sentinel_login_failure(e: &ClientError, auth: &SentinelAuth) -> String {
    let hint = if e.is_no_password_configured() {
        " (this Sentinel has no password: leave out --sentinel-password)"
    } else if e.is_auth() && matches!(auth, SentinelAuth::NodeCredentials(_)) {
        " (its password is not the nodes': give it with --sentinel-password)"
    } else {
        ""
    };
    format!("{}{hint}", why::failure(e))
}
