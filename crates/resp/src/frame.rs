//! Frame boundaries: how many bytes make the next complete RESP value.

use smallvec::SmallVec;

use crate::{crlf_resume, examined, find_crlf, parse_int, short_length, Limits, ProtocolError};

/// Elements still expected at each open aggregate level. Kept inline: replies
/// are scanned once each on the hot path, and nesting is rarely deeper than 8.
type Stack = SmallVec<[usize; 8]>;

/// Returns the length in bytes of the first complete RESP2/RESP3 value in
/// `buf`, `Ok(None)` when more bytes are needed, or the reason `buf` can never
/// become valid RESP.
///
/// The scan is iterative (no recursion, so nesting cannot overflow the stack)
/// and looks only at headers: bulk payloads are skipped by length, which keeps
/// a reply of any size O(number of elements). An incomplete value is scanned
/// from its start on every call, though; a reply arriving over many reads
/// should go through a [`FrameScanner`], which resumes where it stopped.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    if let Some(n) = one_bulk(buf, limits) {
        return Ok(Some(n));
    }
    Scan::new().run(buf, limits)
}

/// Finds where each RESP2/RESP3 value of a reply stream ends, keeping its
/// progress through an incomplete one between calls.
///
/// [`frame_len`] re-scans an incomplete value from its start after every
/// read, so a large reply costs quadratic time: an `LRANGE` of millions of
/// items arriving in 32 KB reads is scanned again from its first item after
/// each read. The scanner resumes where it stopped (the open aggregates'
/// pending counts, the element it was in, the end of a bulk it waits for),
/// so the total work is linear in the reply's size however it is split.
/// Each call returns exactly what [`frame_len`] would return on the same bytes.
///
/// Pass a slice starting at the first byte of the value being scanned, the
/// same bytes each time plus whatever arrived since. Bytes before it may be
/// dropped, and the buffer may be reallocated: positions are offsets from the
/// value's first byte. When a call returns the value's length, the scanner
/// starts afresh for the next value, whose first byte is right after it; after
/// an error it starts afresh too. Anything else that changes bytes already
/// seen needs a [`reset`](Self::reset).
#[derive(Debug, Clone, Default)]
pub struct FrameScanner {
    /// Progress through an incomplete value; `None` between values.
    scan: Option<Scan>,
    /// The slice's length when progress was saved: a shorter one means the
    /// caller broke the bargain, and the scan starts afresh rather than read
    /// stale positions.
    seen: usize,
}

impl FrameScanner {
    pub fn new() -> Self {
        FrameScanner::default()
    }

    /// Forgets any progress: the next call scans its slice from the start.
    pub fn reset(&mut self) {
        self.scan = None;
    }

    /// The length of the value `buf` starts with, `Ok(None)` while it is
    /// incomplete, or why it can never be valid RESP; see the type's
    /// documentation for what `buf` must be.
    #[inline]
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        if self.scan.is_none() {
            if let Some(n) = one_bulk(buf, limits) {
                return Ok(Some(n));
            }
            return self.run(Scan::new(), buf, limits);
        }
        self.resume(buf, limits)
    }

    #[inline(never)]
    fn resume(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        match self.scan.take() {
            Some(scan) if buf.len() >= self.seen => self.run(scan, buf, limits),
            _ => {
                if let Some(n) = one_bulk(buf, limits) {
                    return Ok(Some(n));
                }
                self.run(Scan::new(), buf, limits)
            }
        }
    }

    /// Scans on, keeping the progress if the value is still incomplete.
    #[inline]
    fn run(
        &mut self,
        mut scan: Scan,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, ProtocolError> {
        let result = scan.run(buf, limits);
        if let Ok(None) = result {
            self.scan = Some(scan);
            self.seen = buf.len();
        }
        result
    }
}

/// The most common reply, one complete bulk string, without the general
/// machinery; anything unusual about it (`None`) is judged by [`Scan`].
#[inline(always)]
fn one_bulk(buf: &[u8], limits: &Limits) -> Option<usize> {
    if buf.first() == Some(&b'$') {
        examined(1);
        if buf.starts_with(b"$-1\r\n") {
            examined(4);
            return Some(5);
        }
        if let Some((len, start)) = short_length(buf, 1) {
            let end = start + len as usize;
            examined(2);
            if len as u64 <= limits.max_bulk_len as u64 && buf.get(end..end + 2) == Some(b"\r\n") {
                return Some(end + 2);
            }
        }
    }
    None
}

/// Progress through one value.
#[derive(Debug, Clone)]
struct Scan {
    /// Elements still expected at each open aggregate level; the bottom
    /// entry is the one top-level value we are looking for.
    pending: Stack,
    /// Where the element being read starts.
    pos: usize,
    /// Where the search for the `\r\n` ending the header at `pos` resumes: no
    /// `\r\n` starts before it. Left as is once that header is read, as it is
    /// then behind every later element's header (hence `max(pos + 1, ..)`).
    line_from: usize,
    /// The index of the `\r\n` ending the bulk payload being waited for.
    bulk_end: Option<usize>,
}

impl Scan {
    #[inline]
    fn new() -> Scan {
        let mut pending = Stack::new();
        pending.push(1);
        Scan {
            pending,
            pos: 0,
            line_from: 0,
            bulk_end: None,
        }
    }

    /// Scans on from the saved position; on `Ok(None)` the state says where
    /// to resume.
    #[inline]
    fn run(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        let pending = &mut self.pending;
        let mut pos = self.pos;
        if let Some(end) = self.bulk_end {
            if buf.len() < end + 2 {
                return Ok(None);
            }
            self.bulk_end = None;
            pos = bulk_done(buf, end)?;
            if complete_one(pending) {
                return Ok(Some(pos));
            }
        }
        loop {
            let Some(&kind) = buf.get(pos) else {
                self.pos = pos;
                return Ok(None);
            };
            examined(1);
            let from = self.line_from.max(pos + 1);
            let Some(line_end) = find_crlf(buf, from) else {
                if buf.len() - pos > limits.max_inline_len.max(64) {
                    return Err(ProtocolError::InlineTooLong {
                        limit: limits.max_inline_len,
                    });
                }
                self.pos = pos;
                self.line_from = crlf_resume(buf, from);
                return Ok(None);
            };
            let header = &buf[pos + 1..line_end];
            let after_header = line_end + 2;
            match kind {
                b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' => {
                    pos = after_header;
                    if complete_one(pending) {
                        return Ok(Some(pos));
                    }
                }
                b'$' | b'=' | b'!' => {
                    let len =
                        parse_int(header).ok_or(ProtocolError::InvalidLength { what: "bulk" })?;
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
                            self.pos = pos;
                            self.bulk_end = Some(end);
                            return Ok(None);
                        }
                        pos = bulk_done(buf, end)?;
                    }
                    if complete_one(pending) {
                        return Ok(Some(pos));
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let len = parse_int(header)
                        .ok_or(ProtocolError::InvalidLength { what: "multibulk" })?;
                    pos = after_header;
                    if len == -1 && kind == b'*' {
                        if complete_one(pending) {
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
                        if pop_finished(pending) {
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
}

/// Checks the `\r\n` after a bulk payload, at `end`; where the next element starts.
#[inline]
fn bulk_done(buf: &[u8], end: usize) -> Result<usize, ProtocolError> {
    examined(2);
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError::UnexpectedByte {
            expected: '\r',
            got: buf[end] as char,
        });
    }
    Ok(end + 2)
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

    /// Feeds `wire` to `scan` `piece` bytes at a time, the way a node's
    /// reply arrives, and checks that it examines at most three bytes per
    /// byte of the reply in all (failing as soon as it has examined more,
    /// rather than after a quadratic run); the frame's length.
    fn fed_in_pieces(
        wire: &[u8],
        piece: usize,
        mut scan: impl FnMut(&[u8]) -> Result<Option<usize>, ProtocolError>,
    ) -> usize {
        let budget = 3 * wire.len() as u64;
        let mut examined = 0;
        crate::work::take();
        let mut fed = 0;
        while fed < wire.len() {
            fed = (fed + piece).min(wire.len());
            let result = scan(&wire[..fed]).unwrap();
            examined += crate::work::take();
            assert!(
                examined <= budget,
                "examined {examined} bytes after {fed} of a {}-byte reply",
                wire.len()
            );
            if let Some(n) = result {
                return n;
            }
        }
        panic!("reply never completed");
    }

    /// An `LRANGE`-like reply: bulks and a few other kinds, so that headers
    /// and payloads straddle the pieces' edges everywhere.
    fn big_array(n: usize) -> Vec<u8> {
        let mut wire = format!("*{n}\r\n").into_bytes();
        for i in 0..n {
            match i % 4 {
                0 => wire.extend_from_slice(format!(":{i}\r\n").as_bytes()),
                1 => wire.extend_from_slice(b"+OK\r\n"),
                _ => {
                    let v = "v".repeat(i % 50);
                    wire.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
                }
            }
        }
        wire
    }

    #[test]
    fn a_million_elements_in_1k_pieces_cost_linear_work() {
        let wire = big_array(1_000_000);
        let limits = Limits::for_replies();
        let mut scanner = FrameScanner::new();
        let n = fed_in_pieces(&wire, 1024, |b| scanner.scan(b, &limits));
        assert_eq!(n, wire.len());
    }

    #[test]
    fn tiny_reads_cost_linear_work_too() {
        let mut long_line = b"*2\r\n-ERR ".to_vec();
        long_line.extend(std::iter::repeat_n(b'e', 60_000));
        long_line.extend_from_slice(b"\r\n$100000\r\n");
        long_line.extend(std::iter::repeat_n(b'x', 100_000));
        long_line.extend_from_slice(b"\r\n");
        for wire in [big_array(20_000), long_line] {
            let limits = Limits::for_replies();
            let mut scanner = FrameScanner::new();
            let n = fed_in_pieces(&wire, 1, |b| scanner.scan(b, &limits));
            assert_eq!(n, wire.len());
        }
    }

    #[test]
    fn the_scanner_starts_afresh_after_each_value() {
        let wire = b"*2\r\n$3\r\nfoo\r\n:1\r\n$2\r\nhi\r\n+OK\r\n";
        let limits = Limits::default();
        let mut scanner = FrameScanner::new();
        let mut base = 0;
        let mut lens = Vec::new();
        for end in 1..=wire.len() {
            while let Some(n) = scanner.scan(&wire[base..end], &limits).unwrap() {
                lens.push(n);
                base += n;
            }
        }
        assert_eq!(lens, [17, 8, 5]);
        // After an error it starts afresh too.
        assert!(scanner.scan(b"?x\r\n", &limits).is_err());
        assert_eq!(scanner.scan(b"+OK\r\n", &limits), Ok(Some(5)));
        // A shorter slice than last time is scanned from its start.
        assert_eq!(scanner.scan(b"*2\r\n:1\r\n", &limits), Ok(None));
        assert_eq!(scanner.scan(b":7\r\n", &limits), Ok(Some(4)));
        assert_eq!(scanner.scan(b"*2\r\n:1\r\n", &limits), Ok(None));
        scanner.reset();
        assert_eq!(scanner.scan(b":7\r\n:8\r\n", &limits), Ok(Some(4)));
    }
}
