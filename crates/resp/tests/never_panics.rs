//! The parser must never panic, whatever bytes arrive and however they are
//! split across reads: a client controls every byte it sends.

use belay_resp::{frame_len, parse_request, parse_value, Limits};
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

    /// Feeding a valid pipeline one split at a time gives the same requests as
    /// feeding it whole, for every split point.
    #[test]
    fn split_anywhere_same_result(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..5), split in 0usize..200) {
        let wire = belay_resp::encode_command(&args);
        let mut whole = BytesMut::from(&wire[..]);
        let expected = parse_request(&mut whole, &Limits::default()).unwrap().unwrap();
        let split = split.min(wire.len());
        let mut buf = BytesMut::from(&wire[..split]);
        let first = parse_request(&mut buf, &Limits::default()).unwrap();
        if split < wire.len() {
            prop_assert!(first.is_none());
            buf.extend_from_slice(&wire[split..]);
            let got = parse_request(&mut buf, &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(got, expected);
        } else {
            prop_assert_eq!(first.unwrap(), expected);
        }
        prop_assert_eq!(frame_len(&wire, &Limits::default()).unwrap(), Some(wire.len()));
        let cut = split.min(wire.len() - 1);
        prop_assert_eq!(frame_len(&wire[..cut], &Limits::default()).unwrap(), None);
    }
}
