//! How calls reach Redis: shared connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use electiond::election::{ElectionName, Limits, MemberId};
use electiond::store::{Op, Source, Store, StoreConfig};

use crate::harness::*;

const LIMITS: Limits = Limits {
    max_name_bytes: 100,
    max_id_bytes: 100,
    max_candidates: 1000,
    max_term_bytes: 1 << 20,
};

/// The service's store on `redis` with no replica around it, so no sweeper: what expires,
/// a call expired.
fn store(redis: &RedisServer, prefix: &str, ttl_ms: u64, pool_size: usize) -> Store {
    Store::new(&StoreConfig {
        source: Source::Url(redis.url()),
        ca_cert: None,
        key_prefix: prefix.to_owned(),
        pool_size,
        timeout: Duration::from_secs(2),
        lease_ttl_ms: ttl_ms,
        max_candidates: 1000,
        max_term_bytes: 1 << 20,
        wait_replicas: 0,
        history_len: 100,
        metrics: Default::default(),
    })
    .expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_shared_connection_fails_only_the_calls_on_it_and_is_replaced() {
    // every call shares the pool's connections; killing all of them under load may fail the
    // calls in flight, but no more than those, and the calls after go through at once
    const TASKS: u64 = 48;
    const POOL: usize = 4;
    let redis = RedisServer::start().await;
    let store = Arc::new(store(&redis, &prefix("shared-kill"), 10_000, POOL));
    let mut admin = redis.connection().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let last_failure = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for k in 0..TASKS {
        let (store, stop, failed, last_failure) = (
            store.clone(),
            stop.clone(),
            failed.clone(),
            last_failure.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let name = ElectionName::parse(&format!("shared-{k}"), &LIMITS).expect("name");
            let me = MemberId::parse(&format!("c{k}"), "client id", &LIMITS).expect("id");
            let (mut ok, mut i) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let op = match i % 3 {
                    0 => Op::Enter,
                    1 => Op::GetTerm,
                    _ => Op::Withdraw,
                };
                let caller = (i % 3 != 1).then_some(&me);
                match store.apply(&name, caller, op).await {
                    Ok(_) => ok.push(Instant::now()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        *last_failure.lock().expect("lock") = Some(Instant::now());
                    }
                }
                i += 1;
            }
            ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .expect("CLIENT LIST");
    let killed_at = Instant::now();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the store's connections were killed");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut after_kill = 0;
    for t in tasks {
        let ok = t.await.expect("task");
        let n = ok.iter().filter(|at| **at > killed_at).count();
        assert!(n > 0, "a task made no call after the kill");
        after_kill += n;
    }
    let failed = failed.load(Ordering::Relaxed);
    // at most one failure per call in flight, and one per dead connection found by a new call
    assert!(
        failed <= TASKS + POOL as u64,
        "{failed} calls failed for {killed} killed connections"
    );
    if let Some(last) = *last_failure.lock().expect("lock") {
        assert!(
            last.duration_since(killed_at) < Duration::from_secs(1),
            "calls still failed {:?} after the kill",
            last.duration_since(killed_at)
        );
    }
    let now: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .expect("CLIENT LIST");
    // the replacements are new connections (new ids), no more than the pool's size
    let ids = |list: &str| -> Vec<String> {
        list.lines()
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .collect()
    };
    let (old, new) = (ids(&before), ids(&now));
    let replaced = new.iter().filter(|id| !old.contains(id)).count();
    assert!(
        replaced >= 1 && new.len() <= POOL + 1,
        "connections before {old:?}, after {new:?}"
    );
    eprintln!("{killed} connections killed; {failed} calls failed; {after_kill} calls after");
}
