//! Commands that act on every data node, and what their replies become:
//! `CONFIG SET`/`RESETSTAT` and `ACL SETUSER`/`DELUSER` (per node in Redis,
//! not replicated: through the gateway they reach the master and every
//! replica, as the client's own user), `SCRIPT KILL`/`FUNCTION KILL` (a
//! read-only script may be running on any replica), and `CONFIG GET`,
//! whose replies must not show the nodes' passwords.

use belay_resp::{parse_value, Limits, Value};
use bytes::{Bytes, BytesMut};

use crate::reply;

/// What one data node answered to a command sent to every node.
pub struct Fanout {
    pub node: String,
    pub reply: Result<Bytes, String>,
}

impl Fanout {
    fn ok(&self) -> Option<&Bytes> {
        self.reply.as_ref().ok().filter(|r| !r.starts_with(b"-"))
    }

    fn why(&self) -> String {
        match &self.reply {
            Ok(r) => String::from_utf8_lossy(r.strip_prefix(b"-").unwrap_or(r))
                .trim_end()
                .to_string(),
            Err(e) => e.clone(),
        }
    }
}

/// The reply to a group-wide admin command: the master's own reply when
/// every node took it; an error naming the nodes that did not when some
/// did not. `results[0]` is the master's; replicas are asked only after
/// the master took it (a refusal there, `NOPERM` say, is the answer).
pub fn group_admin_reply(command: &str, results: &[Fanout]) -> Bytes {
    let Some(master) = results.first() else {
        return reply::error(&format!(
            "TRYAGAIN belay: no confirmed master to run {command} on; it was not run"
        ));
    };
    let Some(ok) = master.ok() else {
        return match &master.reply {
            Ok(refusal) => refusal.clone(),
            Err(e) => reply::error(&format!(
                "ERR belay: {command} could not be run on the master {}: {e}",
                master.node
            )),
        };
    };
    let failed: Vec<String> = results[1..]
        .iter()
        .filter(|r| r.ok().is_none())
        .map(|r| format!("{} ({})", r.node, r.why()))
        .collect();
    if failed.is_empty() {
        return ok.clone();
    }
    reply::error(&format!(
        "ERR belay: {command} ran on the master {} and {} of {} replicas, but not on {}",
        master.node,
        results.len() - 1 - failed.len(),
        results.len() - 1,
        failed.join(", ")
    ))
}

/// The reply to `SCRIPT KILL`/`FUNCTION KILL` sent to every data node:
/// `OK` if one was killed, Redis's `UNKILLABLE` if one could not be, its
/// `BUSY` if what runs is of the other kind (`SCRIPT KILL` while a function
/// runs), else `NOTBUSY` (nothing runs anywhere).
pub fn kill_reply(results: &[Fanout]) -> Bytes {
    if results.iter().any(|r| r.ok().is_some()) {
        return reply::ok();
    }
    let refused = |code: &[u8]| {
        results
            .iter()
            .filter_map(|r| r.reply.as_ref().ok())
            .find(|r| r.starts_with(code))
            .cloned()
    };
    if let Some(unkillable) = refused(b"-UNKILLABLE") {
        return unkillable;
    }
    if let Some(other_kind) = refused(b"-BUSY") {
        return other_kind;
    }
    if let Some(notbusy) = refused(b"-NOTBUSY") {
        return notbusy;
    }
    match results.iter().find(|r| r.reply.is_ok()) {
        Some(other) => other.reply.clone().unwrap_or_default(),
        None => reply::error(&format!(
            "ERR belay: no data node could be asked: {}",
            results
                .iter()
                .map(|r| format!("{} ({})", r.node, r.why()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Configuration parameters whose values are secrets.
const SECRETS: &[&str] = &[
    "requirepass",
    "masterauth",
    "tls-key-file-pass",
    "tls-client-key-file-pass",
];

/// What a client sees instead of a node's password.
const HIDDEN: &str = "(hidden by belay)";

/// A `CONFIG GET` reply with the values of secret parameters hidden (empty
/// values, which say no password is set, are left as they are). Anything
/// that does not parse as a `CONFIG GET` reply is passed on unchanged.
pub fn mask_config_secrets(frame: &Bytes) -> Bytes {
    let Ok(Some((value, _))) = parse_value(frame, &Limits::for_replies()) else {
        return frame.clone();
    };
    let hide = |k: &Value, v: &mut Value| {
        let secret = k
            .as_str()
            .is_some_and(|k| SECRETS.iter().any(|s| k.eq_ignore_ascii_case(s)));
        if secret && v.as_str().is_some_and(|v| !v.is_empty()) {
            *v = Value::Bulk(Bytes::from_static(HIDDEN.as_bytes()));
        }
    };
    let masked = match value {
        Value::Array(mut items) => {
            for pair in items.chunks_mut(2) {
                if let [k, v] = pair {
                    hide(k, v);
                }
            }
            Value::Array(items)
        }
        Value::Map(mut pairs) => {
            for (k, v) in pairs.iter_mut() {
                hide(k, v);
            }
            Value::Map(pairs)
        }
        _ => return frame.clone(),
    };
    let mut out = BytesMut::with_capacity(frame.len());
    masked.encode(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan(node: &str, reply: &str) -> Fanout {
        Fanout {
            node: node.into(),
            reply: Ok(Bytes::from(reply.to_string())),
        }
    }

    #[test]
    fn group_admin_replies() {
        let all = [
            fan("m", "+OK\r\n"),
            fan("r1", "+OK\r\n"),
            fan("r2", "+OK\r\n"),
        ];
        assert_eq!(group_admin_reply("CONFIG SET", &all), "+OK\r\n");
        let denied = [fan("m", "-NOPERM no\r\n")];
        assert_eq!(group_admin_reply("CONFIG SET", &denied), "-NOPERM no\r\n");
        let partial = [
            fan("m", "+OK\r\n"),
            fan("r1", "+OK\r\n"),
            Fanout {
                node: "r2".into(),
                reply: Err("cannot connect".into()),
            },
        ];
        let e = String::from_utf8(group_admin_reply("ACL SETUSER", &partial).to_vec()).unwrap();
        assert!(e.starts_with("-ERR belay: ACL SETUSER ran on the master m and 1 of 2 replicas, but not on r2 (cannot connect)"), "{e}");
    }

    #[test]
    fn kill_replies() {
        assert_eq!(
            kill_reply(&[fan("m", "-NOTBUSY No scripts\r\n"), fan("r", "+OK\r\n")]),
            "+OK\r\n"
        );
        assert_eq!(
            kill_reply(&[
                fan("m", "-NOTBUSY No scripts\r\n"),
                fan("r", "-NOTBUSY No scripts\r\n")
            ]),
            "-NOTBUSY No scripts\r\n"
        );
        // SCRIPT KILL while a function runs on the master: Redis's BUSY.
        assert_eq!(
            kill_reply(&[
                fan("m", "-BUSY a function runs, use FUNCTION KILL\r\n"),
                fan("r", "-NOTBUSY No scripts\r\n")
            ]),
            "-BUSY a function runs, use FUNCTION KILL\r\n"
        );
        assert!(kill_reply(&[fan("m", "-UNKILLABLE wrote\r\n")]).starts_with(b"-UNKILLABLE"));
    }

    #[test]
    fn passwords_are_masked_in_config_get() {
        let resp2 = Bytes::from_static(
            b"*6\r\n$11\r\nrequirepass\r\n$6\r\nsecret\r\n$10\r\nmasterauth\r\n$0\r\n\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
        );
        let masked = mask_config_secrets(&resp2);
        let text = String::from_utf8_lossy(&masked);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("(hidden by belay)"), "{text}");
        assert!(
            text.contains("$10\r\nmasterauth\r\n$0\r\n"),
            "an unset password stays empty: {text}"
        );
        let resp3 = Bytes::from_static(b"%1\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n");
        let masked = mask_config_secrets(&resp3);
        assert!(masked.starts_with(b"%1\r\n"));
        assert!(!String::from_utf8_lossy(&masked).contains("$2\r\npw"));
        let error = Bytes::from_static(b"-ERR nope\r\n");
        assert_eq!(mask_config_secrets(&error), error);
    }
}
