//! Waiting on a cluster: for it to be whole (start-up, after a drill), for
//! a shard's failover, for a node to follow a master, for the gateway —
//! each polled by one loop that fails at once when a child exits.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::view::{self, NodeView};
use super::{ClusterLab, PROBE_TIMEOUT};
use crate::master::{Watch, POLL};
use crate::progress::Progress;

impl ClusterLab {
    /// Waits until a replica of `old_master`'s shard (name or address) is
    /// master with the shard's slots: it says so (`ROLE`), and every
    /// reachable node but `old_master` sees the same slot map with those
    /// slots on it. Returns its address.
    pub async fn wait_for_failover(&self, old_master: &str, timeout: Duration) -> Result<String> {
        let old = self.process(old_master)?.addr();
        let shard = self.planned_shard(&old)?;
        let members: Vec<String> = self
            .nodes()
            .iter()
            .enumerate()
            .filter(|(i, p)| self.spec.shard_of(*i) == shard && p.addr() != old)
            .map(|(_, p)| p.addr())
            .collect();
        let mut q = self.status_query();
        q.nodes.retain(|t| t.addr != old);
        q.gateway = None;
        q.state_dir = None;
        q.timeout = PROBE_TIMEOUT;
        let deadline = Instant::now() + timeout;
        loop {
            let views: Vec<NodeView> = {
                let mut v = Vec::new();
                for t in &q.nodes {
                    v.push(view::ask(t, q.auth.as_ref(), q.timeout).await);
                }
                v
            };
            let last = match failed_over_to(&views, &members) {
                Ok(new) => return Ok(new),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                bail!("no failover away from {old} within {timeout:?}: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `node` (name or address) says (`ROLE`) it is a replica
    /// of `master` (`host:port`) with its link up.
    pub async fn wait_until_replica_of(
        &self,
        node: &str,
        master: &str,
        timeout: Duration,
    ) -> Result<()> {
        let p = self.process(node)?;
        Watch {
            master_name: "",
            sentinels: Vec::new(),
            sentinel_auth: Default::default(),
            auth: Some(self.auth()),
            tls: None,
        }
        .wait_until_replica_of(p.name(), &p.addr(), master, timeout)
        .await
    }

    /// Waits until the cluster is whole again (see [`ClusterLab::start`]
    /// for what that means; the gateway, if any, answering too), failing
    /// at once when a process has exited.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        self.wait_healthy_inner(timeout, &crate::NoProgress).await?;
        if self.gateway().is_some() {
            self.wait_gateway(timeout, &crate::NoProgress).await?;
        }
        Ok(())
    }

    /// The shard `addr` was planned in (replicas do not migrate between
    /// shards in the lab: see `config`).
    pub(super) fn planned_shard(&self, addr: &str) -> Result<usize> {
        self.nodes()
            .iter()
            .position(|p| p.addr() == addr)
            .map(|i| self.spec.shard_of(i))
            .ok_or_else(|| anyhow!("{addr} is not a node of the cluster"))
    }

    pub(super) async fn wait_healthy_inner(
        &mut self,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut q = self.status_query();
        q.gateway = None;
        q.state_dir = None;
        q.timeout = PROBE_TIMEOUT;
        let q = &q;
        self.procs
            .wait_for(&self.spec.dir, timeout, progress, || async move {
                let r = view::gather(q).await;
                (!r.healthy).then(|| r.problems.join("; "))
            })
            .await
    }

    pub(super) async fn wait_gateway(
        &mut self,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<()> {
        let password = &self.password;
        self.procs
            .wait_gateway(&self.spec.dir, timeout, progress, None, password)
            .await
    }
}

/// Which of `members` took over, if the views say a failover is complete:
/// they all see the same slot map, one of `members` serves slots in it and
/// says it is master. `Err` says what is still missing.
fn failed_over_to(views: &[NodeView], members: &[String]) -> Result<String, String> {
    let reachable: Vec<&NodeView> = views.iter().filter(|v| v.reachable).collect();
    let Some(first) = reachable.first() else {
        return Err("no node answers".into());
    };
    let map = first.slot_map();
    if let Some(other) = reachable.iter().find(|v| v.slot_map() != map) {
        return Err(format!(
            "{} and {} do not agree on the slot map yet",
            first.label(),
            other.label()
        ));
    }
    let Some((_, _, new)) = map.iter().find(|(_, _, m)| members.contains(m)) else {
        return Err(format!(
            "no node of the shard ({}) serves slots yet",
            members.join(", ")
        ));
    };
    match reachable.iter().find(|v| v.addr == *new) {
        Some(v) if v.role.as_deref() == Some("master") => Ok(new.clone()),
        Some(v) => Err(format!(
            "{} serves the slots but says it is {}",
            v.label(),
            v.role.as_deref().unwrap_or("?")
        )),
        None => Err(format!("{new} serves the slots but does not answer")),
    }
}
