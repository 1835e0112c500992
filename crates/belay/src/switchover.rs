//! `belay switchover`: a planned change of master that clients do not
//! notice (see `belay_client::switchover`), for a lab or any
//! Sentinel-managed deployment.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use belay_client::switchover::Switchover;
use belay_lab::Lab;
use clap::Args;

use crate::deployment::DeploymentArgs;

/// Flags of `belay switchover` (the help text is on the subcommand in main.rs).
#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,

    /// The replica to promote (HOST:PORT as the Sentinels name it)
    /// [default: Sentinel's choice].
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<String>,

    /// The longest writes may stay paused on the master: if this command
    /// is interrupted half-way, they resume by themselves after this.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub max_pause_ms: u64,
}

pub async fn run(args: SwitchoverArgs) -> Result<ExitCode> {
    let d = &args.deployment;
    let mut plan = if d.sentinels.is_empty() {
        let lab = Lab::attach(&d.dir)?;
        let mut plan = Switchover::new(lab.master_name(), lab.sentinel_addrs());
        plan.tls = lab.tls().cloned();
        plan.node_auth = Some(lab.auth());
        plan.sentinel_auth = lab.sentinel_auth();
        plan
    } else {
        let (auth, sentinel_auth) = d.credentials()?;
        let mut plan = Switchover::new(&d.master_name, d.sentinels.clone());
        plan.node_auth = auth;
        plan.sentinel_auth = sentinel_auth;
        plan
    };
    if !(500..=60_000).contains(&args.max_pause_ms) {
        anyhow::bail!("--max-pause-ms must be between 500 and 60000");
    }
    plan.to = args.to.clone();
    plan.max_pause = Duration::from_millis(args.max_pause_ms);
    let started = std::time::Instant::now();
    let report = plan
        .run(&|step| eprintln!("  {:>6} ms  {step}", started.elapsed().as_millis()))
        .await?;
    println!(
        "switched {} -> {}: writes paused for {} ms{}",
        report.old_master,
        report.new_master,
        report.writes_paused.as_millis(),
        if report.old_master_demoted {
            ""
        } else {
            " (the old master was not yet a replica when they resumed: writes sent to it meanwhile may have run there)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
