//! `belay gateway`: flags and environment variables over a TOML file over
//! defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{GatewayConfig, ReadFrom};
use crate::reload::{reload_and_log, ConfigSource};
use crate::server::{Gateway, Start};
use crate::upgrade;

/// Run the gateway: a Redis-compatible endpoint that finds the master and
/// replicas through Sentinel, sends writes to the master and reads to
/// replicas, and follows failovers.
///
/// Every option can also come from a TOML file (`--config`, keys named like
/// the long flags with `_`) or an environment variable (shown below). Flags
/// win over the environment, which wins over the file. Reload, drain and
/// upgrade: see `belay gateway --help` (the CLI's own text) and `run`.
#[derive(Debug, Args, Default, Clone)]
pub struct GatewayArgs {
    /// TOML file with gateway settings.
    #[arg(long, env = "BELAY_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Sentinel to ask where the master is (repeat for each; more are learned from them).
    #[arg(
        long = "sentinel",
        env = "BELAY_SENTINELS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub sentinels: Vec<String>,

    /// Redis Cluster node to discover the cluster from, instead of
    /// Sentinels (repeat for each; the others are learned from `CLUSTER
    /// SHARDS`). Clients then need no cluster support: keys are routed by
    /// slot, and MGET/MSET/DEL/UNLINK/EXISTS/TOUCH across slots are split.
    #[arg(
        long = "cluster",
        env = "BELAY_CLUSTER",
        value_delimiter = ',',
        value_name = "HOST:PORT",
        conflicts_with = "sentinels"
    )]
    pub cluster: Vec<String>,

    /// Name the Sentinels monitor the master under [default: mymaster].
    #[arg(long, env = "BELAY_MASTER_NAME")]
    pub master_name: Option<String>,

    /// Address clients connect to in plaintext; `none` for none (with
    /// --tls-listen) [default: 127.0.0.1:6390, the lab's gateway port].
    #[arg(long, env = "BELAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// ACL user for the Redis nodes (default user when unset).
    #[arg(long, env = "BELAY_USERNAME")]
    pub username: Option<String>,

    /// Password for the Redis nodes; clients must also AUTH with it unless
    /// --client-password or --no-client-auth says otherwise.
    #[arg(long, env = "BELAY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Read --password from the first line of this file instead, e.g. a
    /// Docker or Kubernetes secret: unlike a flag or an environment
    /// variable, it does not show in `ps` or `docker inspect`.
    #[arg(
        long,
        env = "BELAY_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "password"
    )]
    pub password_file: Option<std::path::PathBuf>,

    /// ACL user for the Sentinels (with --sentinel-password).
    #[arg(long, env = "BELAY_SENTINEL_USERNAME")]
    pub sentinel_username: Option<String>,

    /// Password for the Sentinels, if they have one of their own. Without it
    /// the gateway tries the nodes' password on each Sentinel, and goes on
    /// without one where a Sentinel has no password configured (the usual
    /// setup: `sentinel auth-pass` for the nodes, no `requirepass`).
    #[arg(long, env = "BELAY_SENTINEL_PASSWORD", hide_env_values = true)]
    pub sentinel_password: Option<String>,

    /// Read --sentinel-password from the first line of this file.
    #[arg(
        long,
        env = "BELAY_SENTINEL_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "sentinel_password"
    )]
    pub sentinel_password_file: Option<PathBuf>,

    /// Password clients must AUTH with [default: --password].
    #[arg(long, env = "BELAY_CLIENT_PASSWORD", hide_env_values = true)]
    pub client_password: Option<String>,

    /// Read --client-password from the first line of this file.
    #[arg(
        long,
        env = "BELAY_CLIENT_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "client_password"
    )]
    pub client_password_file: Option<PathBuf>,

    /// Let clients in without AUTH even though the nodes have a password.
    #[arg(long, env = "BELAY_NO_CLIENT_AUTH")]
    pub no_client_auth: bool,

    /// Address of the admin HTTP endpoint: /metrics (Prometheus), /topology,
    /// /events, /healthz, /readyz and the dashboard at /. Without
    /// --admin-password-file it must be a loopback address [default: the
    /// --listen host, port + 1000, on 127.0.0.1 unless a password is set].
    #[arg(long, env = "BELAY_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// No admin endpoint.
    #[arg(long, env = "BELAY_NO_ADMIN", conflicts_with = "admin_listen")]
    pub no_admin: bool,

    /// Read the admin endpoint's password from the first line of this
    /// file: every request must then carry it (HTTP Basic with any user
    /// name, or `Authorization: Bearer <password>`), and the endpoint may
    /// listen on any address.
    #[arg(long, env = "BELAY_ADMIN_PASSWORD_FILE", value_name = "PATH")]
    pub admin_password_file: Option<PathBuf>,

    /// Durable writes: acknowledge a write only once N replicas (or a
    /// majority of the master's replicas) confirm they have it, with one
    /// `WAIT` per batch of writes sent together. A write not confirmed in
    /// time is answered `-UNREPLICATED` (it ran on the master, it is not
    /// retried). Off by default; `off` says so explicitly (an env file can
    /// then carry the setting either way).
    #[arg(long, env = "BELAY_DURABLE_WRITES", value_name = "N|majority|off")]
    pub durable_writes: Option<DurableFlag>,

    /// How long durable writes wait for the replicas' confirmation; must be
    /// shorter than --request-timeout-ms [default: 1000].
    #[arg(long, env = "BELAY_DURABLE_TIMEOUT_MS", value_name = "MS")]
    pub durable_timeout_ms: Option<u64>,

    /// Do not count commands or time requests: /metrics then shows only
    /// what is read off the topology (nodes, lag, holds). For measuring
    /// what counting costs; it is cheap enough to leave on.
    #[arg(long, env = "BELAY_NO_METRICS")]
    pub no_metrics: bool,

    /// Where reads go [default: replica-preferred]. zone-replica: a replica
    /// in the gateway's --zone, else another replica, else the master;
    /// nearest: the replica with the lowest round-trip time the gateway
    /// measures (its control connections ask every node ~10 times a
    /// second), else the master. The lag bound and read-your-writes apply
    /// first: a replica that may not serve is never chosen for being close.
    #[arg(long, env = "BELAY_READ_FROM", value_enum)]
    pub read_from: Option<ReadFrom>,

    /// The gateway's own availability zone (needed by --read-from zone-replica).
    #[arg(long, env = "BELAY_ZONE", value_name = "ZONE")]
    pub zone: Option<String>,

    /// A data node's zone, the address as the Sentinels report it (repeat
    /// for each node). Wins over the zone a node reports itself (Valkey
    /// 8.1+'s `availability-zone`, read from its HELLO reply).
    #[arg(
        long = "node-zone",
        env = "BELAY_NODE_ZONES",
        value_delimiter = ',',
        value_name = "HOST:PORT=ZONE",
        value_parser = parse_node_zone
    )]
    pub node_zones: Vec<(String, String)>,

    /// How long a write waits for a confirmed master during a failover before
    /// failing with TRYAGAIN [default: 15000].
    #[arg(long, env = "BELAY_FAILOVER_HOLD_MS", value_name = "MS")]
    pub failover_hold_ms: Option<u64>,

    /// A node that owes replies and stays silent this long gets no new
    /// commands until it answers again: writes are held, reads go to another
    /// replica. A frozen master is noticed seconds before Sentinel acts.
    /// Commands already sent keep waiting for their replies: a slow script
    /// or KEYS is not a dead node [default: 2000].
    #[arg(long, env = "BELAY_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Commands sent to a node that has been silent this long are given up
    /// on, and their clients told they may or may not have run. Sooner only
    /// when the node is known to be gone: its connection closes, Sentinel
    /// reports it down, or a new master replaces it [default: 30000].
    #[arg(long, env = "BELAY_ABANDON_AFTER_MS", value_name = "MS")]
    pub abandon_after_ms: Option<u64>,

    /// A replica further behind the master than this gets no reads [default: 1000].
    #[arg(long, env = "BELAY_MAX_REPLICA_LAG_MS", value_name = "MS")]
    pub max_replica_lag_ms: Option<u64>,

    /// Read-your-writes per session: after a write, that session reads only
    /// from replicas that have it [default: true].
    #[arg(long, env = "BELAY_READ_YOUR_WRITES", value_name = "BOOL")]
    pub read_your_writes: Option<bool>,

    /// Hold writes unless this many replicas are within --write-guard-lag-ms
    /// of the master (a master cut off from its replicas gets no writes it
    /// would lose); 0 turns the guard off [default: 1].
    #[arg(long, env = "BELAY_MIN_SYNCED_REPLICAS", value_name = "N")]
    pub min_synced_replicas: Option<usize>,

    /// How far behind every replica may fall before the write guard holds
    /// writes [default: 300].
    #[arg(long, env = "BELAY_WRITE_GUARD_LAG_MS", value_name = "MS")]
    pub write_guard_lag_ms: Option<u64>,

    /// How often to poll the Sentinels besides listening to their events [default: 1000].
    #[arg(long, env = "BELAY_POLL_INTERVAL_MS", value_name = "MS")]
    pub poll_interval_ms: Option<u64>,

    /// Worker threads, each with its own event loop [default: 1].
    #[arg(long, env = "BELAY_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    /// Shared backend connections per node for default-state clients [default: 2].
    #[arg(long, env = "BELAY_CONNECTIONS_PER_NODE", value_name = "N")]
    pub connections_per_node: Option<usize>,

    /// Most clients at once [default: 10000].
    #[arg(long, env = "BELAY_MAX_CLIENTS", value_name = "N")]
    pub max_clients: Option<usize>,

    /// Close clients idle this many seconds; 0 never [default: 0].
    #[arg(long, env = "BELAY_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,

    /// Close clients that have not authenticated within this many seconds;
    /// 0 never [default: 10].
    #[arg(long, env = "BELAY_AUTH_TIMEOUT_SECS", value_name = "SECS")]
    pub auth_timeout_secs: Option<u64>,

    /// Replies held for a client that does not read them, as Redis's
    /// `client-output-buffer-limit normal`: "<hard> <soft> <soft seconds>",
    /// sizes in bytes or kb/mb/gb; past the hard limit, or the soft one for
    /// that long, the client is closed. Redis has no normal limit by default;
    /// the gateway holds replies for many clients, so it has one: raise it
    /// for replies larger than this [default: "256mb 0 0"].
    #[arg(
        long,
        env = "BELAY_CLIENT_OUTPUT_BUFFER_LIMIT_NORMAL",
        value_name = "LIMITS"
    )]
    pub client_output_buffer_limit_normal: Option<String>,

    /// The same for subscribed clients [default: "32mb 8mb 60"].
    #[arg(
        long,
        env = "BELAY_CLIENT_OUTPUT_BUFFER_LIMIT_PUBSUB",
        value_name = "LIMITS"
    )]
    pub client_output_buffer_limit_pubsub: Option<String>,

    /// Take over the listening sockets of the gateway running with the same
    /// --upgrade-socket, start, wait until ready, then tell it to drain and
    /// exit: an upgrade (or a restart with new settings) that refuses no
    /// client. If this one fails before it is ready, the old one goes on.
    #[arg(long)]
    pub upgrade: bool,

    /// Unix socket (mode 0600, same user only) on which this gateway hands
    /// its listening sockets to a `belay gateway --upgrade` [default: none].
    #[arg(long, env = "BELAY_UPGRADE_SOCKET", value_name = "PATH")]
    pub upgrade_socket: Option<PathBuf>,

    /// On SIGTERM or after an upgrade: how long to wait for clients'
    /// commands in flight before exiting [default: 30].
    #[arg(long, env = "BELAY_DRAIN_TIMEOUT_SECS", value_name = "SECS")]
    pub drain_timeout_secs: Option<u64>,

    /// Largest request a client may send, as Redis's
    /// `client-query-buffer-limit` [default: 1gb].
    #[arg(long, env = "BELAY_CLIENT_QUERY_BUFFER_LIMIT", value_name = "SIZE")]
    pub client_query_buffer_limit: Option<String>,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

impl GatewayArgs {
    /// Merges the file (if any) under the flags and environment.
    pub fn resolve(self) -> anyhow::Result<GatewayConfig> {
        let _ = self.upgrade; // how to start, not a setting
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read gateway config {}", path.display()))?;
                parse_config(&text).map_err(|e| {
                    anyhow::anyhow!("invalid gateway config {}: {e}", path.display())
                })?
            }
            None => GatewayConfig::default(),
        };
        if !self.sentinels.is_empty() {
            cfg.sentinels = self.sentinels;
        }
        if !self.cluster.is_empty() {
            cfg.cluster = self.cluster;
        }
        // Flags name nodes one by one: they add to (and win over) the file's.
        cfg.node_zones.extend(self.node_zones);
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { cfg.$field = v; } )* };
        }
        macro_rules! take_opt {
            ($($field:ident),*) => { $( if self.$field.is_some() { cfg.$field = self.$field; } )* };
        }
        take!(
            master_name,
            listen,
            read_from,
            failover_hold_ms,
            request_timeout_ms,
            poll_interval_ms,
            connections_per_node,
            max_clients,
            idle_timeout_secs,
            auth_timeout_secs,
            abandon_after_ms,
            client_output_buffer_limit_normal,
            client_output_buffer_limit_pubsub,
            client_query_buffer_limit,
            max_replica_lag_ms,
            read_your_writes,
            min_synced_replicas,
            write_guard_lag_ms,
            durable_timeout_ms,
            drain_timeout_secs,
            threads
        );
        for (file, field) in [
            (&self.password_file, &mut cfg.password),
            (&self.sentinel_password_file, &mut cfg.sentinel_password),
            (&self.client_password_file, &mut cfg.client_password),
            (&self.admin_password_file, &mut cfg.admin_password),
        ] {
            if let Some(path) = file {
                *field = Some(belay_client::read_password_file(path)?);
            }
        }
        take_opt!(
            username,
            password,
            sentinel_username,
            sentinel_password,
            client_password,
            admin_listen,
            zone,
            upgrade_socket
        );
        if let Some(DurableFlag(durable)) = self.durable_writes {
            cfg.durable_writes = durable;
        }
        if self.no_client_auth {
            cfg.no_client_auth = true;
        }
        if self.no_admin {
            cfg.no_admin = true;
        }
        if self.no_metrics {
            cfg.metrics = false;
        }
        self.tls.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `HOST:PORT=ZONE` as (address, zone).
fn parse_node_zone(text: &str) -> Result<(String, String), String> {
    let (addr, zone) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT=ZONE"))?;
    if addr
        .rsplit_once(':')
        .is_none_or(|(_, p)| p.parse::<u16>().is_err())
    {
        return Err(format!("{addr:?} is not HOST:PORT"));
    }
    if zone.is_empty() {
        return Err(format!("{text:?} names no zone"));
    }
    Ok((addr.to_string(), zone.to_string()))
}

/// The config file, or an error that says where it is wrong and why, but
/// never quotes the file: a line of it may hold a password.
fn parse_config(text: &str) -> Result<GatewayConfig, String> {
    toml::from_str::<GatewayConfig>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => format!("line {line}: {}", e.message()),
            None => e.message().to_string(),
        }
    })
}

/// How long a gateway started with `--upgrade` may take to get ready
/// before it gives up (and the running one goes on serving).
const UPGRADE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the gateway until Ctrl-C or SIGTERM (then drains), or until a new
/// gateway took its sockets over (`--upgrade`). SIGHUP reloads the config.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let upgrade = args.upgrade;
    let again = args.clone();
    let cfg = args.resolve()?;
    let source: ConfigSource = Box::new(move || again.clone().resolve());
    let (inherited, predecessor) = match (&cfg.upgrade_socket, upgrade) {
        (Some(path), true) => {
            let (sockets, predecessor) = upgrade::take_over(path).await?;
            tracing::info!(
                sockets = sockets.clients.len(),
                tls_sockets = sockets.tls_clients.len(),
                "upgrade: took over the running gateway's listening sockets"
            );
            (Some(sockets), Some(predecessor))
        }
        (None, true) => anyhow::bail!(
            "--upgrade takes the sockets of the gateway running with the same --upgrade-socket (or `upgrade_socket` in the file): none is set"
        ),
        (_, false) => (None, None),
    };
    let start = Start {
        source: Some(source),
        inherited,
    };
    let gateway = Gateway::start(cfg.clone(), start).await?;
    if let Some(addr) = gateway.plain_addr() {
        tracing::info!(%addr, "gateway listening");
    }
    if let Some(addr) = gateway.tls_addr() {
        tracing::info!(%addr, "gateway listening for TLS clients");
    }
    if let Some(admin) = gateway.admin_addr() {
        tracing::info!(%admin, "admin endpoint: http://{admin}/ (dashboard), /metrics, /topology, /events, /healthz, /readyz");
    }
    if predecessor.is_some() {
        gateway
            .wait_ready(0, UPGRADE_READY_TIMEOUT)
            .await
            .context("upgrade abandoned, the running gateway goes on serving")?;
    }
    let offer = match &cfg.upgrade_socket {
        Some(path) => Some(upgrade::offer(
            path,
            gateway.sockets()?,
            predecessor.is_some(),
        )?),
        None => None,
    };
    if let Some(predecessor) = predecessor {
        predecessor.drain().await.context(
            "the old gateway did not confirm it drains (it may still be serving beside this one)",
        )?;
        tracing::info!("upgrade: the old gateway drains; this one serves");
    }
    let config = gateway.config();
    let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    let reloads = tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let config = config.clone();
            let _ = tokio::task::spawn_blocking(move || reload_and_log(&config)).await;
        }
    });
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let (_offer, upgraded) = match offer {
        Some((offer, upgraded)) => (Some(offer), Some(upgraded)),
        None => (None, None),
    };
    let drain = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: draining"),
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            Ok(()) = async { match upgraded { Some(rx) => rx.await, None => std::future::pending().await } } => {}
        }
    };
    let result = gateway.run_workers(drain).await;
    reloads.abort();
    result
}

/// `--durable-writes`: `N`, `majority`, or `off` (also an empty value, as
/// an env file leaves it).
#[derive(Debug, Clone, Copy)]
pub struct DurableFlag(Option<crate::config::Durable>);

impl std::str::FromStr for DurableFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<DurableFlag, String> {
        match s.trim() {
            "" | "off" => Ok(DurableFlag(None)),
            other => other.parse().map(|d| DurableFlag(Some(d))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("belay.toml");
        std::fs::write(
            &file,
            r#"
sentinels = ["10.0.0.1:26379"]
master_name = "from-file"
max_replica_lag_ms = 250
read_from = "master"

[commands]
"config|set" = "allow"
"#,
        )
        .unwrap();
        let cli = Cli::parse_from([
            "belay",
            "--config",
            file.to_str().unwrap(),
            "--master-name",
            "from-flag",
        ]);
        let cfg = cli.args.resolve().unwrap();
        assert_eq!(cfg.master_name, "from-flag");
        assert_eq!(cfg.sentinels, vec!["10.0.0.1:26379".to_string()]);
        assert_eq!(cfg.max_replica_lag_ms, 250);
        assert_eq!(cfg.read_from, ReadFrom::Master);
        assert_eq!(
            cfg.failover_hold_ms,
            GatewayConfig::default().failover_hold_ms
        );
        assert_eq!(
            cfg.commands.get("config|set"),
            Some(&crate::config::CommandOverride::Allow)
        );
    }

    #[test]
    fn zones_come_from_flags_and_the_file_and_zone_replica_needs_a_zone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("belay.toml");
        std::fs::write(
            &file,
            "sentinels = [\"a:1\"]\nzone = \"eu-1a\"\nread_from = \"zone_replica\"\n[node_zones]\n\"10.0.0.1:6379\" = \"eu-1a\"\n\"10.0.0.2:6379\" = \"eu-1b\"\n",
        )
        .unwrap();
        let c = Cli::parse_from([
            "belay",
            "--config",
            file.to_str().unwrap(),
            "--node-zone",
            "10.0.0.2:6379=eu-1c",
            "--node-zone",
            "10.0.0.3:6379=eu-1b",
        ])
        .args
        .resolve()
        .unwrap();
        assert_eq!(c.read_from, ReadFrom::ZoneReplica);
        assert_eq!(c.zone.as_deref(), Some("eu-1a"));
        let zone = |addr: &str| c.node_zones.get(addr).map(String::as_str);
        assert_eq!(zone("10.0.0.1:6379"), Some("eu-1a"));
        assert_eq!(zone("10.0.0.2:6379"), Some("eu-1c"), "the flag wins");
        assert_eq!(zone("10.0.0.3:6379"), Some("eu-1b"));
        let nearest = Cli::parse_from(["belay", "--sentinel", "a:1", "--read-from", "nearest"]);
        assert_eq!(nearest.args.resolve().unwrap().read_from, ReadFrom::Nearest);
        let err = Cli::parse_from(["belay", "--sentinel", "a:1", "--read-from", "zone-replica"])
            .args
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--zone"), "{err}");
        for bad in ["10.0.0.1:6379", "10.0.0.1=a", "10.0.0.1:6379="] {
            assert!(
                Cli::try_parse_from(["belay", "--node-zone", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn durable_writes_off_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("belay.toml");
        std::fs::write(
            &file,
            "sentinels = [\"a:1\"]\nmaster_name = \"m\"\ndurable_writes = \"majority\"\n",
        )
        .unwrap();
        let with = |flag: &[&str]| {
            let mut argv = vec!["belay", "--config", file.to_str().unwrap()];
            argv.extend_from_slice(flag);
            Cli::parse_from(argv).args.resolve().unwrap().durable_writes
        };
        assert_eq!(with(&[]), Some(crate::config::Durable::Majority));
        assert_eq!(with(&["--durable-writes", "off"]), None);
        // An env file's empty BELAY_DURABLE_WRITES= means off, not an error.
        assert_eq!(with(&["--durable-writes", ""]), None);
        assert_eq!(
            with(&["--durable-writes", "2"]),
            Some(crate::config::Durable::Replicas(2))
        );
        assert!(Cli::try_parse_from(["belay", "--durable-writes", "0"]).is_err());
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let cli = Cli::parse_from([
            "belay",
            "--sentinel",
            "a:1",
            "--sentinel",
            "b:2",
            "--master-name",
            "m",
            "--listen",
            "127.0.0.1:1",
            "--username",
            "u",
            "--password",
            "p",
            "--sentinel-username",
            "su",
            "--sentinel-password",
            "sp",
            "--client-password",
            "cp",
            "--read-from",
            "replica",
            "--failover-hold-ms",
            "11",
            "--request-timeout-ms",
            "12",
            "--max-replica-lag-ms",
            "13",
            "--read-your-writes",
            "false",
            "--min-synced-replicas",
            "0",
            "--write-guard-lag-ms",
            "17",
            "--poll-interval-ms",
            "14",
            "--threads",
            "3",
            "--connections-per-node",
            "6",
            "--max-clients",
            "15",
            "--idle-timeout-secs",
            "16",
            "--auth-timeout-secs",
            "18",
            "--abandon-after-ms",
            "19000",
            "--client-output-buffer-limit-normal",
            "1mb 0 0",
            "--client-output-buffer-limit-pubsub",
            "2mb 1mb 5",
            "--client-query-buffer-limit",
            "2gb",
        ]);
        let c = cli.args.resolve().unwrap();
        assert_eq!(c.sentinels, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(
            (c.master_name.as_str(), c.listen.as_str()),
            ("m", "127.0.0.1:1")
        );
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p"));
        assert_eq!(c.sentinel_username.as_deref(), Some("su"));
        assert_eq!(c.sentinel_password.as_deref(), Some("sp"));
        assert_eq!(c.client_password.as_deref(), Some("cp"));
        assert_eq!(c.read_from, ReadFrom::Replica);
        assert_eq!(
            (
                c.failover_hold_ms,
                c.request_timeout_ms,
                c.max_replica_lag_ms,
                c.poll_interval_ms
            ),
            (11, 12, 13, 14)
        );
        assert!(!c.read_your_writes);
        assert_eq!((c.min_synced_replicas, c.write_guard_lag_ms), (0, 17));
        assert_eq!((c.threads, c.connections_per_node), (3, 6));
        assert_eq!((c.max_clients, c.idle_timeout_secs), (15, 16));
        assert_eq!((c.auth_timeout_secs, c.abandon_after_ms), (18, 19000));
        assert_eq!(c.client_output_buffer_limit_normal, "1mb 0 0");
        assert_eq!(c.client_output_buffer_limit_pubsub, "2mb 1mb 5");
        assert_eq!(c.client_query_buffer_limit, "2gb");
    }

    #[test]
    fn the_password_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret pass\n").unwrap();
        let path = file.to_str().unwrap();
        let c = Cli::parse_from(["belay", "--sentinel", "a:1", "--password-file", path])
            .args
            .resolve()
            .unwrap();
        assert_eq!(c.password.as_deref(), Some("s3cret pass"));
        assert_eq!(c.required_client_password(), Some("s3cret pass"));

        std::fs::write(&file, "\n").unwrap();
        let err = Cli::parse_from(["belay", "--sentinel", "a:1", "--password-file", path])
            .args
            .resolve()
            .unwrap_err();
        assert!(format!("{err:#}").contains("is empty"), "{err:#}");
        let missing = dir.path().join("missing");
        let err = Cli::parse_from([
            "belay",
            "--sentinel",
            "a:1",
            "--password-file",
            missing.to_str().unwrap(),
        ])
        .args
        .resolve()
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read the password file"),
            "{err:#}"
        );
        // One or the other, not both.
        assert!(Cli::try_parse_from([
            "belay",
            "--sentinel",
            "a:1",
            "--password",
            "p",
            "--password-file",
            path
        ])
        .is_err());
    }

    #[test]
    fn unknown_keys_and_missing_sentinels_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("belay.toml");
        std::fs::write(&file, "sentinels = [\"a:1\"]\nmaster_nmae = \"x\"\n").unwrap();
        let err = Cli::parse_from(["belay", "--config", file.to_str().unwrap()])
            .args
            .resolve()
            .unwrap_err();
        assert!(format!("{err:#}").contains("master_nmae"), "{err:#}");
        let err = Cli::parse_from(["belay"]).args.resolve().unwrap_err();
        assert!(err.to_string().contains("--sentinel"), "{err}");
    }

    #[test]
    fn a_bad_config_file_is_reported_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("belay.toml");
        std::fs::write(&file, "sentinels = [\"a:1\"]\npassword = s3cret-unquoted\n").unwrap();
        let err = Cli::parse_from(["belay", "--config", file.to_str().unwrap()])
            .args
            .resolve()
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn every_password_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str, secret: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{secret}\n")).unwrap();
            p.to_str().unwrap().to_string()
        };
        let (nodes, sentinels, clients) = (
            path("nodes", "n-pw"),
            path("sentinels", "s-pw"),
            path("clients", "c-pw"),
        );
        let c = Cli::parse_from([
            "belay",
            "--sentinel",
            "a:1",
            "--password-file",
            &nodes,
            "--sentinel-password-file",
            &sentinels,
            "--client-password-file",
            &clients,
        ])
        .args
        .resolve()
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("n-pw"));
        assert_eq!(c.sentinel_password.as_deref(), Some("s-pw"));
        assert_eq!(c.client_password.as_deref(), Some("c-pw"));
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let cfg = GatewayConfig {
            password: Some("s3cret".into()),
            client_password: Some("other-s3cret".into()),
            ..GatewayConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }
}
