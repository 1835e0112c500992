//! Accepting clients: the listener, the client limit, and the state every
//! session shares.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use belay_resp::Limits;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::GatewayConfig;
use crate::discovery::{Discovery, Event};
use crate::session::Session;
use crate::topology::Topology;

/// What every session reads: settings, the current topology, and where to
/// report signs of a topology change.
pub struct Shared {
    pub cfg: Arc<GatewayConfig>,
    pub topology: watch::Receiver<Arc<Topology>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub limits: Limits,
    /// `SELECT` range; Redis's default.
    pub databases: i64,
}

/// A bound, running gateway. Dropping it (or the `run` future) stops discovery.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    discovery: tokio::task::JoinHandle<()>,
    clients: Arc<AtomicUsize>,
}

impl Gateway {
    /// Binds the listen address and starts discovery.
    pub async fn bind(cfg: GatewayConfig) -> anyhow::Result<Gateway> {
        cfg.validate()?;
        let listener = TcpListener::bind(&cfg.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another process using it? choose another with --listen)",
                cfg.listen
            )
        })?;
        let cfg = Arc::new(cfg);
        let (discovery, topology, events) = Discovery::new(cfg.clone());
        let discovery = tokio::spawn(discovery.run());
        let shared = Arc::new(Shared {
            limits: cfg.limits(),
            cfg,
            topology,
            events,
            databases: 16,
        });
        Ok(Gateway {
            listener,
            shared,
            discovery,
            clients: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The topology as discovery currently sees it.
    pub fn topology(&self) -> watch::Receiver<Arc<Topology>> {
        self.shared.topology.clone()
    }

    /// Accepts clients until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let next_id = AtomicU64::new(1);
        let max_clients = self.shared.cfg.max_clients;
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut shutdown => break,
            };
            let (mut stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.clients.load(Ordering::Relaxed) >= max_clients {
                tokio::spawn(async move {
                    let _ = stream
                        .write_all(b"-ERR max number of clients reached\r\n")
                        .await;
                });
                continue;
            }
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(session = id, %peer, "client connected");
            let clients = self.clients.clone();
            clients.fetch_add(1, Ordering::Relaxed);
            let session = Session::new(id, stream, self.shared.clone());
            tokio::spawn(async move {
                session.run().await;
                clients.fetch_sub(1, Ordering::Relaxed);
            });
        }
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.discovery.abort();
    }
}
