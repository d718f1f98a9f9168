//! Liveness: only a client's own calls keep it a candidate. An open Events stream does not (a
//! frozen process keeps its TCP connection open), and the server closes connections whose
//! peer stops answering HTTP/2 pings, freeing their streams.
//!
//! The frozen client is a real separate process: `curl` speaking gRPC over HTTP/2, holding an
//! Events stream, stopped with SIGSTOP. The balancer is a real nginx.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::process::{Child, Command};

use crate::harness::*;
use electiond::proto::atomix::primitive::election as epb;

/// A separate process holding one Events stream open as `client_id`; killed when dropped.
struct HeldStream {
    child: Child,
    dir: PathBuf,
    out: PathBuf,
}

impl HeldStream {
    /// Opens the stream through `addr` and returns once its handshake has arrived.
    async fn open(addr: SocketAddr, election: &str, client_id: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "electiond-held-{}-{client_id}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let request = epb::EventsRequest {
            header: header(election, client_id),
            input: Some(epb::EventsInput {}),
        }
        .encode_to_vec();
        // one gRPC message: uncompressed, its length, the bytes
        let mut body = vec![0u8];
        body.extend_from_slice(&(request.len() as u32).to_be_bytes());
        body.extend_from_slice(&request);
        let body_path = dir.join("request");
        std::fs::write(&body_path, body).expect("request file");
        let out = dir.join("response");
        let child = Command::new("curl")
            .args([
                "-sS",
                "--no-buffer",
                "--http2-prior-knowledge",
                "-X",
                "POST",
            ])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("--data-binary")
            .arg(format!("@{}", body_path.display()))
            .arg("-o")
            .arg(&out)
            .arg(format!(
                "http://{addr}/atomix.primitive.election.LeaderElectionService/Events"
            ))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("curl is installed");
        let held = HeldStream { child, dir, out };
        // the handshake is a non-empty message
        wait_for(|| async { std::fs::metadata(&held.out).is_ok_and(|m| m.len() > 5) }).await;
        held
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("curl runs").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Freezes the process: its kernel keeps the connection, nothing answers on it.
    fn freeze(&self) {
        self.signal("-STOP");
    }
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx balancing gRPC to `upstreams`, on a free loopback port; stopped when dropped.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    pub(crate) async fn start(upstreams: &[SocketAddr]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("electiond-nginx-{port}"));
        std::fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        let servers: String = upstreams.iter().map(|a| format!("server {a};\n")).collect();
        // `listen ... http2`: what nginx before 1.25 (Debian bookworm's 1.22) takes
        let conf = format!(
            "daemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\n\
             http {{\n access_log off;\n\
             client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
             upstream replicas {{\n{servers}}}\n\
             server {{\n listen 127.0.0.1:{port} http2;\n\
             location / {{ grpc_pass grpc://replicas; grpc_read_timeout 1h; }}\n}}\n}}\n",
            dir = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| std::process::Command::new(b).arg("-v").output().is_ok())
            .expect("nginx is installed (apt-get install -y nginx)");
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        wait_for_port(port).await;
        Nginx {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so that the master takes its workers with it (SIGKILL would orphan them)
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The worker enters with its own call, holds an Events stream as itself from another
/// process through `via`, and that process freezes. Returns how long after the Enter was
/// acknowledged the worker stopped being leader.
async fn frozen_leader_lasts(replica: &Replica, via: SocketAddr, election: &str) -> Duration {
    let mut worker = replica.client(election, "worker").await;
    let mut observer = replica.client(election, "").await;
    worker.enter().await.expect("Enter");
    let entered = Instant::now();
    let held = HeldStream::open(via, election, "worker").await;
    held.freeze();
    replica
        .client(election, "standby")
        .await
        .enter()
        .await
        .expect("standby enters");
    let standby = tokio::spawn({
        // the standby stays alive the only way a client can: by calling
        let mut c = replica.client(election, "standby").await;
        async move {
            loop {
                let _ = c.get_term().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let lasted = loop {
        let term = observer.get_term().await.expect("GetTerm");
        if term.leader != "worker" {
            assert_eq!(term.brief(), (2, "standby", vec!["standby"]));
            break entered.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "a frozen client with an open stream is still leader after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    standby.abort();
    drop(held);
    lasted
}

#[tokio::test]
async fn a_frozen_client_holding_a_stream_loses_leadership_within_ttl_plus_one_second() {
    const TTL: u64 = 1500;
    let redis = RedisServer::start().await;
    let replica = Replica::start(with_ttl(&redis, &prefix("frozen"), TTL)).await;

    let direct = frozen_leader_lasts(&replica, replica.addr, "direct").await;
    let nginx = Nginx::start(&[replica.addr]).await;
    let balanced = frozen_leader_lasts(&replica, nginx.addr, "balanced").await;
    for (how, lasted) in [("directly", direct), ("through nginx", balanced)] {
        eprintln!("streaming {how}, the frozen leader lasted {lasted:?} (TTL {TTL} ms)");
        assert!(
            lasted <= Duration::from_millis(TTL + 1000),
            "streaming {how}, the frozen leader lasted {lasted:?}, beyond TTL + 1 s"
        );
        assert!(
            lasted >= Duration::from_millis(TTL - 200),
            "removed before its lease ran out: {lasted:?}"
        );
    }
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_closed_and_its_streams_freed() {
    const INTERVAL: u64 = 300;
    const TIMEOUT: u64 = 300;
    let redis = RedisServer::start().await;
    let port = free_port();
    let mut s = settings(&redis, &prefix("pings"));
    s.metrics_addr = Some(format!("127.0.0.1:{port}"));
    s.keepalive_interval_ms = INTERVAL;
    s.keepalive_timeout_ms = TIMEOUT;
    let replica = Replica::start(s).await;
    wait_for_port(port).await;
    let open = || async { value(&scrape(port).await, "electiond_events_streams_open") };

    let live = HeldStream::open(replica.addr, "p", "live").await;
    let frozen_a = HeldStream::open(replica.addr, "p", "frozen-a").await;
    let frozen_b = HeldStream::open(replica.addr, "p", "frozen-b").await;
    assert_eq!(open().await, 3.0);
    frozen_a.freeze();
    frozen_b.freeze();
    let frozen_at = Instant::now();
    wait_for(|| async { open().await == 1.0 }).await;
    let closed_after = frozen_at.elapsed();
    eprintln!("frozen peers' streams freed {closed_after:?} after they froze ({INTERVAL} ms pings, {TIMEOUT} ms timeout)");
    // a ping goes out within one interval of the last frame read, and the connection is
    // closed one timeout later; a second of slack for a loaded machine
    assert!(
        closed_after <= Duration::from_millis(INTERVAL + TIMEOUT + 1000),
        "frozen peers' streams were freed only after {closed_after:?}"
    );
    // the live client answers the pings and keeps its stream through many intervals
    tokio::time::sleep(Duration::from_millis(5 * (INTERVAL + TIMEOUT))).await;
    assert_eq!(open().await, 1.0, "the live client's stream was closed");
    drop(live);
    wait_for(|| async { open().await == 0.0 }).await;
}
