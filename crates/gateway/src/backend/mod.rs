//! Connections to the nodes: one TCP connection and its two tasks
//! ([`BackendConn`]), the pool of a node's connections ([`NodePool`]), the
//! watchdog that tells a silent node from a slow command, what the
//! connections notice about their node ([`NodeHealth`]), and the `WAIT` of
//! durable writes ([`Confirm`]).

mod confirm;
mod conn;
mod health;
mod pool;
mod setup;
mod watchdog;

pub use confirm::{Confirm, Replication};
pub use conn::{BackendConn, ReplyResult};
pub use health::NodeHealth;
pub use pool::NodePool;
pub use setup::{ConnectSpec, GatewayAuth};
pub use watchdog::Silence;
