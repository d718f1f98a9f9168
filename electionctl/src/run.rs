//! `electionctl run`: campaign, run the command while leader, stop it before the lease can
//! lapse.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use electiond_client::Client;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

/// Exit status when leadership was lost while the command ran.
const LOST: u8 = 3;

/// What `run` was asked to do.
pub struct Options {
    pub name: String,
    pub id: String,
    pub kill_grace: Duration,
    pub shell: bool,
    pub cmd: Vec<String>,
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("electionctl: {msg}");
}

/// The exit code a shell would report for a process ended by `status`.
fn code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 1,
    }
}

/// Sends `sig` to the child's whole process group.
fn signal_group(child: &Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no
        // memory of ours. The group is the child's own (process_group(0) below).
        unsafe {
            libc::kill(-(pid as libc::pid_t), sig);
        }
    }
}

/// SIGTERM to the group, SIGKILL after the grace; returns once the child is gone.
async fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    signal_group(child, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            say(format!(
                "the command did not exit within {grace:?} of SIGTERM: SIGKILL"
            ));
            signal_group(child, libc::SIGKILL);
            child.wait().await.ok()
        }
    }
}

fn spawn(opts: &Options, term_id: u64) -> std::io::Result<Child> {
    let mut cmd = if opts.shell {
        let mut c = Command::new("sh");
        c.arg("-c").arg(opts.cmd.join(" "));
        c
    } else {
        let mut c = Command::new(&opts.cmd[0]);
        c.args(&opts.cmd[1..]);
        c
    };
    cmd.env("ELECTION_NAME", &opts.name)
        .env("ELECTION_CANDIDATE_ID", &opts.id)
        .env("ELECTION_TERM_ID", term_id.to_string())
        // its own group, so that stopping it reaches everything it started
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2), which
    // is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            // if electionctl dies (even SIGKILL or OOM), the command must not lead on alone
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // electionctl may have died between fork and prctl: then nobody would signal
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("electionctl exited"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

pub async fn run(client: Client, opts: Options) -> ExitCode {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            say("cannot listen for signals");
            return ExitCode::FAILURE;
        }
    };

    // campaign, honouring signals while waiting
    let leadership = tokio::select! {
        l = client.campaign(&opts.name, &opts.id) => match l {
            Ok(l) => l,
            Err(e) => {
                say(e);
                return ExitCode::FAILURE;
            }
        },
        _ = term.recv() => return give_up(&client, &opts, libc::SIGTERM).await,
        _ = int.recv() => return give_up(&client, &opts, libc::SIGINT).await,
    };
    let term_id = leadership.term_id();
    say(format!(
        "leader of {} as {} (term {term_id}): starting the command",
        opts.name, opts.id
    ));
    let mut child = match spawn(&opts, term_id) {
        Ok(c) => c,
        Err(e) => {
            say(format!("cannot start {:?}: {e}", opts.cmd[0]));
            let _ = leadership.resign().await;
            return ExitCode::FAILURE;
        }
    };

    let sig = tokio::select! {
        status = child.wait() => {
            // it ended by itself: let a successor take over at once
            let code = status.map(code_of).unwrap_or(1);
            if let Err(e) = leadership.resign().await {
                say(format!("withdrawing failed (the lease will expire instead): {e}"));
            }
            return ExitCode::from(code);
        }
        reason = leadership.lost() => {
            say(format!("leadership lost: {reason}; stopping the command"));
            stop(&mut child, opts.kill_grace).await;
            return ExitCode::from(LOST);
        }
        _ = term.recv() => libc::SIGTERM,
        _ = int.recv() => libc::SIGINT,
    };
    // asked to stop: the command first, then withdraw, so a successor never overlaps it
    say("stopping the command, then withdrawing");
    stop(&mut child, opts.kill_grace).await;
    if let Err(e) = leadership.resign().await {
        say(format!(
            "withdrawing failed (the lease will expire instead): {e}"
        ));
    }
    ExitCode::from(128u8.wrapping_add(sig as u8))
}

/// A signal while campaigning: withdraw (the campaign entered us) and exit.
async fn give_up(client: &Client, opts: &Options, sig: libc::c_int) -> ExitCode {
    if let Err(e) = client.withdraw(&opts.name, &opts.id).await {
        say(format!(
            "withdrawing failed (the lease will expire instead): {e}"
        ));
    }
    ExitCode::from(128u8.wrapping_add(sig as u8))
}
