//! Listing many elections: `--listing-elections` (100,000 by default) made through gRPC, then
//! listed whole, in pages of the default size and of the largest, and under a prefix that holds
//! a tenth of them. What matters is how long each step holds Redis (every other call waits
//! meanwhile): Redis's own SLOWLOG, set to log every command, gives each listing function
//! call's time inside Redis.

use serde::Serialize;

use electiond::proto::admin as apb;
use electiond::proto::admin::election_admin_client::ElectionAdminClient;

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub elections: usize,
    /// Seconds to make them (64 clients, one Enter each).
    pub made_secs: f64,
    pub runs: Vec<ListingRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListingRun {
    pub prefix: String,
    pub page_size: u32,
    pub pages: usize,
    pub listed: usize,
    pub secs: f64,
    /// Listing function calls (one bucket's share each) Redis ran.
    pub calls: usize,
    /// Inside Redis, per listing function call: p50, p99 and the longest, in µs.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Listing {
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nlisting {} elections (made in {:.1} s); time inside Redis per listing step:",
            self.elections, self.made_secs
        );
        let _ = writeln!(
            out,
            "  {:<10} {:>9} {:>6} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8}",
            "prefix", "page size", "pages", "listed", "secs", "steps", "p50 µs", "p99 µs", "max µs"
        );
        for r in &self.runs {
            let _ = writeln!(
                out,
                "  {:<10} {:>9} {:>6} {:>8} {:>8.2} {:>6} {:>8} {:>8} {:>8}",
                if r.prefix.is_empty() {
                    "(all)"
                } else {
                    &r.prefix
                },
                r.page_size,
                r.pages,
                r.listed,
                r.secs,
                r.calls,
                r.p50_us,
                r.p99_us,
                r.max_us
            );
        }
        out
    }
}

pub async fn listing(
    args: &Args,
    channels: &[Channel],
    redis_url: &str,
) -> Result<Listing, String> {
    let n = args.listing_elections;
    let made = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let bar = progress("listing: making elections", n as u64);
    futures::stream::iter(0..args.clients.max(1))
        .map(|k| {
            let (next, bar) = (next.clone(), bar.clone());
            let mut c = Grpc::new(channels[k % channels.len()].clone());
            async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<(), String>(());
                    }
                    let name = format!("team-{}/job-{i}", i % 10);
                    let req = epb::EnterRequest {
                        header: header(&name, "w"),
                        input: Some(epb::EnterInput {}),
                    };
                    c.enter(signed(req))
                        .await
                        .map_err(|s| format!("listing: Enter: {s}"))?;
                    bar.inc(1);
                }
            }
        })
        .buffer_unordered(args.clients.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, String>>()?;
    bar.finish_and_clear();
    let made_secs = made.elapsed().as_secs_f64();

    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    // the slow log of a listing of 100,000 is long to read
    let patient =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
    let mut redis = client
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .map_err(|e| e.to_string())?;
    let config = |k: &str, v: &str| {
        let mut c = redis::cmd("CONFIG");
        c.arg("SET").arg(k).arg(v);
        c
    };
    let mut get = redis::cmd("CONFIG");
    get.arg("GET").arg("slowlog-*");
    let before: Vec<String> = get
        .query_async(&mut redis)
        .await
        .map_err(|e| format!("listing: CONFIG GET: {e}"))?;
    let mut runs = Vec::new();
    for (prefix, page_size) in [("", 0), ("", 1000), ("team-3/", 0)] {
        for cmd in [
            config("slowlog-log-slower-than", "0"),
            config("slowlog-max-len", "1000000"),
            redis::cmd("SLOWLOG").arg("RESET").clone(),
        ] {
            cmd.query_async::<()>(&mut redis)
                .await
                .map_err(|e| format!("listing: {e}"))?;
        }
        let started = Instant::now();
        let mut c = ElectionAdminClient::new(channels[0].clone());
        let (mut pages, mut listed, mut token) = (0, 0, String::new());
        loop {
            let page = c
                .list(signed(apb::ListRequest {
                    prefix: prefix.to_owned(),
                    page_size,
                    page_token: token.clone(),
                }))
                .await
                .map_err(|s| format!("List: {s}"))?
                .into_inner();
            pages += 1;
            listed += page.elections.len();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let secs = started.elapsed().as_secs_f64();
        // each entry: id, time, µs, the command's words, ...
        let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(-1)
            .query_async(&mut redis)
            .await
            .map_err(|e| format!("listing: SLOWLOG GET: {e}"))?;
        let mut took: Vec<u64> = log
            .iter()
            .filter_map(|entry| {
                let redis::Value::Array(fields) = entry else {
                    return None;
                };
                let us: u64 =
                    redis::FromRedisValue::from_redis_value(fields.get(2)?.clone()).ok()?;
                let words: Vec<String> =
                    redis::FromRedisValue::from_redis_value(fields.get(3)?.clone()).ok()?;
                (words.first().map(String::as_str) == Some("FCALL_RO")
                    && words.get(1).is_some_and(|f| f.ends_with("_list")))
                .then_some(us)
            })
            .collect();
        took.sort_unstable();
        let at = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        runs.push(ListingRun {
            prefix: prefix.to_owned(),
            page_size: if page_size == 0 {
                electiond::admin::DEFAULT_PAGE as u32
            } else {
                page_size
            },
            pages,
            listed,
            secs,
            calls: took.len(),
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: took.last().copied().unwrap_or(0),
        });
    }
    // the slow log as it was
    for pair in before.chunks(2) {
        if let [k, v] = pair {
            let _ = config(k, v).query_async::<()>(&mut redis).await;
        }
    }
    Ok(Listing {
        elections: n,
        made_secs,
        runs,
    })
}
