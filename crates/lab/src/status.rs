//! `belay status`: what each node and Sentinel says right now, and the
//! disagreements a person must know about, in plain words. Works from a
//! lab's state file or from nothing but Sentinel addresses (a Docker
//! deployment), in which case the data nodes are found through the
//! Sentinels. Every failure to ask a process says why (see [`crate::why`]);
//! for a lab, the state dir's secrets are checked too (see
//! [`crate::secrets::exposed`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use belay_client::sentinel::SentinelAuth;
use belay_client::{Auth, ClientError, Connection, Role};
use serde::Serialize;

use crate::secrets::{self, Exposure};
use crate::why;

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
    /// Sentinels to ask: `(name if known, addr, pid if known)`.
    pub sentinels: Vec<Target>,
    /// Data nodes known in advance (a lab's); more are discovered through
    /// the Sentinels.
    pub data_nodes: Vec<Target>,
    /// The gateway, when the lab runs one.
    pub gateway: Option<Target>,
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

/// One data node, as it reports itself.
#[derive(Clone, Debug, Serialize)]
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

/// One Sentinel's view.
#[derive(Clone, Debug, Serialize)]
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

/// The gateway's liveness and its own view of the topology (`BELAY TOPOLOGY`).
#[derive(Clone, Debug, Serialize)]
pub struct GatewayStatus {
    pub addr: String,
    pub pid: Option<u32>,
    pub reachable: bool,
    pub error: Option<String>,
    /// The master the gateway has confirmed.
    pub master: Option<String>,
    /// The gateway holds writes (no confirmed master, a failover under way,
    /// or no replica in sync with the master).
    pub writes_held: bool,
    /// Each replica as the gateway sees it: offset, lag, read eligibility.
    pub replicas: Vec<GatewayReplica>,
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

async fn connect(addr: &str, auth: Option<&Auth>) -> Result<Connection, ClientError> {
    Connection::connect(addr, auth, TIMEOUT).await
}

/// Asks every Sentinel and every data node, and works out the problems.
pub async fn gather(q: &StatusQuery) -> StatusReport {
    let auth = q.auth.as_ref();
    let mut sentinels = Vec::new();
    let mut discovered: Vec<String> = Vec::new();
    for t in &q.sentinels {
        let (status, seen) = sentinel_status(t, &q.master_name, &q.sentinel_auth).await;
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
        nodes.push(node_status(t, auth).await);
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
        Some(t) => Some(gateway_status(t, auth).await),
        None => None,
    };
    let exposed = q
        .state_dir
        .as_deref()
        .map(secrets::exposed)
        .unwrap_or_default();
    analyse(q, nodes, sentinels, gateway, exposed)
}

fn label(name: &Option<String>, addr: &str) -> String {
    match name {
        Some(n) => format!("{n} ({addr})"),
        None => addr.to_string(),
    }
}

fn analyse(
    q: &StatusQuery,
    nodes: Vec<NodeStatus>,
    sentinels: Vec<SentinelStatus>,
    gateway: Option<GatewayStatus>,
    exposed: Vec<Exposure>,
) -> StatusReport {
    let mut problems = Vec::new();

    // Which master do the Sentinels believe in?
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sentinels {
        if let Some(m) = &s.master {
            *votes.entry(m.as_str()).or_default() += 1;
        }
    }
    // The one rule (shared with the gateway): a strict majority of the
    // Sentinels that answered.
    let answered = sentinels.iter().filter(|s| s.master.is_some() || s.error.is_none()).count();
    let majority = answered / 2 + 1;
    let agreed_master = belay_client::sentinel::agreed_master(
        sentinels.iter().filter_map(|s| s.master.as_deref()),
        answered,
    )
    .map(str::to_string);

    for s in &sentinels {
        let who = label(&s.name, &s.addr);
        let Some(m) = &s.master else {
            // Unreachable, or no answer about the master: the error says why.
            problems.push(format!(
                "Sentinel {who} {}",
                s.error
                    .clone()
                    .unwrap_or_else(|| format!("does not monitor {:?}", q.master_name))
            ));
            continue;
        };
        if let Some(a) = &agreed_master {
            if m != a {
                problems.push(format!(
                    "Sentinel {who} believes the master is {m}, but the majority says {a}"
                ));
            }
        }
        if let Some(e) = &s.error {
            problems.push(format!("Sentinel {who} {e}"));
        }
        if let Some(flags) = &s.master_flags {
            let down: Vec<&str> = flags.split(',').filter(|f| *f != "master").collect();
            if !down.is_empty() {
                problems.push(format!(
                    "Sentinel {who} flags the master {}",
                    down.join(",")
                ));
            }
        }
        // Not asked (`None`) when an earlier query failed: its error says why.
        if let (Some(answer), false) = (&s.quorum, s.quorum_ok) {
            problems.push(format!("Sentinel {who}: quorum check failed: {answer}"));
        }
    }
    if agreed_master.is_none() && !sentinels.is_empty() {
        let views: Vec<String> = votes.iter().map(|(m, n)| format!("{m} ({n})")).collect();
        problems.push(format!(
            "the Sentinels do not agree on a master (a majority of {majority} is needed): {}",
            if views.is_empty() {
                "none names one".to_string()
            } else {
                views.join(", ")
            }
        ));
    }

    let claiming: Vec<&NodeStatus> = nodes
        .iter()
        .filter(|n| n.role.as_deref() == Some("master"))
        .collect();
    let unasked = nodes.iter().filter(|n| !n.reachable).count();
    match claiming.len() {
        0 if nodes.is_empty() => problems.push("no data node to ask: no Sentinel named one".into()),
        0 if unasked > 0 => problems.push(format!(
            "no node that answered says it is the master ({unasked} of {} could not be asked)",
            nodes.len()
        )),
        0 => problems.push("no node says it is the master".into()),
        1 => {}
        _ => problems.push(format!(
            "{} nodes claim to be master: {} — writes to the wrong one would be lost",
            claiming.len(),
            claiming
                .iter()
                .map(|n| label(&n.name, &n.addr))
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
    if let Some(m) = &agreed_master {
        if let Some(n) = nodes.iter().find(|n| &n.addr == m) {
            if n.reachable && n.role.as_deref() != Some("master") {
                problems.push(format!(
                    "the Sentinels say {m} is the master, but it reports role {}",
                    n.role.as_deref().unwrap_or("unknown")
                ));
            }
        }
    }

    let mut linked_replicas = 0;
    for n in &nodes {
        let who = label(&n.name, &n.addr);
        if let Some(e) = &n.error {
            // Unreachable, or its INFO failed: either way its link is unknown.
            problems.push(format!("node {who} {e}"));
            continue;
        }
        if n.role.as_deref() != Some("replica") {
            continue;
        }
        let up = n.link.as_deref() == Some("up");
        let from = n.replicates_from.clone().unwrap_or_default();
        if !up {
            problems.push(format!(
                "replica {who} is not linked to its master {from} (master_link_status:{})",
                n.link.as_deref().unwrap_or("unknown")
            ));
        }
        match &agreed_master {
            Some(m) if &from != m => problems.push(format!(
                "replica {who} replicates from {from}, not from the master {m}"
            )),
            _ if up => linked_replicas += 1,
            _ => {}
        }
    }

    if let Some(g) = &gateway {
        if !g.reachable {
            problems.push(format!(
                "the gateway {} {}",
                g.addr,
                g.error.as_deref().unwrap_or("does not answer PING")
            ));
        } else if let Some(e) = &g.error {
            problems.push(format!(
                "the gateway {} answers PING but not BELAY TOPOLOGY: {e}",
                g.addr
            ));
        } else if g.master.is_none() {
            problems.push(format!(
                "the gateway {} has no confirmed master: it is holding writes",
                g.addr
            ));
        } else if g.writes_held {
            problems.push(format!(
                "the gateway {} is holding writes for {} (a failover under way, or no replica in sync with it)",
                g.addr,
                g.master.as_deref().unwrap_or("-")
            ));
        } else if agreed_master.is_some() && g.master != agreed_master {
            problems.push(format!(
                "the gateway {} writes to {} but the Sentinels agree on {}",
                g.addr,
                g.master.as_deref().unwrap_or("-"),
                agreed_master.as_deref().unwrap_or("-")
            ));
        }
    }

    problems.extend(exposed.iter().map(Exposure::problem));

    let sentinels_agreeing = match &agreed_master {
        Some(m) => sentinels
            .iter()
            .filter(|s| s.master.as_ref() == Some(m))
            .count(),
        None => 0,
    };
    StatusReport {
        master_name: q.master_name.clone(),
        masters: claiming.len(),
        healthy: problems.is_empty(),
        agreed_master,
        nodes,
        sentinels,
        gateway,
        linked_replicas,
        sentinels_agreeing,
        problems,
    }
}

/// A Sentinel's view, plus the data node addresses it mentions.
async fn sentinel_status(
    t: &Target,
    name: &str,
    auth: &SentinelAuth,
) -> (SentinelStatus, Vec<String>) {
    let mut s = SentinelStatus {
        name: t.name.clone(),
        addr: t.addr.clone(),
        pid: t.pid,
        reachable: false,
        refused: false,
        error: None,
        master: None,
        master_flags: None,
        replicas_known: None,
        sentinels_known: None,
        quorum: None,
        quorum_ok: false,
    };
    let mut seen = Vec::new();
    let mut c = match Connection::connect_sentinel(&t.addr, auth, TIMEOUT).await {
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

async fn node_status(t: &Target, auth: Option<&Auth>) -> NodeStatus {
    let mut n = NodeStatus {
        name: t.name.clone(),
        addr: t.addr.clone(),
        pid: t.pid,
        reachable: false,
        refused: false,
        error: None,
        role: None,
        offset: None,
        replicates_from: None,
        link: None,
        lag_bytes: None,
        lag_seconds: None,
    };
    let role = match connect(&t.addr, auth).await {
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
        if let Ok(mut m) = connect(&up, auth).await {
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

/// The part of `BELAY TOPOLOGY` that status shows.
#[derive(serde::Deserialize)]
struct GatewayView {
    master: Option<String>,
    #[serde(default)]
    writes_held: bool,
    replicas: Vec<GatewayReplica>,
}

async fn gateway_status(t: &Target, auth: Option<&Auth>) -> GatewayStatus {
    let mut g = GatewayStatus {
        addr: t.addr.clone(),
        pid: t.pid,
        reachable: false,
        error: None,
        master: None,
        writes_held: false,
        replicas: Vec::new(),
    };
    let mut c = match connect(&t.addr, auth).await {
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
                g.writes_held = view.writes_held;
                g.replicas = view.replicas;
            }
            None => g.error = Some(format!("answered something belay cannot read: {v:?}")),
        },
        Err(e) => g.error = Some(why::failure(&e)),
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str, role: &str, from: Option<&str>, link: Option<&str>) -> NodeStatus {
        NodeStatus {
            name: None,
            addr: addr.into(),
            pid: None,
            reachable: true,
            refused: false,
            error: None,
            role: Some(role.into()),
            offset: Some(10),
            replicates_from: from.map(Into::into),
            link: link.map(Into::into),
            lag_bytes: None,
            lag_seconds: None,
        }
    }

    fn sentinel(name: &str, master: &str) -> SentinelStatus {
        SentinelStatus {
            name: Some(name.into()),
            addr: "s:1".into(),
            pid: None,
            reachable: true,
            refused: false,
            error: None,
            master: Some(master.into()),
            master_flags: Some("master".into()),
            replicas_known: Some(2),
            sentinels_known: Some(2),
            quorum: Some("OK".into()),
            quorum_ok: true,
        }
    }

    #[test]
    fn healthy_topology_has_no_problems() {
        let q = StatusQuery::default();
        let r = analyse(
            &q,
            vec![
                node("a:1", "master", None, None),
                node("b:1", "replica", Some("a:1"), Some("up")),
                node("c:1", "replica", Some("a:1"), Some("up")),
            ],
            vec![
                sentinel("s1", "a:1"),
                sentinel("s2", "a:1"),
                sentinel("s3", "a:1"),
            ],
            None,
            Vec::new(),
        );
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(
            (r.masters, r.linked_replicas, r.sentinels_agreeing),
            (1, 2, 3)
        );
        assert!(r
            .summary()
            .starts_with("healthy: 1 master (a:1), 2 linked replicas, 3/3"));
    }

    #[test]
    fn what_could_not_be_asked_says_why() {
        let refused = ClientError::Connect {
            addr: "b:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let mut down = node("b:1", "replica", Some("a:1"), Some("up"));
        down.reachable = false;
        down.role = None;
        down.error = Some(why::failure(&refused));
        let mut silent = sentinel("s2", "a:1");
        silent.reachable = false;
        silent.master = None;
        silent.quorum = None;
        silent.quorum_ok = false;
        silent.error = Some(why::failure(&ClientError::Timeout {
            addr: "s:1".into(),
            op: "AUTH ...".into(),
            timeout: Duration::from_millis(1500),
        }));
        let r = analyse(
            &StatusQuery::default(),
            vec![node("a:1", "master", None, None), down],
            vec![sentinel("s1", "a:1"), silent, sentinel("s3", "a:1")],
            None,
            Vec::new(),
        );
        let all = r.problems.join("\n");
        assert!(
            all.contains("node b:1 refuses connections (is it running?): cannot connect to b:1"),
            "{all}"
        );
        assert!(
            all.contains(
                "Sentinel s2 (s:1) does not answer: s:1 did not answer AUTH ... within 1.5s"
            ),
            "{all}"
        );
        assert!(!all.contains("quorum check failed"), "not asked: {all}");
        assert!(!all.contains("no answer"), "{all}");
        assert_eq!(r.problems.len(), 2, "{all}");
    }

    #[test]
    fn disagreements_are_called_out() {
        let q = StatusQuery::default();
        let r = analyse(
            &q,
            vec![
                node("a:1", "master", None, None),
                node("b:1", "master", None, None),
                node("c:1", "replica", Some("a:1"), Some("down")),
            ],
            vec![
                sentinel("s1", "a:1"),
                sentinel("s2", "a:1"),
                sentinel("s3", "b:1"),
            ],
            None,
            Vec::new(),
        );
        let all = r.problems.join("\n");
        assert!(
            all.contains("2 nodes claim to be master: a:1 and b:1"),
            "{all}"
        );
        assert!(
            all.contains("Sentinel s3 (s:1) believes the master is b:1, but the majority says a:1"),
            "{all}"
        );
        assert!(
            all.contains("replica c:1 is not linked to its master a:1"),
            "{all}"
        );
        assert!(!r.healthy);
    }
}
