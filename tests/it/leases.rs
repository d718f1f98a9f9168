//! Leases: silent candidates are removed within TTL + 1 s by the sweepers, kept alive only by
//! their own calls (an open Events stream does not count), and the term id stays a clean
//! fencing token throughout.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Calls GetTerm as `c` every 100 ms until aborted: a live client that never re-enters.
fn keep_alive(c: &Client) -> tokio::task::JoinHandle<()> {
    let mut c = c.clone();
    tokio::spawn(async move {
        loop {
            let _ = c.get_term().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test]
async fn a_leader_that_goes_silent_is_replaced_within_ttl_plus_one_second() {
    const TTL: u64 = 800;
    let redis = RedisServer::start().await;
    let p = prefix("lease-silent");
    let a = Replica::start(with_ttl(&redis, &p, TTL)).await;
    let b = Replica::start(with_ttl(&redis, &p, TTL)).await;
    let mut w = b.client("job", "").await.watch().await.unwrap();
    let mut c1 = a.client("job", "c1").await;
    let mut c2 = b.client("job", "c2").await;
    c1.enter().await.unwrap();
    let silent_since = Instant::now();
    c2.enter().await.unwrap();
    let alive = keep_alive(&c2);

    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(w.next().await);
    }
    let after = silent_since.elapsed();
    alive.abort();
    assert_eq!(
        brief(&seen),
        vec![
            state(1, &["c1"]),
            state(1, &["c1", "c2"]),
            state(2, &["c2"])
        ],
        "the silent leader was removed like a withdrawal: new leader, id + 1, an event"
    );
    // the contract's deadline, not a speed claim
    assert!(
        after >= Duration::from_millis(TTL - 200),
        "removed before its lease ran out: {after:?}"
    );
    assert!(
        after <= Duration::from_millis(TTL + 1000),
        "removed {after:?} after going silent, beyond TTL + 1 s"
    );
}

#[tokio::test]
async fn calls_every_third_of_the_ttl_keep_a_candidate_and_an_open_stream_does_not() {
    // generous, so a loaded machine delaying a call cannot drop a live candidate
    const TTL: u64 = 1500;
    let redis = RedisServer::start().await;
    let p = prefix("lease-alive");
    let replica = Replica::start(with_ttl(&redis, &p, TTL)).await;
    let mut streamer = replica.client("keep", "streamer").await;
    let mut caller = replica.client("keep", "caller").await;
    let mut silent = replica.client("keep", "silent").await;
    streamer.enter().await.unwrap();
    caller.enter().await.unwrap();
    silent.enter().await.unwrap();
    // the streamer never calls again, but keeps an Events stream open as itself
    let stream = streamer.watch().await.unwrap();
    // the caller only calls GetTerm with its id, every third of the TTL
    let alive = tokio::spawn({
        let mut c = caller.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(TTL / 3)).await;
                let _ = c.get_term().await;
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(3 * TTL)).await;
    let mut observer = replica.client("keep", "").await;
    assert_eq!(
        observer.get_term().await.unwrap().brief(),
        (2, "caller", vec!["caller"]),
        "the caller outlived three TTLs; the streamer and the silent one did not"
    );
    alive.abort();
    drop(stream);
}

#[tokio::test]
async fn many_candidates_expiring_together_are_all_removed_with_one_event_per_change() {
    // long enough that every candidate has entered before the first lease runs out
    const TTL: u64 = 1500;
    const ELECTIONS: usize = 6;
    const CANDIDATES: usize = 20;
    let redis = RedisServer::start().await;
    let p = prefix("lease-mass");
    let mut rs = Vec::new();
    for _ in 0..3 {
        rs.push(Replica::start(with_ttl(&redis, &p, TTL)).await);
    }
    let mut watches = Vec::new();
    for e in 0..ELECTIONS {
        let name = format!("e{e}");
        let pair = [
            rs[0].client(&name, "").await.watch().await.unwrap(),
            rs[1].client(&name, "").await.watch().await.unwrap(),
        ];
        watches.push(pair);
    }
    for e in 0..ELECTIONS {
        for c in 0..CANDIDATES {
            let mut cl = rs[(e + c) % 3]
                .client(&format!("e{e}"), &format!("c{c}"))
                .await;
            cl.enter().await.unwrap();
        }
    }
    // everyone is silent now and nobody calls: only the sweepers can empty the elections
    for [mut a, mut b] in watches {
        let seen_a = a.until_matching(|t| t.candidates.is_empty()).await;
        let mut seen_b = Vec::new();
        for _ in 0..seen_a.len() {
            seen_b.push(b.next().await);
        }
        assert_eq!(seen_a, seen_b, "two replicas' streams saw the same changes");
        assert!(
            seen_a.len() > CANDIDATES,
            "entries, then at least one expiry"
        );
        for pair in seen_a.windows(2) {
            assert_ne!(pair[0], pair[1], "no state delivered twice");
            assert!(pair[0].id <= pair[1].id, "ids never go down");
        }
        for w in [&mut a, &mut b] {
            assert!(w.try_next(Duration::from_millis(100)).await.is_none());
        }
    }
    let observer = rs[2].client("e0", "").await;
    for e in 0..ELECTIONS {
        let t = observer
            .acting_as(&format!("e{e}"), "")
            .get_term()
            .await
            .unwrap();
        assert!(t.candidates.is_empty() && t.id >= 1, "{t:?}");
    }
    // and the sweepers' index is empty again: nothing left to poll
    let mut conn = redis.connection().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*lease*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "leftover lease keys: {left:?}");
}

#[tokio::test]
async fn sweeping_on_three_replicas_at_once_never_skips_or_repeats_an_id() {
    const TTL: u64 = 700;
    const CANDIDATES: usize = 8;
    let redis = RedisServer::start().await;
    let p = prefix("lease-fence");
    let mut rs = Vec::new();
    for _ in 0..3 {
        rs.push(Replica::start(with_ttl(&redis, &p, TTL)).await);
    }
    let mut w = rs[0].client("fence", "").await.watch().await.unwrap();
    // staggered entries: the leases run out one after another, each making a new leader
    for c in 0..CANDIDATES {
        rs[c % 3]
            .client("fence", &format!("c{c}"))
            .await
            .enter()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let seen = w.until_matching(|t| t.candidates.is_empty()).await;
    // entries and expiries interleave; across the whole history every candidate joins once
    // and leaves once, and the id rises by exactly one at each change of leader
    let mut joined = HashSet::new();
    let mut removed = HashSet::new();
    let empty = T {
        id: 0,
        leader: String::new(),
        candidates: vec![],
        has_timestamp: false,
        timestamp: None,
    };
    let mut prev = &empty;
    for t in &seen {
        for c in &t.candidates {
            if !prev.candidates.contains(c) {
                assert!(joined.insert(c.clone()), "{c} joined twice");
            }
        }
        for c in &prev.candidates {
            if !t.candidates.contains(c) {
                assert!(removed.insert(c.clone()), "{c} removed twice");
            }
        }
        let expected_id = if !t.leader.is_empty() && t.leader != prev.leader {
            prev.id + 1
        } else {
            prev.id
        };
        assert_eq!(t.id, expected_id, "{prev:?} -> {t:?}");
        prev = t;
    }
    assert_eq!(removed.len(), CANDIDATES);
    assert!(
        w.try_next(Duration::from_millis(300)).await.is_none(),
        "no extra events"
    );
}

#[tokio::test]
async fn the_lease_index_is_cleaned_up_after_a_spell_with_expiry_off() {
    const TTL: u64 = 600;
    let redis = RedisServer::start().await;
    let p = prefix("lease-index");
    let keys = election_keys(&p, "job");
    let conn = redis.connection().await;
    let indexed = |mut conn: redis::aio::MultiplexedConnection| {
        let keys = keys.clone();
        async move {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(&keys.index)
                .arg("job")
                .query_async(&mut conn)
                .await
                .unwrap();
            score
        }
    };
    // with leases: c1 and c2 hold leases, and the index holds the earliest
    let a = Replica::start(with_ttl(&redis, &p, TTL)).await;
    a.client("job", "c1").await.enter().await.unwrap();
    a.client("job", "c2").await.enter().await.unwrap();
    assert!(indexed(conn.clone()).await.is_some());
    a.shutdown().await.unwrap();
    // expiry turned off for a while: both leave, and nothing touches the index
    let b = Replica::start(settings(&redis, &p)).await;
    b.client("job", "c1").await.withdraw().await.unwrap();
    b.client("job", "c2").await.withdraw().await.unwrap();
    assert!(indexed(conn.clone()).await.is_some(), "stale, as expected");
    b.shutdown().await.unwrap();
    // back on: the sweepers find the stale entry due and remove it, and leave the election be
    let c = Replica::start(with_ttl(&redis, &p, TTL)).await;
    wait_for(|| {
        let conn = conn.clone();
        let indexed = &indexed;
        async move { indexed(conn).await.is_none() }
    })
    .await;
    let t = c.client("job", "").await.get_term().await.unwrap();
    assert_eq!(t.brief(), (2, "", vec![]));
    c.shutdown().await.unwrap();
}
