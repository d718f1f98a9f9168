//! Prometheus metrics of one replica (the `prometheus-client` crate), served on `/metrics`
//! from a separate port.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Upper bounds of the call latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

/// The causes of a change of leader (see `record` in `lua/prelude.lua`).
pub const CAUSES: [&str; 8] = [
    "enter", "withdraw", "expired", "evict", "anoint", "promote", "restore", "delete",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeniedLabels {
    grant: String,
    operation: &'static str,
}

/// Counters and gauges of one replica.
#[derive(Debug)]
pub struct Metrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    denied: Family<DeniedLabels, Counter>,
    changes: Family<CauseLabels, Counter>,
    /// Elections stored (all replicas read the same number; see `admin::count`).
    pub elections: Gauge,
    /// Events streams open now.
    pub streams_open: Gauge,
    /// Changes received from Redis pub/sub (or a catch-up read) and accepted for delivery.
    pub events_received: Counter,
    /// `CHANGED` messages handed to streams.
    pub events_delivered: Counter,
    /// Times a stream fell behind and skipped to the latest state.
    pub events_skipped: Counter,
    /// Redis commands that failed (connection errors, timeouts, error replies).
    pub redis_errors: Counter,
    /// Reconnections of the pub/sub connection.
    pub pubsub_reconnects: Counter,
    /// Candidates removed because their lease ran out, by scripts this replica ran.
    pub lease_expiries: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(BUCKETS.iter().copied())
        });
        let mut m = Metrics {
            calls,
            latency,
            denied: Family::default(),
            changes: Family::default(),
            elections: Gauge::default(),
            streams_open: Gauge::default(),
            events_received: Counter::default(),
            events_delivered: Counter::default(),
            events_skipped: Counter::default(),
            redis_errors: Counter::default(),
            pubsub_reconnects: Counter::default(),
            lease_expiries: Counter::default(),
            registry: Registry::default(),
        };
        // counters are exposed with `_total` appended
        let r = &mut m.registry;
        r.register(
            "electiond_grpc_calls",
            "gRPC calls by method and status code",
            m.calls.clone(),
        );
        r.register(
            "electiond_grpc_call_duration_seconds",
            "gRPC call latency by method",
            m.latency.clone(),
        );
        r.register(
            "electiond_access_denied",
            "Calls refused by access control, by grant (empty: no known credential) and operation",
            m.denied.clone(),
        );
        r.register(
            "electiond_leader_changes",
            "Changes of leader made by this replica's calls (and its sweepers), by cause",
            m.changes.clone(),
        );
        r.register(
            "electiond_elections",
            "Elections stored in Redis, as last counted (every replica counts them all)",
            m.elections.clone(),
        );
        r.register(
            "electiond_events_streams_open",
            "Events streams open on this replica",
            m.streams_open.clone(),
        );
        for (name, help, counter) in [
            (
                "electiond_events_received",
                "Election changes received from Redis and accepted for delivery",
                &m.events_received,
            ),
            (
                "electiond_events_delivered",
                "CHANGED messages sent to Events streams",
                &m.events_delivered,
            ),
            (
                "electiond_events_skipped",
                "Times a slow stream skipped to the latest state",
                &m.events_skipped,
            ),
            (
                "electiond_redis_errors",
                "Redis commands that failed or timed out",
                &m.redis_errors,
            ),
            (
                "electiond_redis_pubsub_reconnects",
                "Reconnections of the Redis pub/sub connection",
                &m.pubsub_reconnects,
            ),
            (
                "electiond_lease_expiries",
                "Candidates removed because their lease ran out",
                &m.lease_expiries,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
        m
    }
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

impl Metrics {
    /// Counts one finished call.
    pub fn call(&self, method: &'static str, code: tonic::Code, took: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// Counts a call refused by access control (`grant` empty: no known credential).
    pub fn access_denied(&self, grant: &str, operation: &'static str) {
        self.denied
            .get_or_create(&DeniedLabels {
                grant: grant.to_owned(),
                operation,
            })
            .inc();
    }

    /// Counts the changes of leader a function call reports: their causes, separated by
    /// spaces.
    pub fn leader_changes(&self, causes: &str) {
        for cause in causes.split(' ') {
            if let Some(cause) = CAUSES.iter().find(|c| **c == cause) {
                self.changes.get_or_create(&CauseLabels { cause }).inc();
            }
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    /// The OpenMetrics text exposition (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing to a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { crate::shutdown::stopped(&mut stop).await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "metrics server");
    }
}
