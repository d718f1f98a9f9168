//! Seeing every election: the listing (in pages, filtered by name prefix and by what the
//! caller may read), each election's history of leaders, and the web console that shows both
//! live (`console.rs`). The wire layer (`grpc::admin`) and the console call the same functions
//! here, so the two never disagree on what a token may see.
//!
//! A listing walks the store's buckets in order, and each bucket's elections in name order
//! (`store::listing`): an election lives in one bucket for good, so one that exists for the
//! whole listing is found exactly once, and the page token is where the walk stopped (a bucket
//! and the last name looked at). Each step reads a bounded number of elections of one bucket,
//! so no step holds Redis for long, whatever the number of elections.

pub mod console;

use std::time::Duration;

use tokio::sync::watch;

use crate::access::Caller;
use crate::election::{ElectionName, Limits, Rejection};
use crate::store::{Change, Listed, Store, StoreError, BUCKETS};

/// Elections per page when the request names no size.
pub const DEFAULT_PAGE: usize = 100;
/// Most elections per page.
pub const MAX_PAGE: usize = 1000;
/// Most elections one List call looks at (readable or not) before it answers with what it
/// has and a token: a reader whose grant covers few of the names under a prefix still gets
/// an answer in bounded time.
const MAX_LOOKED_AT: usize = 10 * MAX_PAGE;
/// Most elections one step reads in one bucket (one function call, which holds Redis while it
/// runs): a large page takes several steps, so that no step holds Redis for more than about a
/// millisecond (see docs/BENCHMARKS.md, "Listing").
const STEP: usize = 128;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    pub elections: Vec<Listed>,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<String>,
}

/// Where a listing stopped: a bucket, and the last name looked at in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    bucket: usize,
    after: String,
}

const TOKEN_VERSION: &str = "1";

impl Position {
    fn token(&self) -> String {
        let hex: String = self.after.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{TOKEN_VERSION}.{}.{hex}", self.bucket)
    }

    fn parse(token: &str) -> Result<Self, Rejection> {
        if token.is_empty() {
            return Ok(Self {
                bucket: 0,
                after: String::new(),
            });
        }
        let bad = || Rejection::Invalid("page_token is not one this service gave".to_owned());
        let mut parts = token.split('.');
        let (Some(TOKEN_VERSION), Some(bucket), Some(hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let bucket: usize = bucket.parse().map_err(|_| bad())?;
        if bucket >= BUCKETS as usize || hex.len() % 2 != 0 {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, _>>()?;
        let after = String::from_utf8(bytes).map_err(|_| bad())?;
        Ok(Self { bucket, after })
    }
}

/// Why a listing or a history could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The page size a request gets: its own, capped, or the default.
pub fn page_size(asked: u32) -> usize {
    match asked {
        0 => DEFAULT_PAGE,
        n => (n as usize).min(MAX_PAGE),
    }
}

/// One page of the elections whose name starts with `prefix` that `caller` may read, from
/// `token` on ("": the first page).
pub async fn list(
    store: &Store,
    caller: &Caller<'_>,
    prefix: &str,
    size: usize,
    token: &str,
    limits: &Limits,
) -> Result<Page, AdminError> {
    if prefix.len() > limits.max_name_bytes {
        return Err(Rejection::TooLong {
            what: "prefix",
            len: prefix.len(),
            limit: limits.max_name_bytes,
        }
        .into());
    }
    let mut at = Position::parse(token)?;
    let Some(scan) = caller.readable_prefix(prefix) else {
        return Ok(Page::default());
    };
    let size = size.clamp(1, MAX_PAGE);
    let mut page = Page::default();
    let mut looked_at = 0;
    // buckets asked at once: one at first, twice as many after each round whose buckets all
    // came short, so that a sparse prefix takes a few rounds, not one per bucket; back to one
    // when a bucket holds more than a step (reads of the next buckets would be thrown away)
    let mut width = 1;
    while at.bucket < BUCKETS as usize {
        let want = (size - page.elections.len()).min(STEP);
        let end = (at.bucket + width).min(BUCKETS as usize);
        let reads = (at.bucket..end).map(|b| {
            let after = if b == at.bucket {
                at.after.as_str()
            } else {
                ""
            };
            store.list_bucket(b, scan, after, want)
        });
        let found = futures::future::try_join_all(reads).await?;
        width *= 2;
        'round: for (b, listed) in (at.bucket..end).zip(found) {
            let whole = listed.len() < want;
            for l in listed {
                if page.elections.len() >= size {
                    // full: the next page starts after the last one looked at
                    break 'round;
                }
                looked_at += 1;
                at = Position {
                    bucket: b,
                    after: l.name.clone(),
                };
                if caller.may_read(&l.name) {
                    page.elections.push(l);
                }
            }
            if !whole {
                // the bucket may hold more: go on in it, after the last name looked at
                width = 1;
                break;
            }
            at = Position {
                bucket: b + 1,
                after: String::new(),
            };
        }
        if page.elections.len() >= size || looked_at >= MAX_LOOKED_AT {
            break;
        }
    }
    if at.bucket < BUCKETS as usize {
        page.next = Some(at.token());
    }
    Ok(page)
}

/// The last `limit` (0: all kept) changes of leader of `name`, newest first. A history may
/// hold a few more than its length between trims (`record` in `lua/prelude.lua`): those are
/// not shown.
pub async fn history(
    store: &Store,
    name: &ElectionName,
    limit: u32,
) -> Result<Vec<Change>, StoreError> {
    let kept = store.history_len();
    let limit = if limit == 0 { kept } else { limit.min(kept) };
    store.history(name, limit as usize).await
}

/// How often each replica counts the elections (`electiond_elections`).
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Keeps the `electiond_elections` gauge: the elections counted now and every few seconds
/// until `stop`. A count that fails leaves the last one.
pub async fn count(store: Store, mut stop: watch::Receiver<bool>) {
    let mut listed = false;
    loop {
        // first, once per store, the elections an earlier version stored without listing
        if !listed {
            match store.list_unlisted().await {
                Ok(0) => listed = true,
                Ok(n) => {
                    tracing::info!(
                        elections = n,
                        "listed the elections stored by an earlier version"
                    );
                    listed = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the elections of an earlier version yet")
                }
            }
        }
        match store.count_elections().await {
            Ok(n) => {
                store
                    .metrics()
                    .elections
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "counting elections"),
        }
        tokio::select! {
            _ = tokio::time::sleep(COUNT_EVERY) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_what_is_not_theirs() {
        let at = Position {
            bucket: 17,
            after: "jobs/ünï.code".to_owned(),
        };
        assert_eq!(Position::parse(&at.token()).expect("parses"), at);
        assert_eq!(Position::parse("").expect("first").bucket, 0);
        for bad in [
            "x",
            "1.200.",
            "2.1.61",
            "1.1.6",
            "1.1.zz",
            "1.-1.61",
            "1.1.61.62",
            "1.1.ff",
        ] {
            assert!(Position::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_sizes_are_capped() {
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(1_000_000), MAX_PAGE);
    }
}
