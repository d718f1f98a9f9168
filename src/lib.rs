//! `electiond`: the Atomix `LeaderElectionService` served by stateless replicas, every election
//! kept in Redis and every operation one atomic Lua script.
//!
//! [`run`] starts a replica on a bound listener; `main` and the tests both go through it.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod config;
pub mod election;
pub mod events;
pub mod grpc;
pub mod local_redis;
pub mod metrics;
pub mod shutdown;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::access::Access;
use crate::config::Settings;
use crate::election::Limits;
use crate::events::Hub;
use crate::local_redis::{LocalRedis, LocalRedisError};
use crate::metrics::Metrics;
use crate::store::{Source, Store, StoreConfig, StoreError};

/// The generated protobuf and gRPC code.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    /// `atomix.primitive`
    pub mod atomix {
        pub mod primitive {
            tonic::include_proto!("atomix.primitive");
            pub mod meta {
                tonic::include_proto!("atomix.primitive.meta");
            }
            pub mod election {
                tonic::include_proto!("atomix.primitive.election");
            }
        }
    }

    /// `electiond.session.v1`: one keep-alive for all of a client's elections.
    pub mod session {
        tonic::include_proto!("electiond.session.v1");
    }

    pub mod admin {
        tonic::include_proto!("electiond.admin.v1");
    }

    /// The election service as served: the same as
    /// `atomix::primitive::election::leader_election_service_server`, except that its Events
    /// stream and its GetTerm answers are [`crate::grpc::encoded::Encoded`] (see `build.rs`).
    pub mod served {
        include!(concat!(
            env!("OUT_DIR"),
            "/served/atomix.primitive.election.rs"
        ));
    }

    /// Every file of the schema, encoded, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/electiond_descriptor.bin"));
}

/// What every handler of one replica shares.
#[derive(Debug)]
pub struct AppState {
    /// The Redis store.
    pub store: Store,
    /// Size limits for names, ids and candidate lists.
    pub limits: Limits,
    /// Fan-out of election changes to this replica's Events streams.
    pub hub: Hub,
    /// Turns true when the replica starts shutting down.
    pub stop: watch::Receiver<bool>,
    /// Permits for open Events streams (`max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The lease TTL as response metadata, encoded once (see `grpc::LEASE_TTL_HEADER`).
    pub lease_ttl: tonic::metadata::AsciiMetadataValue,
    /// Who may do what (off when no credential is configured).
    pub access: Arc<Access>,
}

/// Why a replica could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The private Redis could not be started.
    #[error(transparent)]
    LocalRedis(#[from] LocalRedisError),
    /// The Redis settings are unusable.
    #[error("redis settings: {0}")]
    Store(#[from] StoreError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not load the schema.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The metrics listener could not be started.
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("console: {0}")]
    Console(String),
    /// The access file or tokens are unusable.
    #[error("{0}")]
    Access(String),
}

/// The runtime a replica runs on: tokio's multi-threaded one, with the scheduler's LIFO slot
/// off when the build allows it (`.cargo/config.toml`).
///
/// With the slot on, a task woken by the running task runs next. An Events stream that sends a
/// change wakes its connection's writer, which then ran before the next stream of that
/// connection had sent: one socket write per event. With it off the writer runs after the
/// connection's streams have queued theirs, and one write carries them all. Measured with
/// `election-bench --scenarios fanout` (10,000 streams, 3 replicas): replica CPU per delivered
/// event about halved (docs/BENCHMARKS.md); unary calls are not slower.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

/// How often health re-checks Redis.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Serves one replica on `listener` until `shutdown` completes, then drains: health turns
/// NOT_SERVING, the listener closes, connections are told to go away (HTTP/2 GOAWAY), Events
/// streams end with `UNAVAILABLE`, and calls already sent get up to the configured drain time
/// to finish.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    // before anything starts: a mistake in the grants stops the start
    let access = Arc::new(
        Access::load(
            settings.access_file.as_ref().map(Into::into),
            settings.tokens(),
            metrics.clone(),
        )
        .map_err(RunError::Access)?,
    );
    let (store, local) = connect(&settings, metrics.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state, tasks) = start(&settings, store, metrics, access, stop_rx).await?;
    let served = serve(&settings, state, listener, shutdown, &stop_tx).await;
    // whatever ended serving (a drain, or an error before it began), the tasks stop now
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(redis) = local {
        redis.stop().await;
        tracing::info!("private redis-server stopped");
    }
    served
}

/// Where Redis is, per the settings; with none configured, a private `redis-server` started
/// for this replica (returned, so that it is stopped with it).
async fn redis_source(settings: &Settings) -> Result<(Source, Option<LocalRedis>), RunError> {
    Ok(
        match (&settings.redis_url, &settings.redis_sentinel_master) {
            (Some(url), _) => (Source::Url(url.clone()), None),
            (None, Some(master)) => (
                Source::Sentinel {
                    sentinels: settings.sentinels(),
                    master: master.clone(),
                    username: settings.redis_master_username.clone(),
                    password: settings.redis_master_password.clone(),
                },
                None,
            ),
            (None, None) if settings.redis_cluster_nodes.is_some() => (
                Source::Cluster {
                    nodes: settings.cluster_nodes(),
                },
                None,
            ),
            (None, None) => {
                let redis = LocalRedis::start(&settings.redis_server_bin).await?;
                tracing::warn!(
                    url = %redis.url(),
                    "no Redis configured (ELECTION_REDIS_URL): started a private redis-server; \
                     elections are not persisted and other replicas cannot share them"
                );
                (Source::Url(redis.url()), Some(redis))
            }
        },
    )
}

/// Step 1: the store, on the Redis the settings name (connections are made on first use).
async fn connect(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> Result<(Store, Option<LocalRedis>), RunError> {
    let (source, local) = redis_source(settings).await?;
    let ca_cert = match &settings.redis_ca_cert {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| RunError::Tls(format!("cannot read redis CA {path}: {e}")))?,
        ),
        None => None,
    };
    let store = Store::new(&StoreConfig {
        source,
        ca_cert,
        wait_replicas: settings.redis_wait_replicas,
        history_len: settings.history_len,
        key_prefix: settings.key_prefix.clone(),
        pool_size: settings.redis_pool_size,
        timeout: settings.redis_timeout(),
        lease_ttl_ms: settings.lease_ttl_ms,
        max_candidates: settings.max_candidates,
        max_term_bytes: settings.max_term_bytes,
        metrics,
    })?;
    Ok((store, local))
}

/// Step 2: the replica's background tasks: the pub/sub listener feeding the fan-out hub, the
/// lease sweeper, metrics, and health. They all end when `stop` turns true.
async fn start(
    settings: &Settings,
    store: Store,
    metrics: Arc<Metrics>,
    access: Arc<Access>,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<AppState>, Vec<tokio::task::JoinHandle<()>>), RunError> {
    let metrics_listener = match &settings.metrics_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Metrics(format!("cannot listen on {addr}: {e}")))?;
            tracing::info!(addr = %l.local_addr().map_err(|e| RunError::Metrics(e.to_string()))?, "metrics on /metrics");
            Some(l)
        }
        None => None,
    };
    let console_listener = match &settings.console_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Console(format!("cannot listen on {addr}: {e}")))?;
            let at = l
                .local_addr()
                .map_err(|e| RunError::Console(e.to_string()))?;
            tracing::info!(addr = %at, "web console on http://{at}/");
            Some(l)
        }
        None => None,
    };
    // a watcher waits for its subscription as long as a subscribe and a catch-up read may take
    let (hub, commands) = Hub::new(metrics.clone(), settings.redis_timeout() * 2);
    let mut tasks = vec![
        tokio::spawn(store::listen(
            store.clone(),
            hub.clone(),
            commands,
            stop.clone(),
        )),
        tokio::spawn(store::sweep(store.clone(), stop.clone())),
        tokio::spawn(access::watch(access.clone(), stop.clone())),
        tokio::spawn(admin::count(store.clone(), stop.clone())),
    ];
    if let Some(l) = metrics_listener {
        tasks.push(tokio::spawn(metrics::serve(l, metrics, stop.clone())));
    }
    let state = Arc::new(AppState {
        store,
        hub,
        stop: stop.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(settings.max_streams)),
        lease_ttl: settings.lease_ttl_ms.into(),
        access,
        limits: Limits {
            max_name_bytes: settings.max_name_bytes,
            max_id_bytes: settings.max_id_bytes,
            max_candidates: settings.max_candidates,
            max_term_bytes: settings.max_term_bytes,
        },
    });
    if let Some(l) = console_listener {
        tasks.push(tokio::spawn(admin::console::serve(
            l,
            state.clone(),
            stop.clone(),
        )));
    }
    Ok((state, tasks))
}

/// Accepted connections, with Nagle's algorithm off: a response goes out as several small
/// writes (headers, message, trailers), and with Nagle on each one after the first can wait
/// for the client's delayed ACK, up to 40 ms on Linux. (tonic's own `tcp_nodelay` applies only
/// to listeners it binds itself.)
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Steps 3 and 4: serves gRPC on `listener` until `shutdown`, then drains (see [`run`]).
async fn serve(
    settings: &Settings,
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop_tx: &watch::Sender<bool>,
) -> Result<(), RunError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(watch_health(state.clone(), reporter, state.stop.clone()));
    // Both reflection versions: older grpcurl and grpc_cli only speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    use proto::admin::election_admin_server::ElectionAdminServer;
    use proto::atomix::primitive::primitive_service_server::PrimitiveServiceServer;
    use proto::served::leader_election_service_server::LeaderElectionServiceServer;
    use proto::session::session_service_server::SessionServiceServer;
    let max_msg = settings.max_message_bytes;
    let mut builder = tonic::transport::Server::builder();
    if let Some((interval, timeout)) = settings.keepalive() {
        // An open stream is no proof that its client lives (a frozen process or a vanished
        // host keeps its TCP connection): a connection that stops answering pings is closed,
        // and its streams with it.
        builder = builder
            .http2_keepalive_interval(Some(interval))
            .http2_keepalive_timeout(Some(timeout));
    }
    if let Some(tls) = tls_config(settings)? {
        builder = builder.tls_config(tls)?;
    }
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = builder
        .layer(tower::util::MapResponseLayer::new(
            grpc::codec::oversize_is_resource_exhausted,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            LeaderElectionServiceServer::new(grpc::ElectionService::new(state.clone()))
                .max_decoding_message_size(max_msg),
        )
        .add_service(
            PrimitiveServiceServer::new(grpc::PrimitiveService::new(state.clone()))
                .max_decoding_message_size(max_msg),
        )
        .add_service(
            SessionServiceServer::new(grpc::SessionService::new(state.clone()))
                .max_decoding_message_size(max_msg),
        )
        .add_service(
            ElectionAdminServer::new(grpc::AdminService::new(state.clone()))
                .max_decoding_message_size(max_msg),
        )
        .serve_with_incoming_shutdown(incoming(listener), async move {
            let _ = drain_rx.await;
        });
    tokio::pin!(server);

    let served = tokio::select! {
        r = &mut server => r,
        _ = shutdown => {
            tracing::info!(drain = ?settings.drain_timeout(), "shutting down: no new connections, ending streams");
            let _ = stop_tx.send(true);
            let _ = drain_tx.send(());
            match tokio::time::timeout(settings.drain_timeout(), &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("drain time exceeded; closing the remaining connections");
                    Ok(())
                }
            }
        }
    };
    // health turns NOT_SERVING before `run` returns, even when the server ended by itself
    let _ = stop_tx.send(true);
    let _ = health_task.await;
    served?;
    Ok(())
}

/// TLS on the gRPC port, when a certificate and key are configured.
fn tls_config(settings: &Settings) -> Result<Option<tonic::transport::ServerTlsConfig>, RunError> {
    let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
        return Ok(None);
    };
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| RunError::Tls(format!("cannot read {path}: {e}")))
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &settings.tls_client_ca {
        // asked for, not required: callers with a bearer token need none
        tls = tls
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
            .client_auth_optional(true);
    }
    Ok(Some(tls))
}

/// Keeps gRPC health in step with Redis: SERVING while it answers, NOT_SERVING otherwise.
async fn watch_health(
    state: Arc<AppState>,
    reporter: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    use proto::atomix::primitive::primitive_service_server::PrimitiveServiceServer as P;
    use proto::served::leader_election_service_server::LeaderElectionServiceServer as E;
    use proto::session::session_service_server::SessionServiceServer as S;
    use tonic::server::NamedService;
    let names = [
        "",
        <E<grpc::ElectionService> as NamedService>::NAME,
        <P<grpc::PrimitiveService> as NamedService>::NAME,
        <S<grpc::SessionService> as NamedService>::NAME,
    ];
    let set = |status: ServingStatus| {
        let reporter = reporter.clone();
        async move {
            for name in names {
                reporter.set_service_status(name, status).await;
            }
        }
    };
    let mut last = None;
    loop {
        let status = match state.store.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %e, "redis does not answer: health is NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            if status == ServingStatus::Serving && last.is_some() {
                tracing::info!("redis answers again: health is SERVING");
            }
            set(status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            _ = shutdown::stopped(&mut stop) => break,
        }
    }
    // shutting down: a load balancer probing health stops sending calls here
    set(ServingStatus::NotServing).await;
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    #[test]
    // the constant is the build's configuration, which is what this checks
    #[allow(clippy::assertions_on_constants)]
    fn the_runtime_is_built_without_its_lifo_slot() {
        // Events fan-out makes one socket write per event without it (see `runtime`)
        assert!(
            cfg!(tokio_unstable),
            "built without `--cfg tokio_unstable` (RUSTFLAGS replaces .cargo/config.toml's \
             flags): the runtime keeps its LIFO slot and Events fan-out costs twice the CPU"
        );
        assert!(super::runtime().is_ok());
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = super::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("TCP_NODELAY readable"));
    }
}
