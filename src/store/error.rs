//! The store's error type.

use std::time::Duration;

use crate::election::Rejection;

/// What went wrong talking to Redis (rejections of the request itself are carried too, since
/// some are only known inside the script).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request breaks a rule of the election; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No connection could be had from the pool.
    #[error("redis connection pool: {0}")]
    Pool(#[from] deadpool::managed::PoolError<redis::RedisError>),
    /// Redis did not answer within the configured timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Fewer replicas than required confirmed a change in time (the primary has it).
    #[error("only {got} of {want} redis replicas confirmed the change in time")]
    NotReplicated {
        /// Replicas that confirmed.
        got: u64,
        /// Replicas required.
        want: u32,
    },
    /// Redis holds or returned something this service did not write.
    #[error("unexpected data from redis: {0}")]
    Corrupt(String),
}
