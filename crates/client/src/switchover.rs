//! A planned change of master that clients do not notice: writes are paused
//! on the master for every client (`CLIENT PAUSE … WRITE`, so it holds for
//! every gateway and every direct client), the replica to promote catches
//! up to the master's last byte, Sentinel promotes it (`SENTINEL
//! FAILOVER`), the old master is made its replica at once (`REPLICAOF`, as
//! Sentinel would some seconds later) and the pause is lifted: what was
//! waiting there is refused (`READONLY`, never run) and a gateway sends it
//! to the new master.
//!
//! The failover starts when the Sentinel's next read of the replica's
//! `INFO` will come just after the promotion, which is when Sentinel names
//! the new master (see [`Switchover::align_with_info`]): about 0.4 s of
//! paused writes instead of about 1.1 s.
//!
//! Sentinel stays in charge of the promotion (its epoch, its configuration,
//! the other replicas): belay only makes sure nothing is written in
//! between. To promote a given replica, the others' `replica-priority` is
//! set to 0 (never promoted) until it is done, after waiting for Sentinel
//! to see it (Sentinel reads priorities from each replica's `INFO`), and
//! restored afterwards, also on failure.

use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::sentinel::{agreed_master, Entry, SentinelAuth};
use crate::{Auth, ClientError, Connection, Role, Value};

/// What to switch, and how.
#[derive(Debug, Clone)]
pub struct Switchover {
    pub master_name: String,
    pub sentinels: Vec<String>,
    pub sentinel_auth: SentinelAuth,
    /// Credentials for the data nodes.
    pub node_auth: Option<Auth>,
    /// TLS to the nodes and Sentinels, when they speak it.
    pub tls: Option<crate::TlsClient>,
    /// The replica to promote (`host:port`); `None`: Sentinel's choice
    /// among the replicas, which all catch up first.
    pub to: Option<String>,
    /// The longest writes may stay paused on the old master (`CLIENT
    /// PAUSE`'s own timeout): if this process dies half-way, writes resume
    /// by themselves after this.
    pub max_pause: Duration,
    /// Deadline of each command.
    pub timeout: Duration,
}

impl Switchover {
    pub fn new(master_name: &str, sentinels: Vec<String>) -> Switchover {
        Switchover {
            master_name: master_name.to_string(),
            sentinels,
            sentinel_auth: SentinelAuth::None,
            node_auth: None,
            tls: None,
            to: None,
            max_pause: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// What a switchover did, and how long writes were paused.
#[derive(Debug, Clone)]
pub struct SwitchoverReport {
    pub old_master: String,
    pub new_master: String,
    /// From `CLIENT PAUSE` on the old master to a majority of the Sentinels
    /// naming the new one.
    pub writes_paused: Duration,
    /// The old master reported itself a replica of the new one before the
    /// pause was lifted (otherwise what waited there ran on it).
    pub old_master_demoted: bool,
    /// Each step, from the start.
    pub steps: Vec<(Duration, String)>,
}

#[derive(Debug, Error)]
pub enum SwitchoverError {
    #[error("the Sentinels do not agree on a master for {name:?}: {why}")]
    NoMaster { name: String, why: String },
    #[error("{to} is not a healthy replica of {master} (healthy replicas: {healthy})")]
    NotAReplica {
        to: String,
        master: String,
        healthy: String,
    },
    #[error("{master} has no healthy replica to promote")]
    NoReplica { master: String },
    #[error("Sentinel {sentinel} did not see the new replica priorities within {waited:?}; nothing was paused")]
    PrioritiesNotSeen { sentinel: String, waited: Duration },
    #[error("{replica} did not catch up with the master within {waited:?} ({behind} bytes behind); writes were resumed, nothing changed")]
    NotCaughtUp {
        replica: String,
        behind: i64,
        waited: Duration,
    },
    #[error("Sentinel {sentinel} refused SENTINEL FAILOVER: {message}; writes were resumed, nothing changed")]
    Refused { sentinel: String, message: String },
    #[error("the Sentinels did not name a new master within {waited:?}; writes were resumed on {master} (Sentinel may still finish the failover)")]
    NotSwitched { master: String, waited: Duration },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The steps so far, each told as it happens.
struct Steps<'a> {
    started: Instant,
    done: Vec<(Duration, String)>,
    tell: &'a (dyn Fn(&str) + Sync),
}

impl Steps<'_> {
    fn note(&mut self, s: String) {
        (self.tell)(&s);
        self.done.push((self.started.elapsed(), s));
    }
}

/// A replica's `replica-priority` before the switchover changed it.
struct Priority {
    addr: String,
    was: String,
}

impl Switchover {
    /// Runs the switchover; `step` is told each step as it happens.
    pub async fn run(
        &self,
        step: &(dyn Fn(&str) + Sync),
    ) -> Result<SwitchoverReport, SwitchoverError> {
        let mut steps = Steps {
            started: Instant::now(),
            done: Vec::new(),
            tell: step,
        };

        // Who is master, and which replicas are healthy, per the Sentinels.
        let (mut sentinel, sentinel_addr, old) = self.agreed_master().await?;
        let replicas: Vec<String> = sentinel
            .sentinel_replicas(&self.master_name)
            .await?
            .iter()
            .filter(|r| healthy(r))
            .filter_map(Entry::addr)
            .collect();
        if replicas.is_empty() {
            return Err(SwitchoverError::NoReplica { master: old });
        }
        if let Some(to) = &self.to {
            if !replicas.contains(to) {
                return Err(SwitchoverError::NotAReplica {
                    to: to.clone(),
                    master: old,
                    healthy: replicas.join(", "),
                });
            }
        }
        steps.note(format!(
            "master {old}; replicas {}; promoting {}",
            replicas.join(", "),
            self.to.as_deref().unwrap_or("Sentinel's choice")
        ));

        // Steer Sentinel's choice, and wait until it has seen it.
        let mut changed = Vec::new();
        let steered = match &self.to {
            Some(to) => {
                self.steer(to, &replicas, &mut changed).await?;
                self.await_priorities(&mut sentinel, &sentinel_addr, to, &replicas)
                    .await
            }
            None => Ok(()),
        };
        if let Err(e) = steered {
            self.restore(&changed).await;
            return Err(e);
        }
        if !changed.is_empty() {
            steps.note(format!(
                "replica-priority 0 on {} until the switch is done",
                changed
                    .iter()
                    .map(|p| p.addr.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }

        let result = self
            .switch(&mut sentinel, &sentinel_addr, &old, &replicas, &mut steps)
            .await;
        self.restore(&changed).await;
        if !changed.is_empty() {
            steps.note("replica priorities restored".into());
        }
        let (new, writes_paused, old_master_demoted) = result?;
        Ok(SwitchoverReport {
            old_master: old,
            new_master: new,
            writes_paused,
            old_master_demoted,
            steps: steps.done,
        })
    }

    /// Pause, catch up, fail over, unpause. Returns the new master, how
    /// long writes were paused, and whether the old master was a replica
    /// when they resumed.
    async fn switch(
        &self,
        sentinel: &mut Connection,
        sentinel_addr: &str,
        old: &str,
        replicas: &[String],
        steps: &mut Steps<'_>,
    ) -> Result<(String, Duration, bool), SwitchoverError> {
        let mut master = self.node(old).await?;
        let wait_for: Vec<&String> = match &self.to {
            Some(to) => vec![to],
            None => replicas.iter().collect(),
        };
        let mut followers = Vec::new();
        for r in &wait_for {
            followers.push(((*r).clone(), self.node(r).await?));
        }

        self.align_with_info(sentinel, &wait_for, steps).await?;

        let pause_ms = self.max_pause.as_millis().max(100).to_string();
        master
            .call_ok(&["CLIENT", "PAUSE", &pause_ms, "WRITE"])
            .await?;
        let paused_at = Instant::now();
        steps.note(format!(
            "writes paused on {old} (CLIENT PAUSE {pause_ms} WRITE)"
        ));

        // Every replica that may be promoted has every byte the master has.
        let catch_up = (self.max_pause / 3).max(Duration::from_millis(200));
        let caught_up = async {
            loop {
                let target = master_offset(&mut master).await?;
                let mut lagging = None;
                for (addr, conn) in followers.iter_mut() {
                    let offset = replica_offset(conn).await?;
                    if offset < target {
                        lagging = Some((addr.clone(), target - offset));
                        break;
                    }
                }
                match lagging {
                    None => return Ok::<_, SwitchoverError>(None),
                    Some(l) if paused_at.elapsed() >= catch_up => return Ok(Some(l)),
                    Some(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }
        .await;
        match caught_up {
            Ok(None) => {}
            Ok(Some((replica, behind))) => {
                let _ = master.call(&["CLIENT", "UNPAUSE"]).await;
                return Err(SwitchoverError::NotCaughtUp {
                    replica,
                    behind,
                    waited: catch_up,
                });
            }
            Err(e) => {
                let _ = master.call(&["CLIENT", "UNPAUSE"]).await;
                return Err(e);
            }
        }
        steps.note(format!(
            "{} caught up with {old}",
            wait_for
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));

        match sentinel
            .call(&["SENTINEL", "FAILOVER", &self.master_name])
            .await?
        {
            Value::Error(message) => {
                let _ = master.call(&["CLIENT", "UNPAUSE"]).await;
                return Err(SwitchoverError::Refused {
                    sentinel: sentinel_addr.to_string(),
                    message,
                });
            }
            _ => steps.note(format!("SENTINEL FAILOVER sent to {sentinel_addr}")),
        }

        // The Sentinels name the new master, and it says so itself.
        let deadline = paused_at + self.max_pause.saturating_sub(Duration::from_millis(100));
        let new = loop {
            if let Some(new) = self.new_master(old).await {
                if let Ok(mut conn) = self.node(&new).await {
                    if conn.role().await.is_ok_and(|r| r.is_master()) {
                        break new;
                    }
                }
            }
            if Instant::now() >= deadline {
                let _ = master.call(&["CLIENT", "UNPAUSE"]).await;
                return Err(SwitchoverError::NotSwitched {
                    master: old.to_string(),
                    waited: paused_at.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let writes_paused = paused_at.elapsed();
        steps.note(format!("the Sentinels name {new}; it answers ROLE master"));

        // Make the old master follow the new one now (Sentinel would, some
        // seconds later), then lift the pause: what waited there is then
        // refused (READONLY), not run.
        if let Some((host, port)) = new.rsplit_once(':') {
            if let Err(e) = master.call_ok(&["REPLICAOF", host, port]).await {
                steps.note(format!(
                    "REPLICAOF on {old} failed ({e}); waiting for Sentinel to convert it"
                ));
            }
        }
        let demote_by = Instant::now() + Duration::from_secs(2).min(self.max_pause);
        let demoted = loop {
            let role = master.role().await;
            if matches!(&role, Ok(Role::Replica { .. })) {
                break true;
            }
            if Instant::now() >= demote_by {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let _ = master.call(&["CLIENT", "UNPAUSE"]).await;
        steps.note(if demoted {
            format!("{old} is a replica now; its pause lifted")
        } else {
            format!("{old} did not become a replica within 2 s; its pause lifted anyway")
        });
        Ok((new, writes_paused, demoted))
    }

    /// Waits for the moment to start, so that the Sentinel's next `INFO`
    /// of the replica it promotes comes just after the promotion.
    ///
    /// Sentinel learns that the replica it sent `REPLICAOF NO ONE` took it
    /// only from that replica's `INFO`, which it reads every second during
    /// a failover (every 10 s otherwise), and only then names it master; a
    /// failover started at a random moment waits a second for it. Started
    /// when the Sentinel's last `INFO` of that replica is [`INFO_AGE`] old,
    /// the next one comes some 300 ms in, just after the promotion (about
    /// 180 ms in). Writes are not paused yet while this waits (up to one
    /// `INFO` period). Missing the moment costs time, never safety.
    async fn align_with_info(
        &self,
        sentinel: &mut Connection,
        candidates: &[&String],
        steps: &mut Steps<'_>,
    ) -> Result<(), SwitchoverError> {
        let deadline = Instant::now() + INFO_ALIGN_WAIT;
        loop {
            let seen = sentinel.sentinel_replicas(&self.master_name).await?;
            let likely = likely_promoted(&seen, candidates);
            let Some((addr, age)) = likely else {
                steps
                    .note("the Sentinel reports no INFO age for the replicas; starting now".into());
                return Ok(());
            };
            if INFO_AGE.contains(&age) {
                steps.note(format!(
                    "the Sentinel read {addr}'s INFO {age} ms ago: its next read will follow the promotion"
                ));
                return Ok(());
            }
            if Instant::now() >= deadline {
                steps.note(format!(
                    "no good moment within {INFO_ALIGN_WAIT:?} (the Sentinel's last INFO of {addr}: {age} ms ago); starting now"
                ));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn node(&self, addr: &str) -> Result<Connection, ClientError> {
        Connection::connect_with(
            addr,
            self.tls.as_ref(),
            self.node_auth.as_ref(),
            self.timeout,
        )
        .await
    }

    async fn sentinel(&self, addr: &str) -> Result<Connection, ClientError> {
        Ok(Connection::connect_sentinel_with(
            addr,
            self.tls.as_ref(),
            &self.sentinel_auth,
            self.timeout,
        )
        .await?
        .0)
    }

    /// The master a majority of the answering Sentinels name, and a
    /// connection to one of them.
    async fn agreed_master(&self) -> Result<(Connection, String, String), SwitchoverError> {
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        for addr in &self.sentinels {
            let asked = async {
                let mut conn = self.sentinel(addr).await?;
                let named = conn.sentinel_master_addr(&self.master_name).await?;
                Ok::<_, ClientError>((conn, named))
            };
            match asked.await {
                Ok((conn, Some((h, p)))) => answers.push((conn, addr.clone(), format!("{h}:{p}"))),
                Ok((_, None)) => failures.push(format!("{addr} does not monitor it")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let answered = answers.len() + failures.len();
        let agreed =
            agreed_master(answers.iter().map(|(_, _, m)| m.as_str()), answered).map(str::to_string);
        let Some(master) = agreed else {
            return Err(SwitchoverError::NoMaster {
                name: self.master_name.clone(),
                why: if failures.is_empty() {
                    "they name different masters".into()
                } else {
                    failures.join("; ")
                },
            });
        };
        let (conn, addr, _) = answers
            .into_iter()
            .find(|(_, _, m)| *m == master)
            .expect("a Sentinel named it");
        Ok((conn, addr, master))
    }

    /// The master a majority of the Sentinels name now, if it is not `old`.
    async fn new_master(&self, old: &str) -> Option<String> {
        let mut named = Vec::new();
        for addr in &self.sentinels {
            if let Ok(mut conn) = self.sentinel(addr).await {
                if let Ok(Some((h, p))) = conn.sentinel_master_addr(&self.master_name).await {
                    named.push(format!("{h}:{p}"));
                }
            }
        }
        agreed_master(named.iter().map(String::as_str), self.sentinels.len())
            .filter(|m| *m != old)
            .map(str::to_string)
    }

    /// Every replica but `to` gets priority 0; `to` a nonzero one.
    async fn steer(
        &self,
        to: &str,
        replicas: &[String],
        changed: &mut Vec<Priority>,
    ) -> Result<(), SwitchoverError> {
        for addr in replicas {
            let mut conn = self.node(addr).await?;
            let was = match conn.call_ok(&["CONFIG", "GET", "replica-priority"]).await? {
                Value::Array(kv) if kv.len() == 2 => kv[1].to_text().unwrap_or_default(),
                Value::Map(kv) if kv.len() == 1 => kv[0].1.to_text().unwrap_or_default(),
                other => {
                    return Err(ClientError::Unexpected {
                        addr: addr.clone(),
                        op: "CONFIG GET replica-priority".into(),
                        detail: format!("{other:?}"),
                    }
                    .into())
                }
            };
            let wanted = if addr == to {
                if was != "0" {
                    continue;
                }
                "100"
            } else {
                "0"
            };
            changed.push(Priority {
                addr: addr.clone(),
                was,
            });
            conn.call_ok(&["CONFIG", "SET", "replica-priority", wanted])
                .await?;
        }
        Ok(())
    }

    /// Waits until the Sentinel that will be asked sees the priorities
    /// (it reads them from each replica's INFO, every 10 s).
    async fn await_priorities(
        &self,
        sentinel: &mut Connection,
        sentinel_addr: &str,
        to: &str,
        replicas: &[String],
    ) -> Result<(), SwitchoverError> {
        let waited = Duration::from_secs(25);
        let deadline = Instant::now() + waited;
        loop {
            let seen = sentinel.sentinel_replicas(&self.master_name).await?;
            let ok = replicas.iter().all(|addr| {
                let priority = seen
                    .iter()
                    .find(|e| e.addr().as_deref() == Some(addr.as_str()))
                    .and_then(|e| e.get("slave-priority"));
                match priority {
                    Some(p) if addr == to => p != "0",
                    Some(p) => p == "0",
                    None => false,
                }
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SwitchoverError::PrioritiesNotSeen {
                    sentinel: sentinel_addr.to_string(),
                    waited,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Puts back the priorities `steer` changed (best effort: said on
    /// stderr of the caller through the report's absence, never hidden).
    async fn restore(&self, changed: &[Priority]) {
        for p in changed {
            if let Ok(mut conn) = self.node(&p.addr).await {
                let _ = conn
                    .call_ok(&["CONFIG", "SET", "replica-priority", &p.was])
                    .await;
            }
        }
    }
}

/// How old the Sentinel's last `INFO` of the replica to promote should be
/// when the failover starts: its next one then comes 260–320 ms later (plus
/// up to a timer tick), after the promotion, which takes Sentinel about
/// 180 ms (see [`Switchover::align_with_info`]).
const INFO_AGE: std::ops::RangeInclusive<u64> = 680..=740;

/// The longest a switchover waits for that moment: Sentinel's normal
/// `INFO` period is 10 s.
const INFO_ALIGN_WAIT: Duration = Duration::from_secs(11);

/// The replica among `candidates` Sentinel would promote, by its own rule
/// on what it knows (lowest nonzero `replica-priority`, then the highest
/// offset it last read, then the smallest run id), and how many
/// milliseconds ago it last read that replica's `INFO`.
fn likely_promoted(seen: &[Entry], candidates: &[&String]) -> Option<(String, u64)> {
    let mut eligible: Vec<(u64, i64, &str, String, u64)> = seen
        .iter()
        .filter(|e| healthy(e))
        .filter_map(|e| {
            let addr = e.addr()?;
            if !candidates.iter().any(|c| **c == addr) {
                return None;
            }
            let priority: u64 = e.get("slave-priority")?.parse().ok()?;
            if priority == 0 {
                return None;
            }
            let offset: i64 = e.get("slave-repl-offset")?.parse().ok()?;
            let age: u64 = e.get("info-refresh")?.parse().ok()?;
            Some((priority, -offset, e.get("runid").unwrap_or("~"), addr, age))
        })
        .collect();
    eligible.sort();
    eligible
        .into_iter()
        .next()
        .map(|(_, _, _, addr, age)| (addr, age))
}

/// Sentinel considers it: not down, connected.
fn healthy(e: &Entry) -> bool {
    !["s_down", "o_down", "disconnected"]
        .iter()
        .any(|f| e.has_flag(f))
}

async fn master_offset(conn: &mut Connection) -> Result<i64, SwitchoverError> {
    match conn.role().await? {
        Role::Master { offset, .. } => Ok(offset),
        other => Err(ClientError::Unexpected {
            addr: conn.addr().to_string(),
            op: "ROLE".into(),
            detail: format!("the master now says {}", other.name()),
        }
        .into()),
    }
}

async fn replica_offset(conn: &mut Connection) -> Result<i64, SwitchoverError> {
    Ok(conn
        .info("replication")
        .await?
        .get_i64("slave_repl_offset")
        .unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(port: u16, priority: u32, offset: i64, runid: &str, age: u64) -> Entry {
        Entry(
            [
                ("ip", "127.0.0.1".to_string()),
                ("port", port.to_string()),
                ("flags", "slave".to_string()),
                ("slave-priority", priority.to_string()),
                ("slave-repl-offset", offset.to_string()),
                ("runid", runid.to_string()),
                ("info-refresh", age.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        )
    }

    #[test]
    fn the_replica_sentinel_would_promote_by_its_own_rule() {
        let a = "127.0.0.1:1".to_string();
        let b = "127.0.0.1:2".to_string();
        let c = "127.0.0.1:3".to_string();
        let all = [&a, &b, &c];
        // Lowest nonzero priority first.
        let seen = [
            entry(1, 100, 50, "a", 10),
            entry(2, 10, 40, "b", 20),
            entry(3, 0, 90, "c", 30),
        ];
        assert_eq!(likely_promoted(&seen, &all), Some((b.clone(), 20)));
        // Then the highest offset Sentinel last read.
        let seen = [entry(1, 100, 50, "b", 10), entry(2, 100, 60, "c", 20)];
        assert_eq!(likely_promoted(&seen, &all), Some((b.clone(), 20)));
        // Then the smallest run id.
        let seen = [entry(1, 100, 60, "b", 10), entry(2, 100, 60, "a", 20)];
        assert_eq!(likely_promoted(&seen, &all), Some((b.clone(), 20)));
        // Only among the candidates (`--to`), never a down one.
        assert_eq!(likely_promoted(&seen, &[&a]), Some((a.clone(), 10)));
        let mut down = entry(2, 100, 60, "a", 20);
        down.0.insert("flags".into(), "slave,s_down".into());
        assert_eq!(likely_promoted(&[down], &all), None);
    }
}
