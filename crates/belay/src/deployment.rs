//! Which deployment a command is about, and its credentials: a lab's
//! state dir, or Sentinels named on the command line (any deployment). One
//! set of flags for `belay status` and `belay switchover`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use belay_client::sentinel::SentinelAuth;
use belay_client::Auth;
use belay_lab::secrets::read_secret_file;
use clap::Args;

/// The deployment's flags.
#[derive(Debug, Args)]
pub struct DeploymentArgs {
    /// State dir of the lab (ignored with --sentinel).
    #[arg(long, env = "BELAY_DIR", default_value = ".belay")]
    pub dir: PathBuf,

    /// Ask this Sentinel instead of a lab's state dir (repeat for each).
    #[arg(long = "sentinel", value_name = "HOST:PORT")]
    pub sentinels: Vec<String>,

    /// Master name to ask the Sentinels about (with --sentinel).
    #[arg(long, default_value = "mymaster", value_name = "NAME")]
    pub master_name: String,

    /// ACL user for the data nodes (with --sentinel, or status's --cluster;
    /// default user when unset).
    #[arg(long, env = "BELAY_USERNAME", value_name = "USER")]
    pub username: Option<String>,

    /// Password of the data nodes (with --sentinel, or status's --cluster).
    /// Also tried on the Sentinels unless --sentinel-password is given: a
    /// Sentinel with no password configured is then asked without one.
    #[arg(long, env = "BELAY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Read --password from the first line of this file instead (it does not
    /// show in `ps` or in the shell's history).
    #[arg(
        long,
        env = "BELAY_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "password"
    )]
    pub password_file: Option<PathBuf>,

    /// ACL user for the Sentinels (with --sentinel-password).
    #[arg(long, env = "BELAY_SENTINEL_USERNAME", value_name = "USER")]
    pub sentinel_username: Option<String>,

    /// The Sentinels' own password, when they have one that is not the
    /// nodes' (with --sentinel). Given, every Sentinel must accept it.
    #[arg(
        long,
        env = "BELAY_SENTINEL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub sentinel_password: Option<String>,

    /// Read --sentinel-password from the first line of this file instead.
    #[arg(
        long,
        env = "BELAY_SENTINEL_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "sentinel_password"
    )]
    pub sentinel_password_file: Option<PathBuf>,
}

impl DeploymentArgs {
    /// Credentials for the data nodes, then for the Sentinels (see
    /// [`SentinelAuth::choose`]).
    pub fn credentials(&self) -> Result<(Option<Auth>, SentinelAuth)> {
        let login = |user: &Option<String>,
                     password: &Option<String>,
                     file: &Option<PathBuf>,
                     flags: (&str, &str)|
         -> Result<Option<Auth>> {
            let password = match (password, file) {
                (_, Some(path)) => Some(read_secret_file(path)?),
                (p, None) => p.clone(),
            };
            match (user, password) {
                (Some(_), None) => bail!("{} needs a password: give {} too", flags.0, flags.1),
                (username, Some(password)) => Ok(Some(Auth {
                    username: username.clone(),
                    password,
                })),
                (None, None) => Ok(None),
            }
        };
        let nodes = login(
            &self.username,
            &self.password,
            &self.password_file,
            ("--username", "--password or --password-file"),
        )?;
        let sentinels = login(
            &self.sentinel_username,
            &self.sentinel_password,
            &self.sentinel_password_file,
            (
                "--sentinel-username",
                "--sentinel-password or --sentinel-password-file",
            ),
        )?;
        let sentinel_auth = SentinelAuth::choose(sentinels, nodes.clone());
        Ok((nodes, sentinel_auth))
    }
}
