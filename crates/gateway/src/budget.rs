//! A client's output budget, in bytes: replies the gateway holds for a
//! client that has not read them yet, like Redis's
//! `client-output-buffer-limit`. Replies arrive from backend connections
//! shared with other clients, whose readers cannot wait for a slow client;
//! so they count what they hand over, and the session is told at once when
//! its client is over the limit (it is then closed), whether or not that
//! client is reading.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// Bytes held for one client: replies received and not yet moved to its
/// output buffer, plus that buffer's unsent bytes.
#[derive(Debug)]
pub struct OutputBudget {
    received: AtomicUsize,
    unsent: AtomicUsize,
    limit: usize,
    /// Set the first time the budget is exceeded, and never cleared: the
    /// client is closed for it even if, by the time the session looks,
    /// the bytes that put it over were dropped and handed back.
    tripped: AtomicBool,
    /// The session, woken when the budget is exceeded. A waker, not a
    /// `Notify`: registering is one atomic swap, cheap enough to do on
    /// every turn of a busy session's loop.
    over: AtomicWaker,
}

impl OutputBudget {
    /// `limit` 0: no limit.
    pub fn new(limit: usize) -> OutputBudget {
        OutputBudget {
            received: AtomicUsize::new(0),
            unsent: AtomicUsize::new(0),
            limit: if limit == 0 { usize::MAX } else { limit },
            tripped: AtomicBool::new(false),
            over: AtomicWaker::new(),
        }
    }

    /// A backend reader handed `n` bytes of replies to the session (or is
    /// collecting them for it). True when that put it over the limit.
    pub fn received(&self, n: usize) -> bool {
        let held = self.received.fetch_add(n, Ordering::Relaxed) + n;
        let over = held.saturating_add(self.unsent.load(Ordering::Relaxed)) > self.limit;
        if over {
            self.trip();
        }
        over
    }

    fn trip(&self) {
        self.tripped.store(true, Ordering::Relaxed);
        self.over.wake();
    }

    /// The session took `n` received bytes (into its output buffer, or
    /// dropped them).
    pub fn taken(&self, n: usize) {
        self.received.fetch_sub(n, Ordering::Relaxed);
    }

    /// The session's output buffer now holds `n` unsent bytes.
    pub fn set_unsent(&self, n: usize) {
        self.unsent.store(n, Ordering::Relaxed);
        if n > self.limit {
            self.trip();
        }
    }

    /// Bytes held for the client now.
    pub fn held(&self) -> usize {
        self.received
            .load(Ordering::Relaxed)
            .saturating_add(self.unsent.load(Ordering::Relaxed))
    }

    /// Over the limit now, or at any time before: a client that went
    /// over is closed, whatever it holds when the session gets to it.
    pub fn is_over(&self) -> bool {
        self.tripped.load(Ordering::Relaxed) || self.held() > self.limit
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Ready once the budget is exceeded.
    pub fn poll_exceeded(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.over.register(cx.waker());
        if self.is_over() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn going_over_wakes_the_session() {
        let b = std::sync::Arc::new(OutputBudget::new(100));
        b.received(60);
        b.set_unsent(30);
        assert!(!b.is_over());
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { std::future::poll_fn(|cx| b.poll_exceeded(cx)).await }
        });
        tokio::task::yield_now().await;
        b.received(20);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(b.is_over());
        b.taken(80);
        assert!(b.is_over(), "once over, over for good");
        assert_eq!(b.held(), 30);
        assert_eq!(OutputBudget::new(0).limit(), usize::MAX);
    }

    /// A split command's parts are charged as they arrive and handed back
    /// as the session takes them: the part that went over may be dropped
    /// (its bytes handed back) before the session checks. The client is
    /// still closed.
    #[test]
    fn a_budget_exceeded_for_a_moment_stays_exceeded() {
        let b = OutputBudget::new(256);
        b.received(200);
        assert!(b.received(100));
        b.taken(300);
        assert_eq!(b.held(), 0);
        assert!(b.is_over());
        let unsent = OutputBudget::new(10);
        unsent.set_unsent(11);
        unsent.set_unsent(0);
        assert!(unsent.is_over());
    }
}
