//! Campaigning and holding leadership.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::session::{Session, Status};
use crate::watch::WatchItem;
use crate::{Client, Error, Term};

/// Why a [`Leadership`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// Another candidate leads now (it was anointed or promoted), under this term id.
    AnotherLeader {
        /// The new term id.
        term_id: u64,
        /// The new leader, if any.
        leader: Option<String>,
    },
    /// This client is no longer a candidate: it was evicted, or the service expired its lease.
    Evicted,
    /// No refresh was acknowledged in time: the lease could lapse soon, so leadership ends
    /// now, before the service could hand it to someone else.
    DeadlinePassed,
    /// [`Leadership::resign`] was called, or the `Leadership` dropped.
    Withdrawn,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostReason::AnotherLeader { term_id, leader } => write!(
                f,
                "another leader ({}) under term {term_id}",
                leader.as_deref().unwrap_or("none")
            ),
            LostReason::Evicted => write!(f, "no longer a candidate (evicted or lease expired)"),
            LostReason::DeadlinePassed => {
                write!(f, "no refresh acknowledged before the lease deadline")
            }
            LostReason::Withdrawn => write!(f, "withdrawn"),
        }
    }
}

/// Leadership of one election, from [`Client::campaign`]. It lasts until [`Leadership::lost`]
/// completes; stop the work then. While it lasts, a background task keeps the lease alive.
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    name: String,
    id: String,
    term_id: u64,
    lost: watch::Receiver<Option<LostReason>>,
    keeper: JoinHandle<()>,
    /// The client id's keep-alive loop, running while any of its campaigns does.
    _session: Arc<Session>,
}

/// How the lease is timed, from the service's TTL and the client's margin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// `None`: the service does not expire leases.
    hold: Option<Duration>,
    /// How often the lease is refreshed: three chances before the deadline.
    pub(crate) refresh: Duration,
}

impl Timing {
    pub(crate) fn new(ttl: Duration, margin: Option<Duration>) -> Result<Self, Error> {
        if ttl.is_zero() {
            return Ok(Timing {
                hold: None,
                refresh: Duration::from_secs(5),
            });
        }
        let margin = margin.unwrap_or(ttl / 5);
        if margin >= ttl {
            return Err(Error::Config(format!(
                "the margin ({margin:?}) must be shorter than the service's lease TTL ({ttl:?})"
            )));
        }
        let hold = ttl - margin;
        Ok(Timing {
            hold: Some(hold),
            // three chances to refresh before the deadline
            refresh: hold / 3,
        })
    }

    fn deadline(&self, sent: Instant) -> Option<Instant> {
        self.hold.map(|h| sent + h)
    }
}

/// GetTerm or Enter as `id`, timed from its send time and the answer's arrival.
struct Refreshed {
    sent: Instant,
    answered: Instant,
    term: Term,
    ttl: Option<Duration>,
}

async fn refresh(client: &Client, name: &str, id: &str, enter: bool) -> Result<Refreshed, Error> {
    let sent = Instant::now();
    let a = if enter {
        client.enter_answer(name, id).await?
    } else {
        client.get_as(name, id).await?
    };
    Ok(Refreshed {
        sent,
        answered: Instant::now(),
        term: a.value,
        ttl: a.ttl,
    })
}

/// Whether the client id's session keeps its leases (so no election needs its own refresh).
fn session_on(status: &watch::Receiver<Status>) -> bool {
    status.borrow().available == Some(true)
}

/// A task that is aborted when this is dropped.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forwards a watch's items into a channel, so that waiting for one can be cancelled at any
/// point without losing the watch's place.
fn watch_task(client: &Client, name: &str) -> (mpsc::Receiver<WatchItem>, Task) {
    let (tx, rx) = mpsc::channel(16);
    let mut watch = client.watch(name);
    let task = tokio::spawn(async move {
        while let Ok(item) = watch.next().await {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    (rx, Task(task))
}

pub(crate) async fn campaign(
    client: Client,
    name: String,
    id: String,
) -> Result<Leadership, Error> {
    // No term at or below this id may make us leader: it was seen with another leader, so a
    // claim under it is stale.
    let mut floor = 0u64;
    let session = client.session(&id);
    let mut session_status = session.status();
    let (mut changes, watcher) = watch_task(&client, &name);
    let mut enter = true;
    let mut backoff = Duration::from_millis(50);
    let result = loop {
        let r = match refresh(&client, &name, &id, enter).await {
            Ok(r) => r,
            Err(Error::Unavailable(_)) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(e) => break Err(e),
        };
        backoff = Duration::from_millis(50);
        let Some(ttl) = r.ttl else {
            break Err(Error::Config(
                "the service did not state its lease TTL (electiond too old?)".into(),
            ));
        };
        let timing = match Timing::new(ttl, client.margin()) {
            Ok(t) => t,
            Err(e) => {
                // entered already: leave at once rather than linger as a candidate for a TTL
                let _ = client.withdraw(&name, &id).await;
                break Err(e);
            }
        };
        if r.term.is_leader(&id) && r.term.id > floor {
            break Ok((r, timing));
        }
        if !r.term.is_leader(&id) {
            floor = floor.max(r.term.id);
        }
        // still a candidate? if the lease ran out while we waited, enter again
        enter = !r.term.candidates.contains(&id);
        // wait for a change, or refresh in time to keep the lease (unless the session keeps
        // it: then a change is all there is to wait for, and its KeepAlives are no reason to
        // read the election)
        let refresh_at = Instant::now() + timing.refresh;
        loop {
            let refreshing = !session_on(&session_status);
            tokio::select! {
                Some(_) = changes.recv() => break,
                _ = tokio::time::sleep_until(refresh_at), if refreshing => break,
                Ok(()) = session_status.changed() => {
                    if !session_on(&session_status) {
                        // the session stopped keeping the lease: refresh it now
                        break;
                    }
                }
                else => break,
            }
        }
    };
    let (r, timing) = result?;
    let (lost_tx, lost) = watch::channel(None);
    let term_id = r.term.id;
    let keeper = tokio::spawn(keep(
        client.clone(),
        Held {
            name: name.clone(),
            id: id.clone(),
            term_id,
            timing,
            acked: r.sent,
            answered: r.answered,
        },
        changes,
        watcher,
        session.status(),
        lost_tx,
    ));
    Ok(Leadership {
        client,
        name,
        id,
        term_id,
        lost,
        keeper,
        _session: session,
    })
}

/// A leadership being kept.
struct Held {
    name: String,
    id: String,
    term_id: u64,
    timing: Timing,
    /// The send time of the last refresh acknowledged for this election.
    acked: Instant,
    /// When the answer that made it leader arrived: a KeepAlive sent after it covers the
    /// election (one sent before may have been applied before the election was entered).
    answered: Instant,
}

/// What a term says about a leadership held under `term_id`: `None` while it still holds.
fn verdict(term: &Term, id: &str, term_id: u64) -> Option<LostReason> {
    if term.is_leader(id) && term.id == term_id {
        return None;
    }
    if term.candidates.iter().any(|c| c == id) || term.is_leader(id) {
        Some(LostReason::AnotherLeader {
            term_id: term.id,
            leader: term.leader.clone(),
        })
    } else {
        Some(LostReason::Evicted)
    }
}

async fn keep(
    client: Client,
    held: Held,
    mut changes: mpsc::Receiver<WatchItem>,
    watcher: Task,
    mut session: watch::Receiver<Status>,
    lost: watch::Sender<Option<LostReason>>,
) {
    let Held {
        name,
        id,
        term_id,
        timing,
        mut acked,
        answered,
    } = held;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut next_refresh = Instant::now() + timing.refresh;
    let reason = loop {
        let deadline = timing.deadline(acked).unwrap_or(far);
        // with the session keeping the lease, this election needs no refresh of its own
        let refreshing = !session_on(&session);
        tokio::select! {
            // the local timer: fires whether or not any message arrives
            _ = tokio::time::sleep_until(deadline) => break LostReason::DeadlinePassed,
            Some(item) = changes.recv() => {
                // a state older than this leadership (queued before it began) says nothing,
                // unless Redis went back in time
                if item.term.id < term_id && item.reset.is_none() {
                    continue;
                }
                if let Some(reason) = verdict(&item.term, &id, term_id) {
                    break reason;
                }
            }
            // (also while refreshing: once the session's first answer comes, it takes over)
            Ok(()) = session.changed() => {
                if let Some(sent) = session.borrow().acked {
                    if sent >= answered {
                        acked = acked.max(sent);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_refresh), if refreshing => {
                next_refresh = Instant::now() + timing.refresh;
                // a refresh answered after the deadline is of no use
                let bounded = tokio::time::timeout_at(deadline, refresh(&client, &name, &id, false));
                match bounded.await {
                    Ok(Ok(r)) => match verdict(&r.term, &id, term_id) {
                        None => acked = acked.max(r.sent),
                        Some(reason) => break reason,
                    },
                    // unreachable or slow: try again soon; the deadline decides
                    Ok(Err(_)) => next_refresh = Instant::now() + timing.refresh / 4,
                    Err(_) => break LostReason::DeadlinePassed,
                }
            }
        }
    };
    drop(watcher);
    let _ = lost.send(Some(reason));
}

impl Leadership {
    /// The term id this leadership holds: the fencing token. Pass it with every side effect
    /// and have the receiving side reject anything lower than the highest it has seen.
    pub fn term_id(&self) -> u64 {
        self.term_id
    }

    /// The election.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Completes when leadership is lost, with the reason; at once if it already is.
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.lost.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(LostReason::Withdrawn),
            // the keeper is gone without saying why: only when the runtime shuts down
            Err(_) => LostReason::DeadlinePassed,
        };
        reason
    }

    /// Whether leadership is lost already (no waiting).
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Stops keeping the lease and withdraws, so a successor takes over at once. Stop the
    /// work before calling it.
    pub async fn resign(self) -> Result<(), Error> {
        self.keeper.abort();
        self.client.withdraw(&self.name, &self.id).await.map(|_| ())
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}
