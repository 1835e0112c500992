use std::collections::HashMap;

/// Fields of an `INFO` reply (`key:value` lines), for reading replication
/// state: `role`, `master_link_status`, `master_repl_offset`, `slaveN`, ...
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub fields: HashMap<String, String>,
}

impl Info {
    pub fn parse(text: &str) -> Info {
        let fields = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Info { fields }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|s| s.as_str())
    }

    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.parse().ok()
    }

    /// A comma-separated `a=1,b=2` field (like `slave0` or `db0`) as pairs.
    pub fn get_map(&self, key: &str) -> Option<HashMap<String, String>> {
        Some(
            self.get(key)?
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replication_section() {
        let info = Info::parse(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n",
        );
        assert_eq!(info.get("role"), Some("master"));
        assert_eq!(info.get_i64("connected_slaves"), Some(1));
        assert_eq!(info.get_map("slave0").unwrap()["offset"], "42");
    }
}
