//! One backend connection against a real redis-server: what it writes, and
//! what it tells the sessions when the node goes silent.

use std::time::Duration;

use belay_gateway::{
    BackendConn, BackendError, ConnectSpec, Context, LostWhy, ReplyResult, Silence,
};
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
    let conn = BackendConn::open(
        &ConnectSpec {
            addr: node.clone(),
            gateway_auth: Some(lab.auth()).into(),
            require_master: false,
            connect_timeout: Duration::from_secs(5),
            silence: Some(Silence {
                flag_after: Duration::from_millis(300),
                abandon_after: Duration::from_millis(1500),
            }),
            health: Default::default(),
            load: None,
            cluster_replica: false,
        },
        &Context::default(),
        &[],
    )
    .await
    .expect("connect to a replica");
    let send = |raw: Bytes| conn.send_batch(raw, 1, false, None);

    // The node is frozen while it owes the first command's reply: the
    // commands that come meanwhile wait in the gateway, then go in one write.
    let before = conn.writes();
    lab.pause(&node).unwrap();
    let first = send(command(&["ECHO", "first"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conn.writes() - before, 1, "the first command was written");
    let later: Vec<_> = (0..3)
        .map(|i| {
            let rx = send(command(&["ECHO", &format!("later-{i}")]));
            std::thread::sleep(Duration::from_millis(20));
            rx
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        conn.writes() - before,
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
        conn.writes() - before,
        2,
        "the three later commands shared one write"
    );

    // Silent for longer than the request timeout, as a node running a slow
    // command is: it takes no new commands, but what it was sent still gets
    // its reply when it answers.
    lab.pause(&node).unwrap();
    let slow = send(command(&["ECHO", "slow"]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(conn.health().is_silent(), "the silent node is flagged");
    assert!(conn.is_alive(), "and its connection kept");
    lab.resume(&node).unwrap();
    assert_eq!(reply(slow).await.unwrap(), &b"$4\r\nslow\r\n"[..]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!conn.health().is_silent(), "it answers again");

    // Frozen for good: past the abandon bound the command on the wire may
    // or may not have run; the ones held back never left, so a session may
    // safely send them elsewhere.
    lab.pause(&node).unwrap();
    let on_the_wire = send(command(&["ECHO", "on the wire"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = send(command(&["ECHO", "held"]));
    let lost = reply(on_the_wire).await.unwrap_err();
    assert!(
        matches!(
            lost,
            BackendError::Lost {
                why: LostWhy::Silent(_),
                ..
            }
        ),
        "{lost}"
    );
    let not_sent = reply(held).await.unwrap_err();
    assert!(
        matches!(not_sent, BackendError::NotSent { .. }),
        "the held command is reported as never sent: {not_sent}"
    );
    lab.resume(&node).unwrap();
}
