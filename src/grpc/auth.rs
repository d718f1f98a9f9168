//! Optional bearer-token authentication for the election services (health and reflection
//! stay open, so load balancers and `grpcurl list` work without a token).

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The accepted tokens; empty means authentication is off.
#[derive(Clone, Debug)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl Tokens {
    /// Accepts any of `tokens` (none: accepts every call).
    pub fn new(tokens: Vec<String>) -> Self {
        Self(Arc::new(
            tokens.into_iter().map(String::into_bytes).collect(),
        ))
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        // constant time per token, and every token checked, so timing reveals no prefix
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |ok, t| {
                ok | t.as_slice().ct_eq(presented)
            })
            .into()
    }
}

impl Interceptor for Tokens {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.0.is_empty() {
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match presented {
            Some(token) if self.accepts(token.trim().as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "missing authorization: Bearer <token> metadata",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_tokens_pass() {
        let t = Tokens::new(vec!["secret-a".into(), "secret-b".into()]);
        assert!(t.accepts(b"secret-a") && t.accepts(b"secret-b"));
        assert!(!t.accepts(b"secret-") && !t.accepts(b"secret-ab") && !t.accepts(b""));
    }
}
