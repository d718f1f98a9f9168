//! The web console: a page, its script and its style, served from the binary on
//! `ELECTION_CONSOLE_ADDR`, and the JSON API they use. Every replica serves it; any replica
//! answers for every election.
//!
//! - `GET /api/elections?prefix=&page_token=`: a page of the listing ([`super::list`]).
//! - `GET /api/election?name=`: one election, its candidates' leases and its history.
//! - `POST /api/watch` `{"names": [...]}`: a stream (server-sent events) of those elections'
//!   changes, from the replica's own fan-out: the first event (`ready`) once every change
//!   from then on will be sent.
//! - `POST /api/evict`, `POST /api/anoint` `{"name", "candidate"}`: operator actions.
//!
//! With access control on, every API call carries `Authorization: Bearer <token>` and gets
//! exactly what that token gets over gRPC (the same checks, `crate::access`). The token is
//! only ever sent in that header, never in a cookie: another site cannot make a browser send
//! it, and a cross-site request with it needs a CORS preflight this server never grants. The
//! page's script builds every element with text nodes, never markup, and the
//! Content-Security-Policy forbids inline script, so an election or candidate name made of
//! HTML shows as its characters.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::AdminError;
use crate::access::{Caller, Operation, Presented, Refusal};
use crate::election::{ElectionName, MemberId, Rejection, Term};
use crate::store::{Lease, Op, StoreError};
use crate::AppState;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Nothing but the page's own files, and requests to its own origin.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// Most elections one watch stream follows (a page's worth).
const MAX_WATCHED: usize = 1000;

/// Serves the console on `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let app = router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { crate::shutdown::stopped(&mut stop).await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "console server");
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/console.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/config", get(config))
        .route("/api/elections", get(elections))
        .route("/api/election", get(election))
        .route("/api/watch", post(watch_changes))
        .route("/api/evict", post(evict))
        .route("/api/anoint", post(anoint))
        .layer(axum::middleware::map_response(secure))
        .with_state(state)
}

fn file(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Headers on every answer: the policy, no sniffing, no framing, nothing cached.
async fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An API error: its status and a message for the person at the page.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated(m) => Failure(StatusCode::UNAUTHORIZED, m),
            Refusal::Denied(m) => Failure(StatusCode::FORBIDDEN, m),
        }
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        let code = match r {
            Rejection::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure(code, r.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(r) => r.into(),
            // logged and worded as over gRPC
            e => {
                let status = tonic::Status::from(e);
                Failure(StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned())
            }
        }
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Rejected(r) => r.into(),
            AdminError::Store(e) => e.into(),
        }
    }
}

/// The bearer token of a request's `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
}

fn identify<'a>(
    state: &'a AppState,
    op: Operation,
    headers: &'a HeaderMap,
) -> Result<Caller<'a>, Failure> {
    let presented = Presented {
        bearer: bearer(headers),
        certs: None,
    };
    Ok(state.access.identify(op, &presented)?)
}

#[derive(Serialize)]
struct ConsoleConfig {
    /// Whether the page must ask for a token.
    access_control: bool,
    lease_ttl_ms: u64,
}

async fn config(State(state): State<Arc<AppState>>) -> Json<ConsoleConfig> {
    Json(ConsoleConfig {
        access_control: state.access.is_on(),
        lease_ttl_ms: state.store.lease_ttl_ms(),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    page_size: u32,
}

#[derive(Serialize)]
struct Summary {
    name: String,
    /// A string: term ids go past what a JavaScript number holds exactly.
    id: String,
    leader: String,
    candidates: u32,
    changed_unix_ms: i64,
}

#[derive(Serialize)]
struct ListAnswer {
    elections: Vec<Summary>,
    next_page_token: String,
}

async fn elections(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListAnswer>, Failure> {
    let caller = identify(&state, Operation::List, &headers)?;
    let page = super::list(
        &state.store,
        &caller,
        &q.prefix,
        super::page_size(q.page_size),
        &q.page_token,
        &state.limits,
    )
    .await?;
    Ok(Json(ListAnswer {
        elections: page
            .elections
            .into_iter()
            .map(|l| Summary {
                name: l.name,
                id: l.head.id.to_string(),
                leader: l.head.leader,
                candidates: l.candidates,
                changed_unix_ms: l.head.changed_unix_ms,
            })
            .collect(),
        next_page_token: page.next.unwrap_or_default(),
    }))
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

#[derive(Serialize)]
struct CandidateView {
    id: String,
    /// `lease` (its own), `session` (held by its client's session) or `none` (expiry off).
    held_by: &'static str,
    /// Until the lease or session ends, in ms (negative: ran out, not yet removed).
    ms_left: Option<i64>,
}

#[derive(Serialize)]
struct ChangeView {
    id: String,
    leader: String,
    unix_ms: i64,
    cause: String,
}

#[derive(Serialize)]
struct ElectionView {
    name: String,
    exists: bool,
    id: String,
    leader: String,
    now_unix_ms: i64,
    candidates: Vec<CandidateView>,
    history: Vec<ChangeView>,
    /// Whether this token may evict and anoint here.
    may_operate: bool,
}

async fn election(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<NameQuery>,
) -> Result<Json<ElectionView>, Failure> {
    let op = Operation::History;
    let caller = identify(&state, op, &headers)?;
    let name = ElectionName::parse(&q.name, &state.limits)?;
    caller.authorize(op, name.as_str(), None)?;
    let may_operate = caller.may_operate(name.as_str());
    let (seen, history) = futures::try_join!(
        state.store.inspect(&name),
        super::history(&state.store, &name, 0)
    )?;
    let term = seen.term.clone().unwrap_or(Term {
        id: 0,
        timestamp: None,
        candidates: Vec::new(),
        revision: 0,
    });
    let candidates = term
        .candidates
        .iter()
        .zip(&seen.leases)
        .map(|(c, lease)| {
            let (held_by, ends) = match lease {
                Lease::Until(t) => ("lease", Some(*t)),
                Lease::Session(t) => ("session", Some(*t)),
                Lease::None => ("none", None),
            };
            CandidateView {
                id: c.clone(),
                held_by,
                ms_left: ends.map(|t| t - seen.now_ms),
            }
        })
        .collect();
    Ok(Json(ElectionView {
        name: name.as_str().to_owned(),
        exists: seen.term.is_some(),
        id: term.id.to_string(),
        leader: term.leader().to_owned(),
        now_unix_ms: seen.now_ms,
        candidates,
        history: history
            .into_iter()
            .map(|c| ChangeView {
                id: c.id.to_string(),
                leader: c.leader,
                unix_ms: c.unix_ms,
                cause: c.cause,
            })
            .collect(),
        may_operate,
    }))
}

#[derive(Deserialize)]
struct WatchRequest {
    names: Vec<String>,
}

#[derive(Serialize)]
struct ChangeEvent {
    name: String,
    id: String,
    leader: String,
    candidates: usize,
}

async fn watch_changes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(req): Json<WatchRequest>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Failure> {
    let op = Operation::Events;
    let caller = identify(&state, op, &headers)?;
    if req.names.len() > MAX_WATCHED {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_WATCHED} elections per watch"),
        ));
    }
    let mut names = Vec::with_capacity(req.names.len());
    for n in &req.names {
        let name = ElectionName::parse(n, &state.limits)?;
        caller.authorize(op, name.as_str(), None)?;
        names.push(name);
    }
    drop(caller);
    // one stream slot, whatever the number of elections it follows
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica has its maximum of open streams".to_owned(),
        )
    })?;
    let mut watchers = Vec::with_capacity(names.len());
    for name in &names {
        let channel = state.store.keys().election(name).channel;
        let w = state.hub.watch(name, channel).await.map_err(|e| {
            Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not subscribed: {e}"),
            )
        })?;
        watchers.push((name.as_str().to_owned(), w));
    }
    let changes = futures::stream::select_all(watchers.into_iter().map(|(name, w)| {
        futures::stream::unfold((name, w), |(name, mut w)| async move {
            let d = w.next().await?;
            let event = ChangeEvent {
                name: name.clone(),
                id: d.term.id.to_string(),
                leader: d.term.leader().to_owned(),
                candidates: d.term.candidates.len(),
            };
            Some((event, (name, w)))
        })
        .boxed()
    }));
    let ready = futures::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let mut stop = state.stop.clone();
    let stream = ready
        .chain(changes.map(move |e| {
            let _held = &permit;
            Ok(Event::default()
                .event("change")
                .json_data(e)
                .unwrap_or_else(|_| Event::default().comment("unencodable")))
        }))
        .take_until(async move { crate::shutdown::stopped(&mut stop).await });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct Action {
    name: String,
    candidate: String,
}

async fn evict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(a): Json<Action>,
) -> Result<Json<ElectionView>, Failure> {
    act(state, headers, a, Operation::Evict).await
}

async fn anoint(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(a): Json<Action>,
) -> Result<Json<ElectionView>, Failure> {
    act(state, headers, a, Operation::Anoint).await
}

/// Evicts or anoints as the token's operator, then answers with the election as it is now.
async fn act(
    state: Arc<AppState>,
    headers: HeaderMap,
    a: Action,
    op: Operation,
) -> Result<Json<ElectionView>, Failure> {
    {
        let caller = identify(&state, op, &headers)?;
        let name = ElectionName::parse(&a.name, &state.limits)?;
        let candidate = MemberId::parse(&a.candidate, "candidate", &state.limits)?;
        caller.authorize(op, name.as_str(), None)?;
        let change = match op {
            Operation::Evict => Op::Evict(&candidate),
            _ => Op::Anoint(&candidate),
        };
        state.store.apply(&name, None, change).await?;
        tracing::info!(
            operation = op.name(),
            election = name.as_str(),
            candidate = candidate.as_str(),
            "console action"
        );
    }
    election(State(state), headers, Query(NameQuery { name: a.name })).await
}
