//! How each command is routed, learned from the master's own `COMMAND`
//! reply so new and module commands route right without a hand-kept list;
//! the gateway's own refusals ([`deny`]) come first and need no table.

mod deny;
mod keys;
mod software;

use std::collections::HashMap;

use belay_resp::{Request, Value};
use rustc_hash::FxHashMap;

use crate::config::CommandOverride;

pub use deny::denial;
pub use keys::{KeyFinder, KeyPositions};
pub use software::Software;

/// What a forwarded command needs from the backend side: the one
/// classification routing, retries and the reply path work from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Read-only: a replica may serve it.
    Read,
    /// A read whose cursor only means something on the node that issued it
    /// (`SCAN`, `SSCAN`, `HSCAN`, `ZSCAN`).
    CursorRead,
    /// Must run on the master.
    Write,
    /// Must run on the master and writes no data (`INFO`, `FUNCTION
    /// STATS`, `CLIENT LIST`…): the confirmed master, even while writes are
    /// held — Redis runs `FUNCTION STATS` while a script does, and a
    /// client asking for `INFO` during a failover gets it.
    Admin,
    /// May block its connection (BLPOP, XREAD BLOCK, …): the session's own
    /// master connection.
    Blocking,
    /// `WAIT`/`WAITAOF`: may block, writes nothing, and may run on the
    /// confirmed master while writes are held.
    Wait,
    /// Refused by the gateway; the reason is in the error.
    Denied(&'static str),
}

impl Class {
    /// Running it twice could change data (or it was refused anyway).
    pub fn has_effect(self) -> bool {
        matches!(self, Class::Write | Class::Blocking)
    }

    /// A replica may serve it.
    pub fn is_read(self) -> bool {
        matches!(self, Class::Read | Class::CursorRead)
    }

    /// May keep its connection silent for long.
    pub fn may_block(self) -> bool {
        matches!(self, Class::Blocking | Class::Wait)
    }
}

/// A command's class and whether its replies are a script's or a
/// function's: those are whatever the script returned, so an error reply
/// that looks like a node's refusal (`READONLY`, `BUSY`, …) may be the
/// script's own words, and is never taken for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    pub class: Class,
    pub scripted: bool,
}

impl Routing {
    pub const fn plain(class: Class) -> Routing {
        Routing {
            class,
            scripted: false,
        }
    }
}

/// What `COMMAND` says about one command (or subcommand).
#[derive(Debug, Clone, Default)]
struct CommandInfo {
    readonly: bool,
    write: bool,
    blocking: bool,
    pubsub: bool,
    /// Writes nothing itself but may replicate something (`EVAL`,
    /// `PUBLISH`, `SCRIPT LOAD`…): a write for the gateway.
    may_replicate: bool,
    /// Where its keys are (for routing by hash slot).
    keys: KeyFinder,
    subcommands: FxHashMap<String, CommandInfo>,
}

/// Routing knowledge for every command the master knows, plus overrides.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    /// Looked up once per command: a fast non-cryptographic hash (the keys
    /// come from the server, not from clients).
    commands: FxHashMap<String, CommandInfo>,
    overrides: HashMap<String, CommandOverride>,
    /// The final routing of every command whose routing does not depend on
    /// its arguments (no subcommands, not `XREAD`'s optional `BLOCK`),
    /// overrides and denials applied: one hash lookup per command on the
    /// hot path. Clients choose the names looked up, but a miss only costs
    /// the full rules.
    resolved: FxHashMap<Box<[u8]>, Routing>,
    /// The server (name and version) the table was read from.
    pub software: Software,
    /// The master it was read from.
    pub master: String,
    /// That master runs `DEBUG` from any address (`enable-debug-command
    /// yes`). With `local`, it would run it for the gateway — a local
    /// connection — on behalf of a client that may be anywhere: refused.
    pub debug_from_anywhere: bool,
}

impl CommandTable {
    /// Builds the table from a `COMMAND` reply.
    pub fn from_command_reply(
        reply: &Value,
        software: Software,
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
            software,
            master: String::new(),
            debug_from_anywhere: false,
        };
        let resolved = table
            .commands
            .iter()
            .filter(|(name, info)| {
                info.subcommands.is_empty()
                    && !matches!(name.as_str(), "xread" | "xreadgroup")
                    && !deny::by_subcommand(name.as_bytes())
            })
            .filter_map(|(name, _)| {
                let req = Request::from_args([name.as_str()]);
                let routing = table.classify_in_full(name.as_bytes(), &req)?;
                Some((name.as_bytes().into(), routing))
            })
            .collect();
        table.resolved = resolved;
        table
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// No table loaded yet (or the master's could not be read).
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// A config override that denies `name` (lowercase), for the commands
    /// the gateway answers itself and that never reach the table.
    pub fn denied_by_config(&self, name: &[u8], sub: Option<&[u8]>) -> bool {
        let name = std::str::from_utf8(name).unwrap_or("");
        if let Some(sub) = sub.and_then(|s| std::str::from_utf8(s).ok()) {
            let full = format!("{name}|{}", sub.to_ascii_lowercase());
            if let Some(o) = self.overrides.get(&full) {
                return *o == CommandOverride::Deny;
            }
        }
        self.overrides.get(name) == Some(&CommandOverride::Deny)
    }

    /// How `req` routes; `name` is its name in lowercase. The bool says
    /// whether the answer holds for every use of the name (it does not
    /// depend on the arguments), so a caller may remember it. `None`: no
    /// table is loaded and the gateway's own rules do not decide, so the
    /// command must wait for the table.
    pub fn classify(&self, name: &[u8], req: &Request) -> Option<(Routing, bool)> {
        if let Some(routing) = self.resolved.get(name) {
            return Some((*routing, true));
        }
        self.classify_in_full(name, req).map(|r| (r, false))
    }

    /// The positions of `req`'s keys (`name` in lowercase), by the key
    /// specs of the command or of its subcommand. Empty for commands the
    /// table does not know and for those without keys.
    pub fn key_positions(&self, name: &[u8], req: &Request) -> KeyPositions {
        let name_str = std::str::from_utf8(name).unwrap_or("");
        let Some(info) = self.commands.get(name_str) else {
            return KeyPositions::new();
        };
        let info = match req.arg(1) {
            Some(sub) if !info.subcommands.is_empty() => {
                let full = format!(
                    "{name_str}|{}",
                    String::from_utf8_lossy(sub).to_ascii_lowercase()
                );
                match info.subcommands.get(&full) {
                    Some(sub) => sub,
                    None => return KeyPositions::new(),
                }
            }
            _ => info,
        };
        info.keys.positions(req)
    }

    /// The full rules: overrides, denials, subcommands, flags.
    fn classify_in_full(&self, name: &[u8], req: &Request) -> Option<Routing> {
        let mut sub_buf = [0u8; 32];
        let sub = req.arg(1).map(|s| lower(s, &mut sub_buf));
        let name_str = std::str::from_utf8(name).unwrap_or("");
        let info = self.commands.get(name_str);
        let sub_info = match (info, sub) {
            (Some(i), Some(sub)) if !i.subcommands.is_empty() => {
                let full = format!("{name_str}|{}", String::from_utf8_lossy(sub));
                if let Some(o) = self.overrides.get(&full) {
                    return Some(Routing::plain(overridden(*o)));
                }
                i.subcommands.get(&full)
            }
            _ => {
                // Overrides of subcommands apply before the table is loaded too.
                if let Some(sub) = sub {
                    let full = format!("{name_str}|{}", String::from_utf8_lossy(sub));
                    if let Some(o) = self.overrides.get(&full) {
                        return Some(Routing::plain(overridden(*o)));
                    }
                }
                None
            }
        };
        if let Some(o) = self.overrides.get(name_str) {
            return Some(Routing::plain(overridden(*o)));
        }
        if let Some(reason) = denial(name, sub) {
            return Some(Routing::plain(Class::Denied(reason)));
        }
        if self.commands.is_empty() {
            return None;
        }
        if name == b"debug" && !self.debug_from_anywhere {
            return Some(Routing::plain(Class::Denied(DEBUG_LOCAL_ONLY)));
        }
        let scripted = matches!(
            name,
            b"eval" | b"evalsha" | b"eval_ro" | b"evalsha_ro" | b"fcall" | b"fcall_ro"
        );
        let Some(info) = sub_info.or(info) else {
            // Unknown to the master: it will say so itself.
            return Some(Routing::plain(Class::Write));
        };
        let class = if info.blocking && is_really_blocking(name, req) {
            Class::Blocking
        } else if info.readonly && !info.write && !info.pubsub {
            if matches!(name, b"scan" | b"sscan" | b"hscan" | b"zscan") {
                Class::CursorRead
            } else {
                Class::Read
            }
        } else if !info.write
            && !info.may_replicate
            && !info.pubsub
            && !scripted
            && !info.blocking
            && name != b"debug"
        {
            Class::Admin
        } else {
            Class::Write
        };
        Some(Routing { class, scripted })
    }
}

/// Why `DEBUG` is refused when the master does not run it from anywhere.
const DEBUG_LOCAL_ONLY: &str = "DEBUG goes through the gateway only to a master that runs it from any address (enable-debug-command yes); run it on the node directly";

fn overridden(o: CommandOverride) -> Class {
    match o {
        CommandOverride::Read => Class::Read,
        CommandOverride::Write | CommandOverride::Allow => Class::Write,
        CommandOverride::Deny => Class::Denied("denied by the gateway's configuration"),
    }
}

/// XREAD and XREADGROUP carry the `blocking` flag but block only with BLOCK.
fn is_really_blocking(name: &[u8], req: &Request) -> bool {
    match name {
        b"xread" | b"xreadgroup" => req.args().skip(1).any(|a| a.eq_ignore_ascii_case(b"block")),
        _ => true,
    }
}

/// `name` in lowercase, in `buf`; cut at the buffer's length (no command
/// or subcommand name is that long).
pub fn lower<'a, const N: usize>(name: &[u8], buf: &'a mut [u8; N]) -> &'a [u8] {
    let n = name.len().min(N);
    for (d, s) in buf.iter_mut().zip(&name[..n]) {
        *d = s.to_ascii_lowercase();
    }
    &buf[..n]
}

fn parse_entry(entry: &Value) -> Option<(String, CommandInfo)> {
    let items = entry.as_array()?;
    let name = items.first()?.to_text()?.to_ascii_lowercase();
    let mut info = CommandInfo {
        keys: KeyFinder::from_entry(items),
        ..CommandInfo::default()
    };
    for flag in items.get(2).and_then(|f| f.as_array()).unwrap_or_default() {
        match flag.as_str() {
            Some("readonly") => info.readonly = true,
            Some("write") => info.write = true,
            Some("blocking") => info.blocking = true,
            Some("pubsub") => info.pubsub = true,
            Some("may_replicate") => info.may_replicate = true,
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

    fn class(t: &CommandTable, s: &str) -> Option<Class> {
        let req = Request::from_args(s.split(' '));
        let mut buf = [0u8; 32];
        let name = lower(req.name().unwrap(), &mut buf);
        t.classify(name, &req).map(|(r, _)| r.class)
    }

    fn table(overrides: HashMap<String, CommandOverride>) -> CommandTable {
        let reply = Value::Array(vec![
            entry("get", &["readonly", "fast"], vec![]),
            entry("set", &["write", "denyoom"], vec![]),
            entry("blpop", &["write", "blocking"], vec![]),
            entry("xread", &["readonly", "blocking"], vec![]),
            entry("scan", &["readonly"], vec![]),
            entry("eval_ro", &["readonly", "noscript"], vec![]),
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
            entry("info", &["loading", "stale"], vec![]),
            entry("eval", &["noscript", "may_replicate"], vec![]),
            entry("fcall", &["noscript"], vec![]),
            entry("save", &["admin", "noscript"], vec![]),
            entry("bgsave", &["admin", "noscript"], vec![]),
        ]);
        CommandTable::from_command_reply(&reply, Software::redis("7.0"), overrides)
    }

    #[test]
    fn classifies_from_flags() {
        let t = table(HashMap::new());
        assert_eq!(class(&t, "GET k"), Some(Class::Read));
        assert_eq!(class(&t, "set k v"), Some(Class::Write));
        assert_eq!(class(&t, "BLPOP k 0"), Some(Class::Blocking));
        assert_eq!(class(&t, "XREAD STREAMS s 0"), Some(Class::Read));
        assert_eq!(
            class(&t, "XREAD BLOCK 0 STREAMS s 0"),
            Some(Class::Blocking)
        );
        assert_eq!(class(&t, "SCAN 0"), Some(Class::CursorRead));
        assert_eq!(class(&t, "OBJECT ENCODING k"), Some(Class::Read));
        // Writes no data: the confirmed master, even while writes wait.
        assert_eq!(class(&t, "CONFIG GET x"), Some(Class::Admin));
        assert_eq!(class(&t, "INFO"), Some(Class::Admin));
        assert_eq!(class(&t, "SAVE"), Some(Class::Admin));
        // What may replicate, and scripts whatever their flags, are writes.
        assert_eq!(class(&t, "EVAL x 0"), Some(Class::Write));
        assert_eq!(class(&t, "FCALL f 0"), Some(Class::Write));
        assert!(matches!(class(&t, "MONITOR"), Some(Class::Denied(_))));
        assert_eq!(class(&t, "PUBLISH c m"), Some(Class::Write));
        assert_eq!(class(&t, "NOSUCHCMD"), Some(Class::Write));
        let req = Request::from_args(["EVAL_RO", "return 1", "0"]);
        assert!(t.classify(b"eval_ro", &req).unwrap().0.scripted);
        let mut overrides = HashMap::new();
        overrides.insert("get".to_string(), CommandOverride::Write);
        overrides.insert("client|kill".to_string(), CommandOverride::Allow);
        let t = table(overrides);
        assert_eq!(class(&t, "GET k"), Some(Class::Write));
        assert_eq!(class(&t, "CLIENT KILL ID 3"), Some(Class::Write));
    }

    #[test]
    fn without_a_table_denials_still_hold_and_everything_else_waits() {
        let t = CommandTable::default();
        assert!(matches!(
            class(&t, "CLIENT REPLY SKIP"),
            Some(Class::Denied(_))
        ));
        assert!(matches!(
            class(&t, "client kill id 1"),
            Some(Class::Denied(_))
        ));
        assert!(matches!(class(&t, "SHUTDOWN"), Some(Class::Denied(_))));
        assert_eq!(class(&t, "GET k"), None);
        assert_eq!(class(&t, "SET k v"), None);
    }

    #[test]
    fn denials_hold_for_a_table_without_subcommands() {
        // Redis 6's COMMAND lists no subcommands.
        let reply = Value::Array(vec![entry("client", &["admin"], vec![])]);
        let t = CommandTable::from_command_reply(&reply, Software::redis("6.2"), HashMap::new());
        assert!(matches!(
            class(&t, "CLIENT REPLY OFF"),
            Some(Class::Denied(_))
        ));
        assert!(matches!(
            class(&t, "CLIENT PAUSE 100"),
            Some(Class::Denied(_))
        ));
        assert_eq!(class(&t, "CLIENT LIST"), Some(Class::Admin));
    }

    #[test]
    fn config_can_deny_what_the_gateway_answers_itself() {
        let mut overrides = HashMap::new();
        overrides.insert("config|set".to_string(), CommandOverride::Deny);
        let t = table(overrides);
        assert!(t.denied_by_config(b"config", Some(b"SET")));
        assert!(!t.denied_by_config(b"config", Some(b"get")));
    }
}
