//! Listing and history (`electiond.admin.v1.ElectionAdmin`), through real replicas and the
//! client crate, on one Redis and on a three-master Cluster.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use electiond_client::{Client as Admin, Error};
use futures::StreamExt;

use crate::access::{grants, OPERATOR, READER};
use crate::harness::*;

fn admin(addr: SocketAddr, token: Option<&str>) -> Admin {
    let mut b = Admin::builder([format!("http://{addr}")]);
    if let Some(t) = token {
        b = b.token(t);
    }
    b.build().expect("client")
}

/// Every name of a listing of `prefix`, page by page, each page asked of the next replica in
/// turn (a page token from one replica works on any).
async fn every_page(replicas: &[SocketAddr], prefix: &str, size: u32) -> Vec<String> {
    let clients: Vec<Admin> = replicas.iter().map(|a| admin(*a, None)).collect();
    let mut names = Vec::new();
    let mut token = None;
    for turn in 0.. {
        let page = clients[turn % clients.len()]
            .list(prefix, size, token.as_deref())
            .await
            .expect("a page");
        assert!(page.elections.len() <= size as usize);
        names.extend(page.elections.into_iter().map(|e| e.name));
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    names
}

/// Enters `w` into each of `names`, 64 at a time.
async fn enter_all(addr: SocketAddr, names: &[String]) {
    let c = Client::connect(addr, "", "w").await;
    futures::stream::iter(names.iter().cloned())
        .map(|n| {
            let mut c = c.acting_as(&n, "w");
            async move { c.enter().await.expect("enter") }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

/// 2,000 elections over prefixes, listed in pages of 37 while others are created and deleted:
/// each of the 2,000 appears exactly once, and a prefix filter returns exactly its own.
async fn each_lasting_election_is_listed_once(replicas: &[SocketAddr]) {
    let kinds = ["team-a/", "team-b/", "team-a", "x/"];
    let names: Vec<String> = (0..2000)
        .map(|i| format!("{}{i}", kinds[i % kinds.len()]))
        .collect();
    enter_all(replicas[0], &names).await;

    // churn: elections created and deleted through the other replica while the listing runs
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let addr = *replicas.last().expect("a replica");
        tokio::spawn(async move {
            let mut c = Client::connect(addr, "", "w").await;
            let mut k = 0u64;
            let mut made = 0;
            while !stop.load(Ordering::Relaxed) {
                c.acting_as(&format!("churn/{k}"), "w")
                    .enter()
                    .await
                    .expect("churn enter");
                if k >= 5 {
                    c = c.acting_as(&format!("churn/{}", k - 5), "w");
                    c.delete().await.expect("churn delete");
                }
                k += 1;
                made += 1;
            }
            made
        })
    };

    let listed = every_page(replicas, "", 37).await;
    stop.store(true, Ordering::Relaxed);
    let churned = churn.await.expect("churn task");
    assert!(
        churned > 10,
        "elections came and went during the listing ({churned})"
    );

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in &listed {
        *seen.entry(n.as_str()).or_default() += 1;
    }
    for n in &names {
        assert_eq!(seen.get(n.as_str()), Some(&1), "{n} listed once");
    }
    for (n, count) in &seen {
        assert_eq!(*count, 1, "{n} listed {count} times");
        assert!(
            names.contains(&n.to_string()) || n.starts_with("churn/"),
            "{n} was never made"
        );
    }

    // a prefix is exact: "team-a/" is not "team-a"
    let team_a: HashSet<String> = every_page(replicas, "team-a/", 100)
        .await
        .into_iter()
        .collect();
    let want: HashSet<String> = names
        .iter()
        .filter(|n| n.starts_with("team-a/"))
        .cloned()
        .collect();
    assert_eq!(team_a, want);
    assert!(every_page(replicas, "nothing-here/", 10).await.is_empty());

    // what a listing says of an election
    let page = admin(replicas[0], None)
        .list("x/3", 1000, None)
        .await
        .expect("list");
    let e = page
        .elections
        .iter()
        .find(|e| e.name == "x/3")
        .expect("x/3 listed");
    // (on a Cluster, ids start in the master's epoch range)
    let term = Client::connect(replicas[0], "x/3", "")
        .await
        .get_term()
        .await
        .expect("term");
    assert_eq!(
        (e.id, e.leader.as_deref(), e.candidates),
        (term.id, Some("w"), 1)
    );
    let age = SystemTime::now()
        .duration_since(e.changed)
        .expect("changed in the past");
    assert!(age < Duration::from_secs(120), "changed {age:?} ago");

    // a token that is not one the service gave
    for bad in ["garbage", "1.999.61", "1.1.zz"] {
        match admin(replicas[0], None).list("", 10, Some(bad)).await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("page_token"), "{m}"),
            other => panic!("{bad}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn listing_finds_each_election_once_on_one_redis() {
    let redis = RedisServer::start().await;
    let p = prefix("admin-list");
    let a = Replica::start(settings(&redis, &p)).await;
    let b = Replica::start(settings(&redis, &p)).await;
    each_lasting_election_is_listed_once(&[a.addr, b.addr]).await;
}

#[tokio::test]
async fn listing_finds_each_election_once_on_a_cluster() {
    let cluster = RedisCluster::start(3).await;
    let p = prefix("admin-list-cluster");
    let a = Replica::start(cluster_settings(&cluster, &p)).await;
    let b = Replica::start(cluster_settings(&cluster, &p)).await;
    each_lasting_election_is_listed_once(&[a.addr, b.addr]).await;
}

fn ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

/// (id, leader, cause) of each change, newest first.
async fn changes(addr: SocketAddr, name: &str) -> Vec<(u64, String, String)> {
    admin(addr, None)
        .history(name, 0)
        .await
        .expect("history")
        .into_iter()
        .map(|c| (c.id, c.leader.unwrap_or_default(), c.cause))
        .collect()
}

#[tokio::test]
async fn history_records_each_cause_of_a_new_leader_and_nothing_else() {
    let redis = RedisServer::start().await;
    let p = prefix("admin-history");
    let metrics_port = free_port();
    let mut s = with_ttl(&redis, &p, 2000);
    s.metrics_addr = Some(format!("127.0.0.1:{metrics_port}"));
    let r = Replica::start(s.clone()).await;
    let started = ms(SystemTime::now());
    let mut a = r.client("nightly-report", "a").await;
    let mut b = a.acting_as("nightly-report", "b");
    let mut c = a.acting_as("nightly-report", "c");
    let mut want: Vec<(u64, String, String)> = Vec::new();
    fn note(want: &mut Vec<(u64, String, String)>, t: &T, cause: &str) {
        want.insert(0, (t.id, t.leader.clone(), cause.to_owned()));
    }

    note(&mut want, &a.enter().await.unwrap(), "enter");
    // none of these changes the leader: none is recorded
    b.enter().await.unwrap();
    c.enter().await.unwrap();
    a.get_term().await.unwrap();
    c.promote("c").await.unwrap(); // [a, c, b]
    note(&mut want, &a.anoint("b").await.unwrap(), "anoint"); // [b, a, c]
    note(&mut want, &a.promote("a").await.unwrap(), "promote"); // [a, b, c]
    note(&mut want, &b.evict("a").await.unwrap(), "evict"); // [b, c]
    note(&mut want, &b.withdraw().await.unwrap(), "withdraw"); // [c]
    let before = c.get_term().await.unwrap().id;
    c.restore(before + 5, "a", &["a", "c"]).await.unwrap();
    let restored = c.get_term().await.unwrap();
    assert_eq!(restored.leader, "a");
    note(&mut want, &restored, "restore");
    assert_eq!(changes(r.addr, "nightly-report").await, want);

    // the leader stops refreshing its lease; c goes on: the sweeper removes a
    let expired = loop {
        let t = c.get_term().await.unwrap();
        if t.leader == "c" {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    note(&mut want, &expired, "expired");
    assert_eq!(changes(r.addr, "nightly-report").await, want);
    // the last candidate leaves: no leader
    note(&mut want, &c.withdraw().await.unwrap(), "withdraw");
    assert_eq!(want[0].1, "");

    // every replica counts the elections now and then
    wait_for_port(metrics_port).await;
    wait_for(|| async { value(&scrape(metrics_port).await, "electiond_elections") == 1.0 }).await;

    c.delete().await.unwrap();
    want.insert(0, (0, String::new(), "delete".to_owned()));

    // each change counted, by cause, by the replica that made it (the expiry by its sweeper,
    // or by c's refresh, whichever came first)
    let text = scrape(metrics_port).await;
    for (cause, n) in [
        ("enter", 1.0),
        ("anoint", 1.0),
        ("promote", 1.0),
        ("evict", 1.0),
        ("withdraw", 2.0),
        ("restore", 1.0),
        ("expired", 1.0),
        ("delete", 1.0),
    ] {
        let series = format!("electiond_leader_changes_total{{cause=\"{cause}\"}}");
        assert_eq!(value(&text, &series), n, "{series}\n{text}");
    }

    // it outlives the Delete, and a restart of the replica
    r.shutdown().await.expect("stops");
    let r = Replica::start(s).await;
    let history = admin(r.addr, None)
        .history("nightly-report", 0)
        .await
        .unwrap();
    let got: Vec<_> = history
        .iter()
        .map(|c| (c.id, c.leader.clone().unwrap_or_default(), c.cause.clone()))
        .collect();
    assert_eq!(got, want);
    // times on the Redis clock (the same machine's), newest first
    let now = ms(SystemTime::now());
    for pair in history.windows(2) {
        assert!(pair[0].at >= pair[1].at);
    }
    for change in &history {
        let t = ms(change.at);
        assert!(
            started <= t + 5 && t <= now + 5,
            "{t} not in {started}..{now}"
        );
    }
    // a limit takes the newest
    let two = admin(r.addr, None)
        .history("nightly-report", 2)
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].cause, "delete");
}

#[tokio::test]
async fn history_keeps_the_newest_changes_up_to_its_length() {
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("admin-cap"));
    s.history_len = 5;
    let r = Replica::start(s).await;
    let mut a = r.client("capped", "a").await;
    a.enter().await.unwrap();
    a.acting_as("capped", "b").enter().await.unwrap();
    let mut ids = vec![1];
    for i in 0..40 {
        let next = if i % 2 == 0 { "b" } else { "a" };
        ids.push(a.anoint(next).await.unwrap().id);
    }
    let got = changes(r.addr, "capped").await;
    let newest: Vec<u64> = ids.iter().rev().take(5).copied().collect();
    assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), newest);
    assert!(got.iter().all(|c| c.2 == "anoint"));
    // what Redis keeps stays bounded: trimmed back to the length every few changes
    let key = crate::harness::election_keys(&prefix("admin-cap"), "capped").history;
    let kept: usize = redis::cmd("LLEN")
        .arg(&key)
        .query_async(&mut redis.connection().await)
        .await
        .expect("LLEN");
    assert!((5..=5 + 16).contains(&kept), "{kept} lines kept");
    // an election without history, or not known at all, answers empty
    assert!(changes(r.addr, "never-made").await.is_empty());
}

#[tokio::test]
async fn a_listing_shows_only_what_the_token_may_read() {
    let redis = RedisServer::start().await;
    let file = crate::access::access_file("admin-access", &grants());
    let mut s = settings(&redis, &prefix("admin-access"));
    s.access_file = Some(file.display().to_string());
    let r = Replica::start(s).await;
    let names: Vec<String> = ["team-a/x", "team-a/y", "team-b/z", "other"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    let op = Client::connect(r.addr, "", "w")
        .await
        .with_token(crate::access::ADMIN);
    for n in &names {
        op.acting_as(n, "w").enter().await.expect("enter");
    }
    let reader = admin(r.addr, Some(READER));
    let listed: Vec<String> = reader
        .list("", 0, None)
        .await
        .expect("list")
        .elections
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|n| n.starts_with("team-a/")));
    assert!(reader
        .list("team-b/", 0, None)
        .await
        .expect("list")
        .elections
        .is_empty());
    assert_eq!(
        reader.history("team-a/x", 0).await.expect("history").len(),
        1
    );
    match reader.history("team-b/z", 0).await {
        Err(Error::PermissionDenied(m)) => assert!(m.contains("History"), "{m}"),
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
    // an operator of team-a sees team-a alone too; no token, nothing
    let team_op = admin(r.addr, Some(OPERATOR));
    assert_eq!(team_op.list("", 0, None).await.unwrap().elections.len(), 2);
    assert!(matches!(
        admin(r.addr, None).list("", 0, None).await,
        Err(Error::Unauthenticated(_))
    ));
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

#[tokio::test]
async fn elections_an_earlier_version_stored_are_listed_once_a_replica_starts() {
    let redis = RedisServer::start().await;
    let p = prefix("admin-upgrade");
    let r = Replica::start(settings(&redis, &p)).await;
    let names: Vec<String> = (0..50).map(|i| format!("old/{i}")).collect();
    enter_all(r.addr, &names).await;
    r.shutdown().await.expect("stops");
    // as an earlier version left them: no name sets
    let mut conn = redis.connection().await;
    let keys = electiond::store::Keys::new(&p);
    for b in 0..electiond::store::BUCKETS as usize {
        let _: () = redis::cmd("DEL")
            .arg(keys.bucket(b).names())
            .query_async(&mut conn)
            .await
            .expect("del");
    }
    let r = Replica::start(settings(&redis, &p)).await;
    wait_for(|| async { every_page(&[r.addr], "old/", 100).await.len() == names.len() }).await;
    let mut listed = every_page(&[r.addr], "", 100).await;
    listed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(listed, want);
}
