//! A workload for failover tests: writers setting unique keys, readers
//! reading, every outcome recorded with its time.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belay_client::{Auth, Connection, Value};

/// What one operation ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub start: Instant,
    pub end: Instant,
    /// `Ok` for a success; the error text otherwise.
    pub result: Result<(), String>,
}

/// Everything a workload saw.
#[derive(Debug, Default)]
pub struct Record {
    /// Keys whose SET was acknowledged with +OK, with their value.
    pub acked: Vec<(String, String, Instant)>,
    pub writes: Vec<Outcome>,
    pub reads: Vec<Outcome>,
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Record>>,
}

impl Workload {
    pub fn start(gateway: &str, auth: &Auth, writers: usize, readers: usize) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (gw, auth, stop) = (gateway.to_string(), auth.clone(), stop.clone());
            tasks.push(tokio::spawn(
                async move { writer(w, &gw, &auth, &stop).await },
            ));
        }
        for _ in 0..readers {
            let (gw, auth, stop) = (gateway.to_string(), auth.clone(), stop.clone());
            tasks.push(tokio::spawn(async move { reader(&gw, &auth, &stop).await }));
        }
        Workload { stop, tasks }
    }

    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Record::default();
        for t in self.tasks {
            let r = t.await.expect("workload task");
            all.acked.extend(r.acked);
            all.writes.extend(r.writes);
            all.reads.extend(r.reads);
        }
        all
    }
}

async fn connect(gw: &str, auth: &Auth) -> Option<Connection> {
    let mut c = Connection::connect(gw, Some(auth), Duration::from_secs(5))
        .await
        .ok()?;
    // Longer than any failover hold, so the gateway's verdict is what we see.
    c.set_timeout(Duration::from_secs(30));
    Some(c)
}

async fn writer(id: usize, gw: &str, auth: &Auth, stop: &AtomicBool) -> Record {
    let mut rec = Record::default();
    let mut conn = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = connect(gw, auth).await;
        }
        let Some(c) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        seq += 1;
        let key = format!("w{id}:{seq}");
        let start = Instant::now();
        let result = match c.call(&["SET", &key, &seq.to_string()]).await {
            Ok(Value::Simple(s)) if s == "OK" => {
                rec.acked.push((key, seq.to_string(), Instant::now()));
                Ok(())
            }
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => {
                conn = None;
                Err(e.to_string())
            }
        };
        rec.writes.push(Outcome {
            start,
            end: Instant::now(),
            result,
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec
}

async fn reader(gw: &str, auth: &Auth, stop: &AtomicBool) -> Record {
    let mut rec = Record::default();
    let mut conn = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = connect(gw, auth).await;
        }
        let Some(c) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let start = Instant::now();
        let result = match c.call(&["GET", "w0:1"]).await {
            Ok(Value::Error(e)) => Err(e),
            Ok(_) => Ok(()),
            Err(e) => {
                conn = None;
                Err(e.to_string())
            }
        };
        rec.reads.push(Outcome {
            start,
            end: Instant::now(),
            result,
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec
}

impl Record {
    pub fn errors(ops: &[Outcome]) -> Vec<&str> {
        ops.iter()
            .filter_map(|o| o.result.as_ref().err().map(|s| s.as_str()))
            .collect()
    }

    /// Successful operations that started after `from` and ended before `to`.
    pub fn successes_between(ops: &[Outcome], from: Instant, to: Instant) -> usize {
        ops.iter()
            .filter(|o| o.result.is_ok() && o.start >= from && o.end <= to)
            .count()
    }
}
