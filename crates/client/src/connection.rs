use std::time::Duration;

use belay_resp::{encode_command, parse_value, Limits, Value};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::{Stream, TlsClient};
use crate::{ClientError, Info, Role};

/// Credentials for a Redis node or a Sentinel: a password, with an ACL user
/// name when one is used.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Auth {
    pub username: Option<String>,
    pub password: String,
}

impl Auth {
    pub fn password(password: impl Into<String>) -> Auth {
        Auth {
            username: None,
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Auth {
    // Credentials never reach logs, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One control-plane connection to a Redis server or Sentinel. Every
/// operation is bounded by `timeout`.
pub struct Connection {
    addr: String,
    stream: Stream,
    read_buf: BytesMut,
    timeout: Duration,
}

impl Connection {
    /// Connects over plain TCP, authenticates when `auth` is given, and
    /// returns a ready connection. `timeout` bounds the connect and every
    /// later call.
    pub async fn connect(
        addr: &str,
        auth: Option<&Auth>,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        Connection::connect_with(addr, None, auth, timeout).await
    }

    /// [`Connection::connect`], over TLS when `tls` is given (the handshake
    /// is bounded by `timeout` too).
    pub async fn connect_with(
        addr: &str,
        tls: Option<&TlsClient>,
        auth: Option<&Auth>,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let opened = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => Ok(Stream::Plain(tcp)),
                Some(tls) => tls
                    .handshake(addr, tcp)
                    .await
                    .map_err(|source| ClientError::Tls {
                        addr: addr.to_string(),
                        source,
                    }),
            }
        };
        let stream = match tokio::time::timeout(timeout, opened).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: addr.to_string(),
                    op: if tls.is_some() {
                        "connect (TLS)"
                    } else {
                        "connect"
                    }
                    .into(),
                    timeout,
                })
            }
        };
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            read_buf: BytesMut::with_capacity(16 * 1024),
            timeout,
        };
        if let Some(auth) = auth {
            conn.auth(auth).await?;
        }
        Ok(conn)
    }

    /// `AUTH [user] password` on this connection; a refusal is
    /// [`ClientError::Reply`] with the server's words.
    pub async fn auth(&mut self, auth: &Auth) -> Result<(), ClientError> {
        let reply = match &auth.username {
            Some(user) => {
                self.call(&["AUTH", user.as_str(), auth.password.as_str()])
                    .await?
            }
            None => self.call(&["AUTH", auth.password.as_str()]).await?,
        };
        if let Value::Error(message) = reply {
            return Err(ClientError::Reply {
                addr: self.addr.clone(),
                op: "AUTH".into(),
                message,
            });
        }
        Ok(())
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Gives up the socket, for callers that take over the byte stream after
    /// setting the connection up (the gateway's backend connections). Bytes
    /// already buffered would be lost, so this is only valid between calls.
    pub fn into_stream(self) -> Stream {
        debug_assert!(self.read_buf.is_empty());
        self.stream
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a command and returns the reply as it came; an error reply is
    /// `Ok(Value::Error(..))`. See [`Connection::call_ok`] to treat it as an error.
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, ClientError> {
        self.send(args).await?;
        let op = op_name(args);
        self.read_value_named(&op).await
    }

    /// Like [`Connection::call`], but an error reply becomes [`ClientError::Reply`].
    pub async fn call_ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, ClientError> {
        match self.call(args).await? {
            Value::Error(message) => Err(ClientError::Reply {
                addr: self.addr.clone(),
                op: op_name(args),
                message,
            }),
            v => Ok(v),
        }
    }

    /// Writes one command without waiting for its reply (pipelining,
    /// subscriptions).
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), ClientError> {
        let wire = encode_command(args);
        let op = op_name(args);
        // A TLS stream keeps what it was given until flushed.
        let write = async {
            self.stream.write_all(&wire).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ClientError::Io {
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                op,
                timeout: self.timeout,
            }),
        }
    }

    /// Reads the next reply, waiting at most the connection's timeout.
    pub async fn read_value(&mut self) -> Result<Value, ClientError> {
        self.read_value_named("read").await
    }

    /// Reads the next value with no deadline: for subscriptions, where silence
    /// is normal. Callers wrap it in their own timeout or cancellation.
    pub async fn read_value_unbounded(&mut self) -> Result<Value, ClientError> {
        loop {
            if let Some(v) = self.try_parse()? {
                return Ok(v);
            }
            self.fill().await?;
        }
    }

    async fn read_value_named(&mut self, op: &str) -> Result<Value, ClientError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.read_value_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                op: op.to_string(),
                timeout,
            }),
        }
    }

    fn try_parse(&mut self) -> Result<Option<Value>, ClientError> {
        match parse_value(&self.read_buf, &Limits::for_replies()) {
            Ok(Some((v, used))) => {
                let _ = self.read_buf.split_to(used);
                Ok(Some(v))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(ClientError::Protocol {
                addr: self.addr.clone(),
                source,
            }),
        }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        self.read_buf.reserve(8 * 1024);
        let n = self
            .stream
            .read_buf(&mut self.read_buf)
            .await
            .map_err(|source| ClientError::Io {
                addr: self.addr.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Closed {
                addr: self.addr.clone(),
            });
        }
        Ok(())
    }

    /// `ROLE`, decoded.
    pub async fn role(&mut self) -> Result<Role, ClientError> {
        let v = self.call_ok(&["ROLE"]).await?;
        Role::from_value(&v).ok_or_else(|| ClientError::Unexpected {
            addr: self.addr.clone(),
            op: "ROLE".into(),
            detail: format!("{v:?}"),
        })
    }

    /// `INFO <section>`, parsed into fields.
    pub async fn info(&mut self, section: &str) -> Result<Info, ClientError> {
        let v = self.call_ok(&["INFO", section]).await?;
        match v.to_text() {
            Some(text) => Ok(Info::parse(&text)),
            None => Err(ClientError::Unexpected {
                addr: self.addr.clone(),
                op: "INFO".into(),
                detail: format!("{v:?}"),
            }),
        }
    }

    pub(crate) fn unexpected(&self, op: &str, v: &Value) -> ClientError {
        ClientError::Unexpected {
            addr: self.addr.clone(),
            op: op.to_string(),
            detail: format!("{v:?}"),
        }
    }
}

fn op_name<A: AsRef<[u8]>>(args: &[A]) -> String {
    let mut op = String::new();
    for a in args.iter().take(2) {
        if !op.is_empty() {
            op.push(' ');
        }
        let a = String::from_utf8_lossy(a.as_ref());
        // Never echo a password into an error message.
        if op.eq_ignore_ascii_case("AUTH ") || op.eq_ignore_ascii_case("HELLO ") {
            op.push_str("...");
            break;
        }
        op.push_str(&a.to_ascii_uppercase());
    }
    op
}
