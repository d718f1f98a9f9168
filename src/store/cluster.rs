//! Redis Cluster: the command connection and the sharded pub/sub connection.
//!
//! redis-rs's cluster connection keeps one multiplexed connection per node, routes each
//! command by the hash slot of its first key, and follows `MOVED`/`ASK` redirections
//! (refreshing its slot map). Every election's keys and channel share one hash tag, so each
//! operation is one script on the master of the election's slot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{ProtocolVersion, PushInfo, RedisResult};
use tokio::sync::{mpsc, Mutex};

use super::gate::Gate;
use crate::telemetry::Throttle;

/// How often the Cluster client retries one command (see [`ClusterTarget::builder`]).
const RETRIES: u32 = 4;

/// The shortest time between two retirements of the command connection.
const RETIRE_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Where the Cluster is and how to talk to it.
pub struct ClusterTarget {
    nodes: Vec<String>,
    ca_cert: Option<Vec<u8>>,
    timeout: Duration,
    /// The command connection, made on first use and made anew after it stops answering.
    /// Taken on every operation, so a plain lock held for a clone.
    commands: std::sync::Mutex<Option<Commands>>,
    /// Held while connecting, so that callers wait for one new connection, not make many.
    connecting: Mutex<()>,
    /// Numbers the command connections.
    generations: AtomicU64,
    /// Fails calls at once while the Cluster cannot be reached at all (`gate.rs`).
    gate: Gate,
    /// When a command connection was last retired (see [`ClusterTarget::retire`]).
    last_retired: std::sync::Mutex<Option<Instant>>,
}

/// The command connection, numbered so that only the one that failed is replaced.
#[derive(Clone)]
pub struct Commands {
    generation: u64,
    /// The connection (cheap to clone: a handle to one connection per node).
    pub conn: ClusterConnection,
}

impl ClusterTarget {
    /// Checks the seed node URLs; connects nothing yet.
    pub fn new(nodes: &[String], ca_cert: Option<Vec<u8>>, timeout: Duration) -> RedisResult<Self> {
        let target = Self {
            nodes: nodes.to_vec(),
            ca_cert,
            timeout,
            commands: std::sync::Mutex::new(None),
            connecting: Mutex::new(()),
            generations: AtomicU64::new(0),
            gate: Gate::default(),
            last_retired: std::sync::Mutex::new(None),
        };
        target.builder().build()?;
        Ok(target)
    }

    fn builder(&self) -> ClusterClientBuilder {
        let mut b = ClusterClient::builder(self.nodes.clone())
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            // A command that finds its node gone is retried at once, each time after a round
            // of connection attempts to every seed node: 16 times by default, so that every
            // call made while the Cluster is down cost 48 attempts on three nodes. Four
            // still follow a redirection or a failover within the call's timeout.
            .retries(RETRIES);
        if let Some(ca) = &self.ca_cert {
            b = b.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        b
    }

    /// The shared command connection, connecting first when there is none.
    pub async fn commands(&self) -> RedisResult<Commands> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        // another caller may have connected while this one waited
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let conn = self.builder().build()?.get_async_connection().await?;
        let c = Commands {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            conn,
        };
        *self.slot() = Some(c.clone());
        Ok(c)
    }

    fn current(&self) -> Option<Commands> {
        self.slot().clone()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Commands>> {
        // only ever assigned whole, so a poisoned lock still holds a consistent value
        self.commands.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops `failed` (unless it was already replaced), so the next operation connects anew;
    /// at most once a second.
    ///
    /// redis-rs's cluster connection recovers from most failures by itself, but its slot-map
    /// refresh can wait forever (seen under load while a slot migrates), after which every
    /// command on it times out. A command that timed out therefore retires the connection. But
    /// while one master is down every call on its slots times out too, and each new connection
    /// tries every node again: hence the once a second, and a log line at most every 5 s.
    pub fn retire(&self, failed: &Commands) {
        static RETIRED: Throttle = Throttle::new(Duration::from_secs(5));
        let now = Instant::now();
        let mut last = self.last_retired.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < RETIRE_AT_MOST_EVERY) {
            return;
        }
        let mut current = self.slot();
        if current
            .as_ref()
            .is_some_and(|c| c.generation == failed.generation)
        {
            if let Some(held) = RETIRED.allow() {
                tracing::warn!(
                    similar_not_logged = held,
                    "redis cluster connection stopped answering; connecting anew"
                );
            }
            *current = None;
            *last = Some(now);
        }
    }

    /// A separate RESP3 connection for sharded pub/sub, whose messages and subscription
    /// confirmations arrive on `pushes`. It follows the slot map: after a node's connection
    /// breaks, it subscribes again to that node's channels.
    pub async fn subscriber(
        &self,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> RedisResult<ClusterConnection> {
        let conn = self
            .builder()
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?
            .get_async_connection()
            .await?;
        // the Cluster answers again: let calls through now (the listener's catch-up read
        // among them), not after the gate's next attempt
        self.gate.reached();
        Ok(conn)
    }
}

/// Runs `f` on the command connection. When it times out, or is abandoned by a caller's
/// timeout, the connection is retired (see [`ClusterTarget::retire`]). While no node of the
/// Cluster can be reached, calls fail at once and only one at a time tries (`gate.rs`).
pub async fn call<T, F, Fut>(target: &ClusterTarget, f: F) -> RedisResult<T>
where
    F: FnOnce(ClusterConnection) -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    if let Err(wait) = target.gate.admit() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "redis cluster unreachable",
            format!(
                "failing at once; the next attempt in {} ms",
                wait.as_millis()
            ),
        )));
    }
    let commands = match target.commands().await {
        Ok(c) => c,
        Err(e) => {
            target.note(evidence(&e, true));
            return Err(e);
        }
    };
    let mut guard = RetireUnlessDone {
        target,
        commands: Some(commands.clone()),
    };
    let r = f(commands.conn).await;
    if !matches!(&r, Err(e) if e.is_timeout()) {
        guard.commands = None;
        target.note(match &r {
            Ok(_) => Evidence::Answered,
            Err(e) => evidence(e, false),
        });
    }
    r
}

/// What the outcome of one call says about the Cluster as a whole.
#[derive(Debug, PartialEq, Eq)]
enum Evidence {
    /// A node answered (perhaps with an error).
    Answered,
    /// No node could be reached: the client has no connection to any, or a new connection
    /// reached none of the seed nodes.
    NoneReachable,
    /// Nothing about the whole: one node did not answer, or not in time. (In a partial
    /// outage the client sends what it can to the nodes that are up.)
    Nothing,
}

fn evidence(e: &redis::RedisError, connecting: bool) -> Evidence {
    use redis::ErrorKind;
    match e.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension => Evidence::Answered,
        // "No connections found" carries no node address; "Requested connection not found"
        // names the one node it lacks
        ErrorKind::ClusterConnectionNotFound if e.detail().is_none() => Evidence::NoneReachable,
        ErrorKind::Io if connecting => Evidence::NoneReachable,
        _ => Evidence::Nothing,
    }
}

impl ClusterTarget {
    fn note(&self, evidence: Evidence) {
        match evidence {
            Evidence::Answered => self.gate.reached(),
            Evidence::NoneReachable => {
                if self.gate.unreachable() {
                    // the next attempt connects anew (see gate.rs), without a log line each
                    *self.slot() = None;
                }
            }
            Evidence::Nothing => {}
        }
    }
}

/// Retires the connection when dropped still holding it: the call timed out or was abandoned.
struct RetireUnlessDone<'a> {
    target: &'a ClusterTarget,
    commands: Option<Commands>,
}

impl Drop for RetireUnlessDone<'_> {
    fn drop(&mut self) {
        if let Some(failed) = self.commands.take() {
            self.target.retire(&failed);
        }
    }
}

/// Routes a command to the master of `key`'s slot.
pub fn master_of(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )))
}

/// Routes a command to any one node.
pub fn any_node() -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)
}

/// Whether a `CLUSTER INFO` reply says the Cluster serves every slot (`cluster_state:ok`).
pub fn state_ok(info: &redis::Value) -> RedisResult<()> {
    let text = match info {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        _ => String::new(),
    };
    if text.lines().any(|l| l.trim() == "cluster_state:ok") {
        Ok(())
    } else {
        Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
            "the cluster reports cluster_state other than ok",
        )))
    }
}

/// Routes a command (`WAIT`) to every master, answering with the least of their numbers.
pub fn all_masters_least() -> RoutingInfo {
    RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::Aggregate(
            redis::cluster_routing::AggregateOp::Min,
        )),
    ))
}

/// Routes a command to every master, succeeding only when all do.
pub fn all_masters() -> RoutingInfo {
    RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::AllSucceeded),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError};

    #[test]
    fn only_a_cluster_with_no_node_reachable_counts_against_the_gate() {
        let none: RedisError =
            (ErrorKind::ClusterConnectionNotFound, "No connections found").into();
        let one: RedisError = (
            ErrorKind::ClusterConnectionNotFound,
            "Requested connection not found",
            "127.0.0.1:7001".to_owned(),
        )
            .into();
        let refused: RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(evidence(&none, false), Evidence::NoneReachable);
        assert_eq!(evidence(&one, false), Evidence::Nothing);
        // a node's connection refused: that node, not the Cluster
        assert_eq!(evidence(&refused, false), Evidence::Nothing);
        // a new connection that reached no seed node
        assert_eq!(evidence(&refused, true), Evidence::NoneReachable);
        // Redis answered, if only with an error
        let loading: RedisError = (
            ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
            "loading",
        )
            .into();
        assert_eq!(evidence(&loading, false), Evidence::Answered);
    }

    #[test]
    fn health_needs_the_cluster_to_say_its_state_is_ok() {
        let info = |state: &str| {
            redis::Value::BulkString(
                format!("cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:16384\r\n")
                    .into_bytes(),
            )
        };
        assert!(state_ok(&info("ok")).is_ok());
        assert!(state_ok(&info("fail")).is_err());
        assert!(state_ok(&redis::Value::Nil).is_err());
    }
}
