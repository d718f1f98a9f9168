//! The wire layer: tonic services, and the conversion between protobuf messages and domain
//! types. Bad input stops here, before anything reaches Redis.

mod admin;
pub mod codec;
mod election;
pub mod encoded;
mod primitive;
mod session;
mod status;

use std::future::Future;
use std::sync::Arc;

use std::time::Instant;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::{field, Instrument};

pub use admin::AdminService;
pub use election::ElectionService;
pub use primitive::PrimitiveService;
pub use session::SessionService;

use crate::access::{Operation, PeerCerts, Presented};
use crate::election::{ElectionName, Limits, MemberId, Rejection, Term};
use crate::proto::atomix::primitive as pb;
use crate::proto::atomix::primitive::election as epb;
use crate::AppState;

/// Who a request names: the election, and the caller when it gave a client id.
pub(crate) struct Target {
    pub election: ElectionName,
    pub client: Option<MemberId>,
}

impl Target {
    /// The caller, for operations that act on it (Enter, Withdraw, Close).
    fn caller(&self) -> Result<&MemberId, Rejection> {
        self.client
            .as_ref()
            .ok_or(Rejection::Empty("client id (header.client_id)"))
    }
}

/// Validates a request header into a [`Target`].
fn target(header: Option<&pb::RequestHeader>, limits: &Limits) -> Result<Target, Rejection> {
    let header =
        header.ok_or_else(|| Rejection::Invalid("request header is missing".to_owned()))?;
    let (kind, name) = header
        .primitive_id
        .as_ref()
        .map_or(("", ""), |p| (p.r#type.as_str(), p.name.as_str()));
    if !(kind.is_empty() || kind.eq_ignore_ascii_case("election")) {
        return Err(Rejection::Invalid(format!(
            "primitive type {kind:?} is not served here; use \"Election\" or leave it empty"
        )));
    }
    let election = ElectionName::parse(name, limits)?;
    let client = match header.client_id.as_str() {
        "" => None,
        id => Some(MemberId::parse(id, "client id (header.client_id)", limits)?),
    };
    Ok(Target { election, client })
}

/// A candidate named in an input message.
fn candidate(id: Option<&str>, limits: &Limits) -> Result<MemberId, Rejection> {
    MemberId::parse(
        id.unwrap_or(""),
        "candidate id (input.candidate_id)",
        limits,
    )
}

/// What a call presented to access control, taken off its request with the message.
pub(crate) struct Credentials {
    metadata: MetadataMap,
    certs: Option<PeerCerts>,
}

impl Credentials {
    /// The request's credentials and its message.
    fn split<T>(request: Request<T>) -> (Self, T) {
        let certs = request.peer_certs();
        let (metadata, _, message) = request.into_parts();
        (Self { metadata, certs }, message)
    }

    fn presented(&self) -> Presented<'_> {
        let bearer = self
            .metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        Presented {
            bearer,
            certs: self.certs.as_ref(),
        }
    }
}

/// Runs one call in its own span (method, election, client), after checking who calls and
/// validating its header, then whether the caller may: counted in the metrics, failures logged
/// at debug (causes of server-side ones are logged where they are mapped). The client's
/// deadline (`grpc-timeout`) is enforced by tonic's server, which drops the call when it
/// passes.
async fn unary<R, F, Fut>(
    state: &Arc<AppState>,
    op: Operation,
    credentials: &Credentials,
    header: Option<&pb::RequestHeader>,
    body: F,
) -> Result<Response<R>, Status>
where
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = Result<R, Status>>,
{
    let method = op.name();
    let started = Instant::now();
    // at debug level: formatting a call's fields cost about 7% of its CPU at info, where a
    // successful call logs nothing
    let span = tracing::debug_span!(
        "rpc",
        method,
        election = field::Empty,
        client = field::Empty
    );
    // who calls, before anything about the call is looked at; then whether it may
    let parsed = (|| {
        let caller = state.access.identify(op, &credentials.presented())?;
        let t = target(header, &state.limits)?;
        let client = t.client.as_ref().map(MemberId::as_str);
        caller.authorize(op, t.election.as_str(), client)?;
        Ok::<_, Status>(t)
    })();
    let result = async move {
        let span = tracing::Span::current();
        // While the replica drains, a call that still reaches it (sent before the client or
        // balancer read the GOAWAY) is served: refusing it would fail a call that Redis can
        // still answer, and a balancer does not retry a call it has already sent.
        let t = parsed?;
        span.record("election", t.election.as_str());
        if let Some(c) = &t.client {
            span.record("client", c.as_str());
        }
        body(t).await
    }
    .instrument(span.clone())
    .await;
    let code = result
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    state.store.metrics().call(method, code, started.elapsed());
    if let Err(s) = &result {
        span.in_scope(|| tracing::debug!(code = ?s.code(), message = s.message(), "call failed"));
    }
    result.map(|r| {
        let mut response = Response::new(r);
        // clients count their lease deadline from it, so a user never configures it twice
        response
            .metadata_mut()
            .insert(LEASE_TTL_HEADER, state.lease_ttl.clone());
        response
    })
}

/// Response metadata carrying the lease TTL in milliseconds (0: leases never expire).
pub const LEASE_TTL_HEADER: &str = "electiond-lease-ttl-ms";

fn response_header(stream: bool) -> Option<pb::ResponseHeader> {
    let response_type = if stream {
        pb::ResponseType::ResponseStream
    } else {
        pb::ResponseType::Response
    };
    Some(pb::ResponseHeader {
        response_type: response_type as i32,
    })
}

/// A domain term on the wire.
pub(crate) fn term_to_proto(t: &Term) -> epb::Term {
    epb::Term {
        id: Some(pb::meta::Epoch { value: t.id }),
        timestamp: t.timestamp.map(|ts| prost_types::Timestamp {
            seconds: ts.seconds,
            nanos: ts.nanos,
        }),
        leader: t.leader().to_owned(),
        candidates: t.candidates.clone(),
    }
}
