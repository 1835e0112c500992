//! The session's timers, in paused time: the failover hold, waiting for a
//! command table, the idle and login deadlines — and what never waits for
//! the master (connection set-up commands). A session over a real loopback
//! socket, in front of a topology the test writes itself: no Redis needed.

use std::sync::Arc;
use std::time::Duration;

use belay_resp::Value;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Session;
use crate::commands::CommandTable;
use crate::config::GatewayConfig;
use crate::server::Shared;
use crate::topology::Topology;

/// A command table that knows GET (a read) and SET (a write).
fn table() -> Arc<CommandTable> {
    let entry = |name: &str, flag: &str| {
        Value::Array(vec![
            Value::Bulk(Bytes::copy_from_slice(name.as_bytes())),
            Value::Integer(-1),
            Value::Array(vec![Value::Simple(flag.into())]),
        ])
    };
    let reply = Value::Array(vec![entry("get", "readonly"), entry("set", "write")]);
    Arc::new(CommandTable::from_command_reply(
        &reply,
        crate::commands::Software::redis("7.0.15"),
        Default::default(),
    ))
}

/// What a test keeps for its session's lifetime: the topology it may
/// change, and where the session reports to discovery.
type Handles = (
    watch::Sender<Arc<Topology>>,
    mpsc::UnboundedReceiver<crate::discovery::Event>,
);

/// A session for a client socket, in front of a topology with no master
/// (every write is held) and `commands`.
async fn session(cfg: GatewayConfig, commands: Arc<CommandTable>) -> (TcpStream, Handles) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let (tx, rx) = watch::channel(Arc::new(Topology::empty(commands)));
    let (events, events_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(
        Arc::new(crate::reload::LiveConfig::new(cfg, None)),
        rx,
        events,
        Default::default(),
    ));
    tokio::spawn(Session::new(1, super::ClientStream::Plain(stream), shared).run());
    (client, (tx, events_rx))
}

fn open() -> GatewayConfig {
    GatewayConfig {
        sentinels: vec!["unused:1".into()],
        no_client_auth: true,
        ..GatewayConfig::default()
    }
}

async fn send(c: &mut TcpStream, commands: &[&[&str]]) {
    let mut out = Vec::new();
    for cmd in commands {
        out.extend_from_slice(&belay_resp::encode_command(cmd));
    }
    c.write_all(&out).await.unwrap();
}

/// Reads until `n` replies (or the end of the stream) have come.
async fn replies(c: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    let limits = belay_resp::Limits::for_replies();
    while out.len() < n {
        while let Ok(Some(len)) = belay_resp::frame_len(&buf, &limits) {
            out.push(String::from_utf8_lossy(&buf.split_to(len)).into_owned());
        }
        if out.len() >= n || c.read_buf(&mut buf).await.unwrap() == 0 {
            break;
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_write_with_no_master_is_held_for_the_failover_hold_then_refused() {
    let cfg = GatewayConfig {
        failover_hold_ms: 15_000,
        ..open()
    };
    let (mut c, _handles) = session(cfg, table()).await;
    let started = Instant::now();
    // A write, then a command answered at once but queued behind it.
    send(&mut c, &[&["SET", "k", "v"], &["PING"]]).await;
    let got = replies(&mut c, 2).await;
    let waited = started.elapsed();
    assert!(
        got[0].starts_with("-TRYAGAIN belay: no confirmed master for 15000 ms"),
        "{got:?}"
    );
    assert_eq!(got[1], "+PONG\r\n", "in order, after the held write");
    assert!(waited >= Duration::from_secs(15), "{waited:?}");
    assert!(waited < Duration::from_secs(16), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn without_a_command_table_commands_wait_but_set_up_commands_do_not() {
    let cfg = GatewayConfig {
        failover_hold_ms: 5_000,
        ..open()
    };
    let (mut c, _handles) = session(cfg, Arc::new(CommandTable::default())).await;
    let started = Instant::now();
    send(
        &mut c,
        &[
            &["HELLO", "3"],
            &["CLIENT", "SETINFO", "LIB-NAME", "go-redis"],
            &["CLIENT", "SETNAME", "app"],
            &["SELECT", "0"],
            &["ECHO", "hi"],
        ],
    )
    .await;
    let got = replies(&mut c, 5).await;
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "set-up commands never wait: {got:?}"
    );
    assert!(got[0].starts_with("%7\r\n"), "{got:?}");
    assert_eq!(&got[1..], ["+OK\r\n", "+OK\r\n", "+OK\r\n", "$2\r\nhi\r\n"]);
    send(&mut c, &[&["GET", "k"]]).await;
    let got = replies(&mut c, 1).await;
    assert!(
        got[0].starts_with("-TRYAGAIN belay: the gateway has not read the master's command table"),
        "{got:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_closed() {
    let cfg = GatewayConfig {
        idle_timeout_secs: 5,
        ..open()
    };
    let (mut c, _handles) = session(cfg, table()).await;
    let started = Instant::now();
    send(&mut c, &[&["PING"]]).await;
    assert_eq!(replies(&mut c, 1).await, ["+PONG\r\n"]);
    // Nothing more: closed after the idle timeout.
    assert!(replies(&mut c, 1).await.is_empty());
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_secs(5) && idle < Duration::from_secs(6),
        "{idle:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_log_in_is_closed_at_the_deadline() {
    let cfg = GatewayConfig {
        no_client_auth: false,
        client_password: Some("pw".into()),
        auth_timeout_secs: 10,
        ..open()
    };
    let (mut c, _handles) = session(cfg, table()).await;
    let started = Instant::now();
    send(&mut c, &[&["GET", "k"]]).await;
    let got = replies(&mut c, 3).await;
    assert_eq!(got[0], "-NOAUTH Authentication required.\r\n");
    assert!(got[1].contains("authentication timed out"), "{got:?}");
    assert_eq!(got.len(), 2, "then closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "{took:?}"
    );
}
