//! How calls reach Redis: shared connections, and reads that run no function.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use electiond::store::Op;

use crate::harness::*;

/// Redis's clock, in ms.
async fn redis_now_ms(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_without_a_client_id_ends_a_lease_exactly_when_it_runs_out() {
    // GetTerm without a client id reads the term without a function while nothing is due;
    // it must still show the leader until the Redis clock passes its lease, and never after
    const TTL: u64 = 600;
    let redis = RedisServer::start().await;
    let store = bare_store(&redis, &prefix("plain-read"), TTL, 4);
    let mut conn = redis.connection().await;
    let name = election("plain");
    let first = member("first");
    let second = member("second");
    store
        .apply(&name, Some(&first), Op::Enter)
        .await
        .expect("enter");
    // the second enters later, so its lease ends after the first's
    tokio::time::sleep(Duration::from_millis(TTL / 3)).await;
    let entered = store
        .apply(&name, Some(&second), Op::Enter)
        .await
        .expect("enter");
    assert_eq!(entered.candidates, ["first", "second"]);
    let leases = store.keys().election(&name).leases;
    let mut lease_end = async |id: &str| -> u64 {
        let end: f64 = redis::cmd("ZSCORE")
            .arg(&leases)
            .arg(id)
            .query_async(&mut conn)
            .await
            .expect("a lease");
        end as u64
    };
    let ends = lease_end("first").await;
    let seconds_end = lease_end("second").await;

    let (mut before, mut after) = (0, 0);
    let mut ended = None;
    loop {
        let t0 = redis_now_ms(&mut conn).await;
        if t0 + 20 > seconds_end {
            break;
        }
        let term = store.apply(&name, None, Op::GetTerm).await.expect("read");
        let t1 = redis_now_ms(&mut conn).await;
        if t1 < ends {
            // read wholly before the lease ran out: the first still leads, under its term
            assert_eq!(
                term.leader(),
                "first",
                "ended early: read at {t0}..{t1}, lease to {ends}"
            );
            assert_eq!(term.id, entered.id);
            before += 1;
        } else if t0 > ends {
            // read wholly after: the first is gone, and the second leads under a new term id
            assert_eq!(
                term.candidates,
                ["second"],
                "read at {t0}..{t1}, lease to {ends}"
            );
            assert_eq!(term.id, entered.id + 1);
            // every read after the change shows that same change, not another
            assert_eq!(*ended.get_or_insert(term.revision), term.revision);
            after += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(
        before > 10 && after > 10,
        "reads on both sides of the lease's end: {before} before, {after} after"
    );
    // the change was recorded once, by the read that found the lease run out
    let history: Vec<String> = redis::cmd("LRANGE")
        .arg(store.keys().election(&name).history)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains("expired second"), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_without_a_client_id_ends_a_session_that_ran_out_first() {
    // a candidacy held by a session, beside a candidate whose lease is later: the election's
    // own lease is not due when the session ends, but the read must still end the session
    // before it answers
    const TTL: u64 = 500;
    let redis = RedisServer::start().await;
    let store = bare_store(&redis, &prefix("plain-read-session"), TTL, 4);
    let mut conn = redis.connection().await;
    let worker = member("worker");
    let other = member("other");
    let name = election("held");
    store
        .apply(&name, Some(&worker), Op::Enter)
        .await
        .expect("enter");
    assert_eq!(store.keep_alive(&worker).await.expect("KeepAlive"), 1);
    tokio::time::sleep(Duration::from_millis(TTL / 2)).await;
    let both = store
        .apply(&name, Some(&other), Op::Enter)
        .await
        .expect("enter");
    assert_eq!(both.candidates, ["worker", "other"]);
    let keys = store.keys().election(&name);
    let score = async |conn: &mut redis::aio::MultiplexedConnection, key: &str, id: &str| {
        let s: f64 = redis::cmd("ZSCORE")
            .arg(key)
            .arg(id)
            .query_async(conn)
            .await
            .expect("a score");
        s as u64
    };
    let session_ends = score(&mut conn, &keys.sessions, "worker").await;
    let others_lease = score(&mut conn, &keys.leases, "other").await;
    assert!(
        session_ends + 50 < others_lease,
        "{session_ends} {others_lease}"
    );
    while redis_now_ms(&mut conn).await <= session_ends + 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let read = store.apply(&name, None, Op::GetTerm).await.expect("read");
    assert!(
        redis_now_ms(&mut conn).await < others_lease,
        "the read came too late to tell"
    );
    assert_eq!(
        read.candidates,
        ["other"],
        "a read showed the candidacy of a session that had ended"
    );
    assert_eq!(read.id, both.id + 1, "the leadership passed on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_shared_connection_fails_only_the_calls_on_it_and_is_replaced() {
    // every call shares the pool's connections; killing all of them under load may fail the
    // calls in flight, but no more than those, and the calls after go through at once
    const TASKS: u64 = 48;
    const POOL: usize = 4;
    let redis = RedisServer::start().await;
    let store = Arc::new(bare_store(&redis, &prefix("shared-kill"), 10_000, POOL));
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
            let name = election(&format!("shared-{k}"));
            let me = member(&format!("c{k}"));
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
