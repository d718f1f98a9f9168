//! `election-bench`: drives real `electiond` replicas over gRPC and reports throughput,
//! latency, where each call's CPU went, Events fan-out delay, replica memory and Redis
//! connections. In the same run it makes the same calls straight on Redis through the
//! service's store (no gRPC), so the service's throughput is also a ratio of what Redis alone
//! does, and, with `etcd` installed, the same writes and reads through etcd's election API.
//!
//! It starts what it needs (a redis-server, `electiond` replicas) unless given addresses.

mod big;
mod cpu;
mod etcd;
mod fanout;
mod floor;
mod listing;
mod load;
mod procs;
mod report;
mod sessions;

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

use fanout::fan_out;
use load::{
    connect, drive, grpc_enter_withdraw, grpc_enter_withdraw_client, grpc_get_term,
    grpc_get_term_client, populate, populate_direct, progress,
};
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
    /// HTTP/2 connections the clients share (round robin), as callers in one process share a
    /// channel; set it to --clients for one connection per client.
    #[arg(long, default_value_t = 8)]
    connections: usize,
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
    /// Scenarios to run, comma-separated: writes, reads, contention, big (one election of
    /// 10,000 candidates), etcd (writes and reads through etcd's election API beside the same
    /// through electiond, when `etcd` is on PATH), fanout, masters (the writes again, on a
    /// Redis Cluster of one master and then of three, one replica), and sessions (workers in
    /// many elections kept alive by per-election calls, then by sessions; on a Redis and two
    /// replicas of its own), listing (--listing-elections made, then listed in pages:
    /// how long each listing step holds Redis), and floor (the same stack doing the least it
    /// can: a server answering a fixed term under the reads' and writes' calls, and a Redis
    /// function returning 1; their ratios to reads and writes of the same run).
    #[arg(
        long,
        default_value = "writes,reads,contention,big,etcd,fanout,masters,sessions,listing,floor",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Serve the floor (a fixed answer to every election call, no storage) on this address
    /// until killed: what the floor scenario starts this binary as.
    #[arg(long, hide = true)]
    serve_floor: Option<SocketAddr>,
    /// Listing scenario: elections made, then listed.
    #[arg(long, default_value_t = 100_000)]
    listing_elections: usize,
    /// Sessions scenario: workers, each a candidate in every election.
    #[arg(long, default_value_t = 50)]
    session_workers: usize,
    /// Sessions scenario: elections.
    #[arg(long, default_value_t = 2000)]
    session_elections: usize,
    /// Sessions scenario: the replicas' lease TTL, in ms.
    #[arg(long, default_value_t = 10_000)]
    session_ttl_ms: u64,
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
    /// Skip the phases that send the same calls straight to Redis (so that Redis sees only the
    /// replicas' calls, as when counting what each call costs it).
    #[arg(long)]
    no_baseline: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Bearer token sent with every gRPC call, for replicas with access control.
    #[arg(long, env = "ELECTION_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The `authorization` metadata every gRPC call carries (`--token`), set once at start.
static AUTHORIZATION: std::sync::OnceLock<tonic::metadata::AsciiMetadataValue> =
    std::sync::OnceLock::new();

/// `message` as a gRPC request, with the token when one was given.
pub(crate) fn signed<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(v) = AUTHORIZATION.get() {
        r.metadata_mut().insert("authorization", v.clone());
    }
    r
}

fn main() {
    let args = Args::parse();
    if let Some(addr) = args.serve_floor {
        if let Err(e) = floor::serve(addr) {
            eprintln!("election-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("election-bench: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(bench(args));
}

async fn bench(args: Args) {
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
    if let Some(token) = &args.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token has characters a header cannot hold".to_owned())?;
        let _ = AUTHORIZATION.set(value);
    }
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
    let channels = connect(addrs[0], args.connections).await?;
    let mut meter = cpu::Meter {
        replicas: pids.clone(),
        redis: redis_connection(&redis_url).await,
    };
    let want = |s: &str| args.scenarios.iter().any(|x| x == s);

    if want("writes") {
        let e = args.elections;
        let name_of = move |k: usize, i: u64| format!("w-{}", (k * 7919 + (i as usize) / 2) % e);
        let load = enter_withdraw(
            "writes", &args, &channels, &store, &mut meter, duration, name_of,
        )
        .await;
        report.loads.push(load);
    }

    if want("reads") {
        let e = args.elections;
        // one candidate in each election, so reads return real terms
        populate(&channels, e).await?;
        if !args.no_baseline {
            populate_direct(&store, e).await?;
        }
        let grpc = meter
            .measure(drive(
                "reads: GetTerm via gRPC",
                args.clients,
                duration,
                grpc_get_term_client(&channels, move |k, i| {
                    format!("r-{}", (k * 7919 + i as usize) % e)
                }),
            ))
            .await;
        let direct = baseline(
            &args,
            &mut meter,
            drive(
                "reads: same call, straight on Redis",
                args.clients,
                duration,
                |k| {
                    let store = store.clone();
                    Box::new(move |i| {
                        let name = election(&format!("r-{}", (k * 7919 + i as usize) % e));
                        direct(&store, name, None, Op::GetTerm)
                    })
                },
            ),
        )
        .await;
        report
            .loads
            .push(Load::new("reads", args.clients, grpc, direct));
    }

    if want("contention") {
        let name_of = |_: usize, _: u64| "hot".to_owned();
        let load = enter_withdraw(
            "contention",
            &args,
            &channels,
            &store,
            &mut meter,
            duration,
            name_of,
        )
        .await;
        report.loads.push(load);
    }

    if want("big") {
        let loads = big::big_election(&args, &channels, &mut meter, duration).await?;
        report.loads.extend(loads);
    }

    if want("etcd") {
        report.etcd = etcd::compare(&args, &channels, &mut meter, duration).await?;
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
    if want("sessions") {
        report.sessions = Some(sessions::sessions(&args).await?);
    }
    if want("listing") {
        report.listing = Some(listing::listing(&args, &channels, &redis_url).await?);
    }
    if want("floor") {
        let fanout = report.fanout.as_ref();
        report.floor =
            Some(floor::floor(&args, &redis_url, &report.loads, fanout, duration).await?);
    }
    report.replicas = replica_figures(&redis_url, &pids).await;
    Ok(report)
}

/// Each client alternates Enter and Withdraw on the election `name_of(client, call)`: first
/// through gRPC, then with the same calls straight on Redis.
async fn enter_withdraw(
    scenario: &str,
    args: &Args,
    channels: &[Channel],
    store: &Store,
    meter: &mut cpu::Meter,
    duration: Duration,
    name_of: impl Fn(usize, u64) -> String + Copy + Send + 'static,
) -> Load {
    let label = format!("{scenario}: Enter/Withdraw via gRPC");
    let grpc = meter
        .measure(drive(
            &label,
            args.clients,
            duration,
            grpc_enter_withdraw_client(channels, name_of),
        ))
        .await;
    let label = format!("{scenario}: same calls, straight on Redis");
    let direct = baseline(
        args,
        meter,
        drive(&label, args.clients, duration, |k| {
            let store = store.clone();
            let id = member(&format!("c{k}"));
            Box::new(move |i| {
                let op = if i % 2 == 0 { Op::Enter } else { Op::Withdraw };
                direct(&store, election(&name_of(k, i)), Some(id.clone()), op)
            })
        }),
    )
    .await;
    Load::new(scenario, args.clients, grpc, direct)
}

/// Runs a straight-on-Redis phase, unless `--no-baseline`.
async fn baseline(
    args: &Args,
    meter: &mut cpu::Meter,
    phase: impl std::future::Future<Output = Latency>,
) -> Option<report::Measured> {
    if args.no_baseline {
        return None;
    }
    Some(meter.measure(phase).await)
}

/// The writes scenario on a fresh Redis Cluster of `masters` masters, through one replica in
/// Cluster mode (and the same calls straight on the cluster).
async fn cluster_writes(args: &Args, masters: usize, duration: Duration) -> Result<Load, String> {
    let (_nodes, seeds, dir) = procs::start_cluster(masters).await?;
    let prefix = format!("bench{}-cluster", std::process::id());
    let bin = args
        .electiond
        .clone()
        .unwrap_or_else(procs::default_electiond);
    let redis = ("ELECTION_REDIS_CLUSTER_NODES", seeds.as_str());
    let (replica, addr) = procs::start_replica(&bin, redis, &prefix).await?;
    let mut meter = cpu::Meter {
        replicas: replica.pid().into_iter().collect(),
        redis: None,
    };
    let nodes = seeds.split(',').map(str::to_owned).collect();
    let store = direct_store(electiond::store::Source::Cluster { nodes }, &prefix)?;
    let channels = connect(addr, args.connections).await?;
    let e = args.elections;
    let name_of = move |k: usize, i: u64| format!("w-{}", (k * 7919 + (i as usize) / 2) % e);
    let scenario = if masters == 1 {
        "writes, cluster of 1 master".to_owned()
    } else {
        format!("writes, cluster of {masters} masters")
    };
    let load = enter_withdraw(
        &scenario, args, &channels, &store, &mut meter, duration, name_of,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(load)
}

/// A connection for reading Redis's own counters; `None` when it cannot be had.
async fn redis_connection(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    client.get_multiplexed_async_connection().await.ok()
}

/// The service's store on `source`, for the baseline straight on Redis (its own key prefix).
fn direct_store(source: electiond::store::Source, prefix: &str) -> Result<Store, String> {
    Store::new(&StoreConfig {
        source,
        ca_cert: None,
        wait_replicas: 0,
        history_len: 100,
        key_prefix: format!("{prefix}-direct"),
        pool_size: 16,
        timeout: Duration::from_secs(2),
        lease_ttl_ms: 10_000,
        max_candidates: LIMITS.max_candidates,
        max_term_bytes: LIMITS.max_term_bytes,
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
    max_term_bytes: 524_288,
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

/// An Events stream on `election`, its handshake received: every change from now on reaches it.
async fn watch(
    mut c: Grpc<Channel>,
    election: &str,
) -> Result<tonic::Streaming<epb::EventsResponse>, String> {
    let req = epb::EventsRequest {
        header: header(election, ""),
        input: Some(epb::EventsInput {}),
    };
    let mut s = c
        .events(signed(req))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    s.message().await.map_err(|s| s.to_string())?; // the handshake
    Ok(s)
}

/// An Events stream on each (channel, election) of `targets`, in their order, 256 opened at a
/// time, with a progress bar named `label`.
async fn watch_all(
    label: &str,
    targets: Vec<(Channel, String)>,
) -> Result<Vec<tonic::Streaming<epb::EventsResponse>>, String> {
    let bar = progress(label, targets.len() as u64);
    let opened: Vec<Result<_, String>> = futures::stream::iter(targets)
        .map(|(channel, election)| {
            let bar = bar.clone();
            async move {
                let s = watch(Grpc::new(channel), &election).await?;
                bar.inc(1);
                Ok(s)
            }
        })
        .buffered(256)
        .collect()
        .await;
    bar.finish_and_clear();
    opened.into_iter().collect()
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
