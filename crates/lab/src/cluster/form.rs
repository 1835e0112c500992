//! Making separate nodes one cluster, the way `redis-cli --cluster create`
//! does it but with the layout the plan gives (the lab's names and tests
//! rely on it, where redis-cli shuffles replicas) and without its fixed
//! one-second sleeps: distinct config epochs, each master's slot range,
//! `CLUSTER MEET` from the first node to every other, and once every node
//! knows every other, `CLUSTER REPLICATE` on each replica.
//!
//! Also: telling whether the nodes of a state dir formed a cluster before,
//! so that `belay up --cluster` after `belay down` starts it as it was.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use belay_client::{Auth, Connection, Value};

use super::config::nodes_conf_path;
use super::nodes;
use super::spec::ClusterSpec;
use super::ClusterLab;
use crate::process::{ProcessKind, ProcessRecord};
use crate::progress::Progress;

const CALL_TIMEOUT: Duration = Duration::from_millis(2000);

/// Makes the lab's (fresh) nodes one cluster; returns once every replica
/// was told its master. The caller then waits for it to be healthy.
pub(super) async fn form(
    lab: &mut ClusterLab,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let auth = lab.auth();
    let spec = lab.spec.clone();
    let nodes: Vec<(String, String)> = lab
        .nodes()
        .iter()
        .map(|p| (p.name().to_string(), p.addr()))
        .collect();
    let (auth, nodes_ref) = (&auth, &nodes);

    lab.procs
        .wait_for(&lab.spec.dir, timeout, progress, || async move {
            let mut pending = Vec::new();
            for (name, addr) in nodes_ref {
                if let Err(e) = Connection::connect(addr, Some(auth), CALL_TIMEOUT).await {
                    pending.push(format!("{name}: {}", crate::why::failure(&e)));
                }
            }
            (!pending.is_empty()).then(|| pending.join("; "))
        })
        .await?;

    progress.step(&format!(
        "forming the cluster: {} shards of 1 master + {} replica{}",
        spec.masters,
        spec.replicas_per_master,
        if spec.replicas_per_master == 1 {
            ""
        } else {
            "s"
        }
    ));
    for (i, (name, addr)) in nodes.iter().enumerate() {
        let mut c = connect(addr, auth).await?;
        // Distinct epochs from the start: no epoch collision to resolve
        // before slot ownership settles. Refused only by a node that has
        // one already, which is as good.
        c.call(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])
            .await?;
        if spec.starts_as_master(i) {
            let (first, last) = spec.initial_slots(spec.shard_of(i));
            add_slots(&mut c, first, last)
                .await
                .with_context(|| format!("giving {name} slots {first}-{last}"))?;
        }
    }
    let mut first = connect(&nodes[0].1, auth).await?;
    for (name, addr) in &nodes[1..] {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        first
            .call_ok(&["CLUSTER", "MEET", host, port])
            .await
            .with_context(|| format!("introducing {name} to {}", nodes[0].0))?;
    }

    let n = nodes.len();
    lab.procs
        .wait_for(&lab.spec.dir, timeout, progress, || async move {
            let mut pending = Vec::new();
            for (name, addr) in nodes_ref {
                match cluster_nodes(addr, auth).await {
                    Ok(table) => {
                        let members = table.iter().filter(|l| !l.is_joining()).count();
                        if members < n {
                            pending.push(format!("{name} knows {members} of {n} nodes"));
                        }
                    }
                    Err(e) => pending.push(format!("{name}: {e:#}")),
                }
            }
            (!pending.is_empty()).then(|| pending.join("; "))
        })
        .await?;

    let mut ids = Vec::new();
    for (_, addr) in &nodes[..spec.masters] {
        let mut c = connect(addr, auth).await?;
        let id = c.call_ok(&["CLUSTER", "MYID"]).await?;
        ids.push(id.to_text().context("CLUSTER MYID answered no id")?);
    }
    for (i, (name, addr)) in nodes.iter().enumerate().skip(spec.masters) {
        let master = &ids[spec.shard_of(i)];
        let mut c = connect(addr, auth).await?;
        c.call_ok(&["CLUSTER", "REPLICATE", master.as_str()])
            .await
            .with_context(|| format!("making {name} a replica of {}", nodes[spec.shard_of(i)].0))?;
    }
    Ok(())
}

async fn connect(addr: &str, auth: &Auth) -> Result<Connection> {
    Ok(Connection::connect(addr, Some(auth), CALL_TIMEOUT).await?)
}

async fn cluster_nodes(addr: &str, auth: &Auth) -> Result<Vec<nodes::NodeLine>> {
    let mut c = connect(addr, auth).await?;
    let text = c.call_ok(&["CLUSTER", "NODES"]).await?;
    Ok(nodes::parse(&text.to_text().unwrap_or_default()))
}

/// `CLUSTER ADDSLOTSRANGE` (Redis 7), or `ADDSLOTS` with every slot on
/// servers without it.
async fn add_slots(c: &mut Connection, first: u16, last: u16) -> Result<()> {
    let (a, b) = (first.to_string(), last.to_string());
    match c.call(&["CLUSTER", "ADDSLOTSRANGE", &a, &b]).await? {
        Value::Error(e) if e.to_ascii_lowercase().contains("unknown subcommand") => {
            let mut args = vec!["CLUSTER".to_string(), "ADDSLOTS".into()];
            args.extend((first..=last).map(|s| s.to_string()));
            c.call_ok(&args).await?;
            Ok(())
        }
        Value::Error(e) => bail!("CLUSTER ADDSLOTSRANGE {a} {b}: {e}"),
        _ => Ok(()),
    }
}

/// Whether the nodes of `plan` formed a cluster before: `true` when every
/// node's `nodes.conf` lists other nodes too. A `nodes.conf` listing only
/// its node (written at a first start that never got further) is removed,
/// so the node starts afresh. Fails when only some nodes have a cluster
/// behind them, or one was made on another port: those nodes would never
/// find each other.
pub(super) fn earlier_cluster(spec: &ClusterSpec, plan: &[ProcessRecord]) -> Result<bool> {
    let mut formed = Vec::new();
    let mut fresh = Vec::new();
    for rec in plan.iter().filter(|r| r.kind == ProcessKind::DataNode) {
        let path = nodes_conf_path(rec);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fresh.push(rec.name.clone());
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let table = nodes::parse(&text);
        if table.len() <= 1 {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the unused {}", path.display()))?;
            fresh.push(rec.name.clone());
            continue;
        }
        if let Some(me) = table.iter().find(|l| l.has_flag("myself")) {
            if !me.addr.ends_with(&format!(":{}", rec.port)) {
                bail!(
                    "{} was part of a cluster on {} (its {}), not on port {}: \
                     start with the same --port and --shards/--replicas as then, or remove {} to start afresh",
                    rec.name,
                    me.addr,
                    path.display(),
                    rec.port,
                    spec.dir.display()
                );
            }
        }
        formed.push(rec.name.clone());
    }
    if !formed.is_empty() && !fresh.is_empty() {
        bail!(
            "{} holds part of an earlier cluster ({} were in it, {} were not): \
             start with the same --shards and --replicas as then, or remove {} to start afresh",
            spec.dir.display(),
            formed.join(", "),
            fresh.join(", "),
            spec.dir.display()
        );
    }
    Ok(fresh.is_empty())
}
