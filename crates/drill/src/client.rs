//! One workload session's client: its connection to the target, opened
//! when first needed, reopened after it breaks and, with connection churn
//! (`--reconnect-every N`), closed and reopened every N operations the way
//! short-lived connections and recycling pools do; and why an operation
//! failed, as a typed value. Where a failure happened decides whether the
//! command can have run; its type (the client error's variant, the error
//! reply's code) decides its kind, never the wording of a message.
//!
//! With churn every new connection starts with a modern client's handshake
//! (go-redis v9, Lettuce): `HELLO 3 AUTH`, then `CLIENT SETINFO` of the
//! library's name and version, so what a failover does to connection setup
//! (a stalled handshake, a refused connect) is part of what is measured.
//! Without churn a connection sends only `AUTH` and speaks RESP2.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use belay_client::{Auth, ClientError, Connection, Value};

use crate::history::{ErrorKind, Outcome};
use crate::workload::{LiveStats, Target, WorkloadSpec};

/// The library name and version a churning connection announces.
pub const LIB_NAME: &str = "belay-drill";
pub const LIB_VER: &str = env!("CARGO_PKG_VERSION");

/// The direct-master target's own failure: no Sentinel named a master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMaster {
    pub master_name: String,
    /// Why each Sentinel asked gave no master, in the order asked.
    pub answers: Vec<String>,
}

impl fmt::Display for NoMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no Sentinel named a master for {}: {}",
            self.master_name,
            self.answers.join("; ")
        )
    }
}

/// Why one operation failed.
#[derive(Debug)]
pub enum Failure {
    /// Opening or setting up a connection failed (connect, AUTH,
    /// handshake): the command was never sent.
    Opening(ClientError),
    /// No Sentinel named a master: nothing was sent.
    NoMaster(NoMaster),
    /// The connection failed after the command was sent.
    InFlight(ClientError),
    /// The server answered with an error reply.
    Reply(String),
    /// The server answered something that is no answer to the command.
    Unexpected(String),
}

impl Failure {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::Opening(e) | Failure::InFlight(e) => ErrorKind::from_client_error(e),
            Failure::NoMaster(_) => ErrorKind::NoMaster,
            Failure::Reply(message) => ErrorKind::from_reply(message),
            Failure::Unexpected(_) => ErrorKind::Other,
        }
    }

    /// Whether the command was written to a connection (and so may have run).
    pub fn sent(&self) -> bool {
        !matches!(self, Failure::Opening(_) | Failure::NoMaster(_))
    }

    /// The failure as the history records it.
    pub fn outcome(&self) -> Outcome {
        Outcome::Err {
            kind: self.kind(),
            sent: self.sent(),
            message: self.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Opening(e) | Failure::InFlight(e) => e.fmt(f),
            Failure::NoMaster(n) => n.fmt(f),
            Failure::Reply(message) => f.write_str(message),
            Failure::Unexpected(reply) => write!(f, "unexpected reply {reply}"),
        }
    }
}

/// `HELLO 3`, with `AUTH <user> <password>` when there is a password (user
/// `default` when none is named), as go-redis v9 and Lettuce open a connection.
pub fn hello_command(auth: &Auth) -> Vec<String> {
    let mut cmd = vec!["HELLO".to_string(), "3".to_string()];
    if !auth.password.is_empty() {
        cmd.push("AUTH".into());
        cmd.push(auth.username.clone().unwrap_or_else(|| "default".into()));
        cmd.push(auth.password.clone());
    }
    cmd
}

/// `CLIENT SETINFO LIB-NAME` and `LIB-VER`, sent after `HELLO`.
pub fn setinfo_commands() -> [[&'static str; 4]; 2] {
    [
        ["CLIENT", "SETINFO", "LIB-NAME", LIB_NAME],
        ["CLIENT", "SETINFO", "LIB-VER", LIB_VER],
    ]
}

/// A modern client's handshake on a fresh connection. An error reply to
/// `HELLO` fails it (the connection is not usable as RESP3 with these
/// credentials); error replies to `CLIENT SETINFO` are ignored, as clients
/// do, since Redis before 7.2 has no such command. The two `SETINFO`s are
/// pipelined, as go-redis does.
async fn handshake(c: &mut Connection, auth: &Auth) -> Result<(), ClientError> {
    if let Value::Error(message) = c.call(&hello_command(auth)).await? {
        return Err(ClientError::Reply {
            addr: c.addr().to_string(),
            op: "HELLO".into(),
            message,
        });
    }
    let setinfo = setinfo_commands();
    for cmd in &setinfo {
        c.send(cmd).await?;
    }
    for _ in &setinfo {
        c.read_value().await?;
    }
    Ok(())
}

/// One session's connection to the target.
pub struct Client {
    spec: Arc<WorkloadSpec>,
    stats: Arc<LiveStats>,
    conn: Option<Connection>,
    /// Commands sent on `conn` so far, for churn.
    used: u32,
    /// The master a Sentinel last named (direct-master): churn reconnects
    /// there; a failure forgets it, so the next connection asks again.
    master: Option<String>,
    /// Which Sentinel to ask first (spreads sessions over Sentinels).
    first_sentinel: usize,
}

impl Client {
    pub fn new(spec: Arc<WorkloadSpec>, stats: Arc<LiveStats>, session: u32) -> Client {
        Client {
            spec,
            stats,
            conn: None,
            used: 0,
            master: None,
            first_sentinel: session as usize,
        }
    }

    fn connect_timeout(&self) -> Duration {
        self.spec.op_timeout.min(Duration::from_secs(2))
    }

    /// Whether the connection has served its N operations and is to be
    /// replaced before the next one.
    fn due_for_reconnect(&self) -> bool {
        due_for_reconnect(self.spec.reconnect_every, self.used)
    }

    async fn target_addr(&mut self) -> Result<String, Failure> {
        match &self.spec.target {
            Target::Gateway { addr } => Ok(addr.clone()),
            Target::DirectMaster {
                sentinels,
                master_name,
            } => {
                if let Some(m) = &self.master {
                    return Ok(m.clone());
                }
                let m = self
                    .ask_sentinels(sentinels, master_name)
                    .await
                    .map_err(Failure::NoMaster)?;
                self.master = Some(m.clone());
                Ok(m)
            }
        }
    }

    /// Opens a connection: TCP within the connect timeout, then `AUTH`, or
    /// with churn the handshake, within the command deadline (what a
    /// client's read timeout bounds).
    async fn open(&mut self) -> Result<Connection, Failure> {
        let addr = self.target_addr().await?;
        let opened = if self.spec.reconnect_every == 0 {
            Connection::connect_with(
                &addr,
                self.spec.tls.as_ref(),
                Some(&self.spec.auth),
                self.connect_timeout(),
            )
            .await
            .map(|mut c| {
                c.set_timeout(self.spec.op_timeout);
                c
            })
        } else {
            let tls = self.spec.tls.as_ref();
            match Connection::connect_with(&addr, tls, None, self.connect_timeout()).await {
                Ok(mut c) => {
                    c.set_timeout(self.spec.op_timeout);
                    handshake(&mut c, &self.spec.auth).await.map(|()| c)
                }
                Err(e) => Err(e),
            }
        };
        match opened {
            Ok(c) => {
                self.stats
                    .connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                Ok(c)
            }
            Err(e) => {
                self.master = None;
                Err(Failure::Opening(e))
            }
        }
    }

    /// The naive application's discovery: the first Sentinel that answers.
    async fn ask_sentinels(&self, sentinels: &[String], name: &str) -> Result<String, NoMaster> {
        let mut answers = Vec::new();
        for i in 0..sentinels.len() {
            let s = &sentinels[(self.first_sentinel + i) % sentinels.len()];
            let asked = async {
                let (mut c, _) = Connection::connect_sentinel_with(
                    s,
                    self.spec.tls.as_ref(),
                    &self.spec.sentinel_auth,
                    Duration::from_millis(500),
                )
                .await?;
                c.sentinel_master_addr(name).await
            }
            .await;
            match asked {
                Ok(Some((h, p))) => return Ok(format!("{h}:{p}")),
                Ok(None) => answers.push(format!("{s}: unknown master")),
                Err(e) => answers.push(e.to_string()),
            }
        }
        Err(NoMaster {
            master_name: name.to_string(),
            answers,
        })
    }

    /// Sends one command and returns its reply; an error reply is a
    /// [`Failure::Reply`]. With churn, a connection that has served its N
    /// operations is closed first and a new one opened: the time that
    /// takes is this command's.
    pub async fn call(&mut self, args: &[&str]) -> Result<Value, Failure> {
        if self.due_for_reconnect() {
            // Dropping closes the socket, as a pool retiring a connection does.
            self.conn = None;
        }
        self.call_on_this_connection(args).await
    }

    /// Like [`Client::call`] but never replaces a working connection
    /// first: the read-your-writes probe must read on the connection that
    /// wrote.
    pub async fn call_on_this_connection(&mut self, args: &[&str]) -> Result<Value, Failure> {
        if self.conn.is_none() {
            self.conn = Some(self.open().await?);
            self.used = 0;
        }
        self.used += 1;
        let conn = self.conn.as_mut().expect("connected above");
        let mut reply = conn.call(args).await;
        // RESP3 out-of-band pushes are not replies (none are expected: the
        // workload neither subscribes nor tracks keys).
        while let Ok(Value::Push(_)) = reply {
            reply = conn.read_value().await;
        }
        match reply {
            Ok(Value::Error(message)) => {
                if ErrorKind::from_reply(&message) == ErrorKind::ReadOnly {
                    // The node was demoted: look again (the gateway never
                    // sends READONLY; a direct client must re-resolve).
                    self.conn = None;
                    self.master = None;
                }
                Err(Failure::Reply(message))
            }
            Ok(v) => Ok(v),
            Err(e) => {
                self.conn = None;
                self.master = None;
                Err(Failure::InFlight(e))
            }
        }
    }
}

/// `every` 0 never reconnects; otherwise after `every` commands.
fn due_for_reconnect(every: u32, used: u32) -> bool {
    every > 0 && used >= every
}

#[cfg(test)]
mod tests {
    use belay_client::sentinel::SentinelAuth;

    use super::*;

    #[test]
    fn where_a_failure_happened_decides_whether_the_command_was_sent() {
        let timeout = || ClientError::Timeout {
            addr: "127.0.0.1:7000".into(),
            op: "HELLO".into(),
            timeout: Duration::from_secs(2),
        };
        let opening = Failure::Opening(timeout());
        assert_eq!(opening.kind(), ErrorKind::Timeout);
        assert!(!opening.sent());
        assert!(!opening.outcome().may_have_applied());
        let in_flight = Failure::InFlight(timeout());
        assert!(in_flight.sent());
        assert!(in_flight.outcome().may_have_applied());

        let no_master = Failure::NoMaster(NoMaster {
            master_name: "mymaster".into(),
            answers: vec!["127.0.0.1:26379: unknown master".into()],
        });
        assert_eq!(no_master.kind(), ErrorKind::NoMaster);
        assert!(!no_master.sent());
        assert_eq!(
            no_master.to_string(),
            "no Sentinel named a master for mymaster: 127.0.0.1:26379: unknown master"
        );

        let uncertain = Failure::Reply("UNCERTAIN belay: lost after sending".into());
        assert_eq!(uncertain.kind(), ErrorKind::MaybeRan);
        assert!(uncertain.outcome().may_have_applied());
        let held = Failure::Reply("TRYAGAIN belay: no confirmed master".into());
        assert_eq!(held.kind(), ErrorKind::HoldTimeout);
        assert!(!held.outcome().may_have_applied());
        assert_eq!(
            held.outcome(),
            Outcome::Err {
                kind: ErrorKind::HoldTimeout,
                sent: true,
                message: "TRYAGAIN belay: no confirmed master".into()
            }
        );
        assert_eq!(
            Failure::Unexpected("Map([])".into()).kind(),
            ErrorKind::Other
        );
    }

    #[test]
    fn the_handshake_is_a_modern_clients() {
        let with = |username: Option<&str>, password: &str| {
            hello_command(&Auth {
                username: username.map(str::to_string),
                password: password.into(),
            })
        };
        assert_eq!(
            with(None, "s3cret"),
            ["HELLO", "3", "AUTH", "default", "s3cret"]
        );
        assert_eq!(with(Some("app"), "pw"), ["HELLO", "3", "AUTH", "app", "pw"]);
        assert_eq!(with(None, ""), ["HELLO", "3"]);
        let [name, ver] = setinfo_commands();
        assert_eq!(name, ["CLIENT", "SETINFO", "LIB-NAME", "belay-drill"]);
        assert_eq!(ver[..3], ["CLIENT", "SETINFO", "LIB-VER"]);
        assert_eq!(ver[3], env!("CARGO_PKG_VERSION"));
    }

    /// Each connection's commands, and whether the client closed it.
    type Seen = Arc<std::sync::Mutex<Vec<(Vec<String>, bool)>>>;

    /// A fake server that answers like Redis 7.0 (no `CLIENT SETINFO`) and
    /// records each connection's commands and whether the client closed it.
    struct FakeServer {
        addr: String,
        conns: Seen,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeServer {
        async fn start() -> FakeServer {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let conns: Seen = Arc::default();
            let all = conns.clone();
            let task = tokio::spawn(async move {
                let mut serving = tokio::task::JoinSet::new();
                loop {
                    let (mut sock, _) = listener.accept().await.unwrap();
                    let me = {
                        let mut c = all.lock().unwrap();
                        c.push((Vec::new(), false));
                        c.len() - 1
                    };
                    let all = all.clone();
                    serving.spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            let parsed =
                                belay_resp::parse_value(&buf, &belay_resp::Limits::for_replies())
                                    .unwrap();
                            let Some((cmd, used)) = parsed else {
                                let mut chunk = [0u8; 4096];
                                match sock.read(&mut chunk).await {
                                    Ok(0) | Err(_) => {
                                        all.lock().unwrap()[me].1 = true;
                                        return;
                                    }
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                                continue;
                            };
                            buf.drain(..used);
                            let args: Vec<String> = cmd
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|a| a.to_text().unwrap())
                                .collect();
                            let reply: &[u8] = match args[0].as_str() {
                                "HELLO" if args.last().unwrap() == "bad" => {
                                    b"-WRONGPASS invalid username-password pair\r\n"
                                }
                                "HELLO" => b"%1\r\n+proto\r\n:3\r\n",
                                "CLIENT" => b"-ERR unknown subcommand 'SETINFO'\r\n",
                                "AUTH" | "SET" => b"+OK\r\n",
                                // An out-of-band push before the reply.
                                "GET" => b">2\r\n+invalidate\r\n_\r\n$1\r\n5\r\n",
                                _ => b"-ERR unknown command\r\n",
                            };
                            all.lock().unwrap()[me].0.push(args.join(" "));
                            sock.write_all(reply).await.unwrap();
                        }
                    });
                }
            });
            FakeServer { addr, conns, task }
        }

        fn conns(&self) -> Vec<(Vec<String>, bool)> {
            self.conns.lock().unwrap().clone()
        }
    }

    fn client_of(addr: &str, password: &str, reconnect_every: u32) -> (Client, Arc<LiveStats>) {
        let spec = Arc::new(WorkloadSpec {
            target: Target::Gateway { addr: addr.into() },
            auth: Auth::password(password),
            sentinel_auth: SentinelAuth::None,
            tls: None,
            layout: crate::history::Layout {
                prefix: "t".into(),
                writers: 1,
                readers: 0,
                counters: 1,
                regs_per_writer: 1,
                shard_tags: Vec::new(),
            },
            seed: 1,
            op_timeout: Duration::from_secs(2),
            think: Duration::ZERO,
            reconnect_every,
        });
        let stats = Arc::new(LiveStats::default());
        (Client::new(spec, stats.clone(), 0), stats)
    }

    async fn wait_closed(server: &FakeServer, conn: usize) {
        for _ in 0..100 {
            if server.conns()[conn].1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connection {conn} was not closed: {:?}", server.conns());
    }

    #[tokio::test]
    async fn churn_reconnects_every_n_commands_with_a_handshake() {
        let server = FakeServer::start().await;
        let (mut client, stats) = client_of(&server.addr, "pw", 3);
        for i in 0..3 {
            let v = client.call(&["SET", "k", &i.to_string()]).await.unwrap();
            assert_eq!(v, Value::Simple("OK".into()));
        }
        // Due for a new connection, but a probe stays on this one.
        let v = client.call_on_this_connection(&["GET", "k"]).await.unwrap();
        assert_eq!(v.to_text().as_deref(), Some("5"), "the push was skipped");
        let v = client.call(&["GET", "k"]).await.unwrap();
        assert_eq!(v.to_text().as_deref(), Some("5"));
        assert_eq!(stats.connections_opened.load(Ordering::Relaxed), 2);
        wait_closed(&server, 0).await;

        let handshake = [
            "HELLO 3 AUTH default pw".to_string(),
            "CLIENT SETINFO LIB-NAME belay-drill".into(),
            format!("CLIENT SETINFO LIB-VER {LIB_VER}"),
        ];
        let conns = server.conns();
        assert_eq!(conns.len(), 2);
        let mut first = handshake.to_vec();
        first.extend(["SET k 0", "SET k 1", "SET k 2", "GET k"].map(String::from));
        assert_eq!(conns[0].0, first);
        let mut second = handshake.to_vec();
        second.push("GET k".into());
        assert_eq!(conns[1].0, second);
        assert!(!conns[1].1, "the current connection stays open");
    }

    #[tokio::test]
    async fn without_churn_one_connection_authenticates_and_serves_everything() {
        let server = FakeServer::start().await;
        let (mut client, stats) = client_of(&server.addr, "pw", 0);
        for _ in 0..10 {
            client.call(&["SET", "k", "1"]).await.unwrap();
        }
        assert_eq!(stats.connections_opened.load(Ordering::Relaxed), 1);
        let conns = server.conns();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].0[0], "AUTH pw");
        assert_eq!(conns[0].0.len(), 11);
    }

    #[tokio::test]
    async fn a_refused_handshake_fails_the_command_before_it_is_sent() {
        let server = FakeServer::start().await;
        let (mut client, stats) = client_of(&server.addr, "bad", 5);
        let f = client.call(&["SET", "k", "1"]).await.unwrap_err();
        assert!(matches!(f, Failure::Opening(_)), "{f:?}");
        assert_eq!(f.kind(), ErrorKind::Auth);
        assert!(!f.sent());
        assert_eq!(stats.connections_opened.load(Ordering::Relaxed), 0);
        assert_eq!(server.conns()[0].0, ["HELLO 3 AUTH default bad"]);
    }

    #[test]
    fn churn_replaces_a_connection_after_n_commands_and_never_without_it() {
        assert!(!due_for_reconnect(0, 0));
        assert!(!due_for_reconnect(0, 1_000_000));
        assert!(!due_for_reconnect(20, 0));
        assert!(!due_for_reconnect(20, 19));
        assert!(due_for_reconnect(20, 20));
        assert!(due_for_reconnect(1, 1));
    }
}
