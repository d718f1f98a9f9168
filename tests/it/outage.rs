//! A Redis outage under load is quiet and cheap: the replica logs a few lines, not one per
//! failed call, its connection attempts back off, it says NOT_SERVING, and it serves again
//! soon after Redis is back. The outage lasts a minute (`OUTAGE_SECONDS` shortens it).
//! Connection attempts are counted by the kernel: an `iptables` rule per Redis port that
//! matches SYN packets and does nothing else (needs root).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::binary::electiond_binary;
use crate::harness::*;

/// How long Redis stays down: `OUTAGE_SECONDS` (at least 4), a minute by default.
fn outage() -> Duration {
    let seconds: u64 = std::env::var("OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds.max(4))
}

/// Counts the TCP connection attempts (SYN packets) to some local ports, with one `iptables`
/// rule per port that matches and does nothing; the rules go when it is dropped.
struct Attempts {
    ports: Vec<u16>,
}

impl Attempts {
    fn rule(action: &str, port: u16) -> bool {
        let port = port.to_string();
        std::process::Command::new("iptables")
            .args(["-w", action, "OUTPUT", "-p", "tcp", "-d", "127.0.0.1"])
            .args(["--dport", &port, "--syn"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn count(ports: Vec<u16>) -> Self {
        // each rule is noted as soon as it is in, so that a failure removes those before it
        let mut a = Self { ports: Vec::new() };
        for p in ports {
            assert!(Self::rule("-I", p), "iptables counts SYNs to port {p}");
            a.ports.push(p);
        }
        a
    }

    /// Attempts so far, per port.
    fn so_far(&self) -> Vec<u64> {
        let out = std::process::Command::new("iptables")
            .args(["-w", "-L", "OUTPUT", "-v", "-x", "-n"])
            .output()
            .expect("iptables lists its rules");
        let listing = String::from_utf8_lossy(&out.stdout);
        self.ports
            .iter()
            .map(|p| {
                let tag = format!("dpt:{p} ");
                listing
                    .lines()
                    .filter(|l| l.contains(&tag) || l.ends_with(&format!("dpt:{p}")))
                    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                    .sum()
            })
            .collect()
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        for p in &self.ports {
            Self::rule("-D", *p);
        }
    }
}

/// The replica's overall health status (`grpc.health.v1`, service ""), or `None` when it
/// cannot be asked within 2 s. (Here rather than in the harness, which electionctl's tests
/// share without the health client.)
pub(crate) async fn health(addr: std::net::SocketAddr) -> Option<i32> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let r = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

/// Where the replica's Redis is, and how to take all of it down and bring it back.
enum Backend {
    One(Box<RedisServer>),
    Cluster(RedisCluster),
    /// A Cluster of which only the first master goes down (Redis's default
    /// cluster-require-full-coverage: then no election is served).
    ClusterMaster(RedisCluster),
    /// The master (the only Redis, so there is nothing to fail over to) and its Sentinels
    /// (held to keep them running) on `ports`.
    Sentinel {
        master: Box<RedisServer>,
        _sentinels: Vec<tokio::process::Child>,
        ports: Vec<u16>,
    },
}

impl Backend {
    fn configure(&self, cmd: &mut tokio::process::Command) {
        match self {
            Backend::One(r) => cmd.env("ELECTION_REDIS_URL", r.url()),
            Backend::Cluster(c) | Backend::ClusterMaster(c) => {
                cmd.env("ELECTION_REDIS_CLUSTER_NODES", c.seeds())
            }
            Backend::Sentinel { ports, .. } => cmd
                .env(
                    "ELECTION_REDIS_SENTINELS",
                    ports
                        .iter()
                        .map(|p| format!("redis://127.0.0.1:{p}"))
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .env("ELECTION_REDIS_SENTINEL_MASTER", "elect"),
        };
    }

    /// The Redis servers the outage takes down (never the Sentinels).
    fn downed(&mut self) -> Vec<&mut RedisServer> {
        match self {
            Backend::One(r) | Backend::Sentinel { master: r, .. } => vec![&mut **r],
            Backend::Cluster(c) => c.nodes.iter_mut().collect(),
            Backend::ClusterMaster(c) => c.nodes.iter_mut().take(1).collect(),
        }
    }

    fn ports(&mut self) -> Vec<u16> {
        self.downed().iter().map(|r| r.port).collect()
    }

    async fn stop(&mut self) {
        for r in self.downed() {
            r.stop().await;
        }
    }

    async fn restart(&mut self) {
        for r in self.downed() {
            r.restart().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_load_writes_a_few_log_lines_not_one_per_call() {
    outage_under_load(
        "one Redis",
        Backend::One(Box::new(RedisServer::start().await)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_down_under_load_writes_a_few_log_lines_not_one_per_call() {
    outage_under_load(
        "every Cluster master",
        Backend::Cluster(RedisCluster::start(3).await),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_master_down_under_load_writes_a_few_log_lines_not_one_per_call() {
    outage_under_load(
        "one of three Cluster masters",
        Backend::ClusterMaster(RedisCluster::start(3).await),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_master_down_under_load_writes_a_few_log_lines_not_one_per_call() {
    let master = RedisServer::start().await;
    let (sentinels, ports, _dir) = crate::sentinel::sentinels(&master).await;
    outage_under_load(
        "the Sentinel master",
        Backend::Sentinel {
            master: Box::new(master),
            _sentinels: sentinels,
            ports,
        },
    )
    .await;
}

async fn outage_under_load(what: &str, mut redis: Backend) {
    let port = free_port();
    let mut cmd = electiond_binary(port);
    redis.configure(&mut cmd);
    let mut child = cmd
        .env("ELECTION_REDIS_TIMEOUT_MS", "200")
        .env("ELECTION_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .expect("electiond starts");
    let logged: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::default();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let reader = tokio::spawn({
        let logged = logged.clone();
        async move {
            while let Ok(Some(line)) = lines.next_line().await {
                logged
                    .lock()
                    .unwrap()
                    .push((Instant::now(), line.len() + 1));
            }
        }
    });
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(port).await;
    // Sentinels and Cluster nodes may still be starting: begin once the replica serves
    wait_for(|| async move { health(addr).await == Some(ServingStatus::Serving as i32) }).await;
    let c = Client::connect(addr, "quiet", "w1").await;
    c.clone().enter().await.expect("Enter");
    let _stream = c.clone().watch().await.expect("Events");

    // four clients calling as fast as answers come (failures come back within the timeout)
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let mut c = c.acting_as("quiet", &format!("w{i}"));
            let calls = calls.clone();
            tokio::spawn(async move {
                loop {
                    let _ = c.get_term().await;
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let outage = outage();
    let attempts = Attempts::count(redis.ports());
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop().await;
    let down = Instant::now();
    let pid = child.id().expect("running");
    let cpu_down = cpu_seconds(pid);
    let calls_before = calls.load(std::sync::atomic::Ordering::Relaxed);
    let attempts_before = attempts.so_far();
    // calls in flight when Redis went away retry before failing: a burst, counted apart
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts_settled = attempts.so_far();
    tokio::time::sleep(outage / 2 - Duration::from_secs(1)).await;
    assert_eq!(
        health(addr).await,
        Some(ServingStatus::NotServing as i32),
        "health says NOT_SERVING while Redis is down"
    );
    tokio::time::sleep(outage / 2).await;
    let calls_during = calls.load(std::sync::atomic::Ordering::Relaxed) - calls_before;
    let cpu_outage = cpu_seconds(pid)
        .zip(cpu_down)
        .map(|(b, a)| (b - a) / outage.as_secs_f64());
    let attempts_end = attempts.so_far();
    let minus =
        |b: &[u64], a: &[u64]| -> Vec<u64> { b.iter().zip(a).map(|(b, a)| b - a).collect() };
    let burst = minus(&attempts_settled, &attempts_before);
    let attempts_during = minus(&attempts_end, &attempts_settled);
    drop(attempts);
    redis.restart().await;
    let up = Instant::now();
    let mut probe = c.acting_as("quiet", "");
    let serving_again = loop {
        if probe.get_term().await.is_ok() {
            break up.elapsed();
        }
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "not serving 10 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for l in load {
        l.abort();
    }
    let (lines, bytes) = logged
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at >= down && *at <= up)
        .fold((0usize, 0usize), |(n, b), (_, len)| (n + 1, b + len));
    let per_second = |n: u64| n as f64 / outage.as_secs_f64();
    let settled_for = (outage - Duration::from_secs(1)).as_secs_f64();
    let attempts_per_second: Vec<f64> = attempts_during
        .iter()
        .map(|n| *n as f64 / settled_for)
        .collect();
    eprintln!(
        "{what} down {outage:?} under load ({calls_during} failed calls): {lines} log lines, \
         {bytes} bytes; connection attempts per Redis port: {burst:?} in the first second, \
         then {attempts_during:?} ({attempts_per_second:.1?} a second); replica CPU \
         {cpu_outage:.3?} of a core during the outage; serving again {serving_again:?} after \
         Redis restarted"
    );
    // (calls on a live master's elections wait for their timeout, so fewer are made)
    assert!(
        per_second(calls_during) > 5.0,
        "the load ran through the outage ({calls_during} calls)"
    );
    // a few lines a second at most, whatever the call rate
    assert!(
        lines as u64 <= 3 * outage.as_secs(),
        "{lines} log lines in a {outage:?} outage"
    );
    // reconnects back off: after the first second, a few a second per Redis, whatever the
    // call rate (on the Sentinel master's port, the three Sentinels' own attempts are
    // counted too)
    for (port, n) in redis.ports().iter().zip(&attempts_per_second) {
        assert!(
            *n <= 10.0,
            "{n:.1} connection attempts a second to port {port} while it was down \
             ({} calls a second)",
            per_second(calls_during)
        );
    }
    assert!(
        serving_again < Duration::from_secs(3),
        "serving again only {serving_again:?} after Redis came back"
    );
    child.start_kill().ok();
    reader.abort();
}

/// CPU seconds (user + system) a process has used, from `/proc`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
