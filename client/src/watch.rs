//! A watch that survives replicas going away.

use std::time::Duration;

use tokio::time::Instant;

use crate::{Client, Error, Term};

/// Why a watch yields a term with a lower id than one it yielded before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The election reads as never used: it was deleted (or Redis lost it entirely).
    Deleted,
    /// Redis holds an older state than one already seen: it lost acknowledged writes (a
    /// restart without persistence, a failover to a replica that was behind).
    DataLost,
}

/// One state yielded by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchItem {
    /// The election's state.
    pub term: Term,
    /// Set when `term.id` is lower than an id this watch yielded before, and why.
    pub reset: Option<Reset>,
}

/// The terms of one election: the current one first, then each change. It reconnects to
/// another endpoint when a stream ends (a replica shutting down ends its streams with
/// `UNAVAILABLE`), re-reads the term, and yields it if it differs from the last one yielded,
/// so it may skip intermediate states after a reconnect but never the latest. It never
/// yields the same state twice in a row, and never a lower id than before unless
/// [`WatchItem::reset`] says why.
///
/// ```no_run
/// # async fn demo(client: electiond_client::Client) -> Result<(), electiond_client::Error> {
/// let mut watch = client.watch("nightly-report");
/// loop {
///     let item = watch.next().await?;
///     println!("term {} led by {:?}", item.term.id, item.term.leader);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Watch {
    client: Client,
    name: String,
    stream: Option<tonic::Streaming<crate::epb::EventsResponse>>,
    last: Option<Term>,
    /// Right after a (re)connect: the term the read returned, and when. The stream may still
    /// deliver changes committed before that read (pub/sub lags a direct read); those are
    /// older than what was yielded, and skipped, not mistaken for Redis going back in time.
    catch_up: Option<(Term, Instant)>,
    backoff: Duration,
}

/// How long after a (re)connect the stream may still deliver changes older than the read.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Whether `a` is a state committed no later than `b` (term id, then change time).
fn not_newer(a: &Term, b: &Term) -> bool {
    (a.id, a.timestamp) <= (b.id, b.timestamp)
}

/// The state of an election that does not exist (never used, or deleted).
fn is_empty(t: &Term) -> bool {
    t.id == 0 && t.leader.is_none() && t.candidates.is_empty()
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Watch {
    pub(crate) fn new(client: Client, name: String) -> Self {
        Watch {
            client,
            name,
            stream: None,
            last: None,
            catch_up: None,
            backoff: BACKOFF_MIN,
        }
    }

    /// The next state that differs from the last one yielded. Waits (reconnecting with
    /// back-off) while no replica can be reached; fails only on errors that retrying cannot
    /// cure (a bad name, a missing token).
    pub async fn next(&mut self) -> Result<WatchItem, Error> {
        loop {
            let term = match &mut self.stream {
                None => {
                    // subscribe first, then read: no change can fall between the two
                    let connected = match self.client.events(&self.name).await {
                        Ok(stream) => match self.client.get(&self.name).await {
                            Ok(term) => Ok((stream, term)),
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    };
                    match connected {
                        Ok((stream, term)) => {
                            self.stream = Some(stream);
                            self.backoff = BACKOFF_MIN;
                            self.catch_up = Some((term.clone(), Instant::now()));
                            term
                        }
                        Err(Error::Unavailable(_)) => {
                            tokio::time::sleep(self.backoff).await;
                            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(stream) => match stream.message().await {
                    Ok(Some(m)) => {
                        let term = Term::from_proto(m.output.and_then(|o| o.term));
                        if let Some((read, at)) = self.catch_up.take() {
                            if at.elapsed() < CATCH_UP
                                && !is_empty(&term)
                                && not_newer(&term, &read)
                            {
                                // committed before the read: already covered by it
                                if term != read {
                                    self.catch_up = Some((read, at));
                                }
                                continue;
                            }
                        }
                        term
                    }
                    Ok(None) | Err(_) => {
                        // the replica went away (or the stream broke): resume elsewhere
                        self.stream = None;
                        continue;
                    }
                },
            };
            if let Some(item) = self.offer(term) {
                return Ok(item);
            }
        }
    }

    fn offer(&mut self, term: Term) -> Option<WatchItem> {
        let reset = match &self.last {
            Some(last) if *last == term => return None,
            Some(last) if term.id < last.id => Some(if is_empty(&term) {
                Reset::Deleted
            } else {
                Reset::DataLost
            }),
            _ => None,
        };
        self.last = Some(term.clone());
        Some(WatchItem { term, reset })
    }
}
