//! Decoded RESP values, for the control plane (Sentinel, `ROLE`, `INFO`) and
//! for tests. The data path never builds these: it forwards bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{find_crlf, frame_len, parse_int, Limits, ProtocolError};

/// A RESP2 or RESP3 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...` (RESP3 `!` blob errors too)
    Error(String),
    Integer(i64),
    /// `$`, and RESP3 verbatim strings (`=`) without their format prefix.
    Bulk(Bytes),
    /// `$-1`, `*-1`, RESP3 `_`.
    Nil,
    Array(Vec<Value>),
    /// RESP3 `%`
    Map(Vec<(Value, Value)>),
    /// RESP3 `~`
    Set(Vec<Value>),
    /// RESP3 `>` out-of-band push (pub/sub messages, invalidations)
    Push(Vec<Value>),
    /// RESP3 `,`
    Double(f64),
    /// RESP3 `#`
    Boolean(bool),
    /// RESP3 `(`
    BigNumber(String),
}

impl Value {
    /// The value as UTF-8 text, for simple strings and bulk strings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Simple(s) => Some(s),
            Value::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Same as [`Value::as_str`] but owned, with a lossy conversion.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Integer(i) => Some(i.to_string()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            Value::Bulk(_) | Value::Simple(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// A flat key/value list (RESP2 `SENTINEL replicas` style) or a RESP3 map,
    /// as string pairs.
    pub fn to_pairs(&self) -> Option<Vec<(String, String)>> {
        match self {
            Value::Map(m) => Some(
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.to_text().unwrap_or_default(),
                            v.to_text().unwrap_or_default(),
                        )
                    })
                    .collect(),
            ),
            Value::Array(v) => Some(
                v.chunks(2)
                    .map(|c| {
                        (
                            c[0].to_text().unwrap_or_default(),
                            c.get(1).and_then(|x| x.to_text()).unwrap_or_default(),
                        )
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The value of field `name` of a map: a RESP3 map, or the flat list
    /// of names and values RESP2 gives for one (`COMMAND`'s key specs,
    /// `CLUSTER SHARDS`).
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v),
            _ => self
                .as_array()?
                .chunks(2)
                .find(|c| c[0].as_str() == Some(name))
                .and_then(|c| c.get(1)),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// Encodes the value as RESP2 where possible (RESP3-only types as RESP3).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Value::Simple(s) => line(out, b'+', s.as_bytes()),
            Value::Error(s) => line(out, b'-', s.as_bytes()),
            Value::Integer(i) => line(out, b':', i.to_string().as_bytes()),
            Value::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Value::Nil => out.put_slice(b"$-1\r\n"),
            Value::Array(v) | Value::Set(v) | Value::Push(v) => {
                let kind = match self {
                    Value::Set(_) => b'~',
                    Value::Push(_) => b'>',
                    _ => b'*',
                };
                line(out, kind, v.len().to_string().as_bytes());
                for x in v {
                    x.encode(out);
                }
            }
            Value::Map(m) => {
                line(out, b'%', m.len().to_string().as_bytes());
                for (k, v) in m {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::Double(d) => line(out, b',', d.to_string().as_bytes()),
            Value::Boolean(b) => line(out, b'#', if *b { b"t" } else { b"f" }),
            Value::BigNumber(n) => line(out, b'(', n.as_bytes()),
        }
    }
}

fn line(out: &mut BytesMut, kind: u8, body: &[u8]) {
    out.put_u8(kind);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// Decodes the first complete value in `buf`; returns it with the number of
/// bytes it took, or `Ok(None)` when more bytes are needed.
pub fn parse_value(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, ProtocolError> {
    // Validate boundaries (and limits) first with the iterative scanner, so the
    // recursive decoder below only ever sees a complete, bounded frame.
    let Some(len) = frame_len(buf, limits)? else {
        return Ok(None);
    };
    let mut pos = 0;
    let value = decode(&buf[..len], &mut pos)?;
    Ok(Some((value, len)))
}

fn decode(buf: &[u8], pos: &mut usize) -> Result<Value, ProtocolError> {
    let kind = buf[*pos];
    let end = find_crlf(buf, *pos + 1).ok_or(ProtocolError::InvalidValue { what: "line" })?;
    let header = &buf[*pos + 1..end];
    *pos = end + 2;
    let text = || String::from_utf8_lossy(header).into_owned();
    let count = || -> Result<i64, ProtocolError> {
        parse_int(header).ok_or(ProtocolError::InvalidLength { what: "aggregate" })
    };
    Ok(match kind {
        b'+' => Value::Simple(text()),
        b'-' => Value::Error(text()),
        b':' => Value::Integer(
            parse_int(header).ok_or(ProtocolError::InvalidValue { what: "integer" })?,
        ),
        b'_' => Value::Nil,
        b',' => Value::Double(
            text()
                .parse()
                .map_err(|_| ProtocolError::InvalidValue { what: "double" })?,
        ),
        b'#' => Value::Boolean(header == b"t"),
        b'(' => Value::BigNumber(text()),
        b'$' | b'=' | b'!' => {
            let n = count()?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let body = &buf[*pos..*pos + n as usize];
            *pos += n as usize + 2;
            match kind {
                b'!' => Value::Error(String::from_utf8_lossy(body).into_owned()),
                b'=' => Value::Bulk(Bytes::copy_from_slice(body.get(4..).unwrap_or_default())),
                _ => Value::Bulk(Bytes::copy_from_slice(body)),
            }
        }
        b'*' | b'~' | b'>' => {
            let n = count()?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(decode(buf, pos)?);
            }
            match kind {
                b'~' => Value::Set(items),
                b'>' => Value::Push(items),
                _ => Value::Array(items),
            }
        }
        b'%' => {
            let n = count()?;
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let k = decode(buf, pos)?;
                let v = decode(buf, pos)?;
                items.push((k, v));
            }
            Value::Map(items)
        }
        b'|' => {
            // Attributes annotate the next value; belay has no use for them.
            let n = count()?;
            for _ in 0..n * 2 {
                decode(buf, pos)?;
            }
            decode(buf, pos)?
        }
        other => return Err(ProtocolError::UnknownType(other as char)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Value {
        parse_value(s, &Limits::for_replies()).unwrap().unwrap().0
    }

    #[test]
    fn decodes_resp2_and_resp3() {
        assert_eq!(p(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(p(b"$-1\r\n"), Value::Nil);
        assert_eq!(
            p(b"*2\r\n$1\r\na\r\n:3\r\n"),
            Value::Array(vec![Value::Bulk("a".into()), Value::Integer(3)])
        );
        assert_eq!(
            p(b"%1\r\n+role\r\n+master\r\n"),
            Value::Map(vec![(
                Value::Simple("role".into()),
                Value::Simple("master".into())
            )])
        );
        assert_eq!(p(b"=7\r\ntxt:abc\r\n"), Value::Bulk("abc".into()));
        assert_eq!(p(b",1.5\r\n"), Value::Double(1.5));
        assert_eq!(p(b"#t\r\n"), Value::Boolean(true));
    }

    #[test]
    fn round_trips() {
        let v = Value::Array(vec![
            Value::Bulk("x".into()),
            Value::Integer(-4),
            Value::Nil,
            Value::Error("ERR no".into()),
        ]);
        let mut out = BytesMut::new();
        v.encode(&mut out);
        assert_eq!(p(&out), v);
    }

    #[test]
    fn pairs() {
        let v = p(b"*4\r\n$4\r\nname\r\n$1\r\na\r\n$4\r\nport\r\n:5\r\n");
        assert_eq!(
            v.to_pairs().unwrap(),
            vec![("name".into(), "a".into()), ("port".into(), "5".into())]
        );
    }
}
