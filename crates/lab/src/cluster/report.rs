//! From the nodes' views to the problems a person must know about: a node
//! that does not answer or says `cluster_state:fail`, nodes that disagree
//! on the slot map, slots no master serves, a shard whose master is failing
//! (no replica has taken over yet), replicas not linked or missing, a node
//! in no shard, a gateway that does not answer, readable secrets. A pure
//! function, tested on made-up views.

use super::nodes::{self, ranges_text};
use super::view::{majority_view, shards, ClusterQuery, ClusterReport, GatewayCheck, NodeView};
use crate::secrets::Exposure;

/// Works out the shards and the problems.
pub(super) fn judge(
    q: &ClusterQuery,
    views: Vec<NodeView>,
    gateway: Option<GatewayCheck>,
    exposed: Vec<Exposure>,
) -> ClusterReport {
    let mut problems = Vec::new();
    let (shard_list, map) = match majority_view(&views) {
        Some((from, map)) => (shards(from, &views), map),
        None => (Vec::new(), Vec::new()),
    };
    let label_of = |addr: &str| {
        views
            .iter()
            .find(|v| v.addr == addr)
            .map(NodeView::label)
            .unwrap_or_else(|| addr.to_string())
    };

    for v in &views {
        let who = v.label();
        if !v.reachable {
            problems.push(format!(
                "{who} {}",
                v.error.as_deref().unwrap_or("did not answer")
            ));
            continue;
        }
        if let Some(state) = v.cluster_state.as_deref().filter(|s| *s != "ok") {
            problems.push(format!("{who} says cluster_state:{state}"));
        }
        let joining = v.table.iter().filter(|n| n.is_joining()).count();
        let members = v.table.len() - joining;
        if members < q.nodes.len() {
            problems.push(format!(
                "{who} knows {members} of the {} nodes{}",
                q.nodes.len(),
                if joining > 0 {
                    format!(" ({joining} still joining)")
                } else {
                    String::new()
                }
            ));
        }
        let own = v.slot_map();
        if !map.is_empty() && own != map {
            let differs: Vec<String> = own
                .iter()
                .filter(|e| !map.contains(e))
                .map(|(a, b, m)| format!("{} on {}", ranges_text(&[(*a, *b)]), label_of(m)))
                .collect();
            problems.push(format!(
                "{who} disagrees with the other nodes on the slot map{}",
                if differs.is_empty() {
                    " (it misses slots they see served)".to_string()
                } else {
                    format!(": it sees {}", differs.join(", "))
                }
            ));
        }
    }

    let uncovered = nodes::uncovered(&map);
    if !map.is_empty() && !uncovered.is_empty() {
        problems.push(format!(
            "slots {} are served by no master: commands on their keys fail (CLUSTERDOWN)",
            ranges_text(&uncovered)
        ));
    }

    let mut in_shards = Vec::new();
    for s in &shard_list {
        let slots = ranges_text(&s.slots);
        in_shards.push(s.master.clone());
        if s.master_failing {
            problems.push(format!(
                "shard {slots} has no working master: {} is flagged failing and no replica has taken over (yet)",
                label_of(&s.master)
            ));
        }
        let mut linked = 0;
        for r in &s.replicas {
            in_shards.push(r.addr.clone());
            if r.linked_to(&s.master) {
                linked += 1;
                continue;
            }
            let reachable = views.iter().any(|v| v.addr == r.addr && v.reachable);
            if !reachable {
                continue; // said above, with why
            }
            let who = label_of(&r.addr);
            match (&r.role, &r.replicates_from) {
                (Some(role), _) if role != "replica" => problems.push(format!(
                    "{who} is listed as a replica of {} but says it is {role}",
                    label_of(&s.master)
                )),
                (_, Some(from)) if *from != s.master => problems.push(format!(
                    "replica {who} follows {from}, not its shard's master {}",
                    label_of(&s.master)
                )),
                _ => problems.push(format!(
                    "replica {who} of {} is not linked (master_link_status:{})",
                    label_of(&s.master),
                    r.link.as_deref().unwrap_or("unknown")
                )),
            }
        }
        if linked < q.replicas_per_master {
            problems.push(format!(
                "shard {slots} has {linked} linked replica{} of the {} it should have: one more failure loses it",
                if linked == 1 { "" } else { "s" },
                q.replicas_per_master
            ));
        }
    }
    if !shard_list.is_empty() {
        for v in views.iter().filter(|v| v.reachable) {
            if in_shards.contains(&v.addr) {
                continue;
            }
            problems.push(if v.role.as_deref() == Some("master") {
                format!(
                    "{} is a master without slots: in no shard (a failed master comes back as a replica; if it stays like this, CLUSTER REPLICATE it)",
                    v.label()
                )
            } else {
                format!("{} is in no shard the other nodes see", v.label())
            });
        }
    }

    if let Some(g) = &gateway {
        if let Some(e) = &g.error {
            problems.push(format!("the gateway {} does not answer PING: {e}", g.addr));
        }
    }
    problems.extend(exposed.iter().map(Exposure::problem));

    ClusterReport {
        healthy: problems.is_empty(),
        nodes: views,
        shards: shard_list,
        slot_map: map,
        uncovered,
        gateway,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::nodes::parse;
    use crate::status::Target;
    use std::time::Duration;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";
    const D: &str = "dddddddddddddddddddddddddddddddddddddddd";
    const E: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    const F: &str = "ffffffffffffffffffffffffffffffffffffffff";

    /// Six nodes 7000..7005, masters 7000-7002, each with one replica.
    fn table(flags_7000: &str) -> String {
        format!(
            "{A} 127.0.0.1:7000@17000 {flags_7000} - 0 0 1 connected 0-5460\n\
             {B} 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10921\n\
             {C} 127.0.0.1:7002@17002 master - 0 0 3 connected 10922-16383\n\
             {D} 127.0.0.1:7003@17003 slave {A} 0 0 1 connected\n\
             {E} 127.0.0.1:7004@17004 slave {B} 0 0 2 connected\n\
             {F} 127.0.0.1:7005@17005 slave {C} 0 0 3 connected\n"
        )
    }

    fn view(port: u16, text: &str) -> NodeView {
        let replica_of = match port {
            7003 => Some("127.0.0.1:7000"),
            7004 => Some("127.0.0.1:7001"),
            7005 => Some("127.0.0.1:7002"),
            _ => None,
        };
        NodeView {
            name: Some(format!("node-{}", port - 6999)),
            addr: format!("127.0.0.1:{port}"),
            reachable: true,
            cluster_state: Some("ok".into()),
            role: Some(
                if replica_of.is_some() {
                    "replica"
                } else {
                    "master"
                }
                .into(),
            ),
            replicates_from: replica_of.map(str::to_string),
            link: replica_of.map(|_| "up".into()),
            offset: Some(if replica_of.is_some() { 90 } else { 100 }),
            table: parse(text),
            ..NodeView::default()
        }
    }

    fn query() -> ClusterQuery {
        ClusterQuery {
            nodes: (7000..7006)
                .map(|p| Target {
                    addr: format!("127.0.0.1:{p}"),
                    ..Target::default()
                })
                .collect(),
            auth: None,
            gateway: None,
            replicas_per_master: 1,
            state_dir: None,
            timeout: Duration::from_secs(1),
        }
    }

    fn healthy_views() -> Vec<NodeView> {
        (7000..7006).map(|p| view(p, &table("master"))).collect()
    }

    #[test]
    fn a_healthy_cluster_has_three_shards_covering_every_slot() {
        let r = judge(&query(), healthy_views(), None, Vec::new());
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(r.shards.len(), 3);
        assert_eq!(r.shards[1].slots, [(5461, 10921)]);
        assert_eq!(r.shards[1].replicas[0].addr, "127.0.0.1:7004");
        assert_eq!(r.shards[1].replicas[0].lag_bytes, Some(10));
        assert!(r.uncovered.is_empty());
    }

    #[test]
    fn a_failing_master_an_unlinked_replica_and_a_dissenter_are_named() {
        let mut views: Vec<NodeView> = (7000..7006)
            .map(|p| view(p, &table("master,fail")))
            .collect();
        views[0].reachable = false;
        views[0].error = Some("does not answer: no reply within 1s".into());
        views[3].link = Some("down".into());
        // node-6 still sees node-1's slots on node-4.
        views[5].table = parse(&table("master").replace("0-5460", ""));
        views[5].cluster_state = Some("fail".into());
        let r = judge(&query(), views, None, Vec::new());
        let all = r.problems.join("\n");
        for want in [
            "node-1 (127.0.0.1:7000) does not answer",
            "shard 0-5460 has no working master: node-1 (127.0.0.1:7000) is flagged failing",
            "replica node-4 (127.0.0.1:7003) of node-1 (127.0.0.1:7000) is not linked (master_link_status:down)",
            "shard 0-5460 has 0 linked replicas of the 1",
            "node-6 (127.0.0.1:7005) says cluster_state:fail",
            "node-6 (127.0.0.1:7005) disagrees with the other nodes on the slot map (it misses slots",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        assert!(!r.healthy);
    }

    #[test]
    fn unserved_slots_and_a_master_without_slots_are_named() {
        let text = table("master").replace("0-5460", "0-5000");
        let mut views: Vec<NodeView> = (7000..7006).map(|p| view(p, &text)).collect();
        // A seventh node, a master nobody lists in a shard.
        let mut q = query();
        q.nodes.push(Target {
            addr: "127.0.0.1:7006".into(),
            ..Target::default()
        });
        let mut stray = view(7006, &text);
        stray.name = Some("node-7".into());
        views.push(stray);
        let r = judge(&q, views, None, Vec::new());
        let all = r.problems.join("\n");
        assert!(
            all.contains("slots 5001-5460 are served by no master"),
            "{all}"
        );
        assert!(
            all.contains("node-7 (127.0.0.1:7006) is a master without slots"),
            "{all}"
        );
        assert!(all.contains("knows 6 of the 7 nodes"), "{all}");
    }
}
