//! Asking the Sentinels: where the master is, which replicas and Sentinels
//! they know, whether a failover is under way — and, when they do not
//! answer, why, in words an operator can act on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use belay_client::sentinel::{agreed_master, Entry, SentinelAuth, SentinelLogin};
use belay_client::{ClientError, Connection, TlsClient};
use futures::future::join_all;

use crate::topology::SentinelStatus;

/// What one Sentinel said in one round.
pub(super) struct SentinelView {
    /// The Sentinel's own address.
    pub addr: String,
    pub master: Option<String>,
    /// `SENTINEL MASTER`'s flags for the master (`s_down`, `o_down`,
    /// `failover_in_progress`, …); empty when the Sentinel would not say.
    pub master_flags: Vec<String>,
    /// `SENTINEL MASTER`'s address: the master being failed over, while a
    /// failover is under way (it changes at `+switch-master`).
    pub master_entry_addr: Option<String>,
    pub replicas: Vec<Entry>,
    pub sentinels: Vec<Entry>,
}

impl SentinelView {
    /// The master this Sentinel is failing over (from its election until the
    /// replicas are reconfigured), if it is. `o_down` alone is not enough: a
    /// Sentinel whose quorum is 1 may see the master down from its side of
    /// a partition without any failover being possible.
    pub fn failing_over(&self) -> Option<&str> {
        self.master_flags
            .iter()
            .any(|f| f == "failover_in_progress")
            .then_some(self.master_entry_addr.as_deref())
            .flatten()
    }
}

/// What a round of asking found.
pub(super) struct Answers {
    pub views: Vec<SentinelView>,
    /// Sentinels that did not answer, and why.
    pub failures: Vec<(String, ClientError)>,
}

impl Answers {
    /// The master a majority of the answering Sentinels name.
    pub fn agreed_master(&self) -> Option<String> {
        agreed_master(
            self.views.iter().filter_map(|v| v.master.as_deref()),
            self.views.len(),
        )
        .map(str::to_string)
    }

    /// The master some answering Sentinel is failing over: writes to it
    /// must wait (the replica it promotes may take them, once the Sentinels
    /// name it).
    pub fn failing_over(&self) -> Option<String> {
        self.views
            .iter()
            .find_map(SentinelView::failing_over)
            .map(str::to_string)
    }

    /// Each Sentinel's answer (or why it gave none), for the admin
    /// endpoint and the dashboard: who it names, its flags for that master,
    /// whether it sides with the agreed master.
    pub fn statuses(&self) -> Vec<SentinelStatus> {
        let agreed = self.agreed_master();
        let mut out: Vec<SentinelStatus> = self
            .views
            .iter()
            .map(|v| SentinelStatus {
                addr: v.addr.clone(),
                master: v.master.clone(),
                flags: v.master_flags.clone(),
                agrees: v.master.is_some() && v.master == agreed,
                error: None,
            })
            .collect();
        out.extend(self.failures.iter().map(|(addr, e)| SentinelStatus {
            addr: addr.clone(),
            master: None,
            flags: Vec::new(),
            agrees: false,
            error: Some(reason(e)),
        }));
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }

    /// Why no Sentinel answered, one clause per Sentinel.
    pub fn why_none_answered(&self) -> String {
        self.failures
            .iter()
            .map(|(addr, e)| format!("{addr}: {}", reason(e)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A Sentinel's failure in words: what an operator would check.
pub(super) fn reason(e: &ClientError) -> String {
    match e {
        ClientError::Connect { source, .. } => format!("cannot connect ({source})"),
        ClientError::Timeout { op, timeout, .. } => {
            format!("no answer to {op} within {} ms", timeout.as_millis())
        }
        ClientError::Reply { op, message, .. } if op == "AUTH" => {
            format!("AUTH rejected: {message}")
        }
        ClientError::Reply { op, message, .. } => format!("{op} refused: {message}"),
        other => other.to_string(),
    }
}

/// The Sentinels discovery knows, their connections and how to log in.
pub(super) struct Sentinels {
    pub addrs: Vec<String>,
    conns: HashMap<String, Connection>,
    auth: SentinelAuth,
    /// TLS to the Sentinels, when they speak it.
    tls: Option<TlsClient>,
    /// Sentinels found to have no password, already reported (once each).
    without_password: HashSet<String>,
    /// The last failure report logged, so a lasting one is logged once.
    last_report: String,
}

impl Sentinels {
    pub fn new(addrs: Vec<String>, auth: SentinelAuth, tls: Option<TlsClient>) -> Sentinels {
        Sentinels {
            addrs,
            conns: HashMap::new(),
            auth,
            tls,
            without_password: HashSet::new(),
            last_report: String::new(),
        }
    }

    pub fn auth(&self) -> &SentinelAuth {
        &self.auth
    }

    pub fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }

    /// Asks every known Sentinel about `name`, concurrently.
    pub async fn ask(&mut self, name: &str, timeout: Duration) -> Answers {
        let jobs = self.addrs.clone().into_iter().map(|addr| {
            let conn = self.conns.remove(&addr);
            let auth = self.auth.clone();
            let tls = self.tls.clone();
            async move {
                let r = ask_one(&addr, conn, &auth, tls.as_ref(), timeout, name).await;
                (addr, r)
            }
        });
        let mut answers = Answers {
            views: Vec::new(),
            failures: Vec::new(),
        };
        for (addr, r) in join_all(jobs).await {
            match r {
                Ok((conn, login, view)) => {
                    if login == SentinelLogin::WithoutPassword
                        && self.without_password.insert(addr.clone())
                    {
                        tracing::info!(sentinel = %addr, "the Sentinel has no password configured (the nodes' password is not needed there); going on without AUTH");
                    }
                    self.conns.insert(addr, conn);
                    answers.views.push(view);
                }
                Err(e) => answers.failures.push((addr, e)),
            }
        }
        self.report(&answers);
        answers
    }

    /// Logs Sentinels that did not answer, and why, when that changes.
    fn report(&mut self, answers: &Answers) {
        let report = answers.why_none_answered();
        if report == self.last_report {
            return;
        }
        if report.is_empty() {
            tracing::info!("every Sentinel answers again");
        } else if answers.views.is_empty() {
            tracing::warn!("no Sentinel answered: {report}");
        } else {
            tracing::warn!(
                answered = answers.views.len(),
                "some Sentinels did not answer: {report}"
            );
        }
        self.last_report = report;
    }

    /// Sentinels the answering ones know of and we do not: added later.
    pub fn learn(&mut self, answers: &Answers) -> Vec<String> {
        let mut new = Vec::new();
        for v in &answers.views {
            for s in &v.sentinels {
                if let Some(addr) = s.addr() {
                    if !self.addrs.contains(&addr)
                        && !new.contains(&addr)
                        && !s.has_flag("s_down")
                        && !s.has_flag("o_down")
                    {
                        tracing::info!(sentinel = %addr, "learned a new Sentinel");
                        new.push(addr);
                    }
                }
            }
        }
        self.addrs.extend(new.iter().cloned());
        new
    }
}

async fn ask_one(
    addr: &str,
    conn: Option<Connection>,
    auth: &SentinelAuth,
    tls: Option<&TlsClient>,
    timeout: Duration,
    name: &str,
) -> Result<(Connection, SentinelLogin, SentinelView), ClientError> {
    let (mut conn, login) = match conn {
        Some(c) => (c, SentinelLogin::AsConfigured),
        None => Connection::connect_sentinel_with(addr, tls, auth, timeout).await?,
    };
    let master = conn
        .sentinel_master_addr(name)
        .await?
        .map(|(h, p)| format!("{h}:{p}"));
    // A Sentinel user without the right to ask leaves these empty; the
    // master's address above is what must be answered.
    let (master_flags, master_entry_addr) = match conn.sentinel_master(name).await {
        Ok(entry) => (
            entry.flags().into_iter().map(str::to_string).collect(),
            entry.addr(),
        ),
        Err(_) => (Vec::new(), None),
    };
    let replicas = conn.sentinel_replicas(name).await.unwrap_or_default();
    let sentinels = conn.sentinel_sentinels(name).await.unwrap_or_default();
    Ok((
        conn,
        login,
        SentinelView {
            addr: addr.to_string(),
            master,
            master_flags,
            master_entry_addr,
            replicas,
            sentinels,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(master: Option<&str>, flags: &[&str]) -> SentinelView {
        SentinelView {
            addr: "s:1".into(),
            master: master.map(str::to_string),
            master_flags: flags.iter().map(|f| f.to_string()).collect(),
            master_entry_addr: Some("a:1".into()),
            replicas: Vec::new(),
            sentinels: Vec::new(),
        }
    }

    #[test]
    fn a_majority_of_the_answers_and_a_failover_seen_by_any() {
        let answers = Answers {
            views: vec![
                view(Some("a:1"), &["master"]),
                view(Some("a:1"), &["master", "o_down", "failover_in_progress"]),
                view(Some("b:1"), &["master"]),
            ],
            failures: Vec::new(),
        };
        assert_eq!(answers.agreed_master().as_deref(), Some("a:1"));
        assert_eq!(answers.failing_over().as_deref(), Some("a:1"));
        let calm = Answers {
            views: vec![view(Some("a:1"), &["master", "s_down", "o_down"])],
            failures: Vec::new(),
        };
        assert_eq!(calm.failing_over(), None);
    }

    #[test]
    fn failures_say_why() {
        let answers = Answers {
            views: Vec::new(),
            failures: vec![
                (
                    "127.0.0.1:26379".into(),
                    ClientError::Reply {
                        addr: "127.0.0.1:26379".into(),
                        op: "AUTH".into(),
                        message: "WRONGPASS invalid username-password pair".into(),
                    },
                ),
                (
                    "127.0.0.1:26380".into(),
                    ClientError::Timeout {
                        addr: "127.0.0.1:26380".into(),
                        op: "connect".into(),
                        timeout: Duration::from_secs(1),
                    },
                ),
            ],
        };
        let why = answers.why_none_answered();
        assert!(
            why.contains("127.0.0.1:26379: AUTH rejected: WRONGPASS"),
            "{why}"
        );
        assert!(
            why.contains("127.0.0.1:26380: no answer to connect within 1000 ms"),
            "{why}"
        );
    }
}
