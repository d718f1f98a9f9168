//! The docker-compose deployment, run for real: a Docker engine, the images built, every
//! container started from the repository's own files, and every call made through the port the
//! balancer publishes on 127.0.0.1. Not part of `cargo test` (it needs a Docker engine and
//! about ten minutes); run it with `cargo test --test deploy` (see the README).

#[allow(dead_code)]
#[path = "../it/harness.rs"]
mod harness;
mod load;
mod stack;

use std::time::{Duration, Instant};

use tonic::Code;

use harness::{expect_code, Client};
use load::{client, Tally, Writers};
use stack::Stack;

/// The two deployments each take the machine's cores to build and run: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn prepare() -> tokio::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().await;
    stack::engine();
    stack::images();
    guard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_deployment_serves_through_faults() {
    let _one = prepare().await;

    // the balancer's configuration is valid for the nginx the file names
    let checked = stack::nginx_config_test();
    assert!(checked.contains("test is successful"), "{checked}");

    let stack = Stack::up("electiond-deploy-test", &["docker-compose.yml"]);
    let took = stack.serving(Duration::from_secs(60)).await;
    eprintln!("serving through the balancer {took:.1?} after `up` returned");

    every_call(&stack).await;
    events_through_the_balancer(&stack).await;
    metrics_from_inside(&stack);
    seen_from_the_cli_and_the_console(&stack).await;
    a_replica_stopped_under_load(&stack).await;
    redis_killed_under_load(&stack).await;
    balancer_restarted_while_a_replica_is_down(&stack).await;
}

/// Every call of both services, and health, through the balancer.
async fn every_call(stack: &Stack) {
    let mut c1 = client(stack.addr, "deploy", "c1", CALL_TIMEOUT).await;
    let mut c2 = c1.acting_as("deploy", "c2");
    c1.create().await.expect("Create");
    assert_eq!(
        c1.get_term().await.expect("GetTerm").brief(),
        (0, "", vec![])
    );
    assert_eq!(
        c1.enter().await.expect("Enter").brief(),
        (1, "c1", vec!["c1"])
    );
    assert_eq!(
        c2.enter().await.expect("Enter").brief(),
        (1, "c1", vec!["c1", "c2"])
    );
    assert_eq!(
        c1.promote("c2").await.expect("Promote").brief(),
        (2, "c2", vec!["c2", "c1"])
    );
    assert_eq!(
        c1.anoint("c1").await.expect("Anoint").brief(),
        (3, "c1", vec!["c1", "c2"])
    );
    let msg = expect_code(c1.evict("nobody").await, Code::InvalidArgument);
    assert!(msg.contains("not a candidate"), "{msg}");
    assert_eq!(
        c1.evict("c1").await.expect("Evict").brief(),
        (4, "c2", vec!["c2"])
    );
    let snapshot = c1.snapshot().await.expect("Snapshot");
    assert_eq!(
        snapshot.term.as_ref().map(|t| t.leader.as_str()),
        Some("c2")
    );
    c1.restore(10, "c1", &["c1", "c2"]).await.expect("Restore");
    assert_eq!(
        c2.get_term().await.expect("GetTerm").brief(),
        (10, "c1", vec!["c1", "c2"])
    );
    assert_eq!(
        c1.withdraw().await.expect("Withdraw").brief(),
        (11, "c2", vec!["c2"])
    );
    c2.close().await.expect("Close");
    assert_eq!(
        c2.get_term().await.expect("GetTerm").brief(),
        (11, "", vec![])
    );
    c1.delete().await.expect("Delete");
    expect_code(c1.delete().await, Code::NotFound);
    assert_eq!(c1.get_term().await.expect("GetTerm").id, 0);
}

/// Watchers on every replica (the balancer spreads them) see a change made through it.
async fn events_through_the_balancer(stack: &Stack) {
    let mut watches = Vec::new();
    for i in 0..6 {
        let mut w = client(stack.addr, "watched", &format!("w{i}"), CALL_TIMEOUT).await;
        watches.push(w.watch().await.expect("Events through the balancer"));
    }
    let mut writer = client(stack.addr, "watched", "leader", CALL_TIMEOUT).await;
    let entered = Instant::now();
    let term = writer.enter().await.expect("Enter");
    let mut slowest = Duration::ZERO;
    for w in &mut watches {
        assert_eq!(w.next().await.brief(), term.brief());
        slowest = slowest.max(entered.elapsed());
    }
    eprintln!("an Enter reached 6 watchers through the balancer within {slowest:.1?}");
}

/// The runtime image can read its own metrics, and has electionctl.
fn metrics_from_inside(stack: &Stack) {
    let line = stack.exec(
        "electiond-1",
        &[
            "electionctl",
            "--endpoints",
            "lb:5678",
            "enter",
            "from-inside",
            "--id",
            "ops",
        ],
    );
    assert!(
        line.starts_with(r#"{"id":1,"leader":"ops","candidates":["ops"]"#),
        "{line}"
    );
    let calls = stack.metric("electiond-1", "electiond_grpc_calls_total");
    let streams = stack.metric("electiond-1", "electiond_events_streams_open");
    assert!(calls > 0.0, "electiond-1 counted no calls");
    eprintln!("electiond-1: {calls} calls, {streams} open streams (metrics read from inside)");
}

/// What the on-call engineer asks, answered by `electionctl` inside a container and by the
/// console through the balancer: which elections exist, who leads each, and why it changed;
/// and the console's live feed passes the balancer.
async fn seen_from_the_cli_and_the_console(stack: &Stack) {
    let mut a = client(stack.addr, "nightly-report", "host-a", CALL_TIMEOUT).await;
    a.enter().await.expect("Enter");
    a.acting_as("nightly-report", "host-b")
        .enter()
        .await
        .expect("Enter");
    let ctl = |args: &[&str]| {
        let mut cmd = vec!["electionctl", "--endpoints", "lb:5678"];
        cmd.extend_from_slice(args);
        stack.exec("electiond-1", &cmd)
    };
    let listed = ctl(&["ls", "--prefix", "nightly"]);
    assert!(
        listed.starts_with(
            r#"{"name":"nightly-report","id":1,"leader":"host-a","candidates":2,"timestamp":""#
        ),
        "{listed}"
    );
    let table = ctl(&["ls", "--output", "table"]);
    assert!(table.starts_with("NAME "), "{table}");

    let http = reqwest::Client::new();
    let console = format!("http://{}", stack.console);
    let page = http.get(&console).send().await.expect("the console page");
    assert!(page.status().is_success());
    // the live feed: subscribed, then a change made through gRPC arrives through nginx
    let mut feed = http
        .post(format!("{console}/api/watch"))
        .json(&serde_json::json!({ "names": ["nightly-report"] }))
        .send()
        .await
        .expect("watch");
    assert!(feed.status().is_success(), "{}", feed.status());
    let mut seen = String::new();
    while !seen.contains("event: ready") {
        let chunk = tokio::time::timeout(CALL_TIMEOUT, feed.chunk())
            .await
            .expect("ready in time")
            .expect("stream")
            .expect("open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let anointed = Instant::now();
    a.anoint("host-b").await.expect("Anoint");
    while !seen.contains("\"leader\":\"host-b\"") {
        let chunk = tokio::time::timeout(CALL_TIMEOUT, feed.chunk())
            .await
            .expect("the change in time")
            .expect("stream")
            .expect("open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    eprintln!(
        "an Anoint reached the console's feed through the balancer in {:.1?}",
        anointed.elapsed()
    );
    let detail: serde_json::Value = http
        .get(format!("{console}/api/election?name=nightly-report"))
        .send()
        .await
        .expect("election")
        .json()
        .await
        .expect("json");
    assert_eq!(detail["leader"], "host-b");
    assert_eq!(detail["history"][0]["cause"], "anoint");
    let history = ctl(&["history", "nightly-report"]);
    let first = history.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(r#"{"id":2,"leader":"host-b","timestamp":""#)
            && first.ends_with(r#""cause":"anoint"}"#),
        "{history}"
    );
}

/// A replica stopped and started again while writers and readers run: every unary call
/// succeeds, and the stopped replica's streams end with UNAVAILABLE.
async fn a_replica_stopped_under_load(stack: &Stack) {
    let mut watches = Vec::new();
    for i in 0..9 {
        let mut w = client(stack.addr, "drained", &format!("w{i}"), CALL_TIMEOUT).await;
        watches.push(w.watch().await.expect("Events"));
    }
    let writers = Writers::start(stack.addr, "replica-stop", 8, CALL_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopping = Instant::now();
    stack.compose(&["stop", "electiond-2"]);
    eprintln!("electiond-2 stopped in {:.1?}", stopping.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.compose(&["start", "electiond-2"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tallies = writers.stop().await;
    let all = Tally::merge(&tallies);
    eprintln!(
        "replica stop/start under load: {} calls acknowledged, failures {:?}, slowest {:.0?}",
        all.ok, all.failed, all.slowest
    );
    assert_eq!(
        all.failures(),
        0,
        "calls failed: {:?} {:?}",
        all.failed,
        all.samples
    );
    assert!(all.ok > 100, "the load ran ({} calls)", all.ok);

    // the streams electiond-2 served were ended, with UNAVAILABLE; the others stay open
    let mut ended = 0;
    for w in &mut watches {
        if let Some(Err(status)) = w.try_next(Duration::from_millis(200)).await {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            ended += 1;
        }
    }
    assert!(
        (1..watches.len()).contains(&ended),
        "{ended} of {} streams ended; the balancer spreads them over three replicas",
        watches.len()
    );
}

/// Redis killed (SIGKILL) while writers run, then started: every change that was acknowledged
/// is still there, since Redis writes each one to its append-only file before answering.
async fn redis_killed_under_load(stack: &Stack) {
    let writers = Writers::start(stack.addr, "redis-kill", 8, CALL_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.compose(&["kill", "-s", "SIGKILL", "redis"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.compose(&["start", "redis"]);
    let back = stack.serving(Duration::from_secs(60)).await;
    eprintln!("serving again {back:.1?} after Redis was started");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elections = writers.elections.clone();
    let tallies = writers.stop().await;
    let all = Tally::merge(&tallies);
    eprintln!(
        "Redis killed under load: {} acknowledged, failures {:?}, longest outage seen by a writer {:.1?}",
        all.ok, all.failed, all.longest_gap
    );
    assert!(all.failures() > 0, "the writers saw the outage");
    nothing_acknowledged_lost(stack, &elections, &tallies).await;
}

/// Each writer's election has reached at least the highest term id it was acknowledged.
async fn nothing_acknowledged_lost(stack: &Stack, elections: &[String], tallies: &[Tally]) {
    for (election, tally) in elections.iter().zip(tallies) {
        let mut c = client(stack.addr, election, "reader", CALL_TIMEOUT).await;
        let now = c.get_term().await.expect("GetTerm after the fault");
        assert!(
            now.id >= tally.acked_id,
            "{election}: term id {} after the fault, {} was acknowledged",
            now.id,
            tally.acked_id
        );
    }
}

/// With a replica stopped, the balancer restarts and serves; the replica, started again, gets
/// calls again without touching the balancer.
async fn balancer_restarted_while_a_replica_is_down(stack: &Stack) {
    stack.compose(&["stop", "electiond-3"]);
    stack.compose(&["restart", "lb"]);
    let took = stack.serving(Duration::from_secs(30)).await;
    eprintln!("balancer restarted with electiond-3 down: serving in {took:.1?}");
    let mut c = client(stack.addr, "lb-restart", "c", CALL_TIMEOUT).await;
    for _ in 0..20 {
        c.get_term().await.expect("GetTerm with one replica down");
    }

    stack.compose(&["start", "electiond-3"]);
    let before = stack.metric("electiond-3", "electiond_grpc_calls_total");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for _ in 0..20 {
            c.get_term().await.expect("GetTerm");
        }
        if stack.metric("electiond-3", "electiond_grpc_calls_total") > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the balancer sent electiond-3 no call within 30 s of its start"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_deployment_fails_over_and_loses_no_acknowledged_change() {
    let _one = prepare().await;
    let stack = Stack::up(
        "electiond-deploy-sentinel-test",
        &["docker-compose.yml", "docker-compose.sentinel.yml"],
    );
    let took = stack.serving(Duration::from_secs(90)).await;
    eprintln!("sentinel deployment serving {took:.1?} after `up` returned");
    let took = sentinels_know_both_replicas(&stack).await;
    eprintln!("every Sentinel knew both replicas {took:.1?} after `up` returned");
    let writers = Writers::start(stack.addr, "failover", 8, CALL_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = Instant::now();
    stack.compose(&["stop", "redis"]);

    // a Sentinel promotes a replica...
    let master = || {
        stack.exec(
            "sentinel-1",
            &[
                "redis-cli",
                "-p",
                "26379",
                "sentinel",
                "get-master-addr-by-name",
                "elect",
            ],
        )
    };
    let new_master = loop {
        if let Some(name) = master().lines().find(|l| l.starts_with("redis-replica-")) {
            break name.trim().to_owned();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "no replica promoted within 60 s of stopping the primary\n{}",
            stack.logs(&["sentinel-1"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let promoted = stopped.elapsed();
    // ...but with both replicas to confirm every change and one Redis of three gone, changes
    // fail (at once: the new master refuses writes) until it is back: the price of losing
    // nothing in any split
    let mut probe: Client = client(stack.addr, "failover-probe", "p", CALL_TIMEOUT).await;
    let refusing = Instant::now();
    while refusing.elapsed() < Duration::from_secs(3) {
        let called = Instant::now();
        expect_code(probe.enter().await, Code::Unavailable);
        assert!(
            called.elapsed() < CALL_TIMEOUT,
            "a refused change took {:?}",
            called.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the new master holds each writer's last acknowledged state (read on it directly:
    // nothing can change it meanwhile, every write is refused), or the one change after it
    // that was running as the primary stopped (applied and confirmed, its answer lost)
    let elections = writers.elections.clone();
    let tallies = writers.stop().await;
    for (election, tally) in elections.iter().zip(&tallies) {
        let key = harness::term_key("electiond", election);
        let stored = stack.exec(&new_master, &["redis-cli", "GET", &key]);
        let (head, list) = stored.split_once('\n').unwrap_or((&stored, ""));
        let id: u64 = head
            .split(' ')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{election}: the new master holds {stored:?}"));
        let leader = list.lines().next().unwrap_or("");
        let (acked_id, acked_leader) = tally.last.clone().expect("acknowledged calls");
        assert!(
            (id, leader) == (acked_id, acked_leader.as_str())
                || (id == acked_id + 1 && leader != acked_leader),
            "{election}: the new master holds id {id} led by {leader:?}; the last acknowledged \
             answer was id {acked_id} led by {acked_leader:?}"
        );
    }

    // the old primary comes back as a replica of the new master (not as a second master with
    // its old data), and changes are acknowledged again
    stack.compose(&["start", "redis"]);
    let started = Instant::now();
    while probe.enter().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no change acknowledged within 60 s of the old primary's start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resumed = started.elapsed();
    assert!(
        stack
            .exec("redis", &["redis-cli", "info", "replication"])
            .contains("role:slave"),
        "the old primary rejoined as a replica"
    );
    let all = Tally::merge(&tallies);
    eprintln!(
        "primary stopped: a replica promoted {promoted:.1?} later; started again {:.1?} after \
         the stop, changes acknowledged again {resumed:.1?} after its start; writers (until \
         the start): {} acknowledged, failures {:?}",
        stopped.elapsed() - started.elapsed(),
        all.ok,
        all.failed,
    );
}

/// Waits until both replicas are in sync with the primary and every Sentinel has learnt of
/// them (from the primary's INFO, every 10 s): Sentinel can only repoint the replicas it
/// knows, so a failover before that could leave one following the lost primary.
async fn sentinels_know_both_replicas(stack: &Stack) -> Duration {
    let started = Instant::now();
    loop {
        let primary = stack.exec("redis", &["redis-cli", "info", "replication"]);
        let synced = primary.matches("state=online").count() == 2;
        let known = synced
            && ["sentinel-1", "sentinel-2", "sentinel-3"].iter().all(|s| {
                let master = stack.exec(
                    s,
                    &["redis-cli", "-p", "26379", "sentinel", "master", "elect"],
                );
                let lines: Vec<&str> = master.lines().map(str::trim).collect();
                lines
                    .windows(2)
                    .any(|w| w[0] == "num-slaves" && w[1] == "2")
            });
        if known {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the Sentinels did not learn of both replicas within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
