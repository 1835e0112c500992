//! `belay up`: start a lab, wait until it is ready, print how to use it,
//! then supervise it in the foreground (Ctrl-C stops everything in order)
//! or leave it running (`--detach`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use belay_lab::cluster::ClusterLab;
use belay_lab::{
    AppSpec, GatewaySpec, Lab, LabError, LabSpec, Process, ProcessKind, ServerChoice, StopReport,
};
use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::ui::{self, shell_quote, show_path, CliProgress};

/// How long an orderly stop waits for SIGTERM before SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Flags of `belay up` (the help text is on the subcommand in main.rs).
#[derive(Debug, Args)]
pub struct UpArgs {
    /// State dir: lab.json, password, one sub-dir per process (config, data, log).
    #[arg(long, env = "BELAY_DIR", default_value = ".belay")]
    pub dir: PathBuf,

    /// Start a Redis Cluster instead of a master with Sentinels: --shards
    /// masters, each with --replicas replicas, every slot served, the
    /// gateway in front (`--cluster` to the masters): clients need no
    /// cluster support. Nodes from --port (7000 by default; each also uses
    /// its port + 10000 for the cluster bus).
    #[arg(
        long,
        conflicts_with_all = [
            "sentinels", "master_name", "sentinel_port", "down_after_ms",
            "failover_timeout_ms", "min_replicas_to_write", "min_replicas_max_lag",
            "redis_sentinel", "extra_sentinel_config",
        ]
    )]
    pub cluster: bool,

    /// Number of shards of the cluster, each a master with its replicas
    /// (with --cluster) [default: 3].
    #[arg(long, value_name = "N", requires = "cluster")]
    pub shards: Option<usize>,

    /// The cluster's cluster-node-timeout: how long a silent node is
    /// tolerated before its replica takes over (with --cluster) [default: 2000].
    #[arg(long, value_name = "MS", requires = "cluster")]
    pub node_timeout_ms: Option<u64>,

    /// Number of replicas next to the master [default: 2; with --cluster, 1
    /// per shard].
    #[arg(long, value_name = "N")]
    pub replicas: Option<usize>,

    /// Number of Sentinels; the quorum is their majority.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub sentinels: usize,

    /// Name the Sentinels monitor the master under.
    #[arg(long, default_value = "mymaster", value_name = "NAME")]
    pub master_name: String,

    /// Port of the first data node (the initial master); replicas take the
    /// next ones [default: 6379; with --cluster, 7000].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Port of the first Sentinel; the others take the next ones [default: --port + 20000].
    #[arg(long, value_name = "PORT")]
    pub sentinel_port: Option<u16>,

    /// Port of the gateway [default: --port + 11, i.e. 6390].
    #[arg(long, value_name = "PORT")]
    pub gateway_port: Option<u16>,

    /// Port of the gateway's admin endpoint: the dashboard, /metrics,
    /// /events (on 127.0.0.1) [default: --gateway-port + 1000, i.e. 7390].
    #[arg(long, value_name = "PORT")]
    pub admin_port: Option<u16>,

    /// Durable writes in the gateway: acknowledge a write only once N
    /// replicas (or a majority) confirm it (see `belay gateway --help`).
    #[arg(long, value_name = "N|majority", value_parser = parse_durable)]
    pub durable_writes: Option<String>,

    /// Availability zones for the data nodes, round-robin (redis-1, the
    /// first master, gets the first): the gateway is told each node's zone
    /// and is itself in the first (or --gateway-zone). See "Zone-aware
    /// reads" in the README.
    #[arg(long, value_delimiter = ',', value_name = "ZONE,ZONE,...")]
    pub zones: Vec<String>,

    /// The gateway's own zone [default: the first of --zones].
    #[arg(long, value_name = "ZONE", conflicts_with = "no_gateway")]
    pub gateway_zone: Option<String>,

    /// Where the gateway sends reads: replica-preferred (its default),
    /// replica, master, zone-replica (a replica of its zone first) or
    /// nearest (the replica with the lowest measured round-trip time).
    #[arg(
        long,
        value_name = "MODE",
        conflicts_with = "no_gateway",
        value_parser = ["replica", "replica-preferred", "master", "zone-replica", "nearest"]
    )]
    pub read_from: Option<String>,

    /// Do not start the gateway (only Redis and Sentinel).
    #[arg(long, conflicts_with = "app")]
    pub no_gateway: bool,

    /// Also start newsroom, the web app (`belay app`), on the lab's gateway:
    /// pages say which node served them; pause the master and watch them
    /// keep coming from the replicas.
    #[arg(long)]
    pub app: bool,

    /// Port of the web app (with --app).
    #[arg(long, default_value_t = belay_lab::spec::DEFAULT_APP_PORT, value_name = "PORT")]
    pub app_port: u16,

    /// Address every process binds to and announces. Loopback by default;
    /// protected mode stays on whatever you choose.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: String,

    /// Password for every node, Sentinel and the gateway [default: the one
    /// saved in <DIR>/password, else a new random one].
    #[arg(long, env = "BELAY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Sentinel down-after-milliseconds: how long a silent master is
    /// tolerated before it is considered down.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub down_after_ms: u64,

    /// Sentinel failover-timeout (also the wait before retrying a failed failover).
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    pub failover_timeout_ms: u64,

    /// A master stops taking writes when fewer replicas than this are
    /// connected and in sync (0 turns the guard off).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min_replicas_to_write: u32,

    /// Seconds since a replica's last ack after which it no longer counts
    /// for --min-replicas-to-write.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub min_replicas_max_lag: u32,

    /// TLS on every hop: makes a private CA and certificates in <DIR>/tls/
    /// (files 0600), runs every node and Sentinel TLS-only (`tls-port`,
    /// `port 0`, replication and Sentinel links over TLS, client
    /// certificates required), and the gateway with a TLS listener and TLS
    /// to the nodes. `up` prints the redis-cli flags to use.
    #[arg(long, conflicts_with = "app")]
    pub tls: bool,

    /// Turn off persistence (AOF and RDB snapshots are on by default).
    #[arg(long)]
    pub no_persistence: bool,

    /// Which server to run: redis (redis-server, redis-sentinel), valkey
    /// (valkey-server; Sentinels as valkey-sentinel, or valkey-server
    /// --sentinel when there is no such program), or auto (redis when
    /// redis-server is on PATH, else valkey). --redis-server and
    /// --redis-sentinel win over it.
    #[arg(long, default_value = "auto", value_name = "redis|valkey|auto", value_parser = parse_server)]
    pub server: ServerChoice,

    /// The data nodes' program, e.g. a redis-server or valkey-server build of
    /// your own (a bare name is looked up on PATH) [default: the --server's].
    #[arg(long, value_name = "PATH")]
    pub redis_server: Option<PathBuf>,

    /// The Sentinels' program (a bare name is looked up on PATH) [default:
    /// the --server's; with --redis-server alone, that program with --sentinel].
    #[arg(long, value_name = "PATH")]
    pub redis_sentinel: Option<PathBuf>,

    /// Return once the lab is ready and leave it running; stop it with `belay down`.
    #[arg(long)]
    pub detach: bool,

    /// Give up (and stop everything) if the lab is not ready after this many seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub ready_timeout: u64,

    /// Print the final table as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Extra line for every redis.conf (testing knob).
    #[arg(long = "x-redis-config", hide = true, value_name = "LINE")]
    pub extra_redis_config: Vec<String>,

    /// Extra line for every sentinel.conf (testing knob).
    #[arg(long = "x-sentinel-config", hide = true, value_name = "LINE")]
    pub extra_sentinel_config: Vec<String>,
}

impl UpArgs {
    /// The gateway the flags ask for (`None` with --no-gateway), its port
    /// defaulting to `default_port`.
    pub(crate) fn gateway_spec(&self, default_port: u16) -> Result<Option<GatewaySpec>> {
        if self.no_gateway {
            return Ok(None);
        }
        let exe = std::env::current_exe().context("finding the belay binary to run the gateway")?;
        let port = self.gateway_port.unwrap_or(default_port);
        let admin_port = match self.admin_port {
            Some(p) => p,
            None => port.checked_add(1000).context(
                "the gateway's port + 1000 is past 65535: choose the admin port with --admin-port",
            )?,
        };
        Ok(Some(GatewaySpec {
            exe,
            port,
            admin_port: Some(admin_port),
            durable_writes: self.durable_writes.clone(),
            zone: self.gateway_zone.clone(),
            read_from: self.read_from.clone(),
        }))
    }

    fn spec(&self) -> Result<LabSpec> {
        let mut spec = LabSpec {
            dir: self.dir.clone(),
            replicas: self.replicas.unwrap_or(2),
            sentinels: self.sentinels,
            master_name: self.master_name.clone(),
            base_port: self.port.unwrap_or(6379),
            sentinel_base_port: self.sentinel_port,
            bind: self.bind.clone(),
            password: self.password.clone(),
            down_after_ms: self.down_after_ms,
            failover_timeout_ms: self.failover_timeout_ms,
            min_replicas_to_write: self.min_replicas_to_write,
            min_replicas_max_lag: self.min_replicas_max_lag,
            persistence: !self.no_persistence,
            server: self.server,
            redis_server: self.redis_server.clone(),
            redis_sentinel: self.redis_sentinel.clone(),
            programs: None,
            gateway: None,
            app: None,
            detach: self.detach,
            ready_timeout_ms: self.ready_timeout * 1000,
            extra_redis_config: self.extra_redis_config.clone(),
            extra_sentinel_config: self.extra_sentinel_config.clone(),
            own_loopback_addrs: false,
            tls: self.tls,
            zones: self.zones.clone(),
            reassign_busy_ports: false,
        };
        spec.gateway = self.gateway_spec(spec.default_gateway_port())?;
        if self.app {
            let exe = std::env::current_exe().context("finding the belay binary to run the app")?;
            spec.app = Some(AppSpec {
                exe,
                port: self.app_port,
            });
        }
        Ok(spec)
    }
}

pub async fn run(args: UpArgs) -> Result<ExitCode> {
    // Handlers first: a Ctrl-C at any point from here on stops what started.
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;

    if args.cluster {
        return crate::up_cluster::run(args, &mut sigint, &mut sigterm).await;
    }
    let spec = args.spec()?;
    let progress = CliProgress::new();
    let started = interruptible(Lab::start(spec, &progress), &mut sigint, &mut sigterm).await;
    progress.finish();
    let lab = started?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary_json(&lab))?);
    } else {
        print!("{}", ready_text(&lab));
    }
    leave_or_supervise(lab, "lab", &args, &mut sigint, &mut sigterm).await
}

/// `start` (a lab starting), unless Ctrl-C or SIGTERM comes first. On
/// error the starting lab was dropped inside `start` (or with the future,
/// when interrupted): every child is already killed.
pub(crate) async fn interruptible<L>(
    start: impl Future<Output = Result<L>>,
    sigint: &mut Signal,
    sigterm: &mut Signal,
) -> Result<L> {
    tokio::select! {
        r = start => r,
        _ = sigint.recv() => Err(LabError::Interrupted.into()),
        _ = sigterm.recv() => Err(LabError::Interrupted.into()),
    }
}

/// Once the ready lab is printed: leave it running (`--detach`), or
/// supervise it until Ctrl-C/SIGTERM and stop it in order. `what` names
/// it in the "stopping" line.
pub(crate) async fn leave_or_supervise<L: Supervised>(
    mut lab: L,
    what: &str,
    args: &UpArgs,
    sigint: &mut Signal,
    sigterm: &mut Signal,
) -> Result<ExitCode> {
    let dir = shell_quote(&show_path(lab.dir()));
    if args.detach {
        lab.detach()?;
        if !args.json {
            println!("  stop:      belay down --dir {dir}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        println!("  stop:      Ctrl-C here (or `belay down --dir {dir}` from another shell)");
    }
    supervise(&mut lab, sigint, sigterm).await;
    eprintln!("stopping the {what} ...");
    let report = lab.stop(STOP_GRACE).await?;
    print_stopped(&report, &args.dir);
    Ok(ExitCode::SUCCESS)
}

/// The line after an orderly stop.
fn print_stopped(report: &StopReport, dir: &Path) {
    eprintln!(
        "stopped {} process{}{}; data and logs are kept in {}",
        report.stopped.len() + report.killed.len(),
        if report.stopped.len() + report.killed.len() == 1 {
            ""
        } else {
            "es"
        },
        if report.killed.is_empty() {
            String::new()
        } else {
            format!(" ({} needed SIGKILL)", report.killed.len())
        },
        show_path(dir),
    );
}

/// What `up` does with a ready lab of either kind (Sentinel or cluster).
pub(crate) trait Supervised {
    /// Processes that exited since the last call: `(name, how)`.
    fn newly_exited(&mut self) -> Vec<(String, String)>;
    fn any_running(&mut self) -> bool;
    /// The process called `name`.
    fn process(&self, name: &str) -> Result<&Process>;
    /// The state dir.
    fn dir(&self) -> &Path;
    /// Leave it running when `up` returns.
    fn detach(&mut self) -> Result<()>;
    /// Stop it in order, SIGKILL after `grace`.
    fn stop(self, grace: Duration) -> impl Future<Output = Result<StopReport>>;

    /// The log of the process called `name`, as the user would type it.
    fn log_of(&self, name: &str) -> String {
        self.process(name)
            .map(|p| show_path(p.log_path()))
            .unwrap_or_default()
    }
}

/// [`Supervised`] by the lab's own methods of the same names.
macro_rules! supervised_by_own_methods {
    ($($lab:ty),*) => {$(
        impl Supervised for $lab {
            fn newly_exited(&mut self) -> Vec<(String, String)> {
                <$lab>::newly_exited(self)
            }
            fn any_running(&mut self) -> bool {
                <$lab>::any_running(self)
            }
            fn process(&self, name: &str) -> Result<&Process> {
                <$lab>::process(self, name)
            }
            fn dir(&self) -> &Path {
                <$lab>::dir(self)
            }
            fn detach(&mut self) -> Result<()> {
                <$lab>::detach(self)
            }
            fn stop(self, grace: Duration) -> impl Future<Output = Result<StopReport>> {
                <$lab>::stop(self, grace)
            }
        }
    )*};
}
supervised_by_own_methods!(Lab, ClusterLab);

/// Foreground supervision: report processes that exit (drills kill them on
/// purpose, so they are not restarted) until Ctrl-C/SIGTERM, or until every
/// process is gone (`belay down` from another shell).
async fn supervise(lab: &mut impl Supervised, sigint: &mut Signal, sigterm: &mut Signal) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = sigint.recv() => return,
            _ = sigterm.recv() => return,
            _ = tick.tick() => {
                for (name, how) in lab.newly_exited() {
                    eprintln!("{name} exited ({how}); its log: {}", lab.log_of(&name));
                }
                if !lab.any_running() {
                    eprintln!("every process of the lab has exited");
                    return;
                }
            }
        }
    }
}

fn role_at_start(lab: &Lab, kind: ProcessKind, addr: &str) -> &'static str {
    match kind {
        ProcessKind::DataNode if addr == lab.spec().initial_master_addr() => "master",
        ProcessKind::DataNode => "replica",
        ProcessKind::Sentinel => "sentinel",
        ProcessKind::Gateway => "gateway",
        ProcessKind::App => "app",
    }
}

/// The zone the lab gave a process (data nodes and the gateway).
fn zone_of<'a>(lab: &'a Lab, p: &Process) -> Option<&'a str> {
    let spec = lab.spec();
    match p.kind() {
        ProcessKind::DataNode => {
            spec.data_node_zone(p.port().checked_sub(spec.base_port)? as usize)
        }
        ProcessKind::Gateway => spec.gateway_zone(),
        _ => None,
    }
}

/// The table and connect lines printed once the lab is ready.
fn ready_text(lab: &Lab) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ROLE".into(),
        "ADDRESS".into(),
        "PID".into(),
        "LOG".into(),
    ]];
    let zoned = !lab.spec().zones.is_empty();
    if zoned {
        rows[0].insert(2, "ZONE".into());
    }
    for p in lab.processes() {
        let mut row = vec![
            p.name().to_string(),
            role_at_start(lab, p.kind(), &p.addr()).into(),
            p.addr(),
            p.pid().map(|x| x.to_string()).unwrap_or_default(),
            show_path(p.log_path()),
        ];
        if zoned {
            row.insert(2, zone_of(lab, p).unwrap_or_default().to_string());
        }
        rows.push(row);
    }
    let pw = shell_quote(lab.password());
    let mut host = host_flag(&lab.spec().bind);
    // The gateway needs no client certificate; the nodes and Sentinels do.
    let mut direct = host.clone();
    if lab.spec().tls {
        let tls = lab.spec().tls_files();
        let ca = shell_quote(&show_path(&tls.ca()));
        host = format!("{host}--tls --cacert {ca} ");
        direct = format!(
            "{host}--cert {} --key {} ",
            shell_quote(&show_path(&tls.client_cert())),
            shell_quote(&show_path(&tls.client_key()))
        );
    }
    let mut out = format!(
        "\nbelay lab is ready: master name {:?}, quorum {}/{}, state in {}\n\n",
        lab.master_name(),
        lab.spec().quorum(),
        lab.spec().sentinels,
        show_path(lab.dir()),
    );
    out.push_str(&ui::table(&rows));
    out.push('\n');
    let programs = lab.spec().programs();
    out.push_str(&format!(
        "  server:    {}    (Sentinels: {})\n",
        show_path(&programs.server),
        programs.sentinel
    ));
    out.push_str(&password_line(lab.password(), lab.dir()));
    if let Some(gw) = lab.gateway() {
        out.push_str(&format!(
            "  connect:   redis-cli {host}-p {} -a {pw}    # the gateway: writes to the master, reads to replicas\n",
            gw.port()
        ));
        out.push_str(&format!(
            "             redis-cli {direct}-p {} -a {pw}    # the master directly\n",
            lab.spec().base_port
        ));
    } else {
        out.push_str(&format!(
            "  connect:   redis-cli {direct}-p {} -a {pw}    # the master\n",
            lab.spec().base_port
        ));
    }
    out.push_str(&format!(
        "             redis-cli {direct}-p {} -a {pw} SENTINEL get-master-addr-by-name {}\n",
        lab.spec().sentinel_port(),
        lab.master_name()
    ));
    if let Some(url) = lab.app_url() {
        out.push_str(&format!(
            "  web app:   {url}    # newsroom: each page names the node that served it\n"
        ));
    }
    out.push_str(&dashboard_line(lab.gateway_admin_addr()));
    out.push_str(&format!(
        "  status:    belay status --dir {}    (live: add --watch)\n",
        shell_quote(&show_path(lab.dir()))
    ));
    out
}

fn summary_json(lab: &Lab) -> serde_json::Value {
    serde_json::json!({
        "dir": lab.dir(),
        "master_name": lab.master_name(),
        "password_file": lab.dir().join("password"),
        "gateway": lab.gateway_addr(),
        "gateway_admin": lab.gateway_admin_addr(),
        "app": lab.app_url(),
        "sentinels": lab.sentinel_addrs(),
        "programs": lab.spec().programs(),
        "processes": lab.processes().iter().map(|p| {
            let mut json = process_json(p);
            json["role"] = role_at_start(lab, p.kind(), &p.addr()).into();
            json["zone"] = zone_of(lab, p).into();
            json
        }).collect::<Vec<_>>(),
    })
}

/// `-h BIND ` for redis-cli, or nothing when the lab is on the default
/// loopback address.
pub(crate) fn host_flag(bind: &str) -> String {
    if bind == "127.0.0.1" {
        String::new()
    } else {
        format!("-h {bind} ")
    }
}

/// The `password:` line of the ready text.
pub(crate) fn password_line(password: &str, dir: &Path) -> String {
    format!(
        "  password:  {password}   (also in {})\n",
        show_path(&dir.join("password"))
    )
}

/// The `dashboard:` line of the ready text, when the gateway has an admin
/// endpoint (else nothing).
pub(crate) fn dashboard_line(admin: Option<String>) -> String {
    match admin {
        Some(admin) => {
            format!("  dashboard: http://{admin}/    (metrics: http://{admin}/metrics)\n")
        }
        None => String::new(),
    }
}

/// One process in `--json` (keys come out sorted, whatever adds them).
pub(crate) fn process_json(p: &Process) -> serde_json::Value {
    serde_json::json!({
        "name": p.name(),
        "kind": p.kind(),
        "addr": p.addr(),
        "pid": p.pid(),
        "log": p.log_path(),
        "config": p.config_path(),
    })
}

fn parse_server(s: &str) -> Result<ServerChoice, String> {
    s.parse()
}

/// Checks `--durable-writes` here, so a bad value is refused before
/// anything starts.
fn parse_durable(s: &str) -> Result<String, String> {
    s.parse::<belay_gateway::Durable>()?;
    Ok(s.trim().to_string())
}
