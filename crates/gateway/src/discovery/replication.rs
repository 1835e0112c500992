//! How far behind the replicas are, and whether that must hold writes: the
//! master's offset history (lag is measured in time, from it) and the write
//! guard. Pure bookkeeping on samples discovery takes, so it is tested in
//! paused time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::topology::OffsetSample;

/// How much master offset history is kept for replica lag estimates.
const LAG_HISTORY: Duration = Duration::from_secs(30);

/// Recent (time, master offset) samples of one replication history.
#[derive(Debug, Default)]
pub(super) struct OffsetHistory {
    replid: Option<Arc<str>>,
    samples: VecDeque<(Instant, i64)>,
}

impl OffsetHistory {
    /// Forgets everything: a new master.
    pub fn clear(&mut self) {
        self.replid = None;
        self.samples.clear();
    }

    /// Remembers a master sample. A sample of another history (a new
    /// replication ID) starts the history over: offsets of two histories
    /// are not comparable.
    pub fn record(&mut self, sample: &OffsetSample) {
        if self.replid.as_deref() != Some(&*sample.replid) {
            self.samples.clear();
            self.replid = Some(sample.replid.clone());
        }
        if self
            .samples
            .back()
            .is_some_and(|&(_, o)| o == sample.offset)
        {
            // No new writes: the newest sample with this offset stays, so a
            // replica that has it counts as current.
            self.samples.pop_back();
        }
        self.samples.push_back((sample.taken_at, sample.offset));
        while self.samples.len() > 1
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| sample.taken_at.duration_since(*t) > LAG_HISTORY)
        {
            self.samples.pop_front();
        }
    }

    /// When the newest sample was taken.
    pub fn last_sample_at(&self) -> Option<Instant> {
        self.samples.back().map(|(t, _)| *t)
    }

    /// How far behind a replica of history `replid` at `offset` is, in
    /// time: the age of the newest master sample it has reached. `None`
    /// when it follows another history or has not reached any sample still
    /// remembered.
    pub fn lag_of(&self, replid: Option<&str>, offset: i64, now: Instant) -> Option<Duration> {
        if replid.is_none() || replid != self.replid.as_deref() {
            return None;
        }
        let latest = self.samples.back()?;
        if offset >= latest.1 {
            return Some(Duration::ZERO);
        }
        self.samples
            .iter()
            .rev()
            .find(|(_, o)| *o <= offset)
            .map(|(t, _)| now.duration_since(*t))
    }
}

/// The write guard: hold writes while fewer than `wanted` replicas are
/// within `bound` of the master — Redis's `min-replicas-to-write`, in
/// milliseconds instead of seconds. A master cut off from its replicas (a
/// partition Sentinel has not acted on yet) then stops getting writes it
/// would lose after about the bound, not after `min-replicas-max-lag`.
#[derive(Debug)]
pub(super) struct WriteGuard {
    wanted: usize,
    bound: Duration,
    /// The master whose replicas have been seen in sync: the guard applies
    /// to it from then on.
    armed_for: Option<String>,
    /// Whether it holds writes now (to log changes).
    tripped: bool,
}

/// The guard arms only after a master has been confirmed this long: a
/// brand-new master whose replicas Sentinel is still reconfiguring (links
/// dropping and re-syncing) is not held up.
const ARM_DELAY: Duration = Duration::from_secs(2);

impl WriteGuard {
    pub fn new(wanted: usize, bound: Duration) -> WriteGuard {
        WriteGuard {
            wanted,
            bound,
            armed_for: None,
            tripped: false,
        }
    }

    /// New bounds from a reload; whether the guard is armed stays as it is.
    pub fn set_bounds(&mut self, wanted: usize, bound: Duration) {
        self.wanted = wanted;
        self.bound = bound;
    }

    /// Whether writes to `master` must be held, given the replicas the
    /// Sentinels know (`known`) and the lags of those that answered.
    pub fn holds(
        &mut self,
        master: &str,
        master_since: Instant,
        now: Instant,
        known: usize,
        lags: impl Iterator<Item = Option<Duration>>,
    ) -> bool {
        let wanted = self.wanted.min(known);
        if wanted == 0 {
            return false;
        }
        let synced = lags.filter(|l| l.is_some_and(|l| l <= self.bound)).count();
        if synced >= wanted && now.duration_since(master_since) >= ARM_DELAY {
            self.armed_for = Some(master.to_string());
        }
        let armed = self.armed_for.as_deref() == Some(master);
        let holds = armed && synced < wanted;
        if holds != self.tripped {
            self.tripped = holds;
            if holds {
                tracing::warn!(%master, synced, wanted, "too few replicas have caught up with the master: holding writes");
            } else {
                tracing::info!(%master, synced, "the write guard releases: writes resume");
            }
        }
        holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(replid: &str, offset: i64) -> OffsetSample {
        OffsetSample {
            replid: replid.into(),
            offset,
            taken_at: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lag_is_the_age_of_the_newest_sample_a_replica_reached() {
        let mut h = OffsetHistory::default();
        h.record(&sample("r", 100));
        tokio::time::advance(Duration::from_millis(300)).await;
        h.record(&sample("r", 200));
        tokio::time::advance(Duration::from_millis(100)).await;
        let now = Instant::now();
        assert_eq!(h.lag_of(Some("r"), 200, now), Some(Duration::ZERO));
        assert_eq!(
            h.lag_of(Some("r"), 150, now),
            Some(Duration::from_millis(400))
        );
        assert_eq!(h.lag_of(Some("r"), 50, now), None, "behind every sample");
        assert_eq!(h.lag_of(Some("other"), 200, now), None, "another history");
        assert_eq!(h.lag_of(None, 200, now), None);
        // No new writes: the replica that has the last offset stays current.
        tokio::time::advance(Duration::from_secs(5)).await;
        h.record(&sample("r", 200));
        assert_eq!(
            h.lag_of(Some("r"), 200, Instant::now()),
            Some(Duration::ZERO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_history_starts_over_and_old_samples_age_out() {
        let mut h = OffsetHistory::default();
        h.record(&sample("old", 1000));
        h.record(&sample("new", 10));
        assert_eq!(h.lag_of(Some("old"), 1000, Instant::now()), None);
        assert_eq!(
            h.lag_of(Some("new"), 10, Instant::now()),
            Some(Duration::ZERO)
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        h.record(&sample("new", 20));
        assert_eq!(h.samples.len(), 1, "the 31 s old sample is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn the_write_guard_arms_once_in_sync_and_holds_when_replicas_fall_behind() {
        let mut g = WriteGuard::new(1, Duration::from_millis(300));
        let since = Instant::now();
        let fine = [Some(Duration::from_millis(5)), None];
        let behind = [Some(Duration::from_millis(900)), None];
        // A new master whose replicas are still catching up is not held.
        assert!(!g.holds("m:1", since, Instant::now(), 2, behind.into_iter()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!g.holds("m:1", since, Instant::now(), 2, fine.into_iter()));
        // Not armed before the delay, even in sync.
        assert!(!g.holds("m:1", since, Instant::now(), 2, behind.into_iter()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!g.holds("m:1", since, Instant::now(), 2, fine.into_iter()));
        // Armed: falling behind holds writes, catching up releases them.
        assert!(g.holds("m:1", since, Instant::now(), 2, behind.into_iter()));
        assert!(!g.holds("m:1", since, Instant::now(), 2, fine.into_iter()));
        // Another master starts unarmed.
        assert!(!g.holds("m:2", Instant::now(), Instant::now(), 2, behind.into_iter()));
        // No replicas known, or the guard off: never held.
        assert!(!g.holds("m:1", since, Instant::now(), 0, behind.into_iter()));
        let mut off = WriteGuard::new(0, Duration::from_millis(300));
        assert!(!off.holds("m:1", since, Instant::now(), 2, behind.into_iter()));
    }
}
