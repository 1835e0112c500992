//! A gateway upgrade that drops no client: the running gateway hands its
//! listening sockets (the clients' and the admin endpoint's) to the new
//! process over a Unix socket (`SCM_RIGHTS`), the new one starts serving on
//! the very same sockets, then tells the old one to drain.
//!
//! The sockets are never closed in between, so no connection waiting in an
//! accept queue is reset — what happens when one of several `SO_REUSEPORT`
//! listeners closes. The exchange, on a connection to `upgrade_socket`:
//!
//! ```text
//! new → old   TAKE
//! old → new   SOCKETS <clients> <admin 0|1> <tls>   + the descriptors (SCM_RIGHTS)
//!             (the new gateway starts, waits until it is ready, and offers
//!              the hand-off on the same path itself)
//! new → old   DRAIN
//! old → new   DRAINING                        (the old one drains and exits)
//! ```
//!
//! Only a process of the same user may connect (`SO_PEERCRED`), and the
//! socket file is 0600: whoever gets the sockets gets the clients.
//! Should the new process fail before `DRAIN`, the old one goes on serving.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::sync::oneshot;

use crate::server::Sockets;

/// Most descriptors one hand-off carries (one per worker, and the admin's).
const MAX_SOCKETS: usize = 256;

/// The hand-off offered by a running gateway; dropping it stops offering.
pub struct Offer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Offer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Offers `sockets` on `path` until one new gateway took them and asked
/// this one to drain, which the receiver then says. Unless this gateway
/// is `replacing` the one there, a path where another gateway answers is
/// refused (upgrade that one with `--upgrade`); a stale file is replaced.
pub fn offer(
    path: &Path,
    sockets: Sockets,
    replacing: bool,
) -> anyhow::Result<(Offer, oneshot::Receiver<()>)> {
    if !replacing && UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "another gateway offers its sockets at {} (upgrade_socket): take them over with `belay gateway --upgrade`, or choose another path",
            path.display()
        );
    }
    // Bound beside the path, made private, then renamed over it: a
    // process that connects finds either the old gateway or this one.
    let tmp = PathBuf::from(format!("{}.{}", path.display(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot listen on {} (upgrade_socket)", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot put the upgrade socket at {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let (drain_tx, drain_rx) = oneshot::channel();
    let path = path.to_path_buf();
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let uid = nix::unistd::getuid().as_raw();
            match stream.peer_cred() {
                Ok(c) if c.uid() == uid => {}
                other => {
                    tracing::warn!(peer = ?other.map(|c| c.uid()), "upgrade socket: a process of another user asked for the sockets; refused");
                    continue;
                }
            }
            let Ok(copies) = clone_sockets(&sockets) else {
                continue;
            };
            let hand_off = async {
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                tokio::task::spawn_blocking(move || hand_over(stream, copies)).await?
            };
            match hand_off.await {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "upgrade: a new gateway took the listening sockets and asked this one to drain");
                    let _ = drain_tx.send(());
                    return;
                }
                Err(e) => {
                    tracing::warn!("upgrade: the new gateway did not take over ({e:#}); this one goes on serving");
                }
            }
        }
    });
    Ok((Offer { task }, drain_rx))
}

fn clone_sockets(s: &Sockets) -> std::io::Result<Sockets> {
    Ok(Sockets {
        clients: s
            .clients
            .iter()
            .map(|f| f.try_clone())
            .collect::<std::io::Result<_>>()?,
        tls_clients: s
            .tls_clients
            .iter()
            .map(|f| f.try_clone())
            .collect::<std::io::Result<_>>()?,
        admin: s.admin.as_ref().map(|f| f.try_clone()).transpose()?,
    })
}

/// The old gateway's side, blocking: send the sockets, wait for `DRAIN`.
fn hand_over(stream: UnixStream, sockets: Sockets) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    expect_line(&mut reader, "TAKE")?;
    let header = format!(
        "SOCKETS {} {} {}\n",
        sockets.clients.len(),
        u8::from(sockets.admin.is_some()),
        sockets.tls_clients.len(),
    );
    let fds: Vec<RawFd> = sockets
        .clients
        .iter()
        .chain(&sockets.admin)
        .chain(&sockets.tls_clients)
        .map(|f| f.as_raw_fd())
        .collect();
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(header.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context("cannot send the sockets")?;
    // Ours stay open: the new process has its own copies now.
    drop(sockets);
    // No deadline: the new gateway says DRAIN once it serves, or its
    // connection ends (it failed) and this one goes on.
    expect_line(&mut reader, "DRAIN")?;
    (&stream).write_all(b"DRAINING\n")?;
    Ok(())
}

fn expect_line(reader: &mut impl BufRead, word: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() != word {
        anyhow::bail!("expected {word:?}, got {:?}", line.trim_end());
    }
    Ok(())
}

/// The running gateway a new one took the sockets of.
pub struct Predecessor {
    stream: UnixStream,
}

/// Takes the listening sockets of the gateway that offers them on `path`.
pub async fn take_over(path: &Path) -> anyhow::Result<(Sockets, Predecessor)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || take_over_blocking(&path)).await?
}

fn take_over_blocking(path: &Path) -> anyhow::Result<(Sockets, Predecessor)> {
    let stream = UnixStream::connect(path).with_context(|| {
        format!(
            "no running gateway offers its sockets at {} (is it running with the same --upgrade-socket?)",
            path.display()
        )
    })?;
    (&stream).write_all(b"TAKE\n")?;
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let (header, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("cannot receive the sockets")?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().context("too many sockets handed over")? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: the kernel just gave us these descriptors; no one
                // else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    let text = std::str::from_utf8(&buf[..header]).unwrap_or("");
    let mut words = text.split_whitespace();
    let (Some("SOCKETS"), Some(clients), Some(admin)) = (words.next(), words.next(), words.next())
    else {
        anyhow::bail!("the running gateway answered {text:?}, not its sockets");
    };
    let clients: usize = clients.parse().context("bad socket count")?;
    let admin = admin == "1";
    // The TLS listener's sockets come last (absent from a gateway without them).
    let tls: usize = match words.next() {
        Some(n) => n.parse().context("bad TLS socket count")?,
        None => 0,
    };
    if fds.len() != clients + usize::from(admin) + tls || clients + tls == 0 {
        anyhow::bail!(
            "the running gateway announced {clients} client sockets{} but sent {}",
            if admin { " and the admin one" } else { "" },
            fds.len()
        );
    }
    let mut fds = fds.into_iter();
    let sockets = Sockets {
        clients: fds.by_ref().take(clients).collect(),
        admin: if admin { fds.next() } else { None },
        tls_clients: fds.collect(),
    };
    Ok((sockets, Predecessor { stream }))
}

impl Predecessor {
    /// Tells the old gateway to stop accepting and drain.
    pub async fn drain(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || {
            (&self.stream).write_all(b"DRAIN\n")?;
            expect_line(&mut BufReader::new(&self.stream), "DRAINING")
        })
        .await?
    }
}
