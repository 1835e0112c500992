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
mod cluster;
mod commands;
mod config;
mod context;
mod discovery;
mod drain;
mod error;
mod locality;
mod metrics;
mod reload;
mod reply;
mod router;
mod server;
mod session;
mod tls;
mod topology;
mod upgrade;

pub use activity::{Episode, Step as EpisodeStep};
pub use backend::{BackendConn, ConnectSpec, GatewayAuth, NodeHealth, ReplyResult, Silence};
pub use cli::{run, GatewayArgs};
pub use config::{
    parse_size, AdminListen, CommandOverride, Durable, GatewayConfig, OutputLimit, ReadFrom,
    TlsEverywhere,
};
pub use context::Context;
pub use error::{BackendError, LostWhy, NotSentWhy};
pub use locality::Locality;
pub use reload::{LiveConfig, ReloadError, Reloaded};
pub use server::{wait_ready, Gateway, Sockets, Start};
pub use topology::{OffsetSample, ReplicaNode, SentinelStatus, Topology, WriteHold};
