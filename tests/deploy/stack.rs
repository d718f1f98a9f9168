//! A docker-compose project under test: a Docker engine (started when none runs), the images
//! the files name (stand-ins built where no registry can be reached), and `docker-compose` run
//! on the repository's own files. The project is always taken down with its volumes, also when
//! a test fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure a Docker engine answers: starts `dockerd` in the background when none does.
pub fn engine() {
    if engine_answers() {
        return;
    }
    let log = std::env::temp_dir().join("electiond-deploy-dockerd.log");
    let log = std::fs::File::create(&log).expect("dockerd log file");
    eprintln!("no Docker engine answers: starting dockerd");
    // the engine is meant to outlive this test, as it would on any machine running Docker
    #[allow(clippy::zombie_processes)]
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("dockerd is installed (apt-get install docker.io)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !engine_answers() {
        assert!(Instant::now() < deadline, "dockerd did not answer in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Builds the stand-ins for public images the engine lacks (see the script).
pub fn images() {
    run(Command::new("bash").arg(format!("{ROOT}/tests/deploy/standin-images.sh")));
}

/// `nginx -t` on the balancer's configuration, in the balancer's image.
pub fn nginx_config_test() -> String {
    let conf = format!("{ROOT}/deploy/nginx.conf:/etc/nginx/nginx.conf:ro");
    let out =
        run(Command::new("docker").args(["run", "--rm", "-v", &conf, &lb_image(), "nginx", "-t"]));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The balancer's image, as docker-compose.yml names it.
fn lb_image() -> String {
    let text = std::fs::read_to_string(format!("{ROOT}/docker-compose.yml")).expect("compose");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    yaml["services"]["lb"]["image"]
        .as_str()
        .expect("lb image")
        .to_owned()
}

/// A running docker-compose project, taken down (`down -v`) when dropped.
pub struct Stack {
    project: String,
    files: Vec<PathBuf>,
    /// The balancer's published address, on 127.0.0.1.
    pub addr: SocketAddr,
    /// The balancer's published console address, on 127.0.0.1.
    pub console: SocketAddr,
}

impl Stack {
    /// `docker-compose up -d --build` with `files`, publishing the balancer on a free
    /// loopback port.
    pub fn up(project: &str, files: &[&str]) -> Self {
        let port = crate::harness::free_port();
        let stack = Stack {
            project: project.to_owned(),
            files: files.iter().map(|f| Path::new(ROOT).join(f)).collect(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            console: SocketAddr::from(([127, 0, 0, 1], crate::harness::free_port())),
        };
        // a project left by an earlier, killed run would hold the names
        stack.down();
        let started = Instant::now();
        stack.compose(&["up", "-d", "--build"]);
        eprintln!("{project}: up in {:.1?}", started.elapsed());
        stack
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(ROOT)
            .env("ELECTIOND_PUBLISH", self.addr.to_string())
            .env("ELECTIOND_CONSOLE_PUBLISH", self.console.to_string())
            .arg("-p")
            .arg(&self.project);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd
    }

    /// Runs `docker-compose ARGS` on this project; panics when it fails.
    pub fn compose(&self, args: &[&str]) -> String {
        let out = run(self.command().args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker-compose exec -T SERVICE CMD...`.
    pub fn exec(&self, service: &str, cmd: &[&str]) -> String {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(cmd);
        self.compose(&args)
    }

    /// The value of counter `name` (summed over its labels) in a replica's `/metrics`.
    pub fn metric(&self, service: &str, name: &str) -> f64 {
        let text = self.exec(service, &["curl", "-fsS", "http://127.0.0.1:9090/metrics"]);
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// What the services logged (all of them when `services` is empty).
    pub fn logs(&self, services: &[&str]) -> String {
        let out = self
            .command()
            .args(["logs", "--no-color"])
            .args(services)
            .output()
            .expect("docker-compose logs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn down(&self) {
        let _ = self
            .command()
            .args(["down", "-v", "--remove-orphans", "-t", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits until the balancer answers a health check with SERVING; returns how long that
    /// took.
    pub async fn serving(&self, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if health(self.addr).await == Some(ServingStatus::Serving) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{}: not SERVING through the balancer within {within:?}",
                self.project
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // what a reader of a failed run needs most: the replicas' and Redis's own lines,
            // not the balancer's access log
            let logs = self.logs(&[]);
            let own: Vec<&str> = logs
                .lines()
                .filter(|l| !(l.starts_with("lb") && l.contains("\" 200 ")))
                .collect();
            eprintln!("{}", tail(&own, 120));
        }
        self.down();
    }
}

fn tail(lines: &[&str], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The health status the balancer passes on, or `None` when the call fails.
pub async fn health(addr: SocketAddr) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .status;
    ServingStatus::try_from(status).ok()
}
