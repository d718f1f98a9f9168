//! Logging set-up: text or JSON lines on stderr, filtered by `RUST_LOG` or the configured
//! level; and a throttle for lines that an outage would otherwise repeat per call.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber; call once, from `main`.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // logs go to stderr, as documented; colours only for a person at a terminal
    let lines = fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().with_current_span(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(QuietLibraries::default())
        .with(lines)
        .init();
}

/// How often one log line of the Redis client library may repeat.
const LIBRARY_LINE_PERIOD: Duration = Duration::from_secs(5);

/// Lets the Redis client library's log lines through at most once per
/// [`LIBRARY_LINE_PERIOD`] per module and level: with every Cluster node down, its cluster
/// client logs a line per reconnect attempt, hundreds a second. The replica's own lines
/// summarize the outage.
#[derive(Default)]
struct QuietLibraries {
    /// Per module and level: when its next line may be written.
    next: Mutex<HashMap<(String, Level), Instant>>,
}

impl QuietLibraries {
    fn allow(&self, module: &str, level: Level, now: Instant) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        match next.get_mut(&(module.to_owned(), level)) {
            Some(at) if now < *at => false,
            Some(at) => {
                *at = now + LIBRARY_LINE_PERIOD;
                true
            }
            None => {
                next.insert((module.to_owned(), level), now + LIBRARY_LINE_PERIOD);
                true
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for QuietLibraries {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        // the library logs through `log`: its lines carry their real target in the event
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let target = meta.target();
        if target != "redis" && !target.starts_with("redis::") {
            return true;
        }
        self.allow(target, *meta.level(), Instant::now())
    }
}

/// Keeps one kind of log line to at most one per period, counting what it held back: a Redis
/// outage under load must not write a line per failed call.
#[derive(Debug)]
pub struct Throttle {
    period_ms: u64,
    /// When the next line may be written, in ms since the process's first throttled line.
    next_ms: AtomicU64,
    held: AtomicU64,
}

impl Throttle {
    /// At most one line per `period`.
    pub const fn new(period: Duration) -> Self {
        Throttle {
            period_ms: period.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now; `None` (and
    /// one more held back) otherwise.
    pub fn allow(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.period_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_librarys_lines_repeat_at_most_once_per_period() {
        let q = QuietLibraries::default();
        let t0 = Instant::now();
        let module = "redis::cluster_handling::async_connection";
        assert!(q.allow(module, Level::WARN, t0));
        assert!(!q.allow(module, Level::WARN, t0 + Duration::from_millis(10)));
        assert!(q.allow(module, Level::ERROR, t0), "another level");
        assert!(
            q.allow("redis::sentinel", Level::WARN, t0),
            "another module"
        );
        assert!(q.allow(module, Level::WARN, t0 + LIBRARY_LINE_PERIOD));
    }

    #[test]
    fn a_throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.allow(), Some(2));
        assert_eq!(t.allow(), None);
    }
}
