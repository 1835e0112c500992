//! `belay`: Redis made highly available. This binary is a thin shell over
//! the crates: `up`/`status`/`down` drive `belay-lab`, `gateway` runs
//! `belay-gateway`. Each subcommand lives in its own module.

mod deployment;
mod down;
mod status;
mod status_cluster;
mod switchover;
mod ui;
mod up;
mod up_cluster;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Redis made highly available: a Sentinel-aware gateway that splits reads
/// and writes and rides through failovers, a one-command lab, and drills.
#[derive(Debug, Parser)]
#[command(name = "belay", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a Redis HA lab on this machine: 1 master, N replicas, M Sentinels
    /// and the gateway, from the system's redis-server and redis-sentinel, or
    /// Valkey's valkey-server (--server).
    ///
    /// Each process gets its own config, data and log under the state dir
    /// (--dir). `up` waits until the topology is really ready (every replica
    /// linked, every Sentinel knowing the master, the replicas and the other
    /// Sentinels, CKQUORUM OK, the gateway answering), then prints a table
    /// and how to connect.
    ///
    /// Ports: data nodes from --port (master 6379, replicas 6380, 6381, ...),
    /// Sentinels from --sentinel-port (26379, 26380, ...), the gateway on
    /// --gateway-port (6390), the web app (--app) on --app-port (8080). Every process requires the lab's password
    /// (generated on the first `up`, kept in <DIR>/password, mode 0600).
    ///
    /// Runs in the foreground until Ctrl-C, which stops everything; with
    /// --detach it returns once the lab is ready and `belay down` stops it.
    ///
    /// With --cluster: a Redis Cluster instead — --shards masters (3), each
    /// with --replicas replicas (1), nodes from --port (7000), every slot
    /// served, and the gateway in front (`belay gateway --cluster`). `up`
    /// waits until every node says cluster_state:ok, all agree on the slot
    /// map and every replica is linked, then prints the shards.
    Up(up::UpArgs),
    /// Show what every node and Sentinel of a lab (or of any Sentinel-managed
    /// deployment) says, and call out disagreements.
    ///
    /// For each data node: its role as the node reports it (ROLE),
    /// replication offset, lag and link; for each Sentinel: the master it
    /// believes in, its flags and its quorum check; then the problems in
    /// plain words: two masters, a Sentinel that disagrees, a replica not
    /// linked. Exits 0 when healthy, 1 otherwise.
    ///
    /// Reads the lab from the state dir, or — with --sentinel — asks any
    /// Sentinel-managed deployment (e.g. the Docker one) directly; the data
    /// nodes are then found through the Sentinels.
    ///
    /// With --sentinel, the data nodes are asked with --password (or
    /// --password-file). Sentinels often have no password of their own
    /// (only `sentinel auth-pass` for the nodes): the nodes' password is
    /// tried on them, and a Sentinel that has none configured is asked
    /// without one. Sentinels with a password of their own need
    /// --sentinel-password.
    ///
    /// Whatever cannot be asked says why: connection refused, no answer
    /// within the deadline (and to what), credentials rejected or a command
    /// refused (in the node's own words). For a lab, config files and the
    /// password file that other local users can read are problems too, with
    /// the chmod that fixes them.
    ///
    /// A cluster lab (`belay up --cluster`), or any Redis Cluster with
    /// `--cluster HOST:PORT` (every node it names is asked, with
    /// --password): each shard's slots, master and replicas (link, lag in
    /// bytes), each node's role and cluster_state, and problems: a node
    /// down, a shard whose master is failing, slots no master serves, nodes
    /// that disagree on the slot map, a replica not linked.
    Status(status::StatusArgs),
    /// Change the master on purpose, without clients noticing.
    ///
    /// Pauses writes on the master (`CLIENT PAUSE WRITE`: for every client
    /// and gateway), waits until the replica to promote has every byte,
    /// has Sentinel promote it (`SENTINEL FAILOVER`; with --to, the other
    /// replicas get `replica-priority 0` until it is done, and Sentinel is
    /// given time to see that), makes the old master its replica and lifts
    /// the pause. Through the gateway nothing fails and nothing is lost:
    /// writes wait, and those that waited on the old master are refused
    /// there and sent to the new one. The failover starts when the
    /// Sentinel's next read of that replica's INFO (once a second during a
    /// failover) will come right after the promotion: writes pause for
    /// about half a second, after a wait of up to 10 s for that moment
    /// (writes flow meanwhile). Works on a lab (--dir) or on any deployment
    /// (--sentinel ...); a gateway does the same on `POST /switchover` of
    /// its admin endpoint. Prints each step and how long writes were paused.
    Switchover(switchover::SwitchoverArgs),
    /// Stop every process of a lab started with `belay up` (data and logs stay).
    ///
    /// Order: the web app, the gateway, then Sentinels, then data nodes (a
    /// cluster lab: the gateway, then the nodes) — each with SIGTERM, then SIGKILL for whatever is
    /// still running after the grace period. Only the pids the lab recorded are
    /// touched, and only while they still are the processes it started. Data,
    /// configs and logs stay in the state dir.
    Down(down::DownArgs),
    /// Run the gateway (the RESP proxy) in the foreground.
    ///
    /// In front of a Sentinel group (--sentinel) or a Redis Cluster
    /// (--cluster): clients need no Sentinel or cluster support either way.
    ///
    /// Settings come from flags, then environment variables, then the TOML
    /// file (--config, keys named like the long flags with `_`).
    ///
    /// SIGHUP (or `POST /reload` on the admin endpoint) reads the file and
    /// the password files again: Sentinels, passwords, lag bounds, hold
    /// times, read routing, durable writes and `commands` change without
    /// dropping a client. A file that does not parse or validate is refused
    /// and the running config kept; settings that need a restart (listen
    /// addresses, threads, limits…) keep their values and are named.
    ///
    /// SIGTERM or Ctrl-C drains: no new clients, each client closed between
    /// replies (a MULTI or a blocking command answered first), exit within
    /// --drain-timeout-secs. With --upgrade-socket, a new gateway started
    /// with the same socket and --upgrade takes the listening sockets over,
    /// then the old one drains: an upgrade that refuses no client.
    // Boxed: its many flags would make every `Command` as large as it.
    Gateway(Box<belay_gateway::GatewayArgs>),
    /// Break the master under load and report what the application saw.
    ///
    /// Runs a workload (writers: unique SETs, shared INCRs, per-writer
    /// registers with increasing values; readers: GETs) through the gateway
    /// or straight to the master (--target), injects the fault on whichever
    /// node is master at --fault-at, heals it after --fault-for, waits for
    /// the topology to settle, reads everything back from the final master
    /// and checks: acknowledged writes lost, write/read blackout, errors by
    /// kind, stale reads, read-your-writes violations, latency before /
    /// during / after, and the Sentinel events beside it all.
    ///
    /// Uses the lab running in --dir, or starts a temporary one (each
    /// process on its own 127.0.0.X, so `partition` can cut the master off
    /// with iptables; needs root) and stops it afterwards. Whatever a drill
    /// does it undoes, also on Ctrl-C. With --cluster (or a cluster lab
    /// in --dir) `pause` and `kill` run against a Redis Cluster: the fault
    /// on one shard's master, each shard's blackout measured apart.
    /// Exit status: 0 PASS, 3 FAIL, 1 the drill could not run.
    Drill(belay_drill::cli::DrillArgs),
    /// Run newsroom, the seed note's web server: a read-heavy news site on
    /// Redis, through the gateway only.
    ///
    /// Every page says which Redis node served it (the gateway's `BELAY
    /// WHERE`, in the footer and an X-Served-By header): pages come from the
    /// replicas, and keep coming while the master is paused.
    /// Publishing a story writes it and reads it back on one connection, so
    /// the gateway's read-your-writes makes the read-back find it although
    /// reads go to replicas; during a failover the gateway holds the write
    /// and the page comes when the new master has it. A publication the
    /// gateway answers UNCERTAIN or TRYAGAIN is sent again (it is written
    /// only if its id is new), until --write-timeout-ms.
    ///
    /// Routes: / (newest stories), /stories/new (the form), /stories/ID,
    /// /api/stories (GET, or POST {"title", "body"}), /api/stories/ID,
    /// /healthz. `belay up --app` starts it next to the lab's gateway.
    App(belay_app::AppArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Down(args) => down::run(args).await,
        Command::Switchover(args) => switchover::run(args).await,
        Command::Gateway(args) => {
            init_tracing();
            belay_gateway::run(*args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::App(args) => {
            init_tracing();
            belay_app::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Drill(args) => {
            // The drill's own gateway logs only when asked (RUST_LOG), so the
            // report stays readable.
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing();
            }
            belay_drill::cli::run(args).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            ui::print_error(&e);
            if matches!(
                e.downcast_ref::<belay_lab::LabError>(),
                Some(belay_lab::LabError::Interrupted)
            ) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
