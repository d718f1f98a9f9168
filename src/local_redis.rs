//! A private `redis-server` for running with no configuration: started on a free local port,
//! stopped when the service stops. Nothing is persisted; production configures a real Redis.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Why the private Redis could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalRedisError {
    /// The program is not installed (or not on PATH).
    #[error(
        "no Redis configured and `{0}` could not be started ({1}); install redis-server \
         (e.g. `apt-get install redis-server`) or set ELECTION_REDIS_URL"
    )]
    NotInstalled(String, std::io::Error),
    /// It started but never answered.
    #[error("the private redis-server on port {0} did not answer within {1:?}")]
    NoAnswer(u16, Duration),
    /// Some other I/O failure.
    #[error("cannot start the private redis-server: {0}")]
    Io(#[from] std::io::Error),
}

/// A running private Redis; killed when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: Child,
    port: u16,
}

impl LocalRedis {
    /// Starts `program` on a free loopback port and waits until it answers `PING`.
    pub async fn start(program: &str) -> Result<Self, LocalRedisError> {
        let port = free_port()?;
        let child = launcher(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LocalRedisError::NotInstalled(program.to_owned(), e))?;
        let mut redis = Self { child, port };
        redis.wait_ready(Duration::from_secs(10)).await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), LocalRedisError> {
        let deadline = Instant::now() + limit;
        let client =
            redis::Client::open(self.url()).map_err(|e| std::io::Error::other(e.to_string()))?;
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(LocalRedisError::Io(std::io::Error::other(format!(
                    "redis-server exited at start ({status}); see its output above"
                ))));
            }
            if Instant::now() >= deadline {
                return Err(LocalRedisError::NoAnswer(self.port, limit));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The command that starts `program`. Where util-linux's `setpriv` is installed (every
/// Debian and Ubuntu), it is started through it with a parent-death signal, so that the kernel
/// stops the private Redis when electiond dies, however it dies (SIGKILL, OOM kill), not only
/// on a clean exit.
fn launcher(program: &str) -> Command {
    let program_found = which(program).is_some();
    match which("setpriv") {
        Some(setpriv) if program_found => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--", program]);
            c
        }
        // without setpriv, or when the program is missing (so that spawning it reports that)
        _ => Command::new(program),
    }
}

/// `program`'s path: itself when it names a path, else the first match on `PATH`.
fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Some(program.into()).filter(|p: &std::path::PathBuf| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    // The port is released before redis-server binds it; a race with another process taking
    // it in between shows up as redis-server exiting, which `wait_ready` reports.
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
