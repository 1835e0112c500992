//! Draining: the gateway stops taking clients and lets each session end at
//! a point where closing costs the client nothing — between replies, never
//! in the middle of one, of a transaction or of a blocking command.
//!
//! A session checks its flag once per turn of its loop (one relaxed load);
//! an idle session is woken through an `AtomicWaker`, registered lock-free
//! each turn, so asking to drain costs the hot path no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// The gateway's drain: every live session's flag.
#[derive(Default)]
pub struct Drain {
    started: AtomicBool,
    sessions: Mutex<HashMap<u64, Arc<SessionDrain>>>,
}

/// One session's part: asked to close when it can, and how to wake it.
#[derive(Default)]
pub struct SessionDrain {
    asked: AtomicBool,
    waker: AtomicWaker,
}

impl Drain {
    /// A session's flag (already raised when the drain has started).
    pub fn register(&self, session: u64) -> Arc<SessionDrain> {
        let d = Arc::new(SessionDrain::default());
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock, so `start` cannot miss this session.
        if self.started.load(Ordering::Relaxed) {
            d.asked.store(true, Ordering::Relaxed);
        }
        sessions.insert(session, d.clone());
        d
    }

    pub fn unregister(&self, session: u64) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
    }

    /// Asks every session, now and to come, to close when it can.
    pub fn start(&self) {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.started.store(true, Ordering::Relaxed);
        for d in sessions.values() {
            d.asked.store(true, Ordering::Relaxed);
            d.waker.wake();
        }
    }
}

impl SessionDrain {
    pub fn is_asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Ready once the drain asks this session to close.
    pub fn poll_asked(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_asked() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.is_asked() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_before_and_after_the_start_are_asked() {
        let drain = Drain::default();
        let early = drain.register(1);
        assert!(!early.is_asked());
        drain.start();
        assert!(early.is_asked());
        assert!(drain.register(2).is_asked());
        drain.unregister(1);
        drain.unregister(2);
        assert!(drain.sessions.lock().unwrap().is_empty());
    }
}
