//! Faults under load, overlapping, from a seeded schedule: replicas SIGKILLed and restarted,
//! replicas and Redis frozen (SIGSTOP) for longer than the Redis timeout, Redis restarted, the
//! replicas' pub/sub connections killed, and a replica's network link to Redis or to its
//! clients cut (each replica runs in a network namespace of its own, and the cut drops packets
//! silently), made lossy (a random share of packets dropped) or slow (rate-limited, so packets
//! queue); a dozen clients calling every operation on three
//! elections through all replicas, and watchers that follow each election throughout. After
//! healing, what clients saw and what Redis holds must agree:
//!
//! - no acknowledged change lost: the final state is at least as new as every acknowledged
//!   answer (Redis clock), and equal to the newest one when no later change happened;
//! - per election, no client saw the id or the state go back, and no id named two leaders;
//! - every watcher converges to the final state within seconds, and never saw an id go down;
//! - every replica serves again without a restart, none panicked, and memory stays bounded.
//!
//! `FAULTS_SECONDS` (default 60) sets how long faults run; `FAULTS_SEED` replays a schedule
//! (the seed is printed); `FAULTS_REDIS` (`always`, `everysec`, `none`) sets how Redis keeps
//! its data (`none` shows what a restart without persistence does: the checks fail). Needs
//! root (namespaces, `iptables`). See `docs/FAULTS.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use electiond_client::{Client, Term};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::process::Child;

use crate::harness::*;
use crate::netns::Namespace;

const REPLICAS: usize = 3;
const CLIENTS: usize = 12;
const ELECTIONS: [&str; 3] = ["alpha", "beta", "gamma"];

/// One replica process in its own network namespace, restartable on its address, its stderr
/// kept in a file.
struct Proc {
    ns: Namespace,
    addr: std::net::SocketAddr,
    redis_port: u16,
    prefix: String,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("replica log");
        let child = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                env!("CARGO_BIN_EXE_electiond"),
            ])
            .env("ELECTION_LISTEN_ADDR", self.addr.to_string())
            .env("ELECTION_METRICS_ADDR", "")
            .env("ELECTION_CONSOLE_ADDR", "")
            .env(
                "ELECTION_REDIS_URL",
                format!("redis://{}:{}", self.ns.host_ip, self.redis_port),
            )
            .env("ELECTION_KEY_PREFIX", &self.prefix)
            .env("ELECTION_REDIS_TIMEOUT_MS", "300")
            .env("ELECTION_LEASE_TTL_MS", "0")
            .env("ELECTION_KEEPALIVE_INTERVAL_MS", "1000")
            .env("ELECTION_KEEPALIVE_TIMEOUT_MS", "1000")
            .env("ELECTION_DRAIN_TIMEOUT_MS", "500")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("electiond starts");
        self.child = Some(child);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Cuts (`-A`) or heals (`-D`) this replica's link to Redis, or to its clients.
    fn cut(&self, action: &str, to_redis: bool) {
        let redis = self.redis_port.to_string();
        let own = self.addr.port().to_string();
        if to_redis {
            self.ns.filter(
                action,
                &[
                    &["OUTPUT", "-p", "tcp", "--dport", &redis],
                    &["INPUT", "-p", "tcp", "--sport", &redis],
                ],
            );
        } else {
            self.ns
                .filter(action, &[&["INPUT", "-p", "tcp", "--dport", &own]]);
        }
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

/// What each watcher (election, number) saw, in order, and whether the id went down there.
type Watched = Arc<Mutex<HashMap<(usize, usize), Vec<(Term, bool)>>>>;

/// What one client saw: every acknowledged answer, in the order it came.
#[derive(Default)]
struct Seen {
    answers: Vec<(usize, Term)>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_faults_under_load_lose_nothing_acknowledged() {
    let seed: u64 = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let seconds: u64 = std::env::var("FAULTS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!("fault schedule seed {seed} (replay: FAULTS_SEED={seed}), {seconds} s");

    // each replica in a namespace of its own; Redis listens on the host's end of every link
    let namespaces: Vec<Namespace> = (1..=REPLICAS as u32).map(Namespace::create).collect();
    let mut args = vec!["--bind".to_owned(), "127.0.0.1".to_owned()];
    args.extend(namespaces.iter().map(|n| n.host_ip.clone()));
    args.extend(["--protected-mode".to_owned(), "no".to_owned()]);
    // how Redis keeps what it acknowledged: `always` (AOF, fsync on every write; the default),
    // `everysec` (AOF, fsync once a second) or `none` (nothing on disk: a restart forgets all)
    let persistence = std::env::var("FAULTS_REDIS").unwrap_or_else(|_| "always".into());
    eprintln!("redis persistence: {persistence} (FAULTS_REDIS)");
    let redis = match persistence.as_str() {
        "always" => RedisServer::start_persistent_with_args(args).await,
        "everysec" => {
            args.extend(["--appendfsync".to_owned(), "everysec".to_owned()]);
            RedisServer::start_persistent_with_args(args).await
        }
        "none" => RedisServer::start_with_args(args).await,
        other => panic!("FAULTS_REDIS={other}: always, everysec or none"),
    };
    let redis = Arc::new(tokio::sync::Mutex::new(redis));
    let redis_port: u16 = redis
        .lock()
        .await
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("redis port");
    let dir = std::env::temp_dir().join(format!("electiond-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log dir");
    let p = prefix("faults");
    let mut procs = Vec::new();
    let mut endpoints = Vec::new();
    for (i, ns) in namespaces.into_iter().enumerate() {
        let addr: std::net::SocketAddr = format!("{}:{}", ns.ns_ip, free_port()).parse().unwrap();
        let mut proc = Proc {
            ns,
            addr,
            redis_port,
            prefix: p.clone(),
            log: dir.join(format!("replica-{i}.log")),
            child: None,
        };
        proc.spawn();
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "replica {i} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        endpoints.push(addr.to_string());
        procs.push(Arc::new(tokio::sync::Mutex::new(proc)));
    }
    let client = |timeout: Duration| {
        Client::builder(endpoints.clone())
            .timeout(timeout)
            .build()
            .expect("client")
    };

    // watchers: per election, one starting on each replica (its client's endpoints rotated),
    // each a client-crate watch that moves to another replica when its stream ends
    let watched: Watched = Arc::default();
    let mut watchers = Vec::new();
    for (e, name) in ELECTIONS.iter().enumerate() {
        for w in 0..REPLICAS {
            let mut rotated = endpoints.clone();
            rotated.rotate_left(w);
            let mut watch = Client::builder(rotated)
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client")
                .watch(name);
            let watched = watched.clone();
            watchers.push(tokio::spawn(async move {
                loop {
                    match watch.next().await {
                        Ok(item) => {
                            // an id that went down is recorded, and fails the test below
                            watched
                                .lock()
                                .unwrap()
                                .entry((e, w))
                                .or_default()
                                .push((item.term, item.reset.is_some()));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
    }

    // the load: each client calls a random operation on a random election, back to back
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for k in 0..CLIENTS {
        let c = client(Duration::from_secs(1));
        let stop = stop.clone();
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(k as u64 + 1));
        load.push(tokio::spawn(async move {
            let me = format!("c{k}");
            let mut seen = Seen::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e = rng.random_range(0..ELECTIONS.len());
                let name = ELECTIONS[e];
                let other = format!("c{}", rng.random_range(0..CLIENTS));
                let r = match rng.random_range(0..10) {
                    0..=2 => c.enter(name, &me).await,
                    3..=4 => c.withdraw(name, &me).await,
                    5 => c.anoint(name, &other).await,
                    6 => c.promote(name, &other).await,
                    7 => c.evict(name, &other).await,
                    _ => c.get(name).await,
                };
                if let Ok(t) = r {
                    seen.answers.push((e, t));
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
            }
            seen
        }));
    }

    // faults: a new one every 0.3-1.2 s, each on its own task so they overlap; one at a
    // time per target (a frozen process is not also killed)
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before: Vec<u64> = {
        let mut v = Vec::new();
        for proc in &procs {
            v.push(proc.lock().await.pid().map_or(0, rss_kib));
        }
        v
    };
    while started.elapsed() < Duration::from_secs(seconds) {
        let kind = rng.random_range(0..9);
        let r = rng.random_range(0..REPLICAS);
        let ms = rng.random_range(400..1500);
        let name = [
            "replica SIGKILL",
            "replica SIGSTOP",
            "redis SIGSTOP",
            "redis restart",
            "pubsub kill",
            "replica cut from redis",
            "replica cut from clients",
            "replica link lossy",
            "replica link slow",
        ][kind];
        *counts.entry(name).or_default() += 1;
        let procs = procs.clone();
        let redis = redis.clone();
        faults.push(tokio::spawn(async move {
            match kind {
                0 => {
                    let mut p = procs[r].lock().await;
                    p.kill().await;
                    tokio::time::sleep(Duration::from_millis(ms / 2)).await;
                    p.spawn();
                }
                1 => {
                    let p = procs[r].lock().await;
                    if let Some(pid) = p.pid() {
                        signal(pid, "-STOP");
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        signal(pid, "-CONT");
                    }
                }
                2 => {
                    let r = redis.lock().await;
                    if let Some(pid) = r.pid() {
                        signal(pid, "-STOP");
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        signal(pid, "-CONT");
                    }
                }
                3 => {
                    let mut r = redis.lock().await;
                    r.restart().await;
                }
                5 | 6 => {
                    let p = procs[r].lock().await;
                    p.cut("-A", kind == 5);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    p.cut("-D", kind == 5);
                }
                7 => {
                    // a fifth to a half of every packet lost, both ways, for 0.8-3 s
                    let share = format!("0.{}", 2 + ms % 4);
                    let p = procs[r].lock().await;
                    p.ns.lossy("-A", &share);
                    tokio::time::sleep(Duration::from_millis(ms * 2)).await;
                    p.ns.lossy("-D", &share);
                }
                8 => {
                    // 64 kbit/s both ways, packets queued up to 400 ms, for 0.8-3 s
                    let p = procs[r].lock().await;
                    p.ns.slow(true, 64, 400);
                    tokio::time::sleep(Duration::from_millis(ms * 2)).await;
                    p.ns.slow(false, 64, 400);
                }
                _ => {
                    let r = redis.lock().await;
                    let mut conn = r.connection().await;
                    let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("pubsub")
                        .query_async(&mut conn)
                        .await;
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
    }
    // heal: every fault ends (a frozen process is resumed, a killed one restarted)
    for f in faults {
        f.await.expect("fault task");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = Vec::new();
    for l in load {
        seen.push(l.await.expect("client task"));
    }
    eprintln!("faults: {counts:?}");

    // every replica serves again, without a restart, and they all answer the same
    let mut finals: Vec<Option<Term>> = vec![None; ELECTIONS.len()];
    for proc in &procs {
        let port = proc.lock().await.addr;
        let one = Client::builder([port.to_string()])
            .timeout(Duration::from_secs(1))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(10);
        for (e, name) in ELECTIONS.iter().enumerate() {
            let t = loop {
                match one.get(name).await {
                    Ok(t) => break t,
                    Err(err) => {
                        assert!(
                            Instant::now() < deadline,
                            "replica on {port} does not serve 10 s after healing: {err}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            if let Some(f) = &finals[e] {
                assert_eq!((f.id, &f.candidates), (t.id, &t.candidates), "{name}");
            }
            finals[e] = Some(t);
        }
    }
    let finals: Vec<Term> = finals.into_iter().map(|t| t.expect("read")).collect();

    let acked: usize = seen.iter().map(|s| s.answers.len()).sum();
    eprintln!("{acked} acknowledged answers");
    assert!(acked > 100, "the load ran ({acked} answers)");
    for (e, name) in ELECTIONS.iter().enumerate() {
        let fin = &finals[e];
        let answers: Vec<&Term> = seen
            .iter()
            .flat_map(|s| s.answers.iter())
            .filter(|(x, _)| *x == e)
            .map(|(_, t)| t)
            .collect();
        eprintln!(
            "{name}: final id {}, {} candidates; {} answers, highest id {:?}",
            fin.id,
            fin.candidates.len(),
            answers.len(),
            answers.iter().map(|t| t.id).max()
        );
        // nothing acknowledged was lost: no answer is newer than the final state, and the
        // newest answers agree with it
        let at = |t: &Term| t.timestamp.unwrap_or(SystemTime::UNIX_EPOCH);
        for t in &answers {
            assert!(
                t.id <= fin.id && at(t) <= at(fin),
                "{name}: an acknowledged answer {t:?} is newer than the final state {fin:?}"
            );
            if at(t) == at(fin) {
                assert_eq!(
                    t.candidates, fin.candidates,
                    "{name}: same time, other state"
                );
            }
        }
        // for any one client, neither ids nor states went back in time (a lost write shows
        // as an older state after a newer one); and no id named two leaders
        for s in &seen {
            let mine: Vec<&Term> = s
                .answers
                .iter()
                .filter(|(x, _)| *x == e)
                .map(|(_, t)| t)
                .collect();
            for w in mine.windows(2) {
                assert!(
                    at(w[0]) <= at(w[1]),
                    "{name}: a client saw {:?} and then the older {:?}",
                    w[0],
                    w[1]
                );
            }
            let ids: Vec<u64> = mine.iter().map(|t| t.id).collect();
            assert!(
                ids.windows(2).all(|w| w[0] <= w[1]),
                "{name}: a client saw ids go down: {ids:?}"
            );
        }
        let mut leaders: HashMap<u64, HashSet<String>> = HashMap::new();
        let watched = watched.lock().unwrap();
        let from_watches = watched
            .iter()
            .filter(|((x, _), _)| *x == e)
            .flat_map(|(_, ts)| ts.iter());
        for (t, reset) in from_watches.clone() {
            assert!(!reset, "{name}: a watcher saw the id go down, to {t:?}");
        }
        let from_watches = from_watches.map(|(t, _)| t);
        for t in answers.iter().copied().chain(from_watches) {
            if let Some(l) = &t.leader {
                leaders.entry(t.id).or_default().insert(l.clone());
            }
        }
        for (id, ls) in &leaders {
            assert!(ls.len() <= 1, "{name}: id {id} named {ls:?}");
        }
    }

    // every watcher converges to the final state
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let behind: Vec<(usize, usize)> = {
            let watched = watched.lock().unwrap();
            (0..ELECTIONS.len())
                .flat_map(|e| (0..REPLICAS).map(move |w| (e, w)))
                .filter(|k| {
                    let last = watched.get(k).and_then(|ts| ts.last()).map(|(t, _)| t);
                    last.is_none_or(|t| {
                        t.id != finals[k.0].id || t.candidates != finals[k.0].candidates
                    })
                })
                .collect()
        };
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watchers {behind:?} did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in watchers {
        w.abort();
    }

    // memory stays bounded, and no replica panicked
    for (i, proc) in procs.iter().enumerate() {
        let mut p = proc.lock().await;
        let rss = p.pid().map_or(0, rss_kib);
        eprintln!(
            "replica {i}: RSS {} KiB at the start, {rss} KiB at the end",
            rss_before[i]
        );
        assert!(rss < 128 * 1024, "replica {i} holds {rss} KiB");
        p.kill().await;
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        assert!(!log.contains("panicked"), "replica {i} panicked:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
