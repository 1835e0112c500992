//! A real lab (redis-server + redis-sentinel processes) with an in-process
//! gateway in front of it. Dropping the `Env` kills every process.
#![allow(dead_code)]

pub mod cluster;
pub mod delay;
pub mod workload;

use std::time::Duration;

use belay_client::{Auth, Connection, Value};
use belay_gateway::{Gateway, GatewayConfig};
use belay_lab::{Lab, LabSpec, NoProgress, ServerChoice};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Env {
    pub lab: Lab,
    pub gateway: String,
    /// The in-process gateway's view of the topology.
    pub topology: tokio::sync::watch::Receiver<std::sync::Arc<belay_gateway::Topology>>,
    /// The admin endpoint's address (`http://` + this), if it is on.
    pub admin: Option<String>,
    extra: Vec<tokio::task::JoinHandle<()>>,
    task: tokio::task::JoinHandle<()>,
    // Last: the state dir goes after the processes are killed.
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
        for t in &self.extra {
            t.abort();
        }
    }
}

pub async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Env {
    start_with(|_| {}, tweak).await
}

/// A lab made from [`LabSpec::for_tests`] changed by `lab`, and a gateway
/// in front of it changed by `tweak`, ready (master, both replicas, command
/// table).
pub async fn start_with(
    lab: impl FnOnce(&mut LabSpec),
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Env {
    let (dir, lab) = start_lab(lab).await;
    gateway_on(dir, lab, |_, cfg| tweak(cfg)).await
}

/// A lab made from [`LabSpec::for_tests`] changed by `lab`, without a
/// gateway yet (see [`gateway_on`]); the state dir goes last.
pub async fn start_lab(lab: impl FnOnce(&mut LabSpec)) -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = LabSpec::for_tests(dir.path());
    lab(&mut spec);
    let lab = Lab::start(spec, &NoProgress).await.expect("lab starts");
    assert_runs_the_chosen_server(&lab).await;
    (dir, lab)
}

/// A gateway in front of a running lab, its settings changed by `tweak`
/// (which sees the lab: node addresses), ready.
pub async fn gateway_on(
    dir: tempfile::TempDir,
    lab: Lab,
    tweak: impl FnOnce(&Lab, &mut GatewayConfig),
) -> Env {
    let replicas = lab.spec().replicas;
    let mut cfg = gateway_config(&lab);
    tweak(&lab, &mut cfg);
    let gw = Gateway::bind(cfg).await.expect("gateway binds");
    let gateway = gw.local_addr().to_string();
    let topology = gw.topology();
    let admin = gw.admin_addr().map(|a| a.to_string());
    gw.wait_ready(replicas, Duration::from_secs(20))
        .await
        .expect("the gateway sees the whole topology");
    let task = tokio::spawn(async move {
        let _ = gw.run(std::future::pending()).await;
    });
    Env {
        lab,
        gateway,
        topology,
        admin,
        extra: Vec::new(),
        task,
        _dir: dir,
    }
}

/// Checks that the lab's master runs the server `BELAY_TEST_SERVER` asks
/// for (its `INFO server` names Valkey in `server_name`; Redis has no such
/// field), so a run meant for Valkey cannot pass on Redis unnoticed.
pub async fn assert_runs_the_chosen_server(lab: &Lab) {
    let want = match ServerChoice::for_tests() {
        ServerChoice::Auto => return,
        ServerChoice::Redis => "redis",
        ServerChoice::Valkey => "valkey",
    };
    let master = lab.current_master().await.expect("the lab's master");
    let mut c = Connection::connect_with(
        &master,
        lab.tls(),
        Some(&Auth::password(lab.password())),
        Duration::from_secs(5),
    )
    .await
    .expect("connect to the master");
    let info = c.info("server").await.expect("INFO server");
    let runs = info.get("server_name").unwrap_or("redis");
    assert_eq!(
        runs, want,
        "BELAY_TEST_SERVER asks for {want}; the lab runs {runs}"
    );
}

/// A gateway's settings for `lab`: its Sentinels, master name and
/// password; for a TLS lab, a TLS listener only and TLS to the nodes, with
/// the lab's certificates.
pub fn gateway_config(lab: &Lab) -> GatewayConfig {
    let mut cfg = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        sentinels: lab.sentinel_addrs(),
        master_name: lab.master_name().to_string(),
        password: Some(lab.password().to_string()),
        poll_interval_ms: 500,
        ..GatewayConfig::default()
    };
    if lab.spec().tls {
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
    cfg
}

impl Env {
    /// Starts a second gateway on the same lab, with other settings; returns its address.
    pub async fn extra_gateway(&mut self, tweak: impl FnOnce(&mut GatewayConfig)) -> String {
        let mut cfg = gateway_config(&self.lab);
        tweak(&mut cfg);
        let gw = Gateway::bind(cfg).await.expect("gateway binds");
        let addr = gw.local_addr().to_string();
        gw.wait_ready(self.lab.spec().replicas, Duration::from_secs(20))
            .await
            .expect("the extra gateway sees the topology");
        self.extra.push(tokio::spawn(async move {
            let _ = gw.run(std::future::pending()).await;
        }));
        addr
    }

    /// `SENTINEL FAILOVER` through the first Sentinel; returns the new master
    /// once the Sentinels agree on it and it answers ROLE master.
    pub async fn sentinel_failover(&self) -> String {
        let old = self.master().await;
        let mut sentinel = Connection::connect_with(
            &self.lab.sentinel_addrs()[0],
            self.lab.tls(),
            Some(&self.auth()),
            Duration::from_secs(5),
        )
        .await
        .expect("connect to a Sentinel");
        sentinel
            .call_ok(&["SENTINEL", "FAILOVER", self.lab.master_name()])
            .await
            .expect("SENTINEL FAILOVER");
        self.lab
            .wait_for_failover(&old, Duration::from_secs(30))
            .await
            .expect("a failover")
    }

    /// Drops the master's replication stream to every replica (their links
    /// still look up): the replicas fall behind while everything answers.
    pub async fn stall_replication(&self) -> Vec<PacketDrop> {
        let mut stalls = Vec::new();
        for r in self.replicas().await {
            stalls.push(self.stall_replication_to(&r).await);
        }
        stalls
    }

    /// Drops the master's replication stream to one replica (its link,
    /// found by the port the replica connects from), nothing else.
    pub async fn stall_replication_to(&self, replica: &str) -> PacketDrop {
        let master = self.master().await;
        let master_port: u16 = master.rsplit(':').next().unwrap().parse().unwrap();
        let mut c = self.node(replica).await;
        let list = c
            .call_ok(&["CLIENT", "LIST", "TYPE", "master"])
            .await
            .unwrap()
            .to_text()
            .unwrap();
        let link_port: u16 = list
            .split_whitespace()
            .find_map(|f| f.strip_prefix("laddr="))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("the replica's link to its master");
        PacketDrop::new(master_port, link_port)
    }

    /// Waits until `old` (name or address) is a replica of the settled
    /// master: `new` normally, or whichever replica won if Sentinel's first
    /// promotion timed out with the tests' short timers (never `old`).
    pub async fn wait_rejoined(&self, old: &str, new: &str) {
        let old_addr = self.lab.process(old).expect("a lab process").addr();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let master = self.master().await;
            assert_ne!(master, old_addr, "the old master came back as master");
            if self
                .lab
                .wait_until_replica_of(old, &master, Duration::from_secs(5))
                .await
                .is_ok()
            {
                if master != new {
                    eprintln!("note: the Sentinels settled on {master}, not {new}");
                }
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{old} never rejoined as a replica"
            );
        }
    }

    /// Name of the lab process at `addr`.
    pub fn name_of(&self, addr: &str) -> String {
        self.lab
            .process_by_addr(addr)
            .expect("a lab process")
            .name()
            .to_string()
    }

    /// Whether the gateway currently lets `addr` serve reads.
    pub fn eligible(&self, addr: &str) -> bool {
        self.topology
            .borrow()
            .eligible_replicas()
            .any(|r| r.pool.addr == addr)
    }

    /// Waits until the gateway's view of `addr` is `eligible`.
    pub async fn wait_eligible(&self, addr: &str, eligible: bool, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.eligible(addr) != eligible {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} never became eligible={eligible}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An authenticated client of the gateway (over TLS in a TLS lab).
    pub async fn client(&self) -> Connection {
        let tls = self.lab.tls();
        Connection::connect_with(
            &self.gateway,
            tls,
            Some(&self.auth()),
            Duration::from_secs(10),
        )
        .await
        .expect("connect to the gateway")
    }

    pub fn auth(&self) -> Auth {
        Auth::password(self.lab.password())
    }

    /// A direct connection to a data node.
    pub async fn node(&self, addr: &str) -> Connection {
        Connection::connect_with(
            addr,
            self.lab.tls(),
            Some(&self.auth()),
            Duration::from_secs(5),
        )
        .await
        .expect("connect to a node")
    }

    pub async fn master(&self) -> String {
        self.lab.current_master().await.expect("a master")
    }

    pub async fn replicas(&self) -> Vec<String> {
        let master = self.master().await;
        self.lab
            .data_nodes()
            .iter()
            .map(|p| p.addr())
            .filter(|a| *a != master)
            .collect()
    }

    /// `cmdstat_<name>` calls on a node.
    pub async fn calls(&self, addr: &str, command: &str) -> i64 {
        let info = self
            .node(addr)
            .await
            .info("commandstats")
            .await
            .expect("INFO");
        info.get_map(&format!("cmdstat_{command}"))
            .and_then(|m| m.get("calls").and_then(|c| c.parse().ok()))
            .unwrap_or(0)
    }
}

impl Env {
    /// Commands a node refused with READONLY: writes sent to a replica.
    pub async fn rejected_writes(&self, addr: &str) -> i64 {
        let info = self
            .node(addr)
            .await
            .info("errorstats")
            .await
            .expect("INFO");
        info.get_map("errorstat_READONLY")
            .and_then(|m| m.get("count").and_then(|c| c.parse().ok()))
            .unwrap_or(0)
    }
}

/// Sends raw bytes and reads until `expect` bytes arrive or the peer closes.
pub async fn raw_exchange(addr: &str, send: &[u8], read_at_least: usize) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(send).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= read_at_least && read_at_least > 0 {
                    // See whether the server also closes.
                    match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                        Ok(Ok(0)) => break true,
                        _ => break false,
                    }
                }
            }
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    (got, closed)
}

pub fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// Drops the TCP packets from local port `sport` to local port `dport` on
/// loopback (iptables, tagged with a comment unique to this process) until
/// dropped: replication stalls without the link being seen as down.
pub struct PacketDrop {
    spec: Vec<String>,
}

impl PacketDrop {
    pub fn new(sport: u16, dport: u16) -> PacketDrop {
        let spec: Vec<String> = [
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            "--sport",
            &sport.to_string(),
            "--dport",
            &dport.to_string(),
            "-m",
            "comment",
            "--comment",
            &format!("belay-test-{}", std::process::id()),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let status = std::process::Command::new("iptables")
            .arg("-I")
            .args(&spec)
            .status()
            .expect("iptables (apt-get install iptables; the tests run as root)");
        assert!(status.success(), "iptables -I {spec:?} failed");
        PacketDrop { spec }
    }
}

impl Drop for PacketDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .arg("-D")
            .args(&self.spec)
            .status();
    }
}
