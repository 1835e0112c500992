//! Errors by kind: what the clients were told, and when.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ms;
use crate::history::{ErrorKind, Op, Outcome};

/// How many operations failed one way.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    /// `write` or `read`.
    pub op: &'static str,
    pub kind: ErrorKind,
    /// Whether the commands were sent; `false`: they failed while a
    /// connection was being opened (connect, handshake, Sentinel lookup).
    pub sent: bool,
    pub label: String,
    pub count: usize,
    /// First time seen / last time seen (ms on the drill clock).
    pub first_ms: f64,
    pub last_ms: f64,
    /// One message as the client got it.
    pub example: String,
}

/// Groups failures by operation, kind and whether they were sent.
pub(super) fn errors(ops: &[Op]) -> Vec<ErrorCount> {
    let mut by: BTreeMap<(bool, ErrorKind, bool), ErrorCount> = BTreeMap::new();
    for op in ops {
        let Outcome::Err {
            kind,
            sent,
            message,
        } = &op.outcome
        else {
            continue;
        };
        let w = op.kind.is_write();
        let e = by.entry((!w, *kind, !sent)).or_insert_with(|| ErrorCount {
            op: if w { "write" } else { "read" },
            kind: *kind,
            sent: *sent,
            label: if *sent {
                kind.label().to_string()
            } else {
                format!("{} (opening a connection)", kind.label())
            },
            count: 0,
            first_ms: ms(op.start_us),
            last_ms: 0.0,
            example: message.clone(),
        });
        e.count += 1;
        e.first_ms = e.first_ms.min(ms(op.start_us));
        e.last_ms = e.last_ms.max(ms(op.end_us));
    }
    by.into_values().collect()
}
