//! Operating it: graceful shutdown of the real binary, metrics, TLS, bearer tokens, Redis
//! AUTH, and the limits that protect a replica.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

use crate::binary::electiond_binary;
use crate::harness::*;

#[tokio::test]
async fn sigterm_ends_streams_with_unavailable_and_the_process_exits_in_time() {
    let redis = RedisServer::start().await;
    let port = free_port();
    let mut child = electiond_binary(port)
        .env("ELECTION_REDIS_URL", redis.url())
        .env("ELECTION_DRAIN_TIMEOUT_MS", "3000")
        .env("ELECTION_LOG_LEVEL", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("electiond starts");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(|| async move { tokio::net::TcpStream::connect(addr).await.is_ok() }).await;
    let mut c = Client::connect(addr, "job", "w1").await;
    c.enter().await.unwrap();
    let mut w = c.watch().await.unwrap();

    let pid = child.id().expect("pid").to_string();
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(kill.expect("kill runs").success());

    match w.try_next(Duration::from_secs(10)).await {
        Some(Err(s)) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("expected the stream to end with UNAVAILABLE, got {other:?}"),
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the process exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    // within the configured drain time (3 s), with room for a loaded machine
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "{:?}",
        signalled.elapsed()
    );
    // what was acknowledged is still there for the next replica
    let next = Replica::start(settings(&redis, "electiond")).await;
    assert_eq!(
        next.client("job", "")
            .await
            .get_term()
            .await
            .unwrap()
            .brief(),
        (1, "w1", vec!["w1"])
    );
}

#[tokio::test]
async fn metrics_move_when_calls_are_made() {
    let redis = RedisServer::start().await;
    let port = free_port();
    let mut s = settings(&redis, &prefix("metrics"));
    s.metrics_addr = Some(format!("127.0.0.1:{port}"));
    s.lease_ttl_ms = 300;
    let replica = Replica::start(s).await;
    wait_for_port(port).await;
    let before = scrape(port).await;
    assert_eq!(
        value(
            &before,
            r#"electiond_grpc_calls_total{method="Enter",code="OK"}"#
        ),
        0.0
    );

    let mut c = replica.client("m", "c1").await;
    let mut w = replica.client("m", "").await.watch().await.unwrap();
    c.enter().await.unwrap();
    c.acting_as("m", "c2").enter().await.unwrap();
    expect_code(c.anoint("nobody").await, Code::InvalidArgument);
    w.next().await;
    w.next().await;

    let after = scrape(port).await;
    assert_eq!(
        value(
            &after,
            r#"electiond_grpc_calls_total{method="Enter",code="OK"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            r#"electiond_grpc_calls_total{method="Anoint",code="INVALID_ARGUMENT"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"electiond_grpc_call_duration_seconds_count{method="Enter"}"#
        ),
        2.0
    );
    assert_eq!(value(&after, "electiond_events_streams_open"), 1.0);
    assert!(
        value(&after, "electiond_events_delivered_total") >= 2.0,
        "{after}"
    );
    assert!(
        value(&after, "electiond_events_received_total") >= 2.0,
        "{after}"
    );

    // both candidates fall silent: the sweeper expires them, and the counter says so
    wait_for(|| async move { value(&scrape(port).await, "electiond_lease_expiries_total") >= 2.0 })
        .await;
    drop(w);
    wait_for(|| async move { value(&scrape(port).await, "electiond_events_streams_open") == 0.0 })
        .await;
}

#[tokio::test]
async fn tls_clients_with_the_ca_get_in_and_plaintext_ones_do_not() {
    let redis = RedisServer::start().await;
    let dir = std::env::temp_dir().join(format!("electiond-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (key.cert.pem(), key.signing_key.serialize_pem());
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    let mut s = settings(&redis, &prefix("tls"));
    s.tls_cert = Some(dir.join("cert.pem").display().to_string());
    s.tls_key = Some(dir.join("key.pem").display().to_string());
    let replica = Replica::start(s).await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", replica.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = {
        let mut tries = 0;
        loop {
            match channel.clone().connect().await {
                Ok(ch) => break ch,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("TLS connect: {e:?}"),
            }
        }
    };
    let mut svc = electiond::proto::atomix::primitive::election::leader_election_service_client::LeaderElectionServiceClient::new(channel);
    let r = svc
        .enter(
            electiond::proto::atomix::primitive::election::EnterRequest {
                header: header("tls", "c1"),
                input: None,
            },
        )
        .await;
    assert!(r.is_ok(), "{r:?}");

    // a plaintext client cannot talk to the TLS port
    let plain = Channel::from_shared(format!("http://{}", replica.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let mut svc = electiond::proto::atomix::primitive::election::leader_election_service_client::LeaderElectionServiceClient::new(ch);
        let r = svc
            .get_term(
                electiond::proto::atomix::primitive::election::GetTermRequest {
                    header: header("tls", "c1"),
                    input: None,
                },
            )
            .await;
        assert!(r.is_err(), "plaintext call succeeded against a TLS port");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_tokens_configured_calls_need_one_and_health_stays_open() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("auth"));
    s.auth_tokens = Some("s3cret, other-token".into());
    let replica = Replica::start(s).await;
    let mut c = replica.client("a", "c1").await;
    let msg = expect_code(c.enter().await, Code::Unauthenticated);
    assert!(msg.contains("Bearer"), "{msg}");
    expect_code(c.create().await, Code::Unauthenticated);

    let ch = channel(replica.addr).await;
    let with = |token: &'static str| {
        let ch = ch.clone();
        async move {
            let mut svc = electiond::proto::atomix::primitive::election::leader_election_service_client::LeaderElectionServiceClient::with_interceptor(ch, move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
                Ok(req)
            });
            svc.enter(
                electiond::proto::atomix::primitive::election::EnterRequest {
                    header: header("a", "c1"),
                    input: None,
                },
            )
            .await
            .map(|_| ())
        }
    };
    expect_code(with("wrong").await, Code::Unauthenticated);
    with("s3cret").await.expect("a listed token is accepted");
    with("other-token")
        .await
        .expect("every listed token is accepted");

    let mut health = HealthClient::new(ch.clone());
    let r = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(r.is_ok(), "health needs no token: {r:?}");
}

#[tokio::test]
async fn redis_auth_in_the_url_is_used() {
    let redis = RedisServer::start().await;
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">app-password")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("admin-pw")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut s = settings(&redis, &prefix("rauth"));
    s.redis_url = Some(format!("redis://app:app-password@127.0.0.1:{}", redis.port));
    let good = Replica::start(s).await;
    assert_eq!(
        good.client("ra", "c1").await.enter().await.unwrap().brief(),
        (1, "c1", vec!["c1"])
    );
    let mut w = good
        .client("ra", "")
        .await
        .watch()
        .await
        .expect("pub/sub authenticates too");
    good.client("ra", "c2").await.enter().await.unwrap();
    assert_eq!(w.next().await.candidates, vec!["c1", "c2"]);

    let mut s = settings(&redis, &prefix("rauth"));
    s.redis_url = Some(format!("redis://app:wrong@127.0.0.1:{}", redis.port));
    let bad = Replica::start(s).await;
    let msg = expect_code(
        bad.client("ra", "c3").await.enter().await,
        Code::Unavailable,
    );
    assert!(
        !msg.contains("wrong") && !msg.contains("WRONGPASS"),
        "{msg}"
    );
}

#[tokio::test]
async fn limits_give_resource_exhausted() {
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("limits"));
    s.max_streams = 2;
    s.max_message_bytes = 256;
    let replica = Replica::start(s).await;
    let c = replica.client("l", "w").await;
    let a = c.clone().watch().await.unwrap();
    let _b = c.clone().watch().await.unwrap();
    let msg = expect_code(c.clone().watch().await.map(|_| ()), Code::ResourceExhausted);
    assert!(msg.contains("streams"), "{msg}");
    drop(a);
    wait_for(|| async { c.clone().watch().await.is_ok() }).await;

    // a request larger than the message limit is refused before it is decoded
    let big = "x".repeat(300);
    let msg = expect_code(
        c.acting_as(&big, "w").enter().await,
        Code::ResourceExhausted,
    );
    assert!(msg.contains("too large"), "{msg}");
}

#[tokio::test]
async fn a_call_past_its_deadline_gets_deadline_exceeded_instead_of_waiting() {
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("deadline"));
    s.redis_timeout_ms = 3000;
    let replica = Replica::start(s).await;
    let mut c = replica.client("d", "c1").await;
    c.enter().await.unwrap();
    // Redis stops answering for 2 s
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut req = tonic::Request::new(
        electiond::proto::atomix::primitive::election::GetTermRequest {
            header: header("d", "c1"),
            input: None,
        },
    );
    req.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let r = c.svc.get_term(req).await;
    // tonic's server drops the call at the deadline and answers CANCELLED
    let code = r
        .expect_err("the call cannot succeed while Redis is paused")
        .code();
    assert!(
        matches!(code, Code::Cancelled | Code::DeadlineExceeded),
        "{code:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn redis_over_tls_is_verified_against_the_configured_ca() {
    let dir = self_signed_cert("rtls");
    let port = free_port();
    let _redis = RedisServer::start_with_args(tls_args(&dir, port)).await;
    wait_for_port(port).await;

    let mut s = bare_settings(&prefix("rtls"));
    s.redis_url = Some(format!("rediss://127.0.0.1:{port}"));
    s.redis_ca_cert = Some(dir.join("cert.pem").display().to_string());
    let replica = Replica::start(s).await;
    let mut c = replica.client("t", "c1").await;
    wait_for(|| async { c.clone().get_term().await.is_ok() }).await;
    assert_eq!(c.enter().await.unwrap().brief(), (1, "c1", vec!["c1"]));
    let mut w = c.watch().await.expect("pub/sub over TLS");
    c.acting_as("t", "c2").enter().await.unwrap();
    assert_eq!(w.next().await.candidates, vec!["c1", "c2"]);

    // without the CA, the self-signed certificate is not trusted: nothing gets through
    let mut s = bare_settings(&prefix("rtls"));
    s.redis_timeout_ms = 300;
    s.redis_url = Some(format!("rediss://127.0.0.1:{port}"));
    let untrusting = Replica::start(s).await;
    expect_code(
        untrusting.client("t", "c3").await.enter().await,
        Code::Unavailable,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_wait_replicas_a_change_is_acknowledged_only_once_a_replica_has_it() {
    let primary = RedisServer::start().await;
    let mut replica_redis = RedisServer::start_replica_of(&primary).await;
    // the replica is linked once the primary counts it
    wait_for(|| async {
        let mut c = primary.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .unwrap();
        info.contains("connected_slaves:1") && info.contains("state=online")
    })
    .await;
    let mut s = settings(&primary, &prefix("wait"));
    s.redis_wait_replicas = 1;
    // room for a replica on a loaded machine to acknowledge (WAIT gets three quarters of it)
    s.redis_timeout_ms = 3000;
    let replica = Replica::start(s).await;
    let mut c = replica.client("w", "c1").await;
    c.enter().await.expect("confirmed by the replica");
    // the replica has it already when the call returns
    let mut rc = replica_redis.connection().await;
    let raw: Option<String> = redis::cmd("GET")
        .arg(term_key(&prefix("wait"), "w"))
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(raw.is_some_and(|r| r.contains("c1")));

    // without a replica, changes are not acknowledged
    replica_redis.stop().await;
    let msg = expect_code(c.acting_as("w", "c2").enter().await, Code::Unavailable);
    assert!(msg.contains("replicas"), "{msg}");
    replica_redis.restart().await;
    wait_for(|| async { c.clone().acting_as("w", "c3").enter().await.is_ok() }).await;
}
