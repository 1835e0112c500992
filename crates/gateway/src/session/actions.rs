//! What a session waits on a node for: its own master connection, an ACL
//! user's login, `WAIT`, `SCRIPT KILL`/`FUNCTION KILL`, and the commands
//! that go to every data node.

use std::sync::Arc;

use belay_client::{Auth, ClientError};
use belay_resp::Request;
use bytes::{Bytes, BytesMut};
use futures::future::join_all;

use super::builtin::{self, group_admin_reply, kill_reply, Action, Env, Fanout, Login};
use super::input::{Handled, Later};
use super::job::{Conn, Job};
use super::queue::Slot;
use super::state::{OwnConn, TxBroken};
use super::Session;
use crate::backend::NodePool;
use crate::commands::{Class, Routing};
use crate::context::Context;
use crate::reply;
use crate::topology::Topology;

/// What `WAIT` sends first to move the session's own connection's
/// replication offset past its earlier writes on shared connections: a
/// message to a channel only the gateway uses, the one command that
/// replicates without touching data.
const WAIT_MARK: &[u8] = b"*3\r\n$7\r\nPUBLISH\r\n$14\r\n__belay__:wait\r\n$0\r\n\r\n";

/// How long a `PING` waits for a master that has gone quiet.
const QUIET_PING: std::time::Duration = std::time::Duration::from_millis(250);

impl Session {
    pub(super) async fn later(&mut self, later: Later) -> Slot {
        match later {
            Later::OwnConn { job, pool } => self.send_on_own(job, pool).await,
            Later::Login(login) => Slot::Ready(self.login(login).await),
            Later::PingQuietMaster { req, pool } => {
                Slot::Ready(self.ping_quiet_master(&req, &pool).await)
            }
            Later::SelectAsUser(db) => Slot::Ready(self.select_as_user(db).await),
            Later::Wait(req) => self.wait(req).await,
            Later::Kill(req) => Slot::Ready(self.kill(&req).await),
            Later::GroupAdmin(req) => Slot::Ready(self.group_admin(&req).await),
            Later::ToAll { req, routing } => self.send_to_every_node(req, routing).await,
            Later::Spanning { req, how } => self.spanning(req, how).await,
            Later::Throttled { req, delay } => {
                tokio::time::sleep(delay).await;
                let topo = self.topology().clone();
                let name = req.name().unwrap_or_default().to_ascii_lowercase();
                let b = builtin::builtin(&name, &req).expect("a login command");
                match self.apply_builtin(b, &name, req, &topo) {
                    Handled::Slot(slot) => slot,
                    Handled::Later(Later::Login(login)) => Slot::Ready(self.login(login).await),
                    _ => unreachable!("a login answers or checks credentials"),
                }
            }
        }
    }

    /// Sends `job` on the session's own connection to `pool`, opening it.
    async fn send_on_own(&mut self, job: Job, pool: Arc<NodePool>) -> Slot {
        if self.st.own.take().is_some() && self.st.tx_sent && self.st.in_transaction() {
            // The connection that held the transaction is gone.
            self.st.tx_broken.get_or_insert(TxBroken::ConnectionLost);
        }
        if job.in_transaction() && self.st.tx_broken == Some(TxBroken::ConnectionLost) {
            return Slot::Ready(reply::error(
                "ERR belay: transaction aborted: the connection to the master was lost",
            ));
        }
        if !self.open_own(&pool).await {
            return Slot::Held(job);
        }
        let topo = self.topology().clone();
        self.stage_now(job, &topo)
    }

    /// Routes and sends `job` at once, returning its slot.
    fn stage_now(&mut self, job: Job, topo: &Arc<Topology>) -> Slot {
        match self.route_job(job, topo) {
            Handled::Staged => self
                .batch
                .send(&self.io.budget)
                .expect("a command was just staged"),
            Handled::Slot(slot) => slot,
            // The connection just opened is gone again: wait at the head.
            Handled::Later(Later::OwnConn { job, .. }) => Slot::Held(job),
            Handled::Later(_) | Handled::Quit => {
                unreachable!("a routed command needs nothing else")
            }
        }
    }

    /// Opens the session's own connection to `pool`, set up for its
    /// context and name. False when it cannot be had now.
    async fn open_own(&mut self, pool: &Arc<NodePool>) -> bool {
        let name: Vec<Vec<Bytes>> = self
            .st
            .name
            .iter()
            .map(|n| {
                vec![
                    Bytes::from_static(b"CLIENT"),
                    Bytes::from_static(b"SETNAME"),
                    n.clone(),
                ]
            })
            .collect();
        match pool.dedicated(&self.st.ctx, &name, false).await {
            Ok(conn) => {
                self.st.own = Some(OwnConn {
                    pool: pool.clone(),
                    conn,
                    ctx: self.st.ctx.clone(),
                });
                true
            }
            Err(e) => {
                tracing::debug!(session = self.id, error = %e, "cannot open the session's own master connection");
                false
            }
        }
    }

    /// `PING` while the master's connections owe replies it does not send:
    /// a long script (Redis then says `BUSY` to anyone else, and so does the
    /// gateway, in the master's own words) or a frozen node (the gateway
    /// answers itself, as it does during a failover). Asked on a fresh
    /// connection, as the session's user, for at most [`QUIET_PING`].
    async fn ping_quiet_master(&mut self, req: &Request, pool: &NodePool) -> Bytes {
        let auth = self.st.ctx.auth(self.cfg.node_auth().as_ref());
        let asked = tokio::time::timeout(QUIET_PING, async {
            let mut conn = belay_client::Connection::connect_with(
                &pool.addr,
                self.cfg.backend_tls_client.as_ref(),
                auth.as_ref(),
                QUIET_PING,
            )
            .await?;
            conn.call(&[b"PING".as_slice()]).await
        })
        .await;
        match asked {
            Ok(Ok(belay_client::Value::Error(e))) if e.starts_with("BUSY") => reply::error(&e),
            _ => match req.arg(1) {
                Some(msg) => reply::bulk(msg),
                None => reply::simple("PONG"),
            },
        }
    }

    /// `SELECT db` from a session logged in as an ACL user: Redis refuses
    /// it to a user without the right (`NOPERM`), so the gateway asks a
    /// node, as that user, before the session moves — unless a shared
    /// connection already set up for that user and database (by a `SELECT`
    /// as the user) shows the answer.
    async fn select_as_user(&mut self, db: u32) -> Bytes {
        let ctx = Context {
            db,
            db_from_earlier_login: false,
            ..self.st.ctx.clone()
        };
        let Some(user) = ctx.user.clone() else {
            unreachable!("only an ACL user's SELECT is checked")
        };
        let topo = self.topology().clone();
        let slot = self.slot();
        let known = db != 0 && topo.data_nodes().any(|pool| pool.shared_is_up(&ctx, slot));
        if !known {
            let select = ctx.select_command();
            if let Err(refused) = self.ask_a_node(&user, Some(&select)).await {
                return refused;
            }
        }
        if ctx != self.st.ctx {
            self.st.ctx = ctx;
            let select = self.st.ctx.select_command();
            self.replay(&[select]);
        }
        reply::ok()
    }

    /// Logs in as `auth` on a data node — the master if it answers, else a
    /// replica — and sends `cmd` there: the node's own refusal (`WRONGPASS`,
    /// `NOPERM`), or `TRYAGAIN` when no node answers.
    async fn ask_a_node(&mut self, auth: &Auth, cmd: Option<&[Bytes]>) -> Result<(), Bytes> {
        let topo = self.topology().clone();
        let timeout = self.cfg.control_timeout();
        for node in topo.data_nodes() {
            let asked = async {
                let mut conn = belay_client::Connection::connect_with(
                    &node.addr,
                    self.cfg.backend_tls_client.as_ref(),
                    Some(auth),
                    timeout,
                )
                .await?;
                if let Some(cmd) = cmd {
                    conn.call_ok(cmd).await?;
                }
                Ok::<(), ClientError>(())
            };
            match asked.await {
                Ok(()) => return Ok(()),
                // The node's own words (WRONGPASS, NOPERM …): nothing else.
                Err(ClientError::Reply { message, .. }) => return Err(reply::error(&message)),
                Err(e) => {
                    tracing::debug!(session = self.id, node = %node.addr, error = %e, "cannot ask this node")
                }
            }
        }
        // No address: the client may not be logged in yet.
        Err(reply::error(
            "TRYAGAIN belay: no data node answered to check the command; try again",
        ))
    }

    /// Checks an ACL user's credentials with `AUTH` on a data node — the
    /// master if it answers, else a replica: nothing beyond what `AUTH`
    /// needs, so a user Redis lets in is let in — then logs the session in
    /// as that user.
    async fn login(&mut self, login: Login) -> Bytes {
        if let Some(delay) = self.shared.auth_throttle.delay(self.io.peer()) {
            tokio::time::sleep(delay).await;
        }
        let auth = Auth {
            username: Some(String::from_utf8_lossy(&login.user).into_owned()),
            password: String::from_utf8_lossy(&login.password).into_owned(),
        };
        if let Err(refused) = self.ask_a_node(&auth, None).await {
            if !refused.starts_with(b"-TRYAGAIN") {
                self.shared.metrics.error(crate::metrics::ErrorKind::Auth);
                self.shared.auth_throttle.record(self.io.peer(), true);
            }
            return refused;
        }
        let topo = self.topology().clone();
        self.shared.auth_throttle.record(self.io.peer(), false);
        let user = Some(Arc::new(auth));
        self.st.authenticated = true;
        if self.st.ctx.user != user {
            self.st.ctx = self.st.ctx.logged_in_as(user);
            if self.st.own.take().is_some() && self.st.tx_sent {
                self.st.tx_broken.get_or_insert(TxBroken::ConnectionLost);
            }
        }
        let Some(hello) = login.hello else {
            return reply::ok();
        };
        let env = Env {
            cfg: &self.cfg,
            admin_log: &self.shared.admin_log,
            databases: self.shared.databases,
            topology: &topo,
            id: self.id,
            peer: self.io.peer(),
            local: self.io.local(),
        };
        match builtin::apply_hello(hello, &mut self.st, &env) {
            Action::Reply(r) => r,
            Action::ReplyAfterReplay { reply, .. } => reply,
            _ => unreachable!("HELLO replies"),
        }
    }

    /// `WAIT` and `WAITAOF` count the replicas that acknowledged the writes
    /// of the *connection* they run on. On a connection shared with other
    /// sessions that would be the wrong writes, and the wait would hold up
    /// every session behind it for its whole timeout. So they run on the
    /// session's own master connection, where its writes go from then on.
    ///
    /// When earlier writes went on a shared connection, the own connection
    /// must first be moved past them: once every one of them is answered
    /// (this runs at the head of the queue then), the session sends
    /// [`WAIT_MARK`] on it. Its replication offset is then beyond those
    /// writes, and the `WAIT` counts them.
    async fn wait(&mut self, req: Request) -> Slot {
        let topo = self.topology().clone();
        if topo.shards.is_some() {
            return Slot::Ready(reply::error(&format!(
                "ERR belay: {} is not supported in front of a Redis Cluster: a session's writes may be on several shards and it would count one shard's replicas; the gateway's --durable-writes confirms each write on its own shard",
                String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_uppercase()
            )));
        }
        if self.st.shared_writes {
            // The confirmed master, even while writes are held.
            let Some(pool) = topo.read_master.clone() else {
                return Slot::Ready(reply::error(&format!(
                    "ERR belay: {} cannot run now: no confirmed master (failover in progress?)",
                    String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_uppercase()
                )));
            };
            if !self.st.own.as_ref().is_some_and(|o| o.serves(&pool)) {
                self.st.own = None;
                if !self.open_own(&pool).await {
                    return Slot::Ready(reply::error(&format!(
                        "ERR belay: {} cannot run now: no connection to the master",
                        String::from_utf8_lossy(req.name().unwrap_or_default())
                            .to_ascii_uppercase()
                    )));
                }
            }
            self.send_batch();
            if let Some(own) = &self.st.own {
                own.conn.send_ignoring_reply(Bytes::from_static(WAIT_MARK));
            }
            self.st.shared_writes = false;
        }
        let job = Job::new(
            req,
            Routing::plain(Class::Wait),
            Conn::Pinned,
            self.st.ctx.clone(),
        );
        match self.route_job(job, &topo) {
            Handled::Later(Later::OwnConn { job, pool }) => self.send_on_own(job, pool).await,
            handled => match handled {
                Handled::Staged => self
                    .batch
                    .send(&self.io.budget)
                    .expect("a command was just staged"),
                Handled::Slot(slot) => slot,
                _ => unreachable!("WAIT routes to the master"),
            },
        }
    }

    /// The script cache is per node: `SCRIPT LOAD`/`FLUSH` go to every
    /// replica too, as this client's user, on the shared connections its
    /// reads use (connected first if need be, so that a script loaded
    /// through a gateway that has not read from a replica yet still reaches
    /// it), replies ignored: an `EVALSHA_RO` that finds no script on a
    /// replica is retried on the master. Then to the master, like any write.
    /// In a cluster, every shard's master and replicas get it; the reply
    /// is the first shard's master's.
    async fn send_to_every_node(&mut self, req: Request, routing: Routing) -> Slot {
        let topo = self.topology().clone();
        let slot = self.slot();
        let others = topo.groups().into_iter().filter_map(|g| {
            g.read_master
                .as_ref()
                .filter(|m| !topo.read_master.as_ref().is_some_and(|t| Arc::ptr_eq(t, m)))
        });
        let nodes: Vec<&Arc<NodePool>> = topo
            .groups()
            .into_iter()
            .flat_map(|g| g.replicas.iter().map(|r| &r.pool))
            .chain(others)
            .collect();
        for pool in nodes {
            if !pool.shared_is_up(&self.st.ctx, slot) {
                let _ = pool.connect_shared(&self.st.ctx, slot).await;
            }
            let _ = pool.try_send_shared(&self.st.ctx, slot, req.raw.clone(), 1, None, None);
        }
        let job = Job::new(req, routing, Conn::Shared, self.st.ctx.clone());
        self.stage_now(job, &topo)
    }

    /// `SCRIPT KILL`/`FUNCTION KILL`: a read-only script may run on any
    /// replica, so the command goes to every data node, as the client's
    /// user, on connections of its own (the node is busy: the connections
    /// it has are waiting for the script). Handled at once, not in turn:
    /// the script to kill is usually another client's, or this one's still
    /// running.
    async fn kill(&mut self, req: &Request) -> Bytes {
        let topo = self.topology().clone();
        let results = on_every_node(&topo, &self.st.ctx, req, false).await;
        kill_reply(&results)
    }

    /// `CONFIG SET`/`RESETSTAT`, `ACL SETUSER`/`DELUSER`: per node in Redis,
    /// so they go to the master, then (if it took it) to every replica, as
    /// the client's own user: only a user Redis lets run them can.
    async fn group_admin(&mut self, req: &Request) -> Bytes {
        let topo = self.topology().clone();
        let name = format!(
            "{} {}",
            String::from_utf8_lossy(req.name().unwrap_or_default()).to_ascii_uppercase(),
            String::from_utf8_lossy(req.arg(1).unwrap_or_default()).to_ascii_uppercase()
        );
        if topo.read_master.is_none() {
            return group_admin_reply(&name, &[]);
        }
        let results = on_every_node(&topo, &self.st.ctx, req, true).await;
        let took: Vec<String> = results
            .iter()
            .filter(|r| r.reply.as_ref().is_ok_and(|b| !b.starts_with(b"-")))
            .map(|r| r.node.clone())
            .collect();
        if !took.is_empty() {
            let args: Vec<&[u8]> = req.args().collect();
            self.shared
                .admin_log
                .record(crate::admin_log::describe(&args), took);
        }
        group_admin_reply(&name, &results)
    }
}

/// Sends `req` to every data node (the master first), each on a connection
/// of its own set up for `ctx`'s user and protocol. With `master_first`,
/// the replicas are asked only once the master took it.
async fn on_every_node(
    topo: &Topology,
    ctx: &Context,
    req: &Request,
    master_first: bool,
) -> Vec<Fanout> {
    // These commands act on the node, not on a database; and while a script
    // runs — when `SCRIPT KILL` is needed most — Redis refuses `SELECT`
    // (`BUSY`), so the connection is not put in the session's database.
    let ctx = &Context {
        db: 0,
        db_from_earlier_login: false,
        ..ctx.clone()
    };
    let args: Vec<&[u8]> = req.args().collect();
    let ask = |pool: Arc<NodePool>| {
        let args = args.clone();
        async move {
            let reply = match pool.control_connection(ctx).await {
                Ok(mut conn) => match conn.call(&args).await {
                    Ok(value) => {
                        let mut out = BytesMut::new();
                        value.encode(&mut out);
                        Ok(out.freeze())
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            Fanout {
                node: pool.addr.clone(),
                reply,
            }
        }
    };
    let nodes: Vec<Arc<NodePool>> = topo.data_nodes().cloned().collect();
    if !master_first || nodes.is_empty() {
        return join_all(nodes.into_iter().map(ask)).await;
    }
    let mut results = vec![ask(nodes[0].clone()).await];
    if results[0]
        .reply
        .as_ref()
        .is_ok_and(|r| !r.starts_with(b"-"))
    {
        results.extend(join_all(nodes[1..].iter().cloned().map(ask)).await);
    }
    results
}
