//! The one place where internal errors become what clients see. Clients get a clear message
//! for their own mistakes and an opaque one for ours; the log gets the cause.

use std::time::Duration;

use tonic::Status;

use crate::access::Refusal;
use crate::election::Rejection;
use crate::events::NotReady;
use crate::store::StoreError;
use crate::telemetry::Throttle;

/// How often each kind of per-call failure is logged during an outage, at most.
const EVERY: Duration = Duration::from_secs(5);
static REDIS_DOWN: Throttle = Throttle::new(EVERY);
static NOT_REPLICATED: Throttle = Throttle::new(EVERY);
static NOT_SUBSCRIBED: Throttle = Throttle::new(EVERY);

impl From<Rejection> for Status {
    fn from(r: Rejection) -> Self {
        let msg = r.to_string();
        match r {
            Rejection::Empty(_) | Rejection::NotCandidate(_) | Rejection::Invalid(_) => {
                Status::invalid_argument(msg)
            }
            Rejection::TooLong { .. }
            | Rejection::TooManyCandidates { .. }
            | Rejection::TermTooBig { .. } => Status::resource_exhausted(msg),
            Rejection::NotFound(_) => Status::not_found(msg),
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(r) => r.into(),
            StoreError::Redis(_) | StoreError::Pool(_) | StoreError::Timeout(_) => {
                if let Some(held) = REDIS_DOWN.allow() {
                    tracing::warn!(error = %e, similar_not_logged = held, "redis unavailable");
                }
                Status::unavailable("the election store is unavailable; retry with backoff")
            }
            StoreError::NotReplicated { .. } => {
                if let Some(held) = NOT_REPLICATED.allow() {
                    tracing::warn!(error = %e, similar_not_logged = held, "change not confirmed by redis replicas");
                }
                Status::unavailable(
                    "the change was not confirmed by enough replicas in time and may or may not \
                     persist; re-read the term and retry",
                )
            }
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "unexpected data in redis");
                Status::internal("internal error")
            }
        }
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Self {
        // counted and logged where refused (`access`), with the grant's name
        match r {
            Refusal::Unauthenticated(msg) => Status::unauthenticated(msg),
            Refusal::Denied(msg) => Status::permission_denied(msg),
        }
    }
}

impl From<NotReady> for Status {
    fn from(e: NotReady) -> Self {
        if let Some(held) = NOT_SUBSCRIBED.allow() {
            tracing::warn!(error = %e, similar_not_logged = held, "events subscription not confirmed");
        }
        Status::unavailable("the election store is unavailable; retry with backoff")
    }
}
