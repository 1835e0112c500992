//! The timeline for the picture: successes and errors per slice of time.

use serde::Serialize;

use super::ms;
use crate::history::{ErrorKind, Micros, Op, Outcome};

/// Throughput and errors in one slice of time, for the picture.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bucket {
    pub t_ms: f64,
    pub writes_ok: u32,
    pub reads_ok: u32,
    pub write_errors: u32,
    pub read_errors: u32,
    /// Of `write_errors`, those answered `-UNREPLICATED` (durable writes:
    /// ran on the master, `WAIT` did not confirm it in time). With durable
    /// writes every `writes_ok` was confirmed by `WAIT`.
    pub unreplicated: u32,
}

/// How long one bucket of the timeline is.
pub(super) const BUCKET_US: Micros = 250_000;

/// Counts each operation in the bucket where it ended.
pub(super) fn timeline(ops: &[Op], end_us: Micros) -> Vec<Bucket> {
    // Whole buckets only: a last, partly filled bucket would read as a drop.
    let n = ((end_us / BUCKET_US) as usize).max(1);
    let mut b: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            t_ms: ms(i as Micros * BUCKET_US),
            ..Bucket::default()
        })
        .collect();
    for op in ops {
        let i = ((op.end_us / BUCKET_US) as usize).min(n - 1);
        let x = &mut b[i];
        match (op.kind.is_write(), op.outcome.is_ok()) {
            (true, true) => x.writes_ok += 1,
            (false, true) => x.reads_ok += 1,
            (true, false) => {
                x.write_errors += 1;
                if matches!(
                    op.outcome,
                    Outcome::Err {
                        kind: ErrorKind::Unreplicated,
                        ..
                    }
                ) {
                    x.unreplicated += 1;
                }
            }
            (false, false) => x.read_errors += 1,
        }
    }
    b
}
