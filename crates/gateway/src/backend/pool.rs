//! Connections to one node: a few shared (multiplexed) ones per context for
//! the sessions of that context, and connections of a session's own on
//! demand (transactions, blocking commands, `WAIT`, subscriptions).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use belay_client::{ClientError, Connection};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use super::confirm::Confirm;
use super::conn::{BackendConn, ReplyResult};
use super::health::NodeHealth;
use super::setup::{set_up, ConnectSpec};
use crate::budget::OutputBudget;
use crate::context::Context;
use crate::error::LostWhy;

/// Why the pool could not hand out a connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connections to {addr} are closed (the node was demoted or left the topology)")]
    Closed { addr: String },
    #[error(transparent)]
    Connect(#[from] ClientError),
    #[error("not reconnecting to {addr} for {wait:?} after a failure")]
    Backoff { addr: String, wait: Duration },
}

/// The shared connections of one context.
struct Lane {
    conns: Box<[ArcSwapOption<BackendConn>]>,
    /// Serializes reconnects of each shared slot.
    connecting: Box<[tokio::sync::Mutex<()>]>,
    /// When it was last used, in seconds since the pool was made: lanes of
    /// contexts nobody uses any more are closed.
    last_used: AtomicU64,
}

impl Lane {
    fn new(n: usize) -> Lane {
        Lane {
            conns: (0..n).map(|_| ArcSwapOption::empty()).collect(),
            connecting: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
            last_used: AtomicU64::new(0),
        }
    }

    fn slot(&self, hint: usize) -> usize {
        hint % self.conns.len()
    }

    fn close(&self) {
        for c in self.conns.iter() {
            if let Some(conn) = c.swap(None) {
                conn.close(LostWhy::NodeReplaced);
            }
        }
    }

    fn outstanding(&self) -> usize {
        self.conns
            .iter()
            .map(|c| c.load().as_ref().map_or(0, |c| c.outstanding()))
            .sum()
    }
}

/// Lanes unused this long (and owing nothing) are closed.
const LANE_IDLE: Duration = Duration::from_secs(60);

/// The connections belay keeps to one node in one role.
pub struct NodePool {
    pub addr: String,
    /// Base settings for every connection of this pool.
    spec: ConnectSpec,
    /// The default context's lane, reached without a lookup.
    default_lane: Lane,
    /// Other contexts' lanes.
    lanes: Mutex<FxHashMap<Context, Arc<Lane>>>,
    shared_per_lane: usize,
    /// Caps concurrent connection attempts to this node, so a thousand
    /// clients arriving at once after a failover do not open a thousand
    /// sockets at the same instant.
    connect_gate: Semaphore,
    closed: AtomicBool,
    /// Its connections were closed (after `closed`, at once or once a
    /// retired pool's commands were answered).
    shut: AtomicBool,
    /// Commands in flight on the shared connections (each adds its own).
    load: Arc<AtomicUsize>,
    /// When the last connect failed, and how long to wait before the next.
    backoff: Mutex<Option<(Instant, Duration)>>,
    born: Instant,
}

const MAX_CONCURRENT_CONNECTS: usize = 16;

impl std::fmt::Debug for NodePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePool")
            .field("addr", &self.addr)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl NodePool {
    /// A pool for unit tests: nothing listens there, no watchdog.
    #[cfg(test)]
    pub(crate) fn for_test(port: u16, shared_per_lane: usize) -> Arc<NodePool> {
        Arc::new(NodePool::new(
            ConnectSpec {
                addr: format!("127.0.0.1:{port}"),
                gateway_auth: Default::default(),
                require_master: false,
                connect_timeout: Duration::from_secs(1),
                silence: None,
                health: Default::default(),
                load: None,
                cluster_replica: false,
            },
            shared_per_lane,
        ))
    }

    pub fn new(spec: ConnectSpec, shared_per_lane: usize) -> NodePool {
        let shared_per_lane = shared_per_lane.max(1);
        NodePool {
            addr: spec.addr.clone(),
            spec,
            default_lane: Lane::new(shared_per_lane),
            lanes: Mutex::new(FxHashMap::default()),
            shared_per_lane,
            connect_gate: Semaphore::new(MAX_CONCURRENT_CONNECTS),
            closed: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            load: Arc::new(AtomicUsize::new(0)),
            backoff: Mutex::new(None),
            born: Instant::now(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// What the node's connections have noticed (silence, `BUSY`).
    pub fn health(&self) -> &NodeHealth {
        &self.spec.health
    }

    /// May take new commands: open, answering, not busy with a script.
    pub fn is_usable(&self) -> bool {
        !self.is_closed() && self.spec.health.is_usable()
    }

    /// Closes every connection now and refuses new ones: the node was
    /// demoted, replaced or reported down, and commands in flight fail as
    /// lost for that reason. Sessions' own connections check `is_closed`
    /// before each use.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.shut.store(true, Ordering::Release);
        self.default_lane.close();
        for lane in self.lanes.lock().unwrap().values() {
            lane.close();
        }
    }

    /// Takes no new commands but lets those in flight be answered, for at
    /// most `grace`, then closes: a master replaced while it still answers
    /// (a switchover, a manual failover) refuses what waited there
    /// (`READONLY`: not run, so sent again to the new master) instead of
    /// leaving it uncertain. A write it answers from now on is reported as
    /// uncertain (see `NodeHealth::is_retired`): it may be lost with it.
    pub fn retire(self: &Arc<Self>, grace: Duration) {
        self.spec.health.set_retired();
        self.closed.store(true, Ordering::Release);
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let until = Instant::now() + grace;
            loop {
                let Some(p) = pool.upgrade() else { return };
                if p.outstanding() == 0 || Instant::now() >= until || p.is_shut() {
                    p.close();
                    return;
                }
                drop(p);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    /// Its connections are closed: what was sent there will not be answered
    /// (or was already).
    pub fn is_shut(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// Requests in flight on the shared connections, for least-outstanding choice.
    pub fn outstanding(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// Pretends `n` commands are in flight (routing tests).
    #[cfg(test)]
    pub fn add_load(&self, n: usize) {
        self.load.fetch_add(n, Ordering::Relaxed);
    }

    /// Open shared connections, over every lane (for tests and status).
    pub fn shared_connections(&self) -> usize {
        let count = |lane: &Lane| lane.conns.iter().filter(|c| c.load().is_some()).count();
        count(&self.default_lane)
            + self
                .lanes
                .lock()
                .unwrap()
                .values()
                .map(|l| count(l))
                .sum::<usize>()
    }

    fn lane(&self, ctx: &Context) -> Option<Arc<Lane>> {
        let lanes = self.lanes.lock().unwrap();
        let lane = lanes.get(ctx)?;
        lane.last_used
            .store(self.born.elapsed().as_secs(), Ordering::Relaxed);
        Some(lane.clone())
    }

    /// Sends `count` commands (encoded back to back in `raw`) on the shared
    /// connection number `hint % n` of `ctx` if it is up; gives `raw` back
    /// if it is not (then [`NodePool::connect_shared`] connects). Takes no
    /// lock and clones nothing for the default context.
    pub fn try_send_shared(
        &self,
        ctx: &Context,
        hint: usize,
        raw: Bytes,
        count: u32,
        budget: Option<Arc<OutputBudget>>,
        confirm: Option<Confirm>,
    ) -> Result<oneshot::Receiver<ReplyResult>, Bytes> {
        let send = |lane: &Lane, raw: Bytes| {
            let guard = lane.conns[lane.slot(hint)].load();
            match guard.as_ref() {
                Some(conn) if conn.is_alive() => {
                    Ok(conn.send_confirmed(raw, count, false, budget, confirm))
                }
                _ => Err(raw),
            }
        };
        if ctx.is_default() {
            return send(&self.default_lane, raw);
        }
        match self.lane(ctx) {
            Some(lane) => send(&lane, raw),
            None => Err(raw),
        }
    }

    /// Which shared connection of `ctx` a session with nothing in flight
    /// on this pool uses, with durable writes on. Their `WAIT`s hold a
    /// connection until the replicas answer, so confirmed writes all go to
    /// the first connection (there one `WAIT` covers the most writes), and
    /// other commands to one with no `WAIT` on the wire, starting at `hint`
    /// — one that is not connected yet if need be (the session connects it
    /// first) — and to `hint` when every one has a `WAIT` in flight.
    pub fn choose_shared(&self, ctx: &Context, hint: usize, confirmed: bool) -> usize {
        let choose = |lane: &Lane| {
            let n = lane.conns.len();
            if confirmed || n == 1 {
                return 0;
            }
            let state = |i: usize| {
                lane.conns[i]
                    .load()
                    .as_ref()
                    .map(|c| c.is_alive() && !c.is_waiting())
            };
            let order = (0..n).map(|k| (hint + k) % n);
            order
                .clone()
                .find(|&i| state(i) == Some(true))
                .or_else(|| order.clone().find(|&i| state(i).is_none() && i != 0))
                .unwrap_or(hint % n)
        };
        if ctx.is_default() {
            choose(&self.default_lane)
        } else {
            self.lane(ctx).map_or(hint, |l| choose(&l))
        }
    }

    /// A shared connection of the default context or of `ctx` owes
    /// replies and has been silent for `at_least`: the node is busy with
    /// a long command, or frozen.
    pub fn owes_in_silence(&self, ctx: &Context, at_least: Duration) -> bool {
        let quiet = |lane: &Lane| {
            lane.conns.iter().any(|c| {
                c.load()
                    .as_ref()
                    .is_some_and(|c| c.owes_in_silence(at_least))
            })
        };
        quiet(&self.default_lane)
            || (!ctx.is_default() && self.lane(ctx).is_some_and(|l| quiet(&l)))
    }

    /// Which shared connection of `ctx` a session with nothing in flight on
    /// this pool uses: `hint`'s, unless that one owes replies in silence
    /// for `stuck` (another session's long script is running there: what
    /// is sent behind it waits for it, where Redis would answer at once)
    /// and another one does not (or is not connected yet: the session then
    /// connects it first).
    pub fn unstuck_shared(&self, ctx: &Context, hint: usize, stuck: Duration) -> usize {
        let choose = |lane: &Lane| {
            let n = lane.conns.len();
            let ok = |i: usize| {
                lane.conns[i]
                    .load()
                    .as_ref()
                    .is_some_and(|c| c.is_alive() && !c.owes_in_silence(stuck))
            };
            let first = lane.slot(hint);
            if n == 1 || ok(first) {
                return first;
            }
            let others = (1..n).map(|k| (first + k) % n);
            let unconnected =
                |i: usize| lane.conns[i].load().as_ref().is_none_or(|c| !c.is_alive());
            others
                .clone()
                .find(|&i| ok(i))
                // One not connected yet: the session connects it first.
                .or_else(|| others.clone().find(|&i| unconnected(i)))
                .unwrap_or(first)
        };
        if ctx.is_default() {
            choose(&self.default_lane)
        } else {
            self.lane(ctx).map_or(hint, |l| choose(&l))
        }
    }

    /// True when shared connection number `hint % n` of `ctx` is up.
    pub fn shared_is_up(&self, ctx: &Context, hint: usize) -> bool {
        let up = |lane: &Lane| {
            lane.conns[lane.slot(hint)]
                .load()
                .as_ref()
                .is_some_and(|c| c.is_alive())
        };
        if ctx.is_default() {
            up(&self.default_lane)
        } else {
            self.lane(ctx).is_some_and(|l| up(&l))
        }
    }

    /// Connects shared connection number `hint % n` of `ctx`, if it is down.
    pub async fn connect_shared(&self, ctx: &Context, hint: usize) -> Result<(), PoolError> {
        let lane_arc;
        let lane: &Lane = if ctx.is_default() {
            &self.default_lane
        } else {
            lane_arc = self.lane_or_new(ctx);
            &lane_arc
        };
        let i = lane.slot(hint);
        if lane.conns[i].load().as_ref().is_some_and(|c| c.is_alive()) {
            return Ok(());
        }
        self.connect_slot(lane, i, ctx).await?;
        // A lane's other connections are made with its first: later, a
        // node busy with a script would refuse their `SELECT`, just when a
        // session stuck behind that script on one needs another.
        for j in (0..lane.conns.len()).filter(|&j| j != i) {
            if lane.conns[j].load().is_none() {
                let _ = self.connect_slot(lane, j, ctx).await;
            }
        }
        Ok(())
    }

    /// Connects shared connection `i` of `lane` (for `ctx`) unless another
    /// session just did.
    async fn connect_slot(&self, lane: &Lane, i: usize, ctx: &Context) -> Result<(), PoolError> {
        self.check_open()?;
        let _guard = lane.connecting[i].lock().await;
        if lane.conns[i].load().as_ref().is_some_and(|c| c.is_alive()) {
            return Ok(());
        }
        let spec = ConnectSpec {
            load: Some(self.load.clone()),
            ..self.spec.clone()
        };
        let conn = Arc::new(self.connect(&spec, ctx, &[]).await?);
        if self.is_closed() {
            conn.close(LostWhy::NodeReplaced);
            return Err(PoolError::Closed {
                addr: self.addr.clone(),
            });
        }
        lane.conns[i].store(Some(conn));
        Ok(())
    }

    /// The lane of `ctx`, made if new; lanes nobody has used for a while
    /// (and that owe nothing) are closed then.
    fn lane_or_new(&self, ctx: &Context) -> Arc<Lane> {
        let now = self.born.elapsed().as_secs();
        let mut lanes = self.lanes.lock().unwrap();
        if let Some(lane) = lanes.get(ctx) {
            lane.last_used.store(now, Ordering::Relaxed);
            return lane.clone();
        }
        lanes.retain(|_, lane| {
            let idle = now.saturating_sub(lane.last_used.load(Ordering::Relaxed));
            let keep = idle < LANE_IDLE.as_secs() || lane.outstanding() > 0;
            if !keep {
                lane.close();
            }
            keep
        });
        let lane = Arc::new(Lane::new(self.shared_per_lane));
        lane.last_used.store(now, Ordering::Relaxed);
        lanes.insert(ctx.clone(), lane.clone());
        lane
    }

    /// A new connection for one session, set up for `ctx` and then with
    /// `extra` (e.g. `CLIENT SETNAME`). `blocking` connections have no
    /// silence watchdog: BLPOP may legitimately wait forever.
    pub async fn dedicated(
        &self,
        ctx: &Context,
        extra: &[Vec<Bytes>],
        blocking: bool,
    ) -> Result<BackendConn, PoolError> {
        self.check_open()?;
        let mut spec = self.spec.clone();
        if blocking {
            spec.silence = None;
        }
        self.connect(&spec, ctx, extra).await
    }

    /// A control connection set up for `ctx` (no `ROLE` check, no tasks):
    /// for commands the session sends and reads itself (`SCRIPT KILL`,
    /// commands for every node), or a subscription it pipes.
    pub async fn control_connection(&self, ctx: &Context) -> Result<Connection, PoolError> {
        if self.is_closed() {
            return Err(PoolError::Closed {
                addr: self.addr.clone(),
            });
        }
        let mut spec = self.spec.clone();
        spec.require_master = false;
        let _permit = self
            .connect_gate
            .acquire()
            .await
            .map_err(|_| PoolError::Closed {
                addr: self.addr.clone(),
            })?;
        Ok(set_up(&spec, ctx, &[]).await?)
    }

    fn check_open(&self) -> Result<(), PoolError> {
        if self.is_closed() {
            return Err(PoolError::Closed {
                addr: self.addr.clone(),
            });
        }
        if let Some((at, wait)) = *self.backoff.lock().unwrap() {
            let elapsed = at.elapsed();
            if elapsed < wait {
                return Err(PoolError::Backoff {
                    addr: self.addr.clone(),
                    wait: wait - elapsed,
                });
            }
        }
        Ok(())
    }

    async fn connect(
        &self,
        spec: &ConnectSpec,
        ctx: &Context,
        extra: &[Vec<Bytes>],
    ) -> Result<BackendConn, PoolError> {
        let _permit = self
            .connect_gate
            .acquire()
            .await
            .map_err(|_| PoolError::Closed {
                addr: self.addr.clone(),
            })?;
        match BackendConn::open(spec, ctx, extra).await {
            Ok(conn) => {
                *self.backoff.lock().unwrap() = None;
                Ok(conn)
            }
            Err(e) if e.is_reply() => {
                // The node answered (a wrong password, an ACL refusal): it is
                // alive, so this is no reason to back off from it.
                Err(PoolError::Connect(e))
            }
            Err(e) => {
                let mut backoff = self.backoff.lock().unwrap();
                let next = match *backoff {
                    Some((_, prev)) => (prev * 2).min(Duration::from_secs(2)),
                    None => Duration::from_millis(50),
                };
                // Jitter spreads the reconnects of many gateways and pools.
                let jitter = Duration::from_millis(
                    rand::random::<u64>() % (next.as_millis() as u64 / 2 + 1),
                );
                *backoff = Some((Instant::now(), next + jitter));
                Err(PoolError::Connect(e))
            }
        }
    }
}

impl Drop for NodePool {
    fn drop(&mut self) {
        self.default_lane.close();
        for lane in self.lanes.get_mut().unwrap().values() {
            lane.close();
        }
    }
}
