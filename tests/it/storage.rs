//! What Redis holds: elections stored by an earlier version keep working (ids, leases and all),
//! ids that contain line feeds and backslashes round-trip, the election library comes back
//! when Redis forgets it, and an election of 10,000 candidates keeps every rule, also when one
//! joins it at the end (an append in place).

use std::time::Duration;

use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn an_election_stored_by_an_earlier_version_keeps_its_id_leader_and_leases() {
    let redis = RedisServer::start().await;
    let p = prefix("legacy");
    let k = election_keys(&p, "job");
    let mut conn = redis.connection().await;
    // the JSON form, with raw ids, that earlier versions wrote; "b\\c" holds a backslash
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(&k.term)
        .arg(r#"{"id":7,"rev":1700000000000000,"ts":1700000000,"tsn":0,"c":["a","b\\c"]}"#)
        .ignore()
        .cmd("ZADD")
        .arg(&k.leases)
        .arg(32_503_680_000_000u64) // far in the future: the leases must not run out here
        .arg("a")
        .arg(32_503_680_000_000u64)
        .arg("b\\c")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let r = Replica::start(with_ttl(&redis, &p, 60_000)).await;
    let mut a = r.client("job", "a").await;
    assert_eq!(
        a.get_term().await.unwrap().brief(),
        (7, "a", vec!["a", "b\\c"])
    );
    // the id goes on from 7: the fencing token never goes back across the upgrade
    let mut bc = r.client("job", "b\\c").await;
    bc.promote("b\\c").await.unwrap();
    assert_eq!(
        a.get_term().await.unwrap().brief(),
        (8, "b\\c", vec!["b\\c", "a"])
    );
    bc.withdraw().await.unwrap();
    assert_eq!(a.get_term().await.unwrap().brief(), (9, "a", vec!["a"]));
    // converted in place: the term is no longer JSON, and the member set names only "a"
    let raw: String = redis::cmd("GET")
        .arg(&k.term)
        .query_async(&mut conn)
        .await
        .unwrap();
    let id: u64 = raw.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(id, 9, "{raw}");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&k.leases)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, ["a"]);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn ids_with_line_feeds_and_backslashes_are_candidates_like_any_other() {
    let redis = RedisServer::start().await;
    let r = Replica::start(settings(&redis, &prefix("escape"))).await;
    let ids = ["x\ny", "\\n", "a\\", "\n"];
    let mut w = r.client("odd", "").await.watch().await.unwrap();
    for id in ids {
        r.client("odd", id).await.enter().await.unwrap();
    }
    let mut c = r.client("odd", "plain").await;
    assert_eq!(
        c.get_term().await.unwrap().brief(),
        (1, "x\ny", ids.to_vec())
    );
    c.promote("\\n").await.unwrap();
    c.anoint("\n").await.unwrap();
    c.evict("a\\").await.unwrap();
    assert_eq!(
        c.get_term().await.unwrap().brief(),
        (3, "\n", vec!["\n", "\\n", "x\ny"])
    );
    // "\\n" (backslash, n) and "\n" (a line feed) stay two different candidates
    expect_code(c.evict("n").await, Code::InvalidArgument);
    r.client("odd", "\\n").await.withdraw().await.unwrap();
    let last = w.until_matching(|t| t.candidates == ["\n", "x\ny"]).await;
    assert_eq!(
        last.last().unwrap().leader,
        "\n",
        "watchers decode the same ids"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_redis_that_forgot_the_library_gets_it_again_on_the_next_call() {
    let redis = RedisServer::start().await;
    let r = Replica::start(settings(&redis, &prefix("flush"))).await;
    let mut c = r.client("job", "c1").await;
    c.enter().await.unwrap();
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(libraries.is_empty());
    assert_eq!(c.get_term().await.unwrap().brief(), (1, "c1", vec!["c1"]));
    let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(libraries.len(), 1, "loaded again, once");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_election_of_ten_thousand_candidates_keeps_every_rule() {
    const N: usize = 10_000;
    const TTL: u64 = 5_000;
    let redis = RedisServer::start().await;
    let p = prefix("big");
    let r = Replica::start(with_ttl(&redis, &p, TTL)).await;
    let ids: Vec<String> = (0..N)
        .map(|i| format!("candidate-{i:05}-of-the-fleet"))
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    // a Restore puts all but the last in at once (every one with a fresh lease)
    let mut admin = r.client("big", "").await;
    admin.restore(1, &ids[0], &refs[..N - 1]).await.unwrap();
    let mut w = admin.watch().await.unwrap();
    // the last enters on its own: appended at the end, the leader and id as they were, and
    // watchers get the whole list
    let mut last = r.client("big", &ids[N - 1]).await;
    let t = last.enter().await.unwrap();
    assert_eq!(
        (t.id, t.leader.as_str(), t.candidates.len()),
        (1, &*ids[0], N)
    );
    assert_eq!(t.candidates, ids);
    let seen = w.until_matching(|t| t.candidates.len() == N).await;
    assert_eq!(seen.last().unwrap().candidates, ids);
    assert_eq!(admin.get_term().await.unwrap().candidates, ids);

    // one more is over the limit; changes in the middle and at both ends
    let mut extra = r.client("big", "one-too-many").await;
    expect_code(extra.enter().await, Code::ResourceExhausted);
    last.promote(&ids[N - 1]).await.unwrap();
    admin.evict(&ids[N / 2]).await.unwrap();
    last.withdraw().await.unwrap();
    admin.anoint(&ids[N - 2]).await.unwrap();
    let t = admin.get_term().await.unwrap();
    let mut want: Vec<&str> = refs.clone();
    want.remove(N - 1);
    want.remove(N / 2);
    want.retain(|c| *c != ids[N - 2]);
    want.insert(0, &ids[N - 2]);
    assert_eq!(t.id, 2, "one change of leader");
    assert_eq!(t.candidates, want);

    // all but two fall silent: both keep calling, everyone else expires in one go
    let keep = [ids[N - 2].clone(), ids[7].clone()];
    let alive: Vec<_> = keep
        .iter()
        .map(|id| {
            let mut c = admin.acting_as("big", id);
            tokio::spawn(async move {
                loop {
                    let _ = c.get_term().await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        })
        .collect();
    wait_for(|| {
        let mut a = admin.clone();
        async move { a.get_term().await.unwrap().candidates.len() == 2 }
    })
    .await;
    for a in alive {
        a.abort();
    }
    let t = admin.get_term().await.unwrap();
    assert_eq!(t.candidates, [ids[N - 2].as_str(), ids[7].as_str()]);
    assert_eq!(t.id, 2, "the leader stayed through the mass expiry");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_candidate_list_over_the_byte_limit_is_refused_and_changes_nothing() {
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("bytes"));
    // "aaaa\n" and "b\\\n" (a backslash is stored as two bytes): 5 + 4 = 9 bytes
    s.max_term_bytes = 10;
    let r = Replica::start(s).await;
    let mut a = r.client("job", "aaaa").await;
    a.enter().await.unwrap();
    r.client("job", "b\\").await.enter().await.unwrap();
    let before = a.get_term().await.unwrap();
    let msg = expect_code(
        r.client("job", "c").await.enter().await,
        Code::ResourceExhausted,
    );
    assert!(msg.contains("10 bytes"), "{msg}");
    expect_code(
        a.restore(5, "aaaa", &["aaaa", "b\\", "c"]).await,
        Code::ResourceExhausted,
    );
    let after = a.get_term().await.unwrap();
    assert_eq!(after.brief(), before.brief());
    assert_eq!(after.timestamp, before.timestamp, "not even touched");
    // room again once one leaves
    a.withdraw().await.unwrap();
    r.client("job", "c").await.enter().await.unwrap();
    assert_eq!(
        a.get_term().await.unwrap().brief(),
        (2, "b\\", vec!["b\\", "c"])
    );
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_append_to_an_election_of_many_candidates_keeps_the_byte_limit() {
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("append"));
    // 100 lines of 29 bytes ("candidate-00000-of-the-fleet\n"), room for exactly one more
    s.max_term_bytes = 2929;
    let r = Replica::start(s).await;
    let id = |i: usize| format!("candidate-{i:05}-of-the-fleet");
    let ids: Vec<String> = (0..100).map(id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut admin = r.client("many", "").await;
    admin.restore(3, &ids[0], &refs).await.unwrap();
    let t = r.client("many", &id(100)).await.enter().await.unwrap();
    assert_eq!(
        (t.id, t.leader.as_str(), t.candidates.len()),
        (3, &*ids[0], 101)
    );
    assert_eq!(t.candidates.last(), Some(&id(100)));
    let before = admin.get_term().await.unwrap();
    let msg = expect_code(
        r.client("many", &id(101)).await.enter().await,
        Code::ResourceExhausted,
    );
    assert!(msg.contains("2929 bytes"), "{msg}");
    let after = admin.get_term().await.unwrap();
    assert_eq!(after, before, "nothing changed, not even the timestamp");
    // the one that got in is a candidate like any other: it can leave again
    r.client("many", &id(100)).await.withdraw().await.unwrap();
    assert_eq!(admin.get_term().await.unwrap().candidates, ids);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_big_election_stored_with_the_short_header_takes_the_fixed_one_and_keeps_its_id() {
    let redis = RedisServer::start().await;
    let p = prefix("short");
    let k = election_keys(&p, "job");
    let mut conn = redis.connection().await;
    // 100 candidates of 28 bytes (2,900 bytes of lines) under the short header, as a version
    // before the fixed one stored every election
    let ids: Vec<String> = (0..100)
        .map(|i| format!("candidate-{i:05}-of-the-fleet"))
        .collect();
    let mut raw = String::from("4 1700000000000000 1700000000 5000\n");
    let mut leases = redis::cmd("ZADD");
    leases.arg(&k.leases);
    for id in &ids {
        raw.push_str(id);
        raw.push('\n');
        leases.arg(32_503_680_000_000u64).arg(id);
    }
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(&k.term)
        .arg(&raw)
        .ignore()
        .add_command(leases)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored = |mut conn: redis::aio::MultiplexedConnection| {
        let key = k.term.clone();
        async move {
            let raw: String = redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            raw.split_once('\n').unwrap().0.to_owned()
        }
    };
    let r = Replica::start(with_ttl(&redis, &p, 60_000)).await;
    let mut admin = r.client("job", "").await;
    assert_eq!(admin.get_term().await.unwrap().candidates, ids);
    // the first change writes the fixed header; the id stays
    let t = r.client("job", "x").await.enter().await.unwrap();
    assert_eq!(
        (t.id, t.leader.as_str(), t.candidates.len()),
        (4, &*ids[0], 101)
    );
    let head = stored(conn.clone()).await;
    assert_eq!(head.len(), 62, "{head}");
    assert_eq!(head.split(' ').next().unwrap().parse::<u64>().unwrap(), 4);
    // the next one appends in place, and later changes go on from it
    let t = r.client("job", "y").await.enter().await.unwrap();
    assert_eq!(&t.candidates[99..], [&*ids[99], "x", "y"]);
    r.client("job", &ids[0]).await.withdraw().await.unwrap();
    r.client("job", "x").await.withdraw().await.unwrap();
    let t = admin.get_term().await.unwrap();
    let mut want: Vec<&str> = ids[1..].iter().map(String::as_str).collect();
    want.push("y");
    assert_eq!(t.brief(), (5, &*ids[1], want));
    assert_eq!(stored(conn).await.len(), 62);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_big_election_read_again_shows_every_change_made_meanwhile() {
    let redis = RedisServer::start().await;
    let p = prefix("recent");
    let a = Replica::start(with_ttl(&redis, &p, 60_000)).await;
    let b = Replica::start(with_ttl(&redis, &p, 60_000)).await;
    let ids: Vec<String> = (0..100).map(|i| format!("c-{i:03}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut on_a = a.client("big", "").await;
    on_a.restore(1, &ids[0], &refs).await.unwrap();
    // read again and again through the replica that holds the last state: the same answer,
    // timestamp included
    let first = on_a.get_term().await.unwrap();
    assert_eq!(first.candidates, ids);
    for _ in 0..3 {
        assert_eq!(on_a.get_term().await.unwrap(), first);
    }
    // a change through the other replica shows at once, and so does the next one
    b.client("big", "newcomer").await.enter().await.unwrap();
    let t = on_a.get_term().await.unwrap();
    assert_eq!(t.candidates.last().map(String::as_str), Some("newcomer"));
    assert_eq!(t.candidates.len(), 101);
    b.client("big", "").await.anoint("c-050").await.unwrap();
    let t = on_a.get_term().await.unwrap();
    assert_eq!((t.id, t.leader.as_str()), (2, "c-050"));
    // a lease refresh through the replica holding the state keeps the candidate: read with
    // its client id, on a replica that has the state, it stays a candidate and is answered
    let mut c7 = on_a.acting_as("big", "c-007");
    assert_eq!(c7.get_term().await.unwrap(), t);
    // Delete, then an election of the same name built again: never the state from before
    b.client("big", "").await.delete().await.unwrap();
    assert_eq!(on_a.get_term().await.unwrap().brief(), (0, "", vec![]));
    b.client("big", "")
        .await
        .restore(5, "c-010", &refs[10..90])
        .await
        .unwrap();
    let t = on_a.get_term().await.unwrap();
    assert_eq!(
        (t.id, t.leader.as_str(), t.candidates.len()),
        (5, "c-010", 80)
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
