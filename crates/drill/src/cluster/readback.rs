//! Reading a cluster drill's keys back from the cluster itself: each key
//! from the master serving its slot once the cluster has settled (never
//! through the gateway, whose answers are what is being checked), GETs
//! pipelined per master; and deleting them afterwards the same way.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use belay_client::{Auth, Connection, Value};
use belay_lab::cluster::ShardView;

use crate::history::{Layout, Op, OpKind, Readback};

const BATCH: usize = 500;

/// The master serving `slot` in `shards`.
fn master_of(shards: &[ShardView], slot: u16) -> Result<&str> {
    shards
        .iter()
        .find(|s| s.has_slot(slot))
        .map(|s| s.master.as_str())
        .with_context(|| format!("no master serves slot {slot} after the drill"))
}

/// `keys` grouped by the master of their slot.
fn by_master<'k>(
    shards: &[ShardView],
    slots: &HashMap<String, u16>,
    keys: &'k [String],
) -> Result<HashMap<String, Vec<&'k String>>> {
    let mut out: HashMap<String, Vec<&String>> = HashMap::new();
    for k in keys {
        let slot = *slots
            .get(k)
            .with_context(|| format!("the slot of {k} was not asked"))?;
        out.entry(master_of(shards, slot)?.to_string())
            .or_default()
            .push(k);
    }
    Ok(out)
}

/// Runs `cmd key` for every key on its master; returns the replies by key.
async fn each_key(
    shards: &[ShardView],
    slots: &HashMap<String, u16>,
    auth: &Auth,
    cmd: &str,
    keys: &[String],
) -> Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    for (master, keys) in by_master(shards, slots, keys)? {
        let mut c = Connection::connect(&master, Some(auth), Duration::from_secs(5))
            .await
            .with_context(|| format!("connecting to the master {master} to read back"))?;
        c.set_timeout(Duration::from_secs(10));
        for chunk in keys.chunks(BATCH) {
            for k in chunk {
                c.send(&[cmd, k.as_str()]).await?;
            }
            for k in chunk {
                let v = c
                    .read_value()
                    .await
                    .with_context(|| format!("{cmd} {k} on the master {master}"))?;
                if let Value::Error(e) = &v {
                    anyhow::bail!("{cmd} {k} on the master {master}: {e}");
                }
                out.insert((*k).clone(), v);
            }
        }
    }
    Ok(out)
}

/// Every acknowledged unique key, every counter and every register, each
/// from the master of its slot in `shards` (the cluster after the drill).
pub async fn read_back(
    shards: &[ShardView],
    slots: &HashMap<String, u16>,
    auth: &Auth,
    layout: &Layout,
    ops: &[Op],
) -> Result<Readback> {
    let acked: Vec<(u32, u64)> = ops
        .iter()
        .filter(|o| o.outcome.is_ok())
        .filter_map(|o| match o.kind {
            OpKind::Set { writer, seq } => Some((writer, seq)),
            _ => None,
        })
        .collect();
    let mut keys: Vec<String> = acked.iter().map(|(w, s)| layout.set_key(*w, *s)).collect();
    keys.extend((0..layout.counters).map(|i| layout.counter_key(i)));
    keys.extend((0..layout.registers()).map(|i| layout.reg_key(i)));
    let got = each_key(shards, slots, auth, "GET", &keys).await?;
    let text = |k: &str| {
        got.get(k)
            .filter(|v| **v != Value::Nil)
            .and_then(Value::to_text)
    };
    let mut rb = Readback::default();
    for (w, s) in acked {
        rb.sets.insert((w, s), text(&layout.set_key(w, s)));
    }
    for c in 0..layout.counters {
        let n = text(&layout.counter_key(c))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        rb.counters.insert(c, n);
    }
    for r in 0..layout.registers() {
        rb.regs.insert(r, text(&layout.reg_key(r)));
    }
    Ok(rb)
}

/// Deletes every key the drill may have written, each on its master.
pub async fn clean_up(
    shards: &[ShardView],
    slots: &HashMap<String, u16>,
    auth: &Auth,
    layout: &Layout,
    ops: &[Op],
) -> Result<()> {
    let mut keys: Vec<String> = ops
        .iter()
        .filter_map(|o| match o.kind {
            OpKind::Set { writer, seq } => Some(layout.set_key(writer, seq)),
            _ => None,
        })
        .collect();
    keys.extend((0..layout.counters).map(|i| layout.counter_key(i)));
    keys.extend((0..layout.registers()).map(|i| layout.reg_key(i)));
    keys.sort();
    keys.dedup();
    each_key(shards, slots, auth, "UNLINK", &keys).await?;
    Ok(())
}
