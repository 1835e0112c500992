//! `belay down`: stop the lab recorded in a state dir (a Sentinel lab or
//! a cluster lab), from any shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use belay_lab::state::LabKind;
use clap::Args;

use crate::ui::show_path;

/// Flags of `belay down` (the help text is on the subcommand in main.rs).
#[derive(Debug, Args)]
pub struct DownArgs {
    /// State dir of the lab.
    #[arg(long, env = "BELAY_DIR", default_value = ".belay")]
    pub dir: PathBuf,

    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub grace: u64,
}

pub async fn run(args: DownArgs) -> Result<ExitCode> {
    let dir = show_path(&args.dir);
    let Some(processes) = belay_lab::state::recorded_processes(&args.dir)? else {
        println!("no lab in {dir}: nothing to stop");
        return Ok(ExitCode::SUCCESS);
    };
    if !processes.iter().any(|p| p.is_running()) {
        belay_lab::state::remove(&args.dir)?;
        println!(
            "the lab in {dir} was not running (its processes are gone); removed its stale state"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let grace = Duration::from_secs(args.grace);
    let report = match belay_lab::state::recorded_kind(&args.dir)? {
        Some(LabKind::Cluster) => belay_lab::cluster::down(&args.dir, grace).await?,
        _ => belay_lab::down(&args.dir, grace).await?,
    };
    for (name, pid) in &report.stopped {
        println!("stopped {name} (pid {pid})");
    }
    for (name, pid) in &report.killed {
        println!(
            "killed {name} (pid {pid}): still running {}s after SIGTERM",
            args.grace
        );
    }
    for name in &report.already_gone {
        println!("{name} was not running");
    }
    println!("the lab in {dir} is down; data and logs are kept there");
    Ok(ExitCode::SUCCESS)
}
