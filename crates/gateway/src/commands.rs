//! The command table: how each command is routed, learned from the server's
//! own `COMMAND` reply so new and module commands route right without a
//! hand-kept list.

use std::collections::HashMap;

use belay_resp::{Request, Value};
use rustc_hash::FxHashMap;

use crate::config::CommandOverride;

/// Where a command goes and how the session must treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Read-only: a replica may serve it.
    Read,
    /// Must run on the master.
    Write,
    /// May block the connection (BLPOP, XREAD BLOCK, …): needs a connection of
    /// its own, on the master.
    Blocking,
    /// Refused by the gateway; the reason is in the error.
    Denied(&'static str),
}

/// What `COMMAND` says about one command (or subcommand).
#[derive(Debug, Clone, Default)]
pub struct CommandInfo {
    pub readonly: bool,
    pub write: bool,
    pub blocking: bool,
    pub pubsub: bool,
    pub subcommands: FxHashMap<String, CommandInfo>,
}

/// Commands a proxy cannot honour, and why.
fn default_denied(name: &str) -> Option<&'static str> {
    Some(match name {
        "monitor" => "MONITOR would stream every command of a shared connection; run it on a node directly",
        "shutdown" => "SHUTDOWN would stop a node behind the gateway; run it on the node directly",
        "replicaof" | "slaveof" => "replication is managed by Sentinel; use SENTINEL FAILOVER or the nodes directly",
        "failover" => "failover is managed by Sentinel; use SENTINEL FAILOVER",
        "debug" => "DEBUG is not allowed through the gateway",
        "sync" | "psync" => "replication streams cannot go through the gateway",
        "module" => "MODULE is not allowed through the gateway; load modules on every node directly",
        "cluster" | "asking" => "the gateway fronts a Sentinel-managed deployment, not a cluster",
        "config|set" | "config|rewrite" | "config|resetstat" => {
            "CONFIG changes would reach only one node; allow it with `commands.\"config|set\" = \"allow\"` in the gateway config"
        }
        "client|reply" => "CLIENT REPLY would break reply ordering on shared connections",
        "client|tracking" | "client|caching" | "client|getredir" => "client-side caching is not supported through the gateway",
        "client|pause" | "client|unpause" | "client|kill" | "client|no-evict" | "client|no-touch" => {
            "it would affect other clients of the node; run it on the node directly"
        }
        _ => return None,
    })
}

/// Routing knowledge for every command the master knows, plus overrides.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    /// Looked up once per command: a fast non-cryptographic hash (the keys
    /// come from the server, not from clients).
    commands: FxHashMap<String, CommandInfo>,
    overrides: HashMap<String, CommandOverride>,
    /// The final class of every command whose class does not depend on its
    /// arguments (no subcommands, not `XREAD`'s optional `BLOCK`), overrides
    /// and denials applied: one hash lookup per command on the hot path.
    /// Clients choose the names looked up, but a miss only costs the full rules.
    resolved: FxHashMap<Box<[u8]>, Class>,
    /// The server version the table was read from.
    pub version: String,
}

impl CommandTable {
    /// Builds the table from a `COMMAND` reply.
    pub fn from_command_reply(
        reply: &Value,
        version: String,
        overrides: HashMap<String, CommandOverride>,
    ) -> CommandTable {
        let mut commands = FxHashMap::default();
        for entry in reply.as_array().unwrap_or_default() {
            if let Some((name, info)) = parse_entry(entry) {
                commands.insert(name, info);
            }
        }
        let mut table = CommandTable {
            commands,
            overrides,
            resolved: FxHashMap::default(),
            version,
        };
        let resolved = table
            .commands
            .iter()
            .filter(|(name, info)| {
                info.subcommands.is_empty() && !matches!(name.as_str(), "xread" | "xreadgroup")
            })
            .map(|(name, _)| {
                let class = table.classify_by_name(name, &Request::from_args([name.as_str()]));
                (name.as_bytes().into(), class)
            })
            .collect();
        table.resolved = resolved;
        table
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Classifies a request by its arguments (`args[0]` is the name).
    pub fn classify(&self, req: &Request) -> Class {
        let Some(name) = req.name() else {
            return Class::Write;
        };
        let mut lower_buf = [0u8; 64];
        self.classify_lowercase(lower(name, &mut lower_buf), req)
    }

    /// [`CommandTable::classify`] for a caller that already has the
    /// command's name in lowercase.
    pub fn classify_lowercase(&self, name: &[u8], req: &Request) -> Class {
        self.classify_lowercase_resolved(name, req).0
    }

    /// [`CommandTable::classify_lowercase`], and whether the class holds for
    /// every use of the name (it does not depend on the arguments), so a
    /// caller may remember it.
    pub fn classify_lowercase_resolved(&self, name: &[u8], req: &Request) -> (Class, bool) {
        match self.resolved.get(name) {
            Some(class) => (*class, true),
            None => (
                self.classify_by_name(std::str::from_utf8(name).unwrap_or(""), req),
                false,
            ),
        }
    }

    /// The full rules: subcommands, overrides, denials, flags.
    fn classify_by_name(&self, name: &str, req: &Request) -> Class {
        let info = self.commands.get(name);
        // A container command (CONFIG, CLIENT, OBJECT, …) is routed by its subcommand.
        let (full_name, info) = match (info, req.arg(1)) {
            (Some(i), Some(sub)) if !i.subcommands.is_empty() => {
                let mut sub_buf = [0u8; 64];
                let sub = std::str::from_utf8(lower(sub, &mut sub_buf)).unwrap_or("");
                let full = format!("{name}|{sub}");
                let sub_info = i.subcommands.get(&full);
                (Some(full), sub_info.or(Some(i)))
            }
            _ => (None, info),
        };
        for key in full_name
            .iter()
            .map(|s| s.as_str())
            .chain(std::iter::once(name))
        {
            if let Some(o) = self.overrides.get(key) {
                return match o {
                    CommandOverride::Read => Class::Read,
                    CommandOverride::Write | CommandOverride::Allow => Class::Write,
                    CommandOverride::Deny => Class::Denied("denied by the gateway's configuration"),
                };
            }
        }
        for key in full_name
            .iter()
            .map(|s| s.as_str())
            .chain(std::iter::once(name))
        {
            if let Some(reason) = default_denied(key) {
                return Class::Denied(reason);
            }
        }
        let Some(info) = info else {
            return Class::Write;
        };
        if info.blocking && is_really_blocking(name, req) {
            return Class::Blocking;
        }
        if info.readonly && !info.write && !info.pubsub {
            return Class::Read;
        }
        Class::Write
    }
}

/// XREAD and XREADGROUP carry the `blocking` flag but block only with BLOCK.
fn is_really_blocking(name: &str, req: &Request) -> bool {
    match name {
        "xread" | "xreadgroup" => req.args().skip(1).any(|a| a.eq_ignore_ascii_case(b"block")),
        _ => true,
    }
}

fn lower<'a>(name: &[u8], buf: &'a mut [u8; 64]) -> &'a [u8] {
    let n = name.len().min(64);
    for (d, s) in buf.iter_mut().zip(&name[..n]) {
        *d = s.to_ascii_lowercase();
    }
    &buf[..n]
}

fn parse_entry(entry: &Value) -> Option<(String, CommandInfo)> {
    let items = entry.as_array()?;
    let name = items.first()?.to_text()?.to_ascii_lowercase();
    let mut info = CommandInfo::default();
    for flag in items.get(2).and_then(|f| f.as_array()).unwrap_or_default() {
        match flag.as_str() {
            Some("readonly") => info.readonly = true,
            Some("write") => info.write = true,
            Some("blocking") => info.blocking = true,
            Some("pubsub") => info.pubsub = true,
            _ => {}
        }
    }
    if let Some(subs) = items.get(9).and_then(|s| s.as_array()) {
        for sub in subs {
            if let Some((sub_name, sub_info)) = parse_entry(sub) {
                info.subcommands.insert(sub_name, sub_info);
            }
        }
    }
    Some((name, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(name: &str, flags: &[&str], subs: Vec<Value>) -> Value {
        let mut v = vec![
            Value::Bulk(Bytes::copy_from_slice(name.as_bytes())),
            Value::Integer(-1),
            Value::Array(flags.iter().map(|f| Value::Simple(f.to_string())).collect()),
            Value::Integer(1),
            Value::Integer(1),
            Value::Integer(1),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![]),
        ];
        v.push(Value::Array(subs));
        Value::Array(v)
    }

    fn args(s: &str) -> Request {
        Request::from_args(s.split(' '))
    }

    #[test]
    fn classifies_from_flags() {
        let reply = Value::Array(vec![
            entry("get", &["readonly", "fast"], vec![]),
            entry("set", &["write", "denyoom"], vec![]),
            entry("blpop", &["write", "blocking"], vec![]),
            entry("xread", &["readonly", "blocking"], vec![]),
            entry(
                "object",
                &[],
                vec![entry("object|encoding", &["readonly"], vec![])],
            ),
            entry(
                "config",
                &[],
                vec![
                    entry("config|get", &["admin"], vec![]),
                    entry("config|set", &["admin"], vec![]),
                ],
            ),
            entry("publish", &["pubsub", "fast"], vec![]),
        ]);
        let mut overrides = HashMap::new();
        overrides.insert("get".to_string(), CommandOverride::Write);
        let t = CommandTable::from_command_reply(&reply, "7.0".into(), HashMap::new());
        assert_eq!(t.classify(&args("GET k")), Class::Read);
        assert_eq!(t.classify(&args("set k v")), Class::Write);
        assert_eq!(t.classify(&args("BLPOP k 0")), Class::Blocking);
        assert_eq!(t.classify(&args("XREAD STREAMS s 0")), Class::Read);
        assert_eq!(
            t.classify(&args("XREAD BLOCK 0 STREAMS s 0")),
            Class::Blocking
        );
        assert_eq!(t.classify(&args("OBJECT ENCODING k")), Class::Read);
        assert_eq!(t.classify(&args("CONFIG GET x")), Class::Write);
        assert!(matches!(
            t.classify(&args("CONFIG SET x y")),
            Class::Denied(_)
        ));
        assert!(matches!(t.classify(&args("MONITOR")), Class::Denied(_)));
        assert_eq!(t.classify(&args("PUBLISH c m")), Class::Write);
        assert_eq!(t.classify(&args("NOSUCHCMD")), Class::Write);
        let t = CommandTable::from_command_reply(&reply, "7.0".into(), overrides);
        assert_eq!(t.classify(&args("GET k")), Class::Write);
    }
}
