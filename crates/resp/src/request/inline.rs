//! Reading an inline request, the form people type into telnet: one line,
//! split into arguments exactly like Redis's `sdssplitargs`, and re-encoded
//! as the multibulk the gateway forwards.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::parser::{Progress, RequestParser};
use super::{encode_command, request_cap, Request};
use crate::{examined, Limits, ProtocolError};

impl RequestParser {
    /// Reads an inline line, searching for its end from `resume`.
    pub(super) fn inline(
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
    use crate::request::tests::parse;

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
}
