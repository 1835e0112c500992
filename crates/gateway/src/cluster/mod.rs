//! Redis Cluster as a backend: hash slots, which shard serves which, and
//! what to do with a command whose keys live on several shards. The
//! session routes a command to its shard, then within the shard exactly as
//! within a Sentinel group (see `ShardMap`).

mod map;
mod node_list;
mod slot;
mod spread;
mod view;

pub use map::ShardMap;
pub use node_list::{flags_failing, own_slots, unsettled, OwnSlots};
pub use slot::key_slot;
pub use spread::{
    merge_everywhere, merge_split, rewrite_scan_reply, scan_cursor, split, split_replies, spread,
    Everywhere, Part, Split, Spread, CROSSSLOT,
};
pub use view::{agree, idle_masters, parse_shards, parse_slots, AgreedShard};
