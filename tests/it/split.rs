//! A network partition across a Redis failover, as Jepsen partitioned Redis Sentinel: the
//! master and some of its Redis are cut off from the rest while one `electiond` still reaches
//! them, the rest elect a new master, and the split heals. Once with a Sentinel group (a master,
//! two replicas, three Sentinels), once with a Redis Cluster (three masters, one replica each).
//!
//! Every Redis, the Sentinels and each `electiond` run on machines of their own (network
//! namespaces on one bridge, `netns::Lan`), so that a split is real: packets between the two
//! sides are dropped silently. The test process reaches every machine, so clients stay on both
//! sides: some call the `electiond` with the old master, others the one with the new.
//!
//! Checked over every answer any client received and every event any watcher saw:
//! - no term id ever names two leaders;
//! - after the last heal, the next leader gets an id above every id anyone was told, so a
//!   fencing token handed out on the losing side is never handed out again;
//! - with the recommended settings (`WAIT` for every replica), nothing acknowledged is lost:
//!   every acknowledged Enter of the set election is still there, and no client saw its
//!   answers go back in time. With fewer replicas confirming, the lost changes are counted and
//!   printed (`docs/FAULTS.md` has the figures).
//!
//! `SPLIT_ROUNDS` (default 2: a split, a heal, a second split of the new master) and
//! `SPLIT_SEED` (printed) replay a run; `SPLIT_WAIT` sets `ELECTION_REDIS_WAIT_REPLICAS` for
//! the tests that check fencing alone. Needs root (namespaces, `iptables`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use electiond_client::{Client, Term};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::process::Child;

use crate::harness::{create_cluster, election_keys, prefix, slot_master, CLUSTER_NODE};
use crate::netns::{Lan, Machine};

/// Clients per side that change leaders, and that enter the set.
const CHURNERS: usize = 3;
const REDIS_PORT: u16 = 6379;
const SERVICE_PORT: u16 = 5678;

/// Processes on machines of the network, killed when dropped, and where they log.
struct Procs {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Procs {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("electiond-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("log dir");
        Self {
            children: Vec::new(),
            dir,
        }
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file")
    }

    /// A `redis-server` on `m` (port 6379, every address), with `extra` arguments; its files
    /// in a directory of its own.
    fn redis(&mut self, m: &Machine, name: &str, extra: &[String]) {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = m
            .command("redis-server")
            .args(["--port", &REDIS_PORT.to_string(), "--bind", "0.0.0.0"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.children.push(child);
    }

    /// An `electiond` on `m`, serving on port 5678, with `env` on top of the test defaults.
    fn electiond(&mut self, m: &Machine, name: &str, prefix: &str, env: &[(&str, String)]) {
        let mut cmd = m.command(env!("CARGO_BIN_EXE_electiond"));
        cmd.env("ELECTION_LISTEN_ADDR", format!("0.0.0.0:{SERVICE_PORT}"))
            .env("ELECTION_METRICS_ADDR", "")
            .env("ELECTION_CONSOLE_ADDR", "")
            .env("ELECTION_KEY_PREFIX", prefix)
            .env("ELECTION_REDIS_TIMEOUT_MS", "1000")
            .env("ELECTION_LEASE_TTL_MS", "0")
            .env("ELECTION_KEEPALIVE_INTERVAL_MS", "1000")
            .env("ELECTION_KEEPALIVE_TIMEOUT_MS", "1000")
            .env("ELECTION_DRAIN_TIMEOUT_MS", "500");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(self.log(name)))
            .kill_on_drop(true)
            .spawn()
            .expect("electiond starts");
        self.children.push(child);
    }

    /// What every `electiond` wrote, for a failure message or a check.
    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                out += &format!("--- {}\n", p.display());
                out += &std::fs::read_to_string(&p).unwrap_or_default();
            }
        }
        out
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

/// A connection from the test to the Redis (or Sentinel) at `ip:port`.
async fn redis_at(ip: &str, port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{ip}:{port}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn query<T: redis::FromRedisValue>(ip: &str, port: u16, args: &[&str]) -> Option<T> {
    let mut c = redis_at(ip, port).await.ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.ok()
}

/// `INFO replication` of the Redis on `m`, as key -> value.
async fn replication(m: &Machine) -> HashMap<String, String> {
    let info: String = query(&m.ip, REDIS_PORT, &["INFO", "replication"])
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the elections live, and how its Redis fails over.
enum Redis {
    Sentinel {
        nodes: Vec<Machine>,
        sentinels: Machine,
    },
    Cluster {
        nodes: Vec<Machine>,
    },
}

const SENTINEL_PORTS: [u16; 3] = [26379, 26380, 26381];

impl Redis {
    /// A master with two replicas, and three Sentinels (quorum 2) on a machine of their own.
    async fn sentinel(lan: &mut Lan, procs: &mut Procs, redis_args: &[String]) -> Self {
        let nodes: Vec<Machine> = (0..3).map(|_| lan.machine()).collect();
        let sentinels = lan.machine();
        for (i, m) in nodes.iter().enumerate() {
            let mut args = redis_args.to_vec();
            if i > 0 {
                args.extend(["--replicaof".into(), nodes[0].ip.clone(), "6379".into()]);
            }
            procs.redis(m, &format!("redis-{i}"), &args);
        }
        for (i, port) in SENTINEL_PORTS.iter().enumerate() {
            let conf = procs.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 0.0.0.0\nprotected-mode no\ndir {}\n\
                     sentinel monitor elect {} 6379 2\n\
                     sentinel down-after-milliseconds elect 1000\n\
                     sentinel failover-timeout elect 5000\n",
                    procs.dir.display(),
                    nodes[0].ip,
                ),
            )
            .expect("sentinel conf");
            let child = sentinels
                .command("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("sentinel starts");
            procs.children.push(child);
        }
        let redis = Redis::Sentinel { nodes, sentinels };
        // every Sentinel knows both replicas and the other two Sentinels, so that a failover
        // has somewhere to go and a quorum to decide it
        let ip = redis.sentinel_ip();
        until(
            "the Sentinels know the group",
            Duration::from_secs(40),
            || {
                let ip = ip.clone();
                async move {
                    for port in SENTINEL_PORTS {
                        let Some(m) = query::<HashMap<String, String>>(
                            &ip,
                            port,
                            &["SENTINEL", "MASTER", "elect"],
                        )
                        .await
                        else {
                            return false;
                        };
                        if m.get("num-slaves").map(String::as_str) != Some("2")
                            || m.get("num-other-sentinels").map(String::as_str) != Some("2")
                        {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await;
        redis
    }

    /// Three masters with one replica each.
    async fn cluster(lan: &mut Lan, procs: &mut Procs, redis_args: &[String]) -> Self {
        let nodes: Vec<Machine> = (0..6).map(|_| lan.machine()).collect();
        for (i, m) in nodes.iter().enumerate() {
            let mut args = redis_args.to_vec();
            args.extend(CLUSTER_NODE.map(str::to_owned));
            procs.redis(m, &format!("redis-{i}"), &args);
        }
        for m in &nodes {
            until("a cluster node starts", Duration::from_secs(10), || async {
                query::<String>(&m.ip, REDIS_PORT, &["PING"])
                    .await
                    .is_some()
            })
            .await;
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|m| format!("{}:{REDIS_PORT}", m.ip))
            .collect();
        create_cluster(&addresses, 1, None).await;
        let redis = Redis::Cluster { nodes };
        redis.wait_settled().await;
        redis
    }

    fn nodes(&self) -> &[Machine] {
        match self {
            Redis::Sentinel { nodes, .. } | Redis::Cluster { nodes } => nodes,
        }
    }

    fn sentinel_ip(&self) -> String {
        match self {
            Redis::Sentinel { sentinels, .. } => sentinels.ip.clone(),
            Redis::Cluster { .. } => unreachable!("a cluster has no Sentinels"),
        }
    }

    /// What a replica needs to find this Redis.
    fn service_env(&self, wait: u32) -> Vec<(&'static str, String)> {
        let mut env = vec![("ELECTION_REDIS_WAIT_REPLICAS", wait.to_string())];
        match self {
            Redis::Sentinel { sentinels, .. } => {
                let urls: Vec<String> = SENTINEL_PORTS
                    .iter()
                    .map(|p| format!("redis://{}:{p}", sentinels.ip))
                    .collect();
                env.push(("ELECTION_REDIS_SENTINELS", urls.join(",")));
                env.push(("ELECTION_REDIS_SENTINEL_MASTER", "elect".into()));
            }
            Redis::Cluster { nodes } => {
                let urls: Vec<String> = nodes
                    .iter()
                    .map(|m| format!("redis://{}:{REDIS_PORT}", m.ip))
                    .collect();
                env.push(("ELECTION_REDIS_CLUSTER_NODES", urls.join(",")));
            }
        }
        env
    }

    /// The node that is master of `key`, as seen from node `from` (for Sentinel, the
    /// Sentinels are asked).
    async fn master_seen_from(&self, from: usize, key: &str) -> Option<usize> {
        let ip = match self {
            Redis::Sentinel { sentinels, .. } => {
                let addr: Vec<String> = query(
                    &sentinels.ip,
                    SENTINEL_PORTS[0],
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "elect"],
                )
                .await?;
                addr.first()?.clone()
            }
            Redis::Cluster { nodes } => {
                let ip = &nodes[from].ip;
                let slot: u16 = query(ip, REDIS_PORT, &["CLUSTER", "KEYSLOT", key]).await?;
                let ranges: Vec<redis::Value> =
                    query(ip, REDIS_PORT, &["CLUSTER", "SLOTS"]).await?;
                match slot_master(&ranges, slot)?.first()? {
                    redis::Value::BulkString(ip) => String::from_utf8_lossy(ip).into_owned(),
                    _ => return None,
                }
            }
        };
        self.nodes().iter().position(|m| m.ip == ip)
    }

    /// Every node serves its part: Sentinel, each replica linked to the master; Cluster, every
    /// node says `cluster_state:ok`, with three masters and three linked replicas.
    async fn wait_settled(&self) {
        match self {
            Redis::Sentinel { nodes, .. } => {
                until(
                    "the old master and replicas follow the new master",
                    Duration::from_secs(60),
                    || async {
                        let Some(master) = self.master_seen_from(0, "").await else {
                            return false;
                        };
                        for (i, m) in nodes.iter().enumerate() {
                            let r = replication(m).await;
                            let ok = if i == master {
                                r.get("role").map(String::as_str) == Some("master")
                                    && r.get("connected_slaves").map(String::as_str) == Some("2")
                            } else {
                                r.get("role").map(String::as_str) == Some("slave")
                                    && r.get("master_host") == Some(&nodes[master].ip)
                                    && r.get("master_link_status").map(String::as_str) == Some("up")
                            };
                            if !ok {
                                return false;
                            }
                        }
                        true
                    },
                )
                .await;
            }
            Redis::Cluster { nodes } => {
                until("the cluster settles", Duration::from_secs(60), || async {
                    let mut masters = 0;
                    for m in nodes {
                        let info: String = query(&m.ip, REDIS_PORT, &["CLUSTER", "INFO"])
                            .await
                            .unwrap_or_default();
                        if !info.contains("cluster_state:ok") {
                            return false;
                        }
                        let r = replication(m).await;
                        match r.get("role").map(String::as_str) {
                            Some("master") => masters += 1,
                            Some("slave") => {
                                if r.get("master_link_status").map(String::as_str) != Some("up") {
                                    return false;
                                }
                            }
                            _ => return false,
                        }
                    }
                    masters == 3
                })
                .await;
            }
        }
    }

    /// The two sides of a split of `master`: the machines cut off with it (besides the old
    /// side's `electiond`), and the rest. Sentinel: the master and one of its replicas
    /// (picked by `rng`) against the other replica and the Sentinels. Cluster: the master alone
    /// against every other node, its replica among them.
    fn sides(&self, master: usize, rng: &mut StdRng) -> (Vec<Machine>, Vec<Machine>) {
        let nodes = self.nodes();
        match self {
            Redis::Sentinel { sentinels, .. } => {
                let others: Vec<usize> = (0..3).filter(|i| *i != master).collect();
                let with = others[rng.random_range(0..2)];
                let away = others.into_iter().find(|i| *i != with).expect("two others");
                (
                    vec![nodes[master].clone(), nodes[with].clone()],
                    vec![nodes[away].clone(), sentinels.clone()],
                )
            }
            Redis::Cluster { .. } => (
                vec![nodes[master].clone()],
                nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != master)
                    .map(|(_, m)| m.clone())
                    .collect(),
            ),
        }
    }
}

/// Everything the clients were told, and by which side.
#[derive(Default)]
struct Told {
    /// (election, client, answer) for every acknowledged answer, in each client's order.
    answers: Vec<(String, String, Term)>,
    /// Set-election candidates whose Enter was acknowledged.
    entered: HashSet<String>,
    /// Answers acknowledged by the `electiond` on the old master's side while it was cut off.
    during_split: usize,
}

/// Runs `rounds` splits of the elections' master under load, then checks what the clients
/// and watchers saw. `no_loss`: the settings promise that nothing acknowledged is lost.
async fn split_under_load(name: &str, lan_n: u32, cluster: bool, wait: u32, no_loss: bool) {
    let seed: u64 = std::env::var("SPLIT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let rounds: usize = std::env::var("SPLIT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // the tests that promise no loss run with the settings that keep that promise; the others
    // check fencing, which must hold with any number of replicas confirming
    let wait = match std::env::var("SPLIT_WAIT") {
        Ok(w) if !no_loss => w.parse().expect("SPLIT_WAIT is a number"),
        _ => wait,
    };
    eprintln!("{name}: seed {seed} (replay: SPLIT_SEED={seed}), {rounds} rounds, WAIT {wait}");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut lan = Lan::create(lan_n);
    let mut procs = Procs::new(name);
    let redis_args: Vec<String> = if no_loss {
        // as recommended: a master stops taking writes once a replica is gone
        let replicas = if cluster { "1" } else { "2" };
        [
            "--min-replicas-to-write",
            replicas,
            "--min-replicas-max-lag",
            "3",
        ]
        .map(str::to_owned)
        .to_vec()
    } else {
        Vec::new()
    };
    let redis = if cluster {
        Redis::cluster(&mut lan, &mut procs, &redis_args).await
    } else {
        Redis::sentinel(&mut lan, &mut procs, &redis_args).await
    };
    let p = prefix(name);
    // the test's elections share one bucket, so on a Cluster they share one master: two
    // whose leaders change all the time, and one that only grows (every acknowledged Enter
    // must stay)
    let key = |e: &str| election_keys(&p, e).term;
    let bucket = |e: &str| {
        let k = key(e);
        k.split_once('}').map(|(b, _)| b.to_owned())
    };
    let home = bucket("lead");
    let mut names = (0..)
        .map(|i| format!("lead-{i}"))
        .filter(|e| bucket(e) == home);
    let churned: [String; 2] = [names.next().unwrap(), names.next().unwrap()];
    let set = (0..)
        .map(|i| format!("set-{i}"))
        .find(|e| bucket(e) == home)
        .unwrap();
    let home_key = key("lead");
    let all: Vec<String> = churned.iter().chain([&set]).cloned().collect();

    // one electiond on each side of the split-to-be
    let services = [lan.machine(), lan.machine()];
    for (i, m) in services.iter().enumerate() {
        procs.electiond(m, &format!("electiond-{i}"), &p, &redis.service_env(wait));
    }
    let endpoint = |i: usize| format!("{}:{SERVICE_PORT}", services[i].ip);
    let client = |i: usize| {
        Client::builder([endpoint(i)])
            .timeout(Duration::from_secs(1))
            .build()
            .expect("client")
    };
    for i in 0..2 {
        let c = client(i);
        until("electiond serves", Duration::from_secs(20), || async {
            c.get(&churned[0]).await.is_ok()
        })
        .await;
    }

    // watchers: every election, through each side
    let watched: Arc<Mutex<Vec<(usize, String, Term)>>> = Arc::default();
    let mut watchers = Vec::new();
    for side in 0..2 {
        for e in all.iter() {
            let mut watch = client(side).watch(e);
            let (watched, e) = (watched.clone(), e.to_string());
            watchers.push(tokio::spawn(async move {
                loop {
                    match watch.next().await {
                        Ok(item) => watched.lock().unwrap().push((side, e.clone(), item.term)),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
    }

    // the load: on each side, clients that change leaders and one that enters the set
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for side in 0..2 {
        for k in 0..=CHURNERS {
            let (c, stop, cut) = (client(side), stop.clone(), cut.clone());
            let (churned, set) = (churned.clone(), set.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ ((side * 16 + k + 1) as u64));
            load.push(tokio::spawn(async move {
                let me = format!("s{side}c{k}");
                let mut told = Told::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (e, r) = if k == CHURNERS {
                        n += 1;
                        let id = format!("{me}-{n}");
                        let r = c.enter(&set, &id).await;
                        if r.is_ok() {
                            told.entered.insert(id);
                        }
                        (set.as_str(), r)
                    } else {
                        let e = churned[rng.random_range(0..churned.len())].as_str();
                        let other = format!(
                            "s{}c{}",
                            rng.random_range(0..2),
                            rng.random_range(0..CHURNERS)
                        );
                        let r = match rng.random_range(0..10) {
                            0..=2 => c.enter(e, &me).await,
                            3..=4 => c.withdraw(e, &me).await,
                            5..=6 => c.anoint(e, &other).await,
                            7 => c.promote(e, &other).await,
                            8 => c.evict(e, &other).await,
                            _ => c.get(e).await,
                        };
                        (e, r)
                    };
                    if let Ok(t) = r {
                        if side == 0 && cut.load(Ordering::Relaxed) {
                            told.during_split += 1;
                        }
                        told.answers.push((e.to_owned(), me.clone(), t));
                    }
                    // the set grows slower: it must stay far below the candidate limit
                    let pause = if k == CHURNERS { 20..40 } else { 0..10 };
                    tokio::time::sleep(Duration::from_millis(rng.random_range(pause))).await;
                }
                told
            }));
        }
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    for round in 1..=rounds {
        let master = redis
            .master_seen_from(0, &home_key)
            .await
            .expect("a master before the split");
        let (old, new) = redis.sides(master, &mut rng);
        let new: Vec<Machine> = new.into_iter().chain([services[1].clone()]).collect();
        let old: Vec<Machine> = old.into_iter().chain([services[0].clone()]).collect();
        let started = Instant::now();
        let new_refs: Vec<&Machine> = new.iter().collect();
        for m in &old {
            m.isolate(&new_refs);
        }
        cut.store(true, Ordering::Relaxed);
        // the majority side elects a new master (asked from there: the old one still thinks
        // it is master)
        let witness = redis
            .nodes()
            .iter()
            .position(|m| m.ip == new[0].ip)
            .expect("a node");
        until("a failover", Duration::from_secs(30), || async {
            redis
                .master_seen_from(witness, &home_key)
                .await
                .is_some_and(|m| m != master)
        })
        .await;
        let failed_over = started.elapsed();
        // both sides go on for a while
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..4000))).await;
        for m in &old {
            m.rejoin();
        }
        cut.store(false, Ordering::Relaxed);
        eprintln!(
            "round {round}: split off node {master} with {:?}; failed over after {:.1} s, healed after {:.1} s",
            old.iter().map(|m| m.ip.as_str()).collect::<Vec<_>>(),
            failed_over.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        redis.wait_settled().await;
        // the old side's electiond serves again, from the new master
        let c = client(0);
        until(
            "the old side's electiond serves again",
            Duration::from_secs(30),
            || async { c.get(&churned[0]).await.is_ok() },
        )
        .await;
        eprintln!(
            "round {round}: settled after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut told = Vec::new();
    for l in load {
        told.push(l.await.expect("client task"));
    }

    // both electiond agree on what Redis holds now
    let mut finals: HashMap<&String, Term> = HashMap::new();
    let (a, b) = (client(0), client(1));
    for e in all.iter() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match (a.get(e).await, b.get(e).await) {
                (Ok(x), Ok(y)) if x == y => {
                    finals.insert(e, x);
                    break;
                }
                r => assert!(Instant::now() < deadline, "{e}: the sides disagree: {r:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // and every watcher caught up with it
    until("watchers converge", Duration::from_secs(20), || async {
        let w = watched.lock().unwrap();
        all.iter().all(|e| {
            (0..2).all(|side| {
                w.iter()
                    .rev()
                    .find(|(s, x, _)| *s == side && x == e)
                    .is_some_and(|(_, _, t)| t.candidates == finals[e].candidates)
            })
        })
    })
    .await;
    for w in &watchers {
        w.abort();
    }

    let answers = told.iter().map(|t| t.answers.len()).sum::<usize>();
    let during_split = told.iter().map(|t| t.during_split).sum::<usize>();
    let entered: HashSet<&String> = told.iter().flat_map(|t| &t.entered).collect();
    let held: HashSet<&String> = finals[&set].candidates.iter().collect();
    let lost: Vec<&&String> = entered.difference(&held).collect();
    eprintln!(
        "{name}: {answers} answers, {during_split} acknowledged on the cut-off side during a split; \
         {} of {} acknowledged Enters lost",
        lost.len(),
        entered.len()
    );

    // the watchers are stopped: what they saw is final
    let watched = std::mem::take(&mut *watched.lock().unwrap());
    for e in &churned {
        let said = told
            .iter()
            .flat_map(|t| &t.answers)
            .filter(|(x, _, _)| x == e)
            .map(|(_, _, t)| t)
            .chain(watched.iter().filter(|(_, x, _)| x == e).map(|(_, _, t)| t));
        let mut leaders: HashMap<u64, HashSet<&str>> = HashMap::new();
        let mut highest = 0;
        for t in said {
            highest = highest.max(t.id);
            if let Some(l) = &t.leader {
                leaders.entry(t.id).or_default().insert(l);
            }
        }
        let twice: Vec<_> = leaders.iter().filter(|(_, ls)| ls.len() > 1).collect();
        assert!(
            twice.is_empty(),
            "{e}: term ids named two leaders: {twice:?}"
        );
        // the next leader, whichever side it comes through, is above every id ever told
        let c = client(0);
        c.enter(e, "probe").await.expect("probe enters");
        let t = c.anoint(e, "probe").await.expect("probe is anointed");
        eprintln!(
            "{e}: final id {}, highest id told {highest}, the next leader got {}",
            finals[e].id, t.id
        );
        assert!(
            t.id > highest,
            "{e}: the next leader got id {}, not above {highest}, an id already told",
            t.id
        );
    }
    if no_loss {
        assert!(
            lost.is_empty(),
            "acknowledged Enters lost: {} of {}, e.g. {:?}",
            lost.len(),
            entered.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        // no client saw an election go back in time
        let at = |t: &Term| t.timestamp.unwrap_or(SystemTime::UNIX_EPOCH);
        for t in &told {
            for e in all.iter() {
                let mine: Vec<&Term> = t
                    .answers
                    .iter()
                    .filter(|(x, _, _)| x == e)
                    .map(|(_, _, t)| t)
                    .collect();
                for w in mine.windows(2) {
                    assert!(
                        at(w[0]) <= at(w[1]),
                        "{e}: a client saw {:?} and then the older {:?}",
                        w[0],
                        w[1]
                    );
                }
            }
        }
    }
    let logs = procs.logs();
    assert!(!logs.contains("panicked"), "a replica panicked:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_split_never_gives_one_term_id_to_two_leaders() {
    split_under_load("split-sentinel", 4, false, 1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_split_with_every_replica_confirming_loses_nothing() {
    split_under_load("split-sentinel-all", 5, false, 2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_split_never_gives_one_term_id_to_two_leaders() {
    split_under_load("split-cluster", 6, true, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_split_with_the_replica_confirming_loses_nothing() {
    split_under_load("split-cluster-all", 7, true, 1, true).await;
}
