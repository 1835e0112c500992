//! How a connection to a node is opened and set up for a context: the
//! gateway's own login and `ROLE` check, then the context's user, protocol
//! and database.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use belay_client::{Auth, ClientError, Connection, TlsClient};
use bytes::Bytes;

use super::health::NodeHealth;
use super::watchdog::Silence;
use crate::context::Context;

/// The gateway's own credentials for the nodes, one value shared by every
/// pool: a reload that changes the password (see `reload`) is used by the
/// next connection any pool opens; open connections stay logged in.
#[derive(Clone, Default)]
pub struct GatewayAuth(Arc<Credentials>);

/// The gateway's login and its TLS client (with the certificate it shows
/// the nodes): both change on reload, and every pool's next connection
/// uses the new ones.
#[derive(Default)]
struct Credentials {
    auth: arc_swap::ArcSwapOption<Auth>,
    tls: arc_swap::ArcSwapOption<TlsClient>,
}

impl GatewayAuth {
    pub fn new(auth: Option<Auth>) -> GatewayAuth {
        GatewayAuth::with_tls(auth, None)
    }

    pub fn with_tls(auth: Option<Auth>, tls: Option<TlsClient>) -> GatewayAuth {
        GatewayAuth(Arc::new(Credentials {
            auth: arc_swap::ArcSwapOption::from(auth.map(Arc::new)),
            tls: arc_swap::ArcSwapOption::from(tls.map(Arc::new)),
        }))
    }

    pub fn set(&self, auth: Option<Auth>) {
        self.0.auth.store(auth.map(Arc::new));
    }

    pub fn set_tls(&self, tls: Option<TlsClient>) {
        self.0.tls.store(tls.map(Arc::new));
    }

    pub fn get(&self) -> Option<Arc<Auth>> {
        self.0.auth.load_full()
    }

    /// TLS to the node, when it speaks it.
    pub fn tls(&self) -> Option<Arc<TlsClient>> {
        self.0.tls.load_full()
    }
}

impl From<Option<Auth>> for GatewayAuth {
    fn from(auth: Option<Auth>) -> GatewayAuth {
        GatewayAuth::new(auth)
    }
}

impl std::fmt::Debug for GatewayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Auth`'s own Debug redacts the password.
        self.get().fmt(f)
    }
}

/// How to open connections to one node: where, with which of the gateway's
/// own credentials, and what to check first.
#[derive(Clone, Debug)]
pub struct ConnectSpec {
    pub addr: String,
    /// The gateway's own credentials for the node.
    pub gateway_auth: GatewayAuth,
    /// Refuse the connection unless the node answers `ROLE` as master
    /// (asked as the gateway's own user, whatever context the connection is
    /// for): a write connection is never opened to a demoted master.
    pub require_master: bool,
    pub connect_timeout: Duration,
    /// When silence while replies are owed makes the node unusable, and
    /// when the commands in flight are given up on. `None` for connections
    /// that may block (BLPOP, WAIT).
    pub silence: Option<Silence>,
    /// Shared with the node's pool: what the connections notice.
    pub health: Arc<NodeHealth>,
    /// A counter this connection's outstanding commands are also added to:
    /// a pool's shared connections report their load in one place, which
    /// routing reads once per command.
    pub load: Option<Arc<AtomicUsize>>,
    /// A Redis Cluster replica: each connection says `READONLY`, or the
    /// replica answers reads of its own slots with `MOVED` to its master.
    pub cluster_replica: bool,
}

/// Connects and sets a connection up for `ctx`: the gateway's own login
/// and `ROLE` check first when the spec asks for one, then the context's
/// user, protocol and database (selected before the user's login, as the
/// gateway's user, when the client selected it under an earlier login),
/// then `extra` (e.g. `CLIENT SETNAME`).
/// Every step must succeed, or the connection is not used.
pub(super) async fn set_up(
    spec: &ConnectSpec,
    ctx: &Context,
    extra: &[Vec<Bytes>],
) -> Result<Connection, ClientError> {
    let mut conn = Connection::connect_with(
        &spec.addr,
        spec.gateway_auth.tls().as_deref(),
        None,
        spec.connect_timeout,
    )
    .await?;
    let select_first = ctx.selects_before_login();
    let as_gateway = ctx.user.is_none() || spec.require_master || select_first;
    if as_gateway {
        if let Some(auth) = spec.gateway_auth.get() {
            conn.auth(&auth).await?;
        }
    }
    if spec.require_master {
        let role = match conn.role().await {
            Ok(role) => Some(role),
            // Busy with a script: Redis refuses ROLE, and REPLICAOF too, so
            // the node discovery confirmed as master is still one; it
            // answers BUSY to what it cannot run now, as it would directly.
            Err(e) if e.is_busy() => None,
            Err(e) => return Err(e),
        };
        if let Some(role) = role.filter(|r| !r.is_master()) {
            return Err(ClientError::Unexpected {
                addr: spec.addr.clone(),
                op: "ROLE".into(),
                detail: format!("expected a master, the node is a {}", role.name()),
            });
        }
    }
    if select_first {
        conn.call_ok(&ctx.select_command()).await?;
    }
    if let Some(user) = &ctx.user {
        conn.auth(user).await?;
    }
    for cmd in ctx.setup_commands().iter().chain(extra) {
        conn.call_ok(cmd).await?;
    }
    if spec.cluster_replica {
        conn.call_ok(&[Bytes::from_static(b"READONLY")]).await?;
    }
    Ok(conn)
}
