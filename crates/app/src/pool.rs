//! Connections for publications, one request at a time on each.
//!
//! The gateway keeps the order of a connection's commands (Redis's own
//! promise for a connection): a command held through a failover, or in
//! flight on a master that was just paused, holds up everything sent after
//! it on that connection. Publications share nothing but the data, so each
//! takes a connection of its own for its write and its read-back, and one
//! stuck in a failover holds up no other. Idle connections are kept for
//! the next request; a connection that failed is dropped.

use std::sync::Mutex;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};

/// Idle connections kept; more are opened under load and closed after use.
const KEEP_IDLE: usize = 16;

/// Connections to the gateway for one request at a time.
pub struct Pool {
    client: Client,
    config: AsyncConnectionConfig,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl Pool {
    pub fn new(client: Client, config: AsyncConnectionConfig) -> Pool {
        Pool {
            client,
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, or a new one.
    pub async fn take(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.idle.lock().expect("pool lock").pop() {
            return Ok(c);
        }
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    /// Gives back a connection whose last command was answered.
    pub fn put(&self, c: MultiplexedConnection) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < KEEP_IDLE {
            idle.push(c);
        }
    }
}
