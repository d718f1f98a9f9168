//! `atomix.primitive.PrimitiveService` for elections: Create, Close, Delete.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{response_header, unary, Credentials};
use crate::access::Operation;
use crate::proto::atomix::primitive as pb;
use crate::proto::atomix::primitive::primitive_service_server::PrimitiveService as Api;
use crate::store::Op;
use crate::AppState;

/// Serves Create, Close and Delete.
#[derive(Debug, Clone)]
pub struct PrimitiveService {
    state: Arc<AppState>,
}

impl PrimitiveService {
    /// A service over the replica's shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Api for PrimitiveService {
    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::Create,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                let caller = t.client.as_ref();
                self.state
                    .store
                    .apply(&t.election, caller, Op::Create)
                    .await?;
                Ok(pb::CreateResponse {
                    header: response_header(false),
                })
            },
        )
        .await
    }

    async fn close(
        &self,
        request: Request<pb::CloseRequest>,
    ) -> Result<Response<pb::CloseResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::Close,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                let caller = t.caller()?;
                self.state
                    .store
                    .apply(&t.election, Some(caller), Op::Withdraw)
                    .await?;
                Ok(pb::CloseResponse {
                    header: response_header(false),
                })
            },
        )
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (credentials, req) = Credentials::split(request);
        unary(
            &self.state,
            Operation::Delete,
            &credentials,
            req.header.as_ref(),
            |t| async move {
                self.state
                    .store
                    .apply(&t.election, None, Op::Delete)
                    .await?;
                Ok(pb::DeleteResponse {
                    header: response_header(false),
                })
            },
        )
        .await
    }
}
