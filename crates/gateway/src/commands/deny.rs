//! Commands a proxy in front of several nodes cannot honour, and why. These
//! rules are the gateway's own, by name and subcommand: they hold before
//! the master's `COMMAND` table is loaded, when it cannot be read, and for
//! servers whose table lists no subcommands (Redis 6), because a command
//! that slipped through as an ordinary write could break connections that
//! other clients share (`CLIENT REPLY SKIP` shifts every reply after it).

/// Why `name` (lowercase, with `sub` its lowercase subcommand if it has
/// one) is refused, if it is.
pub fn denial(name: &[u8], sub: Option<&[u8]>) -> Option<&'static str> {
    let reason = match name {
        b"monitor" => {
            "MONITOR would stream every command of a shared connection; run it on a node directly"
        }
        b"shutdown" => "SHUTDOWN would stop a node behind the gateway; run it on the node directly",
        b"replicaof" | b"slaveof" => {
            "replication is managed by Sentinel; use SENTINEL FAILOVER or the nodes directly"
        }
        b"failover" => "failover is managed by Sentinel; use SENTINEL FAILOVER",
        b"debug" => match sub? {
            b"protocol" => {
                "DEBUG PROTOCOL can answer with push and attribute frames, which would break reply ordering on shared connections"
            }
            b"segfault" | b"panic" | b"assert" | b"restart" | b"crash-and-recover" | b"oom"
            | b"kvstore-alloc" => "it would crash or restart a node behind the gateway; run it on the node directly",
            _ => return None,
        },
        b"sync" | b"psync" | b"replconf" => "replication streams cannot go through the gateway",
        b"module" => {
            "MODULE is not allowed through the gateway; load modules on every node directly"
        }
        b"cluster" | b"asking" | b"restore-asking" => {
            "the gateway fronts a Sentinel-managed deployment, not a cluster"
        }
        b"config" => match sub? {
            b"rewrite" => {
                "CONFIG REWRITE would rewrite one node's config file; run it on each node directly"
            }
            _ => return None,
        },
        b"acl" => match sub? {
            b"load" | b"save" => {
                "ACL LOAD/SAVE act on one node's ACL file; run them on each node directly"
            }
            _ => return None,
        },
        b"client" => match sub? {
            b"reply" => "CLIENT REPLY would break reply ordering on shared connections",
            b"tracking" | b"caching" | b"getredir" | b"trackinginfo" => {
                "client-side caching is not supported through the gateway"
            }
            b"pause" | b"unpause" | b"kill" | b"no-evict" | b"no-touch" | b"unblock" => {
                "it would affect other clients of the node; run it on the node directly"
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(reason)
}

/// The gateway's rules for `name` depend on its subcommand: its routing
/// cannot be decided by name alone.
pub fn by_subcommand(name: &[u8]) -> bool {
    matches!(name, b"config" | b"acl" | b"client" | b"debug")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_need_no_command_table() {
        assert!(denial(b"monitor", None).is_some());
        assert!(denial(b"client", Some(b"reply")).is_some());
        assert!(denial(b"client", Some(b"kill")).is_some());
        assert!(denial(b"client", Some(b"unblock")).is_some());
        assert!(denial(b"client", Some(b"list")).is_none());
        assert!(denial(b"client", None).is_none());
        assert!(denial(b"config", Some(b"rewrite")).is_some());
        assert!(denial(b"config", Some(b"get")).is_none());
        assert!(denial(b"acl", Some(b"save")).is_some());
        assert!(denial(b"get", None).is_none());
        assert!(denial(b"debug", Some(b"protocol")).is_some());
        assert!(denial(b"debug", Some(b"segfault")).is_some());
        assert!(denial(b"debug", Some(b"object")).is_none());
    }
}
