//! Readiness: when is a lab really ready? Every replica has
//! `master_link_status:up` towards the master, every Sentinel believes in
//! that master and knows every replica and every other Sentinel, and
//! `SENTINEL CKQUORUM` passes; the gateway (when there is one) answers
//! `PING` after `AUTH`; the app (when there is one) answers `GET /healthz`
//! with 200. Each check returns what is still missing, in words, so a
//! waiting user (or a failing test) sees why.

use std::time::Duration;

use belay_client::sentinel::SentinelAuth;
use belay_client::{Auth, ClientError, Connection, TlsClient};

/// Per-call deadline for readiness probes: short, so that a paused process
/// slows a poll down instead of stalling it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// What the topology should look like.
pub(crate) struct Expected<'a> {
    pub master_name: &'a str,
    /// Credentials of the data nodes.
    pub auth: &'a Auth,
    /// How to log in to the Sentinels.
    pub sentinel_auth: &'a SentinelAuth,
    /// TLS to nodes and Sentinels, when the lab runs it.
    pub tls: Option<&'a TlsClient>,
    /// `host:port` of the master every node and Sentinel must agree on.
    pub master: String,
    /// `(name, addr)` of every data node, the master included.
    pub data_nodes: Vec<(String, String)>,
    /// `(name, addr)` of every Sentinel.
    pub sentinels: Vec<(String, String)>,
}

async fn connect(addr: &str, tls: Option<&TlsClient>, auth: &Auth) -> Result<Connection, String> {
    Connection::connect_with(addr, tls, Some(auth), PROBE_TIMEOUT)
        .await
        .map_err(|e| short(&e))
}

/// Why a probe failed. A refused connection is the normal state of a
/// process that is still starting, and is said so.
fn short(e: &ClientError) -> String {
    match e {
        ClientError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            "not accepting connections yet (connection refused)".into()
        }
        e => e.to_string(),
    }
}

/// Everything still missing for the topology to be ready (empty = ready).
pub(crate) async fn topology_pending(exp: &Expected<'_>) -> Vec<String> {
    let mut pending = Vec::new();
    let replicas = exp.data_nodes.len() - 1;
    for (name, addr) in &exp.data_nodes {
        if let Err(why) = data_node_ready(exp, addr).await {
            pending.push(format!("{name}: {why}"));
        }
    }
    for (name, addr) in &exp.sentinels {
        if let Err(why) = sentinel_ready(exp, addr, replicas).await {
            pending.push(format!("{name}: {why}"));
        }
    }
    pending
}

async fn data_node_ready(exp: &Expected<'_>, addr: &str) -> Result<(), String> {
    let mut c = connect(addr, exp.tls, exp.auth).await?;
    let info = c.info("replication").await.map_err(|e| short(&e))?;
    let role = info.get("role").unwrap_or("?");
    if *addr == exp.master {
        return match role {
            "master" => Ok(()),
            other => Err(format!("is {other}, expected master")),
        };
    }
    if role != "slave" {
        return Err(format!("is {role}, expected a replica of {}", exp.master));
    }
    let upstream = format!(
        "{}:{}",
        info.get("master_host").unwrap_or("?"),
        info.get("master_port").unwrap_or("?")
    );
    if upstream != exp.master {
        return Err(format!("replicates from {upstream}, not {}", exp.master));
    }
    match info.get("master_link_status") {
        Some("up") => Ok(()),
        other => Err(format!("replication link {}", other.unwrap_or("unknown"))),
    }
}

async fn sentinel_ready(exp: &Expected<'_>, addr: &str, replicas: usize) -> Result<(), String> {
    let name = exp.master_name;
    let err = |e: ClientError| short(&e);
    let (mut c, _) =
        Connection::connect_sentinel_with(addr, exp.tls, exp.sentinel_auth, PROBE_TIMEOUT)
            .await
            .map_err(err)?;
    let master = c.sentinel_master(name).await.map_err(err)?;
    let believed = master.addr().unwrap_or_default();
    if believed != exp.master {
        return Err(format!("believes the master is {believed}"));
    }
    let flags = master.get("flags").unwrap_or("");
    if flags != "master" {
        return Err(format!("master flags are {flags}"));
    }
    let known_replicas = c
        .sentinel_replicas(name)
        .await
        .map_err(err)?
        .iter()
        .filter(|r| !r.has_flag("s_down") && !r.has_flag("disconnected"))
        .count();
    let known_sentinels = c
        .sentinel_sentinels(name)
        .await
        .map_err(err)?
        .iter()
        .filter(|s| !s.has_flag("s_down") && !s.has_flag("disconnected"))
        .count();
    let other_sentinels = exp.sentinels.len() - 1;
    if known_replicas < replicas || known_sentinels < other_sentinels {
        return Err(format!(
            "knows {known_replicas}/{replicas} replicas, {known_sentinels}/{other_sentinels} other Sentinels"
        ));
    }
    c.sentinel_ckquorum(name)
        .await
        .map_err(|e| format!("CKQUORUM: {}", err(e)))?;
    Ok(())
}

/// `None` once the gateway at `addr` answers `PING` with `PONG` after `AUTH`.
pub(crate) async fn gateway_pending(
    addr: &str,
    tls: Option<&TlsClient>,
    password: &str,
) -> Option<String> {
    let mut c = match connect(addr, tls, &Auth::password(password)).await {
        Ok(c) => c,
        Err(why) => return Some(format!("gateway: {why}")),
    };
    match c.call(&["PING"]).await {
        Ok(v) if v.as_str() == Some("PONG") => None,
        Ok(v) => Some(format!("gateway: PING answered {v:?}")),
        Err(e) => Some(format!("gateway: {}", short(&e))),
    }
}

/// `None` once the app at `addr` answers `GET /healthz` with 200 (it does
/// once it listens and the gateway answers it).
pub(crate) async fn app_pending(addr: &str) -> Option<String> {
    match crate::http::get(addr, "/healthz", PROBE_TIMEOUT).await {
        Ok(r) if r.status == 200 => None,
        Ok(r) => Some(format!(
            "app: /healthz answered {} {}",
            r.status,
            r.body.lines().next().unwrap_or("")
        )),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some("app: not accepting connections yet (connection refused)".into())
        }
        Err(e) => Some(format!("app: {e}")),
    }
}
