//! Load through the balancer that remembers what was acknowledged.
//!
//! Each writer owns one election with two candidates, `a` and `b`, and anoints them in turn,
//! acting as the one it anoints (so both keep their leases). Every acknowledged Anoint that
//! moved the leadership raised the term id; the writer keeps the highest acknowledged id, which
//! the final state must reach or pass if nothing acknowledged was lost, and the last
//! acknowledged id and leader, which a failover must keep exactly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Endpoint;
use tonic::Code;

use crate::harness::Client;

/// What one writer saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    /// Failed calls by status code.
    pub failed: BTreeMap<String, u64>,
    /// The highest term id an acknowledged call returned.
    pub acked_id: u64,
    /// The term id and leader of the last acknowledged answer.
    pub last: Option<(u64, String)>,
    /// The slowest acknowledged call.
    pub slowest: Duration,
    /// The first few failures' messages, for the reader of a failed run.
    pub samples: Vec<String>,
    /// When calls failed: from the first failure to the next success after it (the longest
    /// such gap).
    pub longest_gap: Duration,
}

impl Tally {
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn merge(tallies: &[Tally]) -> Tally {
        let mut all = Tally::default();
        for t in tallies {
            all.ok += t.ok;
            for (code, n) in &t.failed {
                *all.failed.entry(code.clone()).or_default() += n;
            }
            all.slowest = all.slowest.max(t.slowest);
            all.samples.extend(t.samples.iter().take(3).cloned());
            all.longest_gap = all.longest_gap.max(t.longest_gap);
        }
        all
    }
}

/// A client through the balancer whose calls never wait longer than `timeout`.
pub async fn client(addr: SocketAddr, election: &str, id: &str, timeout: Duration) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_lazy();
    Client::on(channel, election, id)
}

/// Writers running until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    pub elections: Vec<String>,
}

impl Writers {
    /// `n` writers on elections `<prefix>-0..n`, through `addr`, each call bounded by `timeout`.
    pub async fn start(addr: SocketAddr, prefix: &str, n: usize, timeout: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut elections = Vec::new();
        for i in 0..n {
            let election = format!("{prefix}-{i}");
            let a = client(addr, &election, "a", timeout).await;
            elections.push(election);
            let stop = stop.clone();
            tasks.push(tokio::spawn(write(a, stop)));
        }
        Writers {
            stop,
            tasks,
            elections,
        }
    }

    /// Stops the writers and returns what each saw, in election order.
    pub async fn stop(self) -> Vec<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.expect("writer task"));
        }
        out
    }
}

async fn write(a: Client, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut b = a.acting_as(&a.election, "b");
    let mut a = a;
    let mut failing_since: Option<Instant> = None;
    let mut turn = 0u64;
    let mut entered = false;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = if !entered {
            // (re-)enter both: after a lease ran out during an outage, or at the start
            match a.enter().await {
                Ok(_) => b.enter().await,
                Err(e) => Err(e),
            }
        } else if turn.is_multiple_of(2) {
            a.anoint("a").await
        } else {
            b.anoint("b").await
        };
        let took = started.elapsed();
        match result {
            Ok(term) => {
                tally.ok += 1;
                tally.acked_id = tally.acked_id.max(term.id);
                tally.last = Some((term.id, term.leader.clone()));
                tally.slowest = tally.slowest.max(took);
                if let Some(since) = failing_since.take() {
                    tally.longest_gap = tally.longest_gap.max(since.elapsed());
                }
                if entered {
                    turn += 1;
                }
                entered = true;
            }
            Err(status) => {
                *tally
                    .failed
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                if tally.samples.len() < 3 {
                    tally
                        .samples
                        .push(format!("{:?}: {}", status.code(), status.message()));
                }
                failing_since.get_or_insert(started);
                if status.code() == Code::InvalidArgument {
                    entered = false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tally
}
