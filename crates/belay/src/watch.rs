//! `belay status --watch`: the dashboard in a terminal. Every interval it
//! asks the nodes and Sentinels (as `belay status` does) and the gateway's
//! admin endpoint (`/metrics` for traffic and latency, `/failovers` for the
//! timeline), and redraws.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use belay_gateway::Episode;

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text exposition (the subset the gateway writes: no
/// timestamps, label values without escaped quotes). Hand-written: the
/// format is a line per sample, and the crates that parse it bring an HTTP
/// scraper with them.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}')?;
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .filter_map(|p| {
                            let (k, v) = p.split_once("=\"")?;
                            Some((k.to_string(), v.trim_end_matches('"').to_string()))
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            Some(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// A scrape and when it was taken.
pub struct Scrape {
    pub at: Instant,
    pub samples: Vec<Sample>,
}

impl Scrape {
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }

    /// A histogram's cumulative buckets for one destination, by bound.
    fn buckets(&self, name: &str, destination: &str) -> Vec<(f64, f64)> {
        let mut b: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.label("destination") == Some(destination))
            .filter_map(|s| {
                let le = match s.label("le")? {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().ok()?,
                };
                Some((le, s.value))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }
}

/// What the traffic section shows, from two scrapes.
#[derive(Debug, Default, PartialEq)]
pub struct Traffic {
    pub to_master: f64,
    pub to_replicas: f64,
    pub answered_by_gateway: f64,
    /// Reads served by replicas, of all reads (`None` without reads).
    pub read_share: Option<f64>,
    /// p50 and p99 round trips, master then replicas (`None` without any).
    pub latency: [Option<(f64, f64)>; 2],
    pub clients: f64,
    pub waiting: f64,
    pub errors_per_sec: f64,
    /// Commands per second to each node.
    pub per_node: Vec<(String, String, f64)>,
}

/// Rates between `then` and `now`.
pub fn traffic(then: &Scrape, now: &Scrape) -> Traffic {
    let secs = now.at.duration_since(then.at).as_secs_f64().max(1e-3);
    let rate = |name: &str, labels: &[(&str, &str)]| {
        (now.sum(name, labels) - then.sum(name, labels)).max(0.0) / secs
    };
    let commands = "belay_commands_total";
    let reads_replica = rate(commands, &[("class", "read"), ("destination", "replica")]);
    let reads_master = rate(commands, &[("class", "read"), ("destination", "master")]);
    let hist = "belay_backend_request_duration_seconds_bucket";
    let latency = ["master", "replica"].map(|d| {
        let (a, b) = (then.buckets(hist, d), now.buckets(hist, d));
        Some((quantile(0.5, &a, &b)?, quantile(0.99, &a, &b)?))
    });
    let mut per_node: Vec<(String, String, f64)> = now
        .samples
        .iter()
        .filter(|s| s.name == "belay_node_commands_total")
        .filter_map(|s| {
            let node = s.label("node")?;
            let role = s.label("role")?;
            let before = then.sum("belay_node_commands_total", &[("node", node)]);
            Some((
                node.to_string(),
                role.to_string(),
                (s.value - before).max(0.0) / secs,
            ))
        })
        .collect();
    // The master first, then the replicas by address.
    per_node.sort_by_key(|(node, role, _)| (role != "master", node.clone()));
    Traffic {
        to_master: rate(commands, &[("destination", "master")]),
        to_replicas: rate(commands, &[("destination", "replica")]),
        answered_by_gateway: rate(commands, &[("destination", "gateway")]),
        read_share: (reads_replica + reads_master > 0.0)
            .then(|| reads_replica / (reads_replica + reads_master)),
        latency,
        clients: now.sum("belay_client_connections", &[]),
        waiting: now.sum("belay_held_commands", &[]),
        errors_per_sec: rate("belay_errors_total", &[]),
        per_node,
    }
}

/// The q-quantile of what was observed between two cumulative histograms,
/// interpolated within its bucket (as Prometheus's `histogram_quantile`).
pub fn quantile(q: f64, then: &[(f64, f64)], now: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .map(|(le, n)| {
            let before = then.iter().find(|(l, _)| l == le).map_or(0.0, |(_, b)| *b);
            (*le, n - before)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_n) = (0.0, 0.0);
    for (le, n) in delta {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let in_bucket = n - prev_n;
            return Some(if in_bucket > 0.0 {
                prev_le + (le - prev_le) * ((rank - prev_n) / in_bucket)
            } else {
                le
            });
        }
        prev_le = le;
        prev_n = n;
    }
    Some(prev_le)
}

/// The gateway's admin endpoint.
pub struct Admin {
    base: String,
    password: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(addr: &str, password: Option<String>) -> Admin {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Admin {
            base,
            password,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("an HTTP client without TLS builds"),
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(p) = &self.password {
            req = req.bearer_auth(p);
        }
        let r = req.send().await.with_context(|| {
            format!("the gateway's admin endpoint {} does not answer", self.base)
        })?;
        if r.status() == reqwest::StatusCode::UNAUTHORIZED {
            anyhow::bail!(
                "the admin endpoint {} wants its password (--admin-password-file)",
                self.base
            );
        }
        Ok(r.error_for_status()?)
    }

    pub async fn scrape(&self) -> Result<Scrape> {
        let text = self.get("/metrics").await?.text().await?;
        Ok(Scrape {
            at: Instant::now(),
            samples: parse_metrics(&text),
        })
    }

    pub async fn failovers(&self) -> Result<Vec<Episode>> {
        Ok(self.get("/failovers").await?.json().await?)
    }
}

fn rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn secs(s: f64) -> String {
    if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// The traffic and failover sections under `belay status`'s report.
pub fn render(traffic: Option<&Traffic>, episodes: &[Episode], now_ms: u64) -> String {
    let mut out = String::new();
    if let Some(t) = traffic {
        out.push_str("\nTRAFFIC (through the gateway)\n");
        let latency = |l: &Option<(f64, f64)>| match l {
            Some((p50, p99)) => format!("{} / {}", secs(*p50), secs(*p99)),
            None => "-".into(),
        };
        out.push_str(&crate::ui::table(&[
            vec![
                "OPS/S".to_string(),
                "TO MASTER".into(),
                "TO REPLICAS".into(),
                "READS ON REPLICAS".into(),
                "P50/P99 MASTER".into(),
                "P50/P99 REPLICAS".into(),
                "CLIENTS".into(),
                "WAITING".into(),
                "ERRORS/S".into(),
            ],
            vec![
                rate(t.to_master + t.to_replicas + t.answered_by_gateway),
                rate(t.to_master),
                rate(t.to_replicas),
                t.read_share
                    .map_or("-".into(), |s| format!("{:.0} %", s * 100.0)),
                latency(&t.latency[0]),
                latency(&t.latency[1]),
                format!("{}", t.clients),
                format!("{}", t.waiting),
                rate(t.errors_per_sec),
            ],
        ]));
        if !t.per_node.is_empty() {
            let mut rows = vec![vec![
                "  NODE".to_string(),
                "ROLE".into(),
                "COMMANDS/S".into(),
            ]];
            for (node, role, r) in &t.per_node {
                rows.push(vec![format!("  {node}"), role.clone(), rate(*r)]);
            }
            out.push_str(&crate::ui::table(&rows));
        }
    }
    out.push_str("\nFAILOVERS AND HELD WRITES (newest first)\n");
    if episodes.is_empty() {
        out.push_str("  none since the gateway started\n");
    }
    for e in episodes.iter().take(3) {
        let what = if e.failover {
            format!(
                "failover {} -> {}",
                e.old_master.as_deref().unwrap_or("?"),
                e.new_master.as_deref().unwrap_or("?")
            )
        } else {
            "writes held".to_string()
        };
        let blackout = match (e.held_ms, e.hold_started_at_ms) {
            (Some(ms), _) => format!("write blackout {} ms", ms),
            (None, Some(since)) => {
                format!("WRITES HELD for {} ms so far", now_ms.saturating_sub(since))
            }
            (None, None) => String::new(),
        };
        let took = e
            .took_ms
            .map(|ms| format!(", new master after {ms} ms"))
            .unwrap_or_default();
        let state = if e.ongoing { " (under way)" } else { "" };
        out.push_str(&format!("  {what}{state}: {blackout}{took}\n"));
        for s in &e.steps {
            let offset = s.at_ms.saturating_sub(e.started_at_ms);
            out.push_str(&format!("    +{:>6} ms  {}\n", offset, s.text));
        }
    }
    out
}

/// Seconds since the epoch, in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn per_node(t: &Traffic) -> HashMap<&str, f64> {
        t.per_node
            .iter()
            .map(|(n, _, r)| (n.as_str(), *r))
            .collect()
    }

    const BEFORE: &str = "# TYPE belay_commands counter
belay_commands_total{class=\"read\",destination=\"replica\"} 100
belay_commands_total{class=\"read\",destination=\"master\"} 0
belay_commands_total{class=\"write\",destination=\"master\"} 50
belay_backend_request_duration_seconds_bucket{le=\"0.001\",destination=\"master\"} 10
belay_backend_request_duration_seconds_bucket{le=\"0.01\",destination=\"master\"} 10
belay_backend_request_duration_seconds_bucket{le=\"+Inf\",destination=\"master\"} 10
belay_node_commands_total{node=\"127.0.0.1:6379\",role=\"master\"} 50
belay_client_connections 2
# EOF
";

    const AFTER: &str = "belay_commands_total{class=\"read\",destination=\"replica\"} 400
belay_commands_total{class=\"read\",destination=\"master\"} 100
belay_commands_total{class=\"write\",destination=\"master\"} 150
belay_backend_request_duration_seconds_bucket{le=\"0.001\",destination=\"master\"} 10
belay_backend_request_duration_seconds_bucket{le=\"0.01\",destination=\"master\"} 110
belay_backend_request_duration_seconds_bucket{le=\"+Inf\",destination=\"master\"} 110
belay_node_commands_total{node=\"127.0.0.1:6379\",role=\"master\"} 250
belay_client_connections 3
";

    #[test]
    fn rates_shares_and_quantiles_come_from_two_scrapes() {
        let t0 = Instant::now();
        let then = Scrape {
            at: t0,
            samples: parse_metrics(BEFORE),
        };
        let now = Scrape {
            at: t0 + Duration::from_secs(2),
            samples: parse_metrics(AFTER),
        };
        assert_eq!(then.samples.len(), 8);
        assert_eq!(
            then.samples[0].labels,
            vec![
                ("class".to_string(), "read".to_string()),
                ("destination".into(), "replica".into())
            ]
        );
        let t = traffic(&then, &now);
        assert_eq!(t.to_master, 100.0);
        assert_eq!(t.to_replicas, 150.0);
        assert_eq!(t.read_share, Some(0.75));
        assert_eq!(t.clients, 3.0);
        // 100 new observations, all between 1 and 10 ms: p50 in the middle.
        let (p50, p99) = t.latency[0].unwrap();
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        assert!((p99 - 0.00991).abs() < 1e-9, "{p99}");
        assert_eq!(t.latency[1], None);
        assert_eq!(per_node(&t)["127.0.0.1:6379"], 100.0);
        let text = render(Some(&t), &[], 0);
        assert!(text.contains("75 %"), "{text}");
        assert!(text.contains("5.5 ms / 9.9 ms"), "{text}");
        assert!(text.contains("none since the gateway started"), "{text}");
    }
}
