//! belay's lab: a real Redis HA topology on one machine — 1 master, N
//! replicas, M Sentinels (and the gateway) as supervised child processes
//! with generated configs under a state dir. `belay up/status/down` are thin
//! layers over this crate; the gateway's and drills' tests use [`Lab`]
//! directly:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use belay_lab::{Lab, LabSpec, NoProgress};
//! use std::time::Duration;
//! let dir = tempfile::tempdir()?;
//! let mut lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress).await?;
//! let old = lab.current_master().await?;
//! lab.pause("redis-1")?;                        // like `docker compose pause`
//! let new = lab.wait_for_failover(&old, Duration::from_secs(20)).await?;
//! lab.resume("redis-1")?;
//! lab.wait_until_replica_of("redis-1", &new, Duration::from_secs(30)).await?;
//! # Ok(()) }                                    // drop: every process is killed
//! ```
//!
//! Modules, one concept each: [`spec`] (what to build), [`config`] (the
//! files), [`process`] (one supervised child), `supervisor` (a handle's
//! children: start, signal, restart, wait, stop), [`ports`], `ready` (when is
//! it ready), [`http`] (one request to the web app), [`status`] (what is it
//! doing), [`state`] (the state dir),
//! [`secrets`] (who may read the password), [`server`] (Redis or Valkey), and `lab` (the handle tying
//! them together). [`foreign`] builds, for tests, a deployment belay did
//! not configure: the seed note's layout. [`cluster`] is the other kind of
//! lab: a Redis Cluster ([`cluster::ClusterLab`]), on the same processes,
//! ports, secrets and state file.

pub mod cluster;
pub mod config;
mod error;
pub mod foreign;
pub mod http;
mod lab;
mod master;
pub mod ports;
pub mod process;
mod progress;
mod ready;
pub mod secrets;
pub mod server;
pub mod spec;
pub mod state;
pub mod status;
mod supervisor;
pub mod testing;
pub mod text;
pub mod tls;
pub mod why;

pub use error::LabError;
pub use foreign::{SeedDeployment, SeedSpec};
pub use lab::{down, recorded_state, Lab};
pub use ports::reserve_block;
pub use process::{Process, ProcessKind, ProcessRecord};
pub use progress::{NoProgress, Progress};
pub use server::{SentinelProgram, ServerChoice, ServerPrograms};
pub use spec::{AppSpec, GatewaySpec, LabSpec};
pub use state::LabState;
pub use status::{StatusQuery, StatusReport};
pub use supervisor::StopReport;
