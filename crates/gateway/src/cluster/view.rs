//! What the cluster's nodes say about it (`CLUSTER SHARDS`, or `CLUSTER
//! SLOTS` before Redis 7), and what the gateway makes of several such
//! views: per slot, the master most nodes name. A node that was paused
//! or cut off may still name itself master of slots another node took over
//! meanwhile; the others outvote it, and `ROLE` confirms the winner, as a
//! Sentinel majority plus `ROLE` does for a Sentinel group.

use std::collections::HashMap;

use belay_resp::Value;

use super::slot::SLOTS;

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

/// Every node's view, combined, slot by slot: each slot's master is the
/// one most views name for it (ties go to the view listed first), so views
/// that differ by a few slots — while they converge after a resharding, or
/// one node's that is behind — never split a master in two or hand a slot
/// to the minority. Masters with no slot are left out (a master being
/// added, not serving yet).
pub fn agree(views: &[Vec<ShardView>]) -> Vec<AgreedShard> {
    /// One master as the views name it.
    struct Named {
        master: String,
        /// Views naming it master of some slots, and of those, flagging it failed.
        votes: usize,
        failed: usize,
        replicas: Vec<String>,
    }
    const NONE: u32 = u32::MAX;
    let mut named: Vec<Named> = Vec::new();
    // Per view, each slot's master (an index into `named`).
    let mut owners: Vec<Vec<u32>> = Vec::with_capacity(views.len());
    for view in views {
        let mut owner = vec![NONE; SLOTS];
        for shard in view {
            let Some(master) = &shard.master else {
                continue;
            };
            if shard.ranges.is_empty() {
                continue;
            }
            let i = match named.iter().position(|n| n.master == *master) {
                Some(i) => i,
                None => {
                    named.push(Named {
                        master: master.clone(),
                        votes: 0,
                        failed: 0,
                        replicas: Vec::new(),
                    });
                    named.len() - 1
                }
            };
            let n = &mut named[i];
            n.votes += 1;
            n.failed += usize::from(shard.master_failed);
            for r in &shard.replicas {
                if r != master && !n.replicas.contains(r) {
                    n.replicas.push(r.clone());
                }
            }
            for &(from, to) in &shard.ranges {
                for s in from..=to.min(SLOTS as u16 - 1) {
                    owner[s as usize] = i as u32;
                }
            }
        }
        owners.push(owner);
    }
    // Each slot's master: most votes, the first view's on a tie.
    let mut ranges: Vec<Vec<(u16, u16)>> = vec![Vec::new(); named.len()];
    let mut tally: Vec<(u32, usize)> = Vec::new();
    for s in 0..SLOTS {
        tally.clear();
        for owner in &owners {
            let o = owner[s];
            if o == NONE {
                continue;
            }
            match tally.iter_mut().find(|(m, _)| *m == o) {
                Some((_, c)) => *c += 1,
                None => tally.push((o, 1)),
            }
        }
        let Some(&(best, _)) = tally.iter().rev().max_by_key(|(_, c)| *c) else {
            continue;
        };
        let r = &mut ranges[best as usize];
        match r.last_mut() {
            Some((_, to)) if *to as usize + 1 == s => *to = s as u16,
            _ => r.push((s as u16, s as u16)),
        }
    }
    let mut out: Vec<AgreedShard> = named
        .into_iter()
        .zip(ranges)
        .filter(|(_, r)| !r.is_empty())
        .map(|(n, ranges)| AgreedShard {
            ranges,
            master_failed: n.failed * 2 > n.votes,
            master: n.master,
            replicas: n.replicas,
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
    fn views_that_differ_by_a_slot_agree_slot_by_slot() {
        let shard = |master: &str, ranges: Vec<(u16, u16)>| ShardView {
            ranges,
            master: Some(master.into()),
            master_failed: false,
            replicas: vec![format!("{master}-replica")],
        };
        let current = vec![
            shard("m1:1", vec![(0, 100)]),
            shard("m2:1", vec![(101, 16383)]),
        ];
        // One node has not heard that slot 101 moved to m2.
        let behind = vec![
            shard("m1:1", vec![(0, 101)]),
            shard("m2:1", vec![(102, 16383)]),
        ];
        let agreed = agree(&[current.clone(), behind.clone(), current]);
        assert_eq!(agreed.len(), 2, "{agreed:?}");
        assert_eq!(
            (agreed[0].master.as_str(), agreed[0].ranges.clone()),
            ("m1:1", vec![(0, 100)])
        );
        assert_eq!(
            (agreed[1].master.as_str(), agreed[1].ranges.clone()),
            ("m2:1", vec![(101, 16383)])
        );
        assert_eq!(agreed[1].replicas, ["m2:1-replica"]);
        // A tie goes to the view listed first.
        let tie = agree(&[
            behind,
            vec![
                shard("m1:1", vec![(0, 100)]),
                shard("m2:1", vec![(101, 16383)]),
            ],
        ]);
        assert_eq!(tie[0].ranges, [(0, 101)]);
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
