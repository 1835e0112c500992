//! The gateway: does it answer, and its own view of the topology
//! (`BELAY TOPOLOGY`).

use belay_client::{Auth, TlsClient};
use serde::Serialize;

use super::{connect, Target};
use crate::why;

/// The gateway's liveness and its own view of the topology (`BELAY TOPOLOGY`).
#[derive(Clone, Debug, Serialize)]
pub struct GatewayStatus {
    pub addr: String,
    pub pid: Option<u32>,
    pub reachable: bool,
    pub error: Option<String>,
    /// The master the gateway has confirmed.
    pub master: Option<String>,
    /// The gateway's own zone, if it has one.
    pub zone: Option<String>,
    /// The gateway holds writes (no confirmed master, a failover under way,
    /// or no replica in sync with the master).
    pub writes_held: bool,
    /// Why writes are held, in the gateway's words.
    pub writes_held_because: Option<String>,
    /// Each replica as the gateway sees it: offset, lag, read eligibility.
    pub replicas: Vec<GatewayReplica>,
    /// Data nodes that missed commands the gateway ran on every node
    /// (`CONFIG SET`, `ACL SETUSER`): node → what it missed.
    pub admin_drift: std::collections::BTreeMap<String, Vec<String>>,
}

/// One replica in the gateway's view.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GatewayReplica {
    pub addr: String,
    pub offset: i64,
    /// Age of the newest master offset the replica has reached.
    pub lag_ms: Option<u64>,
    /// Whether the gateway currently sends it reads.
    pub eligible: bool,
    /// Its availability zone, when the gateway knows one (`--node-zone`,
    /// Valkey's `availability-zone`). Absent from older gateways.
    #[serde(default)]
    pub zone: Option<String>,
    /// The gateway's smoothed round-trip time to it, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
}

/// The part of `BELAY TOPOLOGY` that status shows.
#[derive(serde::Deserialize)]
struct GatewayView {
    master: Option<String>,
    #[serde(default)]
    gateway_zone: Option<String>,
    #[serde(default)]
    writes_held: bool,
    #[serde(default)]
    writes_held_because: Option<String>,
    replicas: Vec<GatewayReplica>,
    #[serde(default)]
    admin_drift: std::collections::BTreeMap<String, Vec<String>>,
}

/// Asks the gateway for `PING`, then for its view.
pub(super) async fn ask(t: &Target, tls: Option<&TlsClient>, auth: Option<&Auth>) -> GatewayStatus {
    let mut g = GatewayStatus {
        addr: t.addr.clone(),
        pid: t.pid,
        reachable: false,
        error: None,
        master: None,
        zone: None,
        writes_held: false,
        writes_held_because: None,
        replicas: Vec::new(),
        admin_drift: Default::default(),
    };
    let mut c = match connect(&t.addr, tls, auth).await {
        Ok(c) => c,
        Err(e) => {
            g.error = Some(why::failure(&e));
            return g;
        }
    };
    match c.call(&["PING"]).await {
        Ok(v) if v.as_str() == Some("PONG") => g.reachable = true,
        Ok(v) => {
            g.error = Some(format!("answers PING with {v:?}"));
            return g;
        }
        Err(e) => {
            g.error = Some(why::failure(&e));
            return g;
        }
    }
    match c.call_ok(&["BELAY", "TOPOLOGY"]).await {
        Ok(v) => match v
            .as_str()
            .and_then(|t| serde_json::from_str::<GatewayView>(t).ok())
        {
            Some(view) => {
                g.master = view.master;
                g.zone = view.gateway_zone;
                g.writes_held = view.writes_held;
                g.writes_held_because = view.writes_held_because;
                g.replicas = view.replicas;
                g.admin_drift = view.admin_drift;
            }
            None => g.error = Some(format!("answered something belay cannot read: {v:?}")),
        },
        Err(e) => g.error = Some(why::failure(&e)),
    }
    g
}
