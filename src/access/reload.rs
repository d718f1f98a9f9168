//! Reading the access file again: on SIGHUP, and when the file changes (checked every two
//! seconds). A valid file takes effect for calls that start afterwards; calls and streams
//! already running keep going. An invalid one is refused with a log line, and the grants in
//! force stay.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch as stop_watch;

use super::Access;
use crate::shutdown::stopped;

/// How often the file's modification time and size are looked at.
const POLL: Duration = Duration::from_secs(2);

/// What identifies one version of the file: when it was written, its size, and its inode
/// (an editor or a Kubernetes volume replaces the file rather than rewriting it).
type Version = Option<(SystemTime, u64, u64)>;

fn version(path: &std::path::Path) -> Version {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Reloads `access` until `stop` turns true. Does nothing without an access file.
pub async fn watch(access: Arc<Access>, mut stop: stop_watch::Receiver<bool>) {
    let Some(path) = access.file().map(std::path::Path::to_path_buf) else {
        return;
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the access file is still re-read when it changes");
            None
        }
    };
    let mut seen = version(&path);
    let mut poll = tokio::time::interval(POLL);
    poll.reset();
    loop {
        let why = tokio::select! {
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => None } } => {
                // what is read now: the poll need not read it again
                seen = version(&path);
                "SIGHUP"
            }
            _ = poll.tick() => {
                let now = version(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                "the file changed"
            }
            _ = stopped(&mut stop) => return,
        };
        match access.reload() {
            Ok(n) => {
                tracing::info!(file = %path.display(), grants = n, trigger = why, "access file loaded")
            }
            Err(e) => {
                tracing::error!(error = %e, trigger = why, "access file refused; the grants in force stay")
            }
        }
    }
}
