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
use crate::session::{ClientStream, Session};
use crate::tls::ClientTls;
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
    /// The TLS listener's handshakes, when there is one.
    pub tls: Option<Arc<ClientTls>>,
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
            tls: None,
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
            tls: self.tls.clone(),
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
    listeners: Listeners,
    shared: Arc<Shared>,
    _discovery: AbortOnDrop,
    /// The admin endpoint's address and task, if it is on.
    admin: Option<(SocketAddr, AbortOnDrop)>,
}

/// The client listeners of one worker: plaintext, TLS, or both.
struct Listeners {
    plain: Option<TcpListener>,
    tls: Option<TcpListener>,
}

impl Listeners {
    /// The first listener's address: the plaintext one if there is one.
    fn addr(&self) -> SocketAddr {
        let l = self.plain.as_ref().or(self.tls.as_ref());
        addr_of(l.expect("validation leaves at least one listener"))
    }
}

/// Resolves and binds one listen address (see [`bind_reuseport`]).
async fn bind_listen(listen: &str, flag: &str) -> anyhow::Result<TcpListener> {
    let listen_err = || {
        format!(
            "cannot listen on {listen} (is another process using it? choose another with {flag})"
        )
    };
    let addr = tokio::net::lookup_host(listen)
        .await
        .with_context(listen_err)?
        .next()
        .with_context(listen_err)?;
    bind_reuseport(addr).with_context(listen_err)
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
        cfg.load_tls()?;
        let tls = ClientTls::from_config(&cfg)?.map(Arc::new);
        let listeners = Listeners {
            plain: match cfg.plain_listen() {
                Some(listen) => Some(bind_listen(listen, "--listen").await?),
                None => None,
            },
            tls: match &cfg.tls_listen {
                Some(listen) => Some(bind_listen(listen, "--tls-listen").await?),
                None => None,
            },
        };
        // Every worker gets shared connections of its own.
        let workers = cfg.threads.max(1);
        cfg.connections_per_node = cfg.connections_per_node.div_ceil(workers) * workers;
        let cfg = Arc::new(cfg);
        let telemetry = Telemetry::default();
        let (discovery, topology, events) = Discovery::new(cfg.clone(), telemetry.clone());
        let discovery = AbortOnDrop(tokio::spawn(discovery.run()));
        let mut shared = Shared::new(cfg, topology, events, telemetry);
        shared.tls = tls;
        let shared = Arc::new(shared);
        let admin = start_admin(&shared, listeners.addr()).await?;
        Ok(Gateway {
            listeners,
            shared,
            _discovery: discovery,
            admin,
        })
    }

    /// Where the admin endpoint listens, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// The plaintext listener's address, or the TLS listener's when it is
    /// the only one.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.addr()
    }

    /// The plaintext listener's address, if there is one.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.listeners.plain.as_ref().map(addr_of)
    }

    /// The TLS listener's address, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners.tls.as_ref().map(addr_of)
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
        accept_loop(&self.listeners, self.shared.clone(), shutdown).await;
        Ok(())
    }

    /// Serves with `cfg.threads` worker threads, each with its own
    /// single-threaded runtime and listener, until `shutdown` completes.
    pub async fn run_workers(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let workers = self.shared.cfg.threads.max(1);
        let plain_addr = self.listeners.plain.as_ref().map(addr_of);
        let tls_addr = self.tls_addr();
        // Keep discovery running (on this runtime) while the workers serve.
        let stop = CancellationToken::new();
        let mut threads = Vec::new();
        let Gateway {
            listeners,
            shared: base,
            _discovery,
            admin: _admin,
        } = self;
        let mut first = Some(listeners);
        for worker in 0..workers {
            let listeners = match first.take() {
                Some(l) => l,
                None => Listeners {
                    plain: plain_addr.map(|a| worker_listener(worker, a)).transpose()?,
                    tls: tls_addr.map(|a| worker_listener(worker, a)).transpose()?,
                },
            };
            // Moved to the worker's runtime as std sockets.
            let plain = listeners.plain.map(|l| l.into_std()).transpose()?;
            let tls = listeners.tls.map(|l| l.into_std()).transpose()?;
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
                        let listeners = Listeners {
                            plain: plain.map(TcpListener::from_std).transpose()?,
                            tls: tls.map(TcpListener::from_std).transpose()?,
                        };
                        accept_loop(&listeners, shared, stop.cancelled()).await;
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

/// Another worker's listener on a bound address.
fn worker_listener(worker: usize, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    bind_reuseport(addr).with_context(|| format!("cannot open listener {worker} on {addr}"))
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
    listeners: &Listeners,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let max_clients = shared.cfg.max_clients;
    loop {
        let (accepted, tls) = tokio::select! {
            a = accept(listeners.plain.as_ref()) => (a, false),
            a = accept(listeners.tls.as_ref()) => (a, true),
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
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = if tls { shared.tls.clone() } else { None };
            if let Some(stream) = client_stream(stream, tls.as_deref(), &shared).await {
                Session::new(id, stream, shared.clone()).run().await;
            }
            shared.clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The next client of a listener; never, without one.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The client's stream: as accepted, or after the TLS handshake (bounded by
/// the login deadline, so a client that connects and says nothing is not
/// kept). A failed handshake closes the client, and is logged at debug: a
/// port scanner or a plaintext client on the TLS port is no event.
async fn client_stream(
    tcp: tokio::net::TcpStream,
    tls: Option<&ClientTls>,
    shared: &Shared,
) -> Option<ClientStream> {
    let Some(tls) = tls else {
        return Some(ClientStream::Plain(tcp));
    };
    let peer = tcp.peer_addr().ok();
    let deadline = shared
        .cfg
        .auth_timeout()
        .unwrap_or(std::time::Duration::from_secs(10));
    match tokio::time::timeout(deadline, tls.accept(tcp)).await {
        Ok(Ok(stream)) => Some(ClientStream::Tls(Box::new(stream))),
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "no TLS handshake within {deadline:?}");
            None
        }
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
