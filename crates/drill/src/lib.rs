//! belay's drills: break the master of a real Redis + Sentinel topology
//! while a workload runs, then report — honestly, in the spirit of Jepsen —
//! what the application saw: acknowledged writes lost, write and read
//! blackout, errors by kind, stale reads and read-your-writes violations,
//! latency before/during/after, and the Sentinel events beside the
//! client-side timeline.
//!
//! Modules, one concept each:
//! - [`workload`]: writer and reader sessions, through the gateway or
//!   straight to the master (what an app without the gateway does);
//! - [`client`]: one session's connection to the target (with churn:
//!   replaced every N operations, HELLO 3 handshake), and why an
//!   operation failed, as a typed value;
//! - [`history`]: the record of every operation;
//! - [`faults`] and [`partition`]: what breaks the master and how it is
//!   undone (the partition is iptables DROP rules between per-process
//!   loopback addresses, removed on every exit path);
//! - [`events`]: the Sentinels' own account, by subscription;
//! - [`checker`]: from history + final read-back to findings;
//! - [`report`] and [`svg`]: the table, the verdict line, JSON, the picture;
//! - [`drill`]: one drill, start to verdict; [`cli`]: `belay drill`;
//! - [`cluster`]: the same drill against a Redis Cluster (pause or kill
//!   one shard's master), with each shard's blackout measured apart.

pub mod checker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod drill;
pub mod events;
pub mod faults;
pub mod history;
pub mod partition;
pub mod report;
pub mod svg;
pub mod workload;

pub use drill::{run, DrillOptions, InProcessGateway, Observer, Quiet, TargetKind};
pub use faults::FaultKind;
pub use report::DrillReport;
