//! Redis Cluster mode: three masters started by the test, joined with `redis-cli`.

use std::collections::HashSet;
use std::time::Duration;

use crate::core::worked_example;
use crate::events::{many_streams_see_every_change, worked_example_events};
use crate::harness::*;

async fn replicas(cluster: &RedisCluster, prefix: &str, n: usize) -> Vec<Replica> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Replica::start(cluster_settings(cluster, prefix)).await);
    }
    out
}

#[tokio::test]
async fn on_a_cluster_the_worked_example_and_its_events_come_out_the_same() {
    let cluster = RedisCluster::start(3).await;
    let p = prefix("cl-worked");
    let rs = replicas(&cluster, &p, 3).await;
    worked_example(&rs, cluster.first_id(&p, "test").await).await;
    let p = prefix("cl-events");
    let rs = replicas(&cluster, &p, 3).await;
    worked_example_events(&rs, cluster.first_id(&p, "test").await).await;
    many_streams_see_every_change(&rs, 300, cluster.first_id(&p, "fan").await).await;
}

/// Shard channels subscribed on `node` under `prefix`, and classic channels.
async fn channels_on(node: &RedisServer, prefix: &str) -> (usize, usize) {
    let mut conn = node.connection().await;
    let pattern = format!("{prefix}:*");
    let sharded: Vec<String> = redis::cmd("PUBSUB")
        .arg("SHARDCHANNELS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("PUBSUB SHARDCHANNELS");
    let classic: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("PUBSUB CHANNELS");
    (sharded.len(), classic.len())
}

#[tokio::test]
async fn elections_spread_over_every_master_and_events_stay_in_their_shard() {
    const ELECTIONS: usize = 48;
    let cluster = RedisCluster::start(3).await;
    let p = prefix("cl-spread");
    let replica = Replica::start(cluster_settings(&cluster, &p)).await;
    let client = replica.client("e0", "watcher").await;
    let names: Vec<String> = (0..ELECTIONS).map(|i| format!("e{i}")).collect();

    // one stream per election first, then two more each: Redis connections must not grow
    let mut watches = Vec::new();
    for n in &names {
        watches.push(client.acting_as(n, "watcher").watch().await.unwrap());
    }
    let connections_at_one: Vec<usize> = {
        let mut v = Vec::new();
        for n in &cluster.nodes {
            v.push(client_count(n).await);
        }
        v
    };
    for _ in 0..2 {
        for n in &names {
            watches.push(client.acting_as(n, "watcher").watch().await.unwrap());
        }
    }
    for (i, n) in cluster.nodes.iter().enumerate() {
        assert_eq!(
            client_count(n).await,
            connections_at_one[i],
            "connections to node {i} grew with the number of streams"
        );
        assert!(
            connections_at_one[i] <= 4,
            "node {i}: {} connections for one replica (command, pub/sub, this query)",
            connections_at_one[i]
        );
    }

    let mut first = Vec::new();
    for n in &names {
        first.push(cluster.first_id(&p, n).await);
        let t = client.acting_as(n, "c").enter().await.unwrap();
        assert_eq!(t.brief(), (*first.last().unwrap(), "c", vec!["c"]));
    }
    for (i, w) in watches.iter_mut().enumerate() {
        let n = i % names.len();
        assert_eq!(w.next().await.brief(), (first[n], "c", vec!["c"]));
    }

    // every master holds some elections, and carries their events on shard channels only
    let mut holding = HashSet::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{p}:*:term"))
            .query_async(&mut node.connection().await)
            .await
            .unwrap();
        if !keys.is_empty() {
            holding.insert(i);
        }
        let (sharded, classic) = channels_on(node, &p).await;
        assert!(
            sharded > 0,
            "node {i} carries none of the elections' events"
        );
        assert_eq!(classic, 0, "node {i} has classic pub/sub subscriptions");
    }
    assert_eq!(
        holding.len(),
        3,
        "elections did not spread over all masters"
    );
}

#[tokio::test]
async fn a_slot_migration_under_load_loses_no_acknowledged_change() {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 40;
    let cluster = RedisCluster::start(3).await;
    let p = prefix("cl-move");
    let mut settings = cluster_settings(&cluster, &p);
    settings.lease_ttl_ms = 60_000; // so the lease keys and index move with the slot too
    settings.redis_timeout_ms = 2000;
    let rs = [
        Replica::start(settings.clone()).await,
        Replica::start(settings).await,
    ];
    let key = term_key(&p, "hot");
    let slot = slot_of(&cluster.nodes[0], &key).await;
    let from = cluster.owner_of(slot).await;
    let to = (from + 1) % 3;

    let mut watch = rs[1].client("hot", "watcher").await.watch().await.unwrap();
    rs[0].client("hot", "first").await.enter().await.unwrap();

    // writers through both replicas; a call that fails is retried, as a client would, and
    // only what was acknowledged is counted
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = rs[w % 2].client("hot", "x").await;
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = 0;
            for i in 0..PER_WRITER {
                let id = format!("w{w}-{i}");
                let mut c = client.acting_as("hot", &id);
                loop {
                    match c.enter().await {
                        Ok(t) => {
                            assert!(
                                t.candidates.contains(&id),
                                "an acknowledged Enter lacks its caller"
                            );
                            acked.push(id);
                            break;
                        }
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                            failures += 1;
                            assert!(failures < 10, "{id}: still failing: {status:?}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            (acked, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.migrate_slot(slot, from, to).await;
    let mut acked = vec!["first".to_owned()];
    let mut failures = 0;
    for w in writers {
        let (a, f) = w.await.unwrap();
        acked.extend(a);
        failures += f;
    }
    assert_eq!(cluster.owner_of(slot).await, to, "the slot did not move");
    let on_new_owner: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(10)
        .query_async(&mut cluster.nodes[to].connection().await)
        .await
        .unwrap();
    assert!(
        on_new_owner.contains(&key),
        "the election's keys did not move"
    );

    // nothing acknowledged is lost, seen through either replica
    for r in &rs {
        let t = r.client("hot", "reader").await.get_term().await.unwrap();
        let held: HashSet<&String> = t.candidates.iter().collect();
        let missing: Vec<&String> = acked.iter().filter(|a| !held.contains(a)).collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
        assert_eq!(
            t.candidates.len(),
            acked.len(),
            "candidates appeared from nowhere"
        );
        assert_eq!(t.leader, "first");
    }
    // the watcher's replica now listens on the new owner only, and the watcher converges on
    // the final state: changes keep flowing after the move
    let channel = key.replace(":term", ":events");
    let listeners = |node: usize| {
        let node = &cluster.nodes[node];
        let channel = channel.clone();
        async move {
            let (_, n): (String, usize) = redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(&channel)
                .query_async(&mut node.connection().await)
                .await
                .unwrap();
            n
        }
    };
    wait_for(|| async { listeners(to).await == 1 && listeners(from).await == 0 }).await;
    let last = rs[0].client("hot", "after").await.enter().await.unwrap();
    watch.until(&last).await;
    eprintln!("slot {slot} moved from node {from} to {to}; {failures} calls retried");
}

#[tokio::test]
async fn a_cluster_with_a_password_and_tls_is_reached_only_with_both() {
    let dir = self_signed_cert("ctls");
    let cluster = RedisCluster::start_secure(3, &dir).await;
    let p = prefix("cl-tls");
    let seeds = |password: &str| {
        cluster
            .tls_ports
            .iter()
            .map(|port| format!("rediss://:{password}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut s = cluster_settings(&cluster, &p);
    s.redis_cluster_nodes = Some(seeds(CLUSTER_PASSWORD));
    s.redis_ca_cert = Some(dir.join("cert.pem").display().to_string());
    let good = Replica::start(s.clone()).await;
    // elections on every master, each with a watcher, all over TLS with the password
    let names: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let client = good.client("t0", "w").await;
    let mut watches = Vec::new();
    for n in &names {
        watches.push(client.acting_as(n, "w").watch().await.expect("watch"));
    }
    let mut first = Vec::new();
    for n in &names {
        first.push(cluster.first_id(&p, n).await);
        let t = client.acting_as(n, "c1").enter().await.unwrap();
        assert_eq!(t.brief(), (*first.last().unwrap(), "c1", vec!["c1"]));
    }
    for (w, first) in watches.iter_mut().zip(&first) {
        assert_eq!(w.next().await.brief(), (*first, "c1", vec!["c1"]));
    }

    // a wrong password, or no CA to trust the certificate: nothing gets through
    let mut wrong = s.clone();
    wrong.redis_cluster_nodes = Some(seeds("not-it"));
    let mut untrusting = s;
    untrusting.redis_ca_cert = None;
    for settings in [wrong, untrusting] {
        let mut settings = settings;
        settings.redis_timeout_ms = 300;
        let r = Replica::start(settings).await;
        expect_code(
            r.client("t0", "c2").await.enter().await,
            tonic::Code::Unavailable,
        );
    }
    assert_eq!(
        client
            .acting_as("t0", "reader")
            .get_term()
            .await
            .unwrap()
            .brief(),
        (first[0], "c1", vec!["c1"]),
        "the refused calls changed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn on_a_cluster_a_change_missed_while_pubsub_was_cut_is_still_delivered() {
    let cluster = RedisCluster::start(3).await;
    let p = prefix("cl-cut");
    let replica = Replica::start(cluster_settings(&cluster, &p)).await;
    let mut w = replica.client("cut", "w").await.watch().await.unwrap();
    let mut c = replica.client("cut", "c1").await;
    c.enter().await.unwrap();
    let first = cluster.first_id(&p, "cut").await;
    assert_eq!(w.next().await.brief(), (first, "c1", vec!["c1"]));

    // a write that publishes nothing, on the election's master, then that master drops every
    // pub/sub client: the cluster connection subscribes again and the replica must catch up
    let key = term_key(&p, "cut");
    let node = &cluster.nodes[cluster
        .owner_of(slot_of(&cluster.nodes[0], &key).await)
        .await];
    let mut conn = node.connection().await;
    silent_write(&mut conn, &key).await;
    assert!(
        w.try_next(Duration::from_millis(200)).await.is_none(),
        "a silent write reaches no one by itself"
    );
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        killed, 1,
        "the replica's one pub/sub connection to this node"
    );
    assert_eq!(
        w.next().await.brief(),
        (first, "c1", vec!["c1", "c2"]),
        "caught up after the subscription came back"
    );
    // and events flow again
    let t = replica.client("cut", "c3").await.enter().await.unwrap();
    assert_eq!(w.until(&t).await.last().map(T::brief), Some(t.brief()));
}

#[tokio::test]
async fn a_master_going_down_gives_unavailable_and_service_resumes_when_it_returns() {
    let mut cluster = RedisCluster::start(3).await;
    let p = prefix("cl-down");
    let mut s = cluster_settings(&cluster, &p);
    s.redis_timeout_ms = 500;
    let replica = Replica::start(s).await;
    let key = term_key(&p, "down");
    let owner = cluster
        .owner_of(slot_of(&cluster.nodes[0], &key).await)
        .await;
    let mut c = replica.client("down", "c1").await;
    let first = cluster.first_id(&p, "down").await;
    assert_eq!(c.enter().await.unwrap().brief(), (first, "c1", vec!["c1"]));

    cluster.nodes[owner].stop().await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        expect_code(c.get_term().await, tonic::Code::Unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a call on a dead master must fail within its time bound, took {:?}",
            started.elapsed()
        );
    }

    // the node comes back (empty: it kept nothing) and rejoins; no replica restart needed
    cluster.nodes[owner].restart().await;
    let mut c2 = c.acting_as("down", "c2");
    wait_for(|| {
        let mut c2 = c2.clone();
        async move { c2.get_term().await.is_ok() }
    })
    .await;
    assert_eq!(c2.enter().await.unwrap().candidates, vec!["c2"]);
}

#[tokio::test]
async fn without_full_coverage_a_dead_master_stops_only_its_own_elections() {
    // Redis answers for the live masters' slots while another is down only when told to;
    // the replica must not refuse those calls either (its outage gate counts only a Cluster
    // with no node reachable)
    let mut cluster = RedisCluster::start(3).await;
    for node in &cluster.nodes {
        let mut conn = node.connection().await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-require-full-coverage")
            .arg("no")
            .query_async(&mut conn)
            .await
            .expect("CONFIG SET");
    }
    let p = prefix("cl-part");
    let mut s = cluster_settings(&cluster, &p);
    s.redis_timeout_ms = 300;
    let replica = Replica::start(s).await;
    let dead_key = term_key(&p, "dead");
    let owner = cluster
        .owner_of(slot_of(&cluster.nodes[0], &dead_key).await)
        .await;
    let mut live_name = String::from("up0");
    for i in 1.. {
        let slot = slot_of(&cluster.nodes[0], &term_key(&p, &live_name)).await;
        if cluster.owner_of(slot).await != owner {
            break;
        }
        live_name = format!("up{i}");
    }
    let mut dead = replica.client("dead", "c1").await;
    dead.enter().await.unwrap();
    let mut live = dead.acting_as(&live_name, "c1");
    live.enter().await.unwrap();

    cluster.nodes[owner].stop().await;
    // before and past the node timeout (2 s), when the others mark the master failed
    let until = std::time::Instant::now() + Duration::from_secs(4);
    let mut i = 0;
    while std::time::Instant::now() < until {
        expect_code(dead.get_term().await, tonic::Code::Unavailable);
        if let Err(e) = live.get_term().await {
            panic!("call {i} on a live master's election failed while another was down: {e:?}");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_wait_replicas_on_a_cluster_an_acknowledged_change_is_on_the_shards_replica() {
    let mut cluster = RedisCluster::start_with_replicas(3).await;
    let p = prefix("cl-wait");
    let mut s = cluster_settings(&cluster, &p);
    s.redis_wait_replicas = 1;
    // room for a replica's first acknowledgement on a loaded machine (WAIT gets three quarters)
    s.redis_timeout_ms = 2000;
    let replica = Replica::start(s).await;
    let client = replica.client("w0", "c1").await;

    // elections on every master; each acknowledged Enter is already on that shard's replica
    let ids = cluster.node_ids().await;
    for i in 0..12 {
        let name = format!("w{i}");
        let t = client.acting_as(&name, "c1").enter().await.unwrap();
        let first = cluster.first_id(&p, &name).await;
        assert_eq!(t.brief(), (first, "c1", vec!["c1"]));
        let key = term_key(&p, &name);
        let master = cluster
            .owner_of(slot_of(&cluster.nodes[0], &key).await)
            .await;
        let mut copies = 0;
        for (n, node) in cluster.nodes.iter().enumerate().skip(3) {
            let mut c = node.connection().await;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await
                .unwrap();
            let of_master = info.contains(&format!("master_port:{}", cluster.nodes[master].port));
            if !of_master {
                continue;
            }
            let _: () = redis::cmd("READONLY").query_async(&mut c).await.unwrap();
            let held: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(
                held.is_some_and(|h| h.contains("c1")),
                "node {n} ({}) replicates the master of {name} but lacks it",
                ids[n]
            );
            copies += 1;
        }
        assert_eq!(copies, 1, "{name}: one replica per master");
    }

    // with the replicas gone, nothing more is acknowledged
    for n in 3..6 {
        cluster.nodes[n].stop().await;
    }
    expect_code(
        client.acting_as("w0", "c2").enter().await,
        tonic::Code::Unavailable,
    );
}

/// The replica of `master` (an index into `cluster.nodes`), found by its `INFO replication`.
async fn replica_of(cluster: &RedisCluster, master: usize) -> usize {
    for (n, node) in cluster.nodes.iter().enumerate() {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut node.connection().await)
            .await
            .unwrap();
        if info.contains(&format!("master_port:{}", cluster.nodes[master].port)) {
            return n;
        }
    }
    panic!("node {master} has no replica");
}

#[tokio::test]
async fn after_each_failover_a_new_leader_gets_an_id_of_the_new_masters_epoch() {
    // Graceful failovers (CLUSTER FAILOVER) there and back: the old master becomes a replica
    // without a full resync, so its election library keeps what it read of its epoch before;
    // promoted again, it must read the new one, or its ids could meet a cut-off master's
    let cluster = RedisCluster::start_with_replicas(3).await;
    let p = prefix("cl-epochs");
    let replica = Replica::start(cluster_settings(&cluster, &p)).await;
    let mut c = replica.client("epochs", "c0").await;
    let mut last = c.enter().await.unwrap();
    let key = term_key(&p, "epochs");
    let slot = slot_of(&cluster.nodes[0], &key).await;
    for round in 1..=3 {
        let master = cluster.owner_of(slot).await;
        let promoted = replica_of(&cluster, master).await;
        // a graceful failover, asked again until the replica has taken over (it is refused
        // while the replica is still syncing, or unknown to its master's view of the cluster)
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        'failover: loop {
            let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query_async(&mut cluster.nodes[promoted].connection().await)
                .await;
            for _ in 0..30 {
                if cluster.owner_of(slot).await == promoted {
                    break 'failover;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: node {promoted} did not take over from {master}"
            );
        }
        let first = cluster.first_id(&p, "epochs").await;
        assert!(
            first > last.id,
            "round {round}: the new epoch is above every id so far"
        );
        // the next leader, through the replica, which follows the failover by itself
        let id = format!("c{round}");
        let mut next = c.acting_as("epochs", &id);
        while next.enter().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t = next.anoint(&id).await.unwrap();
        assert_eq!(
            (t.id, t.leader.as_str()),
            (first, id.as_str()),
            "round {round}"
        );
        last = t;
    }
}
