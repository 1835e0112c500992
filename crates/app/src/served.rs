//! Which node served a reply: the gateway's answer to `BELAY WHERE`,
//! `"<host:port> master|replica"` for the node that served the
//! connection's last reply. The gateway answers it in turn, after every
//! command before it on the connection, so pipelined right behind a read
//! (one `redis::pipe()`, one write on the connection: nothing of another
//! request can come between them) it names the node that read.

use std::fmt;

use redis::{FromRedisValue, RedisResult, Value};
use serde::Serialize;

/// A data node as the gateway names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// `host:port`, as the Sentinels announce it.
    pub addr: String,
    /// `master` or `replica`: what the node was when it answered.
    pub role: String,
}

impl Node {
    /// `X-Served-By`'s value: the gateway's own words.
    pub fn header(&self) -> String {
        format!("{} {}", self.addr, self.role)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.role)
    }
}

/// The answer to `BELAY WHERE`: `None` before the connection had a reply
/// from any node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Where(pub Option<Node>);

impl FromRedisValue for Where {
    fn from_redis_value(v: &Value) -> RedisResult<Where> {
        let text: Option<String> = FromRedisValue::from_redis_value(v)?;
        let Some(text) = text else {
            return Ok(Where(None));
        };
        match text.split_once(' ') {
            Some((addr, role)) if !addr.is_empty() && matches!(role, "master" | "replica") => {
                Ok(Where(Some(Node {
                    addr: addr.to_string(),
                    role: role.to_string(),
                })))
            }
            _ => Err((
                redis::ErrorKind::TypeError,
                "BELAY WHERE answered something other than \"<host:port> master|replica\"",
                text,
            )
                .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_answer_is_parsed_and_nil_is_no_node() {
        let v = Value::BulkString(b"127.0.0.1:6380 replica".to_vec());
        assert_eq!(
            Where::from_redis_value(&v).unwrap(),
            Where(Some(Node {
                addr: "127.0.0.1:6380".into(),
                role: "replica".into()
            }))
        );
        assert_eq!(Where::from_redis_value(&Value::Nil).unwrap(), Where(None));
        let odd = Value::BulkString(b"somewhere".to_vec());
        assert!(Where::from_redis_value(&odd).is_err());
    }
}
