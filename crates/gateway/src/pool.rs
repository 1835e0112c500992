//! Connections to one node: a few shared (multiplexed) ones for sessions in
//! the default state, and dedicated ones on demand for stateful sessions.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use belay_client::ClientError;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::backend::{BackendConn, ConnectSpec, ReplyResult};
use tokio::sync::oneshot;

/// Why the pool could not hand out a connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connections to {addr} are closed (the node was demoted or left the topology)")]
    Closed { addr: String },
    #[error("{0}")]
    Connect(#[from] ClientError),
    #[error("not reconnecting to {addr} for {wait:?} after a failure")]
    Backoff { addr: String, wait: Duration },
}

/// The connections belay keeps to one node in one role.
pub struct NodePool {
    pub addr: String,
    /// Base settings for every connection of this pool.
    spec: ConnectSpec,
    shared: Vec<ArcSwapOption<BackendConn>>,
    /// Serializes reconnects of each shared slot.
    connecting: Vec<tokio::sync::Mutex<()>>,
    /// Caps concurrent connection attempts to this node, so a thousand
    /// clients arriving at once after a failover do not open a thousand
    /// sockets at the same instant.
    connect_gate: Semaphore,
    closed: AtomicBool,
    /// Commands in flight on the shared connections (each adds its own).
    load: Arc<AtomicUsize>,
    /// When the last connect failed, and how long to wait before the next.
    backoff: Mutex<Option<(Instant, Duration)>>,
}

const MAX_CONCURRENT_CONNECTS: usize = 16;

impl NodePool {
    pub fn new(spec: ConnectSpec, shared_connections: usize) -> NodePool {
        NodePool {
            addr: spec.addr.clone(),
            spec,
            shared: (0..shared_connections)
                .map(|_| ArcSwapOption::empty())
                .collect(),
            connecting: (0..shared_connections)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            connect_gate: Semaphore::new(MAX_CONCURRENT_CONNECTS),
            closed: AtomicBool::new(false),
            load: Arc::new(AtomicUsize::new(0)),
            backoff: Mutex::new(None),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes every connection now and refuses new ones. Pinned connections
    /// check `is_closed` before each use.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.shared {
            if let Some(conn) = slot.swap(None) {
                conn.close();
            }
        }
    }

    /// Requests in flight on the shared connections, for least-outstanding choice.
    pub fn outstanding(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// Pretends `n` commands are in flight (routing tests).
    #[cfg(test)]
    pub fn add_load(&self, n: usize) {
        self.load.fetch_add(n, Ordering::Relaxed);
    }

    /// Sends `count` commands (encoded back to back in `raw`) on shared
    /// connection number `hint % n` if it is up; gives `raw` back if it is
    /// not (then [`NodePool::shared`] connects). Takes no lock, clones nothing.
    pub fn try_send_shared(
        &self,
        hint: usize,
        raw: Bytes,
        count: u32,
    ) -> Result<oneshot::Receiver<ReplyResult>, Bytes> {
        let guard = self.shared[hint % self.shared.len()].load();
        match guard.as_ref() {
            Some(conn) if conn.is_alive() => Ok(conn.send_batch(raw, count, false)),
            _ => Err(raw),
        }
    }

    /// True when shared connection number `hint % n` is up.
    pub fn shared_is_up(&self, hint: usize) -> bool {
        self.shared[hint % self.shared.len()]
            .load()
            .as_ref()
            .is_some_and(|c| c.is_alive())
    }

    /// Shared connection number `hint % n`, connecting if needed.
    pub async fn shared(&self, hint: usize) -> Result<Arc<BackendConn>, PoolError> {
        let i = hint % self.shared.len();
        if let Some(conn) = self.shared[i].load_full() {
            if conn.is_alive() {
                return Ok(conn);
            }
        }
        self.check_open()?;
        let _guard = self.connecting[i].lock().await;
        if let Some(conn) = self.shared[i].load_full() {
            if conn.is_alive() {
                return Ok(conn);
            }
        }
        let spec = ConnectSpec {
            load: Some(self.load.clone()),
            ..self.spec.clone()
        };
        let conn = Arc::new(self.connect(spec).await?);
        if self.is_closed() {
            conn.close();
            return Err(PoolError::Closed {
                addr: self.addr.clone(),
            });
        }
        self.shared[i].store(Some(conn.clone()));
        Ok(conn)
    }

    /// A new connection for one session, set up with `init` (SELECT, HELLO,
    /// CLIENT SETNAME, AUTH as another user). `blocking` connections have no
    /// silence watchdog: BLPOP may legitimately wait forever.
    pub async fn dedicated(
        &self,
        init: Vec<Vec<Bytes>>,
        auth: Option<belay_client::Auth>,
        blocking: bool,
    ) -> Result<BackendConn, PoolError> {
        self.check_open()?;
        let mut spec = self.spec.clone();
        spec.init = init;
        if auth.is_some() {
            spec.auth = auth;
        }
        if blocking {
            spec.request_timeout = None;
        }
        self.connect(spec).await
    }

    /// The spec a subscription tunnel should use.
    pub fn tunnel_spec(&self, init: Vec<Vec<Bytes>>) -> ConnectSpec {
        let mut spec = self.spec.clone();
        spec.init = init;
        spec.request_timeout = None;
        spec
    }

    fn check_open(&self) -> Result<(), PoolError> {
        if self.is_closed() {
            return Err(PoolError::Closed {
                addr: self.addr.clone(),
            });
        }
        if let Some((at, wait)) = *self.backoff.lock().unwrap() {
            let elapsed = at.elapsed();
            if elapsed < wait {
                return Err(PoolError::Backoff {
                    addr: self.addr.clone(),
                    wait: wait - elapsed,
                });
            }
        }
        Ok(())
    }

    async fn connect(&self, spec: ConnectSpec) -> Result<BackendConn, PoolError> {
        let _permit = self
            .connect_gate
            .acquire()
            .await
            .map_err(|_| PoolError::Closed {
                addr: self.addr.clone(),
            })?;
        match BackendConn::open(&spec).await {
            Ok(conn) => {
                *self.backoff.lock().unwrap() = None;
                Ok(conn)
            }
            Err(e) if e.is_reply() => {
                // The node answered (a wrong password, an ACL refusal): it is
                // alive, so this is no reason to back off from it.
                Err(PoolError::Connect(e))
            }
            Err(e) => {
                let mut backoff = self.backoff.lock().unwrap();
                let next = match *backoff {
                    Some((_, prev)) => (prev * 2).min(Duration::from_secs(2)),
                    None => Duration::from_millis(50),
                };
                // Jitter spreads the reconnects of many gateways and pools.
                let jitter = Duration::from_millis(
                    rand::random::<u64>() % (next.as_millis() as u64 / 2 + 1),
                );
                *backoff = Some((Instant::now(), next + jitter));
                Err(PoolError::Connect(e))
            }
        }
    }
}

impl Drop for NodePool {
    fn drop(&mut self) {
        for slot in &self.shared {
            if let Some(conn) = slot.swap(None) {
                conn.close();
            }
        }
    }
}
