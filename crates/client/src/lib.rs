//! A small async client for the control plane: asking Sentinels where the
//! master is, asking nodes their `ROLE` and `INFO`, subscribing to Sentinel
//! events. It shares belay-resp's parser with the gateway, so there is one
//! RESP implementation and one set of limits in the project.
//!
//! Every call has a deadline: a paused Redis (SIGSTOP, `docker pause`) keeps
//! its socket open and silent, and the control plane must notice instead of
//! hanging.

mod connection;
mod error;
mod info;
mod password_file;
mod role;
pub mod sentinel;
pub mod switchover;
mod tls;

pub use belay_resp::Value;
pub use connection::{Auth, Connection};
pub use error::ClientError;
pub use info::Info;
pub use password_file::{read_password_file, PasswordFileError};
pub use role::Role;
pub use tls::{provider, read_certs, read_key, read_roots, Stream, TlsClient, TlsError, TlsFiles};
