//! Client requests: the multibulk form every client library sends, and the
//! inline form people type into telnet.
//!
//! One concept per module: [`Request`] and its encoding here; the
//! resumable [`RequestParser`] and its progress through an incomplete
//! request in `parser`; reading `*<count>` and `$<len>` arguments in
//! `multibulk`; splitting a telnet line like Redis in `inline`.

mod inline;
mod multibulk;
mod parser;

pub use parser::RequestParser;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::{find_crlf, parse_int, Limits, ProtocolError};

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

/// Where each argument lies in a request's bytes: start and end offsets.
type Spans = SmallVec<[(u32, u32); 3]>;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `s` as one request with the default limits.
    pub(super) fn parse(s: &[u8]) -> Result<Option<Request>, ProtocolError> {
        let mut buf = BytesMut::from(s);
        parse_request(&mut buf, &Limits::default())
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
