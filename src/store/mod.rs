//! Redis storage: the store's API (this file: the operations, where Redis is, the backends),
//! running an operation (`apply.rs`), its errors (`error.rs`), stored terms (`decode.rs`),
//! connections (`pool.rs` for one Redis or Sentinel, `sentinel.rs`, `cluster.rs`), the
//! scripts and key names, the last states seen of big elections (`recent.rs`), the pub/sub
//! listeners and the lease sweeper. Every operation is
//! exactly one script execution; nothing is read, changed in Rust and written back.

mod apply;
mod cluster;
mod cluster_listener;
mod decode;
mod error;
mod gate;
mod keys;
mod listener;
mod listing;
mod pool;
mod recent;
mod scripts;
mod sentinel;
mod session;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncConnectionConfig;

use pool::Pool;
use sentinel::Sentinels;

pub use decode::{decode_term, Head};
pub use error::StoreError;
pub use keys::{ElectionKeys, Keys, BUCKETS};
pub use listener::listen;
pub use listing::{Change, Inspection, Lease, Listed};
pub use recent::Held;
pub use scripts::{Flavor, Scripts};
pub use sweeper::sweep;

use crate::election::{ElectionName, MemberId, Term, ValidSnapshot};
use crate::metrics::Metrics;

/// What an operation answered: a term, or a big election's state as this replica holds it.
#[derive(Debug)]
pub enum Answer {
    Term(Term),
    Held(Arc<Held>),
}

impl Answer {
    pub fn term(&self) -> &Term {
        match self {
            Answer::Term(t) => t,
            Answer::Held(h) => &h.term,
        }
    }

    pub fn into_term(self) -> Term {
        match self {
            Answer::Term(t) => t,
            Answer::Held(h) => h.term.clone(),
        }
    }
}

/// One operation on one election.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// The caller joins.
    Enter,
    /// The caller leaves (Withdraw and Close).
    Withdraw,
    /// The candidate becomes leader.
    Anoint(&'a MemberId),
    /// The candidate moves one place up.
    Promote(&'a MemberId),
    /// The candidate is removed.
    Evict(&'a MemberId),
    /// The current term (GetTerm, Snapshot).
    GetTerm,
    /// Replace the state with a snapshot's.
    Restore(&'a ValidSnapshot),
    /// Make the election exist.
    Create,
    /// Wipe the election.
    Delete,
    /// Drop the candidates whose lease ran out (and re-index): what the sweeper runs.
    Expire,
}

impl Op<'_> {
    /// Whether applying the operation twice has the same effect as once.
    fn is_idempotent(&self) -> bool {
        !matches!(self, Op::Promote(_) | Op::Evict(_) | Op::Delete)
    }
}

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum Source {
    /// One Redis: a `redis://` or `rediss://` URL.
    Url(String),
    /// The master of a Sentinel-monitored group, found anew on every connection.
    Sentinel {
        /// Sentinel URLs (`redis://host:port`).
        sentinels: Vec<String>,
        /// The master's name in Sentinel.
        master: String,
        /// Username for the master and its replicas (the Sentinels' own come in their URLs).
        username: Option<String>,
        /// Password for the master and its replicas.
        password: Option<String>,
    },
    /// A Redis Cluster, found from any of these seed nodes (`redis://` or `rediss://` URLs).
    Cluster {
        /// Seed node URLs; the first one's credentials and scheme apply to all nodes.
        nodes: Vec<String>,
    },
}

/// Hands out clients for the current master.
#[derive(Clone)]
enum Target {
    Direct(Box<redis::Client>),
    Sentinel(Arc<Sentinels>),
}

/// How commands reach Redis.
#[derive(Clone)]
enum Backend {
    /// One master (direct, or found by Sentinel): a pool of multiplexed connections.
    Pooled { pool: Pool, target: Target },
    /// A Redis Cluster: one multiplexed connection per node, commands routed by slot.
    Cluster(Arc<cluster::ClusterTarget>),
}

/// Settings the store needs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where Redis is.
    pub source: Source,
    /// PEM CA certificate for `rediss://`, instead of the system's roots.
    pub ca_cert: Option<Vec<u8>>,
    /// Key and channel prefix.
    pub key_prefix: String,
    /// Pooled command connections.
    pub pool_size: usize,
    /// Bound on one round trip, connecting included.
    pub timeout: Duration,
    /// Lease TTL in ms, 0 = off.
    pub lease_ttl_ms: u64,
    /// Most candidates per election.
    pub max_candidates: usize,
    /// Largest candidate list, in stored bytes.
    pub max_term_bytes: usize,
    /// Replicas that must confirm each change (`WAIT`); 0: none.
    pub wait_replicas: u32,
    /// Leadership changes each election's history keeps; 0: none.
    pub history_len: u32,
    /// Where Redis errors and lease expiries are counted.
    pub metrics: Arc<Metrics>,
}

/// The election store: cheap to clone, shared by every gRPC handler of a replica.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    scripts: std::sync::Arc<Scripts>,
    keys: Keys,
    timeout: Duration,
    pool_size: usize,
    lease_ttl_ms: u64,
    max_candidates: usize,
    max_term_bytes: usize,
    wait_replicas: u32,
    history_len: u32,
    metrics: Arc<Metrics>,
    recent: Arc<recent::RecentTerms>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).finish()
    }
}

/// What the lease sweepers find due (see [`Store::due_elections`]).
#[derive(Debug, Default)]
pub struct Due {
    /// Elections with a candidate's lease due.
    pub elections: Vec<ElectionName>,
    /// Buckets with a session's end due.
    pub sessions: Vec<usize>,
}

impl Store {
    /// Creates the pool; no connection is made until the first operation.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout));
        let (target, manager) = match &config.source {
            Source::Cluster { nodes } => {
                let target =
                    cluster::ClusterTarget::new(nodes, config.ca_cert.clone(), config.timeout)?;
                return Ok(Self::with_backend(
                    config,
                    Backend::Cluster(Arc::new(target)),
                    Flavor::Cluster,
                ));
            }
            Source::Url(url) => {
                let client = match &config.ca_cert {
                    Some(ca) => redis::Client::build_with_tls(
                        url.as_str(),
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(ca.clone()),
                        },
                    )?,
                    None => redis::Client::open(url.as_str())?,
                };
                // the connection info carries the TLS settings, so pooled connections use them
                let manager =
                    pool::Manager::direct(client.get_connection_info().clone(), conn_config)?;
                (Target::Direct(Box::new(client)), manager)
            }
            Source::Sentinel {
                sentinels,
                master,
                username,
                password,
            } => {
                let sentinels = Arc::new(Sentinels::new(
                    sentinels,
                    master,
                    username.as_deref(),
                    password.as_deref(),
                    config.ca_cert.as_deref(),
                    config.timeout,
                )?);
                let manager = pool::Manager::new(pool::Connect::Sentinel(sentinels.clone()));
                (Target::Sentinel(sentinels), manager)
            }
        };
        // the most recently returned connection first: calls that share connections (see
        // pool.rs) then crowd onto one or two, and pipeline there
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .queue_mode(deadpool::managed::QueueMode::Lifo)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Corrupt(format!("cannot build the redis pool: {e}")))?;
        Ok(Self::with_backend(
            config,
            Backend::Pooled { pool, target },
            Flavor::Single,
        ))
    }

    fn with_backend(config: &StoreConfig, backend: Backend, flavor: Flavor) -> Self {
        Self {
            backend,
            scripts: std::sync::Arc::new(Scripts::new(flavor)),
            keys: Keys::new(&config.key_prefix),
            timeout: config.timeout,
            pool_size: config.pool_size,
            metrics: config.metrics.clone(),
            wait_replicas: config.wait_replicas,
            history_len: config.history_len,
            lease_ttl_ms: config.lease_ttl_ms,
            max_candidates: config.max_candidates,
            max_term_bytes: config.max_term_bytes,
            recent: Arc::default(),
        }
    }

    /// Key and channel names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A client for the current master, for connections outside the pool (the pub/sub
    /// subscriber); with Sentinel, asked anew each time.
    /// Not used with a Cluster, whose subscriber is [`Self::cluster_subscriber`].
    pub async fn master(&self) -> redis::RedisResult<redis::Client> {
        match &self.backend {
            Backend::Pooled {
                target: Target::Direct(c),
                ..
            } => Ok((**c).clone()),
            Backend::Pooled {
                target: Target::Sentinel(s),
                ..
            } => {
                // the best answer; asking also tells the pool when the master was replaced
                let named = s.named().await?;
                s.client(&named[0])
            }
            Backend::Cluster(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a Redis Cluster has no single master",
            ))),
        }
    }

    /// Whether the master can move (Sentinel), so long-lived connections must check where it is.
    pub fn master_can_move(&self) -> bool {
        matches!(
            self.backend,
            Backend::Pooled {
                target: Target::Sentinel(_),
                ..
            }
        )
    }

    /// Whether Redis is a Cluster (events use sharded pub/sub).
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// A new sharded pub/sub connection to the Cluster, whose messages and subscription
    /// confirmations arrive on `pushes`. Only with a Cluster (see [`Self::master`] otherwise).
    pub async fn cluster_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
        match &self.backend {
            Backend::Cluster(c) => c.subscriber(pushes).await,
            Backend::Pooled { .. } => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "not a Redis Cluster",
            ))),
        }
    }

    /// The bound on one Redis round trip.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads elections' terms as stored, without running any rule (no expiry, no lease
    /// refresh): what the event subscriber uses to catch up. One pipelined round trip per
    /// batch; an election with no state reads as the empty term with revision 0.
    pub async fn read_many(&self, elections: &[ElectionName]) -> Result<Vec<Term>, StoreError> {
        const BATCH: usize = 512;
        let mut out = Vec::with_capacity(elections.len());
        for chunk in elections.chunks(BATCH) {
            // one MGET: on a Cluster, the client splits it by slot and asks each master
            let mut mget = redis::cmd("MGET");
            for e in chunk {
                mget.arg(self.keys.election(e).term);
            }
            let raws: Vec<Option<Vec<u8>>> = self
                .bounded(async {
                    match &self.backend {
                        Backend::Pooled { pool, .. } => {
                            let mut conn = pool.get().await?;
                            let r = mget.query_async(&mut *conn).await;
                            Ok(pool::check(conn, r)?)
                        }
                        Backend::Cluster(c) => Ok(cluster::call(c, |mut conn| async move {
                            mget.query_async(&mut conn).await
                        })
                        .await?),
                    }
                })
                .await?;
            for raw in raws {
                out.push(match raw {
                    Some(raw) => decode_term(&raw)?,
                    None => Term {
                        id: 0,
                        timestamp: None,
                        candidates: Vec::new(),
                        revision: 0,
                    },
                });
            }
        }
        Ok(out)
    }

    /// Changes of leader each election's history keeps (`ELECTION_HISTORY_LEN`).
    pub fn history_len(&self) -> u32 {
        self.history_len
    }

    /// Lease TTL in ms (0: leases never expire).
    pub fn lease_ttl_ms(&self) -> u64 {
        self.lease_ttl_ms
    }

    /// Elections with a lease due now on the Redis clock, at most `limit` per bucket, and the
    /// buckets with a session end due: two round trips (the time, then every bucket's index in
    /// one pipeline), whatever the number of elections.
    pub async fn due_elections(&self, limit: usize) -> Result<Due, StoreError> {
        let indexes = self.keys.lease_indexes();
        let names: Vec<Vec<String>> = self
            .bounded(async {
                let pool = match &self.backend {
                    Backend::Pooled { pool, .. } => pool,
                    Backend::Cluster(c) => {
                        // each master has its own clock: one small script per bucket, sent
                        // together; the connection pipelines them per node
                        let read = cluster::call(c, |conn| {
                            let reads = indexes.iter().map(move |index| {
                                let mut conn = conn.clone();
                                let mut inv = self.scripts.due.prepare_invoke();
                                inv.key(index).arg(limit);
                                async move { inv.invoke_async::<Vec<String>>(&mut conn).await }
                            });
                            futures::future::try_join_all(reads)
                        });
                        return Ok(read.await?);
                    }
                };
                let mut conn = pool.get().await?;
                let time = redis::cmd("TIME").query_async(&mut *conn).await;
                let (secs, micros): (u64, u64) = pool::check(conn, time)?;
                let mut conn = pool.get().await?;
                let now_ms = secs * 1000 + micros / 1000;
                let mut pipe = redis::pipe();
                for index in indexes {
                    pipe.cmd("ZRANGEBYSCORE")
                        .arg(index)
                        .arg("-inf")
                        .arg(now_ms)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit);
                }
                let r = pipe.query_async(&mut *conn).await;
                Ok(pool::check(conn, r)?)
            })
            .await?;
        // a bucket's entry "" is its earliest session end (no election has that name)
        let mut due = Due::default();
        for (bucket, names) in names.into_iter().enumerate() {
            for name in names {
                if name.is_empty() {
                    due.sessions.push(bucket);
                } else {
                    due.elections.push(ElectionName::from_stored(name));
                }
            }
        }
        Ok(due)
    }

    /// One round trip to check that Redis answers (health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Pooled { pool, .. } => {
                    let mut conn = pool.get().await?;
                    let r: Result<String, _> = redis::cmd("PING").query_async(&mut *conn).await;
                    pool::check(conn, r)?;
                }
                Backend::Cluster(c) => {
                    // every master must answer: each holds a share of the elections. The
                    // client leaves out a master it has no connection to, so the Cluster's own
                    // view is asked too: with a master down it says `fail` (under Redis's
                    // default cluster-require-full-coverage) once its nodes agree.
                    cluster::call(c, |mut conn| async move {
                        conn.route_command(redis::cmd("PING"), cluster::all_masters())
                            .await?;
                        let mut info = redis::cmd("CLUSTER");
                        info.arg("INFO");
                        let info = conn.route_command(info, cluster::any_node()).await?;
                        cluster::state_ok(&info)
                    })
                    .await?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if matches!(
            r,
            Err(StoreError::Redis(_) | StoreError::Pool(_) | StoreError::Timeout(_))
        ) {
            Metrics::add(&self.metrics.redis_errors, 1);
        }
        r
    }

    /// The replica's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
