//! The resumable parser: where it stopped in an incomplete request, and
//! picking up from there when more bytes arrive. What it reads is in
//! `multibulk` and `inline`.

use bytes::BytesMut;

use super::multibulk::Args;
use super::{request_cap, Request};
use crate::{Limits, ProtocolError};

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
///
/// [`parse_request`]: crate::parse_request
#[derive(Debug, Clone, Default)]
pub struct RequestParser {
    progress: Progress,
    /// The buffer's length when progress was saved: a shorter buffer means the
    /// caller broke the bargain, and the parser starts afresh rather than
    /// read stale positions.
    seen: usize,
}

/// Where a parser stopped in an incomplete request.
#[derive(Debug, Clone, Default)]
pub(super) enum Progress {
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
    ///
    /// [`parse_request`]: crate::parse_request
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
    pub(super) fn start(
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
    pub(super) fn wait(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::encode_command;

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
}
