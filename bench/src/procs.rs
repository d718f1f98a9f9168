//! Processes the benchmark starts and inspects: a private redis-server, `electiond` replicas,
//! their resident memory, and which Redis connections belong to which replica.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A process killed when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

pub async fn start_redis() -> Result<(Proc, String), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--maxclients", "20000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let url = format!("redis://127.0.0.1:{port}");
    wait_ping(&url).await?;
    Ok((Proc { child }, url))
}

/// The `electiond` binary next to this one (both are built by `cargo build`).
pub fn default_electiond() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("electiond")
}

/// A Redis Cluster of `masters` masters on free ports (one, or three and more, joined with
/// `redis-cli --cluster create`): the processes, the seed list for `ELECTION_REDIS_CLUSTER_NODES`, and the directory
/// holding their state (removed by the caller).
pub async fn start_cluster(masters: usize) -> Result<(Vec<Proc>, String, PathBuf), String> {
    let dir = std::env::temp_dir().join(format!("election-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..masters {
        let port = free_port().map_err(|e| e.to_string())?;
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--maxclients", "20000"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        procs.push(Proc { child });
        ports.push(port);
    }
    for port in &ports {
        wait_ping(&format!("redis://127.0.0.1:{port}")).await?;
    }
    if masters == 1 {
        // redis-cli creates clusters of three masters or more; one node takes every slot
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", ports[0]))
            .map_err(|e| e.to_string())?;
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .exec_async(&mut c)
            .await
            .map_err(|e| format!("CLUSTER ADDSLOTSRANGE: {e}"))?;
    } else {
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    'settle: loop {
        if Instant::now() > deadline {
            return Err("the cluster did not settle".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for port in &ports {
            let url = format!("redis://127.0.0.1:{port}");
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                continue 'settle;
            };
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            if !info.contains("cluster_state:ok") {
                continue 'settle;
            }
        }
        break;
    }
    let seeds = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok((procs, seeds, dir))
}

async fn wait_ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where a replica finds Redis: the variable and its value.
pub type RedisVar<'a> = (&'a str, &'a str);

pub async fn start_replica(
    bin: &Path,
    redis: RedisVar<'_>,
    prefix: &str,
) -> Result<(Proc, SocketAddr), String> {
    start_replica_with(bin, &[redis], prefix).await
}

/// [`start_replica`] with more settings: `env` names the Redis and may set anything else.
pub async fn start_replica_with(
    bin: &Path,
    env: &[(&str, &str)],
    prefix: &str,
) -> Result<(Proc, SocketAddr), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(bin)
        .env("ELECTION_LISTEN_ADDR", addr.to_string())
        .env("ELECTION_KEY_PREFIX", prefix)
        .env("ELECTION_LOG_LEVEL", "warn")
        .env("ELECTION_METRICS_ADDR", "127.0.0.1:0")
        .env("ELECTION_CONSOLE_ADDR", "")
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    wait_for_port(addr).await?;
    Ok((Proc { child }, addr))
}

/// Waits until something accepts connections on `addr`, for at most 10 s.
pub async fn wait_for_port(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {addr}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Resident memory of a process, in KiB (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Local TCP ports of a process's sockets (Linux: its fds' socket inodes matched against
/// /proc/net/tcp).
fn local_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in dir.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                if let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

/// Redis connections held by each of `pids`, from `CLIENT LIST`.
pub async fn redis_connections(redis_url: &str, pids: &[u32]) -> HashMap<u32, usize> {
    let mut out = HashMap::new();
    let Ok(client) = redis::Client::open(redis_url) else {
        return out;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return out;
    };
    let Ok(list) = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async::<String>(&mut conn)
        .await
    else {
        return out;
    };
    let client_ports: Vec<u16> = list
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .filter_map(|a| a.rsplit(':').next()?.parse().ok())
        .collect();
    for &pid in pids {
        let mine = local_ports(pid);
        out.insert(
            pid,
            client_ports.iter().filter(|p| mine.contains(p)).count(),
        );
    }
    out
}
