//! The command connection pool: deadpool over redis-rs multiplexed connections, with a cheaper
//! recycle than deadpool-redis's own.
//!
//! deadpool-redis pings a connection every time it is taken from the pool, which doubles the
//! round trips of a one-script operation. Here a connection taken within the last second is
//! handed out as it is (it just worked); an idle one is still pinged. A connection whose
//! command failed at the connection level is taken out of the pool instead of returned, so a
//! broken connection costs at most the one call that found it broken.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::RedisError;
use std::sync::Arc;

/// How recently a connection must have been taken for its recycle to skip the PING.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// Creates connections like deadpool-redis (to one Redis, or to the master that Sentinel
/// names at the time), recycles them more cheaply.
pub enum Manager {
    /// One Redis.
    Direct(Box<deadpool_redis::Manager>),
    /// The current master of a Sentinel-monitored group, asked anew for each connection.
    Sentinel {
        /// Asks the Sentinels.
        client: Arc<tokio::sync::Mutex<SentinelClient>>,
        /// Timeouts of the connections made.
        config: redis::AsyncConnectionConfig,
    },
}

impl Manager {
    /// A manager for one Redis with the given connection settings.
    pub fn direct(
        info: redis::ConnectionInfo,
        config: redis::AsyncConnectionConfig,
    ) -> Result<Self, RedisError> {
        Ok(Self::Direct(Box::new(
            deadpool_redis::Manager::new_with_config(info, config)?,
        )))
    }
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        // boxed: connecting is a large future, and the pool's `get` holds this one inline, so
        // without the box every call's `get` would carry (and copy) it
        Box::pin(async {
            match self {
                Manager::Direct(m) => managed::Manager::create(&**m).await,
                Manager::Sentinel { client, config } => {
                    let master = client.lock().await.async_get_client().await?;
                    master
                        .get_multiplexed_async_connection_with_config(config)
                        .await
                }
            }
        })
        .await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < TRUSTED_FOR {
            return Ok(());
        }
        Box::pin(self.recycle_checked(conn, metrics)).await
    }
}

impl Manager {
    /// [`managed::Manager::recycle`] for a connection idle long enough to check (boxed there).
    async fn recycle_checked(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        match self {
            Manager::Direct(m) => managed::Manager::recycle(&**m, conn, metrics).await,
            // an idle connection to a demoted master answers PING too, but its first write
            // fails READONLY and takes it out of the pool (see `check`)
            Manager::Sentinel { .. } => {
                let _: String = redis::cmd("PING").query_async(conn).await?;
                Ok(())
            }
        }
    }
}

/// The pool type.
pub type Pool = managed::Pool<Manager>;

/// A pooled connection.
pub type Conn = managed::Object<Manager>;

/// Whether an error means the connection itself is unusable (as opposed to a script error).
/// `READONLY` counts: the connection leads to a former master that a failover demoted.
pub fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
}

/// Takes a connection out of the pool for good when `result` shows it broken.
pub fn check<T>(conn: Conn, result: Result<T, RedisError>) -> Result<T, RedisError> {
    if let Err(e) = &result {
        if breaks_connection(e) {
            drop(managed::Object::take(conn));
        }
    }
    result
}
