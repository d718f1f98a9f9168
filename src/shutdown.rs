//! Shutdown signalling: one `watch` channel that turns true when the replica starts shutting
//! down; every long-lived task holds a receiver.

use tokio::sync::watch;

/// Completes once the replica stops.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // an error means the sender is gone, which also means stop
    let _ = stop.wait_for(|s| *s).await;
}
