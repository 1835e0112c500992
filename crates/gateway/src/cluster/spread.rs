//! A command's keys against the cluster's slots: all in one slot (routed
//! there), spread over several (split into one command per slot and the
//! replies merged — `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, as
//! predixy and Envoy do — or refused with Redis's own `CROSSSLOT`), or a
//! keyless command about the whole keyspace that every shard must answer
//! (`KEYS`, `DBSIZE`, `FLUSHDB`, `FLUSHALL`, `RANDOMKEY`, `SCAN`).
//!
//! Pure functions of the request and the replies: the session sends the
//! parts and hands the replies back here.

use belay_resp::{frame_len, Limits, Request};
use bytes::{Bytes, BytesMut};

use super::slot::key_slot;

/// How a command spreads over the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spread {
    /// Every key in this slot (`None`: the command has no keys).
    Slot(Option<u16>),
    /// Keys in several slots, of a command the gateway splits.
    Split(Split),
    /// A keyless command about the whole keyspace.
    Everywhere(Everywhere),
    /// Keys in several slots, of a command that must run on one node.
    CrossSlot,
}

/// Commands split by slot, by how their replies merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `MGET`: the values, put back in the order of the keys.
    Values,
    /// `MSET`: `OK` when every part says `OK`.
    AllOk,
    /// `DEL`, `UNLINK`: the sum of the counts.
    Count,
    /// `EXISTS`, `TOUCH`: the sum of the counts, of reads.
    CountReads,
}

impl Split {
    /// Its parts write (so go to masters that take writes, and set the
    /// session's read-your-writes fence).
    pub fn writes(self) -> bool {
        matches!(self, Split::AllOk | Split::Count)
    }
}

/// Keyless commands every shard answers, by how their replies merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Everywhere {
    /// `KEYS`: every shard's keys.
    Keys,
    /// `DBSIZE`: the sum.
    Count,
    /// `FLUSHDB`, `FLUSHALL`: `OK` when every master says `OK`.
    Flush,
    /// `RANDOMKEY`: a key of a shard that has one.
    RandomKey,
    /// `SCAN`: one shard after the other, the shard in the cursor.
    Scan,
    /// `FUNCTION LOAD|DELETE|FLUSH|RESTORE`: a library every shard's
    /// `FCALL` needs; the reply when every master gives the same.
    Functions,
}

impl Everywhere {
    /// It writes (so goes to masters that take writes).
    pub fn writes(self) -> bool {
        matches!(self, Everywhere::Flush | Everywhere::Functions)
    }
}

/// How `req` (`name` in lowercase, `keys` its key positions) spreads.
pub fn spread(name: &[u8], req: &Request, keys: &[usize]) -> Spread {
    let everywhere = match name {
        b"keys" => Some(Everywhere::Keys),
        b"dbsize" => Some(Everywhere::Count),
        b"flushdb" | b"flushall" => Some(Everywhere::Flush),
        b"randomkey" => Some(Everywhere::RandomKey),
        b"scan" => Some(Everywhere::Scan),
        b"function"
            if req.arg(1).is_some_and(|sub| {
                [&b"load"[..], b"delete", b"flush", b"restore"]
                    .iter()
                    .any(|s| sub.eq_ignore_ascii_case(s))
            }) =>
        {
            Some(Everywhere::Functions)
        }
        _ => None,
    };
    if let Some(e) = everywhere {
        return Spread::Everywhere(e);
    }
    let mut slots = keys.iter().filter_map(|&i| req.arg(i)).map(key_slot);
    let Some(first) = slots.next() else {
        return Spread::Slot(None);
    };
    if slots.all(|s| s == first) {
        return Spread::Slot(Some(first));
    }
    match name {
        b"mget" => Spread::Split(Split::Values),
        b"mset" => Spread::Split(Split::AllOk),
        b"del" | b"unlink" => Spread::Split(Split::Count),
        b"exists" | b"touch" => Spread::Split(Split::CountReads),
        _ => Spread::CrossSlot,
    }
}

/// Redis's own words for keys in several slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// One part of a split command: the slot its keys are in, the command, and
/// which of the original keys it carries (their order in the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub slot: u16,
    pub raw: Bytes,
    pub keys: Vec<usize>,
}

/// Splits `req` into one command per slot. `MSET`'s values travel with
/// their keys.
pub fn split(req: &Request, split: Split) -> Vec<Part> {
    let name = req.name().unwrap_or_default();
    let per_key = if split == Split::AllOk { 2 } else { 1 };
    let mut parts: Vec<(u16, Vec<usize>)> = Vec::new();
    let nkeys = (req.argc() - 1) / per_key;
    for k in 0..nkeys {
        let Some(key) = req.arg(1 + k * per_key) else {
            continue;
        };
        let slot = key_slot(key);
        match parts.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, ks)) => ks.push(k),
            None => parts.push((slot, vec![k])),
        }
    }
    parts
        .into_iter()
        .map(|(slot, keys)| {
            let mut args: Vec<&[u8]> = vec![name];
            for &k in &keys {
                for j in 0..per_key {
                    args.push(req.arg(1 + k * per_key + j).unwrap_or_default());
                }
            }
            Part {
                slot,
                raw: belay_resp::encode_command(&args).freeze(),
                keys,
            }
        })
        .collect()
}

/// The frames of one reply's array elements (`*n` / RESP3 `~n` / `>n`),
/// or `None` if it is not an array.
fn elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    if !matches!(reply.first(), Some(b'*' | b'~')) {
        return None;
    }
    let end = reply.windows(2).position(|w| w == b"\r\n")?;
    let n: i64 = std::str::from_utf8(&reply[1..end]).ok()?.parse().ok()?;
    let mut at = end + 2;
    let mut out = Vec::new();
    let limits = Limits::default();
    for _ in 0..n.max(0) {
        let len = frame_len(&reply[at..], &limits).ok()??;
        out.push(&reply[at..at + len]);
        at += len;
    }
    Some(out)
}

/// An integer reply's value.
fn integer(reply: &[u8]) -> Option<i64> {
    let body = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

fn array_header(out: &mut BytesMut, n: usize) {
    out.extend_from_slice(format!("*{n}\r\n").as_bytes());
}

/// The client's reply to command `name` from the parts' replies
/// (`replies[i]` answers `parts[i]`); `nkeys` keys in all. An error from a part is the reply.
///
/// A write (`MSET`, `DEL`, `UNLINK`, `TOUCH`) some of whose parts ran while
/// another was refused (`NOPERM`, `OOM`, …) gets that error, saying that
/// the other parts ran: the client must not take the error to mean that
/// nothing happened.
pub fn merge_split(
    split: Split,
    name: &str,
    parts: &[Part],
    replies: &[Bytes],
    nkeys: usize,
) -> Bytes {
    if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
        let ran = replies.iter().filter(|r| r.first() != Some(&b'-')).count();
        if ran > 0 && split.writes() {
            let words = String::from_utf8_lossy(&err[1..err.len().saturating_sub(2)]).into_owned();
            return Bytes::from(format!(
                "-{words} (belay: {name} spans {} slots; the parts for {ran} of them ran)\r\n",
                parts.len()
            ));
        }
        return err.clone();
    }
    match split {
        Split::AllOk => Bytes::from_static(b"+OK\r\n"),
        Split::Count | Split::CountReads => sum(replies),
        Split::Values => {
            let mut slots: Vec<Option<&[u8]>> = vec![None; nkeys];
            for (part, reply) in parts.iter().zip(replies) {
                let Some(values) = elements(reply) else {
                    return protocol_error("MGET");
                };
                for (&k, v) in part.keys.iter().zip(values) {
                    slots[k] = Some(v);
                }
            }
            let mut out = BytesMut::new();
            array_header(&mut out, nkeys);
            for v in slots {
                out.extend_from_slice(v.unwrap_or(b"$-1\r\n"));
            }
            out.freeze()
        }
    }
}

fn sum(replies: &[Bytes]) -> Bytes {
    let mut total = 0i64;
    for r in replies {
        match integer(r) {
            Some(n) => total += n,
            None => return protocol_error("a count"),
        }
    }
    Bytes::from(format!(":{total}\r\n"))
}

fn protocol_error(what: &str) -> Bytes {
    Bytes::from(format!(
        "-ERR belay: a shard answered {what} with a reply the gateway cannot merge\r\n"
    ))
}

/// `KEYS`, `DBSIZE`, `FLUSH*`: every shard's reply, merged. (`SCAN` and
/// `RANDOMKEY` go one shard at a time: see [`scan_cursor`].)
pub fn merge_everywhere(e: Everywhere, replies: &[Bytes]) -> Bytes {
    if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
        let ran = replies.iter().filter(|r| r.first() != Some(&b'-')).count();
        if e.writes() && ran > 0 {
            // Some masters took it: the client must know.
            let words = String::from_utf8_lossy(&err[1..err.len().saturating_sub(2)]).into_owned();
            let what = match e {
                Everywhere::Flush => "were flushed",
                _ => "took it",
            };
            return Bytes::from(format!(
                "-{words} (belay: {ran} of {} shards {what})\r\n",
                replies.len()
            ));
        }
        return err.clone();
    }
    match e {
        Everywhere::Count => sum(replies),
        Everywhere::Flush => Bytes::from_static(b"+OK\r\n"),
        // The same library name (LOAD) or OK from every master.
        Everywhere::Functions => replies.first().cloned().unwrap_or_else(|| {
            Bytes::from_static(b"-ERR belay: no shard to load the function on\r\n")
        }),
        Everywhere::Keys => {
            let mut all = Vec::new();
            for r in replies {
                match elements(r) {
                    Some(keys) => all.extend(keys),
                    None => return protocol_error("KEYS"),
                }
            }
            let mut out = BytesMut::new();
            array_header(&mut out, all.len());
            for k in all {
                out.extend_from_slice(k);
            }
            out.freeze()
        }
        Everywhere::RandomKey | Everywhere::Scan => {
            unreachable!("asked one shard at a time")
        }
    }
}

/// Bits of a client's `SCAN` cursor that name the shard: up to 1024 shards.
const SHARD_BITS: u32 = 10;

/// A client's `SCAN` cursor: which shard (in slot order) and that shard's
/// own cursor. `None` for a cursor the gateway did not give out.
pub fn scan_cursor(cursor: &[u8]) -> Option<(usize, u64)> {
    let c: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
    Some(((c & ((1 << SHARD_BITS) - 1)) as usize, c >> SHARD_BITS))
}

/// The cursor the client gets after shard `shard` (of `shards`) answered
/// `node_cursor`: the same shard again, the next shard from its start, or
/// 0 when the last shard is done. `None` if the node's cursor is too
/// large to carry.
pub fn next_scan_cursor(shard: usize, shards: usize, node_cursor: u64) -> Option<u64> {
    if node_cursor != 0 {
        if node_cursor >> (64 - SHARD_BITS) != 0 {
            return None;
        }
        return Some((node_cursor << SHARD_BITS) | shard as u64);
    }
    if shard + 1 < shards {
        Some((shard + 1) as u64)
    } else {
        Some(0)
    }
}

/// `SCAN`'s reply with its cursor replaced, or `None` if it is not one.
pub fn rewrite_scan_reply(reply: &[u8], shard: usize, shards: usize) -> Option<Bytes> {
    let parts = elements(reply)?;
    let [cursor, keys] = parts.as_slice() else {
        return None;
    };
    let v = belay_resp::parse_value(cursor, &Limits::default()).ok()??.0;
    let node_cursor: u64 = v.as_str()?.parse().ok()?;
    let next = next_scan_cursor(shard, shards, node_cursor)?.to_string();
    let mut out = BytesMut::new();
    array_header(&mut out, 2);
    out.extend_from_slice(format!("${}\r\n{next}\r\n", next.len()).as_bytes());
    out.extend_from_slice(keys);
    Some(out.freeze())
}

/// Several replies back to back, one per command sent: split.
pub fn split_replies(frames: &Bytes, n: usize) -> Option<Vec<Bytes>> {
    let limits = Limits::default();
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for _ in 0..n {
        let len = frame_len(&frames[at..], &limits).ok()??;
        out.push(frames.slice(at..at + len));
        at += len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(s.split(' '))
    }

    #[test]
    fn one_slot_many_slots_and_hash_tags() {
        assert_eq!(
            spread(b"get", &req("GET foo"), &[1]),
            Spread::Slot(Some(12182))
        );
        assert_eq!(spread(b"ping", &req("PING"), &[]), Spread::Slot(None));
        let r = req("MGET {u}a {u}b");
        assert_eq!(
            spread(b"mget", &r, &[1, 2]),
            Spread::Slot(Some(key_slot(b"u")))
        );
        assert_eq!(
            spread(b"mget", &req("MGET foo bar"), &[1, 2]),
            Spread::Split(Split::Values)
        );
        assert_eq!(
            spread(b"sunionstore", &req("SUNIONSTORE foo bar"), &[1, 2]),
            Spread::CrossSlot
        );
        // EXISTS reads: its parts may go where reads go, and set no fence.
        assert_eq!(
            spread(b"exists", &req("EXISTS foo bar"), &[1, 2]),
            Spread::Split(Split::CountReads)
        );
        assert!(!Split::CountReads.writes() && Split::Count.writes());
        assert_eq!(
            spread(b"function", &req("FUNCTION LOAD x"), &[]),
            Spread::Everywhere(Everywhere::Functions)
        );
        assert_eq!(
            spread(b"dbsize", &req("DBSIZE"), &[]),
            Spread::Everywhere(Everywhere::Count)
        );
    }

    #[test]
    fn mget_is_put_back_in_key_order() {
        let r = req("MGET foo bar foo2");
        let parts = split(&r, Split::Values);
        assert_eq!(parts.len(), 3);
        let replies: Vec<Bytes> = parts
            .iter()
            .map(|p| {
                let k = p.keys[0];
                Bytes::from(format!("*1\r\n$2\r\nv{k}\r\n"))
            })
            .collect();
        assert_eq!(
            merge_split(Split::Values, "MSET", &parts, &replies, 3),
            Bytes::from_static(b"*3\r\n$2\r\nv0\r\n$2\r\nv1\r\n$2\r\nv2\r\n")
        );
    }

    #[test]
    fn mset_keeps_values_with_keys_and_counts_add_up() {
        let parts = split(&req("MSET foo 1 bar 2 {foo}x 3"), Split::AllOk);
        assert_eq!(parts.len(), 2);
        let foo = parts.iter().find(|p| p.slot == key_slot(b"foo")).unwrap();
        assert_eq!(
            &foo.raw[..],
            b"*5\r\n$4\r\nMSET\r\n$3\r\nfoo\r\n$1\r\n1\r\n$6\r\n{foo}x\r\n$1\r\n3\r\n"
        );
        let counts = [Bytes::from_static(b":2\r\n"), Bytes::from_static(b":1\r\n")];
        assert_eq!(
            merge_split(Split::Count, "MSET", &parts, &counts, 3),
            Bytes::from_static(b":3\r\n")
        );
        let err = [
            Bytes::from_static(b":2\r\n"),
            Bytes::from_static(b"-ERR x\r\n"),
        ];
        // One part ran: the error says so.
        assert_eq!(
            merge_split(Split::Count, "DEL", &parts, &err, 3),
            Bytes::from_static(
                b"-ERR x (belay: DEL spans 2 slots; the parts for 1 of them ran)\r\n"
            )
        );
        let none_ran = [
            Bytes::from_static(b"-ERR x\r\n"),
            Bytes::from_static(b"-ERR y\r\n"),
        ];
        assert_eq!(
            merge_split(Split::Count, "DEL", &parts, &none_ran, 3),
            Bytes::from_static(b"-ERR x\r\n")
        );
        // A read's parts change nothing: the error as it is.
        assert_eq!(
            merge_split(Split::CountReads, "EXISTS", &parts, &err, 3),
            Bytes::from_static(b"-ERR x\r\n")
        );
    }

    #[test]
    fn scan_cursors_walk_the_shards() {
        assert_eq!(scan_cursor(b"0"), Some((0, 0)));
        // Shard 0 not done: its cursor with the shard in the low bits.
        let c = next_scan_cursor(0, 3, 17).unwrap();
        assert_eq!(scan_cursor(c.to_string().as_bytes()), Some((0, 17)));
        // Shard 0 done: shard 1 from its start.
        assert_eq!(next_scan_cursor(0, 3, 0), Some(1));
        assert_eq!(scan_cursor(b"1"), Some((1, 0)));
        // The last shard done: the scan is over.
        assert_eq!(next_scan_cursor(2, 3, 0), Some(0));
        let reply = b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\na\r\n";
        assert_eq!(
            rewrite_scan_reply(reply, 0, 2).unwrap(),
            Bytes::from_static(b"*2\r\n$1\r\n1\r\n*1\r\n$1\r\na\r\n")
        );
    }
}
