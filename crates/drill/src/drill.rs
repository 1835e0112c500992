//! One drill from start to verdict: start the Sentinel watch and the
//! workload, inject the fault at `fault_at` on the master of that moment,
//! heal it `fault_for` later, stop the workload at `duration`, wait until
//! the topology has settled (the old master back as a replica), read
//! everything back from the final master, and hand the lot to the checker.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use belay_client::sentinel::SentinelAuth;
use belay_client::{Connection, Value};
use belay_gateway::{Gateway, GatewayConfig};
use belay_lab::cluster::ClusterLab;
use belay_lab::Lab;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::checker::{self, Window};
use crate::events::SentinelWatch;
use crate::faults::{self, FaultKind};
use crate::history::{Layout, Micros, Op, OpKind, Readback};
use crate::report::{DrillReport, LabFacts};
use crate::workload::{LiveStats, Target, Workload, WorkloadSpec};

/// Which way the workload reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// Through belay's gateway.
    Gateway,
    /// Straight to the master a Sentinel names (what an application without
    /// the gateway does), reads included.
    DirectMaster,
}

/// Everything that shapes one drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub fault: FaultKind,
    /// How long the workload runs.
    pub duration: Duration,
    /// When the fault starts, from the workload's start.
    pub fault_at: Duration,
    /// How long a pause / kill / partition / lost Sentinel lasts.
    pub fault_for: Duration,
    pub writers: u32,
    pub readers: u32,
    pub target: TargetKind,
    pub seed: u64,
    /// Client-side deadline per command; `None`: 20 s through the gateway
    /// (longer than its failover hold), 2 s direct.
    pub op_timeout: Option<Duration>,
    /// How long to wait for the topology to settle after the run.
    pub settle_timeout: Duration,
    /// Delete the drill's keys afterwards (for a lab the user keeps).
    pub cleanup: bool,
    /// A stale read fails the drill only when it missed a write acknowledged
    /// longer ago than this (replicas trail the master by replication lag;
    /// the gateway bounds that lag at 1 s by default).
    pub stale_bound: Duration,
    /// Connection churn: every session replaces its connection every this
    /// many operations, with a RESP3 handshake (0: never).
    pub reconnect_every: u32,
    /// The gateway acknowledges writes only once replicas confirm them
    /// (`--durable-writes`): how many, for the report.
    pub durable_writes: Option<String>,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            fault: FaultKind::Pause,
            duration: Duration::from_secs(25),
            fault_at: Duration::from_secs(5),
            fault_for: Duration::from_secs(8),
            writers: 4,
            readers: 4,
            target: TargetKind::Gateway,
            seed: 1,
            op_timeout: None,
            settle_timeout: Duration::from_secs(60),
            cleanup: false,
            stale_bound: Duration::from_secs(1),
            reconnect_every: 0,
            durable_writes: None,
        }
    }
}

impl DrillOptions {
    /// Refuses timings that cannot make a meaningful drill.
    pub fn validate(&self) -> Result<()> {
        let end = self.fault_at
            + if self.fault.has_duration() {
                self.fault_for
            } else {
                Duration::ZERO
            };
        if end >= self.duration {
            bail!(
                "the fault would end at {:.1} s but the workload stops at {:.1} s: make --duration longer than --fault-at + --fault-for",
                end.as_secs_f64(),
                self.duration.as_secs_f64()
            );
        }
        if self.writers == 0 {
            bail!("at least one writer is needed (--writers)");
        }
        Ok(())
    }

    pub fn op_timeout(&self) -> Duration {
        self.op_timeout.unwrap_or(match self.target {
            TargetKind::Gateway => Duration::from_secs(20),
            TargetKind::DirectMaster => Duration::from_secs(2),
        })
    }
}

/// Receives progress while a drill runs (the CLI draws a bar; tests pass
/// [`Quiet`]).
pub trait Observer: Send + Sync {
    /// A step: "paused redis-1", "waiting for the topology to settle".
    fn step(&self, _message: &str) {}
    /// Called every 200 ms while the workload runs.
    fn tick(&self, _elapsed: Duration, _total: Duration, _stats: &LiveStats, _sentinel: &str) {}
}

/// Reports nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// A gateway run inside the drill process, for labs that have none (the
/// lab a drill starts itself, and tests). Settings chosen for drills: a
/// paused master is given up on after 1 s, writes are held up to 10 s.
pub struct InProcessGateway {
    pub addr: String,
    /// What the gateway sees, for [`InProcessGateway::wait_ready`].
    topology: tokio::sync::watch::Receiver<std::sync::Arc<belay_gateway::Topology>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InProcessGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InProcessGateway {
    /// Starts a gateway in front of `lab` and waits until it sees the master
    /// and every replica ([`Gateway::wait_ready`]: the error says what is
    /// missing).
    pub async fn start(
        lab: &Lab,
        read_your_writes: bool,
        durable_writes: Option<belay_gateway::Durable>,
    ) -> Result<InProcessGateway> {
        let mut cfg = GatewayConfig {
            listen: "127.0.0.1:0".into(),
            sentinels: lab.sentinel_addrs(),
            master_name: lab.master_name().to_string(),
            password: Some(lab.password().to_string()),
            poll_interval_ms: 500,
            failover_hold_ms: 10_000,
            request_timeout_ms: 1_000,
            read_your_writes,
            durable_writes,
            // Well under the request timeout above.
            durable_timeout_ms: 500,
            ..GatewayConfig::default()
        };
        if lab.spec().tls {
            // TLS on every hop, as the lab's own gateway.
            let tls = lab.spec().tls_files();
            cfg.tls_everywhere(
                "127.0.0.1:0",
                &belay_gateway::TlsEverywhere {
                    ca: tls.ca(),
                    server_cert: tls.server_cert(),
                    server_key: tls.server_key(),
                    client_cert: tls.client_cert(),
                    client_key: tls.client_key(),
                },
            );
        }
        let gw = Gateway::bind(cfg)
            .await
            .context("starting the drill's gateway")?;
        let replicas = lab.data_nodes().len() - 1;
        gw.wait_ready(replicas, Duration::from_secs(30))
            .await
            .with_context(|| {
                format!("the drill's gateway did not see the master and {replicas} replicas within 30 s")
            })?;
        Ok(InProcessGateway::serve(gw))
    }

    /// Starts a gateway in front of a Redis Cluster lab (its nodes as
    /// seeds, its password) with the same drill settings, and waits until
    /// it sees every shard's master and replicas.
    pub async fn start_cluster(
        lab: &ClusterLab,
        read_your_writes: bool,
        durable_writes: Option<belay_gateway::Durable>,
    ) -> Result<InProcessGateway> {
        let cfg = GatewayConfig {
            listen: "127.0.0.1:0".into(),
            cluster: lab.seeds(),
            password: Some(lab.password().to_string()),
            poll_interval_ms: 500,
            failover_hold_ms: 10_000,
            request_timeout_ms: 1_000,
            read_your_writes,
            durable_writes,
            durable_timeout_ms: 500,
            ..GatewayConfig::default()
        };
        let gw = Gateway::bind(cfg)
            .await
            .context("starting the drill's gateway")?;
        let replicas = lab.spec().replicas_per_master;
        gw.wait_ready(replicas, Duration::from_secs(30))
            .await
            .with_context(|| {
                format!("the drill's gateway did not see every shard's master and {replicas} replica(s) within 30 s")
            })?;
        Ok(InProcessGateway::serve(gw))
    }

    fn serve(gw: Gateway) -> InProcessGateway {
        let addr = gw.local_addr().to_string();
        let topology = gw.topology();
        let task = tokio::spawn(async move {
            let _ = gw.run(std::future::pending()).await;
        });
        InProcessGateway {
            addr,
            topology,
            task,
        }
    }

    /// Waits until the gateway sees a master taking writes and `replicas`
    /// replicas (per shard, in front of a cluster).
    pub async fn wait_ready(&self, replicas: usize, timeout: Duration) -> Result<()> {
        belay_gateway::wait_ready(self.topology.clone(), replicas, timeout).await
    }
}

/// Runs one drill against `lab`. `gateway` is the gateway address (needed
/// for `--target gateway`).
pub async fn run(
    lab: &mut Lab,
    gateway: Option<&str>,
    opts: &DrillOptions,
    obs: &dyn Observer,
) -> Result<DrillReport> {
    opts.validate()?;
    obs.step("checking the topology is healthy");
    lab.wait_ready(opts.settle_timeout).await.context(
        "the lab is not healthy before the drill (wait for it, or check `belay status`)",
    )?;
    let master_before = lab.current_master().await?;

    let layout = Layout {
        prefix: format!("belay-drill:{}:{}", std::process::id(), unique()),
        writers: opts.writers,
        readers: opts.readers,
        counters: 4,
        regs_per_writer: 4,
        shard_tags: Vec::new(),
    };
    let target = match opts.target {
        TargetKind::Gateway => Target::Gateway {
            addr: gateway
                .context("--target gateway needs a gateway, and this lab has none")?
                .to_string(),
        },
        TargetKind::DirectMaster => Target::DirectMaster {
            sentinels: lab.sentinel_addrs(),
            master_name: lab.master_name().to_string(),
        },
    };
    // `belay drill` takes no Sentinel password: the nodes' password is
    // tried on each Sentinel, which a lab's Sentinels accept and a Sentinel
    // without a password of its own (the common deployment) goes without.
    let sentinel_auth = SentinelAuth::choose(None, Some(lab.auth()));
    let spec = WorkloadSpec {
        target: target.clone(),
        auth: lab.auth(),
        sentinel_auth: sentinel_auth.clone(),
        tls: lab.tls().cloned(),
        layout: layout.clone(),
        seed: opts.seed,
        op_timeout: opts.op_timeout(),
        think: Duration::from_millis(3),
        reconnect_every: opts.reconnect_every,
    };
    let sentinels = lab
        .sentinels()
        .iter()
        .map(|p| (p.name().to_string(), p.addr()))
        .collect();
    let mut rng = StdRng::seed_from_u64(opts.seed);

    let t0 = Instant::now();
    let since = |t0: Instant| t0.elapsed().as_secs_f64() * 1000.0;
    let watch = SentinelWatch::start(sentinels, sentinel_auth, lab.tls().cloned(), t0);
    let work = Workload::start(&spec, t0);
    let stats = work.stats();
    let mut steps: Vec<(f64, String)> = Vec::new();

    // The run: tick the observer until the fault, inject, tick, heal, tick.
    let tick = |until: Duration| {
        let (stats, watch) = (stats.clone(), &watch);
        async move {
            loop {
                let now = t0.elapsed();
                if now >= until {
                    return;
                }
                let last = watch
                    .snapshot()
                    .iter()
                    .rev()
                    .find(|e| crate::events::KEY_EVENTS.contains(&e.event.as_str()))
                    .map(|e| format!("{} {}", e.sentinel, e.event))
                    .unwrap_or_default();
                obs.tick(now, opts.duration, &stats, &last);
                tokio::time::sleep((until - now).min(Duration::from_millis(200))).await;
            }
        }
    };
    tick(opts.fault_at).await;
    let (mut record, active) = faults::inject(lab, opts.fault, &mut rng, |m| {
        obs.step(&m);
        steps.push((since(t0), m));
    })
    .await?;
    // The fault takes effect at the end of `inject` (after finding the
    // master): that instant, not the scheduled one, is the fault's time.
    record.injected_ms = since(t0);
    if opts.fault.has_duration() {
        tick(opts.fault_at + opts.fault_for).await;
        faults::heal(lab, active, |m| {
            obs.step(&m);
            steps.push((since(t0), m));
        })?;
        record.healed_ms = Some(since(t0));
    } else {
        drop(active);
    }
    tick(opts.duration).await;
    let end_us = t0.elapsed().as_micros() as Micros;
    let ops = work.stop().await?;
    let connections_opened = stats.connections_opened.load(Ordering::Relaxed);
    record.steps = steps;

    obs.step("waiting for the topology to settle (the old master back as a replica)");
    let settle_start = Instant::now();
    lab.wait_ready(opts.settle_timeout)
        .await
        .context("the topology did not settle after the drill")?;
    let master_after = lab.current_master().await?;
    let settled_after_ms = settle_start.elapsed().as_secs_f64() * 1000.0;
    // Let late events (+convert-to-slave) arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = watch.stop().await;

    obs.step(&format!(
        "reading everything back from the final master {master_after}"
    ));
    let readback = read_back(lab, &master_after, &layout, &ops).await?;
    if opts.cleanup {
        let _ = clean_up(lab, &master_after, &layout, &ops).await;
    }

    let switched_us = events
        .iter()
        .filter(|e| e.event == "+switch-master" && e.t_ms >= record.injected_ms)
        .map(|e| (e.t_ms * 1000.0) as Micros)
        .min();
    let healed_us = record
        .healed_ms
        .map(|t| (t * 1000.0) as Micros)
        .unwrap_or((record.injected_ms * 1000.0) as Micros);
    let window = Window {
        fault_us: (record.injected_ms * 1000.0) as Micros,
        recovered_us: healed_us.max(switched_us.unwrap_or(0)),
        end_us,
    };
    let analysis = checker::analyse(
        &ops,
        &layout,
        &readback,
        window,
        opts.stale_bound.as_micros() as Micros,
    );
    Ok(DrillReport::new(
        opts,
        &target,
        LabFacts {
            down_after_ms: lab.spec().down_after_ms,
            min_replicas_max_lag_s: lab.spec().min_replicas_max_lag,
            cluster: None,
        },
        master_before,
        master_after,
        record,
        events,
        window,
        settled_after_ms,
        connections_opened,
        analysis,
    ))
}

pub(crate) fn unique() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn master_conn(lab: &Lab, master: &str) -> Result<Connection> {
    Connection::connect_with(master, lab.tls(), Some(&lab.auth()), Duration::from_secs(5))
        .await
        .with_context(|| format!("connecting to the final master {master} to read back"))
}

/// Reads every acknowledged unique key, every counter and every register.
async fn read_back(lab: &Lab, master: &str, layout: &Layout, ops: &[Op]) -> Result<Readback> {
    let mut c = master_conn(lab, master).await?;
    c.set_timeout(Duration::from_secs(10));
    let mut rb = Readback::default();
    let acked: Vec<(u32, u64)> = ops
        .iter()
        .filter(|o| o.outcome.is_ok())
        .filter_map(|o| match o.kind {
            OpKind::Set { writer, seq } => Some((writer, seq)),
            _ => None,
        })
        .collect();
    for chunk in acked.chunks(500) {
        let mut args = vec!["MGET".to_string()];
        args.extend(chunk.iter().map(|(w, s)| layout.set_key(*w, *s)));
        let v = c.call_ok(&args).await.context("MGET on the final master")?;
        let values = v.as_array().context("MGET did not return an array")?;
        for (id, got) in chunk.iter().zip(values) {
            rb.sets.insert(*id, got.to_text());
        }
    }
    for counter in 0..layout.counters {
        let v = c.call_ok(&["GET", &layout.counter_key(counter)]).await?;
        let n = v.to_text().and_then(|t| t.parse().ok()).unwrap_or(0);
        rb.counters.insert(counter, n);
    }
    for reg in 0..layout.registers() {
        let v = c.call_ok(&["GET", &layout.reg_key(reg)]).await?;
        rb.regs
            .insert(reg, if v == Value::Nil { None } else { v.to_text() });
    }
    Ok(rb)
}

/// Deletes every key the drill may have written.
async fn clean_up(lab: &Lab, master: &str, layout: &Layout, ops: &[Op]) -> Result<()> {
    let mut c = master_conn(lab, master).await?;
    let mut keys: Vec<String> = ops
        .iter()
        .filter_map(|o| match o.kind {
            OpKind::Set { writer, seq } => Some(layout.set_key(writer, seq)),
            _ => None,
        })
        .collect();
    keys.extend((0..layout.counters).map(|i| layout.counter_key(i)));
    keys.extend((0..layout.registers()).map(|i| layout.reg_key(i)));
    for chunk in keys.chunks(500) {
        let mut args = vec!["UNLINK".to_string()];
        args.extend(chunk.iter().cloned());
        c.call_ok(&args).await?;
    }
    Ok(())
}
