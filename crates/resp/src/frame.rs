//! Frame boundaries: how many bytes make the next complete RESP value.

use smallvec::SmallVec;

use crate::{find_crlf, parse_int, short_length, Limits, ProtocolError};

/// Elements still expected at each open aggregate level. Kept inline: replies
/// are scanned once each on the hot path, and nesting is rarely deeper than 8.
type Stack = SmallVec<[usize; 8]>;

/// Returns the length in bytes of the first complete RESP2/RESP3 value in
/// `buf`, `Ok(None)` when more bytes are needed, or the reason `buf` can never
/// become valid RESP.
///
/// The scan is iterative (no recursion, so nesting cannot overflow the stack)
/// and looks only at headers: bulk payloads are skipped by length, which keeps
/// a reply of any size O(number of elements).
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    // The most common reply, one complete bulk string, without the general
    // machinery; anything unusual about it is judged below.
    if buf.first() == Some(&b'$') {
        if buf.starts_with(b"$-1\r\n") {
            return Ok(Some(5));
        }
        if let Some((len, start)) = short_length(buf, 1) {
            let end = start + len as usize;
            if len as u64 <= limits.max_bulk_len as u64 && buf.get(end..end + 2) == Some(b"\r\n") {
                return Ok(Some(end + 2));
            }
        }
    }
    // Elements still expected at each open aggregate level; the bottom entry is
    // the one top-level value we are looking for.
    let mut pending: Stack = SmallVec::new();
    pending.push(1);
    let mut pos = 0usize;
    loop {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let Some(line_end) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > limits.max_inline_len.max(64) {
                return Err(ProtocolError::InlineTooLong {
                    limit: limits.max_inline_len,
                });
            }
            return Ok(None);
        };
        let header = &buf[pos + 1..line_end];
        let after_header = line_end + 2;
        match kind {
            b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' => {
                pos = after_header;
                if complete_one(&mut pending) {
                    return Ok(Some(pos));
                }
            }
            b'$' | b'=' | b'!' => {
                let len = parse_int(header).ok_or(ProtocolError::InvalidLength { what: "bulk" })?;
                if len == -1 && kind == b'$' {
                    pos = after_header;
                } else {
                    if len < 0 || len as u64 > limits.max_bulk_len as u64 {
                        return Err(ProtocolError::BulkTooLong {
                            len,
                            limit: limits.max_bulk_len,
                        });
                    }
                    let end = after_header + len as usize;
                    if buf.len() < end + 2 {
                        return Ok(None);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(ProtocolError::UnexpectedByte {
                            expected: '\r',
                            got: buf[end] as char,
                        });
                    }
                    pos = end + 2;
                }
                if complete_one(&mut pending) {
                    return Ok(Some(pos));
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let len =
                    parse_int(header).ok_or(ProtocolError::InvalidLength { what: "multibulk" })?;
                pos = after_header;
                if len == -1 && kind == b'*' {
                    if complete_one(&mut pending) {
                        return Ok(Some(pos));
                    }
                    continue;
                }
                if len < 0 || len as u64 > limits.max_array_len as u64 {
                    return Err(ProtocolError::ArrayTooLong {
                        len,
                        limit: limits.max_array_len,
                    });
                }
                let children = if kind == b'%' || kind == b'|' {
                    len as usize * 2
                } else {
                    len as usize
                };
                if kind != b'|' {
                    // The aggregate itself fills its parent's slot; it is
                    // finished once its children are.
                    if let Some(top) = pending.last_mut() {
                        *top -= 1;
                    }
                }
                // An attribute (`|`) is followed by the value it annotates, so
                // it does not consume the parent's slot.
                if children == 0 {
                    if kind == b'|' {
                        continue;
                    }
                    if pop_finished(&mut pending) {
                        return Ok(Some(pos));
                    }
                    continue;
                }
                pending.push(children);
                if pending.len() > limits.max_depth {
                    return Err(ProtocolError::TooDeep {
                        limit: limits.max_depth,
                    });
                }
            }
            other => return Err(ProtocolError::UnknownType(other as char)),
        }
    }
}

/// Marks one element of the innermost aggregate as read; true when the
/// top-level value is complete.
fn complete_one(pending: &mut Stack) -> bool {
    if let Some(top) = pending.last_mut() {
        *top -= 1;
    }
    pop_finished(pending)
}

fn pop_finished(pending: &mut Stack) -> bool {
    while pending.last() == Some(&0) {
        pending.pop();
    }
    pending.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(s: &[u8]) -> Result<Option<usize>, ProtocolError> {
        frame_len(s, &Limits::default())
    }

    #[test]
    fn simple_types() {
        assert_eq!(len(b"+OK\r\n"), Ok(Some(5)));
        assert_eq!(len(b"-ERR x\r\n+OK\r\n"), Ok(Some(8)));
        assert_eq!(len(b":12\r\n"), Ok(Some(5)));
        assert_eq!(len(b"_\r\n"), Ok(Some(3)));
        assert_eq!(len(b"+OK\r"), Ok(None));
    }

    #[test]
    fn bulk_and_null() {
        assert_eq!(len(b"$3\r\nfoo\r\n"), Ok(Some(9)));
        assert_eq!(len(b"$3\r\nfo"), Ok(None));
        assert_eq!(len(b"$-1\r\n"), Ok(Some(5)));
        assert_eq!(len(b"$0\r\n\r\n"), Ok(Some(6)));
        assert!(len(b"$3\r\nfooXY").is_err());
    }

    #[test]
    fn unusual_bulk_headers_take_the_general_path() {
        assert_eq!(len(b"$+3\r\nfoo\r\n"), Ok(Some(10)));
        assert_eq!(len(b"$003\r\nfoo\r\n"), Ok(Some(11)));
        assert_eq!(len(b"$3\r"), Ok(None));
        assert!(len(b"$-2\r\n").is_err());
        assert!(len(b"$x\r\n").is_err());
        assert!(len(b"$\r\n").is_err());
        assert!(len(b"$9999999999999999999\r\n").is_err());
        let small = Limits {
            max_bulk_len: 2,
            ..Limits::default()
        };
        assert!(frame_len(b"$3\r\nfoo\r\n", &small).is_err());
    }

    #[test]
    fn nested_aggregates() {
        assert_eq!(len(b"*2\r\n*1\r\n:1\r\n$1\r\na\r\n"), Ok(Some(19)));
        assert_eq!(len(b"*0\r\n"), Ok(Some(4)));
        assert_eq!(len(b"*-1\r\n"), Ok(Some(5)));
        assert_eq!(len(b"*2\r\n*0\r\n:1\r\n"), Ok(Some(12)));
        assert_eq!(len(b"%1\r\n+a\r\n:1\r\n"), Ok(Some(12)));
        assert_eq!(len(b"*2\r\n:1\r\n"), Ok(None));
        // attribute then the value it annotates
        assert_eq!(len(b"|1\r\n+k\r\n+v\r\n:5\r\n"), Ok(Some(16)));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_bulk_len: 10,
            max_array_len: 2,
            max_depth: 2,
            ..Limits::default()
        };
        assert!(matches!(
            frame_len(b"$11\r\n", &limits),
            Err(ProtocolError::BulkTooLong { .. })
        ));
        assert!(matches!(
            frame_len(b"*3\r\n", &limits),
            Err(ProtocolError::ArrayTooLong { .. })
        ));
        assert!(matches!(
            frame_len(b"*1\r\n*1\r\n*1\r\n", &limits),
            Err(ProtocolError::TooDeep { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(len(b"?x\r\n").is_err());
        assert!(len(b"$abc\r\n").is_err());
        assert!(len(b"*-5\r\n").is_err());
    }
}

/// Finds frame boundaries in a reply stream (shim: rescans).
#[derive(Debug, Default)]
pub struct FrameScanner(());

impl FrameScanner {
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        frame_len(buf, limits)
    }
}
