//! The belay gateway: a RESP proxy that any Redis client can point at.
//!
//! Data flow (see ARCHITECTURE.md):
//!
//! ```text
//! client ─► server (accept) ─► session (one task per client)
//!                                 │ parse requests, keep session state
//!                                 ▼
//!                              dispatch ── command table (from COMMAND)
//!                                 ▼
//!               backend pools: master │ replica A │ replica B
//!                                 ▲
//! discovery (Sentinels + ROLE) ───┘ publishes an immutable Topology
//! ```
//!
//! Modules are private; what embedders, the CLI and the tests use is
//! re-exported here.

mod activity;
mod admin;
mod admin_log;
mod auth_throttle;
mod backend;
mod budget;
mod cli;
mod commands;
mod config;
mod context;
mod discovery;
mod error;
mod locality;
mod metrics;
mod reply;
mod router;
mod server;
mod session;
mod tls;
mod topology;

pub use activity::{Episode, Step as EpisodeStep};
pub use backend::{BackendConn, ConnectSpec, NodeHealth, ReplyResult, Silence};
pub use cli::{run, GatewayArgs};
pub use config::{
    parse_size, AdminListen, CommandOverride, Durable, GatewayConfig, OutputLimit, ReadFrom,
};
pub use context::Context;
pub use error::{BackendError, LostWhy, NotSentWhy};
pub use locality::Locality;
pub use server::{wait_ready, Gateway};
pub use topology::{OffsetSample, ReplicaNode, SentinelStatus, Topology, WriteHold};
