//! A client for `electiond`: every election call, typed; a [`Watch`] that survives a replica
//! going away; and [`Client::campaign`], which returns a [`Leadership`] that ends, on a local
//! timer, before the service could hand the place to someone else.
//!
//! ```no_run
//! # async fn demo() -> Result<(), electiond_client::Error> {
//! use electiond_client::Client;
//!
//! let client = Client::builder(["http://10.0.0.1:5678", "http://10.0.0.2:5678"]).build()?;
//! let leadership = client.campaign("nightly-report", "worker-1").await?;
//! // the fencing token: hand it to everything the work writes
//! let token = leadership.term_id();
//! tokio::select! {
//!     reason = leadership.lost() => eprintln!("lost leadership: {reason}"),
//!     _ = do_the_work(token) => {}
//! }
//! # Ok(()) }
//! # async fn do_the_work(_token: u64) {}
//! ```
//!
//! # The lease rule
//!
//! A candidate stays one only by calling (the service never counts an open stream). While
//! leader, the client refreshes its lease and counts it from the *send time* of the last
//! refresh a replica acknowledged: leadership counts as lost at that time + TTL − margin, on a
//! local monotonic timer, even when no message arrives at all (network cut, replica frozen,
//! Redis paused). The service expires the lease no earlier than TTL after the refresh was
//! applied, which is after it was sent, so the client always stops first, as long as the two
//! clocks run at about the same rate. The TTL comes from the service; the margin defaults to
//! a fifth of it ([`ClientBuilder::margin`]).

#![forbid(unsafe_code)]

mod admin;
mod campaign;
mod session;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

pub use admin::{Change, ElectionSummary, Page};
pub use campaign::{Leadership, LostReason};
pub use session::KeepAlive;
pub use watch::{Reset, Watch, WatchItem};

/// The generated protobuf and gRPC code of the service's schema.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    /// `atomix.primitive`
    pub mod atomix {
        /// `atomix.primitive`
        pub mod primitive {
            tonic::include_proto!("atomix.primitive");
            /// `atomix.primitive.meta`
            pub mod meta {
                tonic::include_proto!("atomix.primitive.meta");
            }
            /// `atomix.primitive.election`
            pub mod election {
                tonic::include_proto!("atomix.primitive.election");
            }
        }
    }
    /// `electiond.session.v1`: one keep-alive for all of a client's elections
    pub mod session {
        tonic::include_proto!("electiond.session.v1");
    }
    /// `electiond.admin.v1`: listing elections and their history of leaders
    pub mod admin {
        tonic::include_proto!("electiond.admin.v1");
    }
}

use proto::atomix::primitive as pb;
use proto::atomix::primitive::election as epb;
use proto::atomix::primitive::election::leader_election_service_client::LeaderElectionServiceClient;
use proto::atomix::primitive::primitive_service_client::PrimitiveServiceClient;

/// Response metadata in which the service states its lease TTL, in milliseconds.
const LEASE_TTL_HEADER: &str = "electiond-lease-ttl-ms";

/// What went wrong, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was wrong (an empty name, a candidate that is not one, a bad snapshot).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `delete` of an election that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Over a configured limit of the service.
    #[error("over a limit: {0}")]
    ResourceExhausted(String),
    /// No token, or a wrong one.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The credential's grant does not allow the call (the message names the operation, the
    /// election, the client id and the grant).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No replica could be reached, or Redis is down; retry later. A change that failed this
    /// way may or may not have been applied.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The client's settings are unusable (a bad endpoint, an unreadable CA).
    #[error("configuration: {0}")]
    Config(String),
    /// Any other status the service answered with.
    #[error("{0}")]
    Other(Status),
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let msg = s.message().to_owned();
        match s.code() {
            Code::InvalidArgument => Error::InvalidArgument(msg),
            Code::NotFound => Error::NotFound(msg),
            Code::ResourceExhausted => Error::ResourceExhausted(msg),
            Code::Unauthenticated => Error::Unauthenticated(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                Error::Unavailable(msg)
            }
            _ => Error::Other(s),
        }
    }
}

/// One state of an election.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Term {
    /// The term id: goes up whenever another candidate becomes leader (by one; after a Redis
    /// failover, into the new master's range, so that no id is ever handed out twice). The fencing
    /// token of that leader.
    pub id: u64,
    /// The leader, or `None` when there are no candidates.
    pub leader: Option<String>,
    /// The candidates, leader first.
    pub candidates: Vec<String>,
    /// When the candidate list last changed (the Redis server's clock).
    pub timestamp: Option<SystemTime>,
}

impl Term {
    fn from_proto(t: Option<epb::Term>) -> Self {
        let Some(t) = t else {
            return Term::default();
        };
        Term {
            id: t.id.map_or(0, |e| e.value),
            leader: (!t.leader.is_empty()).then_some(t.leader),
            candidates: t.candidates,
            timestamp: t.timestamp.and_then(|ts| SystemTime::try_from(ts).ok()),
        }
    }

    fn to_proto(&self) -> epb::Term {
        epb::Term {
            id: Some(pb::meta::Epoch { value: self.id }),
            timestamp: self.timestamp.map(prost_types::Timestamp::from),
            leader: self.leader.clone().unwrap_or_default(),
            candidates: self.candidates.clone(),
        }
    }

    /// Whether `id` is this term's leader.
    pub fn is_leader(&self, id: &str) -> bool {
        self.leader.as_deref() == Some(id)
    }
}

/// Settings for a [`Client`], checked by [`ClientBuilder::build`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    timeout: Duration,
    margin: Option<Duration>,
}

impl ClientBuilder {
    /// A client certificate and its key (PEM), presented to `https://` endpoints: the
    /// credential of a grant that names the certificate (the service's access file).
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// A bearer token sent with every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A PEM CA to verify `https://` endpoints with (default: the system's roots).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The bound on one call, connecting included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long before its lease could lapse a leadership counts as lost (default: a fifth
    /// of the service's TTL). Work that needs time to stop (a child process's grace period)
    /// needs a margin at least that long.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// Checks the settings and makes the client. Connections are made on first use.
    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("no endpoints".into()));
        }
        let mut channels = Vec::new();
        for raw in &self.endpoints {
            let url = if raw.contains("://") {
                raw.clone()
            } else {
                format!("http://{raw}")
            };
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::Config(format!("endpoint {raw:?}: {e}")))?
                .connect_timeout(self.timeout)
                .timeout(self.timeout);
            if url.starts_with("https://") {
                let mut tls = ClientTlsConfig::new().with_enabled_roots();
                if let Some(pem) = &self.ca_pem {
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                if let Some((cert, key)) = &self.identity {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| Error::Config(format!("TLS for {raw:?}: {e}")))?;
            }
            channels.push((url, endpoint.connect_lazy()));
        }
        let token = match &self.token {
            Some(t) => Some(MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                Error::Config("the token has characters a header cannot hold".into())
            })?),
            None => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                channels,
                next: AtomicUsize::new(0),
                token,
                margin: self.margin,
                sessions: Mutex::default(),
            }),
        })
    }
}

/// A handle on one or more replicas. Cheap to clone; calls are spread over the endpoints and
/// move to the next one when a replica cannot be reached.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channels: Vec<(String, Channel)>,
    next: AtomicUsize,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    margin: Option<Duration>,
    /// The running session of each client id that campaigns (see `session.rs`).
    sessions: Mutex<HashMap<String, Weak<session::Session>>>,
}

/// Whether a call may be sent again after a failure that left its fate unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Applying it twice is the same as once (Enter, Withdraw, Anoint, reads, Restore).
    Safe,
    /// Promote, Evict, Delete: tried on one replica only.
    Once,
}

/// A successful call's answer and the TTL the service stated with it.
struct Answer<T> {
    value: T,
    ttl: Option<Duration>,
}

impl Client {
    /// Settings for a client of `endpoints` (`http://host:port`, `https://host:port`, or
    /// `host:port` for plain HTTP/2).
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            token: None,
            ca_pem: None,
            identity: None,
            timeout: Duration::from_secs(5),
            margin: None,
        }
    }

    fn header(name: &str, id: &str) -> Option<pb::RequestHeader> {
        Some(pb::RequestHeader {
            client_id: id.to_owned(),
            primitive_id: Some(pb::PrimitiveId {
                r#type: "Election".to_owned(),
                name: name.to_owned(),
            }),
            request_id: 0,
            request_type: 0,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.inner.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        r
    }

    /// Runs `call` on the next endpoint; on `UNAVAILABLE`, and when `retry` allows, on the
    /// others in turn.
    async fn call<T, F, Fut>(&self, retry: Retry, mut call: F) -> Result<Answer<T>, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.inner.channels.len();
        let first = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let tries = if retry == Retry::Safe { n } else { 1 };
        let mut last = None;
        for i in 0..tries {
            let (url, channel) = &self.inner.channels[(first + i) % n];
            match call(channel.clone()).await {
                Ok(response) => {
                    let ttl = response
                        .metadata()
                        .get(LEASE_TTL_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_millis);
                    return Ok(Answer {
                        value: response.into_inner(),
                        ttl,
                    });
                }
                Err(status) => {
                    let e = match Error::from(status) {
                        Error::Unavailable(msg) => Error::Unavailable(format!("{url}: {msg}")),
                        e => return Err(e),
                    };
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no endpoint".into())))
    }

    fn election(channel: Channel) -> LeaderElectionServiceClient<Channel> {
        LeaderElectionServiceClient::new(channel)
    }

    /// The current term. Carries no client id, so it refreshes nobody's lease.
    pub async fn get(&self, name: &str) -> Result<Term, Error> {
        self.get_as(name, "").await.map(|a| a.value)
    }

    /// GetTerm as `id`: also refreshes `id`'s lease if it is a candidate.
    async fn get_as(&self, name: &str, id: &str) -> Result<Answer<Term>, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(epb::GetTermRequest {
                    header: Self::header(name, id),
                    input: Some(epb::GetTermInput {}),
                });
                async move { Self::election(ch).get_term(r).await }
            })
            .await?;
        Ok(Answer {
            value: Term::from_proto(a.value.output.and_then(|o| o.term)),
            ttl: a.ttl,
        })
    }

    /// The service's lease TTL (zero when leases never expire), as it states it.
    pub async fn lease_ttl(&self, name: &str) -> Result<Duration, Error> {
        self.get_as(name, "")
            .await?
            .ttl
            .ok_or_else(|| Error::Config("the service did not state its lease TTL".into()))
    }

    /// `id` becomes a candidate (last in line), or stays one; returns the resulting term.
    pub async fn enter(&self, name: &str, id: &str) -> Result<Term, Error> {
        self.enter_answer(name, id).await.map(|a| a.value)
    }

    async fn enter_answer(&self, name: &str, id: &str) -> Result<Answer<Term>, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(epb::EnterRequest {
                    header: Self::header(name, id),
                    input: Some(epb::EnterInput {}),
                });
                async move { Self::election(ch).enter(r).await }
            })
            .await?;
        Ok(Answer {
            value: Term::from_proto(a.value.output.and_then(|o| o.term)),
            ttl: a.ttl,
        })
    }

    /// `id` stops being a candidate (no error if it was not one).
    pub async fn withdraw(&self, name: &str, id: &str) -> Result<Term, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(epb::WithdrawRequest {
                    header: Self::header(name, id),
                    input: Some(epb::WithdrawInput {}),
                });
                async move { Self::election(ch).withdraw(r).await }
            })
            .await?;
        Ok(Term::from_proto(a.value.output.and_then(|o| o.term)))
    }

    /// Makes `candidate` the leader. [`Error::InvalidArgument`] if it is not a candidate.
    pub async fn anoint(&self, name: &str, candidate: &str) -> Result<Term, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(epb::AnointRequest {
                    header: Self::header(name, ""),
                    input: Some(epb::AnointInput {
                        candidate_id: candidate.to_owned(),
                    }),
                });
                async move { Self::election(ch).anoint(r).await }
            })
            .await?;
        Ok(Term::from_proto(a.value.output.and_then(|o| o.term)))
    }

    /// Moves `candidate` one place up (into the lead from second place). Not retried on
    /// another replica after an unknown outcome: twice would move it two places.
    pub async fn promote(&self, name: &str, candidate: &str) -> Result<Term, Error> {
        let a = self
            .call(Retry::Once, |ch| {
                let r = self.request(epb::PromoteRequest {
                    header: Self::header(name, ""),
                    input: Some(epb::PromoteInput {
                        candidate_id: candidate.to_owned(),
                    }),
                });
                async move { Self::election(ch).promote(r).await }
            })
            .await?;
        Ok(Term::from_proto(a.value.output.and_then(|o| o.term)))
    }

    /// Removes `candidate`. Not retried on another replica after an unknown outcome.
    pub async fn evict(&self, name: &str, candidate: &str) -> Result<Term, Error> {
        let a = self
            .call(Retry::Once, |ch| {
                let r = self.request(epb::EvictRequest {
                    header: Self::header(name, ""),
                    input: Some(epb::EvictInput {
                        candidate_id: candidate.to_owned(),
                    }),
                });
                async move { Self::election(ch).evict(r).await }
            })
            .await?;
        Ok(Term::from_proto(a.value.output.and_then(|o| o.term)))
    }

    /// The whole term, for [`Client::restore`].
    pub async fn snapshot(&self, name: &str) -> Result<Term, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(epb::SnapshotRequest {
                    header: Self::header(name, ""),
                });
                async move { Self::election(ch).snapshot(r).await }
            })
            .await?;
        Ok(Term::from_proto(a.value.snapshot.and_then(|s| s.term)))
    }

    /// Replaces leader and candidates with `term`'s; the id ends at least at `term.id`.
    pub async fn restore(&self, name: &str, term: &Term) -> Result<(), Error> {
        let snapshot = term.to_proto();
        self.call(Retry::Safe, |ch| {
            let r = self.request(epb::RestoreRequest {
                header: Self::header(name, ""),
                snapshot: Some(epb::Snapshot {
                    term: Some(snapshot.clone()),
                }),
            });
            async move { Self::election(ch).restore(r).await }
        })
        .await?;
        Ok(())
    }

    /// Wipes the election (ids start again at 0). [`Error::NotFound`] if it does not exist.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.call(Retry::Once, |ch| {
            let r = self.request(pb::DeleteRequest {
                header: Self::header(name, ""),
            });
            async move { PrimitiveServiceClient::new(ch).delete(r).await }
        })
        .await?;
        Ok(())
    }

    /// Watches an election: its current term, then every change, across replicas going
    /// away (see [`Watch`]).
    pub fn watch(&self, name: &str) -> Watch {
        Watch::new(self.clone(), name.to_owned())
    }

    /// Becomes a candidate as `id` and waits until it leads (see [`Leadership`]). Keeps the
    /// lease alive while waiting; honours no cancellation but being dropped (which stops the
    /// campaign, without withdrawing).
    pub async fn campaign(&self, name: &str, id: &str) -> Result<Leadership, Error> {
        campaign::campaign(self.clone(), name.to_owned(), id.to_owned()).await
    }

    /// Opens one Events stream on the next endpoint (after its handshake).
    async fn events(&self, name: &str) -> Result<tonic::Streaming<epb::EventsResponse>, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(epb::EventsRequest {
                    header: Self::header(name, ""),
                    input: Some(epb::EventsInput {}),
                });
                async move { Self::election(ch).events(r).await }
            })
            .await?;
        let mut stream = a.value;
        // the handshake: from here on, no change is missed
        match stream.message().await {
            Ok(Some(_)) => Ok(stream),
            Ok(None) => Err(Error::Unavailable(
                "stream ended before its handshake".into(),
            )),
            Err(s) => Err(s.into()),
        }
    }

    fn margin(&self) -> Option<Duration> {
        self.inner.margin
    }
}
