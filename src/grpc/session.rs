//! `electiond.session.v1.SessionService`: one KeepAlive for every election a client stands in.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::Credentials;
use crate::access::Operation;
use crate::election::{MemberId, Rejection};
use crate::proto::session as spb;
use crate::proto::session::session_service_server::SessionService as Api;
use crate::AppState;

/// Serves KeepAlive.
#[derive(Debug, Clone)]
pub struct SessionService {
    state: Arc<AppState>,
}

impl SessionService {
    /// A service over the replica's shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    async fn keep_alive(
        &self,
        credentials: &Credentials,
        client_id: &str,
    ) -> Result<spb::KeepAliveResponse, Status> {
        let op = Operation::KeepAlive;
        let client = {
            let caller = self.state.access.identify(op, &credentials.presented())?;
            // the contract has every bad client id refused as bad input here, even one over
            // the size limit (which other calls answer with RESOURCE_EXHAUSTED)
            let client = MemberId::parse(client_id, "client_id", &self.state.limits).map_err(
                |e| match e {
                    Rejection::TooLong { .. } => Status::invalid_argument(e.to_string()),
                    e => e.into(),
                },
            )?;
            caller.authorize_session(client.as_str())?;
            client
        };
        let elections = self.state.store.keep_alive(&client).await?;
        Ok(spb::KeepAliveResponse {
            ttl_ms: self.state.store.lease_ttl_ms(),
            elections: u32::try_from(elections).unwrap_or(u32::MAX),
        })
    }
}

#[tonic::async_trait]
impl Api for SessionService {
    async fn keep_alive(
        &self,
        request: Request<spb::KeepAliveRequest>,
    ) -> Result<Response<spb::KeepAliveResponse>, Status> {
        let started = Instant::now();
        let (credentials, req) = Credentials::split(request);
        let result = self.keep_alive(&credentials, &req.client_id).await;
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.state
            .store
            .metrics()
            .call(Operation::KeepAlive.name(), code, started.elapsed());
        if let Err(s) = &result {
            tracing::debug!(code = ?s.code(), message = s.message(), "KeepAlive failed");
        }
        result.map(Response::new)
    }
}
