//! `atomix.primitive.election.LeaderElectionService`.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use futures::{Stream, StreamExt};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::{Request, Response, Status};

use super::encoded::Encoded;
use super::{candidate, response_header, term_to_proto, unary, Credentials, Target};
use crate::access::Operation;
use crate::election::{Term, ValidSnapshot};
use crate::events::Watcher;
use crate::metrics::Metrics;
use crate::proto::atomix::primitive::election as epb;
use crate::proto::served::leader_election_service_server::LeaderElectionService as Api;
use crate::shutdown::stopped;
use crate::store::{Answer, Op};
use crate::AppState;

/// Serves the election operations.
#[derive(Debug, Clone)]
pub struct ElectionService {
    state: Arc<AppState>,
}

impl ElectionService {
    /// A service over the replica's shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    async fn answer(&self, t: &Target, op: Op<'_>) -> Result<Answer, Status> {
        Ok(self
            .state
            .store
            .answer(&t.election, t.client.as_ref(), op)
            .await?)
    }

    async fn apply(&self, t: &Target, op: Op<'_>) -> Result<Option<epb::Term>, Status> {
        Ok(Some(term_to_proto(self.answer(t, op).await?.term())))
    }
}

/// The handshake, then one `CHANGED` per delivered state, until the client goes away (which
/// drops the watcher and so releases the subscription) or the replica stops (`UNAVAILABLE`,
/// so the client reconnects elsewhere). Each state is encoded once for all of its streams.
fn event_stream(
    watcher: Watcher,
    permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> EventStream {
    static HANDSHAKE: LazyLock<Encoded> = LazyLock::new(|| {
        Encoded::new(&epb::EventsResponse {
            header: response_header(true),
            output: Some(epb::EventsOutput {
                r#type: epb::events_output::Type::None as i32,
                term: None,
            }),
        })
    });
    // the permit lives as long as the stream
    let changes = futures::stream::unfold(Some((watcher, stop, permit)), move |state| {
        let metrics = metrics.clone();
        async move {
            let (mut watcher, mut stop, permit) = state?;
            tokio::select! {
                delivery = watcher.next() => {
                    let delivery = delivery?;
                    let bytes = delivery.encoded.get_or_init(|| changed(&delivery.term));
                    Metrics::add(&metrics.events_delivered, 1);
                    let event = Encoded::from_bytes(bytes.clone());
                    Some((Ok(event), Some((watcher, stop, permit))))
                }
                _ = stopped(&mut stop) => {
                    let status = Status::unavailable("replica is shutting down; reconnect");
                    Some((Err(status), None))
                }
            }
        }
    });
    Box::pin(futures::stream::once(async { Ok(HANDSHAKE.clone()) }).chain(changes))
}

/// The `CHANGED` event of a state, encoded.
fn changed(term: &Term) -> bytes::Bytes {
    let event = Encoded::new(&epb::EventsResponse {
        header: response_header(false),
        output: Some(epb::EventsOutput {
            r#type: epb::events_output::Type::Changed as i32,
            term: Some(term_to_proto(term)),
        }),
    });
    event.bytes().clone()
}

/// The stream type of `Events`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// The answer to a GetTerm.
fn get_term_response(term: &Term) -> epb::GetTermResponse {
    epb::GetTermResponse {
        header: response_header(false),
        output: Some(epb::GetTermOutput {
            term: Some(term_to_proto(term)),
        }),
    }
}

#[tonic::async_trait]
impl Api for ElectionService {
    async fn enter(
        &self,
        request: Request<epb::EnterRequest>,
    ) -> Result<Response<epb::EnterResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::Enter,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                t.caller()?;
                Ok(epb::EnterResponse {
                    header: response_header(false),
                    output: Some(epb::EnterOutput {
                        term: self.apply(&t, Op::Enter).await?,
                    }),
                })
            },
        )
        .await
    }

    async fn withdraw(
        &self,
        request: Request<epb::WithdrawRequest>,
    ) -> Result<Response<epb::WithdrawResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::Withdraw,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                t.caller()?;
                Ok(epb::WithdrawResponse {
                    header: response_header(false),
                    output: Some(epb::WithdrawOutput {
                        term: self.apply(&t, Op::Withdraw).await?,
                    }),
                })
            },
        )
        .await
    }

    async fn anoint(
        &self,
        request: Request<epb::AnointRequest>,
    ) -> Result<Response<epb::AnointResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        let id = req.input.as_ref().map(|i| i.candidate_id.as_str());
        unary(
            &self.state,
            Operation::Anoint,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                let c = candidate(id, &self.state.limits)?;
                Ok(epb::AnointResponse {
                    header: response_header(false),
                    output: Some(epb::AnointOutput {
                        term: self.apply(&t, Op::Anoint(&c)).await?,
                    }),
                })
            },
        )
        .await
    }

    async fn promote(
        &self,
        request: Request<epb::PromoteRequest>,
    ) -> Result<Response<epb::PromoteResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        let id = req.input.as_ref().map(|i| i.candidate_id.as_str());
        unary(
            &self.state,
            Operation::Promote,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                let c = candidate(id, &self.state.limits)?;
                Ok(epb::PromoteResponse {
                    header: response_header(false),
                    output: Some(epb::PromoteOutput {
                        term: self.apply(&t, Op::Promote(&c)).await?,
                    }),
                })
            },
        )
        .await
    }

    async fn evict(
        &self,
        request: Request<epb::EvictRequest>,
    ) -> Result<Response<epb::EvictResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        let id = req.input.as_ref().map(|i| i.candidate_id.as_str());
        unary(
            &self.state,
            Operation::Evict,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                let c = candidate(id, &self.state.limits)?;
                Ok(epb::EvictResponse {
                    header: response_header(false),
                    output: Some(epb::EvictOutput {
                        term: self.apply(&t, Op::Evict(&c)).await?,
                    }),
                })
            },
        )
        .await
    }

    async fn get_term(
        &self,
        request: Request<epb::GetTermRequest>,
    ) -> Result<Response<Encoded>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::GetTerm,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                let answer = self.answer(&t, Op::GetTerm).await?;
                // a big election's state as held here: encoded once, for every refresh of it
                Ok(match answer {
                    Answer::Term(term) => Encoded::new(&get_term_response(&term)),
                    Answer::Held(held) => Encoded::from_bytes(
                        held.encoded(|term| Encoded::new(&get_term_response(term)).into_bytes()),
                    ),
                })
            },
        )
        .await
    }

    type EventsStream = EventStream;

    async fn events(
        &self,
        request: Request<epb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::Events,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                if *self.state.stop.borrow() {
                    // it would end at once: send the client elsewhere before the handshake
                    return Err(Status::unavailable("replica is shutting down; reconnect"));
                }
                let permit = self
                    .state
                    .streams
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| {
                        Status::resource_exhausted(
                            "this replica has its maximum of open Events streams",
                        )
                    })?;
                // subscribed before the handshake goes out: nothing committed after it is missed
                let channel = self.state.store.keys().election(&t.election).channel;
                let watcher = self.state.hub.watch(&t.election, channel).await?;
                let metrics = self.state.store.metrics().clone();
                Ok(event_stream(
                    watcher,
                    permit,
                    metrics,
                    self.state.stop.clone(),
                ))
            },
        )
        .await
    }

    async fn snapshot(
        &self,
        request: Request<epb::SnapshotRequest>,
    ) -> Result<Response<epb::SnapshotResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::Snapshot,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                Ok(epb::SnapshotResponse {
                    header: response_header(false),
                    snapshot: Some(epb::Snapshot {
                        term: self.apply(&t, Op::GetTerm).await?,
                    }),
                })
            },
        )
        .await
    }

    async fn restore(
        &self,
        request: Request<epb::RestoreRequest>,
    ) -> Result<Response<epb::RestoreResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        let term = req.snapshot.as_ref().and_then(|s| s.term.as_ref());
        unary(
            &self.state,
            Operation::Restore,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                let term =
                    term.ok_or_else(|| Status::invalid_argument("snapshot.term is missing"))?;
                let id = term.id.as_ref().map_or(0, |e| e.value);
                let snap =
                    ValidSnapshot::parse(id, &term.leader, &term.candidates, &self.state.limits)?;
                self.apply(&t, Op::Restore(&snap)).await?;
                Ok(epb::RestoreResponse {
                    header: response_header(false),
                })
            },
        )
        .await
    }
}
