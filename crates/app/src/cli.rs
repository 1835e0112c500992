//! `belay app` settings: where the gateway is, the password, where to
//! listen, and how long a page or a publication may wait.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Flags of `belay app` (the help text is on the subcommand in the CLI).
#[derive(Clone, Debug, Args)]
pub struct AppArgs {
    /// The belay gateway the app sends every Redis command to. The app never
    /// talks to a Redis node or a Sentinel itself.
    #[arg(
        long,
        env = "BELAY_GATEWAY",
        default_value = "127.0.0.1:6390",
        value_name = "HOST:PORT"
    )]
    pub gateway: String,

    /// The password the gateway takes (`AUTH`); the lab's password for a lab.
    #[arg(long, env = "BELAY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Read --password from the first line of this file instead (a mounted
    /// secret: it shows in neither `ps` nor `docker inspect`).
    #[arg(
        long,
        env = "BELAY_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "password"
    )]
    pub password_file: Option<PathBuf>,

    /// Where the app serves HTTP.
    #[arg(
        long,
        env = "BELAY_APP_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// How long a page waits for Redis before it answers 503. Reads go to
    /// replicas and keep flowing through a failover, so this is only reached
    /// when the gateway itself does not answer.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub read_timeout_ms: u64,

    /// How long publishing a story may take, retries included, before it
    /// answers 503. Longer than the gateway's --failover-hold-ms (15000) so
    /// that a write held through a failover gets the gateway's answer.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub write_timeout_ms: u64,

    /// How often the view counts collected from page loads are written. A
    /// page load never waits for a write: during a failover the counts wait
    /// here instead of the readers.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub view_flush_ms: u64,
}

/// [`AppArgs`] checked and resolved.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub gateway: String,
    pub gateway_host: String,
    pub gateway_port: u16,
    pub password: Option<String>,
    pub listen: String,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub view_flush: Duration,
}

impl AppArgs {
    pub(crate) fn settings(&self) -> Result<Settings> {
        let (host, port) = self
            .gateway
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, p)| !h.is_empty() && *p != 0)
            .with_context(|| {
                format!(
                    "--gateway {:?} is not HOST:PORT (e.g. 127.0.0.1:6390)",
                    self.gateway
                )
            })?;
        let password = match (&self.password, &self.password_file) {
            (_, Some(path)) => Some(belay_client::read_password_file(path)?),
            (Some(p), None) => Some(p.clone()),
            (None, None) => None,
        };
        for (flag, ms) in [
            ("--read-timeout-ms", self.read_timeout_ms),
            ("--write-timeout-ms", self.write_timeout_ms),
            ("--view-flush-ms", self.view_flush_ms),
        ] {
            if ms == 0 {
                bail!("{flag} must be more than 0");
            }
        }
        Ok(Settings {
            gateway: self.gateway.clone(),
            gateway_host: host.to_string(),
            gateway_port: port,
            password,
            listen: self.listen.clone(),
            read_timeout: Duration::from_millis(self.read_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            view_flush: Duration::from_millis(self.view_flush_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        app: AppArgs,
    }

    fn parse(args: &[&str]) -> Result<Settings> {
        let mut all = vec!["app"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.app.settings()
    }

    #[test]
    fn a_gateway_address_needs_a_port() {
        let err = parse(&["--gateway", "localhost", "--password", "p"]).unwrap_err();
        assert!(err.to_string().contains("not HOST:PORT"), "{err}");
        let s = parse(&["--gateway", "gateway:6380", "--password", "p"]).unwrap();
        assert_eq!((s.gateway_host.as_str(), s.gateway_port), ("gateway", 6380));
    }

    #[test]
    fn the_password_file_is_read_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let s = parse(&["--password-file", file.to_str().unwrap()]).unwrap();
        assert_eq!(s.password.as_deref(), Some("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        let err = parse(&["--password-file", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }
}
