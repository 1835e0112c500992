//! Failed logins, per client address: after a few, each further login from
//! that address is answered only after a delay that doubles, so a password
//! cannot be guessed at the gateway's speed (nor make it open a backend
//! connection per guess). Counts fade after a minute; the table is bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failures before delays start.
const FREE_FAILURES: u32 = 5;
/// The first delay; each further failure doubles it, up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest go first).
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// Records a login attempt's outcome from `peer`.
    pub fn record(&self, peer: Option<SocketAddr>, failed: bool) {
        let Some(ip) = peer.map(|p| p.ip()) else {
            return;
        };
        if !failed {
            return;
        }
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, (_, at)| now.duration_since(*at) < WINDOW);
            if failures.len() >= MAX_ADDRESSES {
                if let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(ip, _)| *ip)
                {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.1 = now;
    }

    /// How long a login from `peer` must wait before it is checked.
    pub fn delay(&self, peer: Option<SocketAddr>) -> Option<Duration> {
        let ip = peer?.ip();
        let failures = self.failures.lock().unwrap();
        let (n, at) = *failures.get(&ip)?;
        if n < FREE_FAILURES || Instant::now().duration_since(at) >= WINDOW {
            return None;
        }
        let doublings = (n - FREE_FAILURES).min(16);
        Some((FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_slow_an_address_down_and_fade() {
        let t = AuthThrottle::default();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.delay(Some(a)), None);
            t.record(Some(a), true);
        }
        assert_eq!(t.delay(Some(a)), Some(FIRST_DELAY));
        t.record(Some(a), true);
        assert_eq!(t.delay(Some(a)), Some(FIRST_DELAY * 2));
        for _ in 0..20 {
            t.record(Some(a), true);
        }
        assert_eq!(t.delay(Some(a)), Some(MAX_DELAY));
        // Another address is not slowed down; a success changes nothing.
        assert_eq!(t.delay(Some(b)), None);
        t.record(Some(a), false);
        assert_eq!(t.delay(Some(a)), Some(MAX_DELAY));
        tokio::time::advance(WINDOW).await;
        assert_eq!(t.delay(Some(a)), None);
    }
}
