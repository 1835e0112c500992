//! The parsers' cost, for counting instructions under callgrind: 100,000
//! pipelined `GET key` requests and 100,000 `$5\r\nvalue\r\n` replies
//! arriving in one read, through the one-shot functions and through kept
//! resumable parsers, and a 20,000-argument request arriving 1 KB at a time.
//!
//! ```text
//! cargo build --release -p belay-resp --example parse_cost
//! valgrind --tool=callgrind --toggle-collect='*parse_cost*requests_oneshot*' \
//!     target/release/examples/parse_cost
//! ```
//!
//! (one `run_*` function at a time; the totals are per run).

use std::hint::black_box;

use belay_resp::{
    encode_command, frame_len, parse_request, FrameScanner, Limits, Request, RequestParser,
};
use bytes::BytesMut;

const N: usize = 100_000;

#[inline(never)]
fn run_requests_oneshot(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut args = 0;
    while let Ok(Some(req)) = parse_request(&mut buf, limits) {
        args += req.argc();
    }
    args
}

#[inline(never)]
fn run_requests_parser(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut parser = RequestParser::new();
    let mut args = 0;
    while let Ok(Some(req)) = parser.parse(&mut buf, limits) {
        args += req.argc();
    }
    args
}

#[inline(never)]
fn run_replies_oneshot(buf: &[u8], limits: &Limits) -> usize {
    let mut pos = 0;
    let mut frames = 0;
    while let Ok(Some(n)) = frame_len(&buf[pos..], limits) {
        pos += n;
        frames += 1;
    }
    frames
}

#[inline(never)]
fn run_replies_scanner(buf: &[u8], limits: &Limits) -> usize {
    let mut scanner = FrameScanner::new();
    let mut pos = 0;
    let mut frames = 0;
    while let Ok(Some(n)) = scanner.scan(&buf[pos..], limits) {
        pos += n;
        frames += 1;
    }
    frames
}

/// Feeds `wire` 1 KB at a time, as reads would bring it.
fn in_pieces(
    wire: &[u8],
    mut parse: impl FnMut(&mut BytesMut) -> Option<Request>,
) -> Option<Request> {
    let mut buf = BytesMut::new();
    for piece in wire.chunks(1024) {
        buf.extend_from_slice(piece);
        if let Some(req) = parse(&mut buf) {
            return Some(req);
        }
    }
    None
}

#[inline(never)]
fn run_pieces_oneshot(wire: &[u8], limits: &Limits) -> usize {
    in_pieces(wire, |buf| parse_request(buf, limits).unwrap()).map_or(0, |r| r.argc())
}

#[inline(never)]
fn run_pieces_parser(wire: &[u8], limits: &Limits) -> usize {
    let mut parser = RequestParser::new();
    in_pieces(wire, |buf| parser.parse(buf, limits).unwrap()).map_or(0, |r| r.argc())
}

fn main() {
    let requests = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n".repeat(N);
    let replies = b"$5\r\nvalue\r\n".repeat(N);
    let big: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let big = encode_command(&big);
    let limits = Limits::default();
    let for_replies = Limits::for_replies();

    let args = run_requests_oneshot(black_box(BytesMut::from(&requests[..])), &limits);
    assert_eq!(args, 2 * N);
    let args = run_requests_parser(black_box(BytesMut::from(&requests[..])), &limits);
    assert_eq!(args, 2 * N);
    assert_eq!(run_replies_oneshot(black_box(&replies), &for_replies), N);
    assert_eq!(run_replies_scanner(black_box(&replies), &for_replies), N);
    assert_eq!(run_pieces_oneshot(black_box(&big), &limits), 20_000);
    assert_eq!(run_pieces_parser(black_box(&big), &limits), 20_000);
}
