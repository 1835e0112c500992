//! Which shard each of the workload's keys is on. The slot of a key is the
//! cluster's own answer (`CLUSTER KEYSLOT`, asked once per key, pipelined),
//! never computed here; the shards are the slot ranges the nodes agreed on
//! when the drill started. A failover moves a shard's slots to another
//! node, not to another shard, so the start's ranges name every
//! operation's shard for the whole run.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use belay_client::{Auth, Connection};
use belay_lab::cluster::ShardView;

use crate::history::{Layout, OpKind};

/// Commands sent before reading their replies (one round trip per batch).
const BATCH: usize = 500;

/// A shard as it was when the drill started.
#[derive(Debug, Clone)]
pub struct StartShard {
    pub slots: Vec<(u16, u16)>,
    /// `host:port` of its master then.
    pub master: String,
    pub master_name: Option<String>,
}

impl StartShard {
    pub fn has_slot(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }

    /// `0-5460` or `0-100,200-300`.
    pub fn slots_text(&self) -> String {
        belay_lab::cluster::nodes::ranges_text(&self.slots)
    }
}

/// The shards at the start, in the nodes' order (by first slot).
#[derive(Debug, Clone)]
pub struct Shards(pub Vec<StartShard>);

impl Shards {
    pub fn from_views(views: &[ShardView]) -> Shards {
        Shards(
            views
                .iter()
                .map(|s| StartShard {
                    slots: s.slots.clone(),
                    master: s.master.clone(),
                    master_name: s.master_name.clone(),
                })
                .collect(),
        )
    }

    /// The index of the shard serving `slot`.
    pub fn of_slot(&self, slot: u16) -> Option<usize> {
        self.0.iter().position(|s| s.has_slot(slot))
    }
}

/// The key an operation touches.
pub fn op_key(layout: &Layout, kind: &OpKind) -> String {
    match *kind {
        OpKind::Set { writer, seq } => layout.set_key(writer, seq),
        OpKind::Incr { counter } => layout.counter_key(counter),
        OpKind::Write { reg, .. } | OpKind::Read { reg } => layout.reg_key(reg),
    }
}

/// Asks `node` for the slot of every key not yet in `slots`.
pub async fn ask_slots(
    node: &str,
    auth: &Auth,
    keys: impl IntoIterator<Item = String>,
    slots: &mut HashMap<String, u16>,
) -> Result<()> {
    let mut todo: Vec<String> = keys
        .into_iter()
        .filter(|k| !slots.contains_key(k))
        .collect();
    todo.sort();
    todo.dedup();
    if todo.is_empty() {
        return Ok(());
    }
    let mut c = Connection::connect(node, Some(auth), Duration::from_secs(5))
        .await
        .with_context(|| format!("connecting to {node} to ask the keys' slots"))?;
    c.set_timeout(Duration::from_secs(10));
    for chunk in todo.chunks(BATCH) {
        for key in chunk {
            c.send(&["CLUSTER", "KEYSLOT", key]).await?;
        }
        for key in chunk {
            let v = c
                .read_value()
                .await
                .with_context(|| format!("CLUSTER KEYSLOT on {node}"))?;
            let slot = v
                .as_int()
                .filter(|s| (0..16384).contains(s))
                .with_context(|| format!("CLUSTER KEYSLOT {key} on {node} answered {v:?}"))?;
            slots.insert(key.clone(), slot as u16);
        }
    }
    Ok(())
}
