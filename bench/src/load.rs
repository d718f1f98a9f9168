//! Load: calls through gRPC or straight on Redis, driven by many clients at once.

use super::*;

pub(crate) async fn grpc_enter_withdraw(
    c: &mut Grpc<Channel>,
    election: &str,
    id: &str,
    enter: bool,
) -> Result<(), String> {
    let r = if enter {
        c.enter(signed(epb::EnterRequest {
            header: header(election, id),
            input: Some(epb::EnterInput {}),
        }))
        .await
        .map(|_| ())
    } else {
        c.withdraw(signed(epb::WithdrawRequest {
            header: header(election, id),
            input: Some(epb::WithdrawInput {}),
        }))
        .await
        .map(|_| ())
    };
    r.map_err(|s| s.to_string())
}

/// A GetTerm of `election` as client `id` (none when empty).
pub(crate) async fn grpc_get_term(
    c: &mut Grpc<Channel>,
    election: &str,
    id: &str,
) -> Result<(), String> {
    let req = epb::GetTermRequest {
        header: header(election, id),
        input: Some(epb::GetTermInput {}),
    };
    c.get_term(signed(req))
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

/// `n` HTTP/2 connections to `addr`, which the clients share round robin.
pub(crate) async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Channel>, String> {
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

pub(crate) async fn populate(channels: &[Channel], elections: usize) -> Result<(), String> {
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

pub(crate) async fn populate_direct(store: &Store, elections: usize) -> Result<(), String> {
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

/// For `drive`: client `k` alternates Enter and Withdraw through gRPC, as `c{k}`, on the
/// election `name_of(k, call)`, over the channels round robin.
pub(crate) fn grpc_enter_withdraw_client(
    channels: &[Channel],
    name_of: impl Fn(usize, u64) -> String + Copy + Send + 'static,
) -> impl FnMut(usize) -> OpFn + '_ {
    move |k| {
        let c = Grpc::new(channels[k % channels.len()].clone());
        let id = format!("c{k}");
        Box::new(move |i| {
            let (mut c, id, name) = (c.clone(), id.clone(), name_of(k, i));
            Box::pin(async move { grpc_enter_withdraw(&mut c, &name, &id, i % 2 == 0).await })
        })
    }
}

/// For `drive`: client `k` reads the election `name_of(k, call)` through gRPC with no client
/// id, over the channels round robin.
pub(crate) fn grpc_get_term_client(
    channels: &[Channel],
    name_of: impl Fn(usize, u64) -> String + Copy + Send + 'static,
) -> impl FnMut(usize) -> OpFn + '_ {
    move |k| {
        let c = Grpc::new(channels[k % channels.len()].clone());
        Box::new(move |i| {
            let (mut c, name) = (c.clone(), name_of(k, i));
            Box::pin(async move { grpc_get_term(&mut c, &name, "").await })
        })
    }
}

/// Runs `clients` loops for `duration`, each calling its op back to back, and collects every
/// call's latency.
pub(crate) async fn drive(
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

pub(crate) fn progress(label: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:44} [{bar:30}] {percent:>3}%")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar
}
