//! Sentinel queries, decoded.

use std::collections::HashMap;

use belay_resp::Value;

use crate::{Auth, ClientError, Connection};

/// How to authenticate to Sentinels.
///
/// Sentinels often have no password of their own even where the data nodes
/// have one (they are given the nodes' password with `sentinel auth-pass`
/// only): that is the most common deployment. So the nodes' password is
/// only *tried* on a Sentinel; a Sentinel password, when one is given, is
/// required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SentinelAuth {
    /// No credentials: the default user, no `AUTH`.
    #[default]
    None,
    /// A Sentinel password (and user) was given: always `AUTH`, and a
    /// refusal is an error.
    Required(Auth),
    /// Only the data nodes' credentials are known: `AUTH` with them, and go
    /// on without where the Sentinel says it has no password configured.
    NodeCredentials(Auth),
}

/// How a connection to a Sentinel was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentinelLogin {
    /// With the given credentials, or none were given.
    AsConfigured,
    /// The Sentinel has no password configured, so the nodes' password was
    /// not needed: the connection goes on without `AUTH`.
    WithoutPassword,
}

impl SentinelAuth {
    /// The policy for a gateway or a status check: `sentinel` credentials
    /// when given, else the nodes' (tried), else none.
    pub fn choose(sentinel: Option<Auth>, nodes: Option<Auth>) -> SentinelAuth {
        match (sentinel, nodes) {
            (Some(a), _) => SentinelAuth::Required(a),
            (None, Some(a)) => SentinelAuth::NodeCredentials(a),
            (None, None) => SentinelAuth::None,
        }
    }
}

impl Connection {
    /// Connects to a Sentinel and authenticates as `auth` says.
    pub async fn connect_sentinel(
        addr: &str,
        auth: &SentinelAuth,
        timeout: std::time::Duration,
    ) -> Result<(Connection, SentinelLogin), ClientError> {
        Connection::connect_sentinel_with(addr, None, auth, timeout).await
    }

    /// [`Connection::connect_sentinel`], over TLS when `tls` is given.
    pub async fn connect_sentinel_with(
        addr: &str,
        tls: Option<&crate::TlsClient>,
        auth: &SentinelAuth,
        timeout: std::time::Duration,
    ) -> Result<(Connection, SentinelLogin), ClientError> {
        let mut conn = Connection::connect_with(addr, tls, None, timeout).await?;
        match auth {
            SentinelAuth::None => {}
            SentinelAuth::Required(a) => conn.auth(a).await?,
            SentinelAuth::NodeCredentials(a) => match conn.auth(a).await {
                Ok(()) => {}
                Err(e) if e.is_no_password_configured() => {
                    return Ok((conn, SentinelLogin::WithoutPassword))
                }
                Err(e) => return Err(e),
            },
        }
        Ok((conn, SentinelLogin::AsConfigured))
    }
}

/// One entry of `SENTINEL replicas` / `SENTINEL sentinels` / `SENTINEL master`:
/// the flat field list Sentinel returns, as a map.
#[derive(Debug, Clone, Default)]
pub struct Entry(pub HashMap<String, String>);

impl Entry {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|s| s.as_str())
    }

    /// `ip:port` of the entry.
    pub fn addr(&self) -> Option<String> {
        Some(format!("{}:{}", self.get("ip")?, self.get("port")?))
    }

    /// The comma-separated `flags` field, split.
    pub fn flags(&self) -> Vec<&str> {
        self.get("flags")
            .map(|f| f.split(',').collect())
            .unwrap_or_default()
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags().contains(&flag)
    }
}

impl Connection {
    /// `SENTINEL get-master-addr-by-name`: `None` when the Sentinel does not
    /// monitor that name.
    pub async fn sentinel_master_addr(
        &mut self,
        name: &str,
    ) -> Result<Option<(String, u16)>, ClientError> {
        let v = self
            .call_ok(&["SENTINEL", "get-master-addr-by-name", name])
            .await?;
        match &v {
            Value::Nil => Ok(None),
            Value::Array(items) if items.len() == 2 => {
                let host = items[0].to_text();
                let port = items[1].as_int();
                match (host, port) {
                    (Some(h), Some(p)) => Ok(Some((h, p as u16))),
                    _ => Err(self.unexpected("SENTINEL get-master-addr-by-name", &v)),
                }
            }
            _ => Err(self.unexpected("SENTINEL get-master-addr-by-name", &v)),
        }
    }

    /// `SENTINEL master <name>`.
    pub async fn sentinel_master(&mut self, name: &str) -> Result<Entry, ClientError> {
        let v = self.call_ok(&["SENTINEL", "master", name]).await?;
        entry(&v).ok_or_else(|| self.unexpected("SENTINEL master", &v))
    }

    /// `SENTINEL replicas <name>`.
    pub async fn sentinel_replicas(&mut self, name: &str) -> Result<Vec<Entry>, ClientError> {
        let v = self.call_ok(&["SENTINEL", "replicas", name]).await?;
        self.entries("SENTINEL replicas", &v)
    }

    /// `SENTINEL sentinels <name>`: the other Sentinels this one knows.
    pub async fn sentinel_sentinels(&mut self, name: &str) -> Result<Vec<Entry>, ClientError> {
        let v = self.call_ok(&["SENTINEL", "sentinels", name]).await?;
        self.entries("SENTINEL sentinels", &v)
    }

    /// `SENTINEL ckquorum <name>`: `Ok(message)` when the quorum and the
    /// majority needed to authorize a failover are reachable.
    pub async fn sentinel_ckquorum(&mut self, name: &str) -> Result<String, ClientError> {
        let v = self.call_ok(&["SENTINEL", "ckquorum", name]).await?;
        Ok(v.to_text().unwrap_or_default())
    }

    fn entries(&self, op: &str, v: &Value) -> Result<Vec<Entry>, ClientError> {
        let items = v.as_array().ok_or_else(|| self.unexpected(op, v))?;
        items
            .iter()
            .map(|i| entry(i).ok_or_else(|| self.unexpected(op, i)))
            .collect()
    }
}

fn entry(v: &Value) -> Option<Entry> {
    Some(Entry(v.to_pairs()?.into_iter().collect()))
}

/// The master a strict majority of the Sentinels that answered name, if
/// they agree on one: the one rule for trusting Sentinels' answers, used by
/// the gateway, `belay status` and the lab. The denominator is the
/// Sentinels that *answered*: one that cannot be reached has no say, so a
/// deployment that lost Sentinels but kept its master still has one (the
/// master must also confirm with `ROLE` before the gateway writes to it).
pub fn agreed_master<'a>(
    named: impl IntoIterator<Item = &'a str>,
    answered: usize,
) -> Option<&'a str> {
    let mut votes: Vec<(&str, usize)> = Vec::new();
    for name in named {
        match votes.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => votes.push((name, 1)),
        }
    }
    votes
        .into_iter()
        .find(|(_, n)| n * 2 > answered)
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strict_majority_of_those_that_answered() {
        assert_eq!(agreed_master(["a", "a", "b"], 3), Some("a"));
        assert_eq!(agreed_master(["a", "b"], 2), None);
        // One Sentinel (the seed note's) decides alone.
        assert_eq!(agreed_master(["a"], 1), Some("a"));
        // Two answered, one named nothing (does not monitor it).
        assert_eq!(agreed_master(["a"], 2), None);
        assert_eq!(agreed_master([], 0), None);
    }
}
