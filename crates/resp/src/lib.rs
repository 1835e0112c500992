//! RESP framing for belay.
//!
//! The gateway forwards the bytes a client sent as they came, so this crate's
//! main job is to find where a frame ends ([`frame_len`]) and to pull out the
//! command arguments routing needs ([`parse_request`]). The control plane
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
/// (`proto-max-bulk-len` 512 MB, 64 KB inline requests).
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
    /// Largest request in bytes (Redis's `client-query-buffer-limit`).
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
    pub fn for_replies() -> Self {
        Limits {
            max_bulk_len: usize::MAX / 2,
            max_inline_len: 64 * 1024,
            max_array_len: usize::MAX / 2,
            max_depth: 512,
            max_request_len: usize::MAX,
        }
    }
}

/// Finds `\r\n` starting at `from`; returns the index of `\r`.
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let mut i = 0;
    while let Some(pos) = hay[i..].iter().position(|&b| b == b'\r') {
        let at = i + pos;
        if at + 1 < hay.len() {
            if hay[at + 1] == b'\n' {
                return Some(from + at);
            }
            i = at + 1;
        } else {
            return None;
        }
    }
    None
}

/// The common length header, `<digits>\r\n` with `digits` starting at
/// `from`: the length and where the data after the header starts. `None`
/// for anything else (a sign, too many digits, an incomplete line, garbage),
/// which the general path then judges.
#[inline]
pub(crate) fn short_length(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let mut n: u64 = 0;
    let mut i = from;
    while let Some(&b) = buf.get(i) {
        if b.is_ascii_digit() {
            if i - from == 18 {
                return None;
            }
            n = n * 10 + (b - b'0') as u64;
            i += 1;
        } else if b == b'\r' && i > from && buf.get(i + 1) == Some(&b'\n') {
            return Some((n as i64, i + 2));
        } else {
            return None;
        }
    }
    None
}

/// Parses a signed decimal integer the way Redis writes them in headers.
pub(crate) fn parse_int(digits: &[u8]) -> Option<i64> {
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
