//! `belay status`: what each node and Sentinel says right now, and the
//! disagreements a person must know about, in plain words. Works from a
//! lab's state file or from nothing but Sentinel addresses (a Docker
//! deployment), in which case the data nodes are found through the
//! Sentinels. Every failure to ask a process says why (see [`crate::why`]);
//! for a lab, the state dir's secrets are checked too (see
//! [`crate::secrets::exposed`]).
//!
//! Gathering and judging are apart: `sentinel`, `node`, `gateway` and `app`
//! each ask one kind of process for its own view; `problems` turns the views into
//! problems, a pure function tested on made-up views.

mod app;
mod gateway;
mod node;
mod problems;
mod sentinel;

pub use app::AppStatus;
pub use gateway::{GatewayReplica, GatewayStatus};
pub use node::NodeStatus;
pub use sentinel::SentinelStatus;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use belay_client::sentinel::SentinelAuth;
use belay_client::{Auth, ClientError, Connection, TlsClient};
use serde::Serialize;

use crate::secrets;

/// Per-call deadline: a paused node shows up as unreachable, not as a hang.
const TIMEOUT: Duration = Duration::from_millis(1500);

/// Where to look.
#[derive(Clone, Debug, Default)]
pub struct StatusQuery {
    pub master_name: String,
    /// Credentials of the data nodes and the gateway.
    pub auth: Option<Auth>,
    /// How to log in to the Sentinels: often they have no password even
    /// where the nodes have one (see [`SentinelAuth::choose`]).
    pub sentinel_auth: SentinelAuth,
    /// TLS to every process asked, when they speak it.
    pub tls: Option<TlsClient>,
    /// Sentinels to ask: `(name if known, addr, pid if known)`.
    pub sentinels: Vec<Target>,
    /// Data nodes known in advance (a lab's); more are discovered through
    /// the Sentinels.
    pub data_nodes: Vec<Target>,
    /// The gateway, when the lab runs one.
    pub gateway: Option<Target>,
    /// The web app, when the lab runs one.
    pub app: Option<Target>,
    /// A lab's state dir: files in it that hold a secret and that other
    /// users can read are problems too.
    pub state_dir: Option<PathBuf>,
}

/// One process to ask.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub name: Option<String>,
    pub addr: String,
    pub pid: Option<u32>,
}

/// What `belay status` found.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub master_name: String,
    /// The master a majority of the Sentinels agree on, if any.
    pub agreed_master: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub sentinels: Vec<SentinelStatus>,
    pub gateway: Option<GatewayStatus>,
    /// The web app's answer to `/healthz`, when the lab runs one.
    pub app: Option<AppStatus>,
    /// Nodes answering `ROLE` with master.
    pub masters: usize,
    /// Replicas of the agreed master with `master_link_status:up`.
    pub linked_replicas: usize,
    /// Sentinels that believe in the agreed master.
    pub sentinels_agreeing: usize,
    /// Disagreements and failures, in plain words; empty when healthy.
    pub problems: Vec<String>,
    pub healthy: bool,
}

impl StatusReport {
    /// One line: "healthy: ..." or the number of problems.
    pub fn summary(&self) -> String {
        let base = format!(
            "{} master{}{}, {} linked replica{}, {}/{} Sentinels agreeing",
            self.masters,
            if self.masters == 1 { "" } else { "s" },
            self.agreed_master
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            self.linked_replicas,
            if self.linked_replicas == 1 { "" } else { "s" },
            self.sentinels_agreeing,
            self.sentinels.len(),
        );
        if self.healthy {
            format!("healthy: {base}")
        } else {
            format!(
                "NOT healthy ({} problem{}): {base}",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            )
        }
    }
}

/// Connects to a data node or the gateway within [`TIMEOUT`].
async fn connect(
    addr: &str,
    tls: Option<&TlsClient>,
    auth: Option<&Auth>,
) -> Result<Connection, ClientError> {
    Connection::connect_with(addr, tls, auth, TIMEOUT).await
}

/// Asks every Sentinel and every data node, and works out the problems.
pub async fn gather(q: &StatusQuery) -> StatusReport {
    let auth = q.auth.as_ref();
    let mut sentinels = Vec::new();
    let mut discovered: Vec<String> = Vec::new();
    for t in &q.sentinels {
        let (status, seen) =
            sentinel::ask(t, &q.master_name, q.tls.as_ref(), &q.sentinel_auth).await;
        sentinels.push(status);
        discovered.extend(seen);
    }

    // Data nodes: the known ones, then any the Sentinels mention.
    let mut targets = q.data_nodes.clone();
    for addr in discovered {
        if !targets.iter().any(|t| t.addr == addr) {
            targets.push(Target {
                addr,
                ..Target::default()
            });
        }
    }
    let mut nodes = Vec::new();
    for t in &targets {
        nodes.push(node::ask(t, q.tls.as_ref(), auth).await);
    }
    // Bytes behind: against the master each replica follows.
    let offsets: BTreeMap<String, i64> = nodes
        .iter()
        .filter(|n| n.role.as_deref() == Some("master"))
        .filter_map(|n| Some((n.addr.clone(), n.offset?)))
        .collect();
    for n in &mut nodes {
        if let (Some(up), Some(off)) = (&n.replicates_from, n.offset) {
            n.lag_bytes = offsets.get(up).map(|m| (m - off).max(0));
        }
    }

    let gateway = match &q.gateway {
        Some(t) => Some(gateway::ask(t, q.tls.as_ref(), auth).await),
        None => None,
    };
    let app = match &q.app {
        Some(t) => Some(app::ask(t).await),
        None => None,
    };
    let exposed = q
        .state_dir
        .as_deref()
        .map(secrets::exposed)
        .unwrap_or_default();
    problems::analyse(q, nodes, sentinels, gateway, app, exposed)
}
