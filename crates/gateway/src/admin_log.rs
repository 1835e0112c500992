//! Commands the gateway ran on every data node (`CONFIG SET`, `ACL
//! SETUSER`, …), and which nodes took them. Redis keeps such settings per
//! node: a node that was down then, or joined the group later, does not have
//! them. The gateway does not replay them (it would need the credentials of
//! the user who ran them, and an order that still holds); it reports the
//! drift instead, in `BELAY TOPOLOGY` and so in `belay status`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::topology::Topology;

/// At most this many commands are remembered (the oldest go first).
const REMEMBERED: usize = 100;

/// One command run on every node.
struct Entry {
    /// What it was, without secrets: `CONFIG SET notify-keyspace-events`,
    /// `ACL SETUSER dave` (never the rules, which may hold passwords).
    what: String,
    /// Nodes that took it.
    took: BTreeSet<String>,
}

#[derive(Default)]
pub struct AdminLog {
    entries: Mutex<Vec<Entry>>,
}

impl AdminLog {
    /// Records that `what` was taken by `took` (the master first).
    pub fn record(&self, what: String, took: impl IntoIterator<Item = String>) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= REMEMBERED {
            entries.remove(0);
        }
        entries.push(Entry {
            what,
            took: took.into_iter().collect(),
        });
    }

    /// For each of `nodes` that misses some of the commands, which ones.
    pub fn drift<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, Vec<String>)> {
        let entries = self.entries.lock().unwrap();
        nodes
            .into_iter()
            .filter_map(|node| {
                let missed: Vec<String> = entries
                    .iter()
                    .filter(|e| !e.took.contains(node))
                    .map(|e| e.what.clone())
                    .collect();
                (!missed.is_empty()).then(|| (node.to_string(), missed))
            })
            .collect()
    }
}

/// The gateway's view as JSON (`BELAY TOPOLOGY`, the admin endpoint's
/// `/topology`): the topology, and which nodes miss which settings.
pub fn view(topology: &Topology, log: &AdminLog) -> serde_json::Value {
    let mut json = crate::topology::to_json(topology);
    let drift: serde_json::Map<String, serde_json::Value> = log
        .drift(topology.data_nodes().map(|p| p.addr.as_str()))
        .into_iter()
        .map(|(node, missed)| (node, serde_json::json!(missed)))
        .collect();
    json["admin_drift"] = serde_json::Value::Object(drift);
    json
}

/// What a command run on every node is called in the log: its name, its
/// subcommand and the setting or user it is about — never more (the rest
/// may be a password).
pub fn describe(args: &[&[u8]]) -> String {
    args.iter()
        .take(3)
        .map(|a| String::from_utf8_lossy(a))
        .enumerate()
        .map(|(i, a)| {
            if i < 2 {
                a.to_ascii_uppercase()
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_that_missed_a_command_are_reported() {
        let log = AdminLog::default();
        log.record(
            describe(&[b"config", b"set", b"maxmemory", b"1"]),
            ["m:1".into(), "r:1".into()],
        );
        log.record(
            describe(&[b"acl", b"setuser", b"dave", b">secret"]),
            ["m:1".into()],
        );
        let drift = log.drift(["m:1", "r:1", "r:2"]);
        assert_eq!(
            drift,
            vec![
                ("r:1".to_string(), vec!["ACL SETUSER dave".to_string()]),
                (
                    "r:2".to_string(),
                    vec![
                        "CONFIG SET maxmemory".to_string(),
                        "ACL SETUSER dave".to_string()
                    ]
                ),
            ]
        );
        assert!(!format!("{drift:?}").contains("secret"));
    }
}
