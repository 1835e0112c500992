//! Where a command goes: a replica (which one: the lag bound and the
//! read-your-writes fence decide), the master on a connection shared by its
//! context, the master on the session's own connection — or nowhere yet.
//! A decision, as a value; the client loop acts on it.

use std::sync::Arc;

use crate::backend::NodePool;
use crate::cluster::ShardMap;
use crate::config::ReadFrom;
use crate::router::{pick_replica, Prefer};
use crate::topology::Topology;

use super::job::{Conn, Job, Waiting};
use super::state::{Lane, SessionState};

/// Where a job goes now.
#[derive(Debug)]
pub enum Route<'t> {
    /// A shared connection of the job's context on this replica.
    Replica(&'t Arc<NodePool>),
    /// The master, on this lane.
    Master { pool: &'t Arc<NodePool>, lane: Lane },
    /// Nowhere yet: it waits at the head of the queue for the topology to
    /// change or the session's other commands to be answered.
    Wait(Waiting),
}

/// What besides the job and the topology decides.
pub struct Choice<'a> {
    pub st: &'a SessionState,
    pub read_from: ReadFrom,
    pub read_your_writes: bool,
    /// The replica the reads of the current input went to.
    pub batch_replica: Option<&'a Arc<NodePool>>,
    /// The worker's turn counter (see [`pick_replica`]).
    pub turn: usize,
    /// In front of a Redis Cluster: the session's own connection is to one
    /// shard, so only that shard's commands go there.
    pub cluster: bool,
    /// In front of a Redis Cluster, every shard: commands in flight on
    /// another shard's master do not hold this shard's back.
    pub shards: Option<&'a ShardMap>,
}

impl Choice<'_> {
    /// A read a replica should serve, if one can.
    fn wants_replica(&self, job: &Job) -> bool {
        self.replica_may_serve(job) && (self.st.unacked_writes == 0 || !self.read_your_writes)
    }

    /// A read a replica may serve: not one that must see the master, nor
    /// one of a slot being moved to another shard (the replica would not
    /// know of the move, and answer for keys moved already as if they did
    /// not exist).
    fn replica_may_serve(&self, job: &Job) -> bool {
        job.class().is_read()
            && !job.force_master()
            && job.conn == Conn::Shared
            && self.read_from != ReadFrom::Master
            && match (self.shards, job.slot) {
                (Some(map), Some(slot)) => map.replicas_may_serve(slot),
                _ => true,
            }
    }

    /// A read sent to the master only for read-your-writes: a replica
    /// would have served it, but the session's own last write is not
    /// known to be there yet (asked once a read went to the master).
    pub fn is_ryw_fallback(&self, job: &Job, topo: &Topology) -> bool {
        self.read_your_writes
            && self.replica_may_serve(job)
            && (self.st.unacked_writes > 0
                || (self.st.fence.is_some()
                    && pick_replica(topo, None, Prefer::Any, self.turn).is_some()))
    }

    /// Where `job` goes in `topo`.
    pub fn route<'t>(&self, job: &Job, topo: &'t Topology) -> Route<'t> {
        let wants_replica = self.wants_replica(job);
        if wants_replica {
            let fence = self.st.fence.filter(|_| self.read_your_writes);
            let prefer = match job.class() {
                crate::commands::Class::CursorRead => self
                    .st
                    .scan_replica_in(topo)
                    .map_or(Prefer::Any, Prefer::Addr),
                _ => self.batch_replica.map_or(Prefer::Any, Prefer::Pool),
            };
            if let Some(r) = pick_replica(topo, fence, prefer, self.turn) {
                return Route::Replica(&r.pool);
            }
            if self.read_from == ReadFrom::Replica {
                return Route::Wait(Waiting::NoReplica);
            }
        }
        // Reads (and WAIT, and what writes no data) may use the confirmed
        // master while writes are held.
        let reads = (job.class().is_read()
            || matches!(
                job.class(),
                crate::commands::Class::Wait | crate::commands::Class::Admin
            ))
            && !job.in_transaction();
        let master = if reads {
            topo.read_master.as_ref()
        } else {
            topo.master.as_ref()
        };
        let Some(pool) = master.filter(|p| p.is_usable()) else {
            return Route::Wait(Waiting::NoMaster);
        };
        if job
            .retry
            .as_ref()
            .is_some_and(|r| r.refusal.is_some() && r.after_check >= topo.master_checks)
        {
            return Route::Wait(Waiting::Refused);
        }
        // Once a session has a connection of its own, its master commands
        // go there: one connection, so Redis keeps their order.
        let own_here = match &self.st.own {
            Some(own) if self.cluster => own.serves(pool),
            own => own.is_some(),
        };
        let lane = if job.conn != Conn::Shared || own_here {
            Lane::Own
        } else {
            Lane::Shared(job.ctx.clone())
        };
        let elsewhere = |p: &Arc<NodePool>| {
            self.shards.is_some_and(|map| {
                map.shards.iter().any(|g| {
                    g.read_master.as_ref().is_some_and(|m| Arc::ptr_eq(m, p))
                        && !topo.read_master.as_ref().is_some_and(|m| Arc::ptr_eq(m, p))
                })
            })
        };
        if !self
            .st
            .may_send_on(pool, &lane, elsewhere, self.shards.map(ShardMap::layout))
        {
            return Route::Wait(Waiting::OtherConnection);
        }
        Route::Master { pool, lane }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NodePool;
    use crate::commands::{Class, CommandTable, Routing};
    use crate::context::Context;
    use crate::topology::{ReplicaNode, WriteHold};
    use belay_resp::Request;

    fn pool(port: u16) -> Arc<NodePool> {
        NodePool::for_test(port, 2)
    }

    fn topology() -> Topology {
        let mut topo = Topology::empty(Arc::new(CommandTable::default()));
        let master = pool(7000);
        topo.master = Some(master.clone());
        topo.read_master = Some(master);
        topo.write_hold = None;
        topo.master_checks = 5;
        topo.replicas = vec![ReplicaNode {
            pool: pool(7001),
            offset: 0,
            replid: None,
            lag: None,
            eligible: true,
            locality: Default::default(),
        }];
        topo
    }

    fn job(class: Class, conn: Conn) -> Job {
        Job::new(
            Request::from_args(["X"]),
            Routing::plain(class),
            conn,
            Context::default(),
        )
    }

    fn choice(st: &SessionState) -> Choice<'_> {
        Choice {
            st,
            read_from: ReadFrom::ReplicaPreferred,
            read_your_writes: true,
            batch_replica: None,
            turn: 0,
            cluster: false,
            shards: None,
        }
    }

    fn addr(route: &Route) -> String {
        match route {
            Route::Replica(p) | Route::Master { pool: p, .. } => p.addr.clone(),
            Route::Wait(w) => format!("{w:?}"),
        }
    }

    #[test]
    fn reads_to_replicas_writes_to_the_master() {
        let topo = topology();
        let st = SessionState::new(true);
        let c = choice(&st);
        assert_eq!(
            addr(&c.route(&job(Class::Read, Conn::Shared), &topo)),
            "127.0.0.1:7001"
        );
        let w = c.route(&job(Class::Write, Conn::Shared), &topo);
        assert!(
            matches!(
                w,
                Route::Master {
                    lane: Lane::Shared(_),
                    ..
                }
            ),
            "{w:?}"
        );
        let b = c.route(&job(Class::Blocking, Conn::Pinned), &topo);
        assert!(
            matches!(
                b,
                Route::Master {
                    lane: Lane::Own,
                    ..
                }
            ),
            "{b:?}"
        );
        // A read inside a transaction stays in it.
        let t = c.route(&job(Class::Read, Conn::Transaction), &topo);
        assert!(
            matches!(
                t,
                Route::Master {
                    lane: Lane::Own,
                    ..
                }
            ),
            "{t:?}"
        );
    }

    /// A cursor is good only on the node that gave it: each group's (each
    /// shard's) cursor reads stay on the replica they started on, however
    /// they interleave.
    #[test]
    fn cursor_reads_stay_on_their_groups_replica() {
        let group = |first: u16| {
            let mut topo = topology();
            topo.replicas = (first..first + 2)
                .map(|port| ReplicaNode {
                    pool: pool(port),
                    offset: 0,
                    replid: None,
                    lag: None,
                    eligible: true,
                    locality: Default::default(),
                })
                .collect();
            topo
        };
        let (a, b) = (group(7001), group(7011));
        let mut st = SessionState::new(true);
        st.remember_scan_replica(&a, "127.0.0.1:7002");
        st.remember_scan_replica(&b, "127.0.0.1:7011");
        let scan = job(Class::CursorRead, Conn::Shared);
        for turn in 0..4 {
            let mut c = choice(&st);
            c.turn = turn;
            assert_eq!(addr(&c.route(&scan, &a)), "127.0.0.1:7002");
            assert_eq!(addr(&c.route(&scan, &b)), "127.0.0.1:7011");
        }
        // A new cursor of a group replaces only that group's.
        st.remember_scan_replica(&a, "127.0.0.1:7001");
        assert_eq!(st.scan_replica_in(&a), Some("127.0.0.1:7001"));
        assert_eq!(st.scan_replica_in(&b), Some("127.0.0.1:7011"));
    }

    #[test]
    fn a_read_behind_unanswered_writes_goes_where_they_went() {
        let topo = topology();
        let mut st = SessionState::new(true);
        st.unacked_writes = 1;
        let r = choice(&st).route(&job(Class::Read, Conn::Shared), &topo);
        assert_eq!(addr(&r), "127.0.0.1:7000");
    }

    #[test]
    fn commands_for_another_connection_wait_for_the_first_to_be_answered() {
        let topo = topology();
        let master = topo.master.clone().unwrap();
        let mut st = SessionState::new(true);
        st.sent_on(&master, Lane::Shared(Context::default()), 0, 1, None);
        let c = choice(&st);
        // More for the same shared connection: fine.
        assert!(matches!(
            c.route(&job(Class::Write, Conn::Shared), &topo),
            Route::Master { .. }
        ));
        // MULTI (own connection) behind a SET still in flight: waits.
        assert!(matches!(
            c.route(&job(Class::Write, Conn::Transaction), &topo),
            Route::Wait(Waiting::OtherConnection)
        ));
        // Another database is another shared connection.
        let mut other_db = job(Class::Write, Conn::Shared);
        other_db.ctx.db = 1;
        assert!(matches!(
            c.route(&other_db, &topo),
            Route::Wait(Waiting::OtherConnection)
        ));
        st.answered(&master, &Lane::Shared(Context::default()), 1);
        assert!(matches!(
            choice(&st).route(&other_db, &topo),
            Route::Master { .. }
        ));
        // Commands in flight on a node that was closed (demoted, down)
        // order nothing: the next command goes to the new master.
        st.sent_on(&master, Lane::Shared(Context::default()), 0, 1, None);
        let mut failed_over = topology();
        let new_master = pool(7002);
        failed_over.master = Some(new_master.clone());
        failed_over.read_master = Some(new_master);
        assert!(matches!(
            choice(&st).route(&job(Class::Write, Conn::Shared), &failed_over),
            Route::Wait(Waiting::OtherConnection)
        ));
        master.close();
        assert!(matches!(
            choice(&st).route(&job(Class::Write, Conn::Shared), &failed_over),
            Route::Master { .. }
        ));
    }

    #[test]
    fn held_writes_wait_and_reads_and_admin_commands_use_the_confirmed_master() {
        let mut topo = topology();
        topo.master = None;
        topo.write_hold = Some(WriteHold::FailoverInProgress);
        topo.replicas[0].eligible = false;
        let st = SessionState::new(true);
        let c = choice(&st);
        assert!(matches!(
            c.route(&job(Class::Write, Conn::Shared), &topo),
            Route::Wait(Waiting::NoMaster)
        ));
        assert_eq!(
            addr(&c.route(&job(Class::Read, Conn::Shared), &topo)),
            "127.0.0.1:7000"
        );
        assert_eq!(
            addr(&c.route(&job(Class::Wait, Conn::Pinned), &topo)),
            "127.0.0.1:7000"
        );
        // What writes no data (INFO, FUNCTION STATS) does not wait either,
        // but inside a transaction it waits with the transaction.
        assert_eq!(
            addr(&c.route(&job(Class::Admin, Conn::Shared), &topo)),
            "127.0.0.1:7000"
        );
        assert!(matches!(
            c.route(&job(Class::Admin, Conn::Transaction), &topo),
            Route::Wait(Waiting::NoMaster)
        ));
        // A silent master takes nothing new.
        topo.read_master.as_ref().unwrap().health().set_silent(true);
        assert!(matches!(
            c.route(&job(Class::Read, Conn::Shared), &topo),
            Route::Wait(Waiting::NoMaster)
        ));
    }

    #[test]
    fn in_a_cluster_another_shards_commands_in_flight_hold_nothing_back() {
        let a = topology();
        let mut b = topology();
        let b_master = pool(7010);
        b.master = Some(b_master.clone());
        b.read_master = Some(b_master);
        let (a, b) = (Arc::new(a), Arc::new(b));
        let map = ShardMap::new(
            vec![a.clone(), b.clone()],
            &[vec![(0, 8191)], vec![(8192, 16383)]],
        );
        let a_master = a.master.clone().unwrap();
        let mut st = SessionState::new(true);
        st.sent_on(
            &a_master,
            Lane::Shared(Context::default()),
            0,
            1,
            Some(map.layout()),
        );
        let mut c = choice(&st);
        // Without the map (a Sentinel group): the SET on A orders the next.
        assert!(matches!(
            c.route(&job(Class::Write, Conn::Shared), &b),
            Route::Wait(Waiting::OtherConnection)
        ));
        c.shards = Some(&map);
        c.cluster = true;
        assert!(matches!(
            c.route(&job(Class::Write, Conn::Shared), &b),
            Route::Master { .. }
        ));
        // Once a slot has moved (another layout), what is in flight on A
        // may be refused and sent again to B: it holds B's next back.
        let moved = ShardMap::new(
            vec![a.clone(), b.clone()],
            &[vec![(0, 8190)], vec![(8191, 16383)]],
        );
        assert_ne!(moved.layout(), map.layout());
        c.shards = Some(&moved);
        assert!(matches!(
            c.route(&job(Class::Write, Conn::Shared), &b),
            Route::Wait(Waiting::OtherConnection)
        ));
        // The session's own connection on A still holds it back.
        let mut st = SessionState::new(true);
        st.sent_on(&a_master, Lane::Own, 0, 1, Some(map.layout()));
        let mut c = choice(&st);
        c.shards = Some(&map);
        assert!(matches!(
            c.route(&job(Class::Write, Conn::Shared), &b),
            Route::Wait(Waiting::OtherConnection)
        ));
    }

    #[test]
    fn a_refused_write_waits_for_discovery_to_look_again() {
        let mut topo = topology();
        let st = SessionState::new(true);
        let mut refused = job(Class::Write, Conn::Shared);
        let r = refused.retry_mut();
        r.refusal = Some(bytes::Bytes::from_static(b"-READONLY x\r\n"));
        r.after_check = 5;
        assert!(matches!(
            choice(&st).route(&refused, &topo),
            Route::Wait(Waiting::Refused)
        ));
        topo.master_checks = 6;
        assert!(matches!(
            choice(&st).route(&refused, &topo),
            Route::Master { .. }
        ));
    }
}
