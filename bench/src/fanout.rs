//! The Events fan-out scenario: many streams over the replicas, and how long each change
//! takes to reach every one.

use super::*;

/// Opens the streams, records memory and connections, makes the changes and measures how long
/// each takes to reach every stream.
pub(crate) async fn fan_out(
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

    let per_replica = args.streams.div_ceil(addrs.len());
    let mut channels = Vec::new();
    for (r, addr) in addrs.iter().enumerate() {
        let n = per_replica.min(args.streams.saturating_sub(r * per_replica));
        channels.push(connect(*addr, n.div_ceil(STREAMS_PER_CONNECTION).max(1)).await?);
    }
    let targets = (0..args.streams)
        .map(|i| {
            let chans = &channels[i / per_replica];
            let c = chans[(i % per_replica) / STREAMS_PER_CONNECTION % chans.len()].clone();
            (c, name.to_owned())
        })
        .collect();
    let streams = watch_all("fan-out: opening streams", targets).await?;
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
            .get_term(signed(req))
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
    let cpu_before = cpu::sample(pids, None).await;
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
        driver
            .anoint(signed(req))
            .await
            .map_err(|s| s.to_string())?;
        bar.inc(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while arrived[k].load(Ordering::Relaxed) < args.streams && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after = cpu::sample(pids, None).await;
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
        // every change reaches every stream: CPU per delivered event
        cpu: cpu_before.per_call(&cpu_after, (args.changes * args.streams) as u64),
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
