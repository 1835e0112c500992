//! A drill against a Redis Cluster (`belay drill pause|kill --cluster`):
//! the same workload through a gateway in front of the cluster, the fault
//! on the master of one shard, and the same checker — plus what only a
//! cluster has: which shard each operation was on, so the faulted shard's
//! write blackout is measured apart from the others' (which should see
//! none).
//!
//! The steps, as in the Sentinel drill (`drill`):
//! 1. the cluster whole, the gateway ready; the slot map at the start
//!    (`belay_lab`'s view of the nodes), a hash tag per shard and the slot
//!    of each fixed key (`CLUSTER KEYSLOT`: see `slots`); each session
//!    keeps to one shard's keys (see `Layout`), so one waiting on the
//!    faulted shard does not stop traffic to the others;
//! 2. the faulted shard: the shard of register 0's key (writer 0's),
//!    its master the one broken;
//! 3. workload, fault at `fault_at` (SIGSTOP or SIGKILL), heal after
//!    `fault_for` (SIGCONT or restart with the same config and
//!    `nodes.conf`), the nodes polled meanwhile (`watch`);
//! 4. settle: a replica of the shard serves its slots
//!    (`wait_for_failover`), the old master follows it
//!    (`wait_until_replica_of`), the whole cluster healthy, the gateway
//!    ready;
//! 5. every key read back from the master of its slot (`readback`), the
//!    checker, and each shard's figures (`figures`).
//!
//! Only `pause` and `kill` run here; the CLI says why the others do not.

pub mod figures;
pub mod readback;
pub mod slots;
pub mod watch;

pub use figures::{ClusterFigures, ShardFigures};

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use belay_client::sentinel::SentinelAuth;
use belay_lab::cluster::ClusterLab;

use crate::checker::{self, Window};
use crate::drill::{unique, DrillOptions, InProcessGateway, Observer, TargetKind};
use crate::faults::{FaultKind, FaultRecord};
use crate::history::{Layout, Micros, OpKind};
use crate::report::{DrillReport, LabFacts};
use crate::workload::{Target, Workload, WorkloadSpec};
use slots::{ask_slots, op_key, Shards};
use watch::ClusterWatch;

/// Why a drill other than pause and kill does not run against a cluster;
/// `None` for those that do.
pub fn refusal(fault: FaultKind) -> Option<&'static str> {
    Some(match fault {
        FaultKind::Pause | FaultKind::Kill => return None,
        FaultKind::Partition | FaultKind::PartitionWithReplica => {
            "a partition cuts a node off with iptables rules on its own loopback address, and the cluster lab's nodes share 127.0.0.1"
        }
        FaultKind::SentinelLoss => "a Redis Cluster has no Sentinels: its masters vote",
        FaultKind::Manual | FaultKind::Switchover => {
            "a planned switch of a cluster shard is CLUSTER FAILOVER on a replica, which no drill runs yet"
        }
    })
}

/// Undoes a pause if the drill ends early (error, panic, Ctrl-C): the
/// frozen node is thawed. A kill is undone by [`mend`].
struct Thaw(Option<u32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

/// Puts a cluster lab back in working order after an interrupted drill:
/// thaws stopped nodes and restarts dead ones. Safe on a healthy lab.
pub fn mend(lab: &mut ClusterLab) -> Vec<String> {
    let mut done = Vec::new();
    let names: Vec<String> = lab.nodes().iter().map(|p| p.name().to_string()).collect();
    for name in names {
        let Ok(p) = lab.process(&name) else { continue };
        let alive = p.record().is_running();
        if alive && p.pid().and_then(belay_lab::process::proc_state) == Some('T') {
            if lab.resume(&name).is_ok() {
                done.push(format!("resumed {name}"));
            }
        } else if !alive && lab.restart(&name).is_ok() {
            done.push(format!("restarted {name}"));
        }
    }
    done
}

/// One hash tag per shard (`{t7}`), in the order of `shards`: the first
/// of `{t0}`, `{t1}`, … whose slot (asked of `node`) that shard serves.
async fn tags_per_shard(
    shards: &Shards,
    node: &str,
    auth: &belay_client::Auth,
    key_slots: &mut HashMap<String, u16>,
) -> Result<Vec<String>> {
    let candidates: Vec<String> = (0..64 * shards.0.len())
        .map(|i| format!("{{t{i}}}"))
        .collect();
    ask_slots(node, auth, candidates.iter().cloned(), key_slots).await?;
    let mut tags: Vec<Option<String>> = vec![None; shards.0.len()];
    for tag in &candidates {
        if let Some(i) = shards.of_slot(key_slots[tag]) {
            tags[i].get_or_insert_with(|| tag.clone());
        }
    }
    tags.into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.with_context(|| {
                format!(
                    "none of {} tags landed on shard {} (slots {})",
                    candidates.len(),
                    i + 1,
                    shards.0[i].slots_text()
                )
            })
        })
        .collect()
}

/// Runs one drill against the cluster `lab`, whose clients go through the
/// gateway at `gateway`; `in_process` is that gateway when the drill runs
/// it (to wait until it sees the cluster settled).
pub async fn run(
    lab: &mut ClusterLab,
    gateway: &str,
    in_process: Option<&InProcessGateway>,
    opts: &DrillOptions,
    obs: &dyn Observer,
) -> Result<DrillReport> {
    opts.validate()?;
    if let Some(why) = refusal(opts.fault) {
        bail!(
            "the {} drill does not run against a Redis Cluster: {why}",
            opts.fault.name()
        );
    }
    if opts.target != TargetKind::Gateway {
        bail!("against a Redis Cluster the workload goes through the gateway (--target direct-master is a naive Sentinel client)");
    }
    let replicas = lab.spec().replicas_per_master;
    obs.step("checking the cluster is healthy");
    lab.wait_healthy(opts.settle_timeout).await.context(
        "the cluster is not healthy before the drill (wait for it, or check `belay status`)",
    )?;
    if let Some(gw) = in_process {
        gw.wait_ready(replicas, opts.settle_timeout).await?;
    }
    let auth = lab.auth();
    let shards = Shards::from_views(&lab.shards().await?);
    let n = shards.0.len() as u32;
    if n == 0 {
        bail!("the cluster has no shard serving slots");
    }
    if opts.writers < n || opts.readers < n {
        bail!("a drill on a cluster of {n} shards needs at least {n} writers and {n} readers (--writers, --readers): one of each per shard");
    }
    let seed_node = shards.0[0].master.clone();
    let mut key_slots: HashMap<String, u16> = HashMap::new();
    let shard_tags = tags_per_shard(&shards, &seed_node, &auth, &mut key_slots).await?;
    let layout = Layout {
        prefix: format!("belay-drill:{}:{}", std::process::id(), unique()),
        writers: opts.writers,
        readers: opts.readers,
        // Two per shard: each writer INCRs counters of its own shard.
        counters: (2 * n).max(4),
        regs_per_writer: 4,
        shard_tags,
    };
    // The slot of every key known in advance (counters and registers),
    // asked rather than assumed from the tags; the unique SETs' keys are
    // asked after the run.
    let fixed = (0..layout.counters)
        .map(|c| layout.counter_key(c))
        .chain((0..layout.registers()).map(|r| layout.reg_key(r)));
    ask_slots(&seed_node, &auth, fixed, &mut key_slots).await?;
    let probe = layout.reg_key(0);
    let probe_slot = key_slots[&probe];
    let faulted = shards
        .of_slot(probe_slot)
        .with_context(|| format!("no shard served slot {probe_slot} at the start"))?;
    let chosen_as = format!("the shard of {probe} (slot {probe_slot}, CLUSTER KEYSLOT)");
    let master_addr = shards.0[faulted].master.clone();
    let master = lab
        .process(&master_addr)
        .map(|p| p.name().to_string())
        .with_context(|| format!("the master {master_addr} is not one of the lab's nodes"))?;

    let target = Target::Gateway {
        addr: gateway.to_string(),
    };
    let spec = WorkloadSpec {
        target: target.clone(),
        auth: auth.clone(),
        sentinel_auth: SentinelAuth::choose(None, Some(auth.clone())),
        tls: None,
        layout: layout.clone(),
        seed: opts.seed,
        op_timeout: opts.op_timeout(),
        think: Duration::from_millis(3),
        reconnect_every: opts.reconnect_every,
    };
    let mut query = lab.status_query();
    query.gateway = None;
    query.state_dir = None;
    query.timeout = Duration::from_millis(500);

    let t0 = Instant::now();
    let since = |t0: Instant| t0.elapsed().as_secs_f64() * 1000.0;
    let watch = ClusterWatch::start(query, master_addr.clone(), probe_slot, t0);
    let work = Workload::start(&spec, t0);
    let stats = work.stats();
    let mut steps: Vec<(f64, String)> = Vec::new();
    let tick = |until: Duration| {
        let (stats, watch) = (stats.clone(), &watch);
        async move {
            loop {
                let now = t0.elapsed();
                if now >= until {
                    return;
                }
                obs.tick(now, opts.duration, &stats, &watch.last());
                tokio::time::sleep((until - now).min(Duration::from_millis(200))).await;
            }
        }
    };
    let log = |m: String, steps: &mut Vec<(f64, String)>| {
        obs.step(&m);
        steps.push((since(t0), m));
    };

    tick(opts.fault_at).await;
    let mut thaw = Thaw(None);
    match opts.fault {
        FaultKind::Pause => {
            let pid = lab.process(&master)?.pid();
            lab.pause(&master)?;
            thaw.0 = pid;
            log(
                format!("paused {master} ({master_addr}) with SIGSTOP"),
                &mut steps,
            );
        }
        _ => {
            lab.kill(&master)?;
            log(
                format!("killed {master} ({master_addr}) with SIGKILL"),
                &mut steps,
            );
        }
    }
    let injected_ms = since(t0);
    tick(opts.fault_at + opts.fault_for).await;
    match opts.fault {
        FaultKind::Pause => {
            lab.resume(&master)?;
            thaw.0 = None;
            log(format!("resumed {master} with SIGCONT"), &mut steps);
        }
        _ => {
            lab.restart(&master)?;
            log(
                format!("restarted {master} with the same config and nodes.conf"),
                &mut steps,
            );
        }
    }
    let healed_ms = since(t0);
    tick(opts.duration).await;
    let end_us = t0.elapsed().as_micros() as Micros;
    let ops = work.stop().await?;
    let connections_opened = stats.connections_opened.load(Ordering::Relaxed);

    obs.step("waiting for the cluster to settle (a replica serving the shard, the old master following it)");
    let settle_start = Instant::now();
    let master_after = lab
        .wait_for_failover(&master, opts.settle_timeout)
        .await
        .context("the faulted shard did not fail over")?;
    lab.wait_until_replica_of(&master, &master_after, opts.settle_timeout)
        .await
        .context("the old master did not come back as a replica")?;
    lab.wait_healthy(opts.settle_timeout)
        .await
        .context("the cluster did not settle after the drill")?;
    if let Some(gw) = in_process {
        gw.wait_ready(replicas, opts.settle_timeout)
            .await
            .context("the drill's gateway did not see the settled cluster")?;
    }
    let settled_after_ms = settle_start.elapsed().as_secs_f64() * 1000.0;
    // Let the watch see the old master as a replica too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = watch.stop().await;

    obs.step(&format!(
        "reading everything back from each key's master (the faulted shard's: {master_after})"
    ));
    let after = lab.shards().await?;
    let set_keys = ops.iter().filter_map(|o| match o.kind {
        OpKind::Set { .. } => Some(op_key(&layout, &o.kind)),
        _ => None,
    });
    ask_slots(&master_after, &auth, set_keys, &mut key_slots).await?;
    let readback = readback::read_back(&after, &key_slots, &auth, &layout, &ops).await?;
    if opts.cleanup {
        let _ = readback::clean_up(&after, &key_slots, &auth, &layout, &ops).await;
    }

    let failover_us = events
        .iter()
        .filter(|e| e.event == "+failover")
        .map(|e| (e.t_ms * 1000.0) as Micros)
        .min();
    let window = Window {
        fault_us: (injected_ms * 1000.0) as Micros,
        recovered_us: ((healed_ms * 1000.0) as Micros).max(failover_us.unwrap_or(0)),
        end_us,
    };
    let analysis = checker::analyse(
        &ops,
        &layout,
        &readback,
        window,
        opts.stale_bound.as_micros() as Micros,
    );
    let masters_after: Vec<String> = shards
        .0
        .iter()
        .map(|s| {
            let first = s.slots.first().map(|r| r.0).unwrap_or(0);
            after
                .iter()
                .find(|a| a.has_slot(first))
                .map(|a| a.master.clone())
                .unwrap_or_default()
        })
        .collect();
    let node_timeout_ms = lab.spec().node_timeout_ms;
    let figures = figures::figures(
        &ops,
        &layout,
        &key_slots,
        &shards,
        &masters_after,
        faulted,
        chosen_as,
        node_timeout_ms,
        end_us,
    );
    let record = FaultRecord {
        kind: opts.fault,
        master,
        master_addr: master_addr.clone(),
        steps,
        injected_ms,
        healed_ms: Some(healed_ms),
        partition_tag: None,
    };
    Ok(DrillReport::new(
        opts,
        &target,
        LabFacts {
            down_after_ms: node_timeout_ms,
            min_replicas_max_lag_s: 0,
            cluster: Some(figures),
        },
        master_addr,
        master_after,
        record,
        events,
        window,
        settled_after_ms,
        connections_opened,
        analysis,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pause_and_kill_run_against_a_cluster() {
        assert!(refusal(FaultKind::Pause).is_none());
        assert!(refusal(FaultKind::Kill).is_none());
        for f in [
            FaultKind::Partition,
            FaultKind::PartitionWithReplica,
            FaultKind::SentinelLoss,
            FaultKind::Manual,
            FaultKind::Switchover,
        ] {
            assert!(refusal(f).is_some(), "{f:?}");
        }
    }
}
