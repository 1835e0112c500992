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
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
use crate::discovery::{ClusterDiscovery, Discovery, Event};
use crate::drain::Drain;
use crate::metrics::{Metrics, Telemetry};
use crate::reload::{ConfigSource, LiveConfig};
use crate::session::{ClientStream, Session};
use crate::topology::Topology;

/// What every session of one worker reads: settings, the current topology,
/// and where to report signs of a topology change.
pub struct Shared {
    /// The settings in effect; a reload swaps them (see `reload`).
    pub config: Arc<LiveConfig>,
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
    /// Sessions asked to close between replies, across workers.
    pub drain: Arc<Drain>,
    /// Accept loops running, across workers.
    accepting: Arc<AtomicUsize>,
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
        config: Arc<LiveConfig>,
        topology: watch::Receiver<Arc<Topology>>,
        events: mpsc::UnboundedSender<Event>,
        telemetry: Telemetry,
    ) -> Shared {
        Shared {
            limits: config.load().limits(),
            config,
            topology,
            events,
            databases: 16,
            auth_throttle: Arc::new(AuthThrottle::default()),
            admin_log: Arc::new(AdminLog::default()),
            metrics: telemetry.metrics,
            activity: telemetry.activity,
            drain: Arc::new(Drain::default()),
            accepting: Arc::new(AtomicUsize::new(0)),
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
            config: self.config.clone(),
            topology: self.topology.clone(),
            events: self.events.clone(),
            limits: self.limits,
            databases: self.databases,
            auth_throttle: self.auth_throttle.clone(),
            admin_log: self.admin_log.clone(),
            metrics: self.metrics.clone(),
            activity: self.activity.clone(),
            drain: self.drain.clone(),
            accepting: self.accepting.clone(),
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
    /// The clients' listening sockets: one bound here, or every one a
    /// gateway being upgraded handed over (see `upgrade`); plaintext and
    /// TLS, at least one per worker of each kind configured.
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
    _discovery: AbortOnDrop,
    /// The admin endpoint, if it is on.
    admin: Option<AdminEndpoint>,
}

/// A client listening socket, and whether its clients speak TLS.
struct Listener {
    socket: TcpListener,
    tls: bool,
}

/// The admin endpoint's address, its task and (for a hand-off) a copy of
/// its listening socket.
struct AdminEndpoint {
    addr: SocketAddr,
    socket: OwnedFd,
    _task: AbortOnDrop,
}

/// Listening sockets passed from one gateway process to the next.
#[derive(Debug)]
pub struct Sockets {
    pub clients: Vec<OwnedFd>,
    /// The TLS listener's sockets.
    pub tls_clients: Vec<OwnedFd>,
    pub admin: Option<OwnedFd>,
}

/// How a gateway starts besides its config.
#[derive(Default)]
pub struct Start {
    /// Where `reload` reads the config again; without one a reload is
    /// refused.
    pub source: Option<ConfigSource>,
    /// Listening sockets taken over from a running gateway, used instead
    /// of binding new ones.
    pub inherited: Option<Sockets>,
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

/// A listening socket handed over by another process, for this runtime.
fn adopt_listener(fd: OwnedFd) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// What `bind` makes of the config before it runs with it (and a reload
/// before it compares): every worker gets shared connections of its own.
pub(crate) fn normalize(cfg: &mut GatewayConfig) {
    let workers = cfg.threads.max(1);
    cfg.connections_per_node = cfg.connections_per_node.div_ceil(workers) * workers;
}

impl Gateway {
    /// Binds the listen address and starts discovery.
    pub async fn bind(cfg: GatewayConfig) -> anyhow::Result<Gateway> {
        Gateway::start(cfg, Start::default()).await
    }

    /// Binds the listen address (or takes over `start.inherited`) and
    /// starts discovery.
    pub async fn start(mut cfg: GatewayConfig, start: Start) -> anyhow::Result<Gateway> {
        cfg.validate()?;
        cfg.load_tls()?;
        let (plain, tls, inherited_admin) = match start.inherited {
            Some(sockets) => {
                let adopt = |fds: Vec<OwnedFd>| {
                    fds.into_iter()
                        .map(adopt_listener)
                        .collect::<std::io::Result<Vec<_>>>()
                        .context("cannot use the listening sockets handed over")
                };
                (
                    adopt(sockets.clients)?,
                    adopt(sockets.tls_clients)?,
                    sockets.admin,
                )
            }
            None => (Vec::new(), Vec::new(), None),
        };
        // A kind of listener the running gateway did not hand over (or
        // none at all) is bound here.
        let plain = match (plain.is_empty(), cfg.plain_listen()) {
            (true, Some(listen)) => vec![bind_listen(listen, "--listen").await?],
            _ => plain,
        };
        let tls = match (tls.is_empty(), &cfg.tls_listen) {
            (true, Some(listen)) => vec![bind_listen(listen, "--tls-listen").await?],
            _ => tls,
        };
        if plain.is_empty() && tls.is_empty() {
            anyhow::bail!("no listening socket to accept clients on");
        }
        // One listener per worker, all bound here, so that a hand-off
        // passes every one of them on (a listener closed with clients in
        // its queue would reset them).
        let mut listeners = Vec::new();
        for (mut sockets, tls) in [(plain, false), (tls, true)] {
            if let Some(first) = sockets.first() {
                let addr = addr_of(first);
                for worker in sockets.len()..cfg.threads.max(1) {
                    sockets.push(
                        bind_reuseport(addr)
                            .with_context(|| format!("cannot open listener {worker} on {addr}"))?,
                    );
                }
            }
            listeners.extend(sockets.into_iter().map(|socket| Listener { socket, tls }));
        }
        normalize(&mut cfg);
        let config = Arc::new(LiveConfig::new(cfg, start.source));
        let telemetry = Telemetry::default();
        let (discovery, topology, events) = if config.load().cluster.is_empty() {
            let (d, topology, events) = Discovery::new(config.clone(), telemetry.clone());
            (AbortOnDrop(tokio::spawn(d.run())), topology, events)
        } else {
            let (d, topology, events) = ClusterDiscovery::new(config.clone(), telemetry.clone());
            (AbortOnDrop(tokio::spawn(d.run())), topology, events)
        };
        let shared = Arc::new(Shared::new(config, topology, events, telemetry));
        let admin = start_admin(&shared, addr_of(&listeners[0].socket), inherited_admin).await?;
        Ok(Gateway {
            listeners,
            shared,
            _discovery: discovery,
            admin,
        })
    }

    /// Where the admin endpoint listens, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The plaintext listener's address, or the TLS listener's when it is
    /// the only one.
    pub fn local_addr(&self) -> SocketAddr {
        addr_of(&self.listeners[0].socket)
    }

    /// The plaintext listener's address, if there is one.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| !l.tls)
            .map(|l| addr_of(&l.socket))
    }

    /// The TLS listener's address, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.tls)
            .map(|l| addr_of(&l.socket))
    }

    /// The settings in effect, and the handle to reload them.
    pub fn config(&self) -> Arc<LiveConfig> {
        self.shared.config.clone()
    }

    /// Copies of the listening sockets, for a new gateway process to take
    /// over (see `upgrade`).
    pub fn sockets(&self) -> std::io::Result<Sockets> {
        use std::os::fd::AsFd;
        let of_kind = |tls: bool| {
            self.listeners
                .iter()
                .filter(|l| l.tls == tls)
                .map(|l| l.socket.as_fd().try_clone_to_owned())
                .collect::<std::io::Result<Vec<_>>>()
        };
        Ok(Sockets {
            clients: of_kind(false)?,
            tls_clients: of_kind(true)?,
            admin: match &self.admin {
                Some(a) => Some(a.socket.try_clone()?),
                None => None,
            },
        })
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
        let stop = CancellationToken::new();
        for listener in self.listeners {
            tokio::spawn(accept_loop(
                listener.socket,
                listener.tls,
                self.shared.clone(),
                stop.clone().cancelled_owned(),
            ));
        }
        shutdown.await;
        stop.cancel();
        Ok(())
    }

    /// Serves with `cfg.threads` worker threads, each with its own
    /// single-threaded runtime, until `drain` completes; then stops
    /// accepting, lets every session close between replies (see `drain`)
    /// for up to `drain_timeout_secs`, and returns.
    pub async fn run_workers(self, drain: impl Future<Output = ()>) -> anyhow::Result<()> {
        let cfg = self.shared.config.load();
        let workers = cfg.threads.max(1);
        // Accepting stops at `stop`; the workers' runtimes (and with them
        // the sessions left) end at `done`.
        let stop = CancellationToken::new();
        let done = CancellationToken::new();
        let Gateway {
            listeners,
            shared: base,
            _discovery,
            admin,
        } = self;
        // Every listener is accepted on (a socket nobody accepts on would
        // keep its clients waiting): `start` bound at least one per worker,
        // a hand-off from a gateway with more workers brings more.
        let mut sets: Vec<Vec<(std::net::TcpListener, bool)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let (plain, tls): (Vec<_>, Vec<_>) = listeners.into_iter().partition(|l| !l.tls);
        for kind in [plain, tls] {
            for (i, l) in kind.into_iter().enumerate() {
                sets[i % workers].push((l.socket.into_std()?, l.tls));
            }
        }
        let mut threads = Vec::new();
        for (worker, set) in sets.into_iter().enumerate() {
            let shared = Arc::new(base.for_worker(worker, workers));
            let (stop, done) = (stop.clone(), done.clone());
            let thread = std::thread::Builder::new()
                .name(format!("belay-worker-{worker}"))
                .spawn(move || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot start a worker runtime")?;
                    rt.block_on(async move {
                        for (listener, tls) in set {
                            let listener = TcpListener::from_std(listener)?;
                            tokio::spawn(accept_loop(
                                listener,
                                tls,
                                shared.clone(),
                                stop.clone().cancelled_owned(),
                            ));
                        }
                        done.cancelled().await;
                        Ok::<_, anyhow::Error>(())
                    })
                })
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
        drain.await;
        stop.cancel();
        // Every accept loop has stopped before the first session closes:
        // a client closed by the drain reconnects at once, and must reach
        // the successor (or be refused), not a worker still accepting.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while base.accepting.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Health checks and operators now reach the successor, if any.
        drop(admin);
        drain_sessions(&base, Duration::from_secs(cfg.drain_timeout_secs)).await;
        done.cancel();
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        Ok(())
    }
}

/// Binds a clients' address (`flag` names where it came from).
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

/// Asks every session to close between replies and waits until all have,
/// or `timeout` passed.
async fn drain_sessions(shared: &Shared, timeout: Duration) {
    let clients = shared.clients.load(Ordering::Relaxed);
    tracing::info!(
        clients,
        "draining: no new clients; each client is closed between replies (at most {timeout:?})"
    );
    shared.drain.start();
    let started = tokio::time::Instant::now();
    loop {
        let left = shared.clients.load(Ordering::Relaxed);
        if left == 0 {
            tracing::info!(took = ?started.elapsed(), "drained: every client closed");
            return;
        }
        if started.elapsed() >= timeout {
            tracing::warn!(
                clients = left,
                "drain time is up; closing the clients left (their commands in flight may or may not have run)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn addr_of(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

/// Binds the admin endpoint (see `admin`) and serves it on this runtime.
/// An address asked for must work, and must be loopback unless a password
/// protects it; the default address, if taken, only earns a warning. A
/// socket handed over by the gateway this one replaces is used as it is.
async fn start_admin(
    shared: &Arc<Shared>,
    listen: SocketAddr,
    inherited: Option<OwnedFd>,
) -> anyhow::Result<Option<AdminEndpoint>> {
    use std::os::fd::AsFd;
    let cfg = shared.config.load();
    let Some(plan) = cfg.admin_plan(listen) else {
        return Ok(None);
    };
    let listener = match (inherited, &plan) {
        (Some(fd), _) => {
            adopt_listener(fd).context("cannot use the admin socket handed over")?
        }
        (None, AdminListen::Explicit(addr)) => TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("cannot listen on {addr} for the admin endpoint (--admin-listen; --no-admin turns it off)"))?,
        (None, AdminListen::Derived(addr)) => match TcpListener::bind(addr).await {
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
    let socket = listener.as_fd().try_clone_to_owned()?;
    let state = Arc::new(crate::admin::AdminState {
        registry: crate::metrics::registry(crate::metrics::Exporter {
            metrics: shared.metrics.clone(),
            topology: shared.topology.clone(),
            clients: shared.clients.clone(),
        }),
        topology: shared.topology.clone(),
        activity: shared.activity.clone(),
        admin_log: shared.admin_log.clone(),
        config: shared.config.clone(),
        switchover_running: Default::default(),
    });
    let task = AbortOnDrop(tokio::spawn(crate::admin::serve(listener, state)));
    Ok(Some(AdminEndpoint {
        addr,
        socket,
        _task: task,
    }))
}

/// Accepts clients and spawns a session for each, until `shutdown`.
async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let max_clients = shared.config.load().max_clients;
    shared.accepting.fetch_add(1, Ordering::AcqRel);
    let _stopped = Stopped(&shared.accepting);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            a = listener.accept() => a,
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
            if let Some(stream) = client_stream(stream, tls, &shared).await {
                Session::new(id, stream, shared.clone()).run().await;
            }
            shared.clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The client's stream: as accepted, or after the TLS handshake with the
/// certificate of the settings in effect (a reload's new one from the next
/// handshake on), bounded by the login deadline, so a client that connects
/// and says nothing is not kept. A failed handshake closes the client and
/// is logged at debug: a port scanner or a plaintext client on the TLS
/// port is no event.
async fn client_stream(
    tcp: tokio::net::TcpStream,
    tls: bool,
    shared: &Shared,
) -> Option<ClientStream> {
    if !tls {
        return Some(ClientStream::Plain(tcp));
    }
    let cfg = shared.config.load();
    let acceptor = cfg.tls_acceptor.clone()?;
    let peer = tcp.peer_addr().ok();
    let deadline = cfg.auth_timeout().unwrap_or(Duration::from_secs(10));
    match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
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
            match not_ready(&t, replicas) {
                None => return Ok(()),
                Some(why) => why,
            }
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("the gateway is not ready after {timeout:?}: {missing}");
        }
        let _ = tokio::time::timeout_at(deadline, topology.changed()).await;
    }
}

/// What keeps `t` from serving with `replicas` eligible replicas (per
/// shard, in a cluster), if anything.
fn not_ready(t: &Topology, replicas: usize) -> Option<String> {
    if let Some(map) = &t.shards {
        if map.shards.is_empty() {
            return Some("no cluster node answered".into());
        }
        let unserved = map.unserved();
        if unserved > 0 {
            return Some(format!("{unserved} slots are served by no shard"));
        }
        return map.shards.iter().find_map(|shard| {
            not_ready(shard, replicas).map(|why| {
                let at = shard.read_master.as_ref().map_or("?", |m| m.addr.as_str());
                format!("shard of {at}: {why}")
            })
        });
    }
    let eligible = t.eligible_replicas().count();
    if t.is_ready() && eligible >= replicas {
        return None;
    }
    Some(match (&t.master, t.commands.is_empty()) {
        (None, _) => format!(
            "writes are held ({})",
            t.write_hold.map_or("no master", |h| h.describe())
        ),
        (_, true) => "the master's command table is not loaded".to_string(),
        _ => format!("{eligible} of {replicas} replicas are eligible for reads"),
    })
}

/// Counts an accept loop out however it ends.
struct Stopped<'a>(&'a AtomicUsize);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stops the discovery task when the gateway goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
