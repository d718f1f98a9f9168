//! Prometheus metrics of one replica, served as text on `/metrics` from a separate port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Upper bounds of the call latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and gauges of one replica.
#[derive(Debug, Default)]
pub struct Metrics {
    calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Events streams open now.
    pub streams_open: AtomicI64,
    /// Changes received from Redis pub/sub (or a catch-up read) and accepted for delivery.
    pub events_received: AtomicU64,
    /// `CHANGED` messages handed to streams.
    pub events_delivered: AtomicU64,
    /// Times a stream fell behind and skipped to the latest state.
    pub events_skipped: AtomicU64,
    /// Redis commands that failed (connection errors, timeouts, error replies).
    pub redis_errors: AtomicU64,
    /// Reconnections of the pub/sub connection.
    pub pubsub_reconnects: AtomicU64,
    /// Candidates removed because their lease ran out, by scripts this replica ran.
    pub lease_expiries: AtomicU64,
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Counts one finished call.
    pub fn call(&self, method: &'static str, code: tonic::Code, took: Duration) {
        *lock(&self.calls)
            .entry((method, code_name(code)))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut lat = lock(&self.latency);
        let h = lat.entry(method).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP electiond_grpc_calls_total gRPC calls by method and status code."
        );
        let _ = writeln!(out, "# TYPE electiond_grpc_calls_total counter");
        for ((method, code), n) in lock(&self.calls).iter() {
            let _ = writeln!(
                out,
                "electiond_grpc_calls_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP electiond_grpc_call_duration_seconds gRPC call latency by method."
        );
        let _ = writeln!(out, "# TYPE electiond_grpc_call_duration_seconds histogram");
        for (method, h) in lock(&self.latency).iter() {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "electiond_grpc_call_duration_seconds_bucket{{method=\"{method}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "electiond_grpc_call_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "electiond_grpc_call_duration_seconds_sum{{method=\"{method}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "electiond_grpc_call_duration_seconds_count{{method=\"{method}\"}} {}",
                h.count
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "electiond_events_streams_open",
            "Events streams open on this replica.",
            self.streams_open.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "electiond_events_received_total",
            "Election changes received from Redis and accepted for delivery.",
            &self.events_received,
        );
        counter(
            &mut out,
            "electiond_events_delivered_total",
            "CHANGED messages sent to Events streams.",
            &self.events_delivered,
        );
        counter(
            &mut out,
            "electiond_events_skipped_total",
            "Times a slow stream skipped to the latest state.",
            &self.events_skipped,
        );
        counter(
            &mut out,
            "electiond_redis_errors_total",
            "Redis commands that failed or timed out.",
            &self.redis_errors,
        );
        counter(
            &mut out,
            "electiond_redis_pubsub_reconnects_total",
            "Reconnections of the Redis pub/sub connection.",
            &self.pubsub_reconnects,
        );
        counter(
            &mut out,
            "electiond_lease_expiries_total",
            "Candidates removed because their lease ran out.",
            &self.lease_expiries,
        );
        out
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (mut sock, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener");
                    continue;
                }
            },
            _ = crate::store::stopped(&mut stop) => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // read the request head (bounded), answer, close
            while len < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf[len..])).await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if head.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found; try /metrics\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
