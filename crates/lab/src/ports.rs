//! Ports: checking a lab's ports are free before anything starts, and
//! handing tests blocks of free ports.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::LabError;
use crate::process::ProcessRecord;

/// Fails with [`LabError::PortInUse`] on the first planned port something
/// already listens on. Binds the way redis does (with `SO_REUSEADDR`), so a
/// port in `TIME_WAIT` counts as free, as it is for redis. Each port is
/// checked on the process's own host (`bind` unless the spec gives each
/// process its own loopback address).
pub fn check_free(bind: &str, plan: &[ProcessRecord]) -> Result<(), LabError> {
    for rec in plan {
        if let Some(port) = rec.admin_port.filter(|p| *p != 0) {
            if TcpListener::bind((rec.admin_host(), port)).is_err() {
                return Err(LabError::PortInUse {
                    port,
                    bind: rec.admin_host().to_string(),
                    what: "the gateway's admin endpoint".into(),
                    flag: "--admin-port",
                });
            }
        }
        let host = if rec.host.is_empty() { bind } else { &rec.host };
        if TcpListener::bind((host, rec.port)).is_err() {
            let flag = match rec.kind {
                crate::ProcessKind::DataNode => "--port",
                crate::ProcessKind::Sentinel => "--sentinel-port (or --port)",
                crate::ProcessKind::Gateway => "--gateway-port",
                crate::ProcessKind::App => "--app-port",
            };
            return Err(LabError::PortInUse {
                port: rec.port,
                bind: host.to_string(),
                what: rec.name.clone(),
                flag,
            });
        }
    }
    Ok(())
}

/// Where test port blocks come from: below Linux's default ephemeral range
/// (32768–60999), so an outgoing connection's local port never takes one.
const RANGE: std::ops::Range<u32> = 20_000..32_000;

/// The next candidate, shared by every thread of this process. It starts at
/// an offset derived from the pid so that test binaries running at the same
/// time start in different places.
static CURSOR: AtomicU32 = AtomicU32::new(0);

/// Returns the first port of `n` consecutive ports that are free on
/// 127.0.0.1 right now. Safe to call from many tests at once: within a
/// process an atomic cursor never hands out the same block twice; across
/// processes, a pid-derived starting point plus the bind check keep
/// collisions unlikely (a port can still be taken between the check and
/// its use: the lab then reports the child that failed to bind).
pub fn reserve_block(n: u16) -> u16 {
    let n = n.max(1) as u32;
    let span = RANGE.end - RANGE.start;
    let _ = CURSOR.compare_exchange(
        0,
        (std::process::id().wrapping_mul(7919) % span) + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..(span / n) {
        let offset = CURSOR.fetch_add(n, Ordering::SeqCst) - 1;
        let first = RANGE.start + offset % (span - n);
        let all_free =
            (first..first + n).all(|p| TcpListener::bind(("127.0.0.1", p as u16)).is_ok());
        if all_free {
            return first as u16;
        }
    }
    panic!("no block of {n} free ports in {RANGE:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn blocks_do_not_overlap_across_threads() {
        let handles: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..5).map(|_| reserve_block(7)).collect::<Vec<_>>()))
            .collect();
        let mut seen = HashSet::new();
        for h in handles {
            for first in h.join().unwrap() {
                for p in first..first + 7 {
                    assert!(seen.insert(p), "port {p} handed out twice");
                }
            }
        }
    }

    #[test]
    fn busy_port_is_named() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let spec = crate::LabSpec {
            base_port: port,
            sentinel_base_port: Some(1),
            ..crate::LabSpec::default()
        };
        let err = check_free("127.0.0.1", &spec.plan())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("port {port}")), "{err}");
        assert!(err.contains("--port"), "{err}");
    }
}
