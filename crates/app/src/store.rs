//! The app's data in Redis, and the two connections to the gateway it is
//! reached by.
//!
//! Keys: `story:<id>` is a hash (`title`, `body`, `created_ms`, `views`);
//! `stories` is a sorted set of `<id>\t<title>` by `created_ms`, so the
//! front page is one read.
//!
//! Connections, kept apart because the gateway keeps a connection's
//! commands in order (a command held through a failover holds up what
//! comes after it on its connection):
//! - `reads`, a `ConnectionManager` (one multiplexed connection, made again
//!   when the gateway restarts), carries page reads only. A connection that
//!   never writes has no read-your-writes fence, and no write held through
//!   a failover in front of its reads: pages keep coming from the replicas.
//! - `writes`, a [`Pool`]: each publication takes a connection of its own
//!   for its write and its read-back, which the gateway's read-your-writes
//!   sends to a node that has the write.
//! - `views`, a `ConnectionManager` for the view counts.
//!
//! Publishing is one Lua script that creates the story only if its id is
//! new, so sending it again is harmless: a publication the gateway answers
//! `UNCERTAIN` (in flight on a master that was then paused or killed) or
//! `TRYAGAIN`, or that lost its connection, is sent again until
//! `--write-timeout-ms`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, FromRedisValue, Pipeline,
    ProtocolVersion, RedisConnectionInfo, RedisError,
};
use serde::Serialize;

use crate::cli::Settings;
use crate::pool::Pool;
use crate::served::{Node, Where};

/// The sorted set behind the front page.
const STORIES: &str = "stories";

/// How long connecting to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Creates the story if its id is new: `1` created, `0` already there.
/// Atomic, so a story is never half written, and safe to send again.
const PUBLISH: &str = r#"
if redis.call('HEXISTS', KEYS[1], 'title') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[1], 'body', ARGV[2], 'created_ms', ARGV[3], 'views', 0)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4] .. '\t' .. ARGV[1])
return 1
"#;

/// Adds view counts (`ARGV[i]` to `KEYS[i]`), all or none.
const ADD_VIEWS: &str = r#"
for i = 1, #KEYS do redis.call('HINCRBY', KEYS[i], 'views', ARGV[i]) end
return #KEYS
"#;

/// A story as stored.
#[derive(Clone, Debug, Serialize)]
pub struct Story {
    pub id: String,
    pub title: String,
    pub body: String,
    pub created_ms: u64,
    pub views: u64,
}

/// A front-page entry.
#[derive(Clone, Debug, Serialize)]
pub struct Headline {
    pub id: String,
    pub title: String,
    pub created_ms: u64,
}

/// The newest stories and how many there are.
#[derive(Clone, Debug, Serialize)]
pub struct FrontPage {
    pub headlines: Vec<Headline>,
    pub total: u64,
}

/// A value read through the gateway, with the node that served it and how
/// long the round trip took.
#[derive(Clone, Debug)]
pub struct Served<T> {
    pub value: T,
    pub by: Option<Node>,
    pub took: Duration,
}

/// A story to publish: its id comes from the form (so submitting a form
/// twice publishes once) or is made up for it.
#[derive(Clone, Debug)]
pub struct Draft {
    pub id: String,
    pub title: String,
    pub body: String,
}

/// What publishing did.
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    /// The story as read back on the connection that wrote it.
    pub story: Story,
    /// The node the read-back came from.
    pub read_back_from: Option<Node>,
    /// False when a story with this id was already there (a form sent
    /// twice, or an earlier attempt that did run).
    pub created: bool,
    /// Times the write was sent (more than 1 after an answer that allows
    /// sending it again).
    pub attempts: u32,
    /// Why it was sent again, in the gateway's words.
    pub retried_because: Vec<String>,
    /// From the first attempt to the read-back's reply.
    pub took_ms: u64,
}

/// Why the store could not do something; the web layer picks the status.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The gateway did not answer in time or cannot be reached (503).
    #[error("{0}")]
    Unavailable(String),
    /// Redis (or the gateway) answered with an error (502).
    #[error("{0}")]
    Refused(String),
    /// Something that must not happen did (500).
    #[error("{0}")]
    Broken(String),
}

/// The app's handle on Redis; cheap to clone.
#[derive(Clone)]
pub struct Store {
    reads: ConnectionManager,
    writes: std::sync::Arc<Pool>,
    views: ConnectionManager,
    gateway: String,
    read_timeout: Duration,
    write_timeout: Duration,
}

impl Store {
    /// Connects to the gateway; fails, saying why, when it cannot be
    /// reached or refuses the password.
    pub async fn connect(s: &Settings) -> Result<Store> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(s.gateway_host.clone(), s.gateway_port),
            redis: RedisConnectionInfo {
                db: 0,
                username: None,
                password: s.password.clone(),
                protocol: ProtocolVersion::RESP2,
            },
        };
        let client = redis::Client::open(info).context("the gateway's address")?;
        // One plain connection first: its error says why, where the
        // manager would retry for seconds and then say less.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CONNECT_TIMEOUT);
        let check = async {
            let mut c = client
                .get_multiplexed_async_connection_with_config(&probe)
                .await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        check.await.map_err(|e| explain_connect(&s.gateway, &e))?;
        let config = |timeout: Duration| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(timeout)
                .set_number_of_retries(3)
                .set_max_delay(1000)
        };
        let reads = ConnectionManager::new_with_config(client.clone(), config(s.read_timeout))
            .await
            .map_err(|e| explain_connect(&s.gateway, &e))?;
        let views = ConnectionManager::new_with_config(client.clone(), config(s.write_timeout))
            .await
            .map_err(|e| explain_connect(&s.gateway, &e))?;
        let writes = Pool::new(
            client,
            AsyncConnectionConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(s.write_timeout),
        );
        Ok(Store {
            reads,
            writes: std::sync::Arc::new(writes),
            views,
            gateway: s.gateway.clone(),
            read_timeout: s.read_timeout,
            write_timeout: s.write_timeout,
        })
    }

    /// The newest `limit` stories and the number of stories.
    pub async fn front_page(&self, limit: usize) -> Result<Served<FrontPage>, Failure> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREVRANGE")
            .arg(STORIES)
            .arg(0)
            .arg(limit.max(1) as i64 - 1)
            .arg("WITHSCORES")
            .cmd("ZCARD")
            .arg(STORIES);
        let started = Instant::now();
        let ((flat, total), by): ((Vec<String>, u64), _) = self.read(pipe).await?;
        let headlines = flat
            .chunks(2)
            .filter_map(|pair| {
                let (id, title) = pair.first()?.split_once('\t')?;
                Some(Headline {
                    id: id.to_string(),
                    title: title.to_string(),
                    created_ms: pair.get(1)?.parse::<f64>().ok()? as u64,
                })
            })
            .collect();
        Ok(Served {
            value: FrontPage { headlines, total },
            by,
            took: started.elapsed(),
        })
    }

    /// The story `id`, `None` when the node that served the read has none.
    pub async fn story(&self, id: &str) -> Result<Served<Option<Story>>, Failure> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(story_key(id));
        let started = Instant::now();
        let ((fields,), by): ((HashMap<String, String>,), _) = self.read(pipe).await?;
        Ok(Served {
            value: Story::from_fields(id, fields),
            by,
            took: started.elapsed(),
        })
    }

    /// `PING` through the reads connection (the gateway answers it itself).
    pub async fn ping(&self) -> Result<Duration, Failure> {
        let started = Instant::now();
        let mut c = self.reads.clone();
        match tokio::time::timeout(
            self.read_timeout,
            redis::cmd("PING").query_async::<String>(&mut c),
        )
        .await
        {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(self.failure("PING", &e)),
            Err(_) => Err(self.timed_out("PING", self.read_timeout)),
        }
    }

    /// Publishes `draft` (sent again while the answer allows it, until
    /// `--write-timeout-ms`), then reads it back on the connection that
    /// wrote it.
    pub async fn publish(&self, draft: &Draft) -> Result<Published, Failure> {
        let started = Instant::now();
        let deadline = started + self.write_timeout;
        let key = story_key(&draft.id);
        let created_ms = now_ms();
        let mut attempts = 0;
        let mut retried_because = Vec::new();
        let mut backoff = Duration::from_millis(100);
        let (created, mut c) = loop {
            attempts += 1;
            match self.try_publish(draft, &key, created_ms, deadline).await {
                Ok(done) => break done,
                // A new connection for the next try: nothing of this one's
                // is left in front of it.
                Err(Some(e)) if may_send_again(&e) && Instant::now() + backoff < deadline => {
                    tracing::info!(
                        "story {}: sending the publication again in {} ms: {e}",
                        draft.id,
                        backoff.as_millis()
                    );
                    retried_because.push(e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(Some(e)) => return Err(self.failure("publishing", &e)),
                Err(None) => {
                    return Err(Failure::Unavailable(format!(
                        "publishing took more than {} ms (--write-timeout-ms) through the gateway at {}; \
                         it may or may not have been published: look for it on the front page",
                        self.write_timeout.as_millis(),
                        self.gateway
                    )))
                }
            }
        };
        // The read-back: same connection, after the write's reply.
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(&key).cmd("BELAY").arg("WHERE");
        let left = deadline.saturating_duration_since(Instant::now());
        let (fields, Where(by)): (HashMap<String, String>, Where) =
            match tokio::time::timeout(left, pipe.query_async(&mut c)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    return Err(self.failure(
                        &format!("reading story {} back after publishing it", draft.id),
                        &e,
                    ))
                }
                Err(_) => return Err(self.timed_out("reading the story back", self.write_timeout)),
            };
        self.writes.put(c);
        let story =
            Story::from_fields(&draft.id, fields).ok_or_else(|| {
                Failure::Broken(format!(
                "story {} was published, but reading it back on the connection that wrote it{} \
                 found nothing: read-your-writes did not hold",
                draft.id,
                by.as_ref().map(|n| format!(" (from {n})")).unwrap_or_default()
            ))
            })?;
        Ok(Published {
            story,
            read_back_from: by,
            created,
            attempts,
            retried_because,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// One try: a connection from the pool, the script. `Err(None)` when
    /// `deadline` passed.
    async fn try_publish(
        &self,
        draft: &Draft,
        key: &str,
        created_ms: u64,
        deadline: Instant,
    ) -> Result<(bool, MultiplexedConnection), Option<RedisError>> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut c = match tokio::time::timeout(left(), self.writes.take()).await {
            Ok(c) => c.map_err(Some)?,
            Err(_) => return Err(None),
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUBLISH)
            .arg(2)
            .arg(key)
            .arg(STORIES)
            .arg(&draft.title)
            .arg(&draft.body)
            .arg(created_ms)
            .arg(&draft.id);
        match tokio::time::timeout(left(), cmd.query_async::<i64>(&mut c)).await {
            Ok(Ok(n)) => Ok((n == 1, c)),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    }

    /// Adds view counts, all or none.
    pub async fn add_views(&self, counts: &[(String, u64)]) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ADD_VIEWS).arg(counts.len());
        for (id, _) in counts {
            cmd.arg(story_key(id));
        }
        for (_, n) in counts {
            cmd.arg(*n);
        }
        let mut c = self.views.clone();
        match tokio::time::timeout(self.write_timeout, cmd.query_async::<i64>(&mut c)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within --write-timeout-ms",
            ))),
        }
    }

    /// Runs `pipe` plus `BELAY WHERE` on the reads connection, once more if
    /// the connection was lost (a read has no effect; the manager has made
    /// a new connection by then).
    async fn read<T: FromRedisValue>(&self, pipe: Pipeline) -> Result<(T, Option<Node>), Failure> {
        let mut pipe = pipe;
        pipe.cmd("BELAY").arg("WHERE");
        let deadline = Instant::now() + self.read_timeout;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut c = self.reads.clone();
            let left = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(left, pipe.query_async::<Vec<redis::Value>>(&mut c))
                .await
                .map_err(|_| self.timed_out("reading", self.read_timeout))?;
            match result {
                Ok(mut values) => {
                    let at = values.pop().unwrap_or(redis::Value::Nil);
                    let Where(by) = Where::from_redis_value(&at)
                        .map_err(|e| Failure::Broken(format!("BELAY WHERE: {e}")))?;
                    let value = T::from_redis_value(&redis::Value::Array(values))
                        .map_err(|e| Failure::Broken(format!("an unexpected reply: {e}")))?;
                    return Ok((value, by));
                }
                Err(e) if e.is_io_error() && tries == 1 => {
                    tracing::info!("reading again on a new connection to the gateway: {e}");
                }
                Err(e) => return Err(self.failure("reading", &e)),
            }
        }
    }

    fn failure(&self, what: &str, e: &RedisError) -> Failure {
        if e.is_io_error() {
            Failure::Unavailable(format!(
                "{what}: the gateway at {} cannot be reached: {e}",
                self.gateway
            ))
        } else {
            Failure::Refused(format!(
                "{what}: the gateway at {} answered: {e}",
                self.gateway
            ))
        }
    }

    fn timed_out(&self, what: &str, limit: Duration) -> Failure {
        Failure::Unavailable(format!(
            "{what}: the gateway at {} did not answer within {} ms",
            self.gateway,
            limit.as_millis()
        ))
    }
}

impl Story {
    fn from_fields(id: &str, mut f: HashMap<String, String>) -> Option<Story> {
        Some(Story {
            id: id.to_string(),
            title: f.remove("title")?,
            body: f.remove("body").unwrap_or_default(),
            created_ms: f
                .get("created_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            views: f.get("views").and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }
}

/// `story:<id>`.
fn story_key(id: &str) -> String {
    format!("story:{id}")
}

/// A new story id: 12 hex digits.
pub fn new_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Story ids are what [`new_id`] makes, or close: 1 to 32 of `[a-z0-9-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// True when an error means the write did not run (`TRYAGAIN`: the
/// gateway held it and gave up; a node's refusal; no connection to send
/// it on).
pub fn did_not_run(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("TRYAGAIN" | "READONLY" | "NOREPLICAS" | "MASTERDOWN" | "LOADING")
    ) || e.is_connection_refusal()
}

/// True when an idempotent write may be sent again: it did not run, or it
/// may have (`UNCERTAIN`, a lost connection, no answer in time).
fn may_send_again(e: &RedisError) -> bool {
    did_not_run(e) || e.code() == Some("UNCERTAIN") || e.is_io_error()
}

/// Why the gateway cannot be used, for the error at start.
fn explain_connect(gateway: &str, e: &RedisError) -> anyhow::Error {
    let why = if e.is_connection_refusal() {
        format!(
            "cannot reach the gateway at {gateway}: connection refused. Is `belay gateway` \
             (or a lab: `belay up`) running there? (--gateway, BELAY_GATEWAY)"
        )
    } else if e.is_timeout() {
        format!(
            "the gateway at {gateway} did not answer within {} s (--gateway, BELAY_GATEWAY)",
            CONNECT_TIMEOUT.as_secs()
        )
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
    {
        format!(
            "the gateway at {gateway} refused the login ({e}): give the gateway's password \
             with --password, --password-file, BELAY_PASSWORD or BELAY_PASSWORD_FILE"
        )
    } else {
        format!("cannot use the gateway at {gateway}: {e}")
    };
    anyhow::anyhow!(why)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_ids_are_valid_and_odd_ones_are_not() {
        let id = new_id();
        assert!(valid_id(&id), "{id}");
        assert!(!valid_id(""));
        assert!(!valid_id("../etc"));
        assert!(!valid_id(&"a".repeat(33)));
    }

    #[test]
    fn the_gateways_answers_decide_whether_to_send_again() {
        let reply = |code: &str| -> RedisError {
            let parsed =
                redis::parse_redis_value(format!("-{code} belay: something\r\n").as_bytes())
                    .unwrap();
            redis::Value::extract_error(parsed).unwrap_err()
        };
        assert!(did_not_run(&reply("TRYAGAIN")));
        assert!(did_not_run(&reply("READONLY")));
        assert!(!did_not_run(&reply("UNCERTAIN")));
        assert!(may_send_again(&reply("UNCERTAIN")));
        assert!(!may_send_again(&reply("ERR")));
        assert!(!may_send_again(&reply("WRONGTYPE")));
    }
}
