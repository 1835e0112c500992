//! The config files the lab writes: one `redis.conf` per data node and one
//! `sentinel.conf` per Sentinel. Pure functions from the spec to text, so
//! the safe defaults are visible (and tested) in one place.
//!
//! Both files must stay writable: Sentinel rewrites its own file as it
//! learns the topology, and sends `CONFIG REWRITE` to data nodes it
//! reconfigures (a restarted node comes back with the role Sentinel gave it).

use std::fmt::Write as _;

use crate::process::ProcessRecord;
use crate::spec::LabSpec;

/// `redis.conf` for one data node. `replica_of` is the initial master's
/// `host:port` for replicas, `None` for the master.
pub fn redis_conf(
    spec: &LabSpec,
    node: &ProcessRecord,
    replica_of: Option<(&str, u16)>,
    password: &str,
) -> String {
    let mut c = String::new();
    let pw = quote(password);
    header(&mut c, &node.name);
    listen(&mut c, spec, node.port);
    line(&mut c, "bind", &node.host);
    // Protected mode stays on: with `bind` and `requirepass` set it does not
    // get in the way, and it guards against a misconfigured bind.
    line(&mut c, "protected-mode", "yes");
    line(&mut c, "daemonize", "no");
    line(&mut c, "dir", &quote(&node.dir.display().to_string()));
    line(&mut c, "logfile", &quote(&node.log.display().to_string()));
    // Auth everywhere; `masterauth` on every node because roles swap.
    line(&mut c, "requirepass", &pw);
    line(&mut c, "masterauth", &pw);
    // Announce the bound address, so Sentinel and replicas see a reachable one.
    line(&mut c, "replica-announce-ip", &node.host);
    if spec.own_loopback_addrs {
        // Replication connections leave from the node's own address too.
        line(&mut c, "bind-source-addr", &node.host);
    }
    // An isolated master stops taking writes instead of losing them later.
    line(
        &mut c,
        "min-replicas-to-write",
        &spec.min_replicas_to_write.to_string(),
    );
    line(
        &mut c,
        "min-replicas-max-lag",
        &spec.min_replicas_max_lag.to_string(),
    );
    if spec.persistence {
        line(&mut c, "appendonly", "yes");
        line(&mut c, "appendfsync", "everysec");
    } else {
        line(&mut c, "appendonly", "no");
        line(&mut c, "save", "\"\"");
    }
    // Diskless full syncs start at once instead of waiting 5 s for more
    // replicas to join: the lab's data is small, and a rejoining node (the
    // seed note's returning master) syncs without a pause.
    line(&mut c, "repl-diskless-sync-delay", "0");
    if let Some((host, port)) = replica_of {
        line(&mut c, "replicaof", &format!("{host} {port}"));
    }
    for extra in &spec.extra_redis_config {
        c.push_str(extra);
        c.push('\n');
    }
    c
}

/// `sentinel.conf` for one Sentinel, monitoring the initial master.
pub fn sentinel_conf(
    spec: &LabSpec,
    sentinel: &ProcessRecord,
    master: (&str, u16),
    password: &str,
) -> String {
    let mut c = String::new();
    let pw = quote(password);
    let name = &spec.master_name;
    header(&mut c, &sentinel.name);
    listen(&mut c, spec, sentinel.port);
    line(&mut c, "bind", &sentinel.host);
    if spec.own_loopback_addrs {
        // Connect from, and tell the other Sentinels about, its own address.
        line(&mut c, "bind-source-addr", &sentinel.host);
        line(&mut c, "sentinel announce-ip", &sentinel.host);
    }
    line(&mut c, "protected-mode", "yes");
    line(&mut c, "daemonize", "no");
    line(&mut c, "dir", &quote(&sentinel.dir.display().to_string()));
    line(
        &mut c,
        "logfile",
        &quote(&sentinel.log.display().to_string()),
    );
    // The Sentinel itself needs a password (clients authenticate to it), and
    // then Sentinels need it to talk to each other.
    line(&mut c, "requirepass", &pw);
    line(&mut c, "sentinel sentinel-pass", &pw);
    line(
        &mut c,
        "sentinel monitor",
        &format!("{name} {} {} {}", master.0, master.1, spec.quorum()),
    );
    line(&mut c, "sentinel auth-pass", &format!("{name} {pw}"));
    line(
        &mut c,
        "sentinel down-after-milliseconds",
        &format!("{name} {}", spec.down_after_ms),
    );
    line(
        &mut c,
        "sentinel failover-timeout",
        &format!("{name} {}", spec.failover_timeout_ms),
    );
    line(&mut c, "sentinel parallel-syncs", &format!("{name} 1"));
    for extra in &spec.extra_sentinel_config {
        c.push_str(extra);
        c.push('\n');
    }
    c
}

/// The port a process listens on: plain, or (with `tls`) TLS only, with
/// its outgoing links (replication, Sentinel to nodes and to Sentinels)
/// over TLS too, and client certificates required (Redis's default).
fn listen(c: &mut String, spec: &LabSpec, port: u16) {
    if !spec.tls {
        line(c, "port", &port.to_string());
        return;
    }
    let tls = spec.tls_files();
    let path = |p: std::path::PathBuf| quote(&p.display().to_string());
    line(c, "port", "0");
    line(c, "tls-port", &port.to_string());
    line(c, "tls-cert-file", &path(tls.server_cert()));
    line(c, "tls-key-file", &path(tls.server_key()));
    line(c, "tls-client-cert-file", &path(tls.client_cert()));
    line(c, "tls-client-key-file", &path(tls.client_key()));
    line(c, "tls-ca-cert-file", &path(tls.ca()));
    line(c, "tls-auth-clients", "yes");
    line(c, "tls-replication", "yes");
}

fn header(c: &mut String, name: &str) {
    let _ = writeln!(
        c,
        "# {name}: generated by `belay up`. Regenerated on every `up`;\n\
         # Sentinel may append a `# Generated by CONFIG REWRITE` section while it runs."
    );
}

fn line(c: &mut String, key: &str, value: &str) {
    let _ = writeln!(c, "{key} {value}");
}

/// Quotes a value the way redis.conf parses double-quoted strings, so
/// passwords and paths with spaces, quotes or `#` survive.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::LabSpec;

    fn spec() -> LabSpec {
        LabSpec {
            dir: "/tmp/lab".into(),
            ..LabSpec::default()
        }
    }

    #[test]
    fn replica_conf_has_the_safe_defaults() {
        let spec = spec();
        let plan = spec.plan();
        let conf = redis_conf(&spec, &plan[1], Some(("127.0.0.1", 6379)), "pw");
        for want in [
            "port 6380\n",
            "bind 127.0.0.1\n",
            "protected-mode yes\n",
            "daemonize no\n",
            "requirepass \"pw\"\n",
            "masterauth \"pw\"\n",
            "min-replicas-to-write 1\n",
            "min-replicas-max-lag 10\n",
            "appendonly yes\n",
            "replica-announce-ip 127.0.0.1\n",
            "replicaof 127.0.0.1 6379\n",
            "dir \"/tmp/lab/redis-2\"\n",
        ] {
            assert!(conf.contains(want), "missing {want:?} in\n{conf}");
        }
    }

    #[test]
    fn own_loopback_addrs_bind_announce_and_connect_from_them() {
        let spec = LabSpec {
            own_loopback_addrs: true,
            ..spec()
        };
        let plan = spec.plan();
        let conf = redis_conf(&spec, &plan[1], Some(("127.0.0.2", 6379)), "pw");
        for want in [
            "bind 127.0.0.3\n",
            "replica-announce-ip 127.0.0.3\n",
            "bind-source-addr 127.0.0.3\n",
            "replicaof 127.0.0.2 6379\n",
        ] {
            assert!(conf.contains(want), "missing {want:?} in\n{conf}");
        }
        let conf = sentinel_conf(&spec, &plan[3], ("127.0.0.2", 6379), "pw");
        for want in [
            "bind 127.0.0.5\n",
            "bind-source-addr 127.0.0.5\n",
            "sentinel announce-ip 127.0.0.5\n",
        ] {
            assert!(conf.contains(want), "missing {want:?} in\n{conf}");
        }
        // The default lab is unchanged.
        let plain_spec = super::tests::spec();
        let plain = redis_conf(&plain_spec, &plain_spec.plan()[1], None, "pw");
        assert!(!plain.contains("bind-source-addr"));
    }

    #[test]
    fn tls_listens_only_on_tls_and_links_over_it() {
        let spec = LabSpec {
            tls: true,
            ..spec()
        };
        let plan = spec.plan();
        for conf in [
            redis_conf(&spec, &plan[1], Some(("127.0.0.1", 6379)), "pw"),
            sentinel_conf(&spec, &plan[3], ("127.0.0.1", 6379), "pw"),
        ] {
            for want in [
                "port 0\n",
                "tls-cert-file \"/tmp/lab/tls/server.crt\"\n",
                "tls-ca-cert-file \"/tmp/lab/tls/ca.crt\"\n",
                "tls-client-cert-file \"/tmp/lab/tls/client.crt\"\n",
                "tls-auth-clients yes\n",
                "tls-replication yes\n",
            ] {
                assert!(conf.contains(want), "missing {want:?} in\n{conf}");
            }
        }
        assert!(redis_conf(&spec, &plan[1], None, "pw").contains("tls-port 6380\n"));
    }

    #[test]
    fn no_persistence_turns_off_aof_and_snapshots() {
        let spec = LabSpec {
            persistence: false,
            ..spec()
        };
        let conf = redis_conf(&spec, &spec.plan()[0], None, "pw");
        assert!(conf.contains("appendonly no\n"));
        assert!(conf.contains("save \"\"\n"));
        assert!(!conf.contains("replicaof"));
    }

    #[test]
    fn sentinel_conf_authenticates_both_ways() {
        let spec = spec();
        let plan = spec.plan();
        let conf = sentinel_conf(&spec, &plan[3], ("127.0.0.1", 6379), "p w\"");
        for want in [
            "port 26379\n",
            "requirepass \"p w\\\"\"\n",
            "sentinel sentinel-pass \"p w\\\"\"\n",
            "sentinel monitor mymaster 127.0.0.1 6379 2\n",
            "sentinel auth-pass mymaster \"p w\\\"\"\n",
            "sentinel down-after-milliseconds mymaster 5000\n",
            "sentinel failover-timeout mymaster 60000\n",
        ] {
            assert!(conf.contains(want), "missing {want:?} in\n{conf}");
        }
        // `monitor` must come before the per-master options.
        assert!(conf.find("sentinel monitor").unwrap() < conf.find("sentinel auth-pass").unwrap());
    }
}
