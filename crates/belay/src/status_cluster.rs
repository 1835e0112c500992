//! `belay status` on a cluster lab: the shards (slots, master, each
//! replica's link and lag), what every node says (role, cluster_state),
//! the gateway, and the problems in plain words.

use belay_lab::cluster::nodes::ranges_text;
use belay_lab::cluster::ClusterReport;

use crate::status::{answer, one_process, problems_and_summary, who};
use crate::ui::{self, header, opt};

/// The report as text.
pub fn render(r: &ClusterReport, title: &str) -> String {
    let mut out = format!("{title} — Redis Cluster\n\nSHARDS\n");
    let name_of = |addr: &str| {
        r.nodes
            .iter()
            .find(|n| n.addr == addr)
            .and_then(|n| n.name.clone())
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![header(&[
        "SHARD", "SLOTS", "NAME", "ADDRESS", "ROLE", "LINK", "LAG",
    ])];
    for (i, s) in r.shards.iter().enumerate() {
        rows.push(vec![
            (i + 1).to_string(),
            ranges_text(&s.slots),
            name_of(&s.master),
            s.master.clone(),
            match (s.master_failing, s.master_reachable) {
                (true, _) => "master (FAILING)".into(),
                (false, false) => "master (UNREACHABLE)".into(),
                _ => "master".into(),
            },
            "-".into(),
            "-".into(),
        ]);
        for rep in &s.replicas {
            rows.push(vec![
                String::new(),
                String::new(),
                name_of(&rep.addr),
                rep.addr.clone(),
                match (&rep.role, rep.failing) {
                    (_, true) => "replica (FAILING)".into(),
                    (Some(role), _) => role.clone(),
                    (None, _) => "UNREACHABLE".into(),
                },
                opt(&rep.link),
                rep.lag_bytes
                    .map(|b| format!("{b} B"))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    if r.shards.is_empty() {
        out.push_str("  (no node answered with a slot map)\n");
    } else {
        out.push_str(&ui::table(&rows));
    }

    out.push_str("\nNODES\n");
    let mut rows = vec![header(&[
        "NAME",
        "ADDRESS",
        "PID",
        "ROLE",
        "CLUSTER_STATE",
        "OFFSET",
        "FOLLOWS",
    ])];
    for n in &r.nodes {
        let mut row = who(&n.name, &n.addr, &n.pid);
        row.extend([
            answer(n.reachable, false, &n.role),
            opt(&n.cluster_state),
            opt(&n.offset),
            opt(&n.replicates_from),
        ]);
        rows.push(row);
    }
    out.push_str(&ui::table(&rows));

    if let Some(g) = &r.gateway {
        out.push_str(&one_process(
            "GATEWAY",
            &g.addr,
            g.pid,
            match &g.error {
                None => "answers PING".into(),
                Some(e) => format!("NOT ANSWERING: {e}"),
            },
        ));
    }

    out.push_str(&problems_and_summary(&r.problems, &r.summary()));
    out
}
