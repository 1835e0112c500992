//! Replies the gateway writes itself (errors, `+OK`, `HELLO`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::commands::Software;

pub fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

pub fn simple(s: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(s.len() + 3);
    b.put_u8(b'+');
    b.put_slice(s.as_bytes());
    b.put_slice(b"\r\n");
    b.freeze()
}

/// An error reply; `msg` starts with its code (`ERR`, `NOAUTH`, `TRYAGAIN`, …).
pub fn error(msg: &str) -> Bytes {
    let clean: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut b = BytesMut::with_capacity(clean.len() + 3);
    b.put_u8(b'-');
    b.put_slice(clean.as_bytes());
    b.put_slice(b"\r\n");
    b.freeze()
}

pub fn bulk(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 16);
    b.put_u8(b'$');
    b.put_slice(itoa::Buffer::new().format(data.len()).as_bytes());
    b.put_slice(b"\r\n");
    b.put_slice(data);
    b.put_slice(b"\r\n");
    b.freeze()
}

/// Text the way Redis sends it: a verbatim string (`=`) in RESP3, a bulk
/// string in RESP2.
pub fn verbatim_or_bulk(resp3: bool, text: &[u8]) -> Bytes {
    if !resp3 {
        return bulk(text);
    }
    let mut b = BytesMut::with_capacity(text.len() + 24);
    b.put_u8(b'=');
    b.put_slice(itoa::Buffer::new().format(text.len() + 4).as_bytes());
    b.put_slice(b"\r\ntxt:");
    b.put_slice(text);
    b.put_slice(b"\r\n");
    b.freeze()
}

pub fn null(resp3: bool) -> Bytes {
    if resp3 {
        Bytes::from_static(b"_\r\n")
    } else {
        Bytes::from_static(b"$-1\r\n")
    }
}

pub fn integer(n: i64) -> Bytes {
    let mut b = BytesMut::with_capacity(24);
    b.put_u8(b':');
    b.put_slice(itoa::Buffer::new().format(n).as_bytes());
    b.put_slice(b"\r\n");
    b.freeze()
}

/// The `HELLO` reply, in the protocol the client asked for, naming the
/// master's server and version as its own `HELLO` would (Redis 7.0 before
/// the master is known).
pub fn hello(resp3: bool, server: &Software, id: u64) -> Bytes {
    let (name, version) = if server.version.is_empty() {
        ("redis", "7.0.0")
    } else {
        (server.name.as_str(), server.version.as_str())
    };
    let fields: [(&str, Field); 7] = [
        ("server", Field::Text(name)),
        ("version", Field::Text(version)),
        ("proto", Field::Int(if resp3 { 3 } else { 2 })),
        ("id", Field::Int(id as i64)),
        ("mode", Field::Text("standalone")),
        ("role", Field::Text("master")),
        ("modules", Field::EmptyList),
    ];
    let mut b = BytesMut::new();
    if resp3 {
        b.put_slice(format!("%{}\r\n", fields.len()).as_bytes());
    } else {
        b.put_slice(format!("*{}\r\n", fields.len() * 2).as_bytes());
    }
    for (k, v) in fields {
        b.put_slice(&bulk(k.as_bytes()));
        match v {
            Field::Text(t) => b.put_slice(&bulk(t.as_bytes())),
            Field::Int(n) => b.put_slice(&integer(n)),
            Field::EmptyList => b.put_slice(b"*0\r\n"),
        }
    }
    b.freeze()
}

enum Field<'a> {
    Text(&'a str),
    Int(i64),
    EmptyList,
}
