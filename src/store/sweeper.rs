//! The lease sweeper: removes candidates whose lease ran out even when nobody calls.
//!
//! Every replica runs one. Each poll reads the elections whose earliest lease expiry is due
//! from the buckets' lease indexes (kept exact by the scripts themselves), then runs the
//! ordinary expiry on each, one script per election; and ends the sessions that ran out in the
//! buckets whose index says one did, one script per bucket, all sent together. Running on every replica at once is safe:
//! the scripts serialize in Redis, and a replica that comes second finds nothing due.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::{Op, Store};
use crate::shutdown::stopped;

/// Most due elections taken from one bucket per poll.
const DUE_PER_BUCKET: usize = 256;
/// Due elections expired concurrently (they pipeline over the pooled connections).
const CONCURRENCY: usize = 32;

/// How often to poll: often enough that expiry happens within TTL + 1 s with room for a slow
/// round trip, rarely enough to cost nothing when nothing is due.
fn interval(ttl_ms: u64) -> Duration {
    Duration::from_millis((ttl_ms / 4).clamp(20, 250))
}

/// Runs until `stop`; does nothing when leases are off.
pub async fn sweep(store: Store, mut stop: watch::Receiver<bool>) {
    let ttl = store.lease_ttl_ms();
    if ttl == 0 {
        return;
    }
    let mut tick = tokio::time::interval(interval(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        let due = match store.due_elections(DUE_PER_BUCKET).await {
            Ok(due) => {
                failing = false;
                due
            }
            Err(e) => {
                // the health check and the callers report outages; say it once here
                if !failing {
                    tracing::warn!(error = %e, "lease sweep cannot read the lease index");
                }
                failing = true;
                continue;
            }
        };
        if !due.sessions.is_empty() {
            if let Err(e) = store.end_sessions(&due.sessions).await {
                tracing::warn!(error = %e, "ending sessions that ran out failed");
            }
        }
        futures::stream::iter(due.elections)
            .for_each_concurrent(CONCURRENCY, |name| {
                let store = store.clone();
                async move {
                    if let Err(e) = store.apply(&name, None, Op::Expire).await {
                        tracing::warn!(election = %name, error = %e, "lease sweep failed");
                    }
                }
            })
            .await;
    }
}
