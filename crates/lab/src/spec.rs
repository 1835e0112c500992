//! What lab to build: [`LabSpec`] (counts, ports, timers, safety settings)
//! and the plan derived from it — which process gets which name, port and
//! files. Nothing here touches the system; `Lab::start` acts on the plan.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::process::{ProcessKind, ProcessRecord};
use crate::server::{ServerChoice, ServerPrograms};

/// Everything that decides the shape of a lab. `Default` gives the safe
/// topology the issue asks for: 1 master + 2 replicas, 3 Sentinels (quorum
/// 2), auth everywhere, loopback only, `min-replicas-to-write 1`, AOF on.
///
/// The password is never serialized (it lives in `<dir>/password`, mode 0600).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabSpec {
    /// State dir: `lab.json`, `password`, and one sub-dir per process.
    pub dir: PathBuf,
    /// Number of replicas next to the master.
    pub replicas: usize,
    /// Number of Sentinels; the quorum is their majority.
    pub sentinels: usize,
    /// The name Sentinels monitor the master under.
    pub master_name: String,
    /// Port of the first data node (the initial master); replicas follow
    /// (`base_port + 1`, `+ 2`, ...).
    pub base_port: u16,
    /// Port of the first Sentinel; `None` means `base_port + 20000` (so the
    /// default lab uses the familiar 6379 / 26379).
    pub sentinel_base_port: Option<u16>,
    /// Address every process binds to and announces.
    pub bind: String,
    /// Password for every node and Sentinel; `None` = generate one (or reuse
    /// the one already in the state dir).
    #[serde(skip)]
    pub password: Option<String>,
    /// Sentinel `down-after-milliseconds`.
    pub down_after_ms: u64,
    /// Sentinel `failover-timeout`.
    pub failover_timeout_ms: u64,
    /// `min-replicas-to-write` on data nodes (0 turns the guard off).
    pub min_replicas_to_write: u32,
    /// `min-replicas-max-lag` (seconds) on data nodes.
    pub min_replicas_max_lag: u32,
    /// AOF + RDB snapshots on (`false`: no persistence at all).
    pub persistence: bool,
    /// Redis or Valkey (`--server`); a program named below wins.
    #[serde(default)]
    pub server: ServerChoice,
    /// The data nodes' program, when named (`--redis-server`; a bare name is
    /// looked up on `PATH`). `None`: the chosen server's own.
    pub redis_server: Option<PathBuf>,
    /// The Sentinels' program, when named (`--redis-sentinel`). `None`: the
    /// chosen server's own, or the named `redis_server` in Sentinel mode.
    pub redis_sentinel: Option<PathBuf>,
    /// What runs, found by `Lab::start` from the three fields above (see
    /// [`ServerPrograms::find`]) and kept in `lab.json` for restarts.
    #[serde(default)]
    pub programs: Option<ServerPrograms>,
    /// The gateway to start in front of the topology, if any.
    pub gateway: Option<GatewaySpec>,
    /// The web app to start on the gateway, if any (needs `gateway`).
    /// Absent from older state files.
    #[serde(default)]
    pub app: Option<AppSpec>,
    /// Children outlive the process that started them (`up --detach`):
    /// started in their own session, not killed when the `Lab` is dropped.
    pub detach: bool,
    /// How long `Lab::start` waits for the topology to be ready.
    pub ready_timeout_ms: u64,
    /// Extra lines appended to every data node's `redis.conf` (tests use it
    /// to provoke a start-up failure; power users to tune).
    pub extra_redis_config: Vec<String>,
    /// Extra lines appended to every `sentinel.conf`.
    pub extra_sentinel_config: Vec<String>,
    /// Give every data node and Sentinel its own loopback address
    /// (127.0.0.2, 127.0.0.3, ... in plan order) instead of `bind`, used
    /// for listening, announcing *and* as the source of its outgoing
    /// connections (`bind-source-addr`). Packet filters can then tell the
    /// processes apart, which is what a network-partition drill needs
    /// (Linux routes all of 127.0.0.0/8 to `lo`). The gateway stays on
    /// `bind`. Off by default; ignored fields of old state files read as off.
    #[serde(default)]
    pub own_loopback_addrs: bool,
    /// TLS only, on every hop: a private CA and certificates in
    /// `<dir>/tls/` (see `tls`), data nodes and Sentinels on `tls-port`
    /// with `port 0`, replication and Sentinel links over TLS, the gateway's
    /// listener and its connections to nodes over TLS.
    #[serde(default)]
    pub tls: bool,
    /// Availability zones given to the data nodes round-robin (`redis-1`
    /// gets the first): the lab's gateway is told each node's zone
    /// (`--node-zone`) and its own (`GatewaySpec::zone`, else the first).
    /// Empty: no zones. Absent from older state files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// The ports came from [`crate::ports::reserve_block`] (tests): if one is
    /// taken between reserving and starting, take a new block instead of
    /// failing. Never set for ports a user chose.
    #[serde(skip)]
    pub reassign_busy_ports: bool,
}

/// A zone name: safe in a flag, a config file and a metric label.
fn valid_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The gateway process: `<exe> gateway --sentinel A ... --master-name N
/// --listen BIND:PORT`, with `BELAY_PASSWORD` in its environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewaySpec {
    /// The `belay` binary (the CLI passes `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Port the gateway listens on (on `LabSpec::bind`).
    pub port: u16,
    /// Port of its admin endpoint (dashboard, metrics), on loopback: the
    /// lab gives it no password. `None`: the gateway's own default (its
    /// port + 1000, skipped if taken).
    #[serde(default)]
    pub admin_port: Option<u16>,
    /// `--durable-writes` for the gateway (`N` or `majority`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_writes: Option<String>,
    /// The gateway's own zone; `None`: the first of `LabSpec::zones`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `--read-from` for the gateway (`zone-replica`, `nearest`, …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_from: Option<String>,
}

/// The web app process: `<exe> app --gateway BIND:GATEWAY_PORT --listen
/// BIND:PORT`, with `BELAY_PASSWORD` in its environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppSpec {
    /// The `belay` binary (the CLI passes `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Port the app serves HTTP on (on `LabSpec::bind`).
    pub port: u16,
}

/// Default port of the web app: the usual one for a development web server.
pub const DEFAULT_APP_PORT: u16 = 8080;

/// Default port of the gateway when the data nodes start at `base_port`:
/// `base_port + 11` (6390 by default), just past room for ten replicas.
pub const GATEWAY_PORT_OFFSET: u16 = 11;

/// Distance between the data nodes' ports and the Sentinels' ports by default.
pub const SENTINEL_PORT_OFFSET: u16 = 20000;

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            dir: PathBuf::from(".belay"),
            replicas: 2,
            sentinels: 3,
            master_name: "mymaster".into(),
            base_port: 6379,
            sentinel_base_port: None,
            bind: "127.0.0.1".into(),
            password: None,
            down_after_ms: 5000,
            failover_timeout_ms: 60_000,
            min_replicas_to_write: 1,
            min_replicas_max_lag: 10,
            persistence: true,
            server: ServerChoice::Auto,
            redis_server: None,
            redis_sentinel: None,
            programs: None,
            gateway: None,
            app: None,
            detach: false,
            ready_timeout_ms: 60_000,
            extra_redis_config: Vec::new(),
            extra_sentinel_config: Vec::new(),
            own_loopback_addrs: false,
            tls: false,
            zones: Vec::new(),
            reassign_busy_ports: false,
        }
    }
}

impl LabSpec {
    /// A spec for tests: state in `dir`, a fresh block of free ports (see
    /// [`crate::ports::reserve_block`]), short Sentinel timers (down-after
    /// 1000 ms, failover-timeout 4000 ms) and a fixed password. No gateway.
    /// The server is `BELAY_TEST_SERVER` (`redis`, `valkey`; default
    /// `auto`), so a suite runs against Valkey unchanged.
    pub fn for_tests(dir: &Path) -> LabSpec {
        let mut spec = LabSpec {
            dir: dir.to_path_buf(),
            server: ServerChoice::for_tests(),
            password: Some("belay-test-password".into()),
            down_after_ms: 1000,
            failover_timeout_ms: 4000,
            ready_timeout_ms: 45_000,
            reassign_busy_ports: true,
            ..LabSpec::default()
        };
        spec.assign_free_ports();
        spec
    }

    /// Moves every port of the lab onto one contiguous block of free ports:
    /// data nodes, then Sentinels, then one port for the gateway (used when
    /// `gateway` is set) and one for the app (when `app` is). For tests,
    /// which run many labs side by side.
    pub fn assign_free_ports(&mut self) {
        let n = self.replicas + 1 + self.sentinels + 3;
        let first = crate::ports::reserve_block(n as u16);
        self.base_port = first;
        self.sentinel_base_port = Some(first + self.replicas as u16 + 1);
        let after_sentinels = first + (self.replicas + 1 + self.sentinels) as u16;
        if let Some(gw) = &mut self.gateway {
            gw.port = after_sentinels;
            if gw.admin_port.is_some() {
                gw.admin_port = Some(after_sentinels + 2);
            }
        }
        if let Some(app) = &mut self.app {
            app.port = after_sentinels + 1;
        }
    }

    /// Majority of the Sentinels: the quorum to agree a master is down, and
    /// the votes needed to authorize a failover.
    pub fn quorum(&self) -> usize {
        self.sentinels / 2 + 1
    }

    /// The programs found by `Lab::start`.
    ///
    /// # Panics
    /// Before `Lab::start` (or `Lab::attach`) filled them in.
    pub fn programs(&self) -> &ServerPrograms {
        self.programs
            .as_ref()
            .expect("the server programs are found by Lab::start")
    }

    /// The first Sentinel's port.
    pub fn sentinel_port(&self) -> u16 {
        self.sentinel_base_port
            .unwrap_or(self.base_port.saturating_add(SENTINEL_PORT_OFFSET))
    }

    /// The default gateway port for this spec's base port.
    pub fn default_gateway_port(&self) -> u16 {
        self.base_port.saturating_add(GATEWAY_PORT_OFFSET)
    }

    /// Checks the spec describes a topology that can work, before anything
    /// is started.
    pub fn validate(&self) -> Result<(), LabError> {
        let bad = |m: String| Err(LabError::InvalidSpec(m));
        if self.tls && self.app.is_some() {
            return bad("the web app does not speak TLS yet: drop --app, or --tls".into());
        }
        if self.sentinels == 0 {
            return bad("at least one Sentinel is needed (--sentinels)".into());
        }
        if self.app.is_some() && self.gateway.is_none() {
            return bad(
                "the app reaches Redis only through the gateway: drop --no-gateway, or --app"
                    .into(),
            );
        }
        if self.replicas == 0 {
            return bad("at least one replica is needed for failover (--replicas)".into());
        }
        if let Some(z) = self.zones.iter().find(|z| !valid_zone(z)) {
            return bad(format!(
                "zone {z:?} must be letters, digits, '-', '_' or '.' (--zones)"
            ));
        }
        if let Some(gw) = &self.gateway {
            if let Some(z) = gw.zone.as_deref().filter(|z| !valid_zone(z)) {
                return bad(format!(
                    "zone {z:?} must be letters, digits, '-', '_' or '.' (--gateway-zone)"
                ));
            }
            if gw.read_from.as_deref() == Some("zone-replica") && self.gateway_zone().is_none() {
                return bad(
                    "--read-from zone-replica needs zones: give the nodes zones with --zones (the gateway takes the first, or --gateway-zone)"
                        .into(),
                );
            }
        }
        if self.master_name.is_empty()
            || !self
                .master_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!(
                "master name {:?} must be letters, digits, '-', '_' or '.' (--master-name)",
                self.master_name
            ));
        }
        if self.min_replicas_to_write as usize > self.replicas {
            return bad(format!(
                "min-replicas-to-write {} is more than the {} replicas: the master could never take a write",
                self.min_replicas_to_write, self.replicas
            ));
        }
        if let Some(p) = &self.password {
            if p.is_empty() || p.contains(['\n', '\r', '\0']) {
                return bad("the password must be non-empty and on one line (--password)".into());
            }
        }
        let last_data = self.base_port as u32 + self.replicas as u32;
        let last_sentinel = self.sentinel_port() as u32 + self.sentinels as u32 - 1;
        if last_data > 65535 || last_sentinel > 65535 || self.base_port == 0 {
            return bad("ports run past 65535: choose a lower --port / --sentinel-port".into());
        }
        let planned = self.plan();
        if let Some(gw) = planned.iter().find(|r| r.admin_port.is_some()) {
            if let Some(b) = planned.iter().find(|b| Some(b.port) == gw.admin_port) {
                return bad(format!(
                    "the gateway's admin endpoint and {} would both use port {}: move one with --admin-port",
                    b.name, b.port
                ));
            }
        }
        for (i, a) in planned.iter().enumerate() {
            if let Some(b) = planned[..i].iter().find(|b| b.port == a.port) {
                return bad(format!(
                    "{} and {} would both use port {}: move one with --port, --sentinel-port, --gateway-port or --app-port",
                    b.name, a.name, a.port
                ));
            }
        }
        Ok(())
    }

    /// Every process of the lab, in start order: data nodes (`redis-1` is
    /// the initial master), Sentinels, the gateway, then the app. Pids are
    /// empty.
    pub fn plan(&self) -> Vec<ProcessRecord> {
        let mut out = Vec::new();
        let mut next_own_addr = 2u32;
        let mut host_for = |kind: ProcessKind| {
            if self.own_loopback_addrs
                && matches!(kind, ProcessKind::DataNode | ProcessKind::Sentinel)
            {
                next_own_addr += 1;
                format!("127.0.0.{}", next_own_addr - 1)
            } else {
                self.bind.clone()
            }
        };
        let rec = |name: String, kind: ProcessKind, port: u16, host: String| {
            let dir = self.dir.join(&name);
            let (config, log) = match kind {
                ProcessKind::DataNode => (Some(dir.join("redis.conf")), dir.join("redis.log")),
                ProcessKind::Sentinel => {
                    (Some(dir.join("sentinel.conf")), dir.join("sentinel.log"))
                }
                ProcessKind::Gateway => (None, dir.join("gateway.log")),
                ProcessKind::App => (None, dir.join("app.log")),
            };
            ProcessRecord {
                name,
                kind,
                host,
                port,
                admin_port: None,
                dir,
                config,
                log,
                pid: None,
                start_time: None,
            }
        };
        for i in 0..=self.replicas {
            out.push(rec(
                format!("redis-{}", i + 1),
                ProcessKind::DataNode,
                self.base_port.saturating_add(i as u16),
                host_for(ProcessKind::DataNode),
            ));
        }
        for i in 0..self.sentinels {
            out.push(rec(
                format!("sentinel-{}", i + 1),
                ProcessKind::Sentinel,
                self.sentinel_port().saturating_add(i as u16),
                host_for(ProcessKind::Sentinel),
            ));
        }
        if let Some(gw) = &self.gateway {
            let mut gateway = rec(
                "gateway".into(),
                ProcessKind::Gateway,
                gw.port,
                host_for(ProcessKind::Gateway),
            );
            gateway.admin_port = gw.admin_port;
            out.push(gateway);
        }
        if let Some(app) = &self.app {
            out.push(rec(
                "app".into(),
                ProcessKind::App,
                app.port,
                host_for(ProcessKind::App),
            ));
        }
        out
    }

    /// The zone of data node `i` (0 = the initial master): `zones` round-robin.
    pub fn data_node_zone(&self, i: usize) -> Option<&str> {
        (!self.zones.is_empty()).then(|| self.zones[i % self.zones.len()].as_str())
    }

    /// The zone the lab's gateway is in: its own, else the first node zone.
    pub fn gateway_zone(&self) -> Option<&str> {
        let gw = self.gateway.as_ref()?;
        gw.zone
            .as_deref()
            .or(self.zones.first().map(String::as_str))
    }

    /// `host:port` of the initial master.
    pub fn initial_master_addr(&self) -> String {
        format!("{}:{}", self.data_node_host(0), self.base_port)
    }

    /// Where the lab's TLS files are (whether or not it uses TLS).
    pub fn tls_files(&self) -> crate::tls::LabTls {
        crate::tls::LabTls::in_state_dir(&self.dir)
    }

    /// The address data node `i` (0 = the initial master) binds to.
    pub fn data_node_host(&self, i: usize) -> String {
        if self.own_loopback_addrs {
            format!("127.0.0.{}", 2 + i)
        } else {
            self.bind.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_uses_familiar_ports() {
        let spec = LabSpec {
            gateway: Some(GatewaySpec {
                exe: "belay".into(),
                port: 6390,
                admin_port: None,
                durable_writes: None,
                zone: None,
                read_from: None,
            }),
            app: Some(AppSpec {
                exe: "belay".into(),
                port: DEFAULT_APP_PORT,
            }),
            ..LabSpec::default()
        };
        spec.validate().unwrap();
        let plan = spec.plan();
        let names: Vec<_> = plan.iter().map(|p| (p.name.as_str(), p.port)).collect();
        assert_eq!(
            names,
            vec![
                ("redis-1", 6379),
                ("redis-2", 6380),
                ("redis-3", 6381),
                ("sentinel-1", 26379),
                ("sentinel-2", 26380),
                ("sentinel-3", 26381),
                ("gateway", 6390),
                ("app", 8080),
            ]
        );
        assert_eq!(spec.quorum(), 2);
    }

    #[test]
    fn own_loopback_addrs_give_each_process_its_address() {
        let spec = LabSpec {
            own_loopback_addrs: true,
            gateway: Some(GatewaySpec {
                exe: "belay".into(),
                port: 6390,
                admin_port: None,
                durable_writes: None,
                zone: None,
                read_from: None,
            }),
            app: Some(AppSpec {
                exe: "belay".into(),
                port: 8080,
            }),
            ..LabSpec::default()
        };
        let hosts: Vec<_> = spec.plan().iter().map(|p| p.addr()).collect();
        assert_eq!(
            hosts,
            vec![
                "127.0.0.2:6379",
                "127.0.0.3:6380",
                "127.0.0.4:6381",
                "127.0.0.5:26379",
                "127.0.0.6:26380",
                "127.0.0.7:26381",
                "127.0.0.1:6390",
                "127.0.0.1:8080",
            ]
        );
        assert_eq!(spec.initial_master_addr(), "127.0.0.2:6379");
    }

    #[test]
    fn overlapping_ports_are_refused() {
        let spec = LabSpec {
            replicas: 12,
            gateway: Some(GatewaySpec {
                exe: "belay".into(),
                port: 6390,
                admin_port: None,
                durable_writes: None,
                zone: None,
                read_from: None,
            }),
            ..LabSpec::default()
        };
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("port 6390"), "{err}");
        assert!(err.contains("--gateway-port"), "{err}");
    }

    #[test]
    fn zones_go_round_robin_and_the_gateway_takes_the_first_unless_told() {
        let mut spec = LabSpec {
            replicas: 3,
            zones: vec!["a".into(), "b".into()],
            gateway: Some(GatewaySpec {
                exe: "belay".into(),
                port: 6390,
                admin_port: None,
                durable_writes: None,
                zone: None,
                read_from: Some("zone-replica".into()),
            }),
            ..LabSpec::default()
        };
        spec.validate().unwrap();
        let zones: Vec<_> = (0..4).map(|i| spec.data_node_zone(i)).collect();
        assert_eq!(zones, [Some("a"), Some("b"), Some("a"), Some("b")]);
        assert_eq!(spec.gateway_zone(), Some("a"));
        spec.gateway.as_mut().unwrap().zone = Some("b".into());
        assert_eq!(spec.gateway_zone(), Some("b"));
        spec.gateway.as_mut().unwrap().zone = Some("b c".into());
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("--gateway-zone"), "{err}");
        spec.gateway.as_mut().unwrap().zone = None;
        spec.zones.clear();
        assert_eq!(spec.data_node_zone(0), None);
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("--zones"), "{err}");
    }

    #[test]
    fn an_app_without_the_gateway_is_refused() {
        let spec = LabSpec {
            app: Some(AppSpec {
                exe: "belay".into(),
                port: 8080,
            }),
            ..LabSpec::default()
        };
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("only through the gateway"), "{err}");
    }

    #[test]
    fn test_ports_give_the_gateway_and_the_app_a_port_of_the_block() {
        let mut spec = LabSpec::for_tests(std::path::Path::new("/nonexistent"));
        spec.gateway = Some(GatewaySpec {
            exe: "belay".into(),
            port: 0,
            admin_port: None,
            durable_writes: None,
            zone: None,
            read_from: None,
        });
        spec.app = Some(AppSpec {
            exe: "belay".into(),
            port: 0,
        });
        spec.assign_free_ports();
        let ports: Vec<u16> = spec.plan().iter().map(|p| p.port).collect();
        let first = ports[0];
        assert_eq!(ports, (first..first + 8).collect::<Vec<_>>());
    }

    #[test]
    fn impossible_write_guard_is_refused() {
        let spec = LabSpec {
            replicas: 1,
            min_replicas_to_write: 2,
            ..LabSpec::default()
        };
        assert!(spec.validate().is_err());
    }
}
