//! `belay status`: ask every node and Sentinel, print what each says and
//! every disagreement in plain words (`--json` for machines). A cluster
//! lab's report is drawn by `status_cluster`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use belay_lab::cluster::{ClusterLab, ClusterQuery};
use belay_lab::secrets::read_secret_file;
use belay_lab::state::LabKind;
use belay_lab::status::{self, StatusQuery, StatusReport, Target};
use belay_lab::Lab;
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::deployment::DeploymentArgs;
use crate::ui::{self, header, opt, show_path};
use crate::watch::{self, Admin, Scrape};

/// Each node of a cluster belay did not start is given this long to answer.
const FOREIGN_TIMEOUT: Duration = Duration::from_millis(1500);

/// Flags of `belay status` (the help text is on the subcommand in main.rs).
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,

    /// Ask this node of a Redis Cluster instead of a lab's state dir
    /// (repeat for several): every node its `CLUSTER NODES` names is
    /// asked, with --username/--password.
    #[arg(
        long = "cluster",
        value_name = "HOST:PORT",
        conflicts_with = "sentinels"
    )]
    pub cluster: Vec<String>,

    /// Print the report as JSON on stdout.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,

    /// Redraw every --interval seconds until Ctrl-C, with the gateway's
    /// traffic (ops/s to the master and each replica, read share, p50/p99
    /// latency) and its last failovers from its admin endpoint: the
    /// dashboard, in the terminal.
    #[arg(long)]
    pub watch: bool,

    /// Seconds between redraws with --watch.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub interval: f64,

    /// The gateway's admin endpoint (HOST:PORT or URL) for --watch
    /// [default for a lab: its gateway's, port + 1000].
    #[arg(long, env = "BELAY_ADMIN", value_name = "ADDR")]
    pub admin: Option<String>,

    /// The admin endpoint's password, from the first line of this file.
    #[arg(long, env = "BELAY_ADMIN_PASSWORD_FILE", value_name = "PATH")]
    pub admin_password_file: Option<PathBuf>,
}

/// Where the report comes from: Sentinels named on the command line, or
/// a lab's state dir.
enum Source {
    Sentinels(Box<StatusQuery>),
    Lab(Box<Lab>),
    Cluster(Box<ClusterLab>),
    /// A cluster belay did not start: its nodes are found anew each look.
    ClusterNodes {
        seeds: Vec<String>,
        auth: Option<belay_client::Auth>,
    },
}

/// One look at a deployment: as text, as JSON, and whether it is healthy.
struct Look {
    text: String,
    json: serde_json::Value,
    healthy: bool,
}

impl Source {
    async fn look(&self, title: &str) -> Result<Look> {
        let report: StatusReport = match self {
            Source::Sentinels(q) => status::gather(q).await,
            Source::Lab(lab) => lab.status().await,
            Source::Cluster(lab) => return cluster_look(lab.status().await, title),
            Source::ClusterNodes { seeds, auth } => {
                let q = ClusterQuery::from_seeds(seeds, auth.clone(), FOREIGN_TIMEOUT).await;
                return cluster_look(belay_lab::cluster::view::gather(&q).await, title);
            }
        };
        Ok(Look {
            text: render(&report, title),
            json: serde_json::to_value(&report)?,
            healthy: report.healthy,
        })
    }
}

pub async fn run(args: StatusArgs) -> Result<ExitCode> {
    let (source, title, lab_admin) = if !args.cluster.is_empty() {
        let (auth, _) = args.deployment.credentials()?;
        (
            Source::ClusterNodes {
                seeds: args.cluster.clone(),
                auth,
            },
            format!("cluster at {}", args.cluster.join(", ")),
            None,
        )
    } else if !args.deployment.sentinels.is_empty() {
        let (auth, sentinel_auth) = args.deployment.credentials()?;
        let q = StatusQuery {
            master_name: args.deployment.master_name.clone(),
            auth,
            sentinel_auth,
            sentinels: args
                .deployment
                .sentinels
                .iter()
                .map(|a| Target {
                    addr: a.clone(),
                    ..Target::default()
                })
                .collect(),
            ..StatusQuery::default()
        };
        (
            Source::Sentinels(Box::new(q)),
            format!("Sentinels {}", args.deployment.sentinels.join(", ")),
            None,
        )
    } else {
        let dir = show_path(&args.deployment.dir);
        let Some(processes) = belay_lab::state::recorded_processes(&args.deployment.dir)? else {
            return Err(belay_lab::LabError::NoLab {
                dir: args.deployment.dir,
            }
            .into());
        };
        if !processes.iter().any(|p| p.is_running()) {
            eprintln!(
                "the lab in {dir} is not running: none of its processes is alive (left over from a crash or a reboot).\n  \
                 Start a new one:  belay up --dir {dir}\n  \
                 Clean up:         belay down --dir {dir}"
            );
            return Ok(ExitCode::FAILURE);
        }
        let title = format!("lab in {dir}");
        if belay_lab::state::recorded_kind(&args.deployment.dir)? == Some(LabKind::Cluster) {
            let lab = ClusterLab::attach(&args.deployment.dir)?;
            let admin = lab.gateway_admin_addr();
            (Source::Cluster(Box::new(lab)), title, admin)
        } else {
            let lab = Lab::attach(&args.deployment.dir)?;
            let admin = lab.gateway_admin_addr();
            (Source::Lab(Box::new(lab)), title, admin)
        }
    };

    if args.watch {
        let admin = args.admin.clone().or(lab_admin);
        let password = match &args.admin_password_file {
            Some(path) => Some(read_secret_file(path)?),
            None => None,
        };
        return watch(
            &args,
            &source,
            &title,
            admin.map(|a| Admin::new(&a, password)),
        )
        .await;
    }
    let look = source.look(&title).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&look.json)?);
    } else {
        print!("{}", look.text);
    }
    Ok(if look.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A cluster's report as a look.
fn cluster_look(r: belay_lab::cluster::ClusterReport, title: &str) -> Result<Look> {
    let mut json = serde_json::to_value(&r)?;
    json["kind"] = "cluster".into();
    Ok(Look {
        text: crate::status_cluster::render(&r, title),
        json,
        healthy: r.healthy,
    })
}

/// Redraws the report, the gateway's traffic and its failovers until
/// Ctrl-C or SIGTERM.
async fn watch(
    args: &StatusArgs,
    source: &Source,
    title: &str,
    admin: Option<Admin>,
) -> Result<ExitCode> {
    if !(0.1..=3600.0).contains(&args.interval) {
        bail!("--interval must be between 0.1 and 3600 seconds");
    }
    let interval = Duration::from_secs_f64(args.interval);
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut last: Option<Scrape> = None;
    loop {
        let mut screen = source.look(title).await?.text;
        match &admin {
            None => screen.push_str(
                "\n(no gateway admin endpoint to ask for traffic and failovers: give --admin HOST:PORT)\n",
            ),
            Some(admin) => match (admin.scrape().await, admin.failovers().await) {
                (Ok(now), Ok(episodes)) => {
                    let traffic = last.as_ref().map(|then| watch::traffic(then, &now));
                    screen.push_str(&watch::render(traffic.as_ref(), &episodes, watch::now_ms()));
                    last = Some(now);
                }
                (Err(e), _) | (_, Err(e)) => {
                    screen.push_str(&format!("\nGATEWAY ADMIN ENDPOINT\n  {e:#}\n"));
                    last = None;
                }
            },
        }
        // Home, clear, draw: one write, so the screen does not flicker.
        print!(
            "\x1b[H\x1b[2J{screen}\n{} every {:.1} s; Ctrl-C to stop\n",
            admin
                .as_ref()
                .map_or(String::new(), |a| format!("gateway admin {};", a.url())),
            args.interval
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn render(r: &StatusReport, title: &str) -> String {
    let mut out = format!("{title} — master name {:?}\n\nDATA NODES\n", r.master_name);
    let mut rows = vec![header(&[
        "NAME", "ADDRESS", "PID", "ROLE", "OFFSET", "LAG", "LINK",
    ])];
    for n in &r.nodes {
        let lag = match (n.lag_bytes, n.lag_seconds) {
            (None, None) => "-".to_string(),
            (b, s) => format!("{} B / {} s", opt(&b), opt(&s)),
        };
        let link = match (&n.link, &n.replicates_from) {
            (Some(l), Some(from)) => format!("{l} <- {from}"),
            _ => "-".into(),
        };
        let mut row = who(&n.name, &n.addr, &n.pid);
        row.extend([
            answer(n.reachable, n.refused, &n.role),
            opt(&n.offset),
            lag,
            link,
        ]);
        rows.push(row);
    }
    out.push_str(&ui::table(&rows));

    out.push_str("\nSENTINELS\n");
    let mut rows = vec![header(&[
        "NAME",
        "ADDRESS",
        "PID",
        "MASTER",
        "FLAGS",
        "REPLICAS",
        "SENTINELS",
        "QUORUM",
    ])];
    for s in &r.sentinels {
        let mut row = who(&s.name, &s.addr, &s.pid);
        row.extend([
            answer(s.reachable, s.refused, &s.master),
            opt(&s.master_flags),
            opt(&s.replicas_known),
            opt(&s.sentinels_known),
            match (&s.quorum, s.quorum_ok) {
                (_, true) => "OK".into(),
                (None, _) => "-".into(),
                _ => "FAIL".into(),
            },
        ]);
        rows.push(row);
    }
    out.push_str(&ui::table(&rows));

    if let Some(g) = &r.gateway {
        out.push_str(&one_process(
            "GATEWAY",
            &g.addr,
            g.pid,
            if g.reachable && g.error.is_some() {
                "answers PING; its topology is unknown (see PROBLEMS)".into()
            } else if g.reachable {
                match (&g.master, g.writes_held) {
                    (Some(m), false) => format!("answers PING; writes to {m}"),
                    (Some(m), true) => format!("answers PING; HOLDING writes for {m}"),
                    (None, _) => "answers PING; no confirmed master (holding writes)".into(),
                }
            } else {
                format!("UNREACHABLE: {}", opt(&g.error))
            },
        ));
        if !g.replicas.is_empty() {
            let zoned = g.zone.is_some() || g.replicas.iter().any(|r| r.zone.is_some());
            let mut rows = vec![vec![
                "  REPLICA".to_string(),
                "OFFSET".into(),
                "LAG".into(),
                "RTT".into(),
                "READS".into(),
            ]];
            if zoned {
                rows[0].insert(1, format!("ZONE (gateway: {})", opt(&g.zone)));
            }
            for rep in &g.replicas {
                let mut row = vec![
                    format!("  {}", rep.addr),
                    rep.offset.to_string(),
                    rep.lag_ms
                        .map(|l| format!("{l} ms"))
                        .unwrap_or_else(|| "-".into()),
                    rep.rtt_ms
                        .map(|ms| format!("{ms:.2} ms"))
                        .unwrap_or_else(|| "-".into()),
                    if rep.eligible {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ];
                if zoned {
                    row.insert(1, opt(&rep.zone));
                }
                rows.push(row);
            }
            out.push_str(&ui::table(&rows));
        }
    }

    if let Some(a) = &r.app {
        out.push_str(&one_process(
            "WEB APP",
            &a.url,
            a.pid,
            match a.http_status {
                Some(200) => format!("answers HTTP; {}", a.says),
                Some(code) => format!("answers /healthz with {code}: {}", a.says),
                None => format!("UNREACHABLE: {}", a.says),
            },
        ));
    }

    out.push_str(&problems_and_summary(&r.problems, &r.summary()));
    out
}

/// The first cells of a process's row: its name, address and pid.
pub(crate) fn who(name: &Option<String>, addr: &str, pid: &Option<u32>) -> Vec<String> {
    vec![opt(name), addr.to_string(), opt(pid)]
}

/// What a process answered, or why not: `REFUSED` (it answered but
/// refused us) or `UNREACHABLE`.
pub(crate) fn answer(reachable: bool, refused: bool, said: &Option<String>) -> String {
    if reachable {
        opt(said)
    } else if refused {
        "REFUSED".into()
    } else {
        "UNREACHABLE".into()
    }
}

/// A section of one process (the gateway, the web app): where, its pid,
/// what it says.
pub(crate) fn one_process(title: &str, addr: &str, pid: Option<u32>, says: String) -> String {
    let row = vec![addr.to_string(), format!("pid {}", opt(&pid)), says];
    format!("\n{title}\n{}", ui::table(&[row]))
}

/// The end of a report: each problem in words (if any), then the verdict.
pub(crate) fn problems_and_summary(problems: &[String], summary: &str) -> String {
    let mut out = String::new();
    if !problems.is_empty() {
        out.push_str("\nPROBLEMS\n");
        for p in problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out.push_str(&format!("\n{summary}\n"));
    out
}
