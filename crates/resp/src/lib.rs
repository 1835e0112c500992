//! RESP framing for belay.
//!
//! The gateway forwards the bytes a client sent as they came, so this crate's
//! main job is to find where a frame ends ([`frame_len`], [`FrameScanner`])
//! and to pull out the command arguments routing needs ([`parse_request`],
//! [`RequestParser`]). The resumable forms keep their progress through an
//! incomplete frame between reads, so a large one costs linear time however
//! it is split; the one-shot forms re-scan it from its start. The control plane
//! (Sentinel queries, `ROLE`, `INFO`) needs real values, so [`Value`] decodes
//! RESP2 and RESP3 replies too.
//!
//! Everything here works on byte slices and never panics on bad input: a
//! malformed or oversized frame is a [`ProtocolError`] that names the problem.

mod error;
mod frame;
mod request;
mod value;

pub use error::ProtocolError;
pub use frame::{frame_len, FrameScanner};
pub use request::{encode_command, parse_request, Request, RequestParser, MAX_REQUEST_LEN};
pub use value::{parse_value, Value};

/// Size limits applied while parsing, so that a client cannot make the
/// gateway buffer without bound. Defaults match Redis's own
/// (`proto-max-bulk-len` 512 MB, 64 KB inline requests,
/// `client-query-buffer-limit` 1 GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string accepted (`$<len>`).
    pub max_bulk_len: usize,
    /// Largest inline (telnet-style) request line.
    pub max_inline_len: usize,
    /// Largest number of elements in one array (`*<len>`).
    pub max_array_len: usize,
    /// Deepest nesting of aggregates; requests are flat, replies rarely go past a few.
    pub max_depth: usize,
    /// Largest request, in bytes, like Redis's `client-query-buffer-limit`:
    /// many bulks each under `max_bulk_len` could otherwise add up to any
    /// size. A request is refused as soon as it is known to be larger (its
    /// bytes so far, or where a bulk header says it will end), not once it
    /// is all buffered. Requests are never larger than [`MAX_REQUEST_LEN`]
    /// whatever this says. Replies are not bounded by it.
    pub max_request_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_array_len: 1024 * 1024,
            max_depth: 64,
            max_request_len: 1024 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Limits for replies from a trusted Redis server: lengths are what Redis allows.
    /// The depth bounds the recursion of [`parse_value`].
    pub fn for_replies() -> Self {
        Limits {
            max_bulk_len: usize::MAX / 2,
            max_inline_len: 64 * 1024,
            max_array_len: usize::MAX / 2,
            max_depth: 512,
            max_request_len: usize::MAX,
        }
    }

    /// Limits for replies a proxy passes on without decoding them: only the
    /// iterative scanners ([`FrameScanner`], [`frame_len`]) see these, where
    /// a level of nesting costs one word, not stack. Redis nests a reply as
    /// deep as a script's return value (thousands of levels, up to Lua's
    /// stack limit), and a valid reply must never be taken for a broken one.
    pub fn for_relayed_replies() -> Self {
        Limits {
            max_depth: 1 << 20,
            ..Limits::for_replies()
        }
    }
}

/// Notes that `n` bytes were examined (a no-op outside unit tests).
#[inline(always)]
pub(crate) fn examined(_n: usize) {
    #[cfg(test)]
    work::add(_n);
}

/// Finds `\r\n` starting at `from`; returns the index of `\r`.
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let mut i = 0;
    while let Some(pos) = hay[i..].iter().position(|&b| b == b'\r') {
        let at = i + pos;
        if at + 1 < hay.len() {
            if hay[at + 1] == b'\n' {
                examined(at + 2);
                return Some(from + at);
            }
            i = at + 1;
        } else {
            break;
        }
    }
    examined(hay.len());
    None
}

/// Where a search for `\r\n` that found none in `buf` may resume once more
/// bytes arrive: at the last byte, which may be a `\r`.
pub(crate) fn crlf_resume(buf: &[u8], from: usize) -> usize {
    from.max(buf.len().saturating_sub(1))
}

/// The common length header, `<digits>\r\n` with `digits` starting at
/// `from`: the length and where the data after the header starts. `None`
/// for anything else (a sign, too many digits, an incomplete line, garbage),
/// which the general path then judges.
#[inline(always)]
pub(crate) fn short_length(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let mut n: u64 = 0;
    let mut i = from;
    while let Some(&b) = buf.get(i) {
        if b.is_ascii_digit() {
            if i - from == 18 {
                examined(19);
                return None;
            }
            n = n * 10 + (b - b'0') as u64;
            i += 1;
        } else if b == b'\r' && i > from && buf.get(i + 1) == Some(&b'\n') {
            examined(i + 2 - from);
            return Some((n as i64, i + 2));
        } else {
            examined(i + 1 - from);
            return None;
        }
    }
    examined(i - from);
    None
}

/// Parses a signed decimal integer the way Redis writes them in headers.
pub(crate) fn parse_int(digits: &[u8]) -> Option<i64> {
    examined(digits.len().min(20));
    let (neg, rest) = match digits.first()? {
        b'-' => (true, &digits[1..]),
        b'+' => (false, &digits[1..]),
        _ => (false, digits),
    };
    if rest.is_empty() || rest.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &b in rest {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as i64)?;
    }
    Some(if neg { -n } else { n })
}

/// Counts the bytes the scanners examine, in unit tests only: they check
/// that a frame fed in small reads costs work linear in its size.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local! {
        static EXAMINED: Cell<u64> = const { Cell::new(0) };
    }

    pub(crate) fn add(n: usize) {
        EXAMINED.with(|c| c.set(c.get() + n as u64));
    }

    /// Bytes examined on this thread since the last call.
    pub(crate) fn take() -> u64 {
        EXAMINED.with(|c| c.replace(0))
    }
}
