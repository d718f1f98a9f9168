//! The core service: the spec's state rules, errors, replicas sharing one Redis, concurrency
//! and Redis outages.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::binary::electiond_binary;
use crate::harness::*;

async fn replicas(redis: &RedisServer, prefix: &str, n: usize) -> Vec<Replica> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Replica::start(settings(redis, prefix)).await);
    }
    out
}

#[tokio::test]
async fn worked_example_with_each_client_on_its_own_replica() {
    let redis = RedisServer::start().await;
    let rs = replicas(&redis, &prefix("worked"), 3).await;
    worked_example(&rs, 1).await;
}

/// The spec's worked example, each client on its own replica (of three), its first leader's
/// id `first` (1 on one Redis; see `RedisCluster::first_id`).
pub async fn worked_example(rs: &[Replica], first: u64) {
    let id = |n: u64| first - 1 + n;
    let mut c1 = rs[0].client("test", "c1").await;
    let mut c2 = rs[1].client("test", "c2").await;
    let mut c3 = rs[2].client("test", "c3").await;

    let t = c1.get_term().await.unwrap();
    assert_eq!(t.brief(), (0, "", vec![]));
    assert!(!t.has_timestamp, "a never-used election has no timestamp");

    assert_eq!(c1.enter().await.unwrap().brief(), (id(1), "c1", vec!["c1"]));
    assert_eq!(
        c2.enter().await.unwrap().brief(),
        (id(1), "c1", vec!["c1", "c2"])
    );
    assert_eq!(
        c3.enter().await.unwrap().brief(),
        (id(1), "c1", vec!["c1", "c2", "c3"])
    );
    assert_eq!(
        c1.promote("c3").await.unwrap().brief(),
        (id(1), "c1", vec!["c1", "c3", "c2"])
    );
    assert_eq!(
        c2.promote("c3").await.unwrap().brief(),
        (id(2), "c3", vec!["c3", "c1", "c2"])
    );
    assert_eq!(
        c3.anoint("c2").await.unwrap().brief(),
        (id(3), "c2", vec!["c2", "c3", "c1"])
    );
    assert_eq!(
        c2.withdraw().await.unwrap().brief(),
        (id(4), "c3", vec!["c3", "c1"])
    );
    assert_eq!(
        c1.evict("c3").await.unwrap().brief(),
        (id(5), "c1", vec!["c1"])
    );
    assert_eq!(
        c2.enter().await.unwrap().brief(),
        (id(5), "c1", vec!["c1", "c2"])
    );
    assert_eq!(
        c3.anoint("c2").await.unwrap().brief(),
        (id(6), "c2", vec!["c2", "c1"])
    );
    c2.close().await.unwrap();
    assert_eq!(
        c3.get_term().await.unwrap().brief(),
        (id(7), "c1", vec!["c1"])
    );
    c1.close().await.unwrap();
    let t = c2.get_term().await.unwrap();
    assert_eq!(t.brief(), (id(7), "", vec![]));
    assert!(t.has_timestamp);

    c3.delete().await.unwrap();
    expect_code(c1.delete().await, Code::NotFound);
    assert_eq!(c2.get_term().await.unwrap().brief(), (0, "", vec![]));
    // and a later use starts over from id 0
    assert_eq!(c1.enter().await.unwrap().brief(), (id(1), "c1", vec!["c1"]));
}

#[tokio::test]
async fn replicas_answer_identically_and_elections_are_independent() {
    let redis = RedisServer::start().await;
    let rs = replicas(&redis, &prefix("ident"), 2).await;
    let mut a = rs[0].client("alpha", "w1").await;
    let mut b = rs[1].client("alpha", "w2").await;
    a.enter().await.unwrap();
    b.enter().await.unwrap();
    let mut other = a.acting_as("beta", "w2");
    assert_eq!(other.enter().await.unwrap().brief(), (1, "w2", vec!["w2"]));

    let from_a = a.get_term().await.unwrap();
    let from_b = b.get_term().await.unwrap();
    assert_eq!(
        from_a, from_b,
        "two replicas on one Redis give the same term"
    );
    assert_eq!(from_a.brief(), (1, "w1", vec!["w1", "w2"]));

    // both elections' state is under the prefix: a term and a member set each, and their
    // buckets' memberships
    let mut conn = redis.connection().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("t-ident:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let mut expected: Vec<String> = ["alpha", "beta"]
        .into_iter()
        .flat_map(|e| {
            let k = election_keys("t-ident", e);
            // its bucket's names (what listing reads) and its history of leaders too
            let names = k.members.replace(":members", ":names");
            [k.term, k.leases, k.members, k.history, names]
        })
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(keys, expected);

    for r in rs {
        r.shutdown().await.expect("a replica stops cleanly");
    }
}

#[tokio::test]
async fn with_no_redis_configured_a_private_one_is_started_and_stopped() {
    let mut s = electiond::config::Settings::defaults();
    s.listen_addr = "127.0.0.1:0".parse().unwrap();
    s.metrics_addr = None;
    s.console_addr = None;
    assert!(s.redis_url.is_none());
    let replica = Replica::start(s).await;
    let mut c = replica.client("solo", "c1").await;
    assert_eq!(c.enter().await.unwrap().brief(), (1, "c1", vec!["c1"]));
    replica
        .shutdown()
        .await
        .expect("stops, and its private redis with it");
}

#[tokio::test]
async fn a_killed_electiond_takes_its_private_redis_with_it() {
    use tokio::io::AsyncBufReadExt;
    let port = free_port();
    let mut child = electiond_binary(port)
        .env("ELECTION_LOG_FORMAT", "text")
        .env_remove("ELECTION_REDIS_URL")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("electiond starts");
    // the log says where the private Redis listens
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let redis_port = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("redis://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                return digits.parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .expect("the private Redis is logged in time")
    .expect("its port");
    // redis-server sets its process title to "redis-server HOST:PORT"
    let pattern = format!("^redis-server 127.0.0.1:{redis_port}$");
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(running(), "the private redis-server runs");
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    wait_for(|| async { !running() }).await;
}

#[tokio::test]
async fn unchanged_operations_keep_the_timestamp() {
    let redis = RedisServer::start().await;
    let rs = replicas(&redis, &prefix("nochange"), 1).await;
    let mut c1 = rs[0].client("e", "c1").await;
    let mut c2 = c1.acting_as("e", "c2");
    c1.enter().await.unwrap();
    let before = c2.enter().await.unwrap();
    for r in [
        c1.enter().await,                         // already a candidate
        c1.anoint("c1").await,                    // already leader
        c1.promote("c1").await,                   // already leader
        c1.acting_as("e", "c9").withdraw().await, // not a candidate: no error
        c1.get_term().await,
    ] {
        assert_eq!(
            r.unwrap(),
            before,
            "an operation that changes nothing changes nothing"
        );
    }
}

#[tokio::test]
async fn create_is_idempotent_and_delete_of_unknown_is_not_found() {
    let redis = RedisServer::start().await;
    let rs = replicas(&redis, &prefix("create"), 1).await;
    let mut c = rs[0].client("made", "c1").await;
    expect_code(c.delete().await, Code::NotFound);
    c.create().await.unwrap();
    c.create().await.unwrap();
    assert_eq!(c.get_term().await.unwrap().brief(), (0, "", vec![]));
    c.delete().await.unwrap();
    expect_code(c.delete().await, Code::NotFound);
    // an election used without Create exists too
    c.enter().await.unwrap();
    c.delete().await.unwrap();
}

#[tokio::test]
async fn restore_follows_the_id_rules_and_round_trips_snapshots() {
    let redis = RedisServer::start().await;
    let rs = replicas(&redis, &prefix("restore"), 1).await;
    let mut c = rs[0].client("r", "admin").await;

    // onto a fresh election: the snapshot's id is kept
    c.restore(5, "a", &["a", "b"]).await.unwrap();
    assert_eq!(
        c.get_term().await.unwrap().brief(),
        (5, "a", vec!["a", "b"])
    );

    // a lower id with another leader: strictly above the current id
    c.restore(2, "b", &["b", "a"]).await.unwrap();
    assert_eq!(
        c.get_term().await.unwrap().brief(),
        (6, "b", vec!["b", "a"])
    );

    // same leader, lower id: the id stays
    c.restore(1, "b", &["b"]).await.unwrap();
    assert_eq!(c.get_term().await.unwrap().brief(), (6, "b", vec!["b"]));

    // restoring the current state changes nothing, not even the timestamp
    let before = c.get_term().await.unwrap();
    let snap = c.snapshot().await.unwrap();
    let term = snap.term.unwrap();
    assert_eq!(term.leader, "b");
    c.restore(term.id.unwrap().value, &term.leader, &["b"])
        .await
        .unwrap();
    assert_eq!(c.get_term().await.unwrap(), before);

    // a higher id is taken as given; an empty snapshot leaves no leader and keeps the id
    c.restore(40, "x", &["x"]).await.unwrap();
    assert_eq!(c.get_term().await.unwrap().brief(), (40, "x", vec!["x"]));
    c.restore(0, "", &[]).await.unwrap();
    assert_eq!(c.get_term().await.unwrap().brief(), (40, "", vec![]));
    // the next leader gets the next id
    assert_eq!(
        c.enter().await.unwrap().brief(),
        (41, "admin", vec!["admin"])
    );
}

#[tokio::test]
async fn bad_input_is_rejected_clearly_and_changes_nothing() {
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("bad"));
    s.max_name_bytes = 16;
    s.max_id_bytes = 8;
    s.max_candidates = 3;
    let replica = Replica::start(s).await;
    let mut c1 = replica.client("bad", "c1").await;
    c1.enter().await.unwrap();
    c1.acting_as("bad", "c2").enter().await.unwrap();
    let before = c1.get_term().await.unwrap();

    let long_name = "n".repeat(17);
    let long_id = "i".repeat(9);
    let mut no_name = c1.acting_as("", "c1");
    let mut no_client = c1.acting_as("bad", "");
    let mut long_client = c1.acting_as("bad", &long_id);
    let mut long_election = c1.acting_as(&long_name, "c1");

    let invalid = [
        ("empty name: Enter", no_name.enter().await.map(|_| ())),
        ("empty name: GetTerm", no_name.get_term().await.map(|_| ())),
        ("empty name: Create", no_name.create().await),
        ("empty name: Delete", no_name.delete().await),
        ("empty client: Enter", no_client.enter().await.map(|_| ())),
        (
            "empty client: Withdraw",
            no_client.withdraw().await.map(|_| ()),
        ),
        ("empty client: Close", no_client.close().await),
        ("empty candidate: Anoint", c1.anoint("").await.map(|_| ())),
        ("empty candidate: Promote", c1.promote("").await.map(|_| ())),
        ("empty candidate: Evict", c1.evict("").await.map(|_| ())),
        (
            "unknown candidate: Anoint",
            c1.anoint("zz").await.map(|_| ()),
        ),
        (
            "unknown candidate: Promote",
            c1.promote("zz").await.map(|_| ()),
        ),
        ("unknown candidate: Evict", c1.evict("zz").await.map(|_| ())),
        (
            "restore: leader not first",
            c1.restore(9, "c2", &["c1", "c2"]).await,
        ),
        (
            "restore: leader without candidates",
            c1.restore(9, "c1", &[]).await,
        ),
        (
            "restore: no leader with candidates",
            c1.restore(9, "", &["c1"]).await,
        ),
        (
            "restore: duplicate",
            c1.restore(9, "c1", &["c1", "c1"]).await,
        ),
        ("restore: empty id", c1.restore(9, "c1", &["c1", ""]).await),
        (
            "restore: id too large",
            c1.restore(1 << 60, "c1", &["c1"]).await,
        ),
    ];
    for (what, r) in invalid {
        let msg = expect_code(r, Code::InvalidArgument);
        assert!(!msg.is_empty(), "{what}: the message says what is wrong");
    }
    let msg = expect_code(c1.anoint("zz").await, Code::InvalidArgument);
    assert!(msg.contains("not a candidate"), "{msg}");
    let msg = expect_code(no_client.enter().await, Code::InvalidArgument);
    assert!(msg.contains("client id"), "{msg}");

    let exhausted = [
        ("long name", long_election.enter().await.map(|_| ())),
        ("long client id", long_client.enter().await.map(|_| ())),
        ("long candidate id", c1.anoint(&long_id).await.map(|_| ())),
        (
            "restore: long id",
            c1.restore(9, "c1", &["c1", &long_id]).await,
        ),
        (
            "restore: too many",
            c1.restore(9, "a", &["a", "b", "c", "d"]).await,
        ),
    ];
    for (what, r) in exhausted {
        let msg = expect_code(r, Code::ResourceExhausted);
        assert!(msg.contains("limit"), "{what}: {msg}");
    }
    // the candidate limit: a third fits, a fourth does not
    c1.acting_as("bad", "c3").enter().await.unwrap();
    let full = c1.get_term().await.unwrap();
    expect_code(
        c1.acting_as("bad", "c4").enter().await,
        Code::ResourceExhausted,
    );
    assert_eq!(c1.get_term().await.unwrap(), full);
    c1.acting_as("bad", "c3").withdraw().await.unwrap();

    // a primitive type other than Election
    let mut raw = c1.svc.clone();
    let mut h = header("bad", "c1");
    if let Some(p) = h.as_mut().and_then(|h| h.primitive_id.as_mut()) {
        p.r#type = "Map".into();
    }
    let r = raw
        .enter(
            electiond::proto::atomix::primitive::election::EnterRequest {
                header: h,
                input: None,
            },
        )
        .await;
    expect_code(r, Code::InvalidArgument);
    // no header at all
    let r = raw
        .get_term(
            electiond::proto::atomix::primitive::election::GetTermRequest {
                header: None,
                input: None,
            },
        )
        .await;
    expect_code(r, Code::InvalidArgument);

    let after = c1.get_term().await.unwrap();
    assert_eq!(
        after.brief(),
        before.brief(),
        "no rejected call changed the election"
    );
    let mut conn = redis.connection().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let k = election_keys("t-bad", "bad");
    let names = k.members.replace(":members", ":names");
    let mut expected = [k.leases, k.members, k.term, k.history, names];
    expected.sort();
    assert_eq!(keys, expected, "rejected calls created no keys");
}

/// A message with the same field numbers as `EnterRequest` but raw bytes where the schema has
/// strings, to send what a broken client could: a client id that is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawEnterRequest {
    #[prost(message, optional, tag = "1")]
    header: Option<RawHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawHeader {
    #[prost(bytes = "vec", tag = "1")]
    client_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    primitive_id: Option<RawPrimitiveId>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawPrimitiveId {
    #[prost(bytes = "vec", tag = "2")]
    name: Vec<u8>,
}

#[tokio::test]
async fn non_utf8_strings_are_invalid_argument() {
    use electiond::proto::atomix::primitive::election::EnterResponse;
    let redis = RedisServer::start().await;
    let replica = Replica::start(settings(&redis, &prefix("utf8"))).await;
    let mut grpc = tonic::client::Grpc::new(channel(replica.addr).await);
    grpc.ready().await.unwrap();
    let req = RawEnterRequest {
        header: Some(RawHeader {
            client_id: vec![0xff, 0xfe, b'x'],
            primitive_id: Some(RawPrimitiveId {
                name: b"utf8".to_vec(),
            }),
        }),
    };
    let path = http::uri::PathAndQuery::from_static(
        "/atomix.primitive.election.LeaderElectionService/Enter",
    );
    let codec = tonic_prost::ProstCodec::<RawEnterRequest, EnterResponse>::default();
    let r = grpc.unary(tonic::Request::new(req), path, codec).await;
    let msg = expect_code(r, Code::InvalidArgument);
    assert!(msg.contains("UTF-8"), "{msg}");
    let mut c = replica.client("utf8", "c1").await;
    assert_eq!(c.get_term().await.unwrap().brief(), (0, "", vec![]));
}

/// Many clients through three replicas, random operations: every answer is consistent, no
/// acknowledged Enter or Withdraw is lost, and no term id ever names two leaders.
#[tokio::test]
async fn concurrent_operations_through_replicas_lose_nothing() {
    const CLIENTS: usize = 12;
    const OPS: usize = 60;
    let redis = RedisServer::start().await;
    let rs = replicas(&redis, &prefix("conc"), 3).await;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let me = format!("w{i}");
        let mut c = rs[i % 3].client("shared", &me).await;
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let mut seen = Vec::new();
            let mut member = false;
            for _ in 0..OPS {
                let other = format!("w{}", rng.random_range(0..CLIENTS));
                let r = match rng.random_range(0..5) {
                    0 | 1 => {
                        let r = c.enter().await;
                        member = true;
                        r
                    }
                    2 => {
                        let r = c.withdraw().await;
                        member = false;
                        r
                    }
                    3 => c.anoint(&other).await,
                    _ => c.promote(&other).await,
                };
                match r {
                    Ok(t) => seen.push(t),
                    // others come and go: naming one that just left is a clean rejection
                    Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{s:?}"),
                }
            }
            (me, member, seen)
        }));
    }
    let mut expected = HashSet::new();
    let mut leader_of_id: HashMap<u64, String> = HashMap::new();
    for t in tasks {
        let (me, member, seen) = t.await.unwrap();
        if member {
            expected.insert(me.clone());
        }
        let mut last_id = 0;
        for t in &seen {
            assert_eq!(t.leader, t.candidates.first().cloned().unwrap_or_default());
            let unique: HashSet<_> = t.candidates.iter().collect();
            assert_eq!(unique.len(), t.candidates.len(), "no duplicates: {t:?}");
            assert!(
                t.id >= last_id,
                "{me} saw the id go down: {last_id} then {}",
                t.id
            );
            last_id = t.id;
            if !t.leader.is_empty() {
                let prev = leader_of_id.entry(t.id).or_insert_with(|| t.leader.clone());
                assert_eq!(prev, &t.leader, "term {} named two leaders", t.id);
            }
        }
    }
    let mut c = rs[0].client("shared", "observer").await;
    let end = c.get_term().await.unwrap();
    let got: HashSet<String> = end.candidates.iter().cloned().collect();
    assert_eq!(
        got, expected,
        "each client's last Enter/Withdraw decides its membership"
    );
}

#[tokio::test]
async fn redis_outage_gives_unavailable_fast_and_service_resumes() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let mut redis = RedisServer::start_persistent().await;
    let mut s = settings(&redis, &prefix("outage"));
    s.redis_timeout_ms = 300;
    let replica = Replica::start(s).await;
    let mut c = replica.client("o", "c1").await;
    c.enter().await.unwrap();
    let health = HealthClient::new(channel(replica.addr).await);
    let is = |want: ServingStatus| {
        let mut h = health.clone();
        async move {
            let req = HealthCheckRequest {
                service: "atomix.primitive.election.LeaderElectionService".into(),
            };
            h.check(req).await.map(|r| r.into_inner().status).ok() == Some(want as i32)
        }
    };
    wait_for(|| is(ServingStatus::Serving)).await;

    redis.stop().await;
    // a hang guard, not a speed claim: the call must come back, and with UNAVAILABLE
    let r = tokio::time::timeout(Duration::from_secs(10), c.get_term())
        .await
        .expect("a call with Redis down returns instead of hanging");
    let msg = expect_code(r, Code::Unavailable);
    assert!(
        !msg.contains("redis:"),
        "Redis error text stays in the log: {msg}"
    );
    expect_code(c.acting_as("o", "c2").enter().await, Code::Unavailable);
    wait_for(|| is(ServingStatus::NotServing)).await;

    redis.restart().await;
    wait_for(|| async { c.clone().get_term().await.is_ok() }).await;
    // the acknowledged Enter survived (the test Redis persists with fsync always), and the
    // rejected one was not applied
    assert_eq!(c.get_term().await.unwrap().brief(), (1, "c1", vec!["c1"]));
    wait_for(|| is(ServingStatus::Serving)).await;
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let redis = RedisServer::start().await;
    let replica = Replica::start(settings(&redis, &prefix("refl"))).await;
    let mut client = ServerReflectionClient::new(channel(replica.addr).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "atomix.primitive.election.LeaderElectionService",
        "atomix.primitive.PrimitiveService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}
