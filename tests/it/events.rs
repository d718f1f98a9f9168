//! Events: handshake, every change on every replica in order, catch-up after Redis
//! interruptions, slow readers, and a constant number of Redis connections.

use std::time::Duration;

use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn watchers_on_two_replicas_see_the_worked_example_exactly() {
    let redis = RedisServer::start().await;
    let p = prefix("ev-worked");
    let rs = [
        Replica::start(settings(&redis, &p)).await,
        Replica::start(settings(&redis, &p)).await,
        Replica::start(settings(&redis, &p)).await,
    ];
    worked_example_events(&rs, 1).await;
}

/// Watchers on two of three replicas see each state of the spec's worked example once, in
/// order, and nothing else; `first` is the first leader's id (see `core::worked_example`).
pub async fn worked_example_events(rs: &[Replica], first: u64) {
    let id = |n: u64| first - 1 + n;
    let mut w1 = rs[0]
        .client("test", "watcher-1")
        .await
        .watch()
        .await
        .unwrap();
    let mut w2 = rs[1]
        .client("test", "watcher-2")
        .await
        .watch()
        .await
        .unwrap();
    let mut c1 = rs[0].client("test", "c1").await;
    let mut c2 = rs[1].client("test", "c2").await;
    let mut c3 = rs[2].client("test", "c3").await;

    c1.get_term().await.unwrap();
    c1.enter().await.unwrap();
    c2.enter().await.unwrap();
    c3.enter().await.unwrap();
    c1.enter().await.unwrap(); // no change: no event
    c1.promote("c3").await.unwrap();
    c2.promote("c3").await.unwrap();
    c3.anoint("c2").await.unwrap();
    c3.anoint("c2").await.unwrap(); // no change: no event
    c2.withdraw().await.unwrap();
    c1.evict("c3").await.unwrap();
    c2.enter().await.unwrap();
    c3.anoint("c2").await.unwrap();
    c2.close().await.unwrap();
    c1.close().await.unwrap();
    c3.delete().await.unwrap();

    let expected = vec![
        state(id(1), &["c1"]),
        state(id(1), &["c1", "c2"]),
        state(id(1), &["c1", "c2", "c3"]),
        state(id(1), &["c1", "c3", "c2"]),
        state(id(2), &["c3", "c1", "c2"]),
        state(id(3), &["c2", "c3", "c1"]),
        state(id(4), &["c3", "c1"]),
        state(id(5), &["c1"]),
        state(id(5), &["c1", "c2"]),
        state(id(6), &["c2", "c1"]),
        state(id(7), &["c1"]),
        state(id(7), &[]),
        state(0, &[]), // Delete: watchers are told the election is gone
    ];
    for w in [&mut w1, &mut w2] {
        let mut seen = Vec::new();
        for _ in 0..expected.len() {
            seen.push(w.next().await);
        }
        assert_eq!(brief(&seen), expected);
        assert!(seen[..12].iter().all(|x| x.has_timestamp));
        // and nothing more
        assert!(w.try_next(Duration::from_millis(300)).await.is_none());
    }
}

#[tokio::test]
async fn a_thousand_streams_on_three_replicas_all_see_every_change() {
    const STREAMS: usize = 1000;
    let redis = RedisServer::start().await;
    let p = prefix("ev-1000");
    let mut rs = Vec::new();
    for _ in 0..3 {
        rs.push(Replica::start(settings(&redis, &p)).await);
    }
    many_streams_see_every_change(&rs, STREAMS, 1).await;
}

/// `streams` Events streams spread over the replicas all see one change made through each.
pub async fn many_streams_see_every_change(rs: &[Replica], streams: usize, first: u64) {
    // a few connections per replica, many streams on each (HTTP/2 multiplexing)
    let mut conns = Vec::new();
    for r in rs {
        for _ in 0..4 {
            conns.push(r.client("fan", "watcher").await);
        }
    }
    let mut opening = Vec::new();
    for i in 0..streams {
        let mut c = conns[i % conns.len()].clone();
        opening.push(tokio::spawn(async move { c.watch().await.unwrap() }));
    }
    let mut watches = Vec::new();
    for o in opening {
        watches.push(o.await.unwrap());
    }
    // one change through each replica
    let mut last = None;
    for (i, r) in rs.iter().enumerate() {
        last = Some(
            r.client("fan", &format!("w{i}"))
                .await
                .enter()
                .await
                .unwrap(),
        );
    }
    let expected = vec![
        state(first, &["w0"]),
        state(first, &["w0", "w1"]),
        state(first, &["w0", "w1", "w2"]),
    ];
    assert_eq!(last.unwrap().brief(), (first, "w0", vec!["w0", "w1", "w2"]));
    let mut reading = Vec::new();
    for mut w in watches {
        reading.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(w.next().await);
            }
            brief(&seen)
        }));
    }
    for r in reading {
        assert_eq!(r.await.unwrap(), expected);
    }
}

/// Sequences a watcher saw must never repeat a state or go back in time.
fn assert_forward(seen: &[T]) {
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "a state was delivered twice: {seen:?}");
        assert!(
            pair[0].timestamp <= pair[1].timestamp && pair[0].id <= pair[1].id,
            "went backwards: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test]
async fn after_a_redis_restart_streams_catch_up_without_repeats() {
    let mut redis = RedisServer::start_persistent().await;
    let p = prefix("ev-restart");
    let rs = [
        Replica::start(settings(&redis, &p)).await,
        Replica::start(settings(&redis, &p)).await,
    ];
    let mut watches = Vec::new();
    for r in &rs {
        for i in 0..3 {
            watches.push(
                r.client("job", &format!("watch{i}"))
                    .await
                    .watch()
                    .await
                    .unwrap(),
            );
        }
    }
    let mut a = rs[0].client("job", "a").await;
    let mut b = rs[1].client("job", "b").await;
    a.enter().await.unwrap();
    b.enter().await.unwrap();

    redis.restart().await;
    // changes right after the restart race the replicas' resubscription: whichever way that
    // goes, every stream must end on the latest state
    wait_for(|| async { b.clone().anoint("b").await.is_ok() }).await;
    let latest = a.withdraw().await.unwrap();
    assert_eq!(latest.brief(), (2, "b", vec!["b"]));

    for w in &mut watches {
        let seen = w.until(&latest).await;
        assert_forward(&seen);
        assert_eq!(seen[0].brief(), (1, "a", vec!["a"]));
        assert!(
            w.try_next(Duration::from_millis(200)).await.is_none(),
            "nothing after the latest"
        );
    }
}

#[tokio::test]
async fn a_change_missed_while_pubsub_was_cut_is_still_delivered() {
    let redis = RedisServer::start().await;
    let p = prefix("ev-cut");
    let replica = Replica::start(settings(&redis, &p)).await;
    let mut w = replica
        .client("cut", "watcher")
        .await
        .watch()
        .await
        .unwrap();
    let mut c = replica.client("cut", "c1").await;
    c.enter().await.unwrap();
    assert_eq!(w.next().await.brief(), (1, "c1", vec!["c1"]));

    // change the election behind the replica's back (a write that publishes nothing, as if
    // the message were lost), then cut its subscription: the change must arrive through the
    // catch-up read after it reconnects. In this order the test does not race the reconnect.
    let mut conn = redis.connection().await;
    silent_write(&mut conn, &term_key(&p, "cut")).await;
    assert!(
        w.try_next(Duration::from_millis(200)).await.is_none(),
        "a silent write reaches no one by itself"
    );
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();

    let seen = w.next().await;
    assert_eq!(
        seen.brief(),
        (1, "c1", vec!["c1", "c2"]),
        "caught up after reconnecting"
    );
}

#[tokio::test]
async fn when_redis_loses_its_data_watchers_follow_what_it_holds_now() {
    let mut redis = RedisServer::start().await; // keeps nothing across a restart
    let p = prefix("ev-loss");
    let replica = Replica::start(settings(&redis, &p)).await;
    let mut w = replica
        .client("lost", "watcher")
        .await
        .watch()
        .await
        .unwrap();
    let mut c = replica.client("lost", "old-leader").await;
    c.enter().await.unwrap();
    c.anoint("old-leader").await.unwrap();
    assert_eq!(
        w.next().await.brief(),
        (1, "old-leader", vec!["old-leader"])
    );

    redis.restart().await;
    // no call is made: the replica notices on its own and delivers the empty election
    assert_eq!(w.next().await.brief(), (0, "", vec![]));
    let mut n = replica.client("lost", "new-leader").await;
    wait_for(|| async { n.clone().enter().await.is_ok() }).await;
    assert_eq!(
        w.next().await.brief(),
        (1, "new-leader", vec!["new-leader"])
    );
    assert!(w.try_next(Duration::from_millis(200)).await.is_none());
    let _ = n.get_term().await.unwrap();
}

#[tokio::test]
async fn a_stream_that_stops_reading_does_not_hold_up_the_others() {
    const CANDIDATES: usize = 40;
    const ROUNDS: usize = 200;
    const CHANGES: usize = 3 * ROUNDS;
    let redis = RedisServer::start().await;
    let p = prefix("ev-slow");
    let replica = Replica::start(settings(&redis, &p)).await;
    let admin = replica.client("slow", "admin").await;
    for i in 0..CANDIDATES {
        admin
            .acting_as("slow", &format!("candidate-with-a-longish-name-{i:03}"))
            .enter()
            .await
            .unwrap();
    }
    // the slow client has its own connection and never reads
    let mut slow = replica.client("slow", "slow").await.watch().await.unwrap();
    let mut fast = replica.client("slow", "fast").await.watch().await.unwrap();

    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..CHANGES {
            seen.push(fast.next().await);
        }
        seen
    });
    let mut a = admin.clone();
    let last_name = format!("candidate-with-a-longish-name-{:03}", CANDIDATES - 1);
    let mut again = a.acting_as("slow", &last_name);
    let mut latest = None;
    for _ in 0..ROUNDS {
        // three changes a round, each a large and distinct state
        a.promote(&last_name).await.unwrap();
        again.withdraw().await.unwrap();
        latest = Some(again.enter().await.unwrap());
    }
    let latest = latest.unwrap();
    // the fast reader got every change, in order
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the fast reader was not held up")
        .unwrap();
    assert_forward(&seen);
    assert_eq!(seen.last(), Some(&latest));

    // the slow one, read at last, skipped ahead and ends on the latest state
    let slow_seen = slow.until(&latest).await;
    assert_forward(&slow_seen);
    assert!(
        slow_seen.len() < CHANGES,
        "the slow stream skipped intermediate states ({} of {CHANGES} delivered)",
        slow_seen.len()
    );
}

#[tokio::test]
async fn redis_connections_stay_constant_as_streams_grow_and_are_freed_when_clients_leave() {
    const ELECTIONS: usize = 200;
    const STREAMS: usize = 1000;
    let redis = RedisServer::start().await;
    let p = prefix("ev-conns");
    let mut s = settings(&redis, &p);
    s.redis_pool_size = 4;
    let replica = Replica::start(s).await;
    let c = replica.client("e0", "w").await;
    c.clone().get_term().await.unwrap();
    let mut first = c.acting_as("e0", "w").watch().await.unwrap();

    let mut opening = Vec::new();
    for i in 0..STREAMS {
        let mut cl = c.acting_as(&format!("e{}", i % ELECTIONS), "w");
        opening.push(tokio::spawn(async move { cl.watch().await.unwrap() }));
    }
    let mut watches = Vec::new();
    for o in opening {
        watches.push(o.await.unwrap());
    }
    assert_eq!(subscribed_channels(&redis, &p).await, ELECTIONS);
    // pool (at most 4) + one pub/sub connection + this query's own
    let clients = client_count(&redis).await;
    assert!(
        clients <= 4 + 1 + 1,
        "{clients} redis connections for {STREAMS} streams"
    );

    // every election still delivers
    c.acting_as("e0", "x").enter().await.unwrap();
    assert_eq!(first.next().await.brief(), (1, "x", vec!["x"]));

    // clients going away release everything: the subscriptions go with the last stream
    drop(watches);
    drop(first);
    wait_for(|| async { subscribed_channels(&redis, &p).await == 0 }).await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let redis = RedisServer::start().await;
    let replica = Replica::start(settings(&redis, &prefix("ev-stop"))).await;
    let mut w = replica.client("s", "watcher").await.watch().await.unwrap();
    let stopping = tokio::spawn(replica.shutdown());
    match w.try_next(Duration::from_secs(10)).await {
        Some(Err(s)) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the replica stops once its streams are closed")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn events_with_redis_down_fail_with_unavailable() {
    let mut redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("ev-down"));
    s.redis_timeout_ms = 200;
    let replica = Replica::start(s).await;
    let mut c = replica.client("d", "watcher").await;
    redis.stop().await;
    let r = tokio::time::timeout(Duration::from_secs(10), c.watch())
        .await
        .expect("returns instead of hanging");
    expect_code(r.map(|_| ()), Code::Unavailable);
    redis.restart().await;
    wait_for(|| async { c.clone().watch().await.is_ok() }).await;
}
