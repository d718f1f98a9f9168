//! A real network partition: one replica runs in a network namespace of its own, joined to
//! the host by a veth pair, and the link is cut with packet filters that drop silently (no
//! reset, as a failed switch or a cloud firewall does). First its Redis traffic is cut while its
//! clients still reach it; then its clients are cut while it still reaches Redis.
//!
//! Needs root (`ip netns`, `iptables`); the namespace and the veth pair are removed at the end,
//! also when the test fails.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use electiond_client::Client;
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::*;
use crate::netns::Namespace;
use crate::outage::health;

fn replica_in(ns: &Namespace, redis_url: &str, listen: SocketAddr, prefix: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_electiond")])
        .env("ELECTION_LISTEN_ADDR", listen.to_string())
        .env("ELECTION_METRICS_ADDR", "")
        .env("ELECTION_CONSOLE_ADDR", "")
        .env("ELECTION_REDIS_URL", redis_url)
        .env("ELECTION_KEY_PREFIX", prefix)
        .env("ELECTION_REDIS_TIMEOUT_MS", "300")
        .env("ELECTION_LEASE_TTL_MS", "0")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("electiond starts in the namespace")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_redis_or_from_its_clients_fails_fast_and_recovers() {
    let ns = Namespace::create(0);
    // reachable from the namespace, as the replicas of a real deployment reach it
    let redis = RedisServer::start_with_args(vec![
        "--bind".into(),
        "127.0.0.1".into(),
        ns.host_ip.clone(),
        "--protected-mode".into(),
        "no".into(),
    ])
    .await;
    let redis_port = redis
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("redis port");
    let p = prefix("partition");
    let cut_addr: SocketAddr = format!("{}:{}", ns.ns_ip, free_port()).parse().unwrap();
    let _cut = replica_in(
        &ns,
        &format!("redis://{}:{redis_port}", ns.host_ip),
        cut_addr,
        &p,
    );
    let host = Replica::start(settings(&redis, &p)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(cut_addr).await != Some(ServingStatus::Serving as i32) {
        assert!(
            Instant::now() < deadline,
            "the namespaced replica did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_cut = Client::builder([cut_addr.to_string()])
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let on_host = Client::builder([host.addr.to_string()])
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    on_cut
        .enter("job", "a")
        .await
        .expect("Enter through the namespaced replica");
    let mut watch = on_cut.watch("job");
    assert_eq!(watch.next().await.unwrap().term.candidates, ["a"]);

    // 1. Redis cut off, clients not: calls fail fast, health says so, nothing hangs
    let to_redis: &[&[&str]] = &[
        &[
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &ns.host_ip,
            "--dport",
            &redis_port.to_string(),
        ],
        &[
            "INPUT",
            "-p",
            "tcp",
            "-s",
            &ns.host_ip,
            "--sport",
            &redis_port.to_string(),
        ],
    ];
    ns.filter("-A", to_redis);
    for _ in 0..5 {
        let t = Instant::now();
        let r = on_cut.enter("job", "b").await;
        assert!(r.is_err(), "an Enter succeeded with Redis cut off: {r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "a call hung for {:?}",
            t.elapsed()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(cut_addr).await != Some(ServingStatus::NotServing as i32) {
        assert!(Instant::now() < deadline, "health did not say NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the election goes on through the other replica; the cut one's watcher must catch up
    on_host.enter("job", "c").await.unwrap();
    on_host.anoint("job", "c").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ns.filter("-D", to_redis);
    let healed = Instant::now();
    let want = on_host.get("job").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(t) = on_cut.get("job").await {
            assert_eq!((t.id, &t.candidates), (want.id, &want.candidates));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving 15 s after the cut healed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let serving_again = healed.elapsed();
    let converged = loop {
        let item = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .expect("the watcher on the cut replica converges")
            .expect("watch item");
        if item.term.candidates == want.candidates {
            break healed.elapsed();
        }
    };
    eprintln!(
        "Redis cut from a replica for 2 s: serving again {serving_again:?} after healing, its \
         watcher had the final state after {converged:?}"
    );

    // 2. clients cut off, Redis not: a client with both replicas moves to the other one
    let both = Client::builder([cut_addr.to_string(), host.addr.to_string()])
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let port = cut_addr.port().to_string();
    let from_clients: &[&[&str]] = &[&["INPUT", "-p", "tcp", "--dport", &port]];
    ns.filter("-A", from_clients);
    for i in 0..6 {
        let t = both.get("job").await;
        assert!(t.is_ok(), "call {i} with one replica unreachable: {t:?}");
    }
    ns.filter("-D", from_clients);
    on_cut.get("job").await.expect("reachable again");
    host.shutdown().await.unwrap();
}
