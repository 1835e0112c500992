//! What the cluster's nodes say about it (`CLUSTER SHARDS`, or `CLUSTER
//! SLOTS` before Redis 7), and what the gateway makes of several such
//! views: per shard, the master most nodes name. A node that was paused
//! or cut off may still name itself master of slots another node took over
//! meanwhile; the others outvote it, and `ROLE` confirms the winner, as a
//! Sentinel majority plus `ROLE` does for a Sentinel group.

use std::collections::HashMap;

use belay_resp::Value;

/// One shard as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// Inclusive slot ranges, sorted.
    pub ranges: Vec<(u16, u16)>,
    pub master: Option<String>,
    /// The node marks the master failed (`health: failed`).
    pub master_failed: bool,
    /// Replicas it does not mark failed.
    pub replicas: Vec<String>,
}

/// One shard as the gateway takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreedShard {
    pub ranges: Vec<(u16, u16)>,
    pub master: String,
    /// Most of the nodes that name this master mark it failed: the cluster
    /// is failing it over.
    pub master_failed: bool,
    pub replicas: Vec<String>,
}

/// `CLUSTER SHARDS`. With `tls`, nodes are reached on their `tls-port`.
pub fn parse_shards(reply: &Value, tls: bool) -> Option<Vec<ShardView>> {
    let mut out = Vec::new();
    for shard in reply.as_array()? {
        let slots = shard.field("slots")?.as_array()?;
        let mut ranges: Vec<(u16, u16)> = slots
            .chunks(2)
            .filter_map(|c| Some((c[0].as_int()? as u16, c.get(1)?.as_int()? as u16)))
            .collect();
        ranges.sort_unstable();
        let mut view = ShardView {
            ranges,
            master: None,
            master_failed: false,
            replicas: Vec::new(),
        };
        for node in shard.field("nodes")?.as_array()? {
            let host = node
                .field("ip")
                .or_else(|| node.field("endpoint"))
                .and_then(|v| v.to_text())
                .unwrap_or_default();
            let port_field = if tls { "tls-port" } else { "port" };
            let Some(port) = node.field(port_field).and_then(|v| v.as_int()) else {
                continue;
            };
            let addr = format!("{host}:{port}");
            let failed = node.field("health").and_then(|v| v.as_str()) == Some("failed");
            match node.field("role").and_then(|v| v.as_str()) {
                Some("master") => {
                    view.master = Some(addr);
                    view.master_failed = failed;
                }
                _ if !failed => view.replicas.push(addr),
                _ => {}
            }
        }
        out.push(view);
    }
    Some(out)
}

/// `CLUSTER SLOTS`: one entry per slot range, master first. It says
/// nothing of health.
pub fn parse_slots(reply: &Value) -> Option<Vec<ShardView>> {
    let mut by_master: HashMap<String, ShardView> = HashMap::new();
    for entry in reply.as_array()? {
        let e = entry.as_array()?;
        let (from, to) = (e.first()?.as_int()? as u16, e.get(1)?.as_int()? as u16);
        let addr_of = |n: &Value| {
            let n = n.as_array()?;
            Some(format!("{}:{}", n.first()?.to_text()?, n.get(1)?.as_int()?))
        };
        let master = addr_of(e.get(2)?)?;
        let view = by_master
            .entry(master.clone())
            .or_insert_with(|| ShardView {
                ranges: Vec::new(),
                master: Some(master),
                master_failed: false,
                replicas: Vec::new(),
            });
        view.ranges.push((from, to));
        for r in e.iter().skip(3).filter_map(addr_of) {
            if !view.replicas.contains(&r) {
                view.replicas.push(r);
            }
        }
    }
    let mut out: Vec<ShardView> = by_master.into_values().collect();
    for v in &mut out {
        v.ranges.sort_unstable();
    }
    Some(out)
}

/// Masters that serve no slot yet (a node just added, about to be given
/// slots by a resharding), named by any view and not failed: commands
/// follow `ASK` to them while their first slots move in.
pub fn idle_masters(views: &[Vec<ShardView>], agreed: &[AgreedShard]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for shard in views.iter().flatten() {
        let Some(master) = &shard.master else {
            continue;
        };
        if shard.ranges.is_empty()
            && !shard.master_failed
            && !agreed.iter().any(|a| &a.master == master)
            && !out.contains(master)
        {
            out.push(master.clone());
        }
    }
    out.sort();
    out
}

/// Every node's view, combined: for each shard (its slot ranges), the master
/// named by the most views; ties go to the view listed first. Shards with
/// no slots are left out (a master being added, not serving yet).
pub fn agree(views: &[Vec<ShardView>]) -> Vec<AgreedShard> {
    /// The views naming one master for one set of slot ranges.
    struct Votes {
        ranges: Vec<(u16, u16)>,
        master: String,
        votes: usize,
        failed: usize,
        replicas: Vec<String>,
    }
    let mut tally: Vec<Votes> = Vec::new();
    for shard in views.iter().flatten() {
        let Some(master) = &shard.master else {
            continue;
        };
        if shard.ranges.is_empty() {
            continue;
        }
        let i = match tally
            .iter()
            .position(|t| t.ranges == shard.ranges && t.master == *master)
        {
            Some(i) => i,
            None => {
                tally.push(Votes {
                    ranges: shard.ranges.clone(),
                    master: master.clone(),
                    votes: 0,
                    failed: 0,
                    replicas: Vec::new(),
                });
                tally.len() - 1
            }
        };
        let t = &mut tally[i];
        t.votes += 1;
        t.failed += usize::from(shard.master_failed);
        for r in &shard.replicas {
            if r != master && !t.replicas.contains(r) {
                t.replicas.push(r.clone());
            }
        }
    }
    // Per set of ranges, the master most views name (the first on a tie).
    let mut best: HashMap<&[(u16, u16)], usize> = HashMap::new();
    for (i, t) in tally.iter().enumerate() {
        match best.get(t.ranges.as_slice()) {
            Some(&j) if tally[j].votes >= t.votes => {}
            _ => {
                best.insert(&t.ranges, i);
            }
        }
    }
    let mut chosen: Vec<usize> = best.into_values().collect();
    chosen.sort_unstable();
    let mut out: Vec<AgreedShard> = chosen
        .into_iter()
        .map(|i| {
            let t = &tally[i];
            AgreedShard {
                ranges: t.ranges.clone(),
                master: t.master.clone(),
                master_failed: t.failed * 2 > t.votes,
                replicas: t.replicas.clone(),
            }
        })
        .collect();
    out.sort_by_key(|s| s.ranges.first().copied());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn node(port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            b("id"),
            b("x"),
            b("port"),
            Value::Integer(port),
            b("ip"),
            b("127.0.0.1"),
            b("role"),
            b(role),
            b("health"),
            b(health),
        ])
    }

    fn shard(from: i64, to: i64, nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            b("slots"),
            Value::Array(vec![Value::Integer(from), Value::Integer(to)]),
            b("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn shards_reply() {
        let reply = Value::Array(vec![
            shard(
                0,
                8191,
                vec![
                    node(7000, "master", "online"),
                    node(7003, "replica", "online"),
                ],
            ),
            shard(
                8192,
                16383,
                vec![
                    node(7001, "master", "failed"),
                    node(7004, "replica", "failed"),
                ],
            ),
        ]);
        let views = parse_shards(&reply, false).unwrap();
        assert_eq!(views[0].master.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(views[0].replicas, ["127.0.0.1:7003"]);
        assert!(views[1].master_failed);
        assert!(views[1].replicas.is_empty());
    }

    #[test]
    fn slots_reply() {
        let n = |p: i64| Value::Array(vec![b("127.0.0.1"), Value::Integer(p), b("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Integer(0),
                Value::Integer(99),
                n(7000),
                n(7003),
            ]),
            Value::Array(vec![
                Value::Integer(200),
                Value::Integer(299),
                n(7000),
                n(7003),
            ]),
            Value::Array(vec![Value::Integer(100), Value::Integer(199), n(7001)]),
        ]);
        let mut views = parse_slots(&reply).unwrap();
        views.sort_by_key(|v| v.ranges[0]);
        assert_eq!(views[0].ranges, [(0, 99), (200, 299)]);
        assert_eq!(views[0].replicas, ["127.0.0.1:7003"]);
        assert_eq!(views[1].master.as_deref(), Some("127.0.0.1:7001"));
    }

    #[test]
    fn masters_serving_no_slot_yet_are_idle() {
        let shard = |master: &str, ranges: Vec<(u16, u16)>, failed: bool| ShardView {
            ranges,
            master: Some(master.into()),
            master_failed: failed,
            replicas: vec![],
        };
        let views = vec![
            vec![
                shard("a:1", vec![(0, 16383)], false),
                shard("new:1", vec![], false),
            ],
            vec![
                shard("a:1", vec![(0, 16383)], false),
                shard("gone:1", vec![], true),
            ],
        ];
        let agreed = agree(&views);
        assert_eq!(idle_masters(&views, &agreed), ["new:1"]);
    }

    #[test]
    fn the_master_most_nodes_name_wins() {
        let v = |master: &str, failed: bool| ShardView {
            ranges: vec![(0, 16383)],
            master: Some(master.into()),
            master_failed: failed,
            replicas: vec!["r:1".into()],
        };
        // The old master, back from a pause, still names itself.
        let views = vec![
            vec![v("old:1", false)],
            vec![v("new:1", false)],
            vec![v("new:1", false)],
        ];
        let agreed = agree(&views);
        assert_eq!(agreed.len(), 1);
        assert_eq!(agreed[0].master, "new:1");
        assert!(!agreed[0].master_failed);
        let failing = vec![
            vec![v("m:1", true)],
            vec![v("m:1", true)],
            vec![v("m:1", false)],
        ];
        assert!(agree(&failing)[0].master_failed);
    }
}
