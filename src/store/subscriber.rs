//! The one pub/sub subscriber of a replica, and the in-process fan-out to its Events streams.
//!
//! Each replica holds one Redis pub/sub connection, whatever the number of streams. It is
//! subscribed to an election's channel while at least one local stream watches that election.
//! Every message is checked against the last state delivered for that election (by revision),
//! so duplicates and stale states are dropped, then broadcast to the election's streams.
//!
//! After the connection breaks, the subscriber reconnects with backoff and jitter, subscribes
//! again, and re-reads every watched election: where Redis now holds a state other than the
//! last one delivered, it is delivered, even when its revision is lower (Redis lost data), so
//! no watcher is left showing a leader Redis no longer has.
//!
//! A slow stream never holds anyone up: each election has one bounded broadcast buffer; a
//! stream that falls behind it skips to the latest state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};

use super::{decode_term, Store, StoreError};
use crate::election::{ElectionName, Term};
use crate::metrics::Metrics;

/// Buffered states per election before a slow stream skips to the latest.
const BUFFER: usize = 64;
/// How often an idle pub/sub connection is checked with PING.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One state delivered to an election's streams. `seq` numbers the deliveries of this replica
/// for this election, so a stream can tell what it has already seen even when a state with a
/// lower revision must be delivered (after Redis lost data).
#[derive(Debug)]
pub struct Delivery {
    /// Local delivery number, strictly increasing per election.
    pub seq: u64,
    /// The state.
    pub term: Term,
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

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// Watched elections by channel name.
    entries: Mutex<HashMap<String, Entry>>,
    commands: mpsc::UnboundedSender<Command>,
    stop: watch::Receiver<bool>,
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
    /// Starts the subscriber task; it runs until `stop` turns true.
    pub fn start(store: Store, stop: watch::Receiver<bool>) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            store,
            entries: Mutex::new(HashMap::new()),
            commands,
            stop,
        });
        tokio::spawn(subscriber(inner.clone(), rx));
        Self { inner }
    }

    /// Watches `election`: returns once the replica is subscribed to its channel, so that
    /// every change committed from then on reaches the watcher. Fails with `Timeout` when
    /// Redis does not confirm in time. A watcher never refreshes a lease: an open stream is
    /// no proof that its client is alive.
    pub async fn watch(&self, election: &ElectionName) -> Result<Watcher, StoreError> {
        let channel = self.inner.store.keys().election(election).channel;
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
        self.inner
            .store
            .metrics()
            .streams_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let timeout = self.inner.store.timeout() * 2;
        let mut ready = pending.shared.ready.subscribe();
        match tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => {}
            _ => return Err(StoreError::Timeout(timeout)),
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
                    Metrics::add(&self.inner.store.metrics().events_skipped, 1);
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
        self.inner
            .store
            .metrics()
            .streams_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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

impl Inner {
    fn is_watched(&self, channel: &str) -> bool {
        lock(&self.entries).contains_key(channel)
    }

    /// Offers a state to an election's streams. Normally (`authoritative` false, a pub/sub
    /// message) a state older than or equal to the last one delivered is dropped. A state just
    /// read from Redis after (re)subscribing is authoritative: it is delivered whenever it
    /// differs from the last one, even if older, and the first read of an election only sets
    /// the starting point.
    fn offer(&self, channel: &str, term: Term, authoritative: bool) {
        let entries = lock(&self.entries);
        let Some(entry) = entries.get(channel) else {
            return;
        };
        let mut latest = lock(&entry.shared.latest);
        let seq = match latest.as_ref() {
            None if authoritative => {
                *latest = Some(Arc::new(Delivery { seq: 0, term }));
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
        let delivery = Arc::new(Delivery { seq, term });
        *latest = Some(delivery.clone());
        Metrics::add(&self.store.metrics().events_received, 1);
        // no receivers is fine: the last stream may be leaving
        let _ = entry.shared.tx.send(delivery);
    }

    fn set_ready(&self, channels: &[String], ready: bool) {
        let entries = lock(&self.entries);
        for c in channels {
            if let Some(e) = entries.get(c) {
                e.shared.ready.send_replace(ready);
            }
        }
    }

    fn all_channels(&self) -> Vec<String> {
        lock(&self.entries).keys().cloned().collect()
    }

    fn names(&self, channels: &[String]) -> Vec<(String, ElectionName)> {
        let entries = lock(&self.entries);
        channels
            .iter()
            .filter_map(|c| entries.get(c).map(|e| (c.clone(), e.name.clone())))
            .collect()
    }

    /// Reads the current state of `channels`' elections and offers it as authoritative, then
    /// marks them ready. They must already be subscribed, so no change can fall in between.
    async fn catch_up(&self, channels: &[String]) -> Result<(), StoreError> {
        let named = self.names(channels);
        let names: Vec<ElectionName> = named.iter().map(|(_, n)| n.clone()).collect();
        let terms = self.store.read_many(&names).await?;
        for ((channel, _), term) in named.into_iter().zip(terms) {
            self.offer(&channel, term, true);
        }
        self.set_ready(channels, true);
        Ok(())
    }
}

/// Why the subscriber left a connection.
enum Exit {
    Stop,
    Lost(String),
}

async fn subscriber(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut stop = inner.stop.clone();
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        let served = if inner.store.is_cluster() {
            serve_cluster(&inner, &mut commands, &mut backoff, first).await
        } else {
            serve(&inner, &mut commands, &mut backoff, first).await
        };
        let lost = match served {
            Exit::Stop => break,
            Exit::Lost(why) => why,
        };
        first = false;
        Metrics::add(&inner.store.metrics().pubsub_reconnects, 1);
        let channels = inner.all_channels();
        inner.set_ready(&channels, false);
        tracing::warn!(reason = %lost, retry_in = ?backoff, "redis pub/sub connection lost; reconnecting");
        // full jitter keeps replicas from reconnecting in lockstep after an outage
        let wait = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    // dropping the entries' senders ends every stream
    lock(&inner.entries).clear();
}

/// Connects, (re)subscribes every watched election, catches up, then relays messages and
/// commands until the connection fails or the replica stops.
async fn serve(
    inner: &Arc<Inner>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backoff: &mut Duration,
    first: bool,
) -> Exit {
    let timeout = inner.store.timeout();
    let master = match bounded("find master", timeout, inner.store.master()).await {
        Ok(m) => m,
        Err(e) => return e,
    };
    let connected_to = master.get_connection_info().addr().to_string();
    let pubsub = bounded("connect", timeout, master.get_async_pubsub()).await;
    let (mut sink, mut messages) = match pubsub {
        Ok(p) => p.split(),
        Err(e) => return e,
    };
    let channels = inner.all_channels();
    if !channels.is_empty() {
        if let Err(e) = bounded("subscribe", timeout, sink.subscribe(&channels)).await {
            return e;
        }
    }
    if let Err(e) = resumed(inner, &channels, first, backoff).await {
        return e;
    }

    let mut stop = inner.stop.clone();
    // with Sentinel the check also looks for a moved master, so it runs more often
    let every = if inner.store.master_can_move() {
        PING_EVERY / 5
    } else {
        PING_EVERY
    };
    let mut ping = tokio::time::interval(every);
    ping.reset();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Exit::Lost("connection closed".into());
                };
                match decode_term(msg.get_payload_bytes()) {
                    Ok(term) => inner.offer(msg.get_channel_name(), term, false),
                    Err(e) => tracing::error!(channel = msg.get_channel_name(), error = %e, "unreadable event"),
                }
            }
            cmd = commands.recv() => {
                let Some(first_cmd) = cmd else { return Exit::Stop };
                let (subscribe, unsubscribe) = take_commands(inner, first_cmd, commands);
                if !unsubscribe.is_empty() {
                    let r = bounded("unsubscribe", timeout, sink.unsubscribe(&unsubscribe)).await;
                    if let Err(e) = r {
                        return e;
                    }
                }
                if !subscribe.is_empty() {
                    if let Err(e) = bounded("subscribe", timeout, sink.subscribe(&subscribe)).await {
                        return e;
                    }
                    if let Err(e) = catch_up(inner, &subscribe).await {
                        return e;
                    }
                }
            }
            _ = ping.tick() => {
                if let Err(e) = bounded("ping", timeout, sink.ping::<redis::Value>()).await {
                    return e;
                }
                // after a Sentinel failover the old master may live on as a replica: follow
                // the master, and catch up on what was missed while it moved
                if inner.store.master_can_move() {
                    if let Ok(Ok(m)) = tokio::time::timeout(timeout, inner.store.master()).await {
                        let now = m.get_connection_info().addr().to_string();
                        if now != connected_to {
                            return Exit::Lost(format!("master moved from {connected_to} to {now}"));
                        }
                    }
                }
            }
            _ = stopped(&mut stop) => return Exit::Stop,
        }
    }
}

/// Catches `channels` up (see [`Inner::catch_up`]); a failed read ends the connection.
async fn catch_up(inner: &Inner, channels: &[String]) -> Result<(), Exit> {
    if channels.is_empty() {
        return Ok(());
    }
    inner
        .catch_up(channels)
        .await
        .map_err(|e| Exit::Lost(format!("catch-up read: {e}")))
}

/// After (re)subscribing `channels` on a new connection: catches them up, says so when this
/// is a reconnection, and resets the reconnect backoff.
async fn resumed(
    inner: &Inner,
    channels: &[String],
    first: bool,
    backoff: &mut Duration,
) -> Result<(), Exit> {
    catch_up(inner, channels).await?;
    if !first {
        tracing::info!(
            elections = channels.len(),
            "redis pub/sub reconnected; watchers caught up"
        );
    }
    *backoff = BACKOFF_MIN;
    Ok(())
}

/// Takes every queued command at once (one subscription and one read for a burst), and
/// decides by the current watch set, which already reflects every command taken: returns the
/// channels to subscribe and those to unsubscribe.
fn take_commands(
    inner: &Inner,
    first: Command,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> (Vec<String>, Vec<String>) {
    let mut subscribe = Vec::new();
    let mut unsubscribe = Vec::new();
    let mut next = Some(first);
    while let Some(cmd) = next {
        match cmd {
            Command::Subscribe(c) => subscribe.push(c),
            Command::Unsubscribe(c) => unsubscribe.push(c),
        }
        next = commands.try_recv().ok();
    }
    subscribe.sort();
    subscribe.dedup();
    subscribe.retain(|c| inner.is_watched(c));
    unsubscribe.retain(|c| !inner.is_watched(c) && !subscribe.contains(c));
    (subscribe, unsubscribe)
}

/// The hash tag of a channel (`prefix:{e12}`): channels with the same one share a slot.
fn slot_tag(channel: &str) -> &str {
    channel.find('}').map_or(channel, |end| &channel[..=end])
}

/// Groups channels by slot: `SSUBSCRIBE` takes the channels of one slot at a time.
fn by_slot(channels: &[String]) -> Vec<Vec<String>> {
    let mut groups: HashMap<&str, Vec<String>> = HashMap::new();
    for c in channels {
        groups.entry(slot_tag(c)).or_default().push(c.clone());
    }
    groups.into_values().collect()
}

/// The Redis Cluster variant of [`serve`]: one RESP3 cluster connection (one connection per
/// node) carries every watched election's sharded channel, subscribed on the master of its
/// slot, so each event travels only within its shard.
///
/// The connection subscribes again by itself after a node's connection breaks, or its slot map
/// changes; each such confirmation that this loop did not ask for is followed by a catch-up
/// read, since events may have been missed in between. When a slot moves to another master,
/// the old one drops its channels (a server-sent `sunsubscribe`): those still watched are
/// subscribed again, on the new master, and caught up. Any failure of the connection itself
/// ends it, and the caller starts over.
async fn serve_cluster(
    inner: &Arc<Inner>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backoff: &mut Duration,
    first: bool,
) -> Exit {
    use redis::PushKind;

    let timeout = inner.store.timeout();
    let (tx, mut pushes) = mpsc::unbounded_channel();
    let mut conn = match bounded("connect", timeout, inner.store.cluster_subscriber(tx)).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    // confirmations this loop asked for, per channel; any other one is a resubscription
    let mut expected: HashMap<String, usize> = HashMap::new();
    let channels = inner.all_channels();
    if let Err(e) = ssubscribe(&mut conn, &channels, &mut expected, timeout).await {
        return e;
    }
    if let Err(e) = resumed(inner, &channels, first, backoff).await {
        return e;
    }

    let mut stop = inner.stop.clone();
    // the connection's own recovery can stall (see `ClusterTarget::retire`): check it often
    let mut ping = tokio::time::interval(PING_EVERY / 5);
    ping.reset();
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else {
                    return Exit::Lost("connection closed".into());
                };
                // take what else is queued, so a burst of confirmations is one read
                let mut again = Vec::new();
                let mut resubscribed = Vec::new();
                let mut next = Some(parse_push(push));
                while let Some((kind, channel, data)) = next.take() {
                    match (kind, channel) {
                        (PushKind::SMessage, Some(channel)) => {
                            let payload = match data.get(1) {
                                Some(redis::Value::BulkString(b)) => b.as_slice(),
                                _ => &[],
                            };
                            match decode_term(payload) {
                                Ok(term) => inner.offer(&channel, term, false),
                                Err(e) => tracing::error!(%channel, error = %e, "unreadable event"),
                            }
                        }
                        (PushKind::SSubscribe, Some(channel)) => {
                            match expected.get_mut(&channel) {
                                Some(n) if *n > 1 => *n -= 1,
                                Some(_) => {
                                    expected.remove(&channel);
                                }
                                None if inner.is_watched(&channel) => resubscribed.push(channel),
                                None => {}
                            }
                        }
                        // a slot moved away from the node: subscribe again where it is now
                        (PushKind::SUnsubscribe, Some(channel)) if inner.is_watched(&channel) => {
                            again.push(channel);
                        }
                        (PushKind::Disconnection, _) => {
                            tracing::debug!("a redis cluster node's pub/sub connection broke; it resubscribes");
                        }
                        _ => {}
                    }
                    next = pushes.try_recv().ok().map(parse_push);
                }
                if !again.is_empty() {
                    again.sort();
                    again.dedup();
                    inner.set_ready(&again, false);
                    if let Err(e) = ssubscribe(&mut conn, &again, &mut expected, timeout).await {
                        return e;
                    }
                    resubscribed.extend(again);
                }
                if !resubscribed.is_empty() {
                    resubscribed.sort();
                    resubscribed.dedup();
                    if let Err(e) = catch_up(inner, &resubscribed).await {
                        return e;
                    }
                }
            }
            cmd = commands.recv() => {
                let Some(first_cmd) = cmd else { return Exit::Stop };
                let (subscribe, unsubscribe) = take_commands(inner, first_cmd, commands);
                for group in by_slot(&unsubscribe) {
                    if let Err(e) = bounded("sunsubscribe", timeout, conn.sunsubscribe(&group)).await {
                        return e;
                    }
                }
                if !subscribe.is_empty() {
                    if let Err(e) = ssubscribe(&mut conn, &subscribe, &mut expected, timeout).await {
                        return e;
                    }
                    if let Err(e) = catch_up(inner, &subscribe).await {
                        return e;
                    }
                }
            }
            _ = ping.tick() => {
                let r = conn.route_command(redis::cmd("PING"), super::cluster::all_masters());
                if let Err(e) = bounded("ping", timeout, r).await {
                    return e;
                }
            }
            _ = stopped(&mut stop) => return Exit::Stop,
        }
    }
}

/// A push's kind, its channel (the first item, for pub/sub pushes) and its items.
fn parse_push(push: redis::PushInfo) -> (redis::PushKind, Option<String>, Vec<redis::Value>) {
    let channel = match push.data.first() {
        Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    };
    (push.kind, channel, push.data)
}

/// Subscribes `channels` on the masters of their slots, one `SSUBSCRIBE` per slot, noting the
/// confirmations to expect.
async fn ssubscribe(
    conn: &mut redis::cluster_async::ClusterConnection,
    channels: &[String],
    expected: &mut HashMap<String, usize>,
    timeout: Duration,
) -> Result<(), Exit> {
    for group in by_slot(channels) {
        for c in &group {
            *expected.entry(c.clone()).or_default() += 1;
        }
        bounded("ssubscribe", timeout, conn.ssubscribe(&group)).await?;
    }
    Ok(())
}

/// Runs one pub/sub round trip with the Redis timeout; any failure ends the connection.
async fn bounded<T>(
    what: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Exit> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Exit::Lost(format!("{what}: {e}"))),
        Err(_) => Err(Exit::Lost(format!("{what}: no answer within {timeout:?}"))),
    }
}

/// Completes once the replica stops.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // an error means the sender is gone, which also means stop
    let _ = stop.wait_for(|s| *s).await;
}
