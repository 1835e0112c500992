//! The belay gateway: a RESP proxy that any Redis client can point at.
//!
//! Data flow (see ARCHITECTURE.md):
//!
//! ```text
//! client ─► server (accept) ─► session (one task per client)
//!                                 │ parse requests, keep session state
//!                                 ▼
//!                              router ── command table (from COMMAND)
//!                                 ▼
//!               backend pools: master │ replica A │ replica B
//!                                 ▲
//! discovery (Sentinels + ROLE) ───┘ publishes an immutable Topology
//! ```

pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod pool;
pub mod pubsub;
pub mod reply;
pub mod router;
pub mod server;
pub mod session;
pub mod topology;

pub use config::GatewayConfig;
pub use server::Gateway;
