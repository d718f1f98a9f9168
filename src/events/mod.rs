//! The in-process fan-out of election changes to this replica's Events streams. It knows
//! nothing of Redis: a listener (`store::listen`) feeds it the states it reads, and takes its
//! subscription commands.
//!
//! Every state offered is checked against the last one delivered for that election (by
//! revision), so duplicates and stale states are dropped; a state read straight from Redis
//! after (re)subscribing is delivered whenever it differs, even when older (Redis lost data),
//! so no watcher is left showing a leader Redis no longer has.
//!
//! A slow stream never holds anyone up: each election has one bounded broadcast buffer; a
//! stream that falls behind it skips to the latest state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};

use crate::election::{ElectionName, Term};
use crate::metrics::Metrics;

/// Buffered states per election before a slow stream skips to the latest.
const BUFFER: usize = 64;

/// The listener did not confirm a watcher's subscription within this time.
#[derive(Debug, thiserror::Error)]
#[error("not subscribed within {0:?}")]
pub struct NotReady(pub Duration);

/// One state delivered to an election's streams. `seq` numbers the deliveries of this replica
/// for this election, so a stream can tell what it has already seen even when a state with a
/// lower revision must be delivered (after Redis lost data).
#[derive(Debug)]
pub struct Delivery {
    /// Local delivery number, strictly increasing per election.
    pub seq: u64,
    /// The state.
    pub term: Term,
    /// The state as this replica sends it, encoded by the first stream that sends it: every
    /// stream of the election sends the same bytes.
    pub encoded: OnceLock<Bytes>,
}

impl Delivery {
    fn new(seq: u64, term: Term) -> Self {
        Self {
            seq,
            term,
            encoded: OnceLock::new(),
        }
    }
}

/// What one watched election shares between the subscriber and its streams.
#[derive(Debug)]
struct Shared {
    tx: broadcast::Sender<Arc<Delivery>>,
    /// The last state delivered (or, with seq 0, the state read when subscribing).
    latest: Mutex<Option<Arc<Delivery>>>,
    /// True while the replica is subscribed to the election's channel.
    ready: watch::Sender<bool>,
}

#[derive(Debug)]
struct Entry {
    name: ElectionName,
    shared: Arc<Shared>,
    streams: usize,
}

/// What the hub asks of the pub/sub listener.
pub enum Command {
    /// Subscribe to this channel (its election got its first watcher here).
    Subscribe(String),
    /// Unsubscribe from this channel (its election lost its last watcher here).
    Unsubscribe(String),
}

#[derive(Debug)]
struct Inner {
    /// Watched elections by channel name.
    entries: Mutex<HashMap<String, Entry>>,
    commands: mpsc::UnboundedSender<Command>,
    metrics: Arc<Metrics>,
    ready_timeout: Duration,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe(c) => write!(f, "Subscribe({c})"),
            Command::Unsubscribe(c) => write!(f, "Unsubscribe({c})"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data half-changed (every critical
    // section is a single insert, remove or assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fan-out hub of one replica. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// One stream's view of an election; dropping it releases the election's subscription when
/// it was the last.
#[derive(Debug)]
pub struct Watcher {
    inner: Arc<Inner>,
    channel: String,
    shared: Arc<Shared>,
    rx: broadcast::Receiver<Arc<Delivery>>,
    last_seq: u64,
}

impl Hub {
    /// An empty hub, and the receiving end of its subscription commands, which the replica's
    /// pub/sub listener takes: a `Subscribe` when an election gets its first watcher here,
    /// an `Unsubscribe` when it loses its last. A watcher waits at most `ready_timeout` for
    /// the listener to confirm its subscription.
    pub fn new(
        metrics: Arc<Metrics>,
        ready_timeout: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            entries: Mutex::new(HashMap::new()),
            commands,
            metrics,
            ready_timeout,
        });
        (Self { inner }, rx)
    }

    /// Watches `election`: returns once the replica is subscribed to its channel, so that
    /// every change committed from then on reaches the watcher. `channel` is where the
    /// election's changes are published. Fails with [`NotReady`] when the listener does not
    /// confirm the subscription in time. A watcher never refreshes a lease: an open stream is
    /// no proof that its client is alive.
    pub async fn watch(
        &self,
        election: &ElectionName,
        channel: String,
    ) -> Result<Watcher, NotReady> {
        let shared = {
            let mut entries = lock(&self.inner.entries);
            let entry = entries.entry(channel.clone()).or_insert_with(|| {
                let (ready, _) = watch::channel(false);
                let _ = self
                    .inner
                    .commands
                    .send(Command::Subscribe(channel.clone()));
                Entry {
                    name: election.clone(),
                    shared: Arc::new(Shared {
                        tx: broadcast::channel(BUFFER).0,
                        latest: Mutex::new(None),
                        ready,
                    }),
                    streams: 0,
                }
            });
            entry.streams += 1;
            entry.shared.clone()
        };
        // From here on, dropping the half-built watcher releases the entry.
        let mut pending = Watcher {
            inner: self.inner.clone(),
            channel,
            rx: shared.tx.subscribe(),
            shared,
            last_seq: 0,
        };
        self.inner.metrics.streams_open.inc();
        let timeout = self.inner.ready_timeout;
        let mut ready = pending.shared.ready.subscribe();
        match tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => {}
            _ => return Err(NotReady(timeout)),
        }
        // Start after the latest delivered state: take the receiver and the position together
        // under the lock that delivery holds while sending.
        {
            let latest = lock(&pending.shared.latest);
            pending.rx = pending.shared.tx.subscribe();
            pending.last_seq = latest.as_ref().map_or(0, |d| d.seq);
        }
        Ok(pending)
    }

    /// Ends every stream: the listener calls it when the replica stops.
    pub(crate) fn close(&self) {
        // dropping the entries' senders ends every stream
        lock(&self.inner.entries).clear();
    }
}

/// What the listener uses: the watch set, and the states it reads from Redis.
impl Hub {
    pub(crate) fn is_watched(&self, channel: &str) -> bool {
        lock(&self.inner.entries).contains_key(channel)
    }

    /// Offers a state to an election's streams. Normally (`authoritative` false, a pub/sub
    /// message) a state older than or equal to the last one delivered is dropped. A state just
    /// read from Redis after (re)subscribing is authoritative: it is delivered whenever it
    /// differs from the last one, even if older, and the first read of an election only sets
    /// the starting point.
    pub(crate) fn offer(&self, channel: &str, term: Term, authoritative: bool) {
        let entries = lock(&self.inner.entries);
        let Some(entry) = entries.get(channel) else {
            return;
        };
        let mut latest = lock(&entry.shared.latest);
        let seq = match latest.as_ref() {
            None if authoritative => {
                *latest = Some(Arc::new(Delivery::new(0, term)));
                return;
            }
            None => 1,
            Some(last) => {
                let same = term.revision == last.term.revision && term.same_state(&last.term);
                if same || (!authoritative && term.revision < last.term.revision) {
                    return;
                }
                if term.revision < last.term.revision {
                    tracing::warn!(
                        election = %entry.name,
                        from_revision = last.term.revision,
                        to_revision = term.revision,
                        "election state went backwards in redis (data lost by a restart or \
                         failover?); delivering what redis holds now"
                    );
                }
                last.seq + 1
            }
        };
        let delivery = Arc::new(Delivery::new(seq, term));
        *latest = Some(delivery.clone());
        Metrics::add(&self.inner.metrics.events_received, 1);
        // no receivers is fine: the last stream may be leaving
        let _ = entry.shared.tx.send(delivery);
    }

    pub(crate) fn set_ready(&self, channels: &[String], ready: bool) {
        let entries = lock(&self.inner.entries);
        for c in channels {
            if let Some(e) = entries.get(c) {
                e.shared.ready.send_replace(ready);
            }
        }
    }

    pub(crate) fn all_channels(&self) -> Vec<String> {
        lock(&self.inner.entries).keys().cloned().collect()
    }

    pub(crate) fn names(&self, channels: &[String]) -> Vec<(String, ElectionName)> {
        let entries = lock(&self.inner.entries);
        channels
            .iter()
            .filter_map(|c| entries.get(c).map(|e| (c.clone(), e.name.clone())))
            .collect()
    }
}

impl Watcher {
    /// The next state to show, skipping to the latest when this watcher fell behind. `None`
    /// when the replica is shutting down.
    pub async fn next(&mut self) -> Option<Arc<Delivery>> {
        loop {
            match self.rx.recv().await {
                Ok(d) if d.seq > self.last_seq => {
                    self.last_seq = d.seq;
                    return Some(d);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Metrics::add(&self.inner.metrics.events_skipped, 1);
                    let latest = lock(&self.shared.latest).clone();
                    if let Some(d) = latest.filter(|d| d.seq > self.last_seq) {
                        self.last_seq = d.seq;
                        return Some(d);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.inner.metrics.streams_open.dec();
        let mut entries = lock(&self.inner.entries);
        if let Some(entry) = entries.get_mut(&self.channel) {
            // only count down the entry this watcher joined, not a newer one
            if Arc::ptr_eq(&entry.shared, &self.shared) {
                entry.streams -= 1;
                if entry.streams == 0 {
                    entries.remove(&self.channel);
                    let _ = self
                        .inner
                        .commands
                        .send(Command::Unsubscribe(self.channel.clone()));
                }
            }
        }
    }
}
