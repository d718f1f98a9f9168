//! The one place where internal errors become what clients see. Clients get a clear message
//! for their own mistakes and an opaque one for ours; the log gets the cause.

use tonic::Status;

use crate::election::Rejection;
use crate::events::NotReady;
use crate::store::StoreError;

impl From<Rejection> for Status {
    fn from(r: Rejection) -> Self {
        let msg = r.to_string();
        match r {
            Rejection::Empty(_) | Rejection::NotCandidate(_) | Rejection::Invalid(_) => {
                Status::invalid_argument(msg)
            }
            Rejection::TooLong { .. } | Rejection::TooManyCandidates { .. } => {
                Status::resource_exhausted(msg)
            }
            Rejection::NotFound(_) => Status::not_found(msg),
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(r) => r.into(),
            StoreError::Redis(_) | StoreError::Pool(_) | StoreError::Timeout(_) => {
                tracing::warn!(error = %e, "redis unavailable");
                Status::unavailable("the election store is unavailable; retry with backoff")
            }
            StoreError::NotReplicated { .. } => {
                tracing::warn!(error = %e, "change not confirmed by redis replicas");
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

impl From<NotReady> for Status {
    fn from(e: NotReady) -> Self {
        tracing::warn!(error = %e, "events subscription not confirmed");
        Status::unavailable("the election store is unavailable; retry with backoff")
    }
}
