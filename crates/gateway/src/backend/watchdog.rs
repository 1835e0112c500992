//! A node that owes replies and says nothing is either frozen (paused,
//! cut off, dying) or busy with a slow command: from outside the two look
//! the same for a while. What differs is what must happen next, so the
//! watchdog does two things at two times. After `flag_after` of silence the
//! node gets no new commands (its health says so; writes wait for a master
//! that answers, reads go to another replica) — cheap to undo, and undone
//! as soon as it speaks. Only after `abandon_after`, a much longer bound,
//! are the commands already sent given up on ("may or may not have run"):
//! a slow script's client still gets its real reply. Sooner than that, the
//! connection is closed only when the node is known to be gone (the socket
//! closes, Sentinel reports it down, a new master replaces it).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::ConnState;
use crate::error::LostWhy;

/// The two bounds on a node's silence while it owes replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    /// Silence after which the node gets no new commands.
    pub flag_after: Duration,
    /// Silence after which the commands in flight are given up on.
    pub abandon_after: Duration,
}

/// What the watchdog concludes at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answering, or owing nothing.
    Fine,
    /// Silent for `flag_after` or more: no new commands.
    Silent,
    /// Silent for `abandon_after`: give up on the commands in flight.
    Abandon(Duration),
}

/// The watchdog's memory between looks: a counter of reads is compared,
/// which costs far less than a timer on every read.
#[derive(Debug)]
pub struct SilenceWatch {
    policy: Silence,
    last_reads: u64,
    stalled_since: Option<Instant>,
}

impl SilenceWatch {
    pub fn new(policy: Silence, reads: u64) -> SilenceWatch {
        SilenceWatch {
            policy,
            last_reads: reads,
            stalled_since: None,
        }
    }

    /// One look: `reads` is the connection's read counter now, `owing`
    /// whether it waits for replies that are not expected to take long
    /// (no blocking command in flight).
    pub fn look(&mut self, now: Instant, reads: u64, owing: bool) -> Verdict {
        let progressed = reads != self.last_reads;
        self.last_reads = reads;
        if !owing || progressed {
            self.stalled_since = None;
            return Verdict::Fine;
        }
        let since = *self.stalled_since.get_or_insert(now);
        let silent = now.duration_since(since);
        if silent >= self.policy.abandon_after {
            Verdict::Abandon(silent)
        } else if silent >= self.policy.flag_after {
            Verdict::Silent
        } else {
            Verdict::Fine
        }
    }

    /// How often to look: often enough to notice silence within about a
    /// tenth of `flag_after` past it.
    pub fn period(&self) -> Duration {
        (self.policy.flag_after / 4).max(Duration::from_millis(10))
    }
}

/// Watches one connection until it closes.
pub(super) async fn watch(state: Arc<ConnState>, policy: Silence) {
    let mut watch = SilenceWatch::new(policy, state.reads.load(Ordering::Relaxed));
    let mut tick = tokio::time::interval(watch.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flagged = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.closed.cancelled() => break,
        }
        let owing = state.outstanding.load(Ordering::Relaxed) > 0
            && state.blocking.load(Ordering::Relaxed) == 0;
        let verdict = watch.look(Instant::now(), state.reads.load(Ordering::Relaxed), owing);
        match verdict {
            Verdict::Fine => {
                if flagged {
                    flagged = false;
                    if state.health.set_silent(false) {
                        tracing::info!(addr = %state.addr, "the node answers again; it takes new commands");
                    }
                }
            }
            Verdict::Silent => {
                if !flagged {
                    flagged = true;
                    if state.health.set_silent(true) {
                        tracing::warn!(addr = %state.addr, after = ?policy.flag_after, "the node owes replies and is silent: no new commands go there until it answers (commands already sent keep waiting)");
                    }
                }
            }
            Verdict::Abandon(silent) => {
                tracing::warn!(addr = %state.addr, ?silent, "the node has been silent too long: giving up on the commands sent to it");
                state.close(LostWhy::Silent(silent));
                break;
            }
        }
    }
    if flagged {
        // Another connection may still see it silent; discovery's rounds
        // and that connection's watchdog will say so again.
        state.health.set_silent(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Silence = Silence {
        flag_after: Duration::from_secs(2),
        abandon_after: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn silence_first_stops_new_commands_and_only_much_later_abandons() {
        let mut w = SilenceWatch::new(POLICY, 0);
        let t0 = Instant::now();
        assert_eq!(w.look(t0, 0, true), Verdict::Fine);
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(w.look(Instant::now(), 0, true), Verdict::Fine);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(w.look(Instant::now(), 0, true), Verdict::Silent);
        tokio::time::advance(Duration::from_secs(27)).await;
        assert_eq!(w.look(Instant::now(), 0, true), Verdict::Silent);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            w.look(Instant::now(), 0, true),
            Verdict::Abandon(Duration::from_secs(30))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sign_of_life_or_nothing_owed_resets_the_clock() {
        let mut w = SilenceWatch::new(POLICY, 0);
        assert_eq!(w.look(Instant::now(), 0, true), Verdict::Fine);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(w.look(Instant::now(), 0, true), Verdict::Silent);
        // Part of a reply arrived.
        assert_eq!(w.look(Instant::now(), 1, true), Verdict::Fine);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(w.look(Instant::now(), 1, true), Verdict::Fine);
        // A blocking command in flight (BLPOP): silence is expected.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(w.look(Instant::now(), 1, false), Verdict::Fine);
        assert_eq!(w.look(Instant::now(), 1, true), Verdict::Fine);
    }

    #[test]
    fn looks_often_enough() {
        let w = SilenceWatch::new(POLICY, 0);
        assert_eq!(w.period(), Duration::from_millis(500));
    }
}
