//! From the views gathered to the problems a person must know about:
//! Sentinels that disagree or cannot be asked, no master or two, replicas
//! not linked or following another master, a gateway holding writes, a web
//! app that does not answer or does not reach the gateway, and a lab's
//! readable secrets.

use std::collections::BTreeMap;

use super::{AppStatus, GatewayStatus, NodeStatus, SentinelStatus, StatusQuery, StatusReport};
use crate::secrets::Exposure;

/// How a problem names a process: `name (addr)`, or the address alone.
fn label(name: &Option<String>, addr: &str) -> String {
    match name {
        Some(n) => format!("{n} ({addr})"),
        None => addr.to_string(),
    }
}

/// Works out the problems and the counts the summary shows.
pub(super) fn analyse(
    q: &StatusQuery,
    nodes: Vec<NodeStatus>,
    sentinels: Vec<SentinelStatus>,
    gateway: Option<GatewayStatus>,
    app: Option<AppStatus>,
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
    let answered = sentinels
        .iter()
        .filter(|s| s.master.is_some() || s.error.is_none())
        .count();
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
                "the gateway {} is holding writes for {} ({})",
                g.addr,
                g.master.as_deref().unwrap_or("-"),
                g.writes_held_because
                    .as_deref()
                    .unwrap_or("a failover under way, or no replica in sync with it")
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

    if let Some(g) = &gateway {
        for (node, missed) in &g.admin_drift {
            problems.push(format!(
                "{node} missed what the gateway {} ran on every node: {} (run it there directly)",
                g.addr,
                missed.join(", ")
            ));
        }
    }

    if let Some(a) = &app {
        match a.http_status {
            Some(200) => {}
            Some(code) => problems.push(format!(
                "the app {} answers /healthz with {code}: {}",
                a.url, a.says
            )),
            None => problems.push(format!("the app {} {}", a.url, a.says)),
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
        app,
        linked_replicas,
        sentinels_agreeing,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use belay_client::ClientError;

    use super::*;
    use crate::why;

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

    #[test]
    fn an_app_that_does_not_reach_the_gateway_is_a_problem() {
        let app = |status: Option<u16>, says: &str| AppStatus {
            addr: "127.0.0.1:8080".into(),
            url: "http://127.0.0.1:8080/".into(),
            pid: None,
            reachable: status.is_some(),
            http_status: status,
            says: says.into(),
        };
        let judge = |a: AppStatus| {
            analyse(
                &StatusQuery::default(),
                vec![
                    node("a:1", "master", None, None),
                    node("b:1", "replica", Some("a:1"), Some("up")),
                ],
                vec![sentinel("s1", "a:1")],
                None,
                Some(a),
                Vec::new(),
            )
            .problems
        };
        assert!(judge(app(Some(200), "ok")).is_empty());
        let p = judge(app(Some(503), "PING: the gateway at g:1 cannot be reached")).join("\n");
        assert!(
            p.contains("the app http://127.0.0.1:8080/ answers /healthz with 503: PING"),
            "{p}"
        );
        let p = judge(app(None, "refuses connections (is it running?)")).join("\n");
        assert!(p.contains("refuses connections"), "{p}");
    }
}
