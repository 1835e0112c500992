//! A data node's view of itself: `ROLE`, offsets, its link to its master,
//! and that master's view of its ack lag.

use belay_client::{Auth, Role, TlsClient};
use serde::Serialize;

use super::{connect, Target};
use crate::why;

/// One data node, as it reports itself.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    pub name: Option<String>,
    pub addr: String,
    pub pid: Option<u32>,
    /// It answered `ROLE`.
    pub reachable: bool,
    /// It answered, but refused our credentials or `ROLE` (`error` has its
    /// words): there, but not usable with what we were given.
    pub refused: bool,
    /// Why it could not be asked, or what failed after `ROLE`.
    pub error: Option<String>,
    /// `master` or `replica`, from `ROLE`.
    pub role: Option<String>,
    /// Replication offset (`master_repl_offset` / the replica's processed offset).
    pub offset: Option<i64>,
    /// For a replica: the master it replicates from.
    pub replicates_from: Option<String>,
    /// For a replica: `master_link_status` (`up` / `down`).
    pub link: Option<String>,
    /// For a replica: bytes behind its master's offset.
    pub lag_bytes: Option<i64>,
    /// For a replica: seconds since the master last heard its ack (the
    /// master's `INFO replication` `lag`).
    pub lag_seconds: Option<i64>,
}

/// Asks a data node for its role, offset and link.
pub(super) async fn ask(t: &Target, tls: Option<&TlsClient>, auth: Option<&Auth>) -> NodeStatus {
    let mut n = NodeStatus {
        name: t.name.clone(),
        addr: t.addr.clone(),
        pid: t.pid,
        ..Default::default()
    };
    let role = match connect(&t.addr, tls, auth).await {
        Ok(mut c) => c.role().await.map(|r| (c, r)),
        Err(e) => Err(e),
    };
    let (mut c, role) = match role {
        Ok(r) => r,
        Err(e) => {
            n.refused = e.is_reply();
            n.error = Some(why::failure(&e));
            return n;
        }
    };
    n.reachable = true;
    match role {
        Role::Master { offset, .. } => {
            n.role = Some("master".into());
            n.offset = Some(offset);
        }
        Role::Replica {
            master_host,
            master_port,
            offset,
            ..
        } => {
            n.role = Some("replica".into());
            n.offset = Some(offset);
            n.replicates_from = Some(format!("{master_host}:{master_port}"));
        }
        Role::Sentinel { .. } => n.role = Some("sentinel".into()),
    }
    match c.info("replication").await {
        Ok(info) => {
            if n.role.as_deref() == Some("replica") {
                n.link = info.get("master_link_status").map(str::to_string);
                n.offset = info.get_i64("slave_repl_offset").or(n.offset);
            }
        }
        Err(e) => n.error = Some(why::failure(&e)),
    }
    // The master's view of this replica's ack lag, when we can ask it (when
    // we cannot, the master's own line says why).
    if let Some(up) = n.replicates_from.clone() {
        if let Ok(mut m) = connect(&up, tls, auth).await {
            if let Ok(info) = m.info("replication").await {
                let (host, port) = t.addr.rsplit_once(':').unwrap_or((&t.addr, ""));
                for i in 0..info.get_i64("connected_slaves").unwrap_or(0) {
                    if let Some(r) = info.get_map(&format!("slave{i}")) {
                        let same = r.get("ip").map(String::as_str) == Some(host)
                            && r.get("port").map(String::as_str) == Some(port);
                        if same {
                            n.lag_seconds = r.get("lag").and_then(|l| l.parse().ok());
                        }
                    }
                }
            }
        }
    }
    n
}
