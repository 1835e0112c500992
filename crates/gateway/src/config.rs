//! Gateway settings: one struct, filled from defaults, then a TOML file, then
//! environment variables, then flags (see `cli`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use belay_client::sentinel::SentinelAuth;
use belay_client::{Auth, TlsClient};
use belay_resp::Limits;
use serde::Deserialize;

/// The files of a deployment with TLS on every hop (see
/// [`GatewayConfig::tls_everywhere`]).
#[derive(Clone, Debug)]
pub struct TlsEverywhere {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Where reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Only replicas; with no healthy replica, reads wait like writes do.
    Replica,
    /// Replicas when a healthy one exists, else the master.
    ReplicaPreferred,
    /// Everything to the master (no splitting).
    Master,
    /// An eligible replica in the gateway's own zone (`zone`), else any
    /// eligible replica, else the master: reads stay in the zone while it
    /// can serve them (cross-zone traffic costs time and money).
    ZoneReplica,
    /// The eligible replica with the lowest round-trip time the gateway
    /// measured on its control connections, else the master.
    Nearest,
}

/// How the gateway treats one command, overriding what `COMMAND` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOverride {
    /// Route as a read (to a replica).
    Read,
    /// Route to the master.
    Write,
    /// Refuse it with an error.
    Deny,
    /// Allow a command the gateway refuses by default (e.g. `config|set`); it goes to the master.
    Allow,
}

/// Everything the gateway needs to run. Field docs are the TOML keys.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address clients connect to.
    pub listen: String,
    /// The name Sentinels monitor the master under.
    pub master_name: String,
    /// Sentinel addresses (`host:port`); more are learned from them.
    pub sentinels: Vec<String>,
    /// Redis Cluster nodes to discover the cluster from (`host:port`),
    /// instead of Sentinels; the others are learned from `CLUSTER SHARDS`.
    pub cluster: Vec<String>,
    /// ACL user for data nodes (none: the default user).
    pub username: Option<String>,
    /// Password for data nodes.
    pub password: Option<String>,
    /// ACL user for Sentinels.
    pub sentinel_username: Option<String>,
    /// Password for Sentinels (default: `password`).
    pub sentinel_password: Option<String>,
    /// Password clients must `AUTH` with (default: `password`, so a gateway in
    /// front of a protected Redis is never an open door).
    pub client_password: Option<String>,
    /// Let clients in without `AUTH` even when `password` is set.
    pub no_client_auth: bool,
    /// Address of the admin HTTP endpoint (metrics, topology, events,
    /// health, dashboard); default: the client address's host, port + 1000.
    pub admin_listen: Option<String>,
    /// No admin endpoint.
    pub no_admin: bool,
    /// Count commands and time requests for `/metrics` (off only to
    /// measure what counting costs).
    pub metrics: bool,
    /// Password the admin endpoint asks of every request; without one it
    /// only listens on a loopback address.
    pub admin_password: Option<String>,
    /// Durable writes: a write is acknowledged only once this many replicas
    /// (or a majority of them) confirm it with `WAIT`. Off by default.
    pub durable_writes: Option<Durable>,
    /// How long the `WAIT` of durable writes may take before the write is
    /// answered as not confirmed.
    pub durable_timeout_ms: u64,
    /// Where reads go.
    pub read_from: ReadFrom,
    /// The gateway's own availability zone (what `read_from = "zone_replica"`
    /// prefers).
    pub zone: Option<String>,
    /// Data nodes' zones by address (`"host:port" = "zone"`, the address as
    /// the Sentinels report it). Wins over what a node says of itself
    /// (Valkey's `availability-zone`).
    pub node_zones: HashMap<String, String>,
    /// How long a write waits for a confirmed master before failing.
    pub failover_hold_ms: u64,
    /// A node that owes replies and sends nothing for this long gets no new
    /// commands until it answers (a paused master keeps its socket open and
    /// silent); commands already sent keep waiting.
    pub request_timeout_ms: u64,
    /// Commands sent to a node that has been silent this long are given up
    /// on ("may or may not have run"). Sooner only when the node is known
    /// gone: its connection closes, Sentinel reports it down, or a new
    /// master replaces it.
    pub abandon_after_ms: u64,
    /// A client that has not authenticated within this many seconds is
    /// closed (0: never), so unauthenticated connections cannot pile up.
    pub auth_timeout_secs: u64,
    /// A replica further behind the master than this gets no reads.
    pub max_replica_lag_ms: u64,
    /// Hold writes unless at least this many replicas (of those the
    /// Sentinels know) are within `write_guard_lag_ms` of the master: a
    /// master cut off from its replicas stops getting writes it would lose.
    /// 0 turns the guard off.
    pub min_synced_replicas: usize,
    /// The write guard's lag bound: how far behind (in time) every replica
    /// may fall before writes are held. Healthy replicas on a LAN are a few
    /// ms behind; offsets are sampled every 100 ms.
    pub write_guard_lag_ms: u64,
    /// Read-your-writes: after a session's write, its reads go only to
    /// replicas that have caught up with that write (else the master).
    pub read_your_writes: bool,
    /// How often Sentinels are polled when no event arrives.
    pub poll_interval_ms: u64,
    /// Timeout for each control-plane call (Sentinel queries, ROLE).
    pub control_timeout_ms: u64,
    /// Worker threads, each with its own event loop and listener
    /// (`belay gateway` only; embedders run on their own runtime).
    pub threads: usize,
    /// Shared (multiplexed) connections per node for default-state sessions
    /// (rounded up to a multiple of `threads`).
    pub connections_per_node: usize,
    /// Most clients connected at once.
    pub max_clients: usize,
    /// Close a client idle for this many seconds (0: never).
    pub idle_timeout_secs: u64,
    /// Most commands a client may have in flight before the gateway stops
    /// reading from it (bounds memory for clients that do not read replies).
    pub max_pipeline: usize,
    /// A client that does not accept its replies for this long is closed.
    pub client_write_timeout_secs: u64,
    /// Replies held for a client that does not read them, like Redis's
    /// `client-output-buffer-limit normal`: `"<hard> <soft> <soft seconds>"`,
    /// sizes in bytes or with kb/mb/gb; past the hard limit, or past the
    /// soft one for that long, the client is closed. 0 turns a limit off.
    pub client_output_buffer_limit_normal: String,
    /// The same for subscribed clients (`client-output-buffer-limit pubsub`).
    pub client_output_buffer_limit_pubsub: String,
    /// Largest request, like Redis's `client-query-buffer-limit`.
    pub client_query_buffer_limit: String,
    /// Largest bulk string in a request.
    pub max_bulk_len: usize,
    /// Largest inline request.
    pub max_inline_len: usize,
    /// Most arguments in one request.
    pub max_multibulk_len: usize,
    /// A Unix socket where this gateway hands its listening sockets to a
    /// new gateway process (`belay gateway --upgrade`), then drains; none:
    /// no hand-off.
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// How long a draining gateway (SIGTERM, or replaced by an upgrade)
    /// waits for its clients' commands in flight before it exits.
    pub drain_timeout_secs: u64,
    /// Per-command routing overrides, keyed by lower-case name (`config|set`
    /// for a subcommand).
    pub commands: HashMap<String, CommandOverride>,
    /// Address of a TLS listener for clients, beside `listen` (or alone,
    /// with `listen = "none"`).
    pub tls_listen: Option<String>,
    /// The TLS listener's certificate chain (PEM).
    pub tls_cert_file: Option<PathBuf>,
    /// The TLS listener's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// CA (PEM) that must have signed every TLS client's certificate: with
    /// it, clients without one are refused.
    pub tls_ca_file: Option<PathBuf>,
    /// Talk TLS to data nodes and Sentinels.
    pub backend_tls: bool,
    /// CA (PEM) that signed the nodes' and Sentinels' certificates.
    pub backend_tls_ca_file: Option<PathBuf>,
    /// Certificate (PEM) the gateway shows nodes and Sentinels: Redis asks
    /// for one unless `tls-auth-clients no`.
    pub backend_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `backend_tls_cert_file`.
    pub backend_tls_key_file: Option<PathBuf>,
    /// Name every node's certificate is checked against, instead of the
    /// host Sentinel names it by.
    pub backend_tls_server_name: Option<String>,
    /// `backend_tls_*` read into a client, by [`GatewayConfig::load_tls`].
    #[serde(skip)]
    pub backend_tls_client: Option<TlsClient>,
    /// `tls_*` read into the listener's acceptor, by [`GatewayConfig::load_tls`].
    #[serde(skip)]
    pub tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:6390".into(),
            master_name: "mymaster".into(),
            sentinels: Vec::new(),
            cluster: Vec::new(),
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            client_password: None,
            no_client_auth: false,
            admin_listen: None,
            no_admin: false,
            metrics: true,
            admin_password: None,
            durable_writes: None,
            durable_timeout_ms: 1_000,
            read_from: ReadFrom::ReplicaPreferred,
            zone: None,
            node_zones: HashMap::new(),
            failover_hold_ms: 15_000,
            request_timeout_ms: 2_000,
            abandon_after_ms: 30_000,
            auth_timeout_secs: 10,
            client_output_buffer_limit_normal: "256mb 0 0".into(),
            client_output_buffer_limit_pubsub: "32mb 8mb 60".into(),
            client_query_buffer_limit: "1gb".into(),
            max_replica_lag_ms: 1_000,
            read_your_writes: true,
            min_synced_replicas: 1,
            write_guard_lag_ms: 300,
            poll_interval_ms: 1_000,
            control_timeout_ms: 1_000,
            threads: 1,
            connections_per_node: 2,
            max_clients: 10_000,
            idle_timeout_secs: 0,
            max_pipeline: 1024,
            client_write_timeout_secs: 30,
            max_bulk_len: Limits::default().max_bulk_len,
            max_inline_len: Limits::default().max_inline_len,
            max_multibulk_len: Limits::default().max_array_len,
            commands: HashMap::new(),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            backend_tls: false,
            backend_tls_ca_file: None,
            backend_tls_cert_file: None,
            backend_tls_key_file: None,
            backend_tls_server_name: None,
            backend_tls_client: None,
            tls_acceptor: None,
            upgrade_socket: None,
            drain_timeout_secs: 30,
        }
    }
}

impl std::fmt::Debug for GatewayConfig {
    // Hand-written so that passwords never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |p: &Option<String>| p.as_ref().map(|_| "<redacted>");
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("master_name", &self.master_name)
            .field("sentinels", &self.sentinels)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &redact(&self.sentinel_password))
            .field("client_password", &redact(&self.client_password))
            .field("no_client_auth", &self.no_client_auth)
            .field("admin_listen", &self.admin_listen)
            .field("no_admin", &self.no_admin)
            .field("metrics", &self.metrics)
            .field("admin_password", &redact(&self.admin_password))
            .field("read_from", &self.read_from)
            .field("zone", &self.zone)
            .field("node_zones", &self.node_zones)
            .field("durable_writes", &self.durable_writes)
            .field("durable_timeout_ms", &self.durable_timeout_ms)
            .field("failover_hold_ms", &self.failover_hold_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("abandon_after_ms", &self.abandon_after_ms)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("max_replica_lag_ms", &self.max_replica_lag_ms)
            .field("read_your_writes", &self.read_your_writes)
            .field("min_synced_replicas", &self.min_synced_replicas)
            .field("write_guard_lag_ms", &self.write_guard_lag_ms)
            .field("connections_per_node", &self.connections_per_node)
            .field("max_clients", &self.max_clients)
            .field("commands", &self.commands)
            .field("tls_listen", &self.tls_listen)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("backend_tls", &self.backend_tls)
            .field("backend_tls_ca_file", &self.backend_tls_ca_file)
            .field("backend_tls_cert_file", &self.backend_tls_cert_file)
            .field("backend_tls_key_file", &self.backend_tls_key_file)
            .field("backend_tls_server_name", &self.backend_tls_server_name)
            .field("upgrade_socket", &self.upgrade_socket)
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// Credentials for data nodes.
    pub fn node_auth(&self) -> Option<Auth> {
        self.password.as_ref().map(|p| Auth {
            username: self.username.clone(),
            password: p.clone(),
        })
    }

    /// How to authenticate to Sentinels: with the Sentinel password when
    /// one is given (required), else with the nodes' credentials where the
    /// Sentinel has a password (tried; Sentinels often have none), else not.
    pub fn sentinel_auth(&self) -> SentinelAuth {
        let sentinel = self.sentinel_password.as_ref().map(|p| Auth {
            username: self.sentinel_username.clone(),
            password: p.clone(),
        });
        SentinelAuth::choose(sentinel, self.node_auth())
    }

    /// Where the admin endpoint listens, given the address clients reach
    /// the gateway on: `None` when it is off. An explicit address is taken
    /// as given (it must be loopback unless there is a password); the
    /// default is the client address's host with port + 1000 (any port
    /// when the gateway's is chosen by the system), on loopback unless a
    /// password protects it.
    pub fn admin_plan(&self, listen: SocketAddr) -> Option<AdminListen> {
        if self.no_admin {
            return None;
        }
        if let Some(addr) = &self.admin_listen {
            return Some(AdminListen::Explicit(addr.clone()));
        }
        let port = match listen.port() {
            0 => 0,
            p => p.checked_add(1000)?,
        };
        let ip = if listen.ip().is_loopback() || self.admin_password.is_some() {
            listen.ip()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        Some(AdminListen::Derived(SocketAddr::new(ip, port)))
    }

    /// The password clients must present, if any.
    pub fn required_client_password(&self) -> Option<&str> {
        if self.no_client_auth {
            return None;
        }
        self.client_password.as_deref().or(self.password.as_deref())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_bulk_len: self.max_bulk_len,
            max_inline_len: self.max_inline_len,
            max_array_len: self.max_multibulk_len,
            max_request_len: parse_size(&self.client_query_buffer_limit)
                .unwrap_or(Limits::default().max_request_len as u64)
                .min(belay_resp::MAX_REQUEST_LEN as u64) as usize,
            ..Limits::default()
        }
    }

    /// The output buffer limits for normal clients.
    pub fn output_limit_normal(&self) -> OutputLimit {
        OutputLimit::parse(&self.client_output_buffer_limit_normal).unwrap_or_default()
    }

    /// The output buffer limits for subscribed clients.
    pub fn output_limit_pubsub(&self) -> OutputLimit {
        OutputLimit::parse(&self.client_output_buffer_limit_pubsub).unwrap_or_default()
    }

    pub fn abandon_after(&self) -> Duration {
        Duration::from_millis(self.abandon_after_ms)
    }

    /// How long a client may stay unauthenticated.
    pub fn auth_timeout(&self) -> Option<Duration> {
        (self.auth_timeout_secs > 0 && self.required_client_password().is_some())
            .then(|| Duration::from_secs(self.auth_timeout_secs))
    }

    pub fn failover_hold(&self) -> Duration {
        Duration::from_millis(self.failover_hold_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn control_timeout(&self) -> Duration {
        Duration::from_millis(self.control_timeout_ms)
    }

    pub fn max_replica_lag(&self) -> Duration {
        Duration::from_millis(self.max_replica_lag_ms)
    }

    pub fn write_guard_lag(&self) -> Duration {
        Duration::from_millis(self.write_guard_lag_ms)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// Checks what serde cannot: a gateway with nothing to ask, a zero
    /// where a time or a count must be positive, a limit that cannot be
    /// read. Each error names the setting and the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (self.sentinels.is_empty(), self.cluster.is_empty()) {
            (true, true) => anyhow::bail!("nothing to front: pass --sentinel HOST:PORT (a Sentinel group) or --cluster HOST:PORT (a Redis Cluster), repeatable, or set `sentinels` or `cluster` in the config file"),
            (false, false) => anyhow::bail!("both Sentinels and Cluster nodes are configured: a gateway fronts one Sentinel group (--sentinel) or one Redis Cluster (--cluster), not both"),
            _ => {}
        }
        for (value, key, flag) in [
            (self.threads as u64, "threads", "--threads"),
            (
                self.connections_per_node as u64,
                "connections_per_node",
                "--connections-per-node",
            ),
            (self.max_pipeline as u64, "max_pipeline", "--max-pipeline"),
            (self.max_clients as u64, "max_clients", "--max-clients"),
            (
                self.request_timeout_ms,
                "request_timeout_ms",
                "--request-timeout-ms",
            ),
            (
                self.abandon_after_ms,
                "abandon_after_ms",
                "--abandon-after-ms",
            ),
            (
                self.poll_interval_ms,
                "poll_interval_ms",
                "--poll-interval-ms",
            ),
            (
                self.control_timeout_ms,
                "control_timeout_ms",
                "--control-timeout-ms",
            ),
            (
                self.client_write_timeout_secs,
                "client_write_timeout_secs",
                "--client-write-timeout-secs",
            ),
            (
                self.drain_timeout_secs,
                "drain_timeout_secs",
                "--drain-timeout-secs",
            ),
        ] {
            if value == 0 {
                anyhow::bail!("{key} ({flag}) must be at least 1");
            }
        }
        if self.read_from == ReadFrom::ZoneReplica && self.zone.is_none() {
            anyhow::bail!("read_from = zone-replica needs the gateway's own zone: pass --zone ZONE or set `zone` in the config file");
        }
        if let Some(zone) = self
            .zone
            .iter()
            .chain(self.node_zones.values())
            .find(|z| z.is_empty())
        {
            anyhow::bail!(
                "an empty zone name ({zone:?}): zones in --zone and --node-zone must not be empty"
            );
        }
        if self.durable_writes.is_some() {
            if self.durable_timeout_ms == 0 {
                anyhow::bail!("durable_timeout_ms (--durable-timeout-ms) must be at least 1");
            }
            if self.durable_timeout_ms >= self.request_timeout_ms {
                anyhow::bail!(
                    "durable_timeout_ms ({}) must be shorter than request_timeout_ms ({}): a master waiting for its replicas is not a silent one",
                    self.durable_timeout_ms,
                    self.request_timeout_ms
                );
            }
        }
        if self.abandon_after_ms < self.request_timeout_ms {
            anyhow::bail!(
                "abandon_after_ms ({}) must not be shorter than request_timeout_ms ({}): a node is first left alone, then given up on",
                self.abandon_after_ms,
                self.request_timeout_ms
            );
        }
        for (value, key) in [
            (
                &self.client_output_buffer_limit_normal,
                "client_output_buffer_limit_normal",
            ),
            (
                &self.client_output_buffer_limit_pubsub,
                "client_output_buffer_limit_pubsub",
            ),
        ] {
            OutputLimit::parse(value).map_err(|e| anyhow::anyhow!("{key} = {value:?}: {e}"))?;
        }
        let query = parse_size(&self.client_query_buffer_limit).map_err(|e| {
            anyhow::anyhow!(
                "client_query_buffer_limit = {:?}: {e}",
                self.client_query_buffer_limit
            )
        })?;
        if query < 1024 * 1024 {
            anyhow::bail!("client_query_buffer_limit must be at least 1mb (Redis's own minimum)");
        }
        self.validate_tls()
    }

    /// TLS settings that go together: a listener needs its certificate and
    /// key; a file without what uses it is a mistake, not a default.
    fn validate_tls(&self) -> anyhow::Result<()> {
        if self.plain_listen().is_none() && self.tls_listen.is_none() {
            anyhow::bail!("listen = \"none\" (--listen none) leaves no listener: add --tls-listen");
        }
        match &self.tls_listen {
            Some(_) => {
                if self.tls_cert_file.is_none() || self.tls_key_file.is_none() {
                    anyhow::bail!("--tls-listen needs --tls-cert-file and --tls-key-file");
                }
            }
            None => {
                for (set, flag) in [
                    (self.tls_cert_file.is_some(), "--tls-cert-file"),
                    (self.tls_key_file.is_some(), "--tls-key-file"),
                    (self.tls_ca_file.is_some(), "--tls-ca-file"),
                ] {
                    if set {
                        anyhow::bail!("{flag} is for the TLS listener: add --tls-listen ADDR");
                    }
                }
            }
        }
        if self.backend_tls {
            if self.backend_tls_ca_file.is_none() {
                anyhow::bail!(
                    "--backend-tls needs --backend-tls-ca-file, the CA that signed the nodes' certificates"
                );
            }
            if self.backend_tls_cert_file.is_some() != self.backend_tls_key_file.is_some() {
                anyhow::bail!("--backend-tls-cert-file and --backend-tls-key-file go together");
            }
        } else {
            for (set, flag) in [
                (self.backend_tls_ca_file.is_some(), "--backend-tls-ca-file"),
                (
                    self.backend_tls_cert_file.is_some(),
                    "--backend-tls-cert-file",
                ),
                (
                    self.backend_tls_key_file.is_some(),
                    "--backend-tls-key-file",
                ),
                (
                    self.backend_tls_server_name.is_some(),
                    "--backend-tls-server-name",
                ),
            ] {
                if set {
                    anyhow::bail!("{flag} has no effect without --backend-tls");
                }
            }
        }
        Ok(())
    }

    /// TLS on every hop, from one set of files: a TLS listener on `listen`
    /// only (no plaintext one) with `server_cert`, and TLS to the nodes and
    /// Sentinels trusting `ca` and showing `client_cert` (a TLS lab's).
    pub fn tls_everywhere(&mut self, listen: &str, files: &TlsEverywhere) {
        self.listen = "none".into();
        self.tls_listen = Some(listen.into());
        self.tls_cert_file = Some(files.server_cert.clone());
        self.tls_key_file = Some(files.server_key.clone());
        self.backend_tls = true;
        self.backend_tls_ca_file = Some(files.ca.clone());
        self.backend_tls_cert_file = Some(files.client_cert.clone());
        self.backend_tls_key_file = Some(files.client_key.clone());
    }

    /// The plaintext listener's address; `None` for `listen = "none"`.
    pub fn plain_listen(&self) -> Option<&str> {
        (!self.listen.eq_ignore_ascii_case("none")).then_some(self.listen.as_str())
    }

    /// Reads every TLS file (the listener's certificate and key, the
    /// nodes' CA and the gateway's client certificate), so that a missing or
    /// bad file is an error at start or reload, not at the first connection.
    pub fn load_tls(&mut self) -> anyhow::Result<()> {
        self.backend_tls_client = crate::tls::backend_client(self)?;
        self.tls_acceptor = crate::tls::server_acceptor(self)?;
        Ok(())
    }
}

/// How many replicas must confirm a write before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "DurableSetting")]
pub enum Durable {
    Replicas(u32),
    /// More than half of the replicas following the master (as far as the
    /// gateway sees: a node not yet converted is not one), at least one.
    Majority,
}

impl Durable {
    /// The count for a master with `replicas` replicas.
    pub fn required(self, replicas: usize) -> u32 {
        match self {
            Durable::Replicas(n) => n,
            Durable::Majority => (replicas / 2 + 1) as u32,
        }
    }
}

impl std::str::FromStr for Durable {
    type Err = String;
    fn from_str(s: &str) -> Result<Durable, String> {
        match s.trim() {
            "majority" => Ok(Durable::Majority),
            n => match n.parse::<u32>() {
                Ok(0) | Err(_) => Err(format!(
                    "{s:?} is not a number of replicas (1 or more) or \"majority\""
                )),
                Ok(n) => Ok(Durable::Replicas(n)),
            },
        }
    }
}

/// `durable_writes` in the file: `2` or `"majority"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum DurableSetting {
    Count(u32),
    Word(String),
}

impl TryFrom<DurableSetting> for Durable {
    type Error = String;
    fn try_from(v: DurableSetting) -> Result<Durable, String> {
        match v {
            DurableSetting::Count(n) => n.to_string().parse(),
            DurableSetting::Word(w) => w.parse(),
        }
    }
}

/// Where the admin endpoint is to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// Asked for (`--admin-listen`): failing to listen there is an error.
    Explicit(String),
    /// The default: failing to listen there is a warning, not a reason to
    /// refuse clients.
    Derived(SocketAddr),
}

/// Limits on what a client may leave unread, like Redis's
/// `client-output-buffer-limit <class> <hard> <soft> <seconds>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputLimit {
    /// Bytes past which the client is closed at once (0: none).
    pub hard: u64,
    /// Bytes past which the client is closed if it stays past them for
    /// `soft_secs` (0: none).
    pub soft: u64,
    pub soft_secs: u64,
}

impl OutputLimit {
    /// `"<hard> <soft> <seconds>"`, sizes as [`parse_size`] reads them.
    pub fn parse(s: &str) -> Result<OutputLimit, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [hard, soft, secs] = parts[..] else {
            return Err("expected \"<hard> <soft> <soft seconds>\", e.g. \"64mb 0 0\"".into());
        };
        Ok(OutputLimit {
            hard: parse_size(hard)?,
            soft: parse_size(soft)?,
            soft_secs: secs
                .parse()
                .map_err(|_| format!("{secs:?} is not a number of seconds"))?,
        })
    }
}

/// A size in bytes, with an optional `b`, `kb`, `mb` or `gb` suffix (of
/// 1024), as Redis's config reads them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let unit: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1024,
        "m" | "mb" => 1024 * 1024,
        "g" | "gb" => 1024 * 1024 * 1024,
        _ => return Err(format!("{s:?} is not a size (use bytes, or kb, mb, gb)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (use bytes, or kb, mb, gb)"))?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_output_limits_read_like_redis() {
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(
            OutputLimit::parse("32mb 8mb 60"),
            Ok(OutputLimit {
                hard: 32 << 20,
                soft: 8 << 20,
                soft_secs: 60
            })
        );
        assert!(OutputLimit::parse("32mb").is_err());
    }

    #[test]
    fn zero_times_and_counts_are_refused_with_the_flag_named() {
        let base = GatewayConfig {
            sentinels: vec!["a:1".into()],
            ..GatewayConfig::default()
        };
        base.validate().unwrap();
        let zero = GatewayConfig {
            request_timeout_ms: 0,
            ..base.clone()
        };
        let e = zero.validate().unwrap_err().to_string();
        assert!(e.contains("--request-timeout-ms"), "{e}");
        let inverted = GatewayConfig {
            abandon_after_ms: 1000,
            ..base.clone()
        };
        assert!(inverted.validate().is_err());
        let bad = GatewayConfig {
            client_output_buffer_limit_normal: "lots".into(),
            ..base
        };
        assert!(bad.validate().is_err());
    }
}
