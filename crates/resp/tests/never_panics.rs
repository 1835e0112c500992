//! The parser must never panic, whatever bytes arrive and however they are
//! split across reads: a client controls every byte it sends.

use belay_resp::{frame_len, parse_request, parse_value, FrameScanner, Limits, RequestParser};
use bytes::BytesMut;
use proptest::prelude::*;

fn resp_like() -> impl Strategy<Value = Vec<u8>> {
    // Mix valid-looking fragments with arbitrary bytes so both the happy path
    // and the error paths get exercised.
    let fragment = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"%".to_vec()),
        Just(b"|".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b"\0".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\x0b".to_vec()),
        (0u32..40).prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|v| v.concat())
}

fn small_limits() -> Limits {
    Limits {
        max_bulk_len: 64,
        max_inline_len: 64,
        max_array_len: 16,
        max_depth: 8,
        max_request_len: 256,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_never_panic(input in resp_like()) {
        let limits = small_limits();
        let _ = frame_len(&input, &limits);
        let _ = parse_value(&input, &limits);
        let mut buf = BytesMut::from(&input[..]);
        // Every request takes at least one byte: a parser that returns one
        // without consuming input would loop forever (it once did, on NUL).
        let mut parsed = 0;
        while let Ok(Some(_)) = parse_request(&mut buf, &limits) {
            parsed += 1;
            prop_assert!(parsed <= input.len(), "parse_request returned a request without consuming input");
        }
    }

    /// The resumable parsers, fed in pieces, carrying their progress from
    /// read to read: no panic, and no request without consuming input.
    #[test]
    fn resumable_parsers_never_panic(
        input in resp_like(),
        pieces in proptest::collection::vec(1usize..16, 1..8),
        tight in any::<bool>(),
    ) {
        let limits = if tight { small_limits() } else { Limits::default() };
        let mut parser = RequestParser::new();
        let mut scanner = FrameScanner::new();
        let mut buf = BytesMut::new();
        let mut base = 0;
        let mut fed = 0;
        let mut parsed = 0;
        let mut request_failed = false;
        let mut reply_failed = false;
        for piece in pieces.iter().cycle() {
            if fed == input.len() {
                break;
            }
            let end = (fed + piece).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            while !request_failed {
                let before = buf.len();
                match parser.parse(&mut buf, &limits) {
                    Ok(Some(req)) => {
                        parsed += 1;
                        prop_assert!(buf.len() < before, "a request without consuming input");
                        prop_assert!(req.raw.len() <= limits.max_request_len);
                        prop_assert!(parsed <= input.len());
                    }
                    Ok(None) => break,
                    Err(_) => request_failed = true,
                }
            }
            while !reply_failed {
                match scanner.scan(&input[base..fed], &limits) {
                    Ok(Some(n)) => {
                        prop_assert!(n > 0 && base + n <= fed);
                        base += n;
                    }
                    Ok(None) => break,
                    Err(_) => reply_failed = true,
                }
            }
        }
    }

    /// Feeding a valid pipeline one split at a time gives the same requests as
    /// feeding it whole, for every split point.
    #[test]
    fn split_anywhere_same_result(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..5), split in 0usize..200) {
        let wire = belay_resp::encode_command(&args);
        let mut whole = BytesMut::from(&wire[..]);
        let expected = parse_request(&mut whole, &Limits::default()).unwrap().unwrap();
        let split = split.min(wire.len());
        for mut parser in [None, Some(RequestParser::new())] {
            let mut parse = |buf: &mut BytesMut| match &mut parser {
                None => parse_request(buf, &Limits::default()),
                Some(parser) => parser.parse(buf, &Limits::default()),
            };
            let mut buf = BytesMut::from(&wire[..split]);
            let first = parse(&mut buf).unwrap();
            if split < wire.len() {
                prop_assert!(first.is_none());
                buf.extend_from_slice(&wire[split..]);
                let got = parse(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&got, &expected);
            } else {
                prop_assert_eq!(first.as_ref(), Some(&expected));
            }
        }
        let mut scanner = FrameScanner::new();
        prop_assert_eq!(scanner.scan(&wire[..split], &Limits::default()).unwrap(), (split == wire.len()).then_some(wire.len()));
        prop_assert_eq!(scanner.scan(&wire, &Limits::default()).unwrap(), Some(wire.len()));
        prop_assert_eq!(frame_len(&wire, &Limits::default()).unwrap(), Some(wire.len()));
        let cut = split.min(wire.len() - 1);
        prop_assert_eq!(frame_len(&wire[..cut], &Limits::default()).unwrap(), None);
    }
}
