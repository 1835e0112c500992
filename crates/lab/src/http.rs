//! Just enough HTTP/1.1 to ask the web app how it is (`GET /healthz`):
//! readiness and `belay status` need one request with a deadline, not an
//! HTTP client library.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer that is read: a health check says little.
const MAX_ANSWER: u64 = 64 * 1024;

/// An HTTP answer: the status code and the body as text.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `GET path` from `addr` (`host:port`), all within `timeout`. The request
/// says `Connection: close`, so the answer ends where the connection does.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> io::Result<Answer> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: belay\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut raw).await?;
        parse(&raw)
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no HTTP answer within {} ms", timeout.as_millis()),
        )
    })?
}

fn parse(raw: &[u8]) -> io::Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer { status, body })
}

/// The data of a chunked body (what a short answer needs; extensions and
/// trailers are skipped).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_answers_are_read() {
        let a = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
        let c = parse(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndown\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!((c.status, c.body.as_str()), (503, "down"));
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
    }
}
