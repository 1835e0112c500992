//! Which server software the master runs, from its `INFO server`. Valkey
//! keeps `redis_version:7.2.4` there for old clients whatever its own
//! version, and names itself in `server_name:valkey` and
//! `valkey_version:8.1.8`; so the version alone would neither tell a Valkey
//! upgrade (the command table would not be read again) nor let `HELLO`
//! through the gateway say what the node's own `HELLO` says.

use std::fmt;

use belay_client::Info;

/// The master's server name and version, as its own `HELLO` gives them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Software {
    /// `redis` or `valkey`.
    pub name: String,
    /// That server's own version (`valkey_version` on Valkey).
    pub version: String,
}

impl Software {
    /// Reads `INFO server`: `server_name` and `<server_name>_version` where
    /// the server gives them (Valkey), else Redis's `redis_version`.
    pub fn from_info(info: &Info) -> Software {
        let redis = || Software {
            name: "redis".into(),
            version: info.get("redis_version").unwrap_or("").to_string(),
        };
        match info.get("server_name").filter(|n| !n.is_empty()) {
            Some(name) => match info.get(&format!("{name}_version")) {
                Some(version) => Software {
                    name: name.to_string(),
                    version: version.to_string(),
                },
                None => redis(),
            },
            None => redis(),
        }
    }

    /// A Redis of `version` (tables built in tests).
    pub fn redis(version: &str) -> Software {
        Software {
            name: "redis".into(),
            version: version.into(),
        }
    }
}

impl fmt::Display for Software {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> Info {
        Info::parse(text)
    }

    #[test]
    fn valkey_is_named_by_its_own_version_not_the_compatible_one() {
        let s = Software::from_info(&info(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n",
        ));
        assert_eq!(
            s,
            Software {
                name: "valkey".into(),
                version: "8.1.8".into()
            }
        );
    }

    #[test]
    fn redis_has_no_server_name() {
        let s = Software::from_info(&info("# Server\r\nredis_version:7.0.15\r\n"));
        assert_eq!(s, Software::redis("7.0.15"));
    }
}
