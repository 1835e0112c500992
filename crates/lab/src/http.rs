//! Just enough HTTP/1.1 to talk to the web app: readiness and `belay
//! status` ask it `GET /healthz`, tests load its pages and publish. One
//! request per connection, with a deadline; not an HTTP client library.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer that is read: a health check says little.
const MAX_ANSWER: u64 = 64 * 1024;

/// An HTTP answer: the status code, the headers (names in lower case) and
/// the body as text.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from `addr` (`host:port`), all within `timeout`.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> io::Result<Answer> {
    request(addr, "GET", path, None, timeout).await
}

/// `POST path` with a body of type `content_type` (tests publish stories).
pub async fn post(
    addr: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<Answer> {
    request(addr, "POST", path, Some((content_type, body)), timeout).await
}

/// One request, all within `timeout`. It says `Connection: close`, so the
/// answer ends where the connection does.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> io::Result<Answer> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: belay\r\n"
        );
        if let Some((kind, data)) = body {
            request.push_str(&format!(
                "Content-Type: {kind}\r\nContent-Length: {}\r\n",
                data.len()
            ));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        if let Some((_, data)) = body {
            bytes.extend_from_slice(data);
        }
        s.write_all(&bytes).await?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        // Until the answer is complete: some servers keep the connection
        // open after it, `Connection: close` notwithstanding.
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if complete(&raw) || raw.len() as u64 >= MAX_ANSWER {
                break;
            }
        }
        parse(&raw)
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no HTTP answer within {} ms", timeout.as_millis()),
        )
    })?
}

/// True once `raw` holds a whole answer: the head, and as much body as
/// `Content-Length` says, or a chunked body's last chunk.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match (name.trim(), value.trim()) {
            ("content-length", n) => return n.parse().is_ok_and(|n: usize| body.len() >= n),
            ("transfer-encoding", "chunked") => return body.ends_with(b"0\r\n\r\n"),
            _ => {}
        }
    }
    false
}

fn parse(raw: &[u8]) -> io::Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let length = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut lines = head.lines();
    let status = lines
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = match length {
        _ if chunked => dechunk(body),
        Some(n) if n <= body.len() && body.is_char_boundary(n) => body[..n].to_string(),
        _ => body.to_string(),
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
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
        let a =
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nX-Served-By: a:1 replica\r\n\r\nok\n")
                .unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
        assert_eq!(a.header("x-served-by"), Some("a:1 replica"));
        let c = parse(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndown\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!((c.status, c.body.as_str()), (503, "down"));
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length:2\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length:3\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length:3"));
    }
}
