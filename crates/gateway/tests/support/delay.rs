//! Added latency in front of one data node, for tests of latency-based
//! routing: a TCP relay that holds what the node sends for a settable time,
//! and an iptables `nat` rule that sends new connections from this host to
//! the node's port through it. (The kernel here has no `netem` qdisc, so
//! `tc` cannot add delay; a relay adds exactly the delay asked for, to the
//! node's replies only, and can change it on the fly.)
//!
//! Only connections made after the rule is in place go through the relay:
//! install it before the gateway connects. The relay connects to the node
//! from its own source address, which the rule leaves alone. Rules carry a
//! comment unique to the test process and are deleted on drop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The relay's connections to the node leave from here (the rule skips it).
const RELAY_SOURCE: &str = "127.0.0.254";

/// Why latency cannot be added here (not root, no iptables `nat`), if so.
pub fn unavailable() -> Option<String> {
    match std::process::Command::new("iptables")
        .args(["-t", "nat", "-S", "OUTPUT"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "iptables -t nat refused ({}): the latency tests need root",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("no iptables ({e}): apt-get install iptables")),
    }
}

/// Latency added to one node's replies while this lives.
pub struct Delay {
    millis: Arc<AtomicU64>,
    rule: Vec<String>,
    relay: tokio::task::JoinHandle<()>,
}

impl Delay {
    /// Relays new connections to `node` (`127.0.0.1:PORT`) with no delay yet.
    pub async fn install(node: &str) -> Delay {
        let (host, port) = node.rsplit_once(':').expect("HOST:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let relay_port = listener.local_addr().unwrap().port();
        let millis = Arc::new(AtomicU64::new(0));
        let relay = tokio::spawn(relay(listener, node.to_string(), millis.clone()));
        let rule: Vec<String> = [
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            host,
            "--dport",
            port,
            "!",
            "-s",
            RELAY_SOURCE,
            "-m",
            "comment",
            "--comment",
            &format!("belay-test-delay-{}", std::process::id()),
            "-j",
            "DNAT",
            "--to-destination",
            &format!("127.0.0.1:{relay_port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let status = std::process::Command::new("iptables")
            .args(["-t", "nat", "-I"])
            .args(&rule)
            .status()
            .expect("iptables");
        assert!(status.success(), "iptables -t nat -I {rule:?} failed");
        Delay {
            millis,
            rule,
            relay,
        }
    }

    /// From now on the node's replies arrive this much later.
    pub fn set(&self, delay: Duration) {
        self.millis
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .args(["-t", "nat", "-D"])
            .args(&self.rule)
            .status();
        // Dropping the accept loop drops its JoinSet: every relayed
        // connection closes.
        self.relay.abort();
    }
}

async fn relay(listener: TcpListener, node: String, millis: Arc<AtomicU64>) {
    let mut conns = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let Ok(upstream) = connect_from_relay_source(&node).await else {
            continue;
        };
        let (client_rx, client_tx) = client.into_split();
        let (node_rx, node_tx) = upstream.into_split();
        conns.spawn(pump(client_rx, node_tx, None));
        conns.spawn(pump(node_rx, client_tx, Some(millis.clone())));
    }
}

async fn connect_from_relay_source(node: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{RELAY_SOURCE}:0").parse().unwrap())?;
    socket.connect(node.parse().unwrap()).await
}

/// Copies `from` to `to`, each chunk held until `delay` after it was read
/// (chunks keep their order; a later, shorter delay does not overtake).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Option<Arc<AtomicU64>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let hold = delay.as_ref().map_or(0, |d| d.load(Ordering::Relaxed));
            let due = Instant::now() + Duration::from_millis(hold);
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::join!(writer, reader);
}
