//! `electiond.admin.v1.ElectionAdmin`: List and History (the `admin` room does the work).

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::Credentials;
use crate::access::Operation;
use crate::admin::{self, AdminError};
use crate::election::ElectionName;
use crate::proto::admin as apb;
use crate::proto::admin::election_admin_server::ElectionAdmin as Api;
use crate::AppState;

/// Serves List and History.
#[derive(Debug, Clone)]
pub struct AdminService {
    state: Arc<AppState>,
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Rejected(r) => r.into(),
            AdminError::Store(e) => e.into(),
        }
    }
}

impl AdminService {
    /// A service over the replica's shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    async fn list(
        &self,
        credentials: &Credentials,
        req: &apb::ListRequest,
    ) -> Result<apb::ListResponse, Status> {
        let s = &self.state;
        let caller = s
            .access
            .identify(Operation::List, &credentials.presented())?;
        let page = admin::list(
            &s.store,
            &caller,
            &req.prefix,
            admin::page_size(req.page_size),
            &req.page_token,
            &s.limits,
        )
        .await?;
        Ok(apb::ListResponse {
            elections: page
                .elections
                .into_iter()
                .map(|l| apb::ElectionSummary {
                    name: l.name,
                    term_id: l.head.id,
                    leader: l.head.leader,
                    candidates: l.candidates,
                    changed_unix_ms: l.head.changed_unix_ms,
                })
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
        })
    }

    async fn history(
        &self,
        credentials: &Credentials,
        req: &apb::HistoryRequest,
    ) -> Result<apb::HistoryResponse, Status> {
        let s = &self.state;
        let op = Operation::History;
        let caller = s.access.identify(op, &credentials.presented())?;
        let name = ElectionName::parse(&req.name, &s.limits)?;
        caller.authorize(op, name.as_str(), None)?;
        let changes = admin::history(&s.store, &name, req.limit).await?;
        Ok(apb::HistoryResponse {
            changes: changes
                .into_iter()
                .map(|c| apb::LeaderChange {
                    term_id: c.id,
                    leader: c.leader,
                    unix_ms: c.unix_ms,
                    cause: c.cause,
                })
                .collect(),
        })
    }

    fn done<T>(&self, op: Operation, started: Instant, result: &Result<T, Status>) {
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.state
            .store
            .metrics()
            .call(op.name(), code, started.elapsed());
        if let Err(s) = result {
            tracing::debug!(code = ?s.code(), message = s.message(), operation = op.name(), "call failed");
        }
    }
}

#[tonic::async_trait]
impl Api for AdminService {
    async fn list(
        &self,
        request: Request<apb::ListRequest>,
    ) -> Result<Response<apb::ListResponse>, Status> {
        let started = Instant::now();
        let (credentials, req) = Credentials::split(request);
        let result = self.list(&credentials, &req).await;
        self.done(Operation::List, started, &result);
        result.map(Response::new)
    }

    async fn history(
        &self,
        request: Request<apb::HistoryRequest>,
    ) -> Result<Response<apb::HistoryResponse>, Status> {
        let started = Instant::now();
        let (credentials, req) = Credentials::split(request);
        let result = self.history(&credentials, &req).await;
        self.done(Operation::History, started, &result);
        result.map(Response::new)
    }
}
