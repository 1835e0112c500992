//! What discovery does when a Sentinel event comes: a switch of master, a
//! failover starting or called off, the master or a replica down.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Discovery, Event, DEMOTED_MEMORY};
use crate::backend::NodePool;

impl Discovery {
    pub(super) fn handle_event(&mut self, ev: Event) {
        tracing::debug!(?ev, "discovery event");
        let is_master = |pool: &Option<Arc<NodePool>>, addr: &str| {
            pool.as_ref().is_some_and(|p| p.addr == addr)
        };
        match ev {
            Event::SwitchMaster { old_addr, new_addr } => {
                self.seen
                    .failover_noticed(&old_addr, "+switch-master", &self.telemetry);
                self.failover_hold = None;
                // The old master is demoted for good (a new epoch won): even
                // if Sentinels that have not heard yet still name it, and it
                // still answers ROLE master, it gets no more writes.
                self.demoted.retain(|_, at| at.elapsed() < DEMOTED_MEMORY);
                self.demoted.remove(&new_addr);
                self.demoted.insert(old_addr, Instant::now());
                if self
                    .master_pool
                    .as_ref()
                    .is_some_and(|p| p.addr != new_addr)
                {
                    tracing::info!(new_master = %new_addr, "+switch-master: no more writes to the old master");
                    self.retire_master();
                    self.republish();
                }
            }
            Event::FailoverStarting { master_addr } | Event::MasterDown { master_addr }
                if !is_master(&self.master_pool, &master_addr) =>
            {
                tracing::debug!(%master_addr, "a failover event for a master we do not use");
            }
            Event::FailoverStarting { master_addr } => {
                self.seen
                    .failover_noticed(&master_addr, "+try-failover", &self.telemetry);
                self.hold_for_failover(master_addr);
                self.republish();
            }
            Event::MasterDown { master_addr } => {
                self.seen
                    .failover_noticed(&master_addr, "+odown", &self.telemetry);
                // The Sentinels agree it is down: what was sent there is not
                // coming back from a slow command but from a dead node.
                tracing::info!(master = %master_addr, "+odown: the master is down; holding writes, giving up on commands in flight there");
                self.hold_for_failover(master_addr);
                self.drop_master();
                self.republish();
            }
            Event::FailoverAborted { master_addr } => {
                if self
                    .failover_hold
                    .as_ref()
                    .is_some_and(|(a, _)| *a == master_addr)
                {
                    tracing::info!(master = %master_addr, "the failover was aborted: writes resume once the master is confirmed");
                    self.failover_hold = None;
                }
            }
            Event::ReplicaDown { addr } => {
                if let Some(pool) = self.replica_pools.remove(&addr) {
                    tracing::info!(replica = %addr, "+sdown: the replica is down; its reads go elsewhere");
                    pool.close();
                    self.known_replicas.retain(|a| *a != addr);
                    self.republish();
                }
            }
            Event::Changed => {}
            Event::Suspect { addr } => {
                tracing::debug!(%addr, "a session saw signs that the master changed; looking again");
            }
        }
    }

    fn hold_for_failover(&mut self, master_addr: String) {
        if self.failover_hold.is_none() {
            tracing::info!(master = %master_addr, "a failover of the master started: holding writes");
        }
        // Expires on its own in case the end of the failover is missed.
        let expires = Instant::now() + self.cfg.failover_hold() * 2;
        self.failover_hold = Some((master_addr, expires));
    }
}
