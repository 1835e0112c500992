//! Accepting clients: listeners, worker threads, the client limit, and the
//! state every session shares.
//!
//! In production (`belay gateway`) each worker is a thread with its own
//! single-threaded tokio runtime and its own `SO_REUSEPORT` listener: a
//! session, the backend connections it shares and their tasks all live on one
//! thread, so the per-command path has no cross-thread wake-ups (the
//! twemproxy/predixy shape, one event loop per core). Discovery runs on the
//! caller's runtime and publishes the topology to every worker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use belay_resp::Limits;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityLog;
use crate::admin_log::AdminLog;
use crate::auth_throttle::AuthThrottle;
use crate::config::{AdminListen, GatewayConfig};
use crate::discovery::{Discovery, Event};
use crate::metrics::{Metrics, Telemetry};
use crate::session::Session;
use crate::topology::Topology;

/// What every session of one worker reads: settings, the current topology,
/// and where to report signs of a topology change.
pub struct Shared {
    pub cfg: Arc<GatewayConfig>,
    pub topology: watch::Receiver<Arc<Topology>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub limits: Limits,
    /// `SELECT` range; Redis's default.
    pub databases: u32,
    /// Failed logins per client address, across workers.
    pub auth_throttle: Arc<AuthThrottle>,
    /// Commands run on every data node, and which took them.
    pub admin_log: Arc<AdminLog>,
    /// What the gateway counts (see `metrics`).
    pub metrics: Arc<Metrics>,
    /// What the gateway saw and did (the admin endpoint's `/events`).
    pub activity: Arc<ActivityLog>,
    /// Reads this worker routed to replicas: the turn that decides which
    /// replica is the current one (see `router::pick_replica`). Per worker,
    /// so the sessions routing in one turn of its event loop agree.
    reads: AtomicUsize,
    /// This worker's index and the number of workers: a session uses the
    /// shared backend connections of its own worker.
    pub worker: usize,
    pub workers: usize,
    /// Clients connected across all workers, for `max_clients`.
    pub clients: Arc<AtomicUsize>,
    /// Session ids, unique across workers.
    pub next_id: Arc<AtomicU64>,
}

impl Shared {
    /// The state of a single-worker gateway (workers get theirs from
    /// [`Shared::for_worker`]).
    pub fn new(
        cfg: Arc<GatewayConfig>,
        topology: watch::Receiver<Arc<Topology>>,
        events: mpsc::UnboundedSender<Event>,
        telemetry: Telemetry,
    ) -> Shared {
        Shared {
            limits: cfg.limits(),
            cfg,
            topology,
            events,
            databases: 16,
            auth_throttle: Arc::new(AuthThrottle::default()),
            admin_log: Arc::new(AdminLog::default()),
            metrics: telemetry.metrics,
            activity: telemetry.activity,
            reads: AtomicUsize::new(0),
            worker: 0,
            workers: 1,
            clients: Arc::new(AtomicUsize::new(0)),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The same state for another worker.
    fn for_worker(&self, worker: usize, workers: usize) -> Shared {
        Shared {
            cfg: self.cfg.clone(),
            topology: self.topology.clone(),
            events: self.events.clone(),
            limits: self.limits,
            databases: self.databases,
            auth_throttle: self.auth_throttle.clone(),
            admin_log: self.admin_log.clone(),
            metrics: self.metrics.clone(),
            activity: self.activity.clone(),
            reads: AtomicUsize::new(0),
            worker,
            workers,
            clients: self.clients.clone(),
            next_id: self.next_id.clone(),
        }
    }

    /// Which shared backend connection a session uses: one of its worker's.
    pub fn slot(&self, session: u64) -> usize {
        self.worker + self.workers * session as usize
    }

    /// The replica turn (reads routed so far by this worker).
    pub fn reads_turn(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    /// Counts a read routed to a replica. A load and a store, not an atomic
    /// add: a worker's sessions all run on its thread, and where several
    /// threads share a worker (an embedder's runtime) a lost count only
    /// moves the turn a little later.
    pub fn count_read(&self) {
        let n = self.reads.load(Ordering::Relaxed);
        self.reads.store(n.wrapping_add(1), Ordering::Relaxed);
    }
}

/// A bound gateway. Dropping it stops discovery.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    _discovery: AbortOnDrop,
    /// The admin endpoint's address and task, if it is on.
    admin: Option<(SocketAddr, AbortOnDrop)>,
}

/// Binds with `SO_REUSEPORT`, so several workers can listen on one address.
fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Gateway {
    /// Binds the listen address and starts discovery.
    pub async fn bind(mut cfg: GatewayConfig) -> anyhow::Result<Gateway> {
        cfg.validate()?;
        let listen_err = || {
            format!(
                "cannot listen on {} (is another process using it? choose another with --listen)",
                cfg.listen
            )
        };
        let addr = tokio::net::lookup_host(&cfg.listen)
            .await
            .with_context(listen_err)?
            .next()
            .with_context(listen_err)?;
        let listener = bind_reuseport(addr).with_context(listen_err)?;
        // Every worker gets shared connections of its own.
        let workers = cfg.threads.max(1);
        cfg.connections_per_node = cfg.connections_per_node.div_ceil(workers) * workers;
        let cfg = Arc::new(cfg);
        let telemetry = Telemetry::default();
        let (discovery, topology, events) = Discovery::new(cfg.clone(), telemetry.clone());
        let discovery = AbortOnDrop(tokio::spawn(discovery.run()));
        let shared = Arc::new(Shared::new(cfg, topology, events, telemetry));
        let admin = start_admin(&shared, addr_of(&listener)).await?;
        Ok(Gateway {
            listener,
            shared,
            _discovery: discovery,
            admin,
        })
    }

    /// Where the admin endpoint listens, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
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

    /// Waits until the gateway can serve: a confirmed master taking writes,
    /// the command table, and at least `replicas` replicas eligible for
    /// reads. The one readiness check the tests, the drills and the lab use.
    pub async fn wait_ready(
        &self,
        replicas: usize,
        timeout: std::time::Duration,
    ) -> anyhow::Result<()> {
        wait_ready(self.topology(), replicas, timeout).await
    }

    /// Accepts clients on the caller's runtime until `shutdown` completes.
    /// Tests and embedders use this; `belay gateway` uses [`Gateway::run_workers`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        accept_loop(&self.listener, self.shared.clone(), shutdown).await;
        Ok(())
    }

    /// Serves with `cfg.threads` worker threads, each with its own
    /// single-threaded runtime and listener, until `shutdown` completes.
    pub async fn run_workers(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let workers = self.shared.cfg.threads.max(1);
        let addr = self.local_addr();
        // Keep discovery running (on this runtime) while the workers serve.
        let stop = CancellationToken::new();
        let mut threads = Vec::new();
        let Gateway {
            listener,
            shared: base,
            _discovery,
            admin: _admin,
        } = self;
        let mut first = Some(listener.into_std()?);
        for worker in 0..workers {
            let listener = match first.take() {
                Some(l) => l,
                None => bind_reuseport(addr)
                    .with_context(|| format!("cannot open listener {worker} on {addr}"))?
                    .into_std()?,
            };
            let shared = Arc::new(base.for_worker(worker, workers));
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("belay-worker-{worker}"))
                .spawn(move || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot start a worker runtime")?;
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        accept_loop(&listener, shared, stop.cancelled()).await;
                        Ok::<_, anyhow::Error>(())
                    })
                })
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
        shutdown.await;
        stop.cancel();
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        Ok(())
    }
}

fn addr_of(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

/// Binds the admin endpoint (see `admin`) and serves it on this runtime.
/// An address asked for must work, and must be loopback unless a password
/// protects it; the default address, if taken, only earns a warning.
async fn start_admin(
    shared: &Arc<Shared>,
    listen: SocketAddr,
) -> anyhow::Result<Option<(SocketAddr, AbortOnDrop)>> {
    let cfg = &shared.cfg;
    let Some(plan) = cfg.admin_plan(listen) else {
        return Ok(None);
    };
    let listener = match &plan {
        AdminListen::Explicit(addr) => TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("cannot listen on {addr} for the admin endpoint (--admin-listen; --no-admin turns it off)"))?,
        AdminListen::Derived(addr) => match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "the admin endpoint cannot listen on its default address; going on without it (choose one with --admin-listen)");
                return Ok(None);
            }
        },
    };
    let addr = addr_of(&listener);
    if cfg.admin_password.is_none() && !crate::admin::safe_without_password(&addr) {
        anyhow::bail!(
            "the admin endpoint would listen on {addr}, reachable from other machines, without a password: give it one with --admin-password-file, or listen on 127.0.0.1"
        );
    }
    let state = Arc::new(crate::admin::AdminState {
        registry: crate::metrics::registry(crate::metrics::Exporter {
            metrics: shared.metrics.clone(),
            topology: shared.topology.clone(),
            clients: shared.clients.clone(),
        }),
        topology: shared.topology.clone(),
        activity: shared.activity.clone(),
        admin_log: shared.admin_log.clone(),
        password: cfg.admin_password.clone(),
        switchover: crate::admin::SwitchoverTarget {
            master_name: cfg.master_name.clone(),
            sentinels: cfg.sentinels.clone(),
            sentinel_auth: cfg.sentinel_auth(),
            node_auth: cfg.node_auth(),
            running: Default::default(),
        },
    });
    let task = AbortOnDrop(tokio::spawn(crate::admin::serve(listener, state)));
    Ok(Some((addr, task)))
}

/// Accepts clients and spawns a session for each, until `shutdown`.
async fn accept_loop(
    listener: &TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let max_clients = shared.cfg.max_clients;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => return,
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
        if shared.clients.load(Ordering::Relaxed) >= max_clients {
            shared.metrics.rejected_client();
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(session = id, %peer, worker = shared.worker, "client connected");
        shared.clients.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(id, stream, shared.clone());
        let clients = shared.clients.clone();
        tokio::spawn(async move {
            session.run().await;
            clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Waits until `topology` shows a master taking writes, a command table and
/// `replicas` eligible replicas; the error says what is missing.
pub async fn wait_ready(
    mut topology: watch::Receiver<Arc<Topology>>,
    replicas: usize,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let missing = {
            let t = topology.borrow_and_update();
            let eligible = t.eligible_replicas().count();
            if t.is_ready() && eligible >= replicas {
                return Ok(());
            }
            match (&t.master, t.commands.is_empty()) {
                (None, _) => format!(
                    "writes are held ({})",
                    t.write_hold.map_or("no master", |h| h.describe())
                ),
                (_, true) => "the master's command table is not loaded".to_string(),
                _ => format!("{eligible} of {replicas} replicas are eligible for reads"),
            }
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("the gateway is not ready after {timeout:?}: {missing}");
        }
        let _ = tokio::time::timeout_at(deadline, topology.changed()).await;
    }
}

/// Stops the discovery task when the gateway goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
