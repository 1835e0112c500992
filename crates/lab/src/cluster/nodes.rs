//! One node's view of the cluster: its `CLUSTER NODES` table, parsed. The
//! lab reads the cluster from these tables rather than `CLUSTER SHARDS`:
//! each line carries one node's own slots and, for a replica, its master's
//! id, the same in every Redis 7 and Valkey release — while `CLUSTER
//! SHARDS` groups a failed old master with its shard from Redis 7.2 on
//! (two "master" entries, one set of slots) and apart from it before.

use serde::Serialize;

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeLine {
    /// The node id (40 hex characters).
    pub id: String,
    /// `host:port` for clients (empty while the address is unknown).
    pub addr: String,
    /// `myself`, `master`, `slave`, `fail`, `fail?`, `handshake`, `noaddr`, ...
    pub flags: Vec<String>,
    /// For a replica, its master's id.
    pub master_id: Option<String>,
    /// The cluster-bus link to it is up (`connected`).
    pub connected: bool,
    /// Slot ranges it serves (inclusive); importing/migrating marks skipped.
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }
    /// Flagged failing (`fail`) or suspected (`fail?`) by the node asked.
    pub fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }
    /// Still being met: not a full member of this node's view yet.
    pub fn is_joining(&self) -> bool {
        self.has_flag("handshake") || self.has_flag("noaddr") || self.addr.is_empty()
    }
}

/// Parses the text of `CLUSTER NODES`; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<NodeLine> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<NodeLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    // `ip:port@cport[,hostname]`; `:0@0` while unknown.
    let addr = f[1].split(['@', ',']).next().unwrap_or("");
    let addr = if addr.starts_with(':') { "" } else { addr };
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let one = s.parse().ok()?;
                Some((one, one))
            }
        })
        .collect();
    Some(NodeLine {
        id: f[0].to_string(),
        addr: addr.to_string(),
        flags: f[2].split(',').map(str::to_string).collect(),
        master_id: (f[3] != "-").then(|| f[3].to_string()),
        connected: f[7] == "connected",
        slots,
    })
}

/// A slot map: `(first slot, last slot, master's host:port)`, by first slot.
pub type SlotMap = Vec<(u16, u16, String)>;

/// The slot map a table describes: each slot range with the address of the
/// master serving it, sorted by first slot.
pub fn slot_map(table: &[NodeLine]) -> SlotMap {
    let mut map: SlotMap = table
        .iter()
        .filter(|n| n.is_master())
        .flat_map(|n| n.slots.iter().map(|&(a, b)| (a, b, n.addr.clone())))
        .collect();
    map.sort();
    map
}

/// The slot ranges no master serves in `map`.
pub fn uncovered(map: &[(u16, u16, String)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut next: u32 = 0;
    for &(a, b, _) in map {
        if (a as u32) > next {
            out.push((next as u16, a - 1));
        }
        next = next.max(b as u32 + 1);
    }
    if next < super::spec::SLOTS as u32 {
        out.push((next as u16, super::spec::SLOTS - 1));
    }
    out
}

/// `0-5460,5461-10921`.
pub fn ranges_text(ranges: &[(u16, u16)]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383 [10923->-abc]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001,host-a myself,master - 0 0 1 connected 0-5460
6ec23923021cf3ffec47632106199cb7f496ce01 :0@0 master,fail?,noaddr - 1426238316232 0 5 disconnected 7
";

    #[test]
    fn parses_flags_masters_slots_and_addresses() {
        let t = parse(TABLE);
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].addr, "127.0.0.1:30004");
        assert!(!t[0].is_master());
        assert_eq!(
            t[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(t[2].slots, [(10923, 16383)]);
        assert_eq!(t[3].addr, "127.0.0.1:30001");
        assert!(t[3].has_flag("myself"));
        assert!(t[4].is_failing() && t[4].is_joining() && !t[4].connected);
        assert_eq!(t[4].slots, [(7, 7)]);
    }

    #[test]
    fn slot_map_and_its_gaps() {
        let map = slot_map(&parse(TABLE));
        assert_eq!(map[0], (0, 5460, "127.0.0.1:30001".into()));
        assert_eq!(map[1], (7, 7, String::new()));
        assert!(uncovered(&map).is_empty(), "{map:?}");
        assert_eq!(
            uncovered(&[(1, 5, "a".into())]),
            [(0, 0), (6, super::super::spec::SLOTS - 1)]
        );
        assert_eq!(ranges_text(&[(0, 5460), (7, 7)]), "0-5460,7");
    }
}
