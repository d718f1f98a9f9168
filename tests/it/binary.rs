//! The real `electiond` binary, for tests of what only a process shows (signals, its output,
//! what it leaves behind). Not in the harness, which electionctl's tests share.

use std::process::Stdio;

use tokio::process::Command;

/// The real `electiond` binary, set to listen on the local `port`, without metrics, killed
/// when dropped; the caller adds Redis settings and output handling.
pub fn electiond_binary(port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_electiond"));
    c.env("ELECTION_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ELECTION_METRICS_ADDR", "")
        .env("ELECTION_CONSOLE_ADDR", "")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    c
}
