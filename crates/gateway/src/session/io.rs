//! The client's socket, as the session sees it: requests in (parsed as they
//! complete, each byte looked at once however the request is split across
//! reads), replies out (written without waiting when the socket takes
//! them, buffered and charged to the client's output budget when not).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use belay_resp::{Limits, ProtocolError, Request, RequestParser};
use bytes::{Buf, BytesMut};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::budget::OutputBudget;

/// Stop reading a client while this much output waits for it: a client
/// that does not read gets no more work done for it.
const OUT_HIGH_WATER: usize = 1024 * 1024;

pub struct ClientIo {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    /// Bytes read and not yet parsed; allocated on first use, so ten
    /// thousand idle clients cost no buffers.
    pub inbuf: BytesMut,
    parser: RequestParser,
    /// Replies not yet written.
    out: BytesMut,
    pub budget: Arc<OutputBudget>,
}

impl ClientIo {
    pub fn new(stream: TcpStream, budget: Arc<OutputBudget>) -> ClientIo {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        ClientIo {
            read,
            write,
            inbuf: BytesMut::new(),
            parser: RequestParser::default(),
            out: BytesMut::new(),
            budget,
        }
    }

    /// The client's address (asked of the socket: kept by every idle
    /// client, it would cost more than asking the few times it is needed).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.write.peer_addr().ok()
    }

    /// The gateway's address the client connected to.
    pub fn local(&self) -> Option<SocketAddr> {
        self.write.local_addr().ok()
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
        std::task::ready!(self.read.as_ref().poll_read_ready(cx))?;
        if self.inbuf.is_empty() && self.inbuf.capacity() > 1024 * 1024 {
            // Give back what a huge request grew it to (nothing is parsed
            // half-way in an empty buffer).
            self.inbuf = BytesMut::new();
        }
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(16 * 1024);
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.read), cx, &mut self.inbuf)
    }

    /// The next complete request, if one has arrived.
    pub fn next_request(&mut self, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
        self.parser.parse(&mut self.inbuf, limits)
    }

    /// Queues reply bytes for the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Enough output waits that reading more from the client can wait too.
    pub fn output_backlogged(&self) -> bool {
        self.out.len() >= OUT_HIGH_WATER
    }

    /// Writes as much as the socket takes now. Returns whether any byte
    /// was written.
    pub fn try_flush(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        while !self.out.is_empty() {
            match self.write.try_write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.advance(n);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
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
    pub fn try_flush_held(&mut self) -> io::Result<bool> {
        use nix::sys::socket::{send, MsgFlags};
        use std::os::fd::AsRawFd;
        let fd = self.write.as_ref().as_raw_fd();
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
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write.as_ref().poll_write_ready(cx)
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

impl ClientIo {
    /// Closes the connection in order between replies: the client reads
    /// every reply, then the end of the stream. What it still sends is
    /// read and dropped until it closes too (or `linger` passes): closing
    /// with unread input would send a reset, which can destroy replies the
    /// client has not read yet.
    pub async fn close_gracefully(&mut self, linger: std::time::Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.write.shutdown().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(linger, async {
            let mut buf = [0u8; 1024];
            while let Ok(n) = self.read.read(&mut buf).await {
                if n == 0 {
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
