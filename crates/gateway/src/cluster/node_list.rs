//! `CLUSTER NODES`: what a node says of the others (which it flags
//! failing) and of itself (the slots it serves, and those it is moving to
//! another node during a resharding).

use std::collections::BTreeSet;

use super::slot::SLOTS;

/// Whether a node's `CLUSTER NODES` reply flags `addr` as failing
/// (`fail?`: it stopped answering that node; `fail`: most masters agree).
/// `None` when the reply does not list it.
pub fn flags_failing(nodes: &str, addr: &str) -> Option<bool> {
    nodes.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let (_id, at, flags) = (fields.next()?, fields.next()?, fields.next()?);
        let at = at.split(['@', ',']).next()?;
        (at == addr).then(|| flags.split(',').any(|f| f == "fail" || f == "fail?"))
    })
}

/// What a master says of its own slots: its `myself` line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OwnSlots {
    /// Inclusive ranges it serves.
    pub serves: Vec<(u16, u16)>,
    /// Slots it is moving to another node (`[slot->-id]`): some of their
    /// keys may be there already.
    pub migrating: Vec<u16>,
}

/// The `myself` line of a `CLUSTER NODES` reply; `None` without one.
pub fn own_slots(nodes: &str) -> Option<OwnSlots> {
    let line = nodes.lines().find(|line| {
        line.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    })?;
    let mut own = OwnSlots::default();
    // id, address, flags, master, ping-sent, pong-recv, epoch, link: then slots.
    for field in line.split(' ').skip(8).filter(|f| !f.is_empty()) {
        if let Some(open) = field.strip_prefix('[') {
            // `[slot->-id]` migrating, `[slot-<-id]` importing.
            if let Some((slot, _)) = open.split_once("->-") {
                own.migrating.extend(slot.parse::<u16>().ok());
            }
            continue;
        }
        let (from, to) = field.split_once('-').unwrap_or((field, field));
        if let (Ok(from), Ok(to)) = (from.parse::<u16>(), to.parse::<u16>()) {
            own.serves.push((from, to));
        }
    }
    own.serves.sort_unstable();
    Some(own)
}

/// The slots of `ranges` (where the gateway's map places them on this
/// master) whose reads its replicas must not serve: those the master is
/// moving away (a replica has the master's deletions of keys already moved
/// but knows nothing of the move, so it would answer "no such key"), and
/// those the master no longer serves (moved; the map is behind). The
/// master itself redirects such reads (`ASK`, `MOVED`), and the gateway
/// follows.
pub fn unsettled(ranges: &[(u16, u16)], own: &OwnSlots) -> Vec<u16> {
    let serves = |s: u16| own.serves.iter().any(|&(a, b)| (a..=b).contains(&s));
    let mut out: BTreeSet<u16> = own.migrating.iter().copied().collect();
    for &(from, to) in ranges {
        for s in from..=to.min(SLOTS as u16 - 1) {
            if !serves(s) {
                out.insert(s);
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_flags() {
        let nodes = "a1 127.0.0.1:7001@17001 master,fail? - 0 0 1 connected 0-5460\n\
                     b2 127.0.0.1:7002@17002,host myself,master - 0 0 2 connected 5461-10922\n";
        assert_eq!(flags_failing(nodes, "127.0.0.1:7001"), Some(true));
        assert_eq!(flags_failing(nodes, "127.0.0.1:7002"), Some(false));
        assert_eq!(flags_failing(nodes, "127.0.0.1:7003"), None);
    }

    #[test]
    fn a_masters_own_slots_and_those_it_moves() {
        let nodes = "a1 127.0.0.1:7001@17001 master - 0 0 1 connected 0-5460\n\
                     b2 127.0.0.1:7002@17002 myself,master - 0 0 2 connected 5461-10922 12000 [5470->-a1] [100-<-a1]\n\
                     c3 127.0.0.1:7003@17003 slave b2 0 0 2 connected\n";
        let own = own_slots(nodes).unwrap();
        assert_eq!(own.serves, [(5461, 10922), (12000, 12000)]);
        assert_eq!(own.migrating, [5470]);
        assert_eq!(
            own_slots("a1 127.0.0.1:7001@17001 master - 0 0 1 connected\n"),
            None
        );
        // A replica's own line: no slots.
        let replica = "c3 127.0.0.1:7003@17003 myself,slave b2 0 0 2 connected\n";
        assert_eq!(own_slots(replica), Some(OwnSlots::default()));
    }

    #[test]
    fn slots_moving_away_or_gone_are_unsettled() {
        let own = OwnSlots {
            serves: vec![(0, 99), (101, 199)],
            migrating: vec![150],
        };
        // The map places 0-200 here: 100 and 200 are served elsewhere now.
        assert_eq!(unsettled(&[(0, 200)], &own), [100, 150, 200]);
        assert!(unsettled(
            &[(0, 99)],
            &OwnSlots {
                serves: vec![(0, 99)],
                migrating: vec![]
            }
        )
        .is_empty());
    }
}
