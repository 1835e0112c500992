//! Connections to the nodes: one TCP connection and its two tasks
//! ([`BackendConn`]), the pool of a node's connections ([`NodePool`]), the
//! watchdog that tells a silent node from a slow command, and what the
//! connections notice about their node ([`NodeHealth`]).

mod conn;
mod health;
mod pool;
mod watchdog;

pub use conn::{BackendConn, Confirm, ConnectSpec, Replication, ReplyResult};
pub use health::NodeHealth;
pub use pool::NodePool;
pub use watchdog::Silence;
