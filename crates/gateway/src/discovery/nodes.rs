//! Asking the data nodes themselves, as the gateway's own user: `ROLE` to
//! confirm a master, `INFO replication` for offsets and links, `COMMAND`
//! for the routing table. A node's own word is trusted over what any
//! Sentinel says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use belay_client::{Auth, ClientError, Connection, Info, Role, TlsClient, Value};
use futures::future::join_all;
use tokio::time::Instant;

use super::replication::OffsetHistory;
use crate::backend::NodePool;
use crate::cluster::{own_slots, OwnSlots};
use crate::commands::{CommandTable, Software};
use crate::config::CommandOverride;
use crate::locality::Locality;
use crate::locality::Rtts;
use crate::topology::{OffsetSample, ReplicaNode};

/// Control connections to the data nodes, kept between rounds.
pub(super) struct Nodes {
    conns: HashMap<String, Connection>,
    auth: Option<Auth>,
    /// TLS to the nodes, when they speak it.
    tls: Option<TlsClient>,
    timeout: Duration,
    /// Round trips of the small calls (`ROLE`, `INFO`, `HELLO`), smoothed:
    /// what `read_from = "nearest"` goes by.
    rtts: Rtts,
}

/// A replica's answers in a round.
pub(super) struct ReplicaAnswer {
    pub addr: String,
    pub info: Result<Info, ClientError>,
    /// The zone it reports (`Some(None)`: none set), when asked and answered.
    pub zone: Option<Option<String>>,
}

/// What a replica's `INFO replication` says, judged against the master.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ReplicaState {
    pub offset: i64,
    pub replid: Option<Arc<str>>,
    pub lag: Option<Duration>,
    pub eligible: bool,
}

/// Judges a replica from its `INFO replication`. With a confirmed master a
/// replica must be linked to it, not syncing, and within `max_lag`; with
/// none (a failover in progress) every replica that answers keeps serving
/// reads: there is nothing newer to read anywhere.
///
/// `master_gone`: the master does not answer the gateway (killed, cut
/// off), so its writes are held and nothing newer than its last sample was
/// acknowledged through the gateway. A replica of it whose link is down
/// (it lost the master too) is judged by what it had then: its lag as of
/// the last sample, not a lag that grows while nothing can be written.
pub(super) fn judge_replica(
    info: &Info,
    master: Option<&str>,
    history: &OffsetHistory,
    now: Instant,
    max_lag: Duration,
    master_gone: bool,
) -> ReplicaState {
    let offset = info.get_i64("slave_repl_offset").unwrap_or(0);
    let replid: Option<Arc<str>> = info.get("master_replid").map(Into::into);
    let is_replica =
        info.get("role") == Some("slave") && info.get("master_sync_in_progress") != Some("1");
    let Some(master) = master else {
        return ReplicaState {
            offset,
            replid,
            lag: None,
            eligible: is_replica,
        };
    };
    let linked_to = format!(
        "{}:{}",
        info.get("master_host").unwrap_or(""),
        info.get("master_port").unwrap_or("")
    );
    let link_up = info.get("master_link_status") == Some("up");
    let last_sample = history.last_sample_at().filter(|_| master_gone && !link_up);
    let linked = is_replica && linked_to == master && (link_up || last_sample.is_some());
    // Lag means something only for a replica of this master: one still
    // following another (Sentinel has yet to reconfigure it) has none, so
    // it neither serves reads nor counts for the write guard.
    let lag = if linked {
        history.lag_of(replid.as_deref(), offset, last_sample.unwrap_or(now))
    } else {
        None
    };
    ReplicaState {
        offset,
        replid,
        lag,
        eligible: linked && lag.is_some_and(|l| l <= max_lag),
    }
}

/// A replica as routing sees it after a round: judged (`judge`) when it
/// answered, not eligible when it did not. A `BUSY` answer marks its pool
/// busy (no reads) until it answers normally again.
pub(super) fn replica_node(
    pool: Arc<NodePool>,
    addr: &str,
    result: &Result<Info, ClientError>,
    has_master: bool,
    judge: impl FnOnce(&Info) -> ReplicaState,
) -> ReplicaNode {
    let state = match result {
        Ok(info) => {
            if pool.health().set_busy(false) {
                tracing::info!(replica = %addr, "the replica is no longer busy; it serves reads again");
            }
            Some(judge(info))
        }
        Err(e) => {
            if is_busy(e) && pool.health().set_busy(true) {
                tracing::warn!(replica = %addr, "the replica answers BUSY (a script or function is running): no reads go there until it is done");
            }
            tracing::debug!(replica = %addr, "replica check failed: {}", super::sentinels::reason(e));
            None
        }
    };
    let s = state.unwrap_or(ReplicaState {
        offset: 0,
        replid: None,
        lag: None,
        eligible: false,
    });
    if !s.eligible && has_master && result.is_ok() {
        tracing::debug!(replica = %addr, lag = ?s.lag, "replica not eligible for reads");
    }
    ReplicaNode {
        pool,
        offset: s.offset,
        replid: s.replid,
        lag: s.lag,
        eligible: s.eligible,
        locality: Locality::default(),
    }
}

impl Nodes {
    /// Control connections with the nodes' credentials, TLS and control
    /// timeout of `cfg`.
    pub fn for_config(cfg: &crate::config::GatewayConfig) -> Nodes {
        Nodes::new(
            cfg.node_auth(),
            cfg.backend_tls_client.clone(),
            cfg.control_timeout(),
        )
    }

    pub fn new(auth: Option<Auth>, tls: Option<TlsClient>, timeout: Duration) -> Nodes {
        Nodes {
            conns: HashMap::new(),
            auth,
            tls,
            timeout,
            rtts: Rtts::default(),
        }
    }

    /// The smoothed round-trip time to `addr`, once measured.
    pub fn rtt(&self, addr: &str) -> Option<Duration> {
        self.rtts.get(addr)
    }

    /// A command on `addr`'s kept connection (see [`call_on`]).
    async fn call(
        &mut self,
        addr: &str,
        timeout: Duration,
        args: &[&str],
    ) -> Result<Value, ClientError> {
        let (conn, r, _) = call_on(
            addr,
            self.conns.remove(addr),
            self.auth.as_ref(),
            self.tls.as_ref(),
            timeout,
            args,
        )
        .await;
        if let Some(conn) = conn {
            self.conns.insert(addr.to_string(), conn);
        }
        r
    }

    /// [`Nodes::call`] for a small, fast command, whose round trip is a
    /// sample of the node's RTT.
    async fn call_timed(&mut self, addr: &str, args: &[&str]) -> Result<Value, ClientError> {
        let (conn, r, rtt) = call_on(
            addr,
            self.conns.remove(addr),
            self.auth.as_ref(),
            self.tls.as_ref(),
            self.timeout,
            args,
        )
        .await;
        if let Some(conn) = conn {
            self.conns.insert(addr.to_string(), conn);
        }
        if let Some(rtt) = rtt {
            self.rtts.record(addr, rtt);
        }
        r
    }

    /// `ROLE`, as the node says it.
    pub async fn role(&mut self, addr: &str) -> Result<Role, ClientError> {
        let v = self.call_timed(addr, &["ROLE"]).await?;
        Role::from_value(&v).ok_or_else(|| unexpected(addr, "ROLE", &v))
    }

    /// [`Nodes::role`] within `timeout` (a node that did not answer last
    /// time is not waited for as long).
    pub async fn role_within(
        &mut self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Role, ClientError> {
        let v = self.call(addr, timeout, &["ROLE"]).await?;
        Role::from_value(&v).ok_or_else(|| unexpected(addr, "ROLE", &v))
    }

    /// The zone the node reports of itself (Valkey 8.1+'s
    /// `availability-zone`, in its `HELLO` reply); `None` when it has none
    /// set or is a server without the setting (Redis).
    pub async fn zone(&mut self, addr: &str) -> Result<Option<String>, ClientError> {
        let v = self.call_timed(addr, &["HELLO"]).await?;
        Ok(zone_in_hello(&v))
    }

    async fn info(&mut self, addr: &str, section: &str) -> Result<Info, ClientError> {
        let v = self.call_timed(addr, &["INFO", section]).await?;
        to_info(addr, &v)
    }

    /// The master's position now, from its `INFO replication`; an error if
    /// it does not answer, or answers as something other than a master.
    pub async fn master_sample(&mut self, addr: &str) -> Result<OffsetSample, ClientError> {
        let taken_at = Instant::now();
        let info = self.info(addr, "replication").await?;
        if info.get("role") != Some("master") {
            return Err(ClientError::Unexpected {
                addr: addr.to_string(),
                op: "INFO replication".into(),
                detail: format!("the node reports role {}", info.get("role").unwrap_or("?")),
            });
        }
        Ok(OffsetSample {
            replid: info.get("master_replid").unwrap_or("").into(),
            offset: info.get_i64("master_repl_offset").unwrap_or(0),
            taken_at,
        })
    }

    /// What a cluster master says of its own slots (`CLUSTER NODES`):
    /// those it serves and those it is moving away.
    pub async fn own_slots(&mut self, addr: &str) -> Result<OwnSlots, ClientError> {
        let v = self.call(addr, self.timeout, &["CLUSTER", "NODES"]).await?;
        v.to_text()
            .as_deref()
            .and_then(own_slots)
            .ok_or_else(|| unexpected(addr, "CLUSTER NODES", &v))
    }

    /// `INFO replication` of every address (and, with `ask_zone`, `HELLO`
    /// for the zone it reports), concurrently, each within `timeout`: a
    /// paused replica must not hold up the round.
    pub async fn replicas_info(
        &mut self,
        addrs: &[String],
        timeout: Duration,
        ask_zone: bool,
    ) -> Vec<ReplicaAnswer> {
        let (auth, tls) = (self.auth.as_ref(), self.tls.as_ref());
        let jobs = addrs.iter().map(|addr| {
            let conn = self.conns.remove(addr);
            async move {
                let (conn, r, rtt) =
                    call_on(addr, conn, auth, tls, timeout, &["INFO", "replication"]).await;
                let info = r.and_then(|v| to_info(addr, &v));
                let (conn, zone) = match conn {
                    Some(conn) if ask_zone && info.is_ok() => {
                        let (conn, r, _) =
                            call_on(addr, Some(conn), auth, tls, timeout, &["HELLO"]).await;
                        (conn, r.ok().map(|v| zone_in_hello(&v)))
                    }
                    conn => (conn, None),
                };
                (addr.clone(), conn, info, zone, rtt)
            }
        });
        let mut out = Vec::new();
        for (addr, conn, info, zone, rtt) in join_all(jobs).await {
            if let Some(conn) = conn {
                self.conns.insert(addr.clone(), conn);
            }
            if let Some(rtt) = rtt {
                self.rtts.record(&addr, rtt);
            }
            out.push(ReplicaAnswer { addr, info, zone });
        }
        out
    }

    /// The master's command table, re-read when its version changed.
    pub async fn command_table(
        &mut self,
        master: &str,
        current: &CommandTable,
        overrides: &HashMap<String, CommandOverride>,
    ) -> Result<Option<CommandTable>, ClientError> {
        let info = self.info(master, "server").await?;
        let software = Software::from_info(&info);
        if !current.is_empty() && current.software == software && current.master == master {
            return Ok(None);
        }
        let reply = self.call(master, self.timeout * 5, &["COMMAND"]).await?;
        let mut table = CommandTable::from_command_reply(&reply, software, overrides.clone());
        table.master = master.to_string();
        // Immutable in Redis: read once per master. A gateway user that
        // may not read it gets DEBUG refused.
        table.debug_from_anywhere = self
            .call(
                master,
                self.timeout,
                &["CONFIG", "GET", "enable-debug-command"],
            )
            .await
            .ok()
            .and_then(|v| match v.as_array() {
                // No such setting: before Redis 7, DEBUG ran for anyone.
                Some([]) => Some(true),
                Some(a) => a.get(1).and_then(|x| x.as_str()).map(|s| s == "yes"),
                None => None,
            })
            .unwrap_or(false);
        Ok(Some(table))
    }

    /// `args` on every address, concurrently, each within `timeout`.
    pub async fn ask_all(
        &mut self,
        addrs: &[String],
        timeout: Duration,
        args: &[&str],
    ) -> Vec<(String, Result<Value, ClientError>)> {
        let (auth, tls) = (self.auth.as_ref(), self.tls.as_ref());
        let jobs = addrs.iter().map(|addr| {
            let conn = self.conns.remove(addr);
            async move {
                let (conn, r, _) = call_on(addr, conn, auth, tls, timeout, args).await;
                (addr.clone(), conn, r)
            }
        });
        let mut out = Vec::new();
        for (addr, conn, r) in join_all(jobs).await {
            if let Some(conn) = conn {
                self.conns.insert(addr.clone(), conn);
            }
            out.push((addr, r));
        }
        out
    }

    /// Forgets a node's connection and round-trip time (it left the topology).
    pub fn forget(&mut self, addr: &str) {
        self.conns.remove(addr);
        self.rtts.forget(addr);
    }
}

/// Runs `args` on `conn` (or a fresh connection), once more on a fresh one
/// if the kept connection had been dropped (Sentinel kills client
/// connections of nodes it reconfigures). An error reply is an error.
/// Returns the connection worth keeping, if any, and the round trip of the
/// command that was answered (connecting and logging in not counted).
async fn call_on(
    addr: &str,
    conn: Option<Connection>,
    auth: Option<&Auth>,
    tls: Option<&TlsClient>,
    timeout: Duration,
    args: &[&str],
) -> (
    Option<Connection>,
    Result<Value, ClientError>,
    Option<Duration>,
) {
    if let Some(mut conn) = conn {
        conn.set_timeout(timeout);
        let sent = Instant::now();
        match conn.call_ok(args).await {
            Ok(v) => return (Some(conn), Ok(v), Some(sent.elapsed())),
            Err(e) if was_dropped(&e) => {}
            // Answered with an error (BUSY, NOPERM): alive, keep it.
            Err(e @ ClientError::Reply { .. }) => return (Some(conn), Err(e), None),
            Err(e) => return (None, Err(e), None),
        }
    }
    let mut conn = match Connection::connect_with(addr, tls, auth, timeout).await {
        Ok(c) => c,
        Err(e) => return (None, Err(e), None),
    };
    let sent = Instant::now();
    match conn.call_ok(args).await {
        Ok(v) => (Some(conn), Ok(v), Some(sent.elapsed())),
        Err(e @ ClientError::Reply { .. }) => (Some(conn), Err(e), None),
        Err(e) => (None, Err(e), None),
    }
}

/// `availability_zone` in a `HELLO` reply (a RESP3 map or a RESP2 flat
/// list); an empty one is none.
fn zone_in_hello(v: &Value) -> Option<String> {
    v.to_pairs()?
        .into_iter()
        .find(|(k, _)| k == "availability_zone")
        .map(|(_, zone)| zone)
        .filter(|zone| !zone.is_empty())
}

fn to_info(addr: &str, v: &Value) -> Result<Info, ClientError> {
    match v.to_text() {
        Some(text) => Ok(Info::parse(&text)),
        None => Err(unexpected(addr, "INFO", v)),
    }
}

fn unexpected(addr: &str, op: &str, v: &Value) -> ClientError {
    ClientError::Unexpected {
        addr: addr.to_string(),
        op: op.to_string(),
        detail: format!("{v:?}"),
    }
}

/// The connection was closed or reset under us (not a timeout, not a refusal).
fn was_dropped(e: &ClientError) -> bool {
    matches!(e, ClientError::Closed { .. } | ClientError::Io { .. })
}

/// True for a node's `BUSY` refusal: a script or function is running.
pub(super) fn is_busy(e: &ClientError) -> bool {
    e.is_busy()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> Info {
        Info::parse(&text.replace(' ', "\r\n"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_serves_reads_only_linked_to_this_master_and_within_the_lag() {
        let mut history = OffsetHistory::default();
        history.record(&OffsetSample {
            replid: "r1".into(),
            offset: 100,
            taken_at: Instant::now(),
        });
        let max = Duration::from_secs(1);
        let good = info("role:slave master_host:127.0.0.1 master_port:6379 master_link_status:up slave_repl_offset:100 master_replid:r1");
        let s = judge_replica(
            &good,
            Some("127.0.0.1:6379"),
            &history,
            Instant::now(),
            max,
            false,
        );
        assert!(s.eligible);
        assert_eq!(s.lag, Some(Duration::ZERO));
        assert_eq!(s.replid.as_deref(), Some("r1"));
        // Following another master (not yet reconfigured by Sentinel).
        let s = judge_replica(
            &good,
            Some("127.0.0.1:6380"),
            &history,
            Instant::now(),
            max,
            false,
        );
        assert!(!s.eligible);
        assert_eq!(s.lag, None);
        // Link down, or syncing.
        let down = info("role:slave master_host:127.0.0.1 master_port:6379 master_link_status:down slave_repl_offset:100 master_replid:r1");
        assert!(
            !judge_replica(
                &down,
                Some("127.0.0.1:6379"),
                &history,
                Instant::now(),
                max,
                false
            )
            .eligible
        );
        let syncing = info("role:slave master_host:127.0.0.1 master_port:6379 master_link_status:up master_sync_in_progress:1 slave_repl_offset:100 master_replid:r1");
        assert!(
            !judge_replica(
                &syncing,
                Some("127.0.0.1:6379"),
                &history,
                Instant::now(),
                max,
                false
            )
            .eligible
        );
        // Too far behind.
        history.record(&OffsetSample {
            replid: "r1".into(),
            offset: 200,
            taken_at: Instant::now(),
        });
        tokio::time::advance(Duration::from_millis(1500)).await;
        history.record(&OffsetSample {
            replid: "r1".into(),
            offset: 300,
            taken_at: Instant::now(),
        });
        let behind = info("role:slave master_host:127.0.0.1 master_port:6379 master_link_status:up slave_repl_offset:200 master_replid:r1");
        let s = judge_replica(
            &behind,
            Some("127.0.0.1:6379"),
            &history,
            Instant::now(),
            max,
            false,
        );
        assert_eq!(s.lag, Some(Duration::from_millis(1500)));
        assert!(!s.eligible);
        // With no master, any replica that answers serves reads.
        assert!(judge_replica(&behind, None, &history, Instant::now(), max, false).eligible);

        // The master is gone (killed: its replicas' links drop at once).
        // A replica that had its last sample keeps serving reads however
        // long the failover takes: nothing newer was acknowledged. One
        // that was behind then is judged by how far behind it was.
        tokio::time::advance(Duration::from_secs(5)).await;
        let gone_current = info("role:slave master_host:127.0.0.1 master_port:6379 master_link_status:down slave_repl_offset:300 master_replid:r1");
        let s = judge_replica(
            &gone_current,
            Some("127.0.0.1:6379"),
            &history,
            Instant::now(),
            max,
            true,
        );
        assert!(s.eligible, "{s:?}");
        assert_eq!(s.lag, Some(Duration::ZERO));
        let gone_behind = info("role:slave master_host:127.0.0.1 master_port:6379 master_link_status:down slave_repl_offset:200 master_replid:r1");
        let s = judge_replica(
            &gone_behind,
            Some("127.0.0.1:6379"),
            &history,
            Instant::now(),
            max,
            true,
        );
        assert!(!s.eligible, "{s:?}");
        assert_eq!(s.lag, Some(Duration::from_millis(1500)));
        // While the master answers, a link that is down is not trusted.
        assert!(
            !judge_replica(
                &gone_current,
                Some("127.0.0.1:6379"),
                &history,
                Instant::now(),
                max,
                false
            )
            .eligible
        );
    }
}
