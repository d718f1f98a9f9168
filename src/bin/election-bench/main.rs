//! `election-bench`: drives real `electiond` replicas over gRPC and reports throughput,
//! latency, Events fan-out delay, replica memory and Redis connections. In the same run it
//! calls the same Lua scripts straight on Redis (no gRPC), so the service's throughput is
//! reported as a ratio of what Redis alone does.
//!
//! It starts what it needs (a redis-server, `electiond` replicas) unless given addresses.

mod procs;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::future::BoxFuture;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;

use electiond::election::{ElectionName, Limits, MemberId};
use electiond::proto::atomix::primitive as pb;
use electiond::proto::atomix::primitive::election as epb;
use electiond::proto::atomix::primitive::election::leader_election_service_client::LeaderElectionServiceClient as Grpc;
use electiond::store::{Op, Store, StoreConfig};

use report::{FanOut, Latency, Load, Replica, Report};

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator and benchmark for electiond")]
struct Args {
    /// Seconds per load scenario (each runs once through gRPC and once straight on Redis).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Elections the write and read scenarios spread over.
    #[arg(long, default_value_t = 1000)]
    elections: usize,
    /// Open Events streams in the fan-out scenario.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Replicas to start (the fan-out spreads streams over all; load goes through the first).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Changes made in the fan-out scenario.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Scenarios to run, comma-separated: writes, reads, contention, fanout, and masters
    /// (the writes again, on a Redis Cluster of one master and then of three, one replica).
    #[arg(
        long,
        default_value = "writes,reads,contention,fanout,masters",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Use this Redis instead of starting one (the baseline runs against it too).
    #[arg(long)]
    redis_url: Option<String>,
    /// Use these replicas (host:port, comma-separated) instead of starting them; needs
    /// --redis-url for the baseline. Memory and connection figures need local processes.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<SocketAddr>,
    /// The electiond binary to start (default: next to this one).
    #[arg(long)]
    electiond: Option<PathBuf>,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args.clone()).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.table());
            }
        }
        Err(e) => {
            eprintln!("election-bench: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<Report, String> {
    let prefix = format!("bench{}", std::process::id());
    let mut _redis = None;
    let redis_url = match &args.redis_url {
        Some(u) => u.clone(),
        None => {
            let (p, url) = procs::start_redis().await?;
            _redis = Some(p);
            url
        }
    };
    let mut replicas = Vec::new();
    let addrs: Vec<SocketAddr> = if args.targets.is_empty() {
        let bin = args
            .electiond
            .clone()
            .unwrap_or_else(procs::default_electiond);
        for _ in 0..args.replicas.max(1) {
            let redis = ("ELECTION_REDIS_URL", redis_url.as_str());
            replicas.push(procs::start_replica(&bin, redis, &prefix).await?);
        }
        replicas.iter().map(|(_, a)| *a).collect()
    } else {
        args.targets.clone()
    };
    let pids: Vec<u32> = replicas.iter().filter_map(|(p, _)| p.pid()).collect();
    let store = direct_store(electiond::store::Source::Url(redis_url.clone()), &prefix)?;

    let mut report = Report::new(&args, addrs.len());
    let duration = Duration::from_secs_f64(args.duration);
    let channels = connect(addrs[0], args.clients).await?;
    let want = |s: &str| args.scenarios.iter().any(|x| x == s);

    if want("writes") {
        let e = args.elections;
        let name_of = move |k: usize, i: u64| format!("w-{}", (k * 7919 + (i as usize) / 2) % e);
        let load = enter_withdraw("writes", &args, &channels, &store, duration, name_of).await;
        report.loads.push(load);
    }

    if want("reads") {
        let e = args.elections;
        // one candidate in each election, so reads return real terms
        populate(&channels, e).await?;
        populate_direct(&store, e).await?;
        let grpc = drive("reads: GetTerm via gRPC", args.clients, duration, |k| {
            let c = Grpc::new(channels[k % channels.len()].clone());
            Box::new(move |i| {
                let name = format!("r-{}", (k * 7919 + i as usize) % e);
                let mut c = c.clone();
                Box::pin(async move {
                    let req = epb::GetTermRequest {
                        header: header(&name, ""),
                        input: Some(epb::GetTermInput {}),
                    };
                    c.get_term(req).await.map(|_| ()).map_err(|s| s.to_string())
                })
            })
        })
        .await;
        let direct = drive(
            "reads: same script, straight on Redis",
            args.clients,
            duration,
            |k| {
                let store = store.clone();
                Box::new(move |i| {
                    let name = election(&format!("r-{}", (k * 7919 + i as usize) % e));
                    direct(&store, name, None, Op::GetTerm)
                })
            },
        )
        .await;
        report
            .loads
            .push(Load::new("reads", args.clients, grpc, Some(direct)));
    }

    if want("contention") {
        let name_of = |_: usize, _: u64| "hot".to_owned();
        let load = enter_withdraw("contention", &args, &channels, &store, duration, name_of).await;
        report.loads.push(load);
    }

    if want("fanout") {
        report.fanout = Some(fan_out(&args, &addrs, &pids, &redis_url).await?);
    }
    if want("masters") {
        for masters in [1, 3] {
            report
                .loads
                .push(cluster_writes(&args, masters, duration).await?);
        }
    }
    report.replicas = replica_figures(&redis_url, &pids).await;
    Ok(report)
}

/// Each client alternates Enter and Withdraw on the election `name_of(client, call)`: first
/// through gRPC, then with the same scripts straight on Redis.
async fn enter_withdraw(
    scenario: &str,
    args: &Args,
    channels: &[Channel],
    store: &Store,
    duration: Duration,
    name_of: impl Fn(usize, u64) -> String + Copy + Send + 'static,
) -> Load {
    let label = format!("{scenario}: Enter/Withdraw via gRPC");
    let grpc = drive(&label, args.clients, duration, |k| {
        let c = Grpc::new(channels[k % channels.len()].clone());
        let id = format!("c{k}");
        Box::new(move |i| {
            let (mut c, id, name) = (c.clone(), id.clone(), name_of(k, i));
            Box::pin(async move { grpc_enter_withdraw(&mut c, &name, &id, i % 2 == 0).await })
        })
    })
    .await;
    let label = format!("{scenario}: same scripts, straight on Redis");
    let direct = drive(&label, args.clients, duration, |k| {
        let store = store.clone();
        let id = member(&format!("c{k}"));
        Box::new(move |i| {
            let op = if i % 2 == 0 { Op::Enter } else { Op::Withdraw };
            direct(&store, election(&name_of(k, i)), Some(id.clone()), op)
        })
    })
    .await;
    Load::new(scenario, args.clients, grpc, Some(direct))
}

/// The writes scenario on a fresh Redis Cluster of `masters` masters, through one replica in
/// Cluster mode (and the same scripts straight on the cluster).
async fn cluster_writes(args: &Args, masters: usize, duration: Duration) -> Result<Load, String> {
    let (_nodes, seeds, dir) = procs::start_cluster(masters).await?;
    let prefix = format!("bench{}-cluster", std::process::id());
    let bin = args
        .electiond
        .clone()
        .unwrap_or_else(procs::default_electiond);
    let redis = ("ELECTION_REDIS_CLUSTER_NODES", seeds.as_str());
    let (_replica, addr) = procs::start_replica(&bin, redis, &prefix).await?;
    let nodes = seeds.split(',').map(str::to_owned).collect();
    let store = direct_store(electiond::store::Source::Cluster { nodes }, &prefix)?;
    let channels = connect(addr, args.clients).await?;
    let e = args.elections;
    let name_of = move |k: usize, i: u64| format!("w-{}", (k * 7919 + (i as usize) / 2) % e);
    let scenario = if masters == 1 {
        "writes, cluster of 1 master".to_owned()
    } else {
        format!("writes, cluster of {masters} masters")
    };
    let load = enter_withdraw(&scenario, args, &channels, &store, duration, name_of).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(load)
}

/// The service's store on `source`, for the baseline straight on Redis (its own key prefix).
fn direct_store(source: electiond::store::Source, prefix: &str) -> Result<Store, String> {
    Store::new(&StoreConfig {
        source,
        ca_cert: None,
        wait_replicas: 0,
        key_prefix: format!("{prefix}-direct"),
        pool_size: 16,
        timeout: Duration::from_secs(2),
        lease_ttl_ms: 10_000,
        max_candidates: 10_000,
        metrics: Default::default(),
    })
    .map_err(|e| e.to_string())
}

/// One operation straight on Redis through the service's store.
fn direct(
    store: &Store,
    name: ElectionName,
    id: Option<MemberId>,
    op: Op<'static>,
) -> BoxFuture<'static, Result<(), String>> {
    let store = store.clone();
    Box::pin(async move {
        store
            .apply(&name, id.as_ref(), op)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn election(name: &str) -> ElectionName {
    ElectionName::parse(name, &LIMITS).unwrap_or_else(|e| panic!("bench election name: {e}"))
}

fn member(id: &str) -> MemberId {
    MemberId::parse(id, "client id", &LIMITS).unwrap_or_else(|e| panic!("bench client id: {e}"))
}

const LIMITS: Limits = Limits {
    max_name_bytes: 1024,
    max_id_bytes: 1024,
    max_candidates: 10_000,
};

fn header(election: &str, client: &str) -> Option<pb::RequestHeader> {
    Some(pb::RequestHeader {
        client_id: client.to_owned(),
        primitive_id: Some(pb::PrimitiveId {
            r#type: String::new(),
            name: election.to_owned(),
        }),
        request_id: 0,
        request_type: 0,
    })
}

async fn grpc_enter_withdraw(
    c: &mut Grpc<Channel>,
    election: &str,
    id: &str,
    enter: bool,
) -> Result<(), String> {
    let r = if enter {
        c.enter(epb::EnterRequest {
            header: header(election, id),
            input: Some(epb::EnterInput {}),
        })
        .await
        .map(|_| ())
    } else {
        c.withdraw(epb::WithdrawRequest {
            header: header(election, id),
            input: Some(epb::WithdrawInput {}),
        })
        .await
        .map(|_| ())
    };
    r.map_err(|s| s.to_string())
}

/// One HTTP/2 connection per client, as independent clients would have.
async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

async fn populate(channels: &[Channel], elections: usize) -> Result<(), String> {
    let results: Vec<Result<(), String>> = futures::stream::iter(0..elections)
        .map(|i| {
            let mut c = Grpc::new(channels[i % channels.len()].clone());
            async move { grpc_enter_withdraw(&mut c, &format!("r-{i}"), "holder", true).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn populate_direct(store: &Store, elections: usize) -> Result<(), String> {
    let holder = member("holder");
    let results: Vec<Result<(), String>> = futures::stream::iter(0..elections)
        .map(|i| {
            direct(
                store,
                election(&format!("r-{i}")),
                Some(holder.clone()),
                Op::Enter,
            )
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

type OpFn = Box<dyn FnMut(u64) -> BoxFuture<'static, Result<(), String>> + Send>;

/// Runs `clients` loops for `duration`, each calling its op back to back, and collects every
/// call's latency.
async fn drive(
    label: &str,
    clients: usize,
    duration: Duration,
    mut make: impl FnMut(usize) -> OpFn,
) -> Latency {
    let bar = progress(label, duration.as_millis() as u64);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for k in 0..clients {
        let mut op = make(k);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(i).await {
                    Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                i += 1;
            }
            (lat, errors, first_error)
        }));
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                bar.set_position(started.elapsed().as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        if let Ok((lat, e, fe)) = t.await {
            all.extend(lat);
            errors += e;
            if first_error.is_none() {
                first_error = fe;
            }
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    if let Some(e) = &first_error {
        eprintln!("{label}: {errors} failed calls, first: {e}");
    }
    Latency::from_micros(all, elapsed, errors)
}

fn progress(label: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:44} [{bar:30}] {percent:>3}%")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar
}

/// Opens the streams, records memory and connections, makes the changes and measures how long
/// each takes to reach every stream.
async fn fan_out(
    args: &Args,
    addrs: &[SocketAddr],
    pids: &[u32],
    redis_url: &str,
) -> Result<FanOut, String> {
    const STREAMS_PER_CONNECTION: usize = 100;
    let name = "fan";
    let rss_before: Vec<u64> = pids
        .iter()
        .map(|p| procs::rss_kib(*p).unwrap_or(0))
        .collect();

    // candidates a and b; each change anoints the other, so the term id counts the changes
    let ch0 = connect(addrs[0], 1).await?;
    let mut driver = Grpc::new(ch0[0].clone());
    grpc_enter_withdraw(&mut driver, name, "a", true).await?;
    grpc_enter_withdraw(&mut driver, name, "b", true).await?;

    let bar = progress("fan-out: opening streams", args.streams as u64);
    let per_replica = args.streams.div_ceil(addrs.len());
    let mut channels = Vec::new();
    for (r, addr) in addrs.iter().enumerate() {
        let n = per_replica.min(args.streams.saturating_sub(r * per_replica));
        channels.push(connect(*addr, n.div_ceil(STREAMS_PER_CONNECTION).max(1)).await?);
    }
    let opened: Vec<Result<tonic::Streaming<epb::EventsResponse>, String>> =
        futures::stream::iter(0..args.streams)
            .map(|i| {
                let r = i / per_replica;
                let chans = &channels[r];
                let mut c = Grpc::new(
                    chans[(i % per_replica) / STREAMS_PER_CONNECTION % chans.len()].clone(),
                );
                let bar = bar.clone();
                async move {
                    let req = epb::EventsRequest {
                        header: header(name, ""),
                        input: Some(epb::EventsInput {}),
                    };
                    let mut s = c.events(req).await.map_err(|s| s.to_string())?.into_inner();
                    s.message().await.map_err(|s| s.to_string())?; // handshake
                    bar.inc(1);
                    Ok(s)
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
    bar.finish_and_clear();
    let streams: Vec<_> = opened.into_iter().collect::<Result<_, _>>()?;
    // let allocations settle before reading memory
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after: Vec<u64> = pids
        .iter()
        .map(|p| procs::rss_kib(*p).unwrap_or(0))
        .collect();
    let conns = procs::redis_connections(redis_url, pids).await;

    let start_id = {
        let req = epb::GetTermRequest {
            header: header(name, ""),
            input: Some(epb::GetTermInput {}),
        };
        let t = driver
            .get_term(req)
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        t.output
            .and_then(|o| o.term)
            .and_then(|t| t.id)
            .map_or(0, |e| e.value)
    };
    let last_id = start_id + args.changes as u64;
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; args.changes + 1]));
    // how many streams have each change, so the driver can wait for one change to reach
    // every stream before making the next: each delay is then that change's own
    let arrived: Arc<Vec<AtomicUsize>> =
        Arc::new((0..=args.changes).map(|_| AtomicUsize::new(0)).collect());
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Ok(Some(m)) = s.message().await {
                    let id = m
                        .output
                        .and_then(|o| o.term)
                        .and_then(|t| t.id)
                        .map_or(0, |e| e.value);
                    got.push((id, Instant::now()));
                    if let Some(n) = arrived.get(id.saturating_sub(start_id) as usize) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    if id >= last_id {
                        break;
                    }
                }
                got
            })
        })
        .collect();

    let bar = progress("fan-out: changes", args.changes as u64);
    for k in 1..=args.changes {
        let who = if k % 2 == 1 { "b" } else { "a" };
        let req = epb::AnointRequest {
            header: header(name, ""),
            input: Some(epb::AnointInput {
                candidate_id: who.to_owned(),
            }),
        };
        if let Ok(mut s) = sent.lock() {
            s[k] = Some(Instant::now());
        }
        driver.anoint(req).await.map_err(|s| s.to_string())?;
        bar.inc(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while arrived[k].load(Ordering::Relaxed) < args.streams && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bar.finish_and_clear();

    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let mut per_delivery = Vec::new();
    let mut missing = 0u64;
    let mut all_by_change: Vec<Option<Instant>> = vec![None; args.changes + 1];
    for r in readers {
        let got = match tokio::time::timeout(Duration::from_secs(30), r).await {
            Ok(Ok(g)) => g,
            _ => {
                missing += 1;
                continue;
            }
        };
        let mut seen = 0;
        for (id, at) in got {
            let k = id.saturating_sub(start_id) as usize;
            if let Some(Some(t0)) = sent.get(k) {
                seen += 1;
                per_delivery.push(at.saturating_duration_since(*t0).as_micros() as u64);
                let slot = &mut all_by_change[k];
                *slot = Some(slot.map_or(at, |s: Instant| s.max(at)));
            }
        }
        missing += (args.changes - seen.min(args.changes)) as u64;
    }
    let every_stream: Vec<u64> = (1..=args.changes)
        .filter_map(|k| {
            Some(
                all_by_change[k]?
                    .saturating_duration_since(sent[k]?)
                    .as_micros() as u64,
            )
        })
        .collect();
    Ok(FanOut {
        streams: args.streams,
        replicas: addrs.len(),
        changes: args.changes,
        delivery: Latency::from_micros(per_delivery, Duration::ZERO, missing),
        until_every_stream: Latency::from_micros(every_stream, Duration::ZERO, 0),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        redis_connections: pids
            .iter()
            .map(|p| conns.get(p).copied().unwrap_or(0))
            .collect(),
    })
}

/// Each replica's memory and Redis connections at the end of the run.
async fn replica_figures(redis_url: &str, pids: &[u32]) -> Vec<Replica> {
    let conns = procs::redis_connections(redis_url, pids).await;
    pids.iter()
        .map(|pid| Replica {
            rss_kib: procs::rss_kib(*pid).unwrap_or(0),
            redis_connections: conns.get(pid).copied().unwrap_or(0),
        })
        .collect()
}
