//! Reading a multibulk request: the `*<count>` line, then each `$<len>`
//! argument, validated and located in one pass, nothing consumed until the
//! request is complete.

use bytes::BytesMut;
use smallvec::SmallVec;

use super::parser::{Progress, RequestParser};
use super::{request_cap, Request, Spans};
use crate::{crlf_resume, examined, find_crlf, parse_int, short_length, Limits, ProtocolError};

/// Progress through the arguments of an incomplete multibulk.
#[derive(Debug, Clone)]
pub(super) struct Args {
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
    /// Reads the `*<count>` line, searching for its end from `resume`.
    #[inline(always)]
    pub(super) fn multibulk(
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
    pub(super) fn resume_args(
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::request::parse_request;
    use crate::request::tests::parse;

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
}
