//! The resumable parsers give the one-shot functions' results, however the
//! bytes are split across reads: for every call, the same result as the
//! one-shot function on the same bytes, and for a valid stream, the same
//! requests or frames as parsing it whole.

use belay_resp::{
    encode_command, frame_len, parse_request, FrameScanner, Limits, ProtocolError, Request,
    RequestParser,
};
use bytes::BytesMut;
use proptest::prelude::*;

/// A header number in any spelling Redis accepts: `3`, `+3`, `003`.
fn spelled(n: usize, spelling: u8) -> String {
    match spelling % 3 {
        0 => n.to_string(),
        1 => format!("+{n}"),
        _ => format!("00{n}"),
    }
}

/// One request on the wire and the arguments it carries.
fn request() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    let multibulk = (
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..20), any::<u8>()),
            0..6,
        ),
        any::<u8>(),
    )
        .prop_map(|(args, count_spelling)| {
            let mut wire = format!("*{}\r\n", spelled(args.len(), count_spelling)).into_bytes();
            for (arg, spelling) in &args {
                wire.extend_from_slice(
                    format!("${}\r\n", spelled(arg.len(), *spelling)).as_bytes(),
                );
                wire.extend_from_slice(arg);
                wire.extend_from_slice(b"\r\n");
            }
            (wire, args.into_iter().map(|(arg, _)| arg).collect())
        });
    // Inline: plain words and double-quoted ones with escapes, separated by
    // runs of blanks, ended by `\r\n` or `\n`.
    let piece = prop_oneof![
        "[a-z ]".prop_map(|c| (c.clone(), c)),
        Just((r"\n".to_string(), "\n".to_string())),
        Just((r"\x41".to_string(), "A".to_string())),
        Just((r#"\""#.to_string(), "\"".to_string())),
    ];
    let word = prop_oneof![
        "[a-z0-9]{1,8}".prop_map(|w| (w.clone(), w)),
        proptest::collection::vec(piece, 0..6).prop_map(|pieces| {
            let (wire, arg): (Vec<String>, Vec<String>) = pieces.into_iter().unzip();
            (format!("\"{}\"", wire.concat()), arg.concat())
        }),
    ];
    let inline = (
        proptest::collection::vec((word, "[ \t]{1,3}"), 0..5),
        "[ \t]{0,2}",
        any::<bool>(),
    )
        .prop_map(|(words, lead, crlf)| {
            let mut wire = lead;
            let mut args = Vec::new();
            for ((w, arg), blanks) in words {
                wire.push_str(&w);
                wire.push_str(&blanks);
                args.push(arg.into_bytes());
            }
            wire.push_str(if crlf { "\r\n" } else { "\n" });
            (wire.into_bytes(), args)
        });
    prop_oneof![
        4 => multibulk,
        2 => inline,
        1 => Just((b"*-1\r\n".to_vec(), vec![])),
    ]
}

/// One RESP2/RESP3 value, nested up to a few levels, as it is sent.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    fn blob(kind: char, payload: &[u8]) -> Vec<u8> {
        let mut wire = format!("{kind}{}\r\n", payload.len()).into_bytes();
        wire.extend_from_slice(payload);
        wire.extend_from_slice(b"\r\n");
        wire
    }
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        any::<f64>().prop_map(|f| format!(",{f}\r\n").into_bytes()),
        "[0-9]{1,30}".prop_map(|n| format!("({n}\r\n").into_bytes()),
        any::<bool>().prop_map(|b| format!("#{}\r\n", if b { 't' } else { 'f' }).into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| blob('$', &b)),
        proptest::collection::vec(any::<u8>(), 0..20)
            .prop_map(|b| blob('=', &[b"txt:", &b[..]].concat())),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| blob('!', &b)),
        Just(b"$-1\r\n".to_vec()),
        Just(b"*-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec!['*', '~', '>']),
                proptest::collection::vec(inner.clone(), 0..6)
            )
                .prop_map(|(kind, items)| {
                    [
                        format!("{kind}{}\r\n", items.len()).into_bytes(),
                        items.concat(),
                    ]
                    .concat()
                }),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(|pairs| {
                let mut wire = format!("%{}\r\n", pairs.len()).into_bytes();
                for (k, v) in pairs {
                    wire.extend(k);
                    wire.extend(v);
                }
                wire
            }),
            // An attribute, then the value it annotates.
            (
                proptest::collection::vec((inner.clone(), inner.clone()), 0..3),
                inner
            )
                .prop_map(|(pairs, value)| {
                    let mut wire = format!("|{}\r\n", pairs.len()).into_bytes();
                    for (k, v) in pairs {
                        wire.extend(k);
                        wire.extend(v);
                    }
                    wire.extend(value);
                    wire
                }),
        ]
    })
}

/// Read sizes, used in turn: often tiny, sometimes large.
fn pieces() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![4 => 1usize..8, 2 => 1usize..64, 1 => 1usize..2000],
        1..16,
    )
}

/// Garbage and near-misses, as in `never_panics`.
fn resp_like() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"+".to_vec()),
        Just(b":".to_vec()),
        Just(b"%".to_vec()),
        Just(b"|".to_vec()),
        Just(b"\"".to_vec()),
        Just(b" ".to_vec()),
        (0u32..300).prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..6),
        request().prop_map(|(wire, _)| wire),
        reply(),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|v| v.concat())
}

fn small_limits() -> Limits {
    Limits {
        max_bulk_len: 64,
        max_inline_len: 64,
        max_array_len: 16,
        max_depth: 8,
        max_request_len: 200,
    }
}

/// What a connection gets: requests (or the error) from `wire` fed through a
/// `RequestParser` in `pieces`, checking every call against `parse_request`
/// on the same buffer.
fn requests_in_pieces(
    wire: &[u8],
    pieces: &[usize],
    limits: &Limits,
) -> Result<Vec<Request>, ProtocolError> {
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut fed = 0;
    let mut turn = 0;
    while fed < wire.len() {
        let piece = pieces[turn % pieces.len()];
        turn += 1;
        let end = (fed + piece).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            let mut expected_buf = buf.clone();
            let expected = parse_request(&mut expected_buf, limits);
            let result = parser.parse(&mut buf, limits);
            assert_eq!(result, expected, "after {fed} of {} bytes", wire.len());
            assert_eq!(buf, expected_buf, "consumed differently");
            match result {
                Ok(Some(req)) => got.push(req),
                Ok(None) => {
                    // Asked again with nothing new, it still waits.
                    assert_eq!(parser.parse(&mut buf, limits), Ok(None));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(got)
}

/// Requests from `wire` given whole to `parse_request`.
fn requests_whole(wire: &[u8], limits: &Limits) -> Result<Vec<Request>, ProtocolError> {
    let mut buf = BytesMut::from(wire);
    let mut got = Vec::new();
    while let Some(req) = parse_request(&mut buf, limits)? {
        got.push(req);
    }
    Ok(got)
}

/// Frame lengths (or the error) from `wire` fed through a `FrameScanner` in
/// `pieces`, checking every call against `frame_len` on the same bytes.
fn frames_in_pieces(
    wire: &[u8],
    pieces: &[usize],
    limits: &Limits,
) -> Result<Vec<usize>, ProtocolError> {
    let mut scanner = FrameScanner::new();
    let mut got = Vec::new();
    let mut base = 0;
    let mut fed = 0;
    let mut turn = 0;
    while fed < wire.len() {
        let piece = pieces[turn % pieces.len()];
        turn += 1;
        fed = (fed + piece).min(wire.len());
        loop {
            let frame = &wire[base..fed];
            let result = scanner.scan(frame, limits);
            assert_eq!(
                result,
                frame_len(frame, limits),
                "after {fed} of {} bytes",
                wire.len()
            );
            match result {
                Ok(Some(n)) => {
                    got.push(n);
                    base += n;
                }
                Ok(None) => {
                    assert_eq!(scanner.scan(frame, limits), Ok(None));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(got)
}

fn frames_whole(wire: &[u8], limits: &Limits) -> Result<Vec<usize>, ProtocolError> {
    let mut got = Vec::new();
    let mut base = 0;
    while let Some(n) = frame_len(&wire[base..], limits)? {
        got.push(n);
        base += n;
    }
    Ok(got)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_pipeline_in_pieces_gives_the_same_requests(
        reqs in proptest::collection::vec(request(), 1..12),
        pieces in pieces(),
    ) {
        let wire: Vec<u8> = reqs.iter().flat_map(|(w, _)| w.clone()).collect();
        let limits = Limits::default();
        let whole = requests_whole(&wire, &limits).unwrap();
        let args: Vec<Vec<Vec<u8>>> = whole.iter().map(|r| r.args().map(<[u8]>::to_vec).collect()).collect();
        let want: Vec<Vec<Vec<u8>>> = reqs.into_iter().map(|(_, args)| args).collect();
        prop_assert_eq!(args, want);
        prop_assert_eq!(requests_in_pieces(&wire, &pieces, &limits).unwrap(), whole);
    }

    #[test]
    fn replies_in_pieces_give_the_same_frames(
        replies in proptest::collection::vec(reply(), 1..8),
        pieces in pieces(),
    ) {
        let wire = replies.concat();
        let limits = Limits::for_replies();
        let whole = frames_whole(&wire, &limits).unwrap();
        let want: Vec<usize> = replies.iter().map(Vec::len).collect();
        prop_assert_eq!(&whole, &want);
        prop_assert_eq!(frames_in_pieces(&wire, &pieces, &limits).unwrap(), whole);
    }

    /// Garbage, and valid input against tight limits: every call agrees with
    /// the one-shot function on the same bytes (checked as they are fed),
    /// and the stream as a whole goes the same way in pieces as in one read.
    #[test]
    fn bad_input_in_pieces_gives_the_same_errors(
        input in resp_like(),
        pieces in pieces(),
        tight in any::<bool>(),
    ) {
        let limits = if tight { small_limits() } else { Limits::default() };
        let in_pieces = requests_in_pieces(&input, &pieces, &limits);
        let whole = requests_whole(&input, &limits);
        match &in_pieces {
            Ok(reqs) => {
                for req in reqs {
                    prop_assert!(req.raw.len() <= limits.max_request_len);
                }
                prop_assert_eq!(&whole, &in_pieces);
            }
            // The error can differ: a header cut short may already be too
            // long to be valid, when whole it is a bad number.
            Err(_) => prop_assert!(whole.is_err(), "fails only in pieces: {:?}", in_pieces),
        }
        let replies = if tight { small_limits() } else { Limits::for_replies() };
        let in_pieces = frames_in_pieces(&input, &pieces, &replies);
        if in_pieces.is_ok() {
            prop_assert_eq!(frames_whole(&input, &replies), in_pieces);
        }
    }
}

#[test]
fn the_generators_make_valid_input() {
    // The property tests above are only as good as what they feed: check a
    // hand-written pipeline the same way.
    let wire = [
        &b"*2\r\n$+3\r\nGET\r\n$003\r\nkey\r\n"[..],
        b"set \"a b\"  c\n",
        b"*0\r\n",
        encode_command(&["PING"]).as_ref(),
    ]
    .concat();
    let reqs = requests_in_pieces(&wire, &[1, 3, 7], &Limits::default()).unwrap();
    assert_eq!(reqs.len(), 4);
    assert!(reqs[2].is_empty());
    assert_eq!(reqs[1].arg(1), Some(&b"a b"[..]));
    let replies = b"|1\r\n+k\r\n+v\r\n*2\r\n%1\r\n:1\r\n$-1\r\n~0\r\n";
    assert_eq!(
        frames_in_pieces(replies, &[2, 5], &Limits::for_replies()),
        Ok(vec![replies.len()])
    );
}
