//! Client requests: the multibulk form every client library sends, and the
//! inline form people type into telnet.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::{crlf_resume, examined, find_crlf, parse_int, short_length, Limits, ProtocolError};

/// One command as a client sent it.
///
/// `raw` holds the exact bytes of a multibulk request (or a multibulk
/// re-encoding of an inline one), so the gateway can forward it untouched;
/// the arguments are read in place. They are kept as positions, not as
/// `Bytes` slices: parsing a request then allocates nothing and touches no
/// reference count, which matters at a million requests a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub raw: Bytes,
    /// Where each argument lies in `raw`: start and end offsets. 32 bits keep
    /// a request small; one is at most [`MAX_REQUEST_LEN`] bytes.
    spans: Spans,
}

/// The largest request accepted, whatever the other limits allow. Redis
/// itself closes a client whose query buffer passes 1 GB.
pub const MAX_REQUEST_LEN: usize = u32::MAX as usize;

impl Request {
    /// Builds a request from arguments, encoding it as a multibulk.
    ///
    /// Panics if the encoding is over [`MAX_REQUEST_LEN`] bytes.
    pub fn from_args<I, A>(args: I) -> Request
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let args: Vec<A> = args.into_iter().collect();
        let raw = encode_command(&args).freeze();
        assert!(raw.len() <= MAX_REQUEST_LEN, "request too large");
        Request::from_encoded(raw, args.len())
    }

    /// A request from a multibulk this crate encoded, of at most
    /// [`MAX_REQUEST_LEN`] bytes.
    fn from_encoded(raw: Bytes, argc: usize) -> Request {
        let header_end = find_crlf(&raw, 1).expect("just encoded") + 2;
        let spans = arg_spans(&raw, header_end, argc);
        Request { raw, spans }
    }

    /// How many arguments, the name included.
    pub fn argc(&self) -> usize {
        self.spans.len()
    }

    /// True for an empty request (Redis skips those).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i` (0 is the name).
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.spans
            .get(i)
            .map(|&(start, end)| &self.raw[start as usize..end as usize])
    }

    /// Argument `i` as a zero-copy slice that may outlive the request.
    pub fn arg_bytes(&self, i: usize) -> Option<Bytes> {
        self.spans
            .get(i)
            .map(|&(start, end)| self.raw.slice(start as usize..end as usize))
    }

    /// Every argument, the name first.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .map(|&(start, end)| &self.raw[start as usize..end as usize])
    }

    /// The command name, if any.
    pub fn name(&self) -> Option<&[u8]> {
        self.arg(0)
    }

    /// True when the command name equals `upper` ignoring ASCII case.
    pub fn is(&self, upper: &str) -> bool {
        self.name()
            .is_some_and(|n| n.eq_ignore_ascii_case(upper.as_bytes()))
    }

    /// Argument `i` if it equals `upper` ignoring ASCII case.
    pub fn arg_is(&self, i: usize, upper: &str) -> bool {
        self.arg(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(upper.as_bytes()))
    }
}

/// Encodes arguments as a RESP multibulk request.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> BytesMut {
    let payload: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    let mut out = BytesMut::with_capacity(payload + 16);
    put_header(&mut out, b'*', args.len());
    for a in args {
        let a = a.as_ref();
        put_header(&mut out, b'$', a.len());
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
    out
}

fn put_header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
    out.put_slice(b"\r\n");
}

/// Takes the next complete request off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), and an
/// error when the bytes can never form a valid request. An empty multibulk or
/// a blank inline line yields a request with no arguments, which Redis
/// silently skips; callers should do the same.
///
/// This scans an incomplete request from its start on every call; a client
/// reading a large request in pieces should use a [`RequestParser`], which
/// gives the same results in linear time.
#[inline]
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    RequestParser::new().start(buf, limits)
}

type Spans = SmallVec<[(u32, u32); 3]>;

/// Takes requests off the front of a client's input buffer, keeping its
/// progress through an incomplete request between calls.
///
/// [`parse_request`] re-scans an incomplete request from its start after
/// every read, so a large one costs quadratic time: a million-argument
/// request read 1 KB at a time means some 7,000 scans of up to 7 MB. This
/// parser resumes where it stopped (the next argument's header, the end of a
/// bulk it waits for, where the search for an inline line's end stopped), so
/// the total work is linear in the request's size however it is split. Each
/// call returns exactly what [`parse_request`] would return on the same buffer.
///
/// The caller's side of the bargain: between calls it passes the same buffer,
/// which only grows at its end. Reserving space is fine (it may move the
/// bytes but keeps them, and positions are offsets from the buffer's start),
/// and so is consuming what the parser returned, which it does itself.
/// Anything else that changes bytes already seen — taking bytes off the
/// front, clearing the buffer, passing another one — must be followed by
/// [`reset`](Self::reset). After a complete request or an error the parser
/// starts afresh by itself. Limits should not change in the middle of a
/// request: what was already checked is not checked again.
#[derive(Debug, Clone, Default)]
pub struct RequestParser {
    progress: Progress,
    /// The buffer's length when progress was saved: a shorter buffer means the
    /// caller broke the bargain, and the parser starts afresh rather than
    /// read stale positions.
    seen: usize,
}

#[derive(Debug, Clone, Default)]
enum Progress {
    /// At the start of a request.
    #[default]
    Idle,
    /// Inside an incomplete `*<count>` line; no `\r\n` starts before `resume`.
    Header { resume: usize },
    /// Reading the arguments.
    Args(Args),
    /// Inside an incomplete inline line; no `\n` before `resume`.
    Inline { resume: usize },
}

#[derive(Debug, Clone)]
struct Args {
    /// Where the next argument's `$` is (or will be).
    pos: usize,
    /// Arguments still expected, the one at `pos` included.
    left: usize,
    /// Where each argument read so far lies.
    spans: Spans,
    /// The payload's start and end of the argument at `pos`, once its header
    /// is read and its bytes are awaited.
    bulk: Option<(usize, usize)>,
}

impl RequestParser {
    pub fn new() -> Self {
        RequestParser::default()
    }

    /// Forgets any progress through an incomplete request: the next call
    /// parses its buffer from the start.
    pub fn reset(&mut self) {
        self.progress = Progress::Idle;
    }

    /// Takes the next complete request off the front of `buf`, with the
    /// results of [`parse_request`]; see the type's documentation for what
    /// may happen to `buf` between calls.
    #[inline]
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        if let Progress::Idle = self.progress {
            self.start(buf, limits)
        } else {
            self.resume(buf, limits)
        }
    }

    /// Parses from the start of `buf`: the common case, a request that came
    /// whole, takes this path with no saved state to look at or move.
    #[inline(always)]
    fn start(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        match buf.first() {
            None => Ok(None),
            Some(b'*') => self.multibulk(buf, limits, 1),
            Some(_) => self.inline(buf, limits, 0),
        }
    }

    #[inline(never)]
    fn resume(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        let progress = std::mem::take(&mut self.progress);
        if buf.len() < self.seen {
            return self.start(buf, limits);
        }
        match progress {
            Progress::Idle => self.start(buf, limits),
            Progress::Header { resume } => self.multibulk(buf, limits, resume),
            Progress::Args(args) => self.resume_args(buf, limits, args),
            Progress::Inline { resume } => self.inline(buf, limits, resume),
        }
    }

    /// Notes where to resume once more bytes arrive. Every byte in `buf` then
    /// belongs to the incomplete request, so a buffer over the request limit
    /// is refused here.
    #[cold]
    #[inline(never)]
    fn wait(
        &mut self,
        progress: Progress,
        buf: &BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        let cap = request_cap(limits);
        if buf.len() > cap {
            return Err(ProtocolError::RequestTooLarge { limit: cap as u64 });
        }
        self.progress = progress;
        self.seen = buf.len();
        Ok(None)
    }

    /// Reads the `*<count>` line, searching for its end from `resume`.
    #[inline(always)]
    fn multibulk(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        resume: usize,
    ) -> Result<Option<Request>, ProtocolError> {
        let (count, first_arg) = match short_length(buf, 1) {
            Some(header) => header,
            None => {
                let Some(line_end) = find_crlf(buf, resume) else {
                    if buf.len() > limits.max_inline_len {
                        return Err(ProtocolError::InlineTooLong {
                            limit: limits.max_inline_len,
                        });
                    }
                    let resume = crlf_resume(buf, resume);
                    return self.wait(Progress::Header { resume }, buf, limits);
                };
                let count = parse_int(&buf[1..line_end])
                    .ok_or(ProtocolError::InvalidLength { what: "multibulk" })?;
                (count, line_end + 2)
            }
        };
        if count > limits.max_array_len as i64 {
            return Err(ProtocolError::ArrayTooLong {
                len: count,
                limit: limits.max_array_len,
            });
        }
        let cap = request_cap(limits);
        if first_arg > cap {
            return Err(ProtocolError::RequestTooLarge { limit: cap as u64 });
        }
        if count <= 0 {
            let raw = buf.split_to(first_arg).freeze();
            return Ok(Some(Request {
                raw,
                spans: SmallVec::new(),
            }));
        }
        self.args(buf, limits, first_arg, count as usize, SmallVec::new())
    }

    /// Goes on with the arguments, first the one whose bytes were awaited.
    fn resume_args(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        args: Args,
    ) -> Result<Option<Request>, ProtocolError> {
        let Args {
            mut pos,
            mut left,
            mut spans,
            bulk,
        } = args;
        if let Some((start, stop)) = bulk {
            if buf.len() < stop + 2 {
                let args = Args {
                    pos,
                    left,
                    spans,
                    bulk,
                };
                return self.wait(Progress::Args(args), buf, limits);
            }
            bulk_done(buf, stop)?;
            pos = stop + 2;
            left -= 1;
            spans.push((start as u32, stop as u32));
        }
        self.args(buf, limits, pos, left, spans)
    }

    /// Reads `left` arguments from `pos` until the request is complete: one
    /// pass that validates, finds the end and notes where each argument
    /// lies. Nothing is consumed until the request is complete; the spans
    /// allocate only past three arguments, and only for arguments actually
    /// present, whatever count the client announced.
    #[inline(always)]
    fn args(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        mut pos: usize,
        mut left: usize,
        mut spans: Spans,
    ) -> Result<Option<Request>, ProtocolError> {
        let cap = request_cap(limits);
        while left > 0 {
            let Some(&kind) = buf.get(pos) else {
                let args = Args {
                    pos,
                    left,
                    spans,
                    bulk: None,
                };
                return self.wait(Progress::Args(args), buf, limits);
            };
            examined(1);
            if kind != b'$' {
                return Err(ProtocolError::UnexpectedByte {
                    expected: '$',
                    got: kind as char,
                });
            }
            // A header is at most a few dozen bytes (longer is an error), so
            // one still incomplete is simply read again on the next call.
            let (len, start) = match short_length(buf, pos + 1) {
                Some(header) => header,
                None => {
                    let Some(end) = find_crlf(buf, pos + 1) else {
                        if buf.len() - pos > 32 {
                            return Err(ProtocolError::InvalidLength { what: "bulk" });
                        }
                        let args = Args {
                            pos,
                            left,
                            spans,
                            bulk: None,
                        };
                        return self.wait(Progress::Args(args), buf, limits);
                    };
                    let len = parse_int(&buf[pos + 1..end])
                        .ok_or(ProtocolError::InvalidLength { what: "bulk" })?;
                    (len, end + 2)
                }
            };
            if len < 0 || len as u64 > limits.max_bulk_len as u64 {
                return Err(ProtocolError::BulkTooLong {
                    len,
                    limit: limits.max_bulk_len,
                });
            }
            let stop = start + len as usize;
            // Refused before its payload is buffered. This also keeps every
            // offset within the spans' 32 bits.
            if stop + 2 > cap {
                return Err(ProtocolError::RequestTooLarge { limit: cap as u64 });
            }
            if buf.len() < stop + 2 {
                let args = Args {
                    pos,
                    left,
                    spans,
                    bulk: Some((start, stop)),
                };
                return self.wait(Progress::Args(args), buf, limits);
            }
            bulk_done(buf, stop)?;
            pos = stop + 2;
            left -= 1;
            spans.push((start as u32, stop as u32));
        }
        let raw = buf.split_to(pos).freeze();
        Ok(Some(Request { raw, spans }))
    }

    /// Reads an inline line, searching for its end from `resume`.
    fn inline(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        resume: usize,
    ) -> Result<Option<Request>, ProtocolError> {
        let rest = buf.get(resume..).unwrap_or_default();
        let found = rest.iter().position(|&b| b == b'\n');
        examined(found.map_or(rest.len(), |at| at + 1));
        let Some(nl) = found.map(|at| resume + at) else {
            if buf.len() > limits.max_inline_len {
                return Err(ProtocolError::InlineTooLong {
                    limit: limits.max_inline_len,
                });
            }
            let resume = buf.len();
            return self.wait(Progress::Inline { resume }, buf, limits);
        };
        if nl > limits.max_inline_len {
            return Err(ProtocolError::InlineTooLong {
                limit: limits.max_inline_len,
            });
        }
        let cap = request_cap(limits);
        if nl + 1 > cap {
            return Err(ProtocolError::RequestTooLarge { limit: cap as u64 });
        }
        let line = buf.split_to(nl + 1);
        let mut text = &line[..nl];
        if text.last() == Some(&b'\r') {
            text = &text[..text.len() - 1];
        }
        examined(text.len());
        let args = split_inline_args(text)?;
        if args.len() > limits.max_array_len {
            return Err(ProtocolError::ArrayTooLong {
                len: args.len() as i64,
                limit: limits.max_array_len,
            });
        }
        if args.is_empty() {
            return Ok(Some(Request {
                raw: Bytes::new(),
                spans: SmallVec::new(),
            }));
        }
        // The gateway forwards the multibulk form, which can be longer than
        // the line (`a b c` takes 27 bytes); it is what must fit.
        let raw = encode_command(&args);
        if raw.len() > cap {
            return Err(ProtocolError::RequestTooLarge { limit: cap as u64 });
        }
        Ok(Some(Request::from_encoded(raw.freeze(), args.len())))
    }
}

/// Checks the `\r\n` after an argument's payload, which ends at `stop`.
#[inline(always)]
fn bulk_done(buf: &[u8], stop: usize) -> Result<(), ProtocolError> {
    examined(2);
    if &buf[stop..stop + 2] != b"\r\n" {
        return Err(ProtocolError::UnexpectedByte {
            expected: '\r',
            got: buf[stop] as char,
        });
    }
    Ok(())
}

/// The request limit in effect: the configured one, within what the spans'
/// 32-bit offsets can hold.
#[inline]
fn request_cap(limits: &Limits) -> usize {
    limits.max_request_len.min(MAX_REQUEST_LEN)
}

/// Where each argument of a complete, validated multibulk lies (for
/// requests the gateway builds itself).
fn arg_spans(raw: &[u8], mut pos: usize, count: usize) -> Spans {
    debug_assert!(raw.len() <= MAX_REQUEST_LEN);
    let mut spans = SmallVec::with_capacity(count);
    for _ in 0..count {
        let end = find_crlf(raw, pos + 1).expect("validated");
        let len = parse_int(&raw[pos + 1..end]).expect("validated") as usize;
        let start = end + 2;
        spans.push((start as u32, (start + len) as u32));
        pos = start + len + 2;
    }
    spans
}

/// Splits an inline request the way Redis does (`sdssplitargs`): spaces
/// separate arguments; double quotes allow `\n \r \t \b \a \\ \" \xHH`
/// escapes; single quotes allow `\'`; a closing quote must end the argument.
fn split_inline_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            if in_double {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && is_hex(line[i + 2])
                    && is_hex(line[i + 3])
                {
                    cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < n {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else if in_single {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    // The same set the outer loop skips: a separator the
                    // outer loop did not skip would never be consumed.
                    c if is_space(c) => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        args.push(cur);
    }
}

/// What C's `isspace` accepts, as Redis splits on it. NUL is an ordinary
/// byte here: requests have explicit lengths.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Option<Request>, ProtocolError> {
        let mut buf = BytesMut::from(s);
        parse_request(&mut buf, &Limits::default())
    }

    #[test]
    fn multibulk_keeps_raw_bytes() {
        let wire = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut buf = BytesMut::from(&wire[..]);
        buf.extend_from_slice(b"*1\r\n");
        let req = parse_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&req.raw[..], &wire[..]);
        assert_eq!(req.args().collect::<Vec<_>>(), [&b"GET"[..], b"k"]);
        assert_eq!(req.arg_bytes(1), Some(Bytes::from("k")));
        assert_eq!(req, Request::from_args(["GET", "k"]));
        assert_eq!(&buf[..], b"*1\r\n");
        assert!(req.is("get"));
    }

    #[test]
    fn bulk_headers_in_any_valid_spelling() {
        let args = |wire: &[u8]| {
            parse(wire)
                .unwrap()
                .unwrap()
                .args()
                .map(|a| a.to_vec())
                .collect::<Vec<_>>()
        };
        let want = vec![b"GET".to_vec(), b"key".to_vec()];
        assert_eq!(args(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"), want);
        assert_eq!(args(b"*2\r\n$+3\r\nGET\r\n$003\r\nkey\r\n"), want);
        let many: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
        let req = Request::from_args(&many);
        let mut buf = BytesMut::from(&req.raw[..]);
        assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(Some(req)));
        assert!(parse(b"*1\r\n$-3\r\nGET\r\n").is_err());
        assert!(parse(b"*1\r\n$\r\nGET\r\n").is_err());
        assert!(parse(b"*1\r\n$3x\r\nGET\r\n").is_err());
        assert!(parse(b"*1\r\n$9999999999999999999\r\n").is_err());
        assert_eq!(parse(b"*1\r\n$3\r"), Ok(None));
    }

    #[test]
    fn incomplete_consumes_nothing() {
        let wire = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r";
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(buf.len(), wire.len());
    }

    #[test]
    fn inline_with_quotes() {
        let req = parse(b"set \"a b\" 'c\\'d' \"\\x41\\n\"\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.argc(), 4);
        assert_eq!(req.arg(1).unwrap(), b"a b");
        assert_eq!(req.arg(2).unwrap(), b"c'd");
        assert_eq!(req.arg(3).unwrap(), b"A\n");
        assert_eq!(&req.raw[..4], b"*4\r\n");
        assert!(matches!(
            parse(b"get \"abc\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        ));
        assert!(parse(b"\r\n").unwrap().unwrap().is_empty());
        // A NUL is an ordinary byte (it once made the splitter loop forever).
        let req = parse(b"get a\0b\r\n").unwrap().unwrap();
        assert_eq!(req.argc(), 2);
        assert_eq!(req.arg(1).unwrap(), b"a\0b");
        let req = parse(b"\0\r\n").unwrap().unwrap();
        assert_eq!(req.argc(), 1);
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_bulk_len: 4,
            max_array_len: 2,
            max_inline_len: 8,
            ..Limits::default()
        };
        let mut b = BytesMut::from(&b"*3\r\n"[..]);
        assert!(matches!(
            parse_request(&mut b, &limits),
            Err(ProtocolError::ArrayTooLong { .. })
        ));
        let mut b = BytesMut::from(&b"*1\r\n$5\r\n"[..]);
        assert!(matches!(
            parse_request(&mut b, &limits),
            Err(ProtocolError::BulkTooLong { .. })
        ));
        let mut b = BytesMut::from(&b"get aaaaaaaaaaaa"[..]);
        assert!(matches!(
            parse_request(&mut b, &limits),
            Err(ProtocolError::InlineTooLong { .. })
        ));
        let mut b = BytesMut::from(&b"*1\r\n:5\r\n"[..]);
        assert!(matches!(
            parse_request(&mut b, &limits),
            Err(ProtocolError::UnexpectedByte { .. })
        ));
    }

    /// Feeds `wire` to `parse` `piece` bytes at a time, the way a client's
    /// reads arrive, and checks that it examines at most three bytes per
    /// byte of the request in all (failing as soon as it has examined more,
    /// rather than after a quadratic run).
    fn fed_in_pieces(
        wire: &[u8],
        piece: usize,
        mut parse: impl FnMut(&mut BytesMut, &Limits) -> Result<Option<Request>, ProtocolError>,
    ) -> Request {
        let budget = 3 * wire.len() as u64;
        let mut buf = BytesMut::new();
        let mut examined = 0;
        crate::work::take();
        for chunk in wire.chunks(piece) {
            buf.extend_from_slice(chunk);
            let result = parse(&mut buf, &Limits::default()).unwrap();
            examined += crate::work::take();
            assert!(
                examined <= budget,
                "examined {examined} bytes after {} of a {}-byte request",
                buf.len(),
                wire.len()
            );
            if let Some(req) = result {
                assert!(buf.is_empty());
                return req;
            }
        }
        panic!("request never completed");
    }

    #[test]
    fn a_million_arguments_in_1k_pieces_cost_linear_work() {
        let args: Vec<String> = (0..1_000_000).map(|i| (i % 1000).to_string()).collect();
        let wire = encode_command(&args);
        let mut parser = RequestParser::new();
        let req = fed_in_pieces(&wire, 1024, |b, l| parser.parse(b, l));
        assert_eq!(req.argc(), 1_000_000);
        assert_eq!(req.arg(999_999), Some(&b"999"[..]));
    }

    #[test]
    fn tiny_reads_cost_linear_work_too() {
        // Byte by byte, an incomplete bulk header is read again on each call
        // (it is never more than a few dozen bytes); nothing else is.
        let args: Vec<String> = (0..20_000).map(|i| "v".repeat(i % 40)).collect();
        let wire = encode_command(&args);
        let mut inline = b"set k ".to_vec();
        inline.extend(std::iter::repeat_n(b'x', 60_000));
        inline.extend_from_slice(b"\r\n");
        for wire in [&wire[..], &inline[..]] {
            let mut parser = RequestParser::new();
            let req = fed_in_pieces(wire, 1, |b, l| parser.parse(b, l));
            assert!(req.argc() >= 3);
        }
    }

    #[test]
    fn an_incomplete_request_resumes_where_it_stopped() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n";
        let limits = Limits::default();
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in wire.iter() {
            buf.extend_from_slice(&[b]);
            // A reserve may move the bytes; positions are offsets, so that is fine.
            buf.reserve(64);
            while let Some(req) = parser.parse(&mut buf, &limits).unwrap() {
                got.push(req);
            }
        }
        assert_eq!(
            got,
            [
                Request::from_args(["SET", "k", "value"]),
                Request::from_args(["PING"])
            ]
        );
        // Bytes taken off the front behind the parser's back: a reset, and it
        // reads the buffer afresh.
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n"[..]);
        assert_eq!(parser.parse(&mut buf, &limits), Ok(None));
        buf.clear();
        parser.reset();
        buf.extend_from_slice(b"PING\r\n");
        let req = parser.parse(&mut buf, &limits).unwrap().unwrap();
        assert!(req.is("ping"));
        // A shorter buffer than last time cannot be the same one grown: the
        // parser starts afresh rather than trust its old positions.
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r"[..]);
        assert_eq!(parser.parse(&mut buf, &limits), Ok(None));
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(
            parser.parse(&mut buf, &limits),
            Ok(Some(Request::from_args(["PING"])))
        );
    }

    #[test]
    fn a_request_over_the_limit_is_refused_before_it_is_buffered() {
        let limits = Limits {
            max_request_len: 1000,
            ..Limits::default()
        };
        let too_large = Err(ProtocolError::RequestTooLarge { limit: 1000 });
        // One bulk announcing an end past the limit: refused at its header.
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$2000\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits), too_large);
        // Bulks each well within `max_bulk_len` adding up past it: refused at
        // the header of the one that would cross it, its payload not yet sent.
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(&b"*10\r\n"[..]);
        let arg = [&b"$200\r\n"[..], &[b'x'; 200], b"\r\n"].concat();
        for _ in 0..4 {
            buf.extend_from_slice(&arg);
            assert_eq!(parser.parse(&mut buf, &limits), Ok(None));
        }
        buf.extend_from_slice(b"$200\r\n");
        assert_eq!(parser.parse(&mut buf, &limits), too_large);
        assert!(buf.len() < 1000);
        // Exactly at the limit is fine; one byte over is not.
        let fits = encode_command(&["x".repeat(1000 - 12)]);
        assert_eq!(fits.len(), 1000);
        let mut buf = fits.clone();
        assert!(parse_request(&mut buf, &limits).unwrap().is_some());
        let over = Limits {
            max_request_len: 999,
            ..limits
        };
        let mut buf = fits.clone();
        assert!(matches!(
            parse_request(&mut buf, &over),
            Err(ProtocolError::RequestTooLarge { limit: 999 })
        ));
        // An inline line too (not only once it ends).
        let small = Limits {
            max_request_len: 10,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"get abcdefgh"[..]);
        assert!(matches!(
            parse_request(&mut buf, &small),
            Err(ProtocolError::RequestTooLarge { .. })
        ));
        // And its multibulk form, which is what the gateway forwards.
        let mut buf = BytesMut::from(&b"a b\r\n"[..]);
        assert!(matches!(
            parse_request(&mut buf, &small),
            Err(ProtocolError::RequestTooLarge { .. })
        ));
    }

    #[test]
    fn the_default_limit_is_redis_query_buffer_limit() {
        // A client allowed 2 GB bulks still cannot send a 1 GiB request: the
        // header alone is enough to refuse it.
        let limits = Limits {
            max_bulk_len: 2 << 30,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1073741824\r\n"[..]);
        let err = parse_request(&mut buf, &limits).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::RequestTooLarge {
                limit: 1024 * 1024 * 1024
            }
        );
        assert_eq!(
            err.to_string(),
            "Protocol error: request larger than the query buffer limit (1073741824 bytes)"
        );
        // Whatever the limits say, offsets must fit the spans' 32 bits.
        let unbounded = Limits::for_replies();
        let mut buf = BytesMut::from(&b"*1\r\n$4294967290\r\n"[..]);
        assert_eq!(
            parse_request(&mut buf, &unbounded),
            Err(ProtocolError::RequestTooLarge {
                limit: MAX_REQUEST_LEN as u64
            })
        );
    }
}
