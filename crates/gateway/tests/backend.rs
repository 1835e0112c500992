//! One backend connection against a real redis-server: what it writes, and
//! what it tells the sessions when the node goes silent.
//!
//! One test function on purpose: `write_epoch` counts the writes of every
//! backend connection in the process, so nothing else may write meanwhile.

use std::time::Duration;

use belay_gateway::backend::{write_epoch, BackendConn, BackendError, ConnectSpec, ReplyResult};
use belay_lab::{Lab, LabSpec, NoProgress};
use bytes::Bytes;
use tokio::sync::oneshot;

fn command(args: &[&str]) -> Bytes {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    Bytes::from(out)
}

async fn reply(rx: oneshot::Receiver<ReplyResult>) -> Result<Bytes, BackendError> {
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("a reply or an error within 10 s")
        .expect("the connection answers every request")
        .map(|r| r.frames)
}

#[tokio::test]
async fn writes_wait_for_the_nodes_answer_and_never_leave_for_a_silent_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut lab = Lab::start(LabSpec::for_tests(dir.path()), &NoProgress)
        .await
        .expect("lab starts");
    let node = lab.data_nodes()[2].addr();
    let conn = BackendConn::open(&ConnectSpec {
        addr: node.clone(),
        auth: Some(lab.auth()),
        init: Vec::new(),
        require_master: false,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_millis(600)),
        load: None,
    })
    .await
    .expect("connect to a replica");

    // The node is frozen while it owes the first command's reply: the
    // commands that come meanwhile wait in the gateway, then go in one write.
    let before = write_epoch();
    lab.pause(&node).unwrap();
    let first = conn.send(command(&["ECHO", "first"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(write_epoch() - before, 1, "the first command was written");
    let later: Vec<_> = (0..3)
        .map(|i| {
            let rx = conn.send(command(&["ECHO", &format!("later-{i}")]));
            std::thread::sleep(Duration::from_millis(20));
            rx
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        write_epoch() - before,
        1,
        "nothing more is written while the node owes a reply"
    );
    lab.resume(&node).unwrap();
    assert_eq!(reply(first).await.unwrap(), &b"$5\r\nfirst\r\n"[..]);
    for (i, rx) in later.into_iter().enumerate() {
        let want = format!("$7\r\nlater-{i}\r\n");
        assert_eq!(reply(rx).await.unwrap(), want.as_bytes(), "in order");
    }
    assert_eq!(
        write_epoch() - before,
        2,
        "the three later commands shared one write"
    );

    // Frozen for good: the command on the wire may or may not have run; the
    // ones held back never left, so a session may safely send them elsewhere.
    lab.pause(&node).unwrap();
    let on_the_wire = conn.send(command(&["ECHO", "on the wire"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = conn.send(command(&["ECHO", "held"]));
    let lost = reply(on_the_wire).await.unwrap_err();
    assert!(lost.was_sent(), "{lost}");
    let not_sent = reply(held).await.unwrap_err();
    assert!(
        matches!(not_sent, BackendError::NotSent { .. }),
        "the held command is reported as never sent: {not_sent}"
    );
    lab.resume(&node).unwrap();
}
