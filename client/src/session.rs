//! Sessions: one keep-alive loop per client id, shared by all of its campaigns.
//!
//! A KeepAlive refreshes the client's lease in every election it stands in, in one call
//! (`electiond.session.v1.SessionService/KeepAlive`). So a worker in 2,000 elections calls once
//! every third of its hold time, not 2,000 times. Against a service without sessions (an older
//! `electiond`), campaigns refresh each election as before.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::campaign::Timing;
use crate::proto::session as spb;
use crate::proto::session::session_service_client::SessionServiceClient;
use crate::{Client, Error, Retry};

/// What one KeepAlive answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// The service's lease TTL (zero: leases never expire).
    pub ttl: Duration,
    /// How many elections the client stands in.
    pub elections: u32,
}

impl Client {
    /// KeepAlive as `id`: refreshes its lease in every election it stands in, in one call,
    /// whatever their number. A lease that already ran out is not brought back.
    pub async fn keep_alive(&self, id: &str) -> Result<KeepAlive, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(spb::KeepAliveRequest {
                    client_id: id.to_owned(),
                });
                async move { SessionServiceClient::new(ch).keep_alive(r).await }
            })
            .await?;
        Ok(KeepAlive {
            ttl: Duration::from_millis(a.value.ttl_ms),
            elections: a.value.elections,
        })
    }

    /// The session of `id`: the running one if a campaign of `id` holds it, else a new one.
    pub(crate) fn session(&self, id: &str) -> Arc<Session> {
        let mut sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sessions.get(id).and_then(Weak::upgrade) {
            return s;
        }
        sessions.retain(|_, s| s.strong_count() > 0);
        let s = Arc::new(Session::start(self.clone(), id.to_owned()));
        sessions.insert(id.to_owned(), Arc::downgrade(&s));
        s
    }
}

/// What the session's loop knows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Status {
    /// When the last KeepAlive that a replica acknowledged was sent.
    pub acked: Option<Instant>,
    /// Whether the service keeps sessions: unknown until its first answer.
    pub available: Option<bool>,
}

/// One client id's keep-alive loop; it stops when the last holder drops it.
#[derive(Debug)]
pub(crate) struct Session {
    status: watch::Receiver<Status>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    fn start(client: Client, id: String) -> Self {
        let (tx, status) = watch::channel(Status::default());
        let task = tokio::spawn(run(client, id, tx));
        Self { status, task }
    }

    /// Follows the loop's status.
    pub(crate) fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }
}

/// KeepAlive every third of the hold time (as a campaign refreshes), soon again after a
/// failure; stops for good when the service has no sessions.
async fn run(client: Client, id: String, status: watch::Sender<Status>) {
    // until the service has stated its TTL
    let mut every = Duration::from_millis(500);
    loop {
        let sent = Instant::now();
        match client.keep_alive(&id).await {
            Ok(a) => {
                status.send_modify(|s| {
                    s.acked = Some(sent);
                    s.available = Some(true);
                });
                if let Ok(t) = Timing::new(a.ttl, client.margin()) {
                    every = t.refresh;
                }
            }
            // an older service, or a credential that may not keep this client alive: each
            // campaign refreshes its own election instead
            Err(Error::Other(s)) if s.code() == tonic::Code::Unimplemented => {
                status.send_modify(|s| s.available = Some(false));
                return;
            }
            Err(Error::PermissionDenied(_)) => {
                status.send_modify(|s| s.available = Some(false));
                return;
            }
            Err(_) => {
                tokio::time::sleep(every / 4).await;
                continue;
            }
        }
        tokio::time::sleep(every).await;
    }
}
