//! The client's socket, as the session sees it: requests in (parsed as they
//! complete, each byte looked at once however the request is split across
//! reads), replies out (written without waiting when the socket takes
//! them, buffered and charged to the client's output budget when not).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use belay_resp::{Limits, ProtocolError, Request, RequestParser};
use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::budget::OutputBudget;

/// Stop reading a client while this much output waits for it: a client
/// that does not read gets no more work done for it.
const OUT_HIGH_WATER: usize = 1024 * 1024;

/// A client's connection as accepted: plain TCP, or TLS after the handshake.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Plain TCP as two owned halves, so readiness can be asked without
/// reading (an idle client costs no buffer) and replies written with
/// `try_write`; TLS as one stream (rustls is one state machine for both
/// directions), written through `poll_write` and flushed.
enum Transport {
    Plain {
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
    },
    Tls(Box<TlsStream<TcpStream>>),
}

pub struct ClientIo {
    transport: Transport,
    /// Bytes read and not yet parsed; allocated on first use, so ten
    /// thousand idle clients cost no buffers.
    pub inbuf: BytesMut,
    parser: RequestParser,
    /// Replies not yet written.
    out: BytesMut,
    pub budget: Arc<OutputBudget>,
}

impl ClientIo {
    pub fn new(stream: ClientStream, budget: Arc<OutputBudget>) -> ClientIo {
        let transport = match stream {
            ClientStream::Plain(tcp) => {
                let _ = tcp.set_nodelay(true);
                let (read, write) = tcp.into_split();
                Transport::Plain { read, write }
            }
            ClientStream::Tls(tls) => {
                let _ = tls.get_ref().0.set_nodelay(true);
                Transport::Tls(tls)
            }
        };
        ClientIo {
            transport,
            inbuf: BytesMut::new(),
            parser: RequestParser::default(),
            out: BytesMut::new(),
            budget,
        }
    }

    /// The client's address (asked of the socket: kept by every idle
    /// client, it would cost more than asking the few times it is needed).
    pub fn peer(&self) -> Option<SocketAddr> {
        match &self.transport {
            Transport::Plain { write, .. } => write.peer_addr().ok(),
            Transport::Tls(tls) => tls.get_ref().0.peer_addr().ok(),
        }
    }

    /// The gateway's address the client connected to.
    pub fn local(&self) -> Option<SocketAddr> {
        match &self.transport {
            Transport::Plain { write, .. } => write.local_addr().ok(),
            Transport::Tls(tls) => tls.get_ref().0.local_addr().ok(),
        }
    }

    /// Reads what the client sent, once the socket says there is something.
    ///
    /// Polled beside the head's reply, never awaited alone: a readiness that
    /// turns out stale (the last read happened to drain the socket exactly)
    /// leaves the session waiting on both, not stuck in a read while replies
    /// the client waits for pile up. The buffer grows only once there is
    /// input; a short read tells tokio the socket is drained, which saves
    /// an EAGAIN syscall per request.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if let Transport::Plain { read, .. } = &self.transport {
            std::task::ready!(read.as_ref().poll_read_ready(cx))?;
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > 1024 * 1024 {
            // Give back what a huge request grew it to (nothing is parsed
            // half-way in an empty buffer).
            self.inbuf = BytesMut::new();
        }
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(16 * 1024);
        }
        match &mut self.transport {
            Transport::Plain { read, .. } => {
                tokio_util::io::poll_read_buf(Pin::new(read), cx, &mut self.inbuf)
            }
            Transport::Tls(tls) => {
                tokio_util::io::poll_read_buf(Pin::new(tls.as_mut()), cx, &mut self.inbuf)
            }
        }
    }

    /// The next complete request, if one has arrived.
    pub fn next_request(&mut self, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
        self.parser.parse(&mut self.inbuf, limits)
    }

    /// Queues reply bytes for the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Replies wait to be written (for TLS, also records rustls has made
    /// of them and not yet handed to the socket).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
            || matches!(&self.transport, Transport::Tls(tls) if tls.get_ref().1.wants_write())
    }

    /// Enough output waits that reading more from the client can wait too.
    pub fn output_backlogged(&self) -> bool {
        self.out.len() >= OUT_HIGH_WATER
    }

    /// Writes as much as the socket takes now. Returns whether any byte
    /// was written.
    pub fn try_flush(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        match &mut self.transport {
            Transport::Plain { write, .. } => {
                while !self.out.is_empty() {
                    match write.try_write(&self.out) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            self.out.advance(n);
                            progressed = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Transport::Tls(tls) => {
                // Without waiting: a no-op waker. What cannot go now is
                // waited for by `poll_writable` with the session's own waker
                // (`has_output` stays true until rustls has sent it all).
                let mut cx = Context::from_waker(Waker::noop());
                if let Poll::Ready(r) = write_tls(tls, &mut self.out, &mut cx) {
                    progressed = r?;
                }
            }
        }
        if self.out.is_empty() {
            // Give back a buffer a large reply grew.
            if self.out.capacity() > 64 * 1024 {
                self.out = BytesMut::new();
            }
        }
        self.budget.set_unsent(self.out.len());
        Ok(progressed)
    }

    /// [`ClientIo::try_flush`] for the last reply before a drain closes
    /// the connection: the kernel holds it back (`MSG_MORE`) until
    /// [`ClientIo::close_gracefully`] ends the stream, so reply and end
    /// arrive together. Written alone, the reply can wake the client and
    /// the scheduler run it at once (wake-up preemption), before the end
    /// is sent: it would find the connection open and send its next
    /// command into the close.
    /// TLS cannot be held back this way (rustls frames it first): it is
    /// flushed as usual, its close_notify follows at once.
    pub fn try_flush_held(&mut self) -> io::Result<bool> {
        use nix::sys::socket::{send, MsgFlags};
        use std::os::fd::AsRawFd;
        let fd = match &self.transport {
            Transport::Plain { write, .. } => write.as_ref().as_raw_fd(),
            Transport::Tls(_) => return self.try_flush(),
        };
        let flags = MsgFlags::from_bits_retain(nix::libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL;
        let mut progressed = false;
        while !self.out.is_empty() {
            match send(fd, &self.out, flags) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.advance(n);
                    progressed = true;
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.budget.set_unsent(self.out.len());
        Ok(progressed)
    }

    /// Resolves when the socket may take more output.
    pub fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain { write, .. } => write.as_ref().poll_write_ready(cx),
            // TLS has no readiness of its own: writing is how to find out.
            Transport::Tls(tls) => write_tls(tls, &mut self.out, cx).map_ok(|_| ()),
        }
    }

    /// Input arrived (when `read`), the socket takes output again (when
    /// `write`), or the output budget was exceeded (when `budget`): one poll
    /// for all, so a loop can wait on any.
    pub fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        read: bool,
        write: bool,
        budget: bool,
    ) -> Poll<Ready> {
        if budget && self.budget.poll_exceeded(cx).is_ready() {
            return Poll::Ready(Ready::OverBudget);
        }
        if write {
            if let Poll::Ready(r) = self.poll_writable(cx) {
                return Poll::Ready(Ready::Writable(r));
            }
        }
        if read {
            if let Poll::Ready(r) = self.poll_read(cx) {
                return Poll::Ready(Ready::Read(r));
            }
        }
        Poll::Pending
    }

    /// Writes everything queued, waiting for the client as long as it
    /// makes progress within `timeout` each time.
    pub async fn flush(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        while self.has_output() {
            if self.try_flush()? {
                continue;
            }
            match tokio::time::timeout(timeout, std::future::poll_fn(|cx| self.poll_writable(cx)))
                .await
            {
                Ok(r) => r?,
                Err(_) => return Err(not_reading(timeout)),
            }
        }
        Ok(())
    }
}

/// Hands `out` to rustls and rustls's records to the socket, as far as
/// they go now. Ready (with whether anything moved) once something moved or
/// everything is out; pending, with `cx` woken later, when nothing could.
fn write_tls(
    tls: &mut TlsStream<TcpStream>,
    out: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    let mut progressed = false;
    while !out.is_empty() {
        match Pin::new(&mut *tls).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                out.advance(n);
                progressed = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => break,
        }
    }
    match Pin::new(&mut *tls).poll_flush(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(progressed || out.is_empty())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending if progressed => Poll::Ready(Ok(true)),
        Poll::Pending => Poll::Pending,
    }
}

impl ClientIo {
    /// Closes the connection in order between replies: the client reads
    /// every reply, then the end of the stream. What it still sends is
    /// read and dropped until it closes too (or `linger` passes): closing
    /// with unread input would send a reset, which can destroy replies the
    /// client has not read yet.
    pub async fn close_gracefully(&mut self, linger: std::time::Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let shut = match &mut self.transport {
            Transport::Plain { write, .. } => write.shutdown().await,
            // close_notify, then the end of the stream.
            Transport::Tls(tls) => tls.shutdown().await,
        };
        if shut.is_err() {
            return;
        }
        let _ = tokio::time::timeout(linger, async {
            let mut buf = [0u8; 1024];
            loop {
                let n = match &mut self.transport {
                    Transport::Plain { read, .. } => read.read(&mut buf).await,
                    Transport::Tls(tls) => tls.read(&mut buf).await,
                };
                if !matches!(n, Ok(n) if n > 0) {
                    break;
                }
            }
        })
        .await;
    }
}

/// What [`ClientIo::poll_ready`] found.
pub enum Ready {
    /// Bytes read (0: the client closed).
    Read(io::Result<usize>),
    Writable(io::Result<()>),
    OverBudget,
}

/// The error a client that stopped reading its replies is closed with.
pub fn not_reading(timeout: std::time::Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client did not read its replies for {timeout:?}; closing it"),
    )
}
