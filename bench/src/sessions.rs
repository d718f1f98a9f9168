//! Sessions: W workers, each a candidate in every one of E elections, kept alive for a while
//! the way an Atomix client must (one GetTerm per election per worker every third of the lease
//! TTL), and then by one KeepAlive per worker every third of the TTL; what each costs the
//! replicas and Redis per second of steady state. Then the worker that leads every election
//! stops: how long until every election has a new leader, and the events that makes, while the
//! others keep their sessions and readers keep calling.
//!
//! It runs on its own redis-server and two replicas with the lease TTL of `--session-ttl-ms`,
//! so that nothing else the benchmark does shares their CPU.

use std::sync::atomic::AtomicU64;

use electiond::proto::session::session_service_client::SessionServiceClient;
use electiond::proto::session::KeepAliveRequest;
use serde::Serialize;

use super::cpu::{Cores, Meter};
use super::*;

/// One way of keeping every worker in every election, measured in steady state.
#[derive(Debug, Serialize)]
pub struct Keeping {
    pub how: String,
    /// Calls a second the workers must make to keep every lease.
    pub needed_per_s: f64,
    /// Calls a second they made.
    pub calls_per_s: f64,
    /// CPU a second, in cores.
    pub cpu: Cores,
    /// Candidacies still standing at the end, of workers × elections.
    pub candidacies_left: usize,
}

/// The leader of every election stops.
#[derive(Debug, Serialize)]
pub struct DeadClient {
    /// From the end of its lease (its last acknowledged KeepAlive's send time plus the TTL) to
    /// each election's event naming a new leader, in milliseconds.
    pub new_leader_ms: Latency,
    /// Events received on the elections' streams from its last KeepAlive until all had a new
    /// leader and a second more.
    pub events: u64,
    /// Elections whose stream received other than exactly one event.
    pub not_one_event: usize,
    /// Elections that named a new leader before the stopped worker's lease ended (a broken
    /// promise: must be 0).
    pub before_lease_end: usize,
    /// Reads a second made meanwhile.
    pub reads_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Sessions {
    pub workers: usize,
    pub elections: usize,
    pub ttl_ms: u64,
    pub seconds: f64,
    pub keeping: Vec<Keeping>,
    pub dead: DeadClient,
}

impl Sessions {
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nsessions: {} workers × {} elections, lease TTL {} ms, {:.0} s of steady state each",
            self.workers, self.elections, self.ttl_ms, self.seconds
        );
        let _ = writeln!(
            out,
            "  {:<34} {:>9} {:>9} {:>13} {:>12} {:>10}",
            "kept alive by", "needed/s", "calls/s", "replicas, cores", "redis, cores", "left"
        );
        for k in &self.keeping {
            let _ = writeln!(
                out,
                "  {:<34} {:>9.0} {:>9.0} {:>13.3} {:>12} {:>10}",
                k.how,
                k.needed_per_s,
                k.calls_per_s,
                k.cpu.replicas,
                k.cpu.redis.map_or("-".into(), |r| format!("{r:.3}")),
                k.candidacies_left
            );
        }
        if let [per_election, session] = &self.keeping[..] {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
            // a generator that cannot make every call needed understates per-election cost:
            // scale each to the calls a second it needs, at the CPU per call it showed
            let at_needed = |k: &Keeping, cores: f64| {
                if k.calls_per_s > 0.0 {
                    cores * k.needed_per_s / k.calls_per_s
                } else {
                    cores
                }
            };
            let redis = |k: &Keeping| k.cpu.redis.unwrap_or(0.0);
            let _ = writeln!(
                out,
                "  per-election / sessions, as run: replicas {:.0}x, redis {:.0}x; at the calls needed: replicas {:.0}x, redis {:.0}x",
                ratio(per_election.cpu.replicas, session.cpu.replicas),
                ratio(redis(per_election), redis(session)),
                ratio(
                    at_needed(per_election, per_election.cpu.replicas),
                    at_needed(session, session.cpu.replicas)
                ),
                ratio(
                    at_needed(per_election, redis(per_election)),
                    at_needed(session, redis(session))
                ),
            );
        }
        let d = &self.dead;
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = writeln!(
            out,
            "  leader of all stops: new leader {:.0} ms (p50) / {:.0} ms (p99) / {:.0} ms (last) after its lease ended, {} before it, {} never; {} events, {} elections with other than one; {:.0} reads/s meanwhile",
            ms(d.new_leader_ms.p50_us),
            ms(d.new_leader_ms.p99_us),
            ms(d.new_leader_ms.max_us),
            d.before_lease_end,
            d.new_leader_ms.failed,
            d.events,
            d.not_one_event,
            d.reads_per_s
        );
        out
    }
}

/// A worker's KeepAlive loop: its stop flag, and the task, which returns the send times of
/// its acknowledged calls.
type SessionLoop = (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<Vec<Instant>>,
);

/// What one election's stream showed: events seen, and when the first one naming another
/// leader came.
type Seen = std::sync::Mutex<(u64, Option<Instant>)>;

fn worker(w: usize) -> String {
    format!("worker-{w:02}")
}

fn election_name(e: usize) -> String {
    format!("shard-{e:05}")
}

pub async fn sessions(args: &Args) -> Result<Sessions, String> {
    let (workers, elections, ttl_ms) = (
        args.session_workers.max(2),
        args.session_elections.max(1),
        args.session_ttl_ms.max(300),
    );
    let (_redis, url) = procs::start_redis().await?;
    let bin = args
        .electiond
        .clone()
        .unwrap_or_else(procs::default_electiond);
    let prefix = format!("bench{}-sessions", std::process::id());
    let ttl = ttl_ms.to_string();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let env = [
            ("ELECTION_REDIS_URL", url.as_str()),
            ("ELECTION_LEASE_TTL_MS", ttl.as_str()),
        ];
        replicas.push(procs::start_replica_with(&bin, &env, &prefix).await?);
    }
    let mut meter = Meter {
        replicas: replicas.iter().filter_map(|(p, _)| p.pid()).collect(),
        redis: redis_connection(&url).await,
    };
    let mut channels = connect(replicas[0].1, args.connections).await?;
    channels.extend(connect(replicas[1].1, args.connections).await?);
    let seconds = args.duration.max(ttl_ms as f64 / 1000.0);
    let steady = Duration::from_secs_f64(seconds);
    let ttl = Duration::from_millis(ttl_ms);
    let mut keeping = Vec::new();

    // today's way: every worker reads every election every third of the TTL
    put_everyone_in(&channels, workers, elections).await?;
    let needed = (workers * elections) as f64 * 3.0 / ttl.as_secs_f64();
    let calls = Arc::new(AtomicU64::new(0));
    let refreshing = refresh_every_election(
        &channels,
        workers,
        elections,
        needed,
        args.clients.max(64),
        calls.clone(),
    );
    // a TTL first: every lease then has been refreshed by this load alone
    tokio::time::sleep(ttl).await;
    let (made, cpu) = measured(&mut meter, &calls, steady, "sessions: per-election refresh").await;
    for t in refreshing {
        t.abort();
    }
    keeping.push(Keeping {
        how: "per-election GetTerm".into(),
        needed_per_s: needed,
        calls_per_s: made,
        cpu,
        candidacies_left: candidacies(&channels, elections).await?,
    });

    // sessions: one KeepAlive per worker every third of the TTL
    put_everyone_in(&channels, workers, elections).await?;
    let calls = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for w in 0..workers {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(keep_alive(
            channels[w % channels.len()].clone(),
            worker(w),
            ttl,
            calls.clone(),
            stop.clone(),
        ));
        loops.push((stop, task));
    }
    // a TTL and a bit: every lease granted by putting everyone in has run out, and is held
    // by the session alone
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    let (made, cpu) = measured(&mut meter, &calls, steady, "sessions: KeepAlive").await;
    keeping.push(Keeping {
        how: "one KeepAlive per worker".into(),
        needed_per_s: workers as f64 * 3.0 / ttl.as_secs_f64(),
        calls_per_s: made,
        cpu,
        candidacies_left: candidacies(&channels, elections).await?,
    });

    let dead = leader_stops(&channels, &mut loops, elections, ttl).await?;
    for (stop, task) in loops {
        stop.store(true, Ordering::Relaxed);
        task.abort();
    }
    Ok(Sessions {
        workers,
        elections,
        ttl_ms,
        seconds,
        keeping,
        dead,
    })
}

/// Counts calls and CPU for `steady`; returns calls a second and the cores each part used.
async fn measured(
    meter: &mut Meter,
    calls: &AtomicU64,
    steady: Duration,
    label: &str,
) -> (f64, Cores) {
    let bar = progress(label, steady.as_millis() as u64);
    let before = cpu::sample(&meter.replicas, meter.redis.as_mut()).await;
    let (c0, t0) = (calls.load(Ordering::Relaxed), Instant::now());
    while t0.elapsed() < steady {
        bar.set_position(t0.elapsed().as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = t0.elapsed();
    let made = (calls.load(Ordering::Relaxed) - c0) as f64 / elapsed.as_secs_f64();
    let after = cpu::sample(&meter.replicas, meter.redis.as_mut()).await;
    bar.finish_and_clear();
    (made, before.cores(&after, elapsed))
}

/// Every election with every worker a candidate (worker 0 leading), each lease fresh: one
/// Restore per election.
async fn put_everyone_in(
    channels: &[Channel],
    workers: usize,
    elections: usize,
) -> Result<(), String> {
    let ids: Vec<String> = (0..workers).map(worker).collect();
    let bar = progress("sessions: putting workers in", elections as u64);
    let done: Vec<Result<(), String>> = futures::stream::iter(0..elections)
        .map(|e| {
            let mut c = Grpc::new(channels[e % channels.len()].clone());
            let (ids, bar) = (ids.clone(), bar.clone());
            async move {
                c.restore(signed(epb::RestoreRequest {
                    header: header(&election_name(e), ""),
                    snapshot: Some(epb::Snapshot {
                        term: Some(epb::Term {
                            id: Some(pb::meta::Epoch { value: 1 }),
                            timestamp: None,
                            leader: ids[0].clone(),
                            candidates: ids,
                        }),
                    }),
                }))
                .await
                .map_err(|s| format!("Restore: {s}"))?;
                bar.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    bar.finish_and_clear();
    done.into_iter().collect()
}

/// The candidacies standing now, over all elections.
async fn candidacies(channels: &[Channel], elections: usize) -> Result<usize, String> {
    let terms: Vec<Result<usize, String>> = futures::stream::iter(0..elections)
        .map(|e| {
            let mut c = Grpc::new(channels[e % channels.len()].clone());
            async move { Ok(read(&mut c, &election_name(e)).await?.candidates.len()) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    terms.into_iter().sum()
}

async fn read(c: &mut Grpc<Channel>, name: &str) -> Result<epb::Term, String> {
    let r = c
        .get_term(signed(epb::GetTermRequest {
            header: header(name, ""),
            input: Some(epb::GetTermInput {}),
        }))
        .await
        .map_err(|s| format!("GetTerm: {s}"))?;
    Ok(r.into_inner()
        .output
        .and_then(|o| o.term)
        .unwrap_or_default())
}

/// Each worker's GetTerm on each election, paced to `rate` calls a second in all (as fast as
/// `concurrency` calls at a time allow, when that is less), until the tasks are aborted.
fn refresh_every_election(
    channels: &[Channel],
    workers: usize,
    elections: usize,
    rate: f64,
    concurrency: usize,
    calls: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    (0..concurrency)
        .map(|k| {
            let (next, calls) = (next.clone(), calls.clone());
            let mut c = Grpc::new(channels[k % channels.len()].clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    // one pass of every (worker, election) pair, election by election
                    let pair = (i % (workers * elections) as u64) as usize;
                    let (w, e) = (pair % workers, pair / workers);
                    let req = epb::GetTermRequest {
                        header: header(&election_name(e), &worker(w)),
                        input: Some(epb::GetTermInput {}),
                    };
                    if c.get_term(signed(req)).await.is_ok() {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

/// A worker's session: KeepAlive every third of the TTL until `stop`. Returns the send time
/// of each acknowledged call.
async fn keep_alive(
    channel: Channel,
    id: String,
    ttl: Duration,
    calls: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Instant> {
    let mut c = SessionServiceClient::new(channel);
    let mut acked = Vec::new();
    let mut tick = tokio::time::interval(ttl / 3);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let sent = Instant::now();
        let req = KeepAliveRequest {
            client_id: id.clone(),
        };
        if c.keep_alive(signed(req)).await.is_ok() {
            calls.fetch_add(1, Ordering::Relaxed);
            acked.push(sent);
        }
    }
    acked
}

/// Worker 0, the leader of every election, stops its KeepAlives while the others go on and
/// readers keep calling; every election's stream is watched.
async fn leader_stops(
    channels: &[Channel],
    loops: &mut [SessionLoop],
    elections: usize,
    ttl: Duration,
) -> Result<DeadClient, String> {
    let targets = (0..elections)
        .map(|e| (channels[e % channels.len()].clone(), election_name(e)))
        .collect();
    let streams = watch_all("sessions: watching every election", targets).await?;
    let gone = worker(0);
    // per election: events seen, and when the first naming another leader came
    let seen: Arc<Vec<Seen>> = Arc::new(
        (0..elections)
            .map(|_| std::sync::Mutex::new((0, None)))
            .collect(),
    );
    let changed = Arc::new(AtomicU64::new(0));
    let watchers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(e, mut s)| {
            let (gone, seen, changed) = (gone.clone(), seen.clone(), changed.clone());
            tokio::spawn(async move {
                while let Ok(Some(m)) = s.message().await {
                    let now = Instant::now();
                    let leader = m.output.and_then(|o| o.term).map(|t| t.leader);
                    let mut seen = seen[e].lock().unwrap_or_else(|p| p.into_inner());
                    seen.0 += 1;
                    if seen.1.is_none() && leader.is_some_and(|l| l != gone) {
                        seen.1 = Some(now);
                        changed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // readers meanwhile, back to back
    let reads = Arc::new(AtomicU64::new(0));
    let reading: Vec<_> = (0..8)
        .map(|k| {
            let mut c = Grpc::new(channels[k % channels.len()].clone());
            let reads = reads.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let name = election_name((k * 7919 + i) % elections);
                    if read(&mut c, &name).await.is_ok() {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let (stop, task) = &mut loops[0];
    stop.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let acked = task.await.map_err(|e| e.to_string())?;
    let lease_end = *acked.last().ok_or("the leader's KeepAlives all failed")? + ttl;
    let bar = progress("sessions: the leader of all stops", elections as u64);
    // every election's new leader, or the TTL and ten seconds; then a second for stragglers
    let deadline = lease_end + Duration::from_secs(10);
    while (changed.load(Ordering::Relaxed) as usize) < elections && Instant::now() < deadline {
        bar.set_position(changed.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    bar.finish_and_clear();
    let reads_per_s = reads.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    for t in reading.iter().chain(&watchers) {
        t.abort();
    }
    let mut events = 0;
    let mut not_one_event = 0;
    let mut after = Vec::new();
    let mut missing = 0;
    let mut before_lease_end = 0;
    for s in seen.iter() {
        let (n, at) = *s.lock().unwrap_or_else(|p| p.into_inner());
        events += n;
        not_one_event += usize::from(n != 1);
        match at {
            Some(at) => {
                before_lease_end += usize::from(at < lease_end);
                after.push(at.saturating_duration_since(lease_end).as_micros() as u64);
            }
            None => missing += 1,
        }
    }
    Ok(DeadClient {
        new_leader_ms: Latency::from_micros(after, Duration::ZERO, missing),
        events,
        not_one_event,
        before_lease_end,
        reads_per_s,
    })
}
