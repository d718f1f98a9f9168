//! Failing fast while a Redis Cluster cannot be reached at all.
//!
//! The Cluster client recovers by itself: a command that finds every node gone makes it
//! reconnect to the seed nodes. It does so for every command, without waiting, so during an
//! outage each call was one more round of connection attempts (and, before the log throttle,
//! one more log line). The gate stands in front of it: once calls have found no node
//! reachable several times in a row and none has got through for a while, calls fail at once,
//! and one call at a time goes through to try again, after 25 ms, then 50, 100, ... at most
//! 500 ms.
//! The first call that reaches Redis opens the way for all. While closed, the connection is
//! dropped and each attempt makes a new one: the client's own recovery retries in a tight
//! loop for as long as a command waits, one attempt per node each time round, so one waiting
//! call cost dozens of connection attempts; a new connection to nodes that are down fails
//! with one.
//!
//! A Cluster that is only partly down never trips it: only a call that finds no connection to
//! any node (or a new connection that reaches no seed node) counts against it (`cluster.rs`
//! decides), calls to the live masters keep succeeding, and those to a dead one go on to the
//! client, which reconnects that node only.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row before the gate closes.
const TRIP_AFTER: u32 = 3;
/// ... and for at least this long without one call getting through.
const QUIET: Duration = Duration::from_millis(100);
/// The first wait between attempts once closed; each failed attempt doubles it.
const FIRST: Duration = Duration::from_millis(25);
/// The longest wait between attempts.
const LONGEST: Duration = Duration::from_millis(500);

/// See the module documentation.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    failures: u32,
    last_ok: Instant,
    /// While closed: calls before this instant fail at once.
    closed_until: Option<Instant>,
    wait: Duration,
    /// When it closed, and the calls failed at once since.
    closed_at: Option<Instant>,
    refused: u64,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                failures: 0,
                last_ok: Instant::now(),
                closed_until: None,
                wait: FIRST,
                closed_at: None,
                refused: 0,
            }),
        }
    }
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // every update leaves the state whole, so a poisoned lock is still usable
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go to Redis now; when not, how long until the next attempt.
    pub fn admit(&self) -> Result<(), Duration> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state();
        match s.closed_until {
            Some(until) if now < until => {
                s.refused += 1;
                Err(until - now)
            }
            Some(_) => {
                // this call tries; the others keep failing at once while it does
                s.closed_until = Some(now + s.wait);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A call reached Redis (whatever Redis answered).
    pub fn reached(&self) {
        self.reached_at(Instant::now());
    }

    fn reached_at(&self, now: Instant) {
        let mut s = self.state();
        s.failures = 0;
        s.last_ok = now;
        s.closed_until = None;
        s.wait = FIRST;
        if let Some(at) = s.closed_at.take() {
            tracing::info!(
                after = ?now.saturating_duration_since(at),
                failed_at_once = s.refused,
                "redis cluster reached again: calls go through"
            );
        }
    }

    /// A call could not reach Redis (no connection, or no answer in time). Returns whether
    /// the gate is closed now.
    pub fn unreachable(&self) -> bool {
        self.unreachable_at(Instant::now())
    }

    fn unreachable_at(&self, now: Instant) -> bool {
        let mut s = self.state();
        s.failures = s.failures.saturating_add(1);
        if s.closed_until.is_some() {
            // an attempt while closed failed: wait longer before the next
            s.wait = (s.wait * 2).min(LONGEST);
            s.closed_until = Some(now + s.wait);
            return true;
        }
        if s.failures >= TRIP_AFTER && now.saturating_duration_since(s.last_ok) >= QUIET {
            s.wait = FIRST;
            s.closed_until = Some(now + FIRST);
            s.closed_at = Some(now);
            s.refused = 0;
            tracing::warn!(
                failures = s.failures,
                "redis cluster unreachable: calls fail at once, and one call at a time tries \
                 again, at most every {LONGEST:?}"
            );
        }
        s.closed_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn it_closes_only_after_failures_in_a_row_with_nothing_getting_through() {
        let g = Gate::default();
        let t0 = Instant::now();
        g.reached_at(t0);
        // three failures, but the last success is recent: still open
        for i in 1..=3 {
            g.unreachable_at(t0 + i * 10 * MS);
        }
        assert!(g.admit_at(t0 + 40 * MS).is_ok());
        // a success in between starts the count again
        g.reached_at(t0 + 300 * MS);
        g.unreachable_at(t0 + 600 * MS);
        g.unreachable_at(t0 + 610 * MS);
        assert!(g.admit_at(t0 + 620 * MS).is_ok());
        g.unreachable_at(t0 + 620 * MS);
        assert_eq!(g.admit_at(t0 + 630 * MS), Err(15 * MS));
    }

    #[test]
    fn while_closed_one_call_tries_and_the_wait_doubles_to_half_a_second() {
        let g = Gate::default();
        let t0 = Instant::now() + QUIET;
        for _ in 0..TRIP_AFTER {
            g.unreachable_at(t0);
        }
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let Err(wait) = g.admit_at(now) else {
                panic!("closed")
            };
            waits.push(wait.as_millis());
            now += wait;
            assert!(g.admit_at(now).is_ok(), "one call tries");
            assert!(g.admit_at(now).is_err(), "the others do not meanwhile");
            g.unreachable_at(now);
        }
        assert_eq!(waits, [25, 50, 100, 200, 400, 500, 500]);
        // a call getting through opens it for all, and the next outage starts at 25 ms
        g.reached_at(now);
        assert!(g.admit_at(now).is_ok() && g.admit_at(now).is_ok());
        for _ in 0..TRIP_AFTER {
            g.unreachable_at(now + QUIET);
        }
        assert_eq!(g.admit_at(now + QUIET), Err(FIRST));
    }
}
