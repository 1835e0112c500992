//! The workload: writer and reader sessions that hammer the target during a
//! drill and record every operation (see `history`).
//!
//! Writers (one connection each) mix three writes: SETs of keys written
//! once, INCRs of shared counters, and SETs of the writer's own registers
//! to increasing values — each followed by a GET of that register on the
//! same connection, which is the read-your-writes probe. Readers (one
//! connection each) GET random registers. In front of a Redis Cluster each
//! session keeps to the keys of one shard (see `Layout`). A seeded RNG picks the mix, so a
//! run is repeatable as far as timing allows. With connection churn
//! ([`WorkloadSpec::reconnect_every`]) a session's connection is replaced
//! every N operations (see `client`), never between a write and its probe.
//!
//! Two targets: the gateway, or what a naive application does without one
//! ([`Target::DirectMaster`]): ask a Sentinel where the master is, send
//! every read and write there, and ask again only when the connection
//! fails or a write is refused with READONLY.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::sentinel::SentinelAuth;
use belay_client::{Auth, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{Client, Failure};
use crate::history::{Layout, Micros, Op, OpKind, Outcome};

/// Where the workload sends its commands.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// Everything through the gateway at this address.
    Gateway { addr: String },
    /// Straight to the master the Sentinels name (asked at start and after
    /// connection errors / READONLY), reads included.
    DirectMaster {
        sentinels: Vec<String>,
        master_name: String,
    },
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Gateway { .. } => "gateway",
            Target::DirectMaster { .. } => "direct-master",
        }
    }
}

/// How to run the workload.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub target: Target,
    /// The data nodes' (and the gateway's) credentials.
    pub auth: Auth,
    /// How the direct-master target logs in to the Sentinels: they often
    /// have no password of their own where the nodes have one (see
    /// [`SentinelAuth::choose`]).
    pub sentinel_auth: SentinelAuth,
    /// TLS to the gateway, nodes and Sentinels (a TLS lab).
    pub tls: Option<belay_client::TlsClient>,
    pub layout: Layout,
    pub seed: u64,
    /// A client-side deadline for each command. Through the gateway it must
    /// be longer than the gateway's failover hold, so that what the client
    /// sees is the gateway's verdict, not our impatience.
    pub op_timeout: Duration,
    /// Pause between a session's operations (keeps a 2-core machine usable).
    pub think: Duration,
    /// Connection churn: every session closes its connection and opens a
    /// new one (with a RESP3 handshake) every this many operations, as
    /// short-lived connections and pools with a maximum lifetime do. 0:
    /// one connection per session, reopened only after a failure.
    pub reconnect_every: u32,
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub writes_ok: AtomicU64,
    pub reads_ok: AtomicU64,
    pub errors: AtomicU64,
    /// Connections opened (connected and set up), first ones included.
    pub connections_opened: AtomicU64,
}

/// A running workload. [`Workload::stop`] ends it and returns the history.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Op>>>,
    stats: Arc<LiveStats>,
}

impl Workload {
    /// Starts every session; `t0` is the drill clock's zero.
    pub fn start(spec: &WorkloadSpec, t0: Instant) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LiveStats::default());
        let spec = Arc::new(spec.clone());
        let sessions = spec.layout.writers + spec.layout.readers;
        let tasks = (0..sessions)
            .map(|session| {
                let mut s = Session {
                    id: session,
                    spec: spec.clone(),
                    client: Client::new(spec.clone(), stats.clone(), session),
                    rng: StdRng::seed_from_u64(spec.seed ^ (0x9e37_79b9 * (session as u64 + 1))),
                    t0,
                    ops: Vec::new(),
                    stats: stats.clone(),
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    if session < s.spec.layout.writers {
                        s.run_writer(&stop).await;
                    } else {
                        s.run_reader(&stop).await;
                    }
                    s.ops
                })
            })
            .collect();
        Workload { stop, tasks, stats }
    }

    pub fn stats(&self) -> Arc<LiveStats> {
        self.stats.clone()
    }

    /// Stops every session after its current operation and returns all
    /// operations, ordered by start time.
    pub async fn stop(self) -> anyhow::Result<Vec<Op>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(
                t.await
                    .map_err(|e| anyhow::anyhow!("a workload session panicked: {e}"))?,
            );
        }
        all.sort_by_key(|o| o.start_us);
        Ok(all)
    }
}

/// One session's state.
struct Session {
    id: u32,
    spec: Arc<WorkloadSpec>,
    client: Client,
    rng: StdRng,
    t0: Instant,
    ops: Vec<Op>,
    stats: Arc<LiveStats>,
}

impl Session {
    fn now(&self) -> Micros {
        self.t0.elapsed().as_micros() as Micros
    }

    async fn run_writer(&mut self, stop: &AtomicBool) {
        let layout = self.spec.layout.clone();
        let mut seq = 0u64;
        let first_reg = self.id * layout.regs_per_writer;
        let mut reg_values = vec![0u64; layout.regs_per_writer as usize];
        while !stop.load(Ordering::Relaxed) {
            let dice: f64 = self.rng.gen();
            if dice < 0.5 {
                seq += 1;
                let key = layout.set_key(self.id, seq);
                self.op(
                    OpKind::Set {
                        writer: self.id,
                        seq,
                    },
                    &["SET", &key, &seq.to_string()],
                )
                .await;
            } else if dice < 0.75 {
                // Its own group's counters (all of them but in a cluster).
                let counter = pick(
                    &mut self.rng,
                    &layout.counters_of(layout.group_of_writer(self.id)),
                    layout.counters,
                );
                self.op(
                    OpKind::Incr { counter },
                    &["INCR", &layout.counter_key(counter)],
                )
                .await;
            } else {
                let j = self.rng.gen_range(0..layout.regs_per_writer.max(1));
                let reg = first_reg + j;
                reg_values[j as usize] += 1;
                let value = reg_values[j as usize];
                let key = layout.reg_key(reg);
                let ok = self
                    .op(
                        OpKind::Write { reg, value },
                        &["SET", &key, &value.to_string()],
                    )
                    .await;
                if ok {
                    // Read-your-writes probe: same connection, right after the ack.
                    self.probe(OpKind::Read { reg }, &["GET", &key]).await;
                }
            }
            tokio::time::sleep(self.spec.think).await;
        }
    }

    async fn run_reader(&mut self, stop: &AtomicBool) {
        let layout = self.spec.layout.clone();
        let mine = layout.registers_of(layout.group_of_reader(self.id));
        while !stop.load(Ordering::Relaxed) {
            let reg = pick(&mut self.rng, &mine, layout.registers());
            self.op(OpKind::Read { reg }, &["GET", &layout.reg_key(reg)])
                .await;
            tokio::time::sleep(self.spec.think).await;
        }
    }

    /// Runs one command, records it, returns whether it succeeded.
    async fn op(&mut self, kind: OpKind, args: &[&str]) -> bool {
        self.record(kind, args, false).await
    }

    /// Like [`Session::op`], on the connection of the previous command.
    async fn probe(&mut self, kind: OpKind, args: &[&str]) -> bool {
        self.record(kind, args, true).await
    }

    /// Runs one command and records it: its start is taken before a
    /// connection is (re)opened for it, so connect and handshake time count.
    async fn record(&mut self, kind: OpKind, args: &[&str], same_connection: bool) -> bool {
        let start_us = self.now();
        let reply = if same_connection {
            self.client.call_on_this_connection(args).await
        } else {
            self.client.call(args).await
        };
        let result = reply.and_then(|v| parse_value(&kind, &v));
        let end_us = self.now();
        let (outcome, sent) = match result {
            Ok(value) => (Outcome::Ok { value }, true),
            Err(f) => (f.outcome(), f.sent()),
        };
        let ok = outcome.is_ok();
        let counter = match (ok, kind.is_write()) {
            (true, true) => &self.stats.writes_ok,
            (true, false) => &self.stats.reads_ok,
            (false, _) => &self.stats.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.ops.push(Op {
            session: self.id,
            kind,
            start_us,
            end_us,
            outcome,
        });
        if !sent {
            // Could not even open a connection: do not spin on a refused
            // port or a failing handshake; a real client backs off too.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ok
    }
}

/// One of `among`, at random; any of `0..all` when `among` is empty. With
/// one key group `among` is `0..all`, so the draw is the same either way.
fn pick(rng: &mut StdRng, among: &[u32], all: u32) -> u32 {
    if among.is_empty() {
        rng.gen_range(0..all.max(1))
    } else {
        // Drawn as a u32, as `0..all` is: the same bits from the RNG.
        among[rng.gen_range(0..among.len() as u32) as usize]
    }
}

/// Turns a successful reply into the value the history keeps.
fn parse_value(kind: &OpKind, v: &Value) -> Result<Option<u64>, Failure> {
    match (kind, v) {
        (OpKind::Set { .. } | OpKind::Write { .. }, Value::Simple(s)) if s == "OK" => Ok(None),
        (OpKind::Incr { .. }, Value::Integer(n)) => Ok(Some(*n as u64)),
        (OpKind::Read { .. }, Value::Nil) => Ok(None),
        (OpKind::Read { .. }, other) => match other.to_text().and_then(|t| t.parse().ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(Failure::Unexpected(format!("{other:?}"))),
        },
        (_, other) => Err(Failure::Unexpected(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ErrorKind;
    use belay_resp::{parse_value as parse_wire, Limits};

    /// A reply as it comes off the wire.
    fn wire(bytes: &[u8]) -> Value {
        parse_wire(bytes, &Limits::for_replies())
            .expect("valid RESP")
            .expect("a whole value")
            .0
    }

    #[test]
    fn replies_are_understood_in_resp2_and_resp3() {
        let set = OpKind::Set { writer: 0, seq: 1 };
        let incr = OpKind::Incr { counter: 0 };
        let read = OpKind::Read { reg: 0 };
        assert_eq!(parse_value(&set, &wire(b"+OK\r\n")).unwrap(), None);
        assert_eq!(parse_value(&incr, &wire(b":41\r\n")).unwrap(), Some(41));
        assert_eq!(
            parse_value(&read, &wire(b"$2\r\n17\r\n")).unwrap(),
            Some(17)
        );
        // A missing key: RESP2's null bulk and RESP3's null.
        assert_eq!(parse_value(&read, &wire(b"$-1\r\n")).unwrap(), None);
        assert_eq!(parse_value(&read, &wire(b"_\r\n")).unwrap(), None);
        // RESP3 verbatim string.
        assert_eq!(
            parse_value(&read, &wire(b"=6\r\ntxt:17\r\n")).unwrap(),
            Some(17)
        );
        // Types that answer none of these commands are failures, not values.
        for (kind, bytes) in [
            (read, &b"%1\r\n+a\r\n:1\r\n"[..]),
            (read, b"#t\r\n"),
            (incr, b",1.5\r\n"),
            (set, b"_\r\n"),
        ] {
            let f = parse_value(&kind, &wire(bytes)).expect_err("no answer");
            assert_eq!(f.kind(), ErrorKind::Other, "{bytes:?}");
            assert!(f.sent());
        }
    }
}
