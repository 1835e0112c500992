//! Waiting for a lab to be ready: the topology around the agreed master,
//! the gateway, the web app — each polled until nothing is missing, failing
//! at once when a child exits.

use std::time::Duration;

use anyhow::Result;

use super::{named, Lab};
use crate::master::Watch;
use crate::progress::Progress;
use crate::ready::{self, Expected};

impl Lab {
    /// Waits until the whole topology is ready again around whatever master
    /// the Sentinels agree on (after a drill, for instance).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_ready_inner(None, timeout, &crate::NoProgress)
            .await?;
        if self.gateway().is_some() {
            self.wait_gateway(timeout, &crate::NoProgress).await?;
        }
        if self.app().is_some() {
            self.wait_app(timeout, &crate::NoProgress).await?;
        }
        Ok(())
    }

    /// Waits until every node and Sentinel agrees on `master` (the one the
    /// Sentinels name when `None`).
    pub(super) async fn wait_ready_inner(
        &mut self,
        master: Option<String>,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<()> {
        let master_name = self.spec.master_name.clone();
        let (auth, sentinel_auth) = (self.auth(), self.sentinel_auth());
        let sentinels = self.sentinel_addrs();
        let tls = self.tls.clone();
        let tls = tls.as_ref();
        let data_nodes = named(&self.data_nodes());
        let sentinel_names = named(&self.sentinels());
        let (master_name, auth, sentinel_auth, master) =
            (&master_name, &auth, &sentinel_auth, &master);
        let (sentinels, data_nodes, sentinel_names) = (&sentinels, &data_nodes, &sentinel_names);
        self.procs
            .wait_for(&self.spec.dir, timeout, progress, || async move {
                let master_now = match master {
                    Some(m) => Ok(m.clone()),
                    None => Watch {
                        master_name,
                        sentinels: sentinels.clone(),
                        sentinel_auth: sentinel_auth.clone(),
                        auth: Some(auth.clone()),
                        tls: tls.cloned(),
                    }
                    .current_master()
                    .await
                    .map_err(|e| e.to_string()),
                };
                let pending = match master_now {
                    Ok(m) => {
                        let exp = Expected {
                            master_name,
                            auth,
                            sentinel_auth,
                            tls,
                            master: m,
                            data_nodes: data_nodes.clone(),
                            sentinels: sentinel_names.clone(),
                        };
                        ready::topology_pending(&exp).await
                    }
                    Err(e) => vec![e],
                };
                (!pending.is_empty()).then(|| pending.join("; "))
            })
            .await
    }

    pub(super) async fn wait_gateway(
        &mut self,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (tls, password) = (self.tls.as_ref(), &self.password);
        self.procs
            .wait_gateway(&self.spec.dir, timeout, progress, tls, password)
            .await
    }

    pub(super) async fn wait_app(
        &mut self,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<()> {
        let addr = self.app().expect("app started").addr();
        self.procs
            .wait_for(&self.spec.dir, timeout, progress, || {
                ready::app_pending(&addr)
            })
            .await
    }
}
