//! View counts, kept off the page's path: a page load adds one in memory,
//! and a task writes the counts every `--view-flush-ms` as one script (all
//! or none). A page never waits for a write, so during a failover readers
//! get their pages from the replicas while the counts wait here for the
//! new master.
//!
//! Counts the gateway says were not written (`TRYAGAIN`, a refusal) are
//! kept for the next flush; counts that may or may not have been written
//! (`UNCERTAIN`, a lost connection) are dropped and logged, so a view is
//! never counted twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{did_not_run, Store};

/// Pending view counts; cheap to clone.
#[derive(Clone)]
pub struct Views {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    pending: Mutex<HashMap<String, u64>>,
    /// One flush at a time: a count kept after a failed flush must not race
    /// the next one.
    flushing: tokio::sync::Mutex<()>,
}

impl Views {
    /// Starts the task that writes the counts every `every`.
    pub fn start(store: Store, every: Duration) -> Views {
        let views = Views {
            inner: Arc::new(Inner {
                store,
                pending: Mutex::new(HashMap::new()),
                flushing: tokio::sync::Mutex::new(()),
            }),
        };
        let task = views.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                task.flush_now().await;
            }
        });
        views
    }

    /// One more view of story `id`.
    pub fn count(&self, id: &str) {
        let mut pending = self.inner.pending.lock().expect("views lock");
        *pending.entry(id.to_string()).or_default() += 1;
    }

    /// Writes what is pending now.
    pub async fn flush_now(&self) {
        let _one = self.inner.flushing.lock().await;
        let batch: Vec<(String, u64)> = {
            let mut pending = self.inner.pending.lock().expect("views lock");
            std::mem::take(&mut *pending).into_iter().collect()
        };
        if batch.is_empty() {
            return;
        }
        let n: u64 = batch.iter().map(|(_, n)| n).sum();
        match self.inner.store.add_views(&batch).await {
            Ok(()) => {}
            Err(e) if did_not_run(&e) => {
                tracing::info!("{n} views not written yet, kept for the next flush: {e}");
                let mut pending = self.inner.pending.lock().expect("views lock");
                for (id, k) in batch {
                    *pending.entry(id).or_default() += k;
                }
            }
            Err(e) => {
                tracing::warn!("{n} views may or may not have been counted (not sent again): {e}")
            }
        }
    }
}
