//! The Redis Cluster variant of the pub/sub listener (see `listener.rs`): events travel on
//! sharded channels (`SSUBSCRIBE`), each only within its election's shard.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::listener::{bounded, catch_up, resumed, take_commands, Exit, PING_EVERY};
use super::{decode_term, Store};
use crate::events::{Command, Hub};
use crate::shutdown::stopped;

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

/// The Redis Cluster variant of `listener::serve`: one RESP3 cluster connection (one connection per
/// node) carries every watched election's sharded channel, subscribed on the master of its
/// slot, so each event travels only within its shard.
///
/// The connection subscribes again by itself after a node's connection breaks, or its slot map
/// changes; each such confirmation that this loop did not ask for is followed by a catch-up
/// read, since events may have been missed in between. When a slot moves to another master,
/// the old one drops its channels (a server-sent `sunsubscribe`): those still watched are
/// subscribed again, on the new master, and caught up. Any failure of the connection itself
/// ends it, and the caller starts over.
pub(super) async fn serve_cluster(
    hub: &Hub,
    store: &Store,
    stop: &watch::Receiver<bool>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backoff: &mut Duration,
    first: bool,
) -> Exit {
    use redis::PushKind;

    let timeout = store.timeout();
    let (tx, mut pushes) = mpsc::unbounded_channel();
    let mut conn = match bounded("connect", timeout, store.cluster_subscriber(tx)).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    // confirmations this loop asked for, per channel; any other one is a resubscription
    let mut expected: HashMap<String, usize> = HashMap::new();
    let channels = hub.all_channels();
    if let Err(e) = ssubscribe(&mut conn, &channels, &mut expected, timeout).await {
        return e;
    }
    if let Err(e) = resumed(hub, store, &channels, first, backoff).await {
        return e;
    }

    let mut stop = stop.clone();
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
                let mut broke = false;
                let mut next = Some(parse_push(push));
                while let Some((kind, channel, data)) = next.take() {
                    match (kind, channel) {
                        (PushKind::SMessage, Some(channel)) => {
                            let payload = match data.get(1) {
                                Some(redis::Value::BulkString(b)) => b.as_slice(),
                                _ => &[],
                            };
                            match decode_term(payload) {
                                Ok(term) => hub.offer(&channel, term, false),
                                Err(e) => tracing::error!(%channel, error = %e, "unreadable event"),
                            }
                        }
                        (PushKind::SSubscribe, Some(channel)) => {
                            match expected.get_mut(&channel) {
                                Some(n) if *n > 1 => *n -= 1,
                                Some(_) => {
                                    expected.remove(&channel);
                                }
                                None if hub.is_watched(&channel) => resubscribed.push(channel),
                                None => {}
                            }
                        }
                        // a slot moved away from the node: subscribe again where it is now
                        (PushKind::SUnsubscribe, Some(channel)) if hub.is_watched(&channel) => {
                            again.push(channel);
                        }
                        (PushKind::Disconnection, _) => {
                            tracing::debug!("a redis cluster node's pub/sub connection broke; it resubscribes");
                            broke = true;
                        }
                        _ => {}
                    }
                    next = pushes.try_recv().ok().map(parse_push);
                }
                // Check the nodes now, not at the next ping: while a node is down the
                // connection's own recovery retries without pause, and only dropping the
                // connection (and reconnecting with backoff) stops it.
                if broke {
                    let r = conn.route_command(redis::cmd("PING"), super::cluster::all_masters());
                    if let Err(e) = bounded("ping", timeout, r).await {
                        return e;
                    }
                }
                if !again.is_empty() {
                    again.sort();
                    again.dedup();
                    hub.set_ready(&again, false);
                    if let Err(e) = ssubscribe(&mut conn, &again, &mut expected, timeout).await {
                        return e;
                    }
                    resubscribed.extend(again);
                }
                if !resubscribed.is_empty() {
                    resubscribed.sort();
                    resubscribed.dedup();
                    if let Err(e) = catch_up(hub, store, &resubscribed).await {
                        return e;
                    }
                }
            }
            cmd = commands.recv() => {
                let Some(first_cmd) = cmd else { return Exit::Stop };
                let (subscribe, unsubscribe) = take_commands(hub, first_cmd, commands);
                for group in by_slot(&unsubscribe) {
                    if let Err(e) = bounded("sunsubscribe", timeout, conn.sunsubscribe(&group)).await {
                        return e;
                    }
                }
                if !subscribe.is_empty() {
                    if let Err(e) = ssubscribe(&mut conn, &subscribe, &mut expected, timeout).await {
                        return e;
                    }
                    if let Err(e) = catch_up(hub, store, &subscribe).await {
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
