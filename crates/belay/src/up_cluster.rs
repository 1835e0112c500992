//! `belay up --cluster`: start a Redis Cluster lab (and the gateway in
//! front of it), print its shards and how to connect, then supervise it
//! like `belay up` does a Sentinel lab.

use std::process::ExitCode;

use anyhow::{bail, Result};
use belay_lab::cluster::nodes::ranges_text;
use belay_lab::cluster::{ClusterLab, ClusterSpec, ShardView};
use tokio::signal::unix::Signal;

use crate::ui::{self, shell_quote, show_path, CliProgress};
use crate::up::{
    dashboard_line, host_flag, interruptible, leave_or_supervise, password_line, process_json,
    UpArgs,
};

/// Default port of the first cluster node: the one Redis's own cluster
/// tutorial uses (7000..7005 for 3 shards of 2, buses on 17000..).
const DEFAULT_CLUSTER_PORT: u16 = 7000;

/// Default port of the cluster lab's gateway: the Sentinel lab's (6390), so
/// `redis-cli -p 6390` reaches either.
const DEFAULT_GATEWAY_PORT: u16 = 6390;

/// The spec `--cluster` asks for, refusing what the cluster lab does not do.
fn spec(args: &UpArgs) -> Result<ClusterSpec> {
    // Sentinel-only flags are refused by clap (`conflicts_with_all`); these
    // are refused here, with the reason.
    if args.tls {
        bail!("--tls is not supported with --cluster yet: the cluster lab runs plaintext on loopback (drop --tls, or --cluster)");
    }
    if args.app {
        bail!("--app is not supported with --cluster yet: the web app runs on the Sentinel lab (drop --app, or --cluster)");
    }
    if !args.zones.is_empty() || args.gateway_zone.is_some() {
        bail!("--zones and --gateway-zone are not supported with --cluster yet (drop them, or --cluster)");
    }
    if matches!(args.read_from.as_deref(), Some("zone-replica")) {
        bail!("--read-from zone-replica needs zones, which --cluster does not support yet");
    }
    Ok(ClusterSpec {
        dir: args.dir.clone(),
        masters: args.shards.unwrap_or(3),
        replicas_per_master: args.replicas.unwrap_or(1),
        base_port: args.port.unwrap_or(DEFAULT_CLUSTER_PORT),
        bind: args.bind.clone(),
        password: args.password.clone(),
        node_timeout_ms: args.node_timeout_ms.unwrap_or(2000),
        persistence: !args.no_persistence,
        server: args.server,
        redis_server: args.redis_server.clone(),
        program: None,
        gateway: args.gateway_spec(DEFAULT_GATEWAY_PORT)?,
        detach: args.detach,
        ready_timeout_ms: args.ready_timeout * 1000,
        extra_redis_config: args.extra_redis_config.clone(),
        reassign_busy_ports: false,
    })
}

pub async fn run(args: UpArgs, sigint: &mut Signal, sigterm: &mut Signal) -> Result<ExitCode> {
    let spec = spec(&args)?;
    let progress = CliProgress::new();
    let started = interruptible(ClusterLab::start(spec, &progress), sigint, sigterm).await;
    progress.finish();
    let lab = started?;
    let shards = lab.shards().await?;

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(&lab, &shards))?
        );
    } else {
        print!("{}", ready_text(&lab, &shards));
    }
    leave_or_supervise(lab, "cluster", &args, sigint, sigterm).await
}

/// The name of the node at `addr`, or the address.
fn name_of(lab: &ClusterLab, addr: &str) -> String {
    lab.process(addr)
        .map(|p| p.name().to_string())
        .unwrap_or_else(|_| addr.to_string())
}

/// The shards table and connect lines printed once the cluster is ready.
fn ready_text(lab: &ClusterLab, shards: &[ShardView]) -> String {
    let spec = lab.spec();
    let mut out = format!(
        "\nbelay cluster lab is ready: {} shards of 1 master + {} replica{}, node timeout {} ms, state in {}\n\n",
        spec.masters,
        spec.replicas_per_master,
        if spec.replicas_per_master == 1 { "" } else { "s" },
        spec.node_timeout_ms,
        show_path(lab.dir()),
    );
    let mut rows = vec![["SHARD", "SLOTS", "NAME", "ROLE", "ADDRESS", "PID", "LOG"]
        .map(String::from)
        .to_vec()];
    let row = |shard: String, slots: String, addr: &str, role: &str| {
        let p = lab.process(addr).ok();
        vec![
            shard,
            slots,
            name_of(lab, addr),
            role.to_string(),
            addr.to_string(),
            p.and_then(|p| p.pid())
                .map(|x| x.to_string())
                .unwrap_or_default(),
            p.map(|p| show_path(p.log_path())).unwrap_or_default(),
        ]
    };
    for (i, s) in shards.iter().enumerate() {
        rows.push(row(
            (i + 1).to_string(),
            ranges_text(&s.slots),
            &s.master,
            "master",
        ));
        for r in &s.replicas {
            rows.push(row(String::new(), String::new(), &r.addr, "replica"));
        }
    }
    if let Some(gw) = lab.gateway() {
        rows.push(vec![
            String::new(),
            String::new(),
            gw.name().to_string(),
            "gateway".into(),
            gw.addr(),
            gw.pid().map(|x| x.to_string()).unwrap_or_default(),
            show_path(gw.log_path()),
        ]);
    }
    out.push_str(&ui::table(&rows));
    out.push('\n');
    let pw = shell_quote(lab.password());
    let host = host_flag(&spec.bind);
    out.push_str(&format!("  server:    {}\n", show_path(spec.program())));
    out.push_str(&password_line(lab.password(), lab.dir()));
    if let Some(gw) = lab.gateway() {
        out.push_str(&format!(
            "  connect:   redis-cli {host}-p {} -a {pw}    # the gateway: routes each key to its shard\n",
            gw.port()
        ));
    }
    out.push_str(&format!(
        "             redis-cli {host}-c -p {} -a {pw}    # a node directly (-c follows MOVED)\n",
        spec.base_port
    ));
    out.push_str(&dashboard_line(lab.gateway_admin_addr()));
    out.push_str(&format!(
        "  status:    belay status --dir {}\n",
        shell_quote(&show_path(lab.dir()))
    ));
    out
}

fn summary_json(lab: &ClusterLab, shards: &[ShardView]) -> serde_json::Value {
    serde_json::json!({
        "kind": "cluster",
        "dir": lab.dir(),
        "password_file": lab.dir().join("password"),
        "gateway": lab.gateway_addr(),
        "gateway_admin": lab.gateway_admin_addr(),
        "seeds": lab.seeds(),
        "program": lab.spec().program(),
        "shards": shards,
        "processes": lab.processes().iter().map(process_json).collect::<Vec<_>>(),
    })
}
