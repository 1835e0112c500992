use belay_resp::Value;

/// What a node says it is, from `ROLE` — the one answer belay trusts over
/// anything a Sentinel or a config file claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master {
        offset: i64,
        /// (host, port, acknowledged offset) of each connected replica.
        replicas: Vec<(String, u16, i64)>,
    },
    Replica {
        master_host: String,
        master_port: u16,
        /// `connect`, `connecting`, `sync` or `connected`.
        state: String,
        offset: i64,
    },
    Sentinel {
        masters: Vec<String>,
    },
}

impl Role {
    pub fn from_value(v: &Value) -> Option<Role> {
        let items = v.as_array()?;
        match items.first()?.as_str()? {
            "master" => {
                let offset = items.get(1)?.as_int()?;
                let mut replicas = Vec::new();
                for r in items.get(2).and_then(|x| x.as_array()).unwrap_or_default() {
                    let r = r.as_array()?;
                    replicas.push((
                        r.first()?.to_text()?,
                        r.get(1)?.as_int()? as u16,
                        r.get(2)?.as_int()?,
                    ));
                }
                Some(Role::Master { offset, replicas })
            }
            "slave" | "replica" => Some(Role::Replica {
                master_host: items.get(1)?.to_text()?,
                master_port: items.get(2)?.as_int()? as u16,
                state: items.get(3)?.to_text()?,
                offset: items.get(4)?.as_int()?,
            }),
            "sentinel" => Some(Role::Sentinel {
                masters: items
                    .get(1)
                    .and_then(|x| x.as_array())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|m| m.to_text())
                    .collect(),
            }),
            _ => None,
        }
    }

    /// `master`, `slave` or `sentinel`, as Redis spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Master { .. } => "master",
            Role::Replica { .. } => "slave",
            Role::Sentinel { .. } => "sentinel",
        }
    }

    pub fn is_master(&self) -> bool {
        matches!(self, Role::Master { .. })
    }
}
