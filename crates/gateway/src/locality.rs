//! Where each data node is, seen from the gateway: its availability zone and
//! the smoothed round-trip time of the gateway's own control calls to it
//! (discovery asks every node ~10 times a second anyway, so measuring costs
//! no extra command). At publish time [`read_tiers`] sorts the replicas into
//! tiers of preference for `zone_replica` and `nearest`, so a read only walks
//! an order computed once per topology, never per command.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{GatewayConfig, ReadFrom};
use crate::topology::ReplicaNode;

/// A node's place, as the topology shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// Its availability zone: configured (`node_zones`), else what the node
    /// says (Valkey's `availability-zone`), else unknown.
    pub zone: Option<Arc<str>>,
    /// Smoothed round-trip time of the gateway's control calls to it.
    pub rtt: Option<Duration>,
}

/// Weight of the newest sample is 1/`SMOOTHING`: TCP's smoothed RTT
/// (RFC 6298, alpha = 1/8). At ~10 samples a second a change shows within
/// about a second, and one slow answer on a loaded machine does not move
/// reads.
const SMOOTHING: u32 = 8;

/// Smoothed round-trip times by node address.
#[derive(Debug, Default)]
pub struct Rtts {
    by_addr: HashMap<String, Duration>,
}

impl Rtts {
    /// Adds one measured round trip of a successful call to `addr`.
    pub fn record(&mut self, addr: &str, sample: Duration) {
        match self.by_addr.get_mut(addr) {
            Some(srtt) => {
                let weighted = *srtt * (SMOOTHING - 1) + sample;
                *srtt = weighted / SMOOTHING;
            }
            None => {
                self.by_addr.insert(addr.to_string(), sample);
            }
        }
    }

    pub fn get(&self, addr: &str) -> Option<Duration> {
        self.by_addr.get(addr).copied()
    }

    pub fn forget(&mut self, addr: &str) {
        self.by_addr.remove(addr);
    }
}

/// Nodes' zones: configured ones win over what nodes report.
#[derive(Debug, Default)]
pub struct Zones {
    configured: HashMap<String, Arc<str>>,
    reported: HashMap<String, Arc<str>>,
}

impl Zones {
    pub fn new(cfg: &GatewayConfig) -> Zones {
        Zones {
            configured: cfg
                .node_zones
                .iter()
                .map(|(addr, zone)| (addr.clone(), Arc::from(zone.as_str())))
                .collect(),
            reported: HashMap::new(),
        }
    }

    /// The configured zones again (a reload): what nodes reported stays.
    pub fn configure(&mut self, cfg: &GatewayConfig) {
        self.configured = Zones::new(cfg).configured;
    }

    /// What `addr` said of itself (`None`: it has no zone set).
    pub fn reported(&mut self, addr: &str, zone: Option<&str>) {
        match zone.filter(|z| !z.is_empty()) {
            Some(z) if self.reported.get(addr).is_some_and(|old| **old == *z) => {}
            Some(z) => {
                self.reported.insert(addr.to_string(), Arc::from(z));
            }
            None => {
                self.reported.remove(addr);
            }
        }
    }

    pub fn zone_of(&self, addr: &str) -> Option<Arc<str>> {
        self.configured
            .get(addr)
            .or_else(|| self.reported.get(addr))
            .cloned()
    }

    pub fn forget(&mut self, addr: &str) {
        self.reported.remove(addr);
    }
}

/// Replicas whose round-trip times differ by less than this (or by less
/// than half the lower one, whichever is more) are equally near: reads
/// spread over them by turns instead of flapping between two nodes of the
/// same rack on every sample.
const NEAR_MARGIN: Duration = Duration::from_millis(1);

fn equally_near(best: Duration, other: Duration) -> bool {
    other <= best + NEAR_MARGIN.max(best / 2)
}

/// Sorts `replicas` into tiers of preference for `read_from` and returns
/// where each tier but the last ends (empty: one tier, the order unchanged).
/// Reads take the first tier with a usable replica (see
/// `router::pick_replica`); replicas that may not serve now go last, so a
/// replica is never preferred for its place when the lag bound or its
/// health rules it out.
///
/// - `zone_replica`: usable replicas in `own_zone`, then other usable
///   replicas, then the rest;
/// - `nearest`: usable replicas by round-trip time, in bands of equally
///   near ones (unmeasured ones after the measured), then the rest.
pub fn read_tiers(
    replicas: &mut [ReplicaNode],
    read_from: ReadFrom,
    own_zone: Option<&str>,
) -> Vec<usize> {
    let rank: Vec<(usize, Option<Duration>)> = match read_from {
        ReadFrom::ZoneReplica => {
            replicas.sort_by_key(|r| {
                let home = own_zone.is_some() && r.locality.zone.as_deref() == own_zone;
                (!r.usable(), !home)
            });
            replicas
                .iter()
                .map(|r| {
                    let home = own_zone.is_some() && r.locality.zone.as_deref() == own_zone;
                    (if r.usable() { usize::from(!home) } else { 2 }, None)
                })
                .collect()
        }
        ReadFrom::Nearest => {
            replicas.sort_by_key(|r| (!r.usable(), r.locality.rtt.is_none(), r.locality.rtt));
            replicas
                .iter()
                .map(|r| {
                    let group = if !r.usable() {
                        2
                    } else {
                        usize::from(r.locality.rtt.is_none())
                    };
                    (group, r.locality.rtt.filter(|_| group == 0))
                })
                .collect()
        }
        ReadFrom::Replica | ReadFrom::ReplicaPreferred | ReadFrom::Master => return Vec::new(),
    };
    let mut ends = Vec::new();
    let mut band_start = rank.first().copied();
    for (i, &(group, rtt)) in rank.iter().enumerate().skip(1) {
        let Some((start_group, start_rtt)) = band_start else {
            break;
        };
        let same_band = group == start_group
            && match (start_rtt, rtt) {
                (Some(best), Some(this)) => equally_near(best, this),
                _ => true,
            };
        if !same_band {
            ends.push(i);
            band_start = Some((group, rtt));
        }
    }
    if read_from == ReadFrom::Nearest {
        // Within a band, a fixed order: RTTs that differ by noise must not
        // reshuffle the replicas taking turns on every publish.
        let mut from = 0;
        for end in ends.iter().copied().chain(std::iter::once(replicas.len())) {
            replicas[from..end].sort_by(|a, b| a.pool.addr.cmp(&b.pool.addr));
            from = end;
        }
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NodePool;

    fn replica(port: u16, zone: Option<&str>, rtt_us: Option<u64>) -> ReplicaNode {
        ReplicaNode {
            pool: NodePool::for_test(port, 1),
            offset: 0,
            replid: None,
            lag: None,
            eligible: true,
            locality: Locality {
                zone: zone.map(Arc::from),
                rtt: rtt_us.map(Duration::from_micros),
            },
        }
    }

    fn ports(replicas: &[ReplicaNode]) -> Vec<u16> {
        replicas
            .iter()
            .map(|r| r.pool.addr.rsplit_once(':').unwrap().1.parse().unwrap())
            .collect()
    }

    #[test]
    fn the_smoothed_rtt_follows_a_change_within_a_couple_of_dozen_samples() {
        let mut rtts = Rtts::default();
        rtts.record("a", Duration::from_micros(200));
        assert_eq!(rtts.get("a"), Some(Duration::from_micros(200)));
        // One slow answer moves it by an eighth.
        rtts.record("a", Duration::from_micros(1800));
        assert_eq!(rtts.get("a"), Some(Duration::from_micros(400)));
        for _ in 0..30 {
            rtts.record("a", Duration::from_millis(30));
        }
        assert!(rtts.get("a").unwrap() > Duration::from_millis(29));
        rtts.forget("a");
        assert_eq!(rtts.get("a"), None);
    }

    #[test]
    fn a_configured_zone_wins_over_a_reported_one() {
        let cfg = GatewayConfig {
            node_zones: [("n1:1".to_string(), "a".to_string())].into(),
            ..GatewayConfig::default()
        };
        let mut zones = Zones::new(&cfg);
        zones.reported("n1:1", Some("b"));
        zones.reported("n2:1", Some("b"));
        zones.reported("n3:1", Some(""));
        assert_eq!(zones.zone_of("n1:1").as_deref(), Some("a"));
        assert_eq!(zones.zone_of("n2:1").as_deref(), Some("b"));
        assert_eq!(zones.zone_of("n3:1"), None);
        zones.reported("n2:1", None);
        assert_eq!(zones.zone_of("n2:1"), None);
    }

    #[test]
    fn zone_replica_puts_usable_replicas_of_the_own_zone_first() {
        let mut replicas = vec![
            replica(1, Some("b"), None),
            replica(2, Some("a"), None),
            replica(3, None, None),
            replica(4, Some("a"), None),
        ];
        replicas[3].eligible = false;
        let ends = read_tiers(&mut replicas, ReadFrom::ZoneReplica, Some("a"));
        assert_eq!(ports(&replicas), vec![2, 1, 3, 4]);
        assert_eq!(ends, vec![1, 3]);
    }

    #[test]
    fn nearest_orders_by_rtt_in_bands_of_equally_near_replicas() {
        let mut replicas = vec![
            replica(1, None, Some(30_000)),
            replica(2, None, Some(250)),
            replica(3, None, None),
            replica(4, None, Some(900)),
            replica(5, None, Some(100)),
        ];
        replicas[4].eligible = false;
        let ends = read_tiers(&mut replicas, ReadFrom::Nearest, None);
        // 250 µs and 900 µs are within a millisecond (one band, in address
        // order); 30 ms is not.
        assert_eq!(ports(&replicas), vec![2, 4, 1, 3, 5]);
        assert_eq!(ends, vec![2, 3, 4]);
        replicas[0].locality.rtt = Some(Duration::from_micros(950));
        replicas[1].locality.rtt = Some(Duration::from_micros(240));
        read_tiers(&mut replicas, ReadFrom::Nearest, None);
        assert_eq!(
            ports(&replicas),
            vec![2, 4, 1, 3, 5],
            "noise does not reorder a band"
        );
    }

    #[test]
    fn other_policies_keep_one_tier_in_discovery_order() {
        let mut replicas = vec![
            replica(1, Some("b"), Some(900)),
            replica(2, Some("a"), Some(1)),
        ];
        assert!(read_tiers(&mut replicas, ReadFrom::ReplicaPreferred, Some("a")).is_empty());
        assert_eq!(ports(&replicas), vec![1, 2]);
    }
}
