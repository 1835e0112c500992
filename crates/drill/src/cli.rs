//! `belay drill`: flags, choosing the lab (the one in --dir, or a temporary
//! one), the progress bar, and printing / writing the results.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use belay_lab::cluster::{ClusterLab, ClusterSpec};
use belay_lab::{Lab, LabError, LabSpec, Progress};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};

use crate::drill::{self, DrillOptions, InProcessGateway, Observer, TargetKind};
use crate::faults::{self, FaultKind};
use crate::report::{self, DrillReport};
use crate::svg;
use crate::workload::LiveStats;

/// Exit code when a drill ran and its verdict is FAIL.
pub const EXIT_FAIL: u8 = 3;

/// Which drill to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillChoice {
    /// Freeze the master (SIGSTOP) for --fault-for, then thaw it — the seed note's `docker compose pause`.
    Pause,
    /// Kill the master (SIGKILL), restart it with the same config after --fault-for.
    Kill,
    /// Cut the master off from the Sentinels and replicas (iptables) while clients still reach it.
    Partition,
    /// Cut the master and one replica off together (iptables): the edge of durable writes, a
    /// write confirmed only by a replica lost with the master. Not part of `all`.
    PartitionWithReplica,
    /// Kill one Sentinel and pause the master: the other two must fail over.
    SentinelLoss,
    /// SENTINEL FAILOVER under load.
    Manual,
    /// `belay switchover` under load: writes paused, the replica caught up, the switch, writes resumed.
    Switchover,
    /// Every drill above but partition-with-replica, one after the other, on the same lab.
    All,
}

/// Flags of `belay drill` (the help text is on the subcommand in main.rs).
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Which drill to run.
    #[arg(value_enum)]
    pub drill: DrillChoice,

    /// State dir of a running lab (`belay up`). With no lab running there,
    /// the drill starts a temporary lab of its own (each process on its own
    /// loopback address, short Sentinel timers) and removes it afterwards.
    #[arg(long, env = "BELAY_DIR", default_value = ".belay")]
    pub dir: PathBuf,

    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 25.0, value_name = "SECS")]
    pub duration: f64,

    /// When the fault starts, in seconds after the workload starts.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub fault_at: f64,

    /// How long the pause / kill / partition / lost Sentinel lasts, in
    /// seconds. Shorter than down-after + ~3 s and the old master may come
    /// back before the Sentinels finish failing over (a race worth seeing).
    #[arg(long, default_value_t = 8.0, value_name = "SECS")]
    pub fault_for: f64,

    /// Writer sessions (each on one connection at a time).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub writers: u32,

    /// Reader sessions (each on one connection at a time).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub readers: u32,

    /// Connection churn: every session closes its connection and opens a new
    /// one every N operations, each starting with a modern client's handshake
    /// (HELLO 3 AUTH, CLIENT SETINFO), as short-lived connections and pools
    /// with a maximum lifetime do; connect and handshake time count toward
    /// the operation that waited for them. 0: one connection per session.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub reconnect_every: u32,

    /// Where the workload sends commands: through the gateway, or straight
    /// to the master a Sentinel names (what an app without the gateway
    /// does: re-asks only on connection errors and READONLY).
    #[arg(long, value_enum, default_value_t = TargetKind::Gateway)]
    pub target: TargetKind,

    /// Seed for the workload's mix and the choice of Sentinel to kill.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Write the report(s) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw the timeline (throughput, errors, fault, Sentinel events) as SVG to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Client-side deadline per command, in ms [default: 20000 through the
    /// gateway (longer than its failover hold), 2000 direct].
    #[arg(long, value_name = "MS")]
    pub op_timeout_ms: Option<u64>,

    /// Sentinel down-after-milliseconds of the temporary lab (ignored for a running lab).
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub down_after_ms: u64,

    /// Against a Redis Cluster: the fault on the master of one shard (the
    /// shard of the workload's first register key), each shard's blackout
    /// measured apart. Uses the cluster lab running in --dir (`belay up
    /// --cluster`; one there is used even without this flag), else starts
    /// a temporary one (3 shards × 1 replica). pause and kill only.
    #[arg(long)]
    pub cluster: bool,

    /// cluster-node-timeout of the temporary cluster lab (ignored for a running lab).
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub node_timeout_ms: u64,

    /// Server of the temporary lab (ignored for a running lab): redis,
    /// valkey, or auto (redis when redis-server is on PATH, else valkey).
    #[arg(long, default_value = "auto", value_name = "redis|valkey|auto",
          value_parser = |s: &str| s.parse::<belay_lab::ServerChoice>())]
    pub server: belay_lab::ServerChoice,

    /// TLS on every hop in the temporary lab (as `belay up --tls`): the
    /// workload, the drill's gateway, the faults and the checks all speak
    /// TLS. A running lab in --dir is used as it runs.
    #[arg(long)]
    pub tls: bool,

    /// Durable writes in the drill's own gateway: a write is acknowledged
    /// only once N replicas (or a majority of them; `--durable` alone)
    /// confirm it with WAIT. For a lab in --dir, start its gateway with
    /// --durable-writes instead (`belay up --durable-writes`).
    #[arg(
        long,
        alias = "durable",
        value_name = "N|majority",
        num_args = 0..=1,
        default_missing_value = "majority"
    )]
    pub durable_writes: Option<belay_gateway::Durable>,

    /// Turn off read-your-writes in the drill's own gateway (used when the
    /// lab has none), to watch the checker catch the violations.
    #[arg(long)]
    pub no_read_your_writes: bool,

    /// A stale read fails the drill only if it missed a write acknowledged
    /// more than this many ms earlier (replica reads trail the master by
    /// replication lag; the gateway bounds it at 1000 ms by default). 0: any
    /// stale read fails.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub stale_bound_ms: u64,

    /// How long to wait for the topology to settle after each drill, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub settle_timeout: u64,
}

impl DrillArgs {
    fn options(&self, fault: FaultKind) -> DrillOptions {
        DrillOptions {
            fault,
            duration: Duration::from_secs_f64(self.duration.max(0.0)),
            fault_at: Duration::from_secs_f64(self.fault_at.max(0.0)),
            fault_for: Duration::from_secs_f64(self.fault_for.max(0.0)),
            writers: self.writers,
            readers: self.readers,
            target: self.target,
            seed: self.seed,
            op_timeout: self.op_timeout_ms.map(Duration::from_millis),
            settle_timeout: Duration::from_secs(self.settle_timeout),
            cleanup: false,
            stale_bound: Duration::from_millis(self.stale_bound_ms),
            reconnect_every: self.reconnect_every,
            durable_writes: self.durable_writes.map(describe_durable),
        }
    }

    fn faults(&self) -> Vec<FaultKind> {
        match self.drill {
            DrillChoice::Pause => vec![FaultKind::Pause],
            DrillChoice::Kill => vec![FaultKind::Kill],
            DrillChoice::Partition => vec![FaultKind::Partition],
            DrillChoice::PartitionWithReplica => vec![FaultKind::PartitionWithReplica],
            DrillChoice::SentinelLoss => vec![FaultKind::SentinelLoss],
            DrillChoice::Manual => vec![FaultKind::Manual],
            DrillChoice::Switchover => vec![FaultKind::Switchover],
            DrillChoice::All => FaultKind::ALL.to_vec(),
        }
    }
}

fn describe_durable(d: belay_gateway::Durable) -> String {
    match d {
        belay_gateway::Durable::Replicas(n) => n.to_string(),
        belay_gateway::Durable::Majority => "a majority of the".into(),
    }
}

/// Runs `belay drill`. Exit: 0 every verdict PASS, 3 some verdict FAIL,
/// 1 the drill could not run, 130 interrupted.
pub async fn run(args: DrillArgs) -> Result<ExitCode> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    for f in args.faults() {
        args.options(f).validate()?;
    }
    let cluster_in_dir = running_cluster(&args.dir);
    if args.cluster || cluster_in_dir {
        return run_cluster(&args, cluster_in_dir, &mut sigint, &mut sigterm).await;
    }
    let mut ui = Ui::new();

    // The lab: the running one in --dir, or a temporary one.
    let running = belay_lab::recorded_state(&args.dir)
        .ok()
        .flatten()
        .is_some_and(|s| !s.running().is_empty());
    let mut temp_dir = None;
    let mut lab = if running {
        Observer::step(
            &ui,
            &format!("using the lab running in {}", args.dir.display()),
        );
        Lab::attach(&args.dir)?
    } else {
        let dir = tempfile::Builder::new()
            .prefix("belay-drill-")
            .tempdir()
            .context("creating a temporary dir for the drill's lab")?;
        let mut spec = LabSpec::for_tests(dir.path());
        spec.password = None;
        spec.server = args.server;
        spec.tls = args.tls;
        spec.down_after_ms = args.down_after_ms;
        spec.failover_timeout_ms = (args.down_after_ms * 4).max(4000);
        spec.own_loopback_addrs = true;
        Observer::step(&ui, &format!(
            "no lab running in {}: starting a temporary one (down-after {} ms, each process on its own 127.0.0.X)",
            args.dir.display(),
            args.down_after_ms
        ));
        let started = tokio::select! {
            r = Lab::start(spec, &ui) => r,
            _ = sigint.recv() => Err(LabError::Interrupted.into()),
            _ = sigterm.recv() => Err(LabError::Interrupted.into()),
        };
        temp_dir = Some(dir);
        started?
    };

    let mut reports: Vec<DrillReport> = Vec::new();
    let mut interrupted = false;
    let mut failure = None;
    {
        if args.durable_writes.is_some()
            && (args.target != TargetKind::Gateway || lab.gateway_addr().is_some())
        {
            anyhow::bail!(
                "--durable-writes sets the drill's own gateway, and this drill uses {}: start that lab with `belay up --durable-writes`, or run the drill without a lab in --dir",
                if args.target == TargetKind::Gateway { "the lab's gateway" } else { "no gateway (--target direct-master)" }
            );
        }
        let gateway = if args.target == TargetKind::Gateway && lab.gateway_addr().is_none() {
            Some(
                InProcessGateway::start(&lab, !args.no_read_your_writes, args.durable_writes)
                    .await?,
            )
        } else {
            None
        };
        let gw_addr = lab
            .gateway_addr()
            .or_else(|| gateway.as_ref().map(|g| g.addr.clone()));
        for fault in args.faults() {
            if fault == FaultKind::Partition
                && args.drill == DrillChoice::All
                && !has_own_addrs(&lab)
            {
                Observer::step(&ui, "skipping partition: this lab's processes share one address (run without a lab in --dir to include it)");
                continue;
            }
            let mut opts = args.options(fault);
            opts.cleanup = running;
            ui.start_run(&opts);
            let r = tokio::select! {
                r = drill::run(&mut lab, gw_addr.as_deref(), &opts, &ui) => r,
                _ = sigint.recv() => { interrupted = true; break }
                _ = sigterm.recv() => { interrupted = true; break }
            };
            ui.finish_run();
            match r {
                Ok(report) => {
                    print!("{}", report::render_text(&report));
                    reports.push(report);
                }
                Err(e) => {
                    failure = Some(e.context(format!("the {} drill could not run", fault.name())));
                    break;
                }
            }
        }
    }

    if interrupted || failure.is_some() {
        // Undo what the interrupted drill left (its guards already removed
        // partition rules and thawed paused processes).
        for what in faults::mend(&mut lab) {
            eprintln!("belay drill: {what}");
        }
    }
    write_outputs(&args, &reports)?;
    if temp_dir.is_some() {
        Observer::step(&ui, "stopping the temporary lab");
        lab.stop(Duration::from_secs(5)).await?;
    }
    let temp_dir_used = temp_dir.is_some();
    drop(temp_dir);
    finish(reports, interrupted, failure, temp_dir_used)
}

/// The exit of `belay drill` once the lab is cleaned up.
fn finish(
    reports: Vec<DrillReport>,
    interrupted: bool,
    failure: Option<anyhow::Error>,
    temp_dir_used: bool,
) -> Result<ExitCode> {
    if interrupted {
        eprintln!(
            "belay drill: interrupted; the fault was undone (paused processes resumed, partition rules removed{})",
            if temp_dir_used { ", the temporary lab stopped" } else { ", killed processes restarted" }
        );
        return Ok(ExitCode::from(130));
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if reports.len() > 1 {
        println!("\nsummary");
        for r in &reports {
            println!("  {:<14} {}", r.drill.name(), r.verdict);
        }
    }
    Ok(if reports.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAIL)
    })
}

/// Whether a Redis Cluster lab (`belay up --cluster`) runs in `dir`.
fn running_cluster(dir: &std::path::Path) -> bool {
    matches!(
        belay_lab::cluster::recorded_state(dir),
        Ok(Some(s)) if s.processes.iter().any(|p| p.is_running())
    )
}

/// `belay drill pause|kill` against a Redis Cluster: the running cluster
/// lab in --dir (`in_dir`), or a temporary one.
async fn run_cluster(
    args: &DrillArgs,
    in_dir: bool,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<ExitCode> {
    if args.drill == DrillChoice::All {
        anyhow::bail!("`all` runs drills a Redis Cluster has no counterpart for (partition, sentinel-loss, manual, switchover): run `pause` and `kill` one by one");
    }
    for f in args.faults() {
        if let Some(why) = crate::cluster::refusal(f) {
            anyhow::bail!(
                "the {} drill does not run against a Redis Cluster: {why}; pause and kill do",
                f.name()
            );
        }
    }
    if args.target != TargetKind::Gateway {
        anyhow::bail!("--target direct-master is a naive Sentinel client; against a Redis Cluster the workload goes through the gateway");
    }
    if args.tls {
        anyhow::bail!("--tls: the cluster lab has no TLS yet");
    }
    if !in_dir
        && belay_lab::recorded_state(&args.dir)
            .ok()
            .flatten()
            .is_some_and(|s| !s.running().is_empty())
    {
        anyhow::bail!(
            "--cluster: the lab running in {} is a Sentinel lab; pass --dir of a cluster lab (`belay up --cluster`), or a dir with no lab running for a temporary cluster",
            args.dir.display()
        );
    }
    let mut ui = Ui::new();
    let mut temp_dir = None;
    let mut lab = if in_dir {
        Observer::step(
            &ui,
            &format!(
                "using the Redis Cluster lab running in {}",
                args.dir.display()
            ),
        );
        ClusterLab::attach(&args.dir)?
    } else {
        let dir = tempfile::Builder::new()
            .prefix("belay-drill-")
            .tempdir()
            .context("creating a temporary dir for the drill's cluster")?;
        let mut spec = ClusterSpec {
            dir: dir.path().to_path_buf(),
            node_timeout_ms: args.node_timeout_ms,
            server: args.server,
            reassign_busy_ports: true,
            ..ClusterSpec::default()
        };
        spec.assign_free_ports();
        Observer::step(&ui, &format!(
            "no cluster lab running in {}: starting a temporary Redis Cluster ({} shards × {} replica, node timeout {} ms)",
            args.dir.display(),
            spec.masters,
            spec.replicas_per_master,
            args.node_timeout_ms
        ));
        let started = tokio::select! {
            r = ClusterLab::start(spec, &ui) => r,
            _ = sigint.recv() => Err(LabError::Interrupted.into()),
            _ = sigterm.recv() => Err(LabError::Interrupted.into()),
        };
        temp_dir = Some(dir);
        started?
    };
    if args.durable_writes.is_some() && lab.gateway_addr().is_some() {
        anyhow::bail!("--durable-writes sets the drill's own gateway, and this drill uses the lab's gateway: start that lab with `belay up --cluster --durable-writes`, or run the drill without a lab in --dir");
    }
    let gateway = match lab.gateway_addr() {
        Some(_) => None,
        None => Some(
            InProcessGateway::start_cluster(&lab, !args.no_read_your_writes, args.durable_writes)
                .await?,
        ),
    };
    let gw_addr = lab
        .gateway_addr()
        .or_else(|| gateway.as_ref().map(|g| g.addr.clone()))
        .expect("a gateway");
    let mut reports = Vec::new();
    let (mut interrupted, mut failure) = (false, None);
    for fault in args.faults() {
        let mut opts = args.options(fault);
        opts.cleanup = in_dir;
        ui.start_run(&opts);
        let r = tokio::select! {
            r = crate::cluster::run(&mut lab, &gw_addr, gateway.as_ref(), &opts, &ui) => r,
            _ = sigint.recv() => { interrupted = true; break }
            _ = sigterm.recv() => { interrupted = true; break }
        };
        ui.finish_run();
        match r {
            Ok(report) => {
                print!("{}", report::render_text(&report));
                reports.push(report);
            }
            Err(e) => {
                failure = Some(e.context(format!("the {} drill could not run", fault.name())));
                break;
            }
        }
    }
    drop(gateway);
    if interrupted || failure.is_some() {
        for what in crate::cluster::mend(&mut lab) {
            eprintln!("belay drill: {what}");
        }
    }
    write_outputs(args, &reports)?;
    if temp_dir.is_some() {
        Observer::step(&ui, "stopping the temporary cluster");
        lab.stop(Duration::from_secs(5)).await?;
    }
    let temp_dir_used = temp_dir.is_some();
    drop(temp_dir);
    finish(reports, interrupted, failure, temp_dir_used)
}

fn has_own_addrs(lab: &Lab) -> bool {
    let mut hosts: Vec<&str> = lab
        .processes()
        .iter()
        .filter(|p| {
            matches!(
                p.kind(),
                belay_lab::ProcessKind::DataNode | belay_lab::ProcessKind::Sentinel
            )
        })
        .map(|p| p.record().host.as_str())
        .collect();
    let n = hosts.len();
    hosts.sort_unstable();
    hosts.dedup();
    hosts.len() == n
}

fn write_outputs(args: &DrillArgs, reports: &[DrillReport]) -> Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    if let Some(path) = &args.json {
        let text = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(reports)?
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::render(reports))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Progress on the terminal: a bar over the run with live counts and the
/// latest Sentinel event; plain lines when stderr is not a terminal.
struct Ui {
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Ui {
    fn new() -> Ui {
        Ui {
            bar: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn start_run(&mut self, opts: &DrillOptions) {
        eprintln!(
            "drill {} via {}: {} writers, {} readers, {:.0} s, fault at {:.1} s{}",
            opts.fault.name(),
            match opts.target {
                TargetKind::Gateway => "gateway",
                TargetKind::DirectMaster => "direct-master",
            },
            opts.writers,
            opts.readers,
            opts.duration.as_secs_f64(),
            opts.fault_at.as_secs_f64(),
            match opts.reconnect_every {
                0 => String::new(),
                n => format!(", reconnecting every {n} operations"),
            }
        );
        if self.tty {
            let pb = ProgressBar::new(opts.duration.as_millis() as u64);
            pb.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(pb);
        }
    }

    fn finish_run(&mut self) {
        if let Some(pb) = self.bar.take() {
            pb.finish_and_clear();
        }
    }
}

impl Observer for Ui {
    fn step(&self, message: &str) {
        match &self.bar {
            Some(pb) => pb.println(format!("  {message}")),
            None => eprintln!("  {message}"),
        }
    }

    fn tick(&self, elapsed: Duration, total: Duration, stats: &LiveStats, sentinel: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(pb) = &self.bar {
            pb.set_position(elapsed.as_millis().min(total.as_millis()) as u64);
            pb.set_message(format!(
                "{:5.1}/{:.0} s  writes ok {}  reads ok {}  errors {}  {}",
                elapsed.as_secs_f64(),
                total.as_secs_f64(),
                stats.writes_ok.load(Relaxed),
                stats.reads_ok.load(Relaxed),
                stats.errors.load(Relaxed),
                sentinel
            ));
        }
    }
}

impl Progress for Ui {
    fn step(&self, message: &str) {
        Observer::step(self, message);
    }
}
