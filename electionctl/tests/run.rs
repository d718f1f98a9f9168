//! `electionctl run` and the client's watch against real replicas, a real Redis and real
//! processes: who runs the command, when it is stopped, and that it never outlives its
//! supervisor.

#[allow(dead_code)]
#[path = "../../tests/it/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use electiond_client::Client;
use harness::{prefix, wait_for, RedisServer, Replica};
use tokio::process::{Child, Command};

const TTL: u64 = 2000;
const GRACE: &str = "300ms";

fn with_ttl(redis: &RedisServer, p: &str) -> electiond::config::Settings {
    harness::with_ttl(redis, &prefix(p), TTL)
}

fn ctl(replica: &Replica) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_electionctl"));
    c.env("ELECTION_ENDPOINTS", replica.addr.to_string())
        .env_remove("ELECTION_TOKEN")
        .stdin(Stdio::null());
    c
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

fn alive(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// `electionctl run` with a command that records its term id, its pid, and when it got
/// SIGTERM, in a directory of its own.
struct Runner {
    ctl: Child,
    dir: PathBuf,
}

const CHILD: &str = r#"echo $$ > "$DIR/pid"
date +%s%N > "$DIR/started"
trap 'date +%s%N > "$DIR/stopped"; exit 0' TERM
echo "$ELECTION_TERM_ID" > "$DIR/term.tmp" && mv "$DIR/term.tmp" "$DIR/term"
while :; do sleep 0.05 & wait $!; done"#;

impl Runner {
    fn start(replica: &Replica, election: &str, id: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "electionctl-run-{}-{election}-{id}-{}",
            std::process::id(),
            harness::free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("runner dir");
        let ctl = ctl(replica)
            .args(["run", election, "--id", id, "--kill-grace", GRACE, "--"])
            .args(["sh", "-c", CHILD])
            .env("DIR", &dir)
            .kill_on_drop(true)
            .spawn()
            .expect("electionctl starts");
        Runner { ctl, dir }
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// The term id the command was started with, once it runs.
    fn term(&self) -> Option<u64> {
        self.read("term").and_then(|t| t.parse().ok())
    }

    fn child_pid(&self) -> Option<u32> {
        self.read("pid").and_then(|t| t.parse().ok())
    }

    /// When the command got SIGTERM (ns since the epoch).
    fn stopped_at(&self) -> Option<u128> {
        self.read("stopped").and_then(|t| t.parse().ok())
    }

    fn pid(&self) -> u32 {
        self.ctl.id().expect("electionctl runs")
    }

    /// electionctl's exit status, waiting at most `within`.
    async fn exit(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.ctl.wait())
            .await
            .expect("electionctl exits in time")
            .expect("wait")
            .code()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(pid) = self.child_pid() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.ctl.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until exactly one of the runners' commands runs, and returns its index.
async fn one_runs(runners: &[&Runner]) -> usize {
    wait_for(|| async { runners.iter().any(|r| r.term().is_some()) }).await;
    let running: Vec<usize> = (0..runners.len())
        .filter(|i| runners[*i].term().is_some())
        .collect();
    assert_eq!(running.len(), 1, "exactly one command runs");
    running[0]
}

#[tokio::test]
async fn one_of_two_runs_and_sigterm_hands_over_within_a_second() {
    let redis = RedisServer::start().await;
    let a = Replica::start(with_ttl(&redis, "ctl-handover")).await;
    let b = Replica::start(with_ttl(&redis, "ctl-handover")).await;
    let mut r1 = Runner::start(&a, "job", "w1");
    let mut r2 = Runner::start(&b, "job", "w2");
    let first = one_runs(&[&r1, &r2]).await;
    // still only one, well past a lease
    tokio::time::sleep(Duration::from_millis(TTL + 500)).await;
    assert_eq!(one_runs(&[&r1, &r2]).await, first);

    let (leader, standby) = if first == 0 {
        (&mut r1, &mut r2)
    } else {
        (&mut r2, &mut r1)
    };
    let old_term = leader.term().expect("leader's term");
    let asked = Instant::now();
    signal(leader.pid(), "-TERM");
    wait_for(|| async { standby.term().is_some() }).await;
    let handed_over = asked.elapsed();
    eprintln!(
        "SIGTERM to the leader's electionctl: the other's command started {handed_over:?} later"
    );
    assert!(
        handed_over < Duration::from_millis(1500),
        "handover took {handed_over:?}"
    );
    assert!(standby.term().expect("new term") > old_term);
    // the old command was stopped before the new one started, and electionctl withdrew
    let stopped = leader.stopped_at().expect("the old command got SIGTERM");
    assert_eq!(leader.exit(Duration::from_secs(5)).await, Some(128 + 15));
    // both times from `date` (a file's modification time runs on a coarser clock)
    let started: u128 = std::fs::read_to_string(standby.dir.join("started"))
        .expect("the new command's start time")
        .trim()
        .parse()
        .expect("nanoseconds");
    assert!(
        stopped <= started,
        "the new command started before the old one was stopped"
    );
}

#[tokio::test]
async fn a_frozen_leader_is_replaced_and_stops_its_command_once_it_thaws() {
    let redis = RedisServer::start().await;
    let a = Replica::start(with_ttl(&redis, "ctl-frozen")).await;
    let b = Replica::start(with_ttl(&redis, "ctl-frozen")).await;
    let mut r1 = Runner::start(&a, "job", "w1");
    wait_for(|| async { r1.term().is_some() }).await;
    let r2 = Runner::start(&b, "job", "w2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(r2.term().is_none(), "only the leader runs its command");

    signal(r1.pid(), "-STOP");
    let frozen = Instant::now();
    wait_for(|| async { r2.term().is_some() }).await;
    eprintln!(
        "the frozen leader was replaced {:?} after it froze",
        frozen.elapsed()
    );
    assert!(
        r2.term() > r1.term(),
        "the successor holds a higher term id"
    );
    signal(r1.pid(), "-CONT");
    let thawed = Instant::now();
    assert_eq!(r1.exit(Duration::from_secs(5)).await, Some(3));
    assert!(
        thawed.elapsed() < Duration::from_secs(1),
        "the stale leader took {:?} to give up",
        thawed.elapsed()
    );
    assert!(r1.stopped_at().is_some(), "its command got SIGTERM");
}

#[tokio::test]
async fn with_redis_paused_the_command_is_stopped_before_the_lease_can_lapse() {
    let redis = RedisServer::start().await;
    let a = Replica::start(with_ttl(&redis, "ctl-pause")).await;
    let mut r = Runner::start(&a, "job", "w1");
    wait_for(|| async { r.term().is_some() }).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let redis_pid = redis.pid().expect("redis runs");
    // no refresh sent after this can be acknowledged
    let paused_at = now_ns();
    signal(redis_pid, "-STOP");
    let status = r.exit(Duration::from_secs(10)).await;
    signal(redis_pid, "-CONT");
    assert_eq!(status, Some(3), "leadership counted as lost");
    let stopped = r.stopped_at().expect("the command got SIGTERM");
    let after = Duration::from_nanos((stopped - paused_at) as u64);
    eprintln!("Redis paused: the command got SIGTERM {after:?} later (TTL {TTL} ms)");
    assert!(
        after < Duration::from_millis(TTL),
        "SIGTERM came {after:?} after the last possible acknowledgement, not before TTL"
    );
}

#[tokio::test]
async fn anoint_moves_the_command_and_evict_stops_it() {
    let redis = RedisServer::start().await;
    let a = Replica::start(with_ttl(&redis, "ctl-anoint")).await;
    let mut r1 = Runner::start(&a, "job", "w1");
    wait_for(|| async { r1.term().is_some() }).await;
    let mut r2 = Runner::start(&a, "job", "w2");
    let client = Client::builder([format!("http://{}", a.addr)])
        .build()
        .expect("client");
    wait_for(|| async {
        client
            .get("job")
            .await
            .is_ok_and(|t| t.candidates.len() == 2)
    })
    .await;

    client.anoint("job", "w2").await.expect("anoint");
    assert_eq!(r1.exit(Duration::from_secs(5)).await, Some(3));
    assert!(r1.stopped_at().is_some());
    wait_for(|| async { r2.term().is_some() }).await;
    assert!(r2.term() > r1.term());

    client.evict("job", "w2").await.expect("evict");
    assert_eq!(r2.exit(Duration::from_secs(5)).await, Some(3));
    assert!(r2.stopped_at().is_some());
}

#[tokio::test]
async fn a_killed_electionctl_leaves_no_command_behind() {
    let redis = RedisServer::start().await;
    let a = Replica::start(with_ttl(&redis, "ctl-kill")).await;
    let mut r = Runner::start(&a, "job", "w1");
    wait_for(|| async { r.child_pid().is_some() && r.term().is_some() }).await;
    let child = r.child_pid().expect("child pid");
    assert!(alive(child));
    signal(r.pid(), "-KILL");
    let _ = r.exit(Duration::from_secs(5)).await;
    wait_for(|| async { !alive(child) }).await;
}

#[tokio::test]
async fn bad_usage_gets_one_line_and_a_status() {
    let redis = RedisServer::start().await;
    let a = Replica::start(with_ttl(&redis, "ctl-usage")).await;
    for (args, status, says) in [
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
        (vec!["enter", "job"], 2, "--id"),
        (vec!["anoint", "job", "nobody"], 2, "not a candidate"),
        (
            vec![
                "--endpoints",
                "127.0.0.1:1",
                "--timeout",
                "300ms",
                "get",
                "job",
            ],
            1,
            "unavailable",
        ),
    ] {
        let out = ctl(&a).args(&args).output().await.expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = ctl(&a)
        .args(["enter", "job", "--id", "w1"])
        .output()
        .await
        .expect("runs");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with(r#"{"id":1,"leader":"w1","candidates":["w1"],"timestamp":"20"#),
        "{line}"
    );
}

/// A replica whose metrics are served on the returned port: the watch tests check that the
/// stream really was on the replica they then shut down.
async fn replica_with_metrics(redis: &RedisServer, p: &str) -> (Replica, u16) {
    let port = harness::free_port();
    let mut s = with_ttl(redis, p);
    s.metrics_addr = Some(format!("127.0.0.1:{port}"));
    let replica = Replica::start(s).await;
    harness::wait_for_port(port).await;
    (replica, port)
}

/// The Events streams open on the replica whose metrics are on `port`.
async fn streams_open(port: u16) -> f64 {
    harness::value(
        &harness::scrape(port).await,
        "electiond_events_streams_open",
    )
}

#[tokio::test]
async fn the_watch_resumes_across_a_replica_shutdown_without_skipping_the_latest() {
    let redis = RedisServer::start().await;
    let (a, a_metrics) = replica_with_metrics(&redis, "ctl-watch").await;
    let b = Replica::start(with_ttl(&redis, "ctl-watch")).await;
    // the first call (the stream) goes to the first endpoint
    let client = Client::builder([format!("http://{}", a.addr), format!("http://{}", b.addr)])
        .build()
        .expect("client");
    let writer = Client::builder([format!("http://{}", b.addr)])
        .build()
        .expect("client");
    let mut watch = client.watch("w");
    assert_eq!(watch.next().await.expect("current").term.id, 0);
    writer.enter("w", "c1").await.expect("enter");
    let t = watch.next().await.expect("change").term;
    assert_eq!((t.id, t.leader.as_deref()), (1, Some("c1")));
    assert_eq!(
        streams_open(a_metrics).await,
        1.0,
        "the watch's stream is on a"
    );

    a.shutdown().await.expect("a stops");
    writer.enter("w", "c2").await.expect("enter");
    let last = writer.anoint("w", "c2").await.expect("anoint");
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch resumes on the other replica")
            .expect("item");
        assert!(item.reset.is_none());
        seen.push(item.term.clone());
        if item.term == last {
            break;
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0].id <= w[1].id),
        "ids never went down: {seen:?}"
    );
}

#[tokio::test]
async fn the_token_is_sent_when_given_and_missing_it_is_a_clear_error() {
    let redis = RedisServer::start().await;
    let mut s = with_ttl(&redis, "ctl-token");
    s.auth_tokens = Some("s3cret".to_owned());
    let a = Replica::start(s).await;
    let out = ctl(&a).args(["get", "job"]).output().await.expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unauthenticated"), "{err}");
    let out = ctl(&a)
        .args(["get", "job"])
        .env("ELECTION_TOKEN", "s3cret")
        .output()
        .await
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(r#"{"id":0,"leader":"""#));
}

#[tokio::test]
async fn watch_prints_the_term_then_each_change_and_resumes_on_another_replica() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let redis = RedisServer::start().await;
    let (a, a_metrics) = replica_with_metrics(&redis, "ctl-watch-cli").await;
    let b = Replica::start(with_ttl(&redis, "ctl-watch-cli")).await;
    let writer = Client::builder([format!("http://{}", b.addr)])
        .build()
        .expect("client");
    // the stream goes to the first endpoint
    let mut watch = ctl(&a)
        .env("ELECTION_ENDPOINTS", format!("{},{}", a.addr, b.addr))
        .args(["watch", "w"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("electionctl watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("open")
    }
    let first = next(&mut lines).await;
    assert!(
        first.starts_with(r#"{"id":0,"leader":"","candidates":[]"#),
        "{first}"
    );
    writer.enter("w", "c1").await.expect("enter");
    let entered = next(&mut lines).await;
    assert!(
        entered.starts_with(r#"{"id":1,"leader":"c1","candidates":["c1"]"#),
        "{entered}"
    );
    assert_eq!(
        streams_open(a_metrics).await,
        1.0,
        "the watch's stream is on a"
    );
    a.shutdown().await.expect("a stops");
    writer.enter("w", "c2").await.expect("enter");
    let mut line = next(&mut lines).await;
    while !line.contains(r#""candidates":["c1","c2"]"#) {
        line = next(&mut lines).await;
    }
    assert!(line.starts_with(r#"{"id":1,"leader":"c1""#), "{line}");
}

/// The fenced block that follows `marker` in the README.
fn readme_block(readme: &str, marker: &str) -> String {
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("{marker} is in the README"))
        .1;
    let body = after.split_once("```").expect("a block").1;
    let body = body.split_once('\n').expect("its first line").1;
    body.split_once("```").expect("its end").0.to_owned()
}

#[tokio::test]
async fn the_readmes_access_example_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let grants = readme_block(&readme, "<!-- access example: grants -->");
    let session = readme_block(&readme, "<!-- access example: session -->");
    let dir = std::env::temp_dir().join(format!("electionctl-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("access.toml");
    std::fs::write(&file, &grants).expect("access.toml");
    let redis = RedisServer::start().await;
    let mut s = harness::settings(&redis, &prefix("ctl-access"));
    s.access_file = Some(file.display().to_string());
    let replica = Replica::start(s).await;

    let mut exported: Vec<(String, String)> = Vec::new();
    let mut lines = session.lines();
    let mut commands = 0;
    while let Some(line) = lines.next() {
        let command = line.strip_prefix("$ ").expect("a command line");
        if let Some(var) = command.strip_prefix("export ") {
            let (k, v) = var.split_once('=').expect("VAR=value");
            exported.push((k.to_owned(), v.to_owned()));
            continue;
        }
        let expected = lines.next().expect("each command shows its answer");
        let mut words = command.split_whitespace().peekable();
        let mut env = exported.clone();
        while let Some((k, v)) = words.peek().and_then(|w| w.split_once('=')) {
            env.push((k.to_owned(), v.to_owned()));
            words.next();
        }
        assert_eq!(words.next(), Some("electionctl"), "{command}");
        let out = ctl(&replica)
            .args(words)
            .envs(env)
            .output()
            .await
            .expect("runs");
        commands += 1;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        if expected.starts_with('{') {
            assert!(out.status.success(), "{command}: {stderr}");
            let got: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
            let want: serde_json::Value = serde_json::from_str(expected).expect("JSON");
            for field in ["id", "leader", "candidates"] {
                assert_eq!(got[field], want[field], "{command}: {stdout}");
            }
            assert!(got["timestamp"].is_string(), "{command}: {stdout}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{command}: {stdout}");
            assert_eq!(stderr.trim(), expected, "{command}");
        }
    }
    assert!(commands >= 8, "the example ran ({commands} commands)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_certificate_is_the_credential_with_cert_and_key() {
    let ca = harness::TestCa::new("electionctl test CA");
    let dir = std::env::temp_dir().join(format!("electionctl-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (server_cert, server_key) = ca.issue("electiond", &["localhost"], true);
    let (cert, key) = ca.issue("a-worker-1", &[], false);
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("cert.pem", cert),
        ("key.pem", key),
        (
            "access.toml",
            "[[grant]]\nname = \"a-certs\"\nsubject = \"CN=a-worker-1\"\nrole = \"worker\"\n\
             elections = [\"team-a/*\"]\nclients = [\"a-*\"]\n"
                .to_owned(),
        ),
    ] {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let path = |f: &str| dir.join(f).display().to_string();
    let redis = RedisServer::start().await;
    let mut s = harness::settings(&redis, &prefix("ctl-mtls"));
    s.tls_cert = Some(path("server.pem"));
    s.tls_key = Some(path("server-key.pem"));
    s.tls_client_ca = Some(path("ca.pem"));
    s.access_file = Some(path("access.toml"));
    let replica = Replica::start(s).await;
    let endpoint = format!("https://localhost:{}", replica.addr.port());
    let run = |with_cert: bool| {
        let mut c = ctl(&replica);
        c.env("ELECTION_ENDPOINTS", &endpoint)
            .env("ELECTION_CA_CERT", path("ca.pem"))
            .args(["enter", "team-a/job", "--id", "a-worker-1"]);
        if with_cert {
            c.env("ELECTION_CERT", path("cert.pem"))
                .env("ELECTION_KEY", path("key.pem"));
        }
        c.output()
    };
    let out = run(true).await.expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""leader":"a-worker-1""#));
    let out = run(false).await.expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unauthenticated"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ls_and_history_say_which_elections_exist_who_leads_and_why_it_changed() {
    let redis = RedisServer::start().await;
    let a = Replica::start(with_ttl(&redis, "ctl-ls")).await;
    let c = Client::builder([format!("http://{}", a.addr)])
        .build()
        .expect("client");
    // more than one page of the service's default of 100
    for i in 0..150 {
        c.enter(&format!("batch/{i:03}"), "w").await.expect("enter");
    }
    c.enter("nightly-report", "host-a").await.expect("enter");
    c.enter("nightly-report", "host-b").await.expect("enter");
    c.anoint("nightly-report", "host-b").await.expect("anoint");
    c.withdraw("nightly-report", "host-b")
        .await
        .expect("withdraw");

    let run = |args: Vec<&'static str>| {
        let mut cmd = ctl(&a);
        cmd.args(args);
        async move {
            let out = cmd.output().await.expect("runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("utf-8")
        }
    };
    let all = run(vec!["ls"]).await;
    assert_eq!(all.lines().count(), 151, "every election, over the pages");
    let batch = run(vec!["ls", "--prefix", "batch/"]).await;
    assert_eq!(batch.lines().count(), 150);
    let nightly = run(vec!["ls", "--prefix", "nightly"]).await;
    let line: serde_json::Value = serde_json::from_str(nightly.trim()).expect("one JSON line");
    assert_eq!(line["name"], "nightly-report");
    assert_eq!(line["id"], 3);
    assert_eq!(line["leader"], "host-a");
    assert_eq!(line["candidates"], 1);
    assert!(
        nightly.starts_with(
            r#"{"name":"nightly-report","id":3,"leader":"host-a","candidates":1,"timestamp":"20"#
        ),
        "{nightly}"
    );

    // newest first: withdraw (back to host-a, id 3), anoint (host-b, 2), enter (host-a, 1)
    let history = run(vec!["history", "nightly-report"]).await;
    let changes: Vec<(u64, String, String)> = history
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            (
                v["id"].as_u64().expect("id"),
                v["leader"].as_str().expect("leader").to_owned(),
                v["cause"].as_str().expect("cause").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (3, "host-a".into(), "withdraw".into()),
            (2, "host-b".into(), "anoint".into()),
            (1, "host-a".into(), "enter".into()),
        ]
    );

    // for people: aligned columns under a header
    let table = run(vec!["--output", "table", "history", "nightly-report"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let column = lines[0].find("CAUSE").expect("a CAUSE column");
    assert!(lines[1..].iter().all(|l| l.len() > column), "{table}");
    assert_eq!(&lines[1][column..], "withdraw");
    assert!(lines[1].contains(" ago)"), "{table}");
    let table = run(vec!["--output", "table", "ls", "--prefix", "nightly"]).await;
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("nightly-report  3 ")),
        "{table}"
    );
}
