//! Seeing every election: the listing, in pages, and each election's history of leaders
//! (`electiond.admin.v1.ElectionAdmin`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::admin as apb;
use crate::proto::admin::election_admin_client::ElectionAdminClient;
use crate::{Client, Error, Retry};

/// One election as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSummary {
    pub name: String,
    /// The term id (the leader's fencing token).
    pub id: u64,
    /// `None`: no leader.
    pub leader: Option<String>,
    pub candidates: u32,
    /// When its term last changed (the Redis clock).
    pub changed: SystemTime,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub elections: Vec<ElectionSummary>,
    /// Pass it to [`Client::list`] for the next page; `None`: this was the last.
    pub next: Option<String>,
}

/// One change of leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The term id after the change.
    pub id: u64,
    /// The new leader; `None` when the election was left without one.
    pub leader: Option<String>,
    /// When (the Redis clock).
    pub at: SystemTime,
    /// Why: `enter`, `withdraw`, `expired`, `evict`, `anoint`, `promote`, `restore`, `delete`.
    pub cause: String,
}

fn time(unix_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0))
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Client {
    /// One page of the elections whose name starts with `prefix` (that the credential may
    /// read), from `token` (`None`: the first page). `page_size` 0 takes the service's
    /// default; it caps what is asked for.
    pub async fn list(
        &self,
        prefix: &str,
        page_size: u32,
        token: Option<&str>,
    ) -> Result<Page, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(apb::ListRequest {
                    prefix: prefix.to_owned(),
                    page_size,
                    page_token: token.unwrap_or("").to_owned(),
                });
                async move { ElectionAdminClient::new(ch).list(r).await }
            })
            .await?;
        Ok(Page {
            elections: a
                .value
                .elections
                .into_iter()
                .map(|e| ElectionSummary {
                    name: e.name,
                    id: e.term_id,
                    leader: some(e.leader),
                    candidates: e.candidates,
                    changed: time(e.changed_unix_ms),
                })
                .collect(),
            next: some(a.value.next_page_token),
        })
    }

    /// The last `limit` changes of leader of `name` (0: all the service keeps), newest first.
    pub async fn history(&self, name: &str, limit: u32) -> Result<Vec<Change>, Error> {
        let a = self
            .call(Retry::Safe, |ch| {
                let r = self.request(apb::HistoryRequest {
                    name: name.to_owned(),
                    limit,
                });
                async move { ElectionAdminClient::new(ch).history(r).await }
            })
            .await?;
        Ok(a.value
            .changes
            .into_iter()
            .map(|c| Change {
                id: c.term_id,
                leader: some(c.leader),
                at: time(c.unix_ms),
                cause: c.cause,
            })
            .collect())
    }
}
