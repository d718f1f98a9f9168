//! Sessions: one KeepAlive keeps a client a candidate in every election it stands in, and
//! once it stops, the client leaves every one of them within TTL + 1 s, each a normal change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use electiond::config::Settings;
use tonic::Code;

use crate::harness::*;

/// The lease TTL of most of these tests.
const TTL_MS: u64 = 1500;

/// Calls KeepAlive as `client` every third of the TTL until `stop`; returns when each
/// acknowledged one was answered.
fn keep_alive_loop(
    mut c: Client,
    ttl_ms: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, u32)>> {
    tokio::spawn(async move {
        let mut acks = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok((ttl, n)) = c.keep_alive().await {
                assert_eq!(ttl, ttl_ms);
                acks.push((Instant::now(), n));
            }
            tokio::time::sleep(Duration::from_millis(ttl_ms / 3)).await;
        }
        acks
    })
}

/// A worker outside this process: a shell loop that calls KeepAlive with curl every third of
/// the TTL, appending each answer to a file. Freezing it (SIGSTOP to its process group)
/// leaves its connections open and nothing calling; dropping it kills the group.
struct ShellWorker {
    child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl ShellWorker {
    async fn start(addr: SocketAddr, client_id: &str, ttl_ms: u64) -> Self {
        use prost::Message;
        let dir = std::env::temp_dir().join(format!(
            "electiond-shell-worker-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let request = electiond::proto::session::KeepAliveRequest {
            client_id: client_id.to_owned(),
        }
        .encode_to_vec();
        // one gRPC message: uncompressed, its length, the bytes
        let mut body = vec![0u8];
        body.extend_from_slice(&(request.len() as u32).to_be_bytes());
        body.extend_from_slice(&request);
        std::fs::write(dir.join("request"), body).expect("request file");
        let script = format!(
            "while :; do curl -sS --http2-prior-knowledge -m 1 -X POST \
               -H 'content-type: application/grpc' -H 'te: trailers' \
               --data-binary @request \
               http://{addr}/electiond.session.v1.SessionService/KeepAlive >> answers
             sleep {}; done",
            ttl_ms as f64 / 3000.0
        );
        let child = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sh runs");
        ShellWorker { child, dir }
    }

    /// The answers so far, in order: each one `(ttl_ms, elections)`.
    fn answers(&self) -> Vec<(u64, u32)> {
        use prost::Message;
        let bytes = std::fs::read(self.dir.join("answers")).unwrap_or_default();
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while rest.len() >= 5 {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            if rest.len() < 5 + len {
                break;
            }
            let a = electiond::proto::session::KeepAliveResponse::decode(&rest[5..5 + len])
                .expect("a KeepAliveResponse");
            out.push((a.ttl_ms, a.elections));
            rest = &rest[5 + len..];
        }
        out
    }

    fn signal_group(&self, sig: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([sig, "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Drop for ShellWorker {
    fn drop(&mut self) {
        // SIGKILL ends stopped processes too
        self.signal_group("-KILL");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How the worker keeps its session, and how it stops keeping it.
enum Worker {
    /// KeepAlive from this process; stops calling when told.
    Quits(
        Arc<AtomicBool>,
        tokio::task::JoinHandle<Vec<(Instant, u32)>>,
    ),
    /// The shell loop of [`ShellWorker`]; is frozen.
    Freezes(ShellWorker),
}

impl Worker {
    /// Stops the worker's KeepAlives; returns the latest instant at which its last one can
    /// have been sent, and the elections that last answer counted. A frozen worker stays
    /// frozen until dropped.
    async fn stop(&mut self) -> (Instant, u32) {
        match self {
            Worker::Quits(stop, task) => {
                stop.store(true, Ordering::Relaxed);
                let acks = task.await.expect("keep-alive task");
                *acks.last().expect("acknowledged KeepAlives")
            }
            Worker::Freezes(shell) => {
                shell.signal_group("-STOP");
                let frozen = Instant::now();
                let answers = shell.answers();
                assert!(
                    answers.len() >= 6,
                    "three TTLs of KeepAlives answered: {answers:?}"
                );
                let (_, count) = *answers.last().expect("acknowledged KeepAlives");
                (frozen, count)
            }
        }
    }
}

/// `n` elections named `<stem>-<i>`, each with `leader` first and `standby` second, entered
/// through `via`.
async fn elections(via: &Client, stem: &str, n: usize, leader: &str, standby: &str) -> Vec<String> {
    use futures::StreamExt;
    let names: Vec<String> = (0..n).map(|i| format!("{stem}-{i}")).collect();
    let entered: Vec<T> = futures::stream::iter(names.iter().map(|e| {
        let (mut l, mut s) = (via.acting_as(e, leader), via.acting_as(e, standby));
        async move {
            l.enter().await.expect("leader enters");
            s.enter().await.expect("standby enters")
        }
    }))
    .buffered(32)
    .collect()
    .await;
    for t in entered {
        assert_eq!(t.leader, leader);
    }
    names
}

/// Keeps `leader` and `standby` of `n` elections alive by KeepAlive alone for three TTLs (the
/// leader's through `b`, the elections entered and read through `a`), then stops the leader's
/// (or, when `frozen`, freezes the process that sends them, with SIGSTOP):
/// within TTL + 1 s every election has the standby as leader, under the next id, through one
/// event each, and no read started after the leader's lease ended shows it. `meanwhile` runs
/// while the sessions alone keep everyone.
async fn a_session_keeps_every_election_then_ends_them_all(
    a: SocketAddr,
    b: SocketAddr,
    n: usize,
    ttl_ms: u64,
    frozen: bool,
    meanwhile: impl std::future::Future<Output = ()>,
) {
    // the sessions run from before the elections are entered: entering hundreds takes longer
    // than a TTL
    let mut worker = if frozen {
        Worker::Freezes(ShellWorker::start(b, "worker", ttl_ms).await)
    } else {
        let stop = Arc::new(AtomicBool::new(false));
        let task = keep_alive_loop(Client::connect(b, "", "worker").await, ttl_ms, stop.clone());
        Worker::Quits(stop, task)
    };
    let stop_standby = Arc::new(AtomicBool::new(false));
    let standby = keep_alive_loop(
        Client::connect(a, "", "standby").await,
        ttl_ms,
        stop_standby.clone(),
    );
    let via_a = Client::connect(a, "", "").await;
    let names = elections(&via_a, "shard", n, "worker", "standby").await;
    let first: HashMap<String, T> = {
        let mut m = HashMap::new();
        for e in &names {
            m.insert(
                e.clone(),
                via_a.acting_as(e, "").get_term().await.expect("read"),
            );
        }
        m
    };
    // a watcher on each election, on the other replica
    let events: Arc<Mutex<HashMap<String, Vec<T>>>> = Arc::default();
    let mut watchers = Vec::new();
    for e in &names {
        let mut w = Client::connect(b, e, "")
            .await
            .watch()
            .await
            .expect("watch");
        let (events, e) = (events.clone(), e.clone());
        watchers.push(tokio::spawn(async move {
            while let Some(Ok(t)) = w.try_next(Duration::from_secs(60)).await {
                events.lock().unwrap().entry(e.clone()).or_default().push(t);
            }
        }));
    }

    // three TTLs of nothing but KeepAlive: everyone stays, nothing changes, nothing is sent
    let quiet = tokio::time::sleep(Duration::from_millis(3 * ttl_ms));
    meanwhile.await;
    quiet.await;
    for e in &names {
        let t = via_a.acting_as(e, "").get_term().await.expect("read");
        assert_eq!(
            t, first[e],
            "{e} changed while its candidates kept their session"
        );
    }
    assert!(
        events.lock().unwrap().values().all(Vec::is_empty),
        "events while nothing changed"
    );

    let (last_ack, count) = worker.stop().await;
    assert_eq!(count as usize, n, "the session answered for every election");
    let lease_end = last_ack + Duration::from_millis(ttl_ms);
    let deadline = lease_end + Duration::from_secs(1);
    // reads meanwhile, through both replicas: none started after the lease ended shows it
    let mut left: Vec<&String> = names.iter().collect();
    let mut new_ids: HashMap<String, u64> = HashMap::new();
    let mut round = 0;
    let (via_a, via_b) = (
        Client::connect(a, "", "").await,
        Client::connect(b, "", "").await,
    );
    while !left.is_empty() {
        round += 1;
        assert!(
            Instant::now() < deadline,
            "{} elections still led by the worker",
            left.len()
        );
        let via = if round % 2 == 0 { &via_a } else { &via_b };
        // every remaining election read at once, so that a round takes a few milliseconds
        let reads = futures::future::join_all(left.iter().map(|e| {
            let mut c = via.acting_as(e, "");
            async move {
                let started = Instant::now();
                (started, c.get_term().await.expect("read"))
            }
        }))
        .await;
        let mut still = Vec::new();
        for (e, (started, t)) in left.into_iter().zip(reads) {
            if t.candidates.iter().any(|c| c == "worker") {
                assert!(
                    started < lease_end + Duration::from_millis(50),
                    "{e} showed the worker {:?} after its lease ended",
                    started - lease_end
                );
                still.push(e);
            } else {
                // the next id: one above, or after a failover the new master's first
                assert!(t.id > first[e].id, "{e}: {t:?}");
                assert_eq!(t.candidates, vec!["standby".to_owned()], "{e}");
                new_ids.insert((*e).clone(), t.id);
            }
        }
        left = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_gone = Instant::now();
    eprintln!(
        "{n} elections: all led by the standby {:?} after the worker's lease ended",
        all_gone.saturating_duration_since(lease_end)
    );
    // one event each, for that change
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_standby.store(true, Ordering::Relaxed);
    standby.await.expect("keep-alive task");
    for w in watchers {
        w.abort();
    }
    let events = events.lock().unwrap();
    for e in &names {
        let seen: Vec<(u64, &str)> = events
            .get(e)
            .map(|v| v.iter().map(|t| (t.id, t.leader.as_str())).collect())
            .unwrap_or_default();
        assert_eq!(seen, vec![(new_ids[e], "standby")], "{e}: its events");
    }
}

fn with_sessions(s: &mut Settings) {
    s.lease_ttl_ms = TTL_MS;
}

/// A redis-server of its own and two replicas on it with the test TTL.
async fn two_replicas_on_a_redis(name: &str) -> (RedisServer, Vec<Replica>) {
    let redis = RedisServer::start().await;
    let p = prefix(name);
    let replicas = two_replicas(|| {
        let mut s = settings(&redis, &p);
        with_sessions(&mut s);
        s
    })
    .await;
    (redis, replicas)
}

/// Two replicas on one store, each with the settings `make` gives.
async fn two_replicas(make: impl Fn() -> Settings) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(Replica::start(make()).await);
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_a_client_in_500_elections_and_ends_with_it() {
    let (_redis, replicas) = two_replicas_on_a_redis("sessions").await;
    a_session_keeps_every_election_then_ends_them_all(
        replicas[0].addr,
        replicas[1].addr,
        500,
        TTL_MS,
        false,
        async {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_loses_every_election_within_ttl_and_a_second() {
    let (_redis, replicas) = two_replicas_on_a_redis("sessions-frozen").await;
    a_session_keeps_every_election_then_ends_them_all(
        replicas[0].addr,
        replicas[1].addr,
        100,
        TTL_MS,
        true,
        async {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_session_keeps_elections_on_every_master() {
    let cluster = RedisCluster::start(3).await;
    let p = prefix("sessions-cluster");
    let replicas = two_replicas(|| {
        let mut s = cluster_settings(&cluster, &p);
        with_sessions(&mut s);
        s.redis_timeout_ms = 1000;
        s
    })
    .await;
    a_session_keeps_every_election_then_ends_them_all(
        replicas[0].addr,
        replicas[1].addr,
        300,
        TTL_MS,
        false,
        async {},
    )
    .await;
}

#[tokio::test]
async fn a_client_that_stands_nowhere_is_told_so_and_leaves_nothing_behind() {
    let redis = RedisServer::start().await;
    let p = prefix("sessions-none");
    let mut s = settings(&redis, &p);
    with_sessions(&mut s);
    let replica = Replica::start(s).await;
    let mut c = replica.client("", "nobody").await;
    assert_eq!(c.keep_alive().await.expect("KeepAlive"), (TTL_MS, 0));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut redis.connection().await)
        .await
        .expect("keys");
    assert!(keys.is_empty(), "left behind: {keys:?}");

    // one election: then the session lives in that bucket only, and goes with the candidacy
    let mut e = replica.client("solo", "somebody").await;
    e.enter().await.expect("enter");
    assert_eq!(
        e.acting_as("", "somebody")
            .keep_alive()
            .await
            .expect("KeepAlive")
            .1,
        1
    );
    let mut conn = redis.connection().await;
    // (the sessions of each bucket, and the buckets whose lease index names a session end)
    let mut sessions = async || {
        let mut held = Vec::new();
        for key in redis::cmd("KEYS")
            .arg(format!("{p}:*:session-ends"))
            .query_async::<Vec<String>>(&mut conn)
            .await
            .expect("keys")
        {
            let clients: Vec<String> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .expect("zrange");
            held.push((key, clients));
        }
        let mut indexed = Vec::new();
        for key in redis::cmd("KEYS")
            .arg(format!("{p}:*:lease-index"))
            .query_async::<Vec<String>>(&mut conn)
            .await
            .expect("keys")
        {
            let end: Option<f64> = redis::cmd("ZSCORE")
                .arg(&key)
                .arg("")
                .query_async(&mut conn)
                .await
                .expect("zscore");
            if end.is_some() {
                indexed.push(key);
            }
        }
        (held, indexed)
    };
    let (held, indexed) = sessions().await;
    assert_eq!(held.len(), 1, "one bucket's session: {held:?}");
    assert_eq!(held[0].1, vec!["somebody".to_owned()]);
    assert_eq!(indexed.len(), 1, "its end is in that bucket's index");
    e.withdraw().await.expect("withdraw");
    let (held, indexed) = sessions().await;
    assert!(held.is_empty(), "sessions left: {held:?}");
    assert!(indexed.is_empty(), "session ends left in {indexed:?}");
    assert_eq!(
        e.acting_as("", "somebody")
            .keep_alive()
            .await
            .expect("KeepAlive")
            .1,
        0
    );
}

#[tokio::test]
async fn keep_alive_refuses_a_bad_client_id() {
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("sessions-bad"));
    s.max_id_bytes = 16;
    let replica = Replica::start(s).await;
    let mut c = replica.client("", "").await;
    expect_code(c.keep_alive().await, Code::InvalidArgument);
    let mut long = c.acting_as("", &"x".repeat(17));
    let msg = expect_code(long.keep_alive().await, Code::InvalidArgument);
    assert!(msg.contains("over the limit"), "{msg}");
}

#[tokio::test]
async fn a_lapsed_session_does_not_bring_back_what_ran_out() {
    // the worker's own lease and its session both end; a late KeepAlive starts a new session
    // but the candidacies that ran out meanwhile are gone, each a normal change
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("sessions-late"));
    with_sessions(&mut s);
    let replica = Replica::start(s).await;
    let via = replica.client("", "").await;
    let names = elections(&via, "late", 20, "worker", "standby").await;
    let stop = Arc::new(AtomicBool::new(false));
    let standby = keep_alive_loop(via.acting_as("", "standby"), TTL_MS, stop.clone());
    let mut worker = via.acting_as("", "worker");
    worker.keep_alive().await.expect("KeepAlive");
    let mut w = via.acting_as(&names[0], "").watch().await.expect("watch");
    tokio::time::sleep(Duration::from_millis(TTL_MS + 300)).await;
    let (_, n) = worker.keep_alive().await.expect("late KeepAlive");
    assert_eq!(n, 0, "nothing brought back");
    for e in &names {
        let t = via.acting_as(e, "").get_term().await.expect("read");
        assert_eq!(t.leader, "standby", "{e}");
    }
    assert_eq!(w.next().await.leader, "standby");
    stop.store(true, Ordering::Relaxed);
    standby.await.expect("keep-alive task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidacy_from_before_sessions_is_held_and_ends_with_the_session() {
    // a candidacy entered by a build without sessions has no membership; once its client's
    // session holds it, the session's end must still end it, or it would lead forever. And a
    // membership left by a candidacy an older build removed goes with the session, and the
    // first build's sessions (a hash) are no obstacle
    let redis = RedisServer::start().await;
    let p = prefix("sessions-older");
    let mut s = settings(&redis, &p);
    with_sessions(&mut s);
    let replica = Replica::start(s).await;
    let via = replica.client("", "").await;
    elections(&via, "older", 300, "worker", "standby").await;
    // one election whose bucket holds others of the worker (so a session runs there) loses
    // its membership, as if entered before sessions
    let mut conn = redis.connection().await;
    let mut older = None;
    for key in redis::cmd("KEYS")
        .arg(format!("{p}:*:members"))
        .query_async::<Vec<String>>(&mut conn)
        .await
        .expect("keys")
    {
        let members: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(&key)
            .arg("[worker\n")
            .arg("(worker\x0b")
            .query_async(&mut conn)
            .await
            .expect("members");
        if members.len() >= 2 {
            let _: i64 = redis::cmd("ZREM")
                .arg(&key)
                .arg(&members[0])
                .query_async(&mut conn)
                .await
                .expect("zrem");
            older = Some(members[0]["worker\n".len()..].to_owned());
            // the first build with sessions kept them in a hash, which this one leaves alone
            let old_sessions = key.replace(":members", ":sessions");
            let _: i64 = redis::cmd("HSET")
                .arg(&old_sessions)
                .arg("worker")
                .arg(1)
                .query_async(&mut conn)
                .await
                .expect("hset");
            // and a membership that outlived its candidacy, as one an older build removed
            let _: i64 = redis::cmd("ZADD")
                .arg(&key)
                .arg(0)
                .arg("worker\nno-longer-there")
                .query_async(&mut conn)
                .await
                .expect("zadd");
            break;
        }
    }
    let older = older.expect("a bucket with two of the worker's elections");
    let stop_worker = Arc::new(AtomicBool::new(false));
    let stop_standby = Arc::new(AtomicBool::new(false));
    let worker = keep_alive_loop(via.acting_as("", "worker"), TTL_MS, stop_worker.clone());
    let standby = keep_alive_loop(via.acting_as("", "standby"), TTL_MS, stop_standby.clone());
    // two TTLs: its own lease ran out long ago; the session holds it
    tokio::time::sleep(Duration::from_millis(2 * TTL_MS)).await;
    let t = via.acting_as(&older, "").get_term().await.expect("read");
    assert_eq!(t.leader, "worker", "held by the session");
    // the worker stops: it goes from this election too, within TTL + 1 s
    stop_worker.store(true, Ordering::Relaxed);
    let last = worker
        .await
        .expect("keep-alive task")
        .last()
        .expect("acked")
        .0;
    tokio::time::sleep_until((last + Duration::from_millis(TTL_MS + 1000)).into()).await;
    let t = via.acting_as(&older, "").get_term().await.expect("read");
    assert_eq!(t.leader, "standby", "{older}: ended with the session");
    // it stands nowhere now, and is told so
    let (_, n) = via
        .acting_as("", "worker")
        .keep_alive()
        .await
        .expect("KeepAlive");
    assert_eq!(n, 0, "no election left, none made up");
    stop_standby.store(true, Ordering::Relaxed);
    standby.await.expect("keep-alive task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_live_on_across_a_sentinel_failover() {
    use crate::sentinel::{
        every_sentinel_knows_the_replica, fail_over_to, sentinel_settings, sentinels,
    };
    let primary = RedisServer::start().await;
    let replica_redis = RedisServer::start_replica_of(&primary).await;
    let (_sentinels, ports, dir) = sentinels(&primary).await;
    every_sentinel_knows_the_replica(&ports).await;
    // the replica in sync first (its first sync waits a few seconds), or the failover below
    // would promote a replica without the elections
    wait_for(|| async {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut replica_redis.connection().await)
            .await
            .unwrap_or_default();
        info.contains("master_link_status:up")
    })
    .await;
    let p = prefix("sessions-sentinel");
    let replicas = two_replicas(|| {
        let mut s = sentinel_settings(&p, &ports, "redis", "");
        // long enough for the sessions to outlast the failover's unavailability
        s.lease_ttl_ms = 6000;
        s.redis_timeout_ms = 1000;
        s
    })
    .await;
    // the sessions (and everything else) move to the promoted replica with the data
    let failover = fail_over_to(&ports, &replica_redis);
    a_session_keeps_every_election_then_ends_them_all(
        replicas[0].addr,
        replicas[1].addr,
        100,
        6000,
        false,
        failover,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_crate_worker_in_many_elections_keeps_them_with_one_loop_and_stops_first() {
    use electiond_client::Client as Crate;
    const N: usize = 20;
    let redis = RedisServer::start().await;
    let p = prefix("sessions-crate");
    let metrics_port = free_port();
    let mut s = settings(&redis, &p);
    with_sessions(&mut s);
    s.metrics_addr = Some(format!("127.0.0.1:{metrics_port}"));
    let a = Replica::start(s).await;
    let mut s = settings(&redis, &p);
    with_sessions(&mut s);
    let b = Replica::start(s).await;

    // the worker campaigns through A only; standbys behind it, kept alive through B
    let worker = Crate::builder([format!("http://{}", a.addr)])
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let standby = keep_alive_loop(
        Client::connect(b.addr, "", "standby").await,
        TTL_MS,
        stop.clone(),
    );
    let mut leaderships = Vec::new();
    for i in 0..N {
        let name = format!("crate-{i}");
        let l = worker.campaign(&name, "worker").await.expect("leads");
        Client::connect(b.addr, &name, "standby")
            .await
            .enter()
            .await
            .expect("standby enters");
        leaderships.push((name, l));
    }
    // a second worker waits to lead every election, behind the standby: waiting, too, is
    // kept by its session alone
    let waiter = Crate::builder([format!("http://{}", a.addr)])
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let waiting: Vec<_> = leaderships
        .iter()
        .map(|(name, _)| {
            let (waiter, name) = (waiter.clone(), name.clone());
            tokio::spawn(async move { waiter.campaign(&name, "waiting").await })
        })
        .collect();
    for (name, _) in &leaderships {
        wait_for(|| async {
            Client::connect(b.addr, name, "")
                .await
                .get_term()
                .await
                .is_ok_and(|t| t.candidates == ["worker", "standby", "waiting"])
        })
        .await;
    }

    // three TTLs: every leadership holds, and every waiting campaign stays, by one KeepAlive
    // loop per worker, with no GetTerm per election
    wait_for_port(metrics_port).await;
    let calls = |text: &str, method: &str| {
        value(
            text,
            &format!("electiond_grpc_calls_total{{method=\"{method}\",code=\"OK\"}}"),
        )
    };
    let before = scrape(metrics_port).await;
    tokio::time::sleep(Duration::from_millis(3 * TTL_MS)).await;
    let after = scrape(metrics_port).await;
    assert!(
        leaderships.iter().all(|(_, l)| !l.is_lost()),
        "all still lead"
    );
    let keep_alives = calls(&after, "KeepAlive") - calls(&before, "KeepAlive");
    let refreshes = calls(&after, "GetTerm") - calls(&before, "GetTerm");
    eprintln!("over three TTLs: {keep_alives} KeepAlive, {refreshes} GetTerm");
    assert!(
        (12.0..=40.0).contains(&keep_alives),
        "two loops' KeepAlives: {keep_alives}"
    );
    assert_eq!(refreshes, 0.0, "no election refreshed on its own");
    assert!(waiting.iter().all(|w| !w.is_finished()), "all still wait");

    // A goes away: the worker's KeepAlives fail; each leadership ends on its own deadline,
    // before the service (watched through B) hands the election to the standby
    let mut handovers = Vec::new();
    for (name, _) in &leaderships {
        let mut w = Client::connect(b.addr, name, "")
            .await
            .watch()
            .await
            .expect("watch");
        handovers.push(tokio::spawn(async move {
            w.until_matching(|t| t.leader == "standby").await;
            Instant::now()
        }));
    }
    a.shutdown().await.expect("A stops");
    let lost: Vec<Instant> = futures::future::join_all(leaderships.iter().map(|(_, l)| async {
        l.lost().await;
        Instant::now()
    }))
    .await;
    for (((name, _), lost), handover) in leaderships.iter().zip(lost).zip(handovers) {
        let handed_over = handover.await.expect("the standby leads");
        assert!(
            lost < handed_over,
            "{name}: the leadership ended {:?} after the service gave the place away",
            lost - handed_over
        );
    }
    stop.store(true, Ordering::Relaxed);
    standby.await.expect("keep-alive task");
    for w in waiting {
        w.abort();
    }
}

#[tokio::test]
async fn with_no_sweeper_every_call_ends_what_ran_out_first() {
    use electiond::election::ElectionName;
    use electiond::store::Op;
    const TTL: u64 = 400;
    let redis = RedisServer::start().await;
    let store = bare_store(&redis, &prefix("sessions-bare"), TTL, 4);
    let worker = member("worker");
    let names: Vec<ElectionName> = (0..40).map(|i| election(&format!("bare-{i}"))).collect();
    let candidates = async |names: &[ElectionName]| {
        let mut n = 0;
        for e in names {
            n += store
                .apply(e, None, Op::GetTerm)
                .await
                .expect("read")
                .candidates
                .len();
        }
        n
    };

    // candidacies whose own lease ran out before the client's first KeepAlive: the new
    // session does not take them up; they are gone, whatever is read first
    for e in &names {
        store
            .apply(e, Some(&worker), Op::Enter)
            .await
            .expect("enter");
    }
    tokio::time::sleep(Duration::from_millis(TTL + 100)).await;
    assert_eq!(store.keep_alive(&worker).await.expect("KeepAlive"), 0);
    assert_eq!(
        candidates(&names).await,
        0,
        "a session brought candidacies back"
    );

    // held by the session alone for three TTLs, then the session runs out: the first call on
    // each bucket ends it, so no read shows the worker
    for e in &names {
        store
            .apply(e, Some(&worker), Op::Enter)
            .await
            .expect("enter");
    }
    for _ in 0..9 {
        assert_eq!(store.keep_alive(&worker).await.expect("KeepAlive"), 40);
        tokio::time::sleep(Duration::from_millis(TTL / 3)).await;
    }
    assert_eq!(
        candidates(&names).await,
        40,
        "the session held every candidacy"
    );
    tokio::time::sleep(Duration::from_millis(TTL + 50)).await;
    assert_eq!(
        candidates(&names).await,
        0,
        "a read showed a candidacy its session ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_calling_the_sweepers_end_a_session_in_time() {
    // the worker alone stands in its elections; once its KeepAlives stop nobody calls at all,
    // and the sweepers, through the session ends in the lease indexes, end every candidacy
    let redis = RedisServer::start().await;
    let mut s = settings(&redis, &prefix("sessions-swept"));
    with_sessions(&mut s);
    let replica = Replica::start(s).await;
    let via = replica.client("", "").await;
    let names: Vec<String> = (0..50).map(|i| format!("alone-{i}")).collect();
    let mut worker = via.acting_as("", "worker");
    for e in &names {
        via.acting_as(e, "worker").enter().await.expect("enter");
    }
    let mut watches = Vec::new();
    for e in &names {
        watches.push(via.acting_as(e, "").watch().await.expect("watch"));
    }
    let mut last_ack = Instant::now();
    for _ in 0..9 {
        last_ack = Instant::now();
        assert_eq!(worker.keep_alive().await.expect("KeepAlive").1, 50);
        tokio::time::sleep(Duration::from_millis(TTL_MS / 3)).await;
    }
    let deadline = last_ack + Duration::from_millis(TTL_MS + 1000);
    for (e, mut w) in names.iter().zip(watches) {
        let t = w.next().await;
        let at = Instant::now();
        assert!(t.candidates.is_empty(), "{e}: {t:?}");
        assert!(
            at <= deadline,
            "{e} emptied {:?} after TTL + 1 s",
            at - deadline
        );
        assert!(
            at >= last_ack + Duration::from_millis(TTL_MS),
            "{e} emptied before the lease ended"
        );
    }
}
