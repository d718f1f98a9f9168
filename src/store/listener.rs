//! The one pub/sub listener of a replica (one Redis, or the master Sentinel names): it keeps
//! one subscription connection for every election the replica's streams watch, whatever the
//! number of streams, and feeds what arrives to the in-process fan-out (`events::Hub`).
//!
//! After the connection breaks, it reconnects with backoff and jitter, subscribes again, and
//! re-reads every watched election, so watchers catch up on whatever they missed. The Redis
//! Cluster variant is in `cluster_listener.rs`.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::cluster_listener::serve_cluster;
use super::{decode_term, Store};
use crate::election::ElectionName;
use crate::events::{Command, Hub};
use crate::metrics::Metrics;
use crate::shutdown::stopped;

/// How often an idle pub/sub connection is checked with PING.
pub(super) const PING_EVERY: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the subscriber left a connection.
pub(super) enum Exit {
    Stop,
    Lost(String),
}

/// The replica's pub/sub listener: keeps one subscription connection (or, on a Cluster, one
/// cluster connection) for every election `hub` watches, feeds it what arrives, and
/// reconnects with backoff and jitter until `stop`. Ends every stream when it stops.
pub async fn listen(
    store: Store,
    hub: Hub,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stop: watch::Receiver<bool>,
) {
    let mut stopping = stop.clone();
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        let served = if store.is_cluster() {
            serve_cluster(&hub, &store, &stop, &mut commands, &mut backoff, first).await
        } else {
            serve(&hub, &store, &stop, &mut commands, &mut backoff, first).await
        };
        let lost = match served {
            Exit::Stop => break,
            Exit::Lost(why) => why,
        };
        first = false;
        Metrics::add(&store.metrics().pubsub_reconnects, 1);
        let channels = hub.all_channels();
        hub.set_ready(&channels, false);
        tracing::warn!(reason = %lost, retry_in = ?backoff, "redis pub/sub connection lost; reconnecting");
        // full jitter keeps replicas from reconnecting in lockstep after an outage
        let wait = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stopping) => break,
        }
    }
    hub.close();
}

/// Connects, (re)subscribes every watched election, catches up, then relays messages and
/// commands until the connection fails or the replica stops.
async fn serve(
    hub: &Hub,
    store: &Store,
    stop: &watch::Receiver<bool>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backoff: &mut Duration,
    first: bool,
) -> Exit {
    let timeout = store.timeout();
    let master = match bounded("find master", timeout, store.master()).await {
        Ok(m) => m,
        Err(e) => return e,
    };
    let connected_to = master.get_connection_info().addr().to_string();
    let pubsub = bounded("connect", timeout, master.get_async_pubsub()).await;
    let (mut sink, mut messages) = match pubsub {
        Ok(p) => p.split(),
        Err(e) => return e,
    };
    let channels = hub.all_channels();
    if !channels.is_empty() {
        if let Err(e) = bounded("subscribe", timeout, sink.subscribe(&channels)).await {
            return e;
        }
    }
    if let Err(e) = resumed(hub, store, &channels, first, backoff).await {
        return e;
    }

    let mut stop = stop.clone();
    // with Sentinel the check also looks for a moved master, so it runs more often
    let every = if store.master_can_move() {
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
                    Ok(term) => hub.offer(msg.get_channel_name(), term, false),
                    Err(e) => tracing::error!(channel = msg.get_channel_name(), error = %e, "unreadable event"),
                }
            }
            cmd = commands.recv() => {
                let Some(first_cmd) = cmd else { return Exit::Stop };
                let (subscribe, unsubscribe) = take_commands(hub, first_cmd, commands);
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
                    if let Err(e) = catch_up(hub, store, &subscribe).await {
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
                if store.master_can_move() {
                    if let Ok(Ok(m)) = tokio::time::timeout(timeout, store.master()).await {
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

/// Reads the current state of `channels`' elections and offers it to the hub as
/// authoritative, then marks them ready. They must already be subscribed, so no change can
/// fall in between; a failed read ends the connection.
pub(super) async fn catch_up(hub: &Hub, store: &Store, channels: &[String]) -> Result<(), Exit> {
    if channels.is_empty() {
        return Ok(());
    }
    let named = hub.names(channels);
    let names: Vec<ElectionName> = named.iter().map(|(_, n)| n.clone()).collect();
    let terms = store
        .read_many(&names)
        .await
        .map_err(|e| Exit::Lost(format!("catch-up read: {e}")))?;
    for ((channel, _), term) in named.into_iter().zip(terms) {
        hub.offer(&channel, term, true);
    }
    hub.set_ready(channels, true);
    Ok(())
}

/// After (re)subscribing `channels` on a new connection: catches them up, says so when this
/// is a reconnection, and resets the reconnect backoff.
pub(super) async fn resumed(
    hub: &Hub,
    store: &Store,
    channels: &[String],
    first: bool,
    backoff: &mut Duration,
) -> Result<(), Exit> {
    catch_up(hub, store, channels).await?;
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
pub(super) fn take_commands(
    hub: &Hub,
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
    subscribe.retain(|c| hub.is_watched(c));
    unsubscribe.retain(|c| !hub.is_watched(c) && !subscribe.contains(c));
    (subscribe, unsubscribe)
}

/// Runs one pub/sub round trip with the Redis timeout; any failure ends the connection.
pub(super) async fn bounded<T>(
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
