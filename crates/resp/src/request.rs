//! Client requests: the multibulk form every client library sends, and the
//! inline form people type into telnet.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::{find_crlf, parse_int, short_length, Limits, ProtocolError};

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
    spans: SmallVec<[(u32, u32); 3]>,
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
        let header_end = find_crlf(&raw, 1).expect("just encoded") + 2;
        let spans = arg_spans(&raw, header_end, args.len());
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
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'*' {
        parse_multibulk(buf, limits)
    } else {
        parse_inline(buf, limits)
    }
}

fn parse_multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let (count, first_arg) = match short_length(buf, 1) {
        Some(header) => header,
        None => {
            let Some(line_end) = find_crlf(buf, 1) else {
                if buf.len() > limits.max_inline_len {
                    return Err(ProtocolError::InlineTooLong {
                        limit: limits.max_inline_len,
                    });
                }
                return Ok(None);
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
    if count <= 0 {
        let raw = buf.split_to(first_arg).freeze();
        return Ok(Some(Request {
            raw,
            spans: SmallVec::new(),
        }));
    }
    let count = count as usize;
    // One pass: validate, find the end and note where each argument lies.
    // Nothing is consumed until the request is complete (a partial one is
    // re-scanned on the next read); the spans allocate only past three
    // arguments, and only for arguments actually present, whatever count
    // the client announced.
    let mut spans: SmallVec<[(u32, u32); 3]> = SmallVec::new();
    let mut pos = first_arg;
    for _ in 0..count {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        if kind != b'$' {
            return Err(ProtocolError::UnexpectedByte {
                expected: '$',
                got: kind as char,
            });
        }
        let (len, start) = match short_length(buf, pos + 1) {
            Some(header) => header,
            None => {
                let Some(end) = find_crlf(buf, pos + 1) else {
                    if buf.len() - pos > 32 {
                        return Err(ProtocolError::InvalidLength { what: "bulk" });
                    }
                    return Ok(None);
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
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ProtocolError::UnexpectedByte {
                expected: '\r',
                got: buf[stop] as char,
            });
        }
        pos = stop + 2;
        if pos > MAX_REQUEST_LEN {
            return Err(ProtocolError::RequestTooLarge {
                limit: MAX_REQUEST_LEN as u64,
            });
        }
        spans.push((start as u32, stop as u32));
    }
    let raw = buf.split_to(pos).freeze();
    Ok(Some(Request { raw, spans }))
}

/// Where each argument of a complete, validated multibulk lies (for
/// requests the gateway builds itself).
fn arg_spans(raw: &[u8], mut pos: usize, count: usize) -> SmallVec<[(u32, u32); 3]> {
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

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_len {
            return Err(ProtocolError::InlineTooLong {
                limit: limits.max_inline_len,
            });
        }
        return Ok(None);
    };
    if nl > limits.max_inline_len {
        return Err(ProtocolError::InlineTooLong {
            limit: limits.max_inline_len,
        });
    }
    let line = buf.split_to(nl + 1);
    let mut text = &line[..nl];
    if text.last() == Some(&b'\r') {
        text = &text[..text.len() - 1];
    }
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
    Ok(Some(Request::from_args(args)))
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
}

/// Parses requests off a client's input (shim: rescans).
#[derive(Debug, Default)]
pub struct RequestParser(());

impl RequestParser {
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        parse_request(buf, limits)
    }
}
