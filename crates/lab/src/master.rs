//! Who is the master now, as a client finds it — the address a majority of
//! the Sentinels give, confirmed by that node's `ROLE` — and waiting for it
//! to change. Shared by [`crate::Lab`] and [`crate::foreign::SeedDeployment`]:
//! only the way in (credentials, Sentinel addresses) differs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use belay_client::sentinel::SentinelAuth;
use belay_client::{Auth, Connection, Role, TlsClient};

use crate::why;

/// How often the waits poll.
pub(crate) const POLL: Duration = Duration::from_millis(150);
/// Deadline of one control call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Where the Sentinels are and how to log in to them and to the nodes.
pub(crate) struct Watch<'a> {
    pub master_name: &'a str,
    pub sentinels: Vec<String>,
    pub sentinel_auth: SentinelAuth,
    pub auth: Option<Auth>,
    pub tls: Option<TlsClient>,
}

impl Watch<'_> {
    /// The master a majority of the Sentinels name, confirmed by `ROLE`.
    pub async fn current_master(&self) -> Result<String> {
        let mut views = Vec::new();
        for addr in &self.sentinels {
            let view = async {
                let (mut c, _) = Connection::connect_sentinel_with(
                    addr,
                    self.tls.as_ref(),
                    &self.sentinel_auth,
                    CALL_TIMEOUT,
                )
                .await?;
                c.sentinel_master_addr(self.master_name).await
            }
            .await;
            views.push(match view {
                Ok(Some((h, p))) => Ok(format!("{h}:{p}")),
                Ok(None) => Err(format!("{addr}: does not know the master")),
                Err(e) => Err(format!("Sentinel {addr} {}", why::failure(&e))),
            });
        }
        let answered = views.iter().filter(|v| v.is_ok()).count();
        let agreed = belay_client::sentinel::agreed_master(
            views.iter().filter_map(|v| v.as_deref().ok()),
            answered,
        );
        let Some(master) = agreed.map(str::to_string) else {
            bail!(
                "no majority of the Sentinels agrees on a master: {}",
                views
                    .iter()
                    .map(|v| match v {
                        Ok(m) => m.clone(),
                        Err(e) => e.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        };
        let mut c =
            Connection::connect_with(&master, self.tls.as_ref(), self.auth.as_ref(), CALL_TIMEOUT)
                .await
                .with_context(|| format!("the Sentinels name {master} as master"))?;
        let role = c.role().await?;
        if !role.is_master() {
            bail!(
                "the Sentinels name {master} as master, but it says it is {}",
                role.name()
            );
        }
        Ok(master)
    }

    /// Waits until a master other than `old_master` is agreed on and
    /// confirmed; returns its address.
    pub async fn wait_for_failover(&self, old_master: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.current_master().await {
                Ok(m) if m != old_master => return Ok(m),
                Ok(m) => last = format!("the master is still {m}"),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("no failover away from {old_master} within {timeout:?}: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the node at `addr` (called `node`) says it is a replica
    /// of `master` with its link up.
    pub async fn wait_until_replica_of(
        &self,
        node: &str,
        addr: &str,
        master: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let probe = async {
                let mut c = Connection::connect_with(
                    addr,
                    self.tls.as_ref(),
                    self.auth.as_ref(),
                    CALL_TIMEOUT,
                )
                .await?;
                let role = c.role().await?;
                let link = c.info("replication").await?;
                Ok::<_, belay_client::ClientError>((role, link))
            }
            .await;
            match probe {
                Ok((
                    Role::Replica {
                        master_host,
                        master_port,
                        ..
                    },
                    info,
                )) => {
                    let up = format!("{master_host}:{master_port}");
                    let link = info.get("master_link_status").unwrap_or("?").to_string();
                    if up == master && link == "up" {
                        return Ok(());
                    }
                    last = format!("replica of {up}, link {link}");
                }
                Ok((role, _)) => last = format!("role {}", role.name()),
                Err(e) => last = why::failure(&e),
            }
            if Instant::now() >= deadline {
                bail!("{node} did not become a replica of {master} within {timeout:?}: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
