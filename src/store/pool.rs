//! The command connection pool: deadpool over redis-rs multiplexed connections, with a cheaper
//! recycle than deadpool-redis's own.
//!
//! deadpool-redis pings a connection every time it is taken from the pool, which doubles the
//! round trips of a one-script operation. Here a connection taken within the last second is
//! handed out as it is (it just worked); an idle one is still pinged. A connection whose
//! command failed at the connection level is taken out of the pool instead of returned, so a
//! broken connection costs at most the one call that found it broken.
//!
//! The connections are redis-rs multiplexed connections, built to pipeline many callers'
//! commands over one socket. An operation that needs the connection to itself (a `WAIT` after
//! its function, which blocks the connection in Redis until replicas confirm) holds its pooled
//! object for the whole call. Any other takes a handle to a pooled connection and gives the
//! object back at once ([`MasterConnection::share`], a clone), so concurrent calls pipeline on a few
//! sockets: one write and one read carry many calls, for the replica and for Redis. A shared
//! connection that breaks fails only the calls already on it: the first to see it break marks
//! it, and the pool drops it the next time it hands it out (see `recycle`).
//!
//! While Redis cannot be reached, connecting is not tried on every call: after a failed
//! attempt the next waits 25 ms, doubling up to 500 ms, and calls in between fail at once. An
//! outage under load then costs a few connection attempts a second, not one per call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use std::sync::Arc;

use super::sentinel::Sentinels;

/// How recently a connection must have been taken for its recycle to skip the PING.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// The first wait after a failed connection attempt, and the longest.
const FIRST_WAIT: Duration = Duration::from_millis(25);
const MAX_WAIT: Duration = Duration::from_millis(500);

/// Creates connections like deadpool-redis (to one Redis, or to the master that Sentinel
/// names at the time), recycles them more cheaply, and backs off while Redis is unreachable.
pub struct Manager {
    connect: Connect,
    /// After a failed attempt: when the next may start, and how long the wait was.
    backoff: Mutex<Option<(Instant, Duration)>>,
}

/// Where new connections go.
pub enum Connect {
    /// One Redis.
    Direct(Box<deadpool_redis::Manager>),
    /// The current master of a Sentinel-monitored group, asked anew for each connection.
    Sentinel(Arc<Sentinels>),
}

/// A pooled connection to a master, with the failover epoch under which that Redis is master
/// (0 for one Redis): every function call made on it carries the epoch. A clone is a handle
/// on the same connection, which calls share (see the module's doc).
#[derive(Clone)]
pub struct MasterConnection {
    conn: MultiplexedConnection,
    /// The master's failover epoch when the connection was made.
    pub epoch: u64,
    /// Set by a call that found the connection broken while others shared it.
    broken: Arc<AtomicBool>,
}

impl MasterConnection {
    /// A handle on this connection for one call; the pooled object can go back at once.
    pub fn share(&self) -> MasterConnection {
        self.clone()
    }

    /// Marks the connection broken when `result` shows it, so that the pool replaces it.
    pub fn check<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(e) = &result {
            if breaks_connection(e) {
                self.broken.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl std::fmt::Debug for MasterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterConnection")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl ConnectionLike for MasterConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl Manager {
    /// A manager connecting as `connect` says.
    pub fn new(connect: Connect) -> Self {
        Self {
            connect,
            backoff: Mutex::new(None),
        }
    }

    /// A manager for one Redis with the given connection settings.
    pub fn direct(
        info: redis::ConnectionInfo,
        config: redis::AsyncConnectionConfig,
    ) -> Result<Self, RedisError> {
        Ok(Self::new(Connect::Direct(Box::new(
            deadpool_redis::Manager::new_with_config(info, config)?,
        ))))
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Duration)>> {
        // only ever assigned whole, so a poisoned lock still holds a consistent value
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect(&self) -> Result<MasterConnection, RedisError> {
        let (conn, epoch) = match &self.connect {
            Connect::Direct(m) => (managed::Manager::create(&**m).await?, 0),
            Connect::Sentinel(sentinels) => sentinels.connect().await?,
        };
        Ok(MasterConnection {
            conn,
            epoch,
            broken: Arc::default(),
        })
    }
}

impl managed::Manager for Manager {
    type Type = MasterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MasterConnection, RedisError> {
        if let Some((next, _)) = *self.backoff() {
            if Instant::now() < next {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "redis unreachable at the last attempt; not trying again yet",
                )));
            }
        }
        // boxed: connecting is a large future, and the pool's `get` holds this one inline, so
        // without the box every call's `get` would carry (and copy) it
        let r = Box::pin(self.connect()).await;
        let mut backoff = self.backoff();
        match &r {
            Ok(_) => *backoff = None,
            Err(_) => {
                let wait = backoff.map_or(FIRST_WAIT, |(_, w)| (w * 2).min(MAX_WAIT));
                *backoff = Some((Instant::now() + wait, wait));
            }
        }
        r
    }

    async fn recycle(
        &self,
        conn: &mut MasterConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        // a call that shared it found it broken
        if conn.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message("the connection broke"));
        }
        // a Sentinel has named a newer master: this one may still take writes (cut off from
        // the Sentinels, or not yet turned into a replica), but they would be lost
        if let Connect::Sentinel(sentinels) = &self.connect {
            if conn.epoch < sentinels.latest_epoch() {
                return Err(RecycleError::message("the master was failed over"));
            }
        }
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
        conn: &mut MasterConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        match &self.connect {
            Connect::Direct(m) => managed::Manager::recycle(&**m, &mut conn.conn, metrics).await,
            // an idle connection to a demoted master answers PING too, but its first write
            // fails READONLY and takes it out of the pool (see `check`)
            Connect::Sentinel(_) => {
                let _: String = redis::cmd("PING").query_async(&mut conn.conn).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use deadpool::managed::Manager as _;

    const HELD_BACK: &str = "not trying again yet";

    #[tokio::test]
    async fn after_a_failed_attempt_connecting_waits_before_trying_again() {
        // a port nothing listens on
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let info =
            redis::IntoConnectionInfo::into_connection_info(format!("redis://127.0.0.1:{port}"))
                .expect("url");
        let m = Manager::direct(info, redis::AsyncConnectionConfig::new()).expect("manager");
        let first = m.create().await.expect_err("nothing listens");
        assert!(!first.to_string().contains(HELD_BACK), "{first}");
        // at once again: refused without an attempt
        let second = m.create().await.expect_err("still nothing");
        assert!(second.to_string().contains(HELD_BACK), "{second}");
        assert!(
            breaks_connection(&second),
            "calls see it as a connection failure"
        );
        // after the longest wait, it tries again
        tokio::time::sleep(MAX_WAIT + Duration::from_millis(50)).await;
        let third = m.create().await.expect_err("still nothing");
        assert!(!third.to_string().contains(HELD_BACK), "{third}");
    }
}
