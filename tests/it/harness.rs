//! Test harness: real `redis-server` processes on free ports, real replicas served over real
//! gRPC on `127.0.0.1:0`, and a small client that speaks the wire API.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use electiond::config::Settings;
use electiond::proto::atomix::primitive as pb;
use electiond::proto::atomix::primitive::election as epb;
use electiond::proto::atomix::primitive::election::leader_election_service_client::LeaderElectionServiceClient;
use electiond::proto::atomix::primitive::primitive_service_client::PrimitiveServiceClient;
use electiond::proto::session as spb;
use electiond::proto::session::session_service_client::SessionServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A `redis-server` owned by one test; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
    extra: Vec<String>,
    /// `requirepass`, when the server has one.
    password: Option<String>,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    /// A Redis that keeps nothing on disk.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A Redis with an append-only file (fsync always), so a restart keeps its data.
    pub async fn start_persistent() -> Self {
        Self::start_with(true).await
    }

    /// A Redis replicating `primary`.
    pub async fn start_replica_of(primary: &RedisServer) -> Self {
        let mut s = Self::new(
            false,
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port.to_string(),
            ],
        );
        s.spawn().await;
        s
    }

    /// A Redis with extra command-line arguments (a plain port stays open for inspection).
    pub async fn start_with_args(extra: Vec<String>) -> Self {
        let mut s = Self::new(false, extra);
        s.spawn().await;
        s
    }

    /// [`Self::start_persistent`] with extra command-line arguments.
    pub async fn start_persistent_with_args(extra: Vec<String>) -> Self {
        let mut s = Self::new(true, extra);
        s.spawn().await;
        s
    }

    async fn start_with(persistent: bool) -> Self {
        let mut server = Self::new(persistent, Vec::new());
        server.spawn().await;
        server
    }

    fn new(persistent: bool, extra: Vec<String>) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("electiond-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            child: None,
            port,
            dir,
            persistent,
            extra,
            password: None,
        }
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""]);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        match client.get_multiplexed_async_connection().await {
            Ok(mut c) => redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    /// The server's process id, while it runs (electionctl's tests, which share this
    /// harness, pause Redis with it).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (no clean shutdown, like a crash).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port (with its data when persistent).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// A plain connection for inspecting what the service stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }
}

/// A Redis Cluster of `n` masters (no replicas), each a `redis-server --cluster-enabled yes`
/// on a free port, joined with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// With [`Self::start_secure`]: each node's TLS port, in `nodes` order.
    pub tls_ports: Vec<u16>,
}

/// The arguments that make a `redis-server` a Cluster node, failed over after 2 s.
pub const CLUSTER_NODE: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

/// The password of [`RedisCluster::start_secure`]'s nodes.
pub const CLUSTER_PASSWORD: &str = "cluster-pw";

impl RedisCluster {
    pub async fn start(masters: usize) -> Self {
        Self::start_with(masters, 0, None).await
    }

    /// `masters` masters with one replica each: `nodes` holds the masters first (as
    /// `redis-cli` assigns them), then the replicas.
    pub async fn start_with_replicas(masters: usize) -> Self {
        Self::start_with(masters, 1, None).await
    }

    /// A cluster whose nodes require [`CLUSTER_PASSWORD`] and also serve TLS (with the
    /// certificate and key in `certs`, `cert.pem` and `key.pem`), among themselves too. Clients
    /// connecting over TLS are told the TLS ports; the plain ports stay open for inspection.
    pub async fn start_secure(masters: usize, certs: &std::path::Path) -> Self {
        Self::start_with(masters, 0, Some(certs)).await
    }

    async fn start_with(masters: usize, replicas: usize, certs: Option<&std::path::Path>) -> Self {
        let mut nodes = Vec::new();
        let mut tls_ports = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let mut args: Vec<String> = CLUSTER_NODE.map(str::to_owned).to_vec();
            if let Some(certs) = certs {
                let tls_port = free_port();
                tls_ports.push(tls_port);
                args.extend(tls_args(certs, tls_port));
                args.extend(
                    [
                        "--tls-cluster",
                        "yes",
                        "--tls-replication",
                        "yes",
                        "--requirepass",
                        CLUSTER_PASSWORD,
                        "--masterauth",
                        CLUSTER_PASSWORD,
                    ]
                    .map(str::to_owned),
                );
            }
            let mut n = RedisServer::new(false, args);
            if certs.is_some() {
                n.password = Some(CLUSTER_PASSWORD.to_owned());
            }
            n.spawn().await;
            nodes.push(n);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let password = certs.map(|_| CLUSTER_PASSWORD);
        create_cluster(&addresses, replicas, password).await;
        let cluster = Self { nodes, tls_ports };
        // every node must agree that all slots are served before the test starts
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = true;
            for n in &cluster.nodes {
                let mut c = n.connection().await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut c)
                    .await
                    .expect("cluster info");
                ok &= info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384");
                let known: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut c)
                    .await
                    .expect("cluster nodes");
                ok &= known.lines().filter(|l| l.contains("master")).count() == masters;
                ok &= known.lines().filter(|l| l.contains("slave")).count() == masters * replicas;
                let role: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
                    .expect("info replication");
                if role.contains("role:slave") {
                    ok &= role.contains("master_link_status:up");
                }
            }
            if ok {
                return cluster;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The seed list for `ELECTION_REDIS_CLUSTER_NODES`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node id of each server, in `nodes` order.
    pub async fn node_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for n in &self.nodes {
            let id: String = redis::cmd("CLUSTER")
                .arg("MYID")
                .query_async(&mut n.connection().await)
                .await
                .expect("cluster myid");
            ids.push(id);
        }
        ids
    }

    /// The id of the first leader of `election` (under `prefix`) on this cluster: each master
    /// hands out ids from its failover epoch on (`lua/prelude.lua`, `next_id`), so on a
    /// Cluster ids start at the epoch times a billion, plus one.
    pub async fn first_id(&self, prefix: &str, election: &str) -> u64 {
        let slot = slot_of(&self.nodes[0], &term_key(prefix, election)).await;
        let owner = &self.nodes[self.owner_of(slot).await];
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut owner.connection().await)
            .await
            .expect("cluster info");
        let epoch: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("cluster_my_epoch:"))
            .and_then(|e| e.trim().parse().ok())
            .expect("cluster_my_epoch");
        epoch * 1_000_000_000 + 1
    }

    /// Which of `nodes` owns `slot` now.
    pub async fn owner_of(&self, slot: u16) -> usize {
        let ids = self.node_ids().await;
        let mut c = self.nodes[0].connection().await;
        let shards: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await
            .expect("cluster slots");
        if let Some(master) = slot_master(&shards, slot) {
            if let Some(redis::Value::BulkString(id)) = master.get(2) {
                let id = String::from_utf8_lossy(id);
                if let Some(i) = ids.iter().position(|x| *x == id) {
                    return i;
                }
            }
        }
        panic!("no node owns slot {slot}");
    }
}

/// The master of `slot` in a `CLUSTER SLOTS` reply: its address, port and node id.
pub fn slot_master(ranges: &[redis::Value], slot: u16) -> Option<&[redis::Value]> {
    for range in ranges {
        let redis::Value::Array(items) = range else {
            continue;
        };
        let (Some(redis::Value::Int(lo)), Some(redis::Value::Int(hi))) =
            (items.first(), items.get(1))
        else {
            continue;
        };
        if (*lo..=*hi).contains(&i64::from(slot)) {
            if let Some(redis::Value::Array(master)) = items.get(2) {
                return Some(master);
            }
        }
    }
    None
}

impl RedisCluster {
    /// Moves `slot` from node `from` to node `to` the way `redis-cli --cluster reshard` does:
    /// mark it importing and migrating, `MIGRATE` its keys a few at a time (pausing between
    /// batches, so that traffic meets the slot half-moved), then give it to `to` everywhere.
    pub async fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let ids = self.node_ids().await;
        let mut src = self.nodes[from].connection().await;
        let mut dst = self.nodes[to].connection().await;
        let setslot = |state: &str, id: &str| {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(state).arg(id);
            c
        };
        let _: () = setslot("IMPORTING", &ids[from])
            .query_async(&mut dst)
            .await
            .expect("importing");
        let _: () = setslot("MIGRATING", &ids[to])
            .query_async(&mut src)
            .await
            .expect("migrating");
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1)
                .query_async(&mut src)
                .await
                .expect("getkeysinslot");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut src)
                .await
                .expect("migrate");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // the new owner first, then the old one, then everyone else (as redis-cli does)
        let mut order = vec![to, from];
        order.extend((0..self.nodes.len()).filter(|i| *i != to && *i != from));
        for i in order {
            let r: redis::RedisResult<()> = setslot("NODE", &ids[to])
                .query_async(&mut self.nodes[i].connection().await)
                .await;
            if let Err(e) = r {
                panic!("CLUSTER SETSLOT {slot} NODE on node {i} (from {from}, to {to}): {e}");
            }
        }
    }
}

/// Joins the Redis at `addresses` (`host:port`) into a Cluster with `replicas` replicas per
/// master, as `redis-cli --cluster create` does (it picks the masters).
pub async fn create_cluster(addresses: &[String], replicas: usize, password: Option<&str>) {
    let mut create = Command::new("redis-cli");
    if let Some(password) = password {
        create.args(["-a", password, "--no-auth-warning"]);
    }
    let out = create
        .args(["--cluster", "create"])
        .args(addresses)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .await
        .expect("redis-cli is on PATH");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A certificate authority for the tests, issuing server and client certificates.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate with common name `cn` and the alternative names `sans` (`URI=...` or a
    /// DNS name), for a server or a client: (certificate, key), in PEM.
    pub fn issue(&self, cn: &str, sans: &[&str], server: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for san in sans {
            params
                .subject_alt_names
                .push(match san.strip_prefix("URI=") {
                    Some(uri) => rcgen::SanType::URI(uri.try_into().expect("an IA5 URI")),
                    None => rcgen::SanType::DnsName((*san).try_into().expect("a DNS name")),
                });
        }
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// A fresh directory holding a self-signed certificate for `localhost` and `127.0.0.1`, as
/// `cert.pem` and `key.pem`.
pub fn self_signed_cert(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("electiond-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("cert dir");
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    std::fs::write(dir.join("cert.pem"), key.cert.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), key.signing_key.serialize_pem()).expect("key.pem");
    dir
}

/// The hash slot of a key (CRC16 of its hash tag, as Redis Cluster computes it).
pub async fn slot_of(node: &RedisServer, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut node.connection().await)
        .await
        .expect("cluster keyslot")
}

/// Settings for a replica on `cluster`: test defaults plus Cluster mode.
pub fn cluster_settings(cluster: &RedisCluster, prefix: &str) -> Settings {
    let mut s = settings(&cluster.nodes[0], prefix);
    s.redis_url = None;
    s.redis_cluster_nodes = Some(cluster.seeds());
    s
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `electiond` replica served on a free port.
pub struct Replica {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), electiond::RunError>>>,
}

/// Settings for a replica on `redis`: test defaults plus whatever `tweak` changes.
pub fn settings(redis: &RedisServer, prefix: &str) -> Settings {
    let mut s = bare_settings(prefix);
    s.redis_url = Some(redis.url());
    s.redis_timeout_ms = 500;
    s.lease_ttl_ms = 0;
    s
}

/// [`settings`] with leases of `ttl_ms`.
pub fn with_ttl(redis: &RedisServer, prefix: &str, ttl_ms: u64) -> Settings {
    let mut s = settings(redis, prefix);
    s.lease_ttl_ms = ttl_ms;
    s
}

/// The defaults, on a free port, without metrics, under `prefix`; Redis left to the test.
pub fn bare_settings(prefix: &str) -> Settings {
    let mut s = Settings::defaults();
    s.key_prefix = prefix.to_owned();
    s.listen_addr = "127.0.0.1:0".parse().expect("addr");
    s.metrics_addr = None;
    s.console_addr = None;
    s
}

/// Waits until something accepts TCP connections on the local `port`.
pub async fn wait_for_port(port: u16) {
    wait_for(|| async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

/// `redis-server` arguments serving TLS on `tls_port` with the certificate in `certs` (see
/// [`self_signed_cert`]), clients not asked for certificates.
pub fn tls_args(certs: &std::path::Path, tls_port: u16) -> Vec<String> {
    let cert = certs.join("cert.pem").display().to_string();
    let key = certs.join("key.pem").display().to_string();
    [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Changes `key`'s stored term behind the service's back, publishing nothing (as if the
/// event were lost): adds candidate `c2` after `c1` (and as a member, with no lease yet) and
/// raises the revision by a second's worth.
pub async fn silent_write(conn: &mut redis::aio::MultiplexedConnection, key: &str) {
    let raw: String = redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("stored term");
    let (head, list) = raw.split_once('\n').expect("a header line");
    assert_eq!(list, "c1\n", "{raw}");
    let mut fields: Vec<u64> = head
        .split(' ')
        .map(|f| f.parse().expect("a number"))
        .collect();
    fields[1] += 1_000_000;
    let fields: Vec<String> = fields.iter().map(u64::to_string).collect();
    let changed = format!("{}\nc1\nc2\n", fields.join(" "));
    let members = key.strip_suffix(":term").expect("a term key").to_owned() + ":leases";
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(key)
        .arg(&changed)
        .ignore()
        .cmd("ZADD")
        .arg(&members)
        .arg("NX")
        .arg(0)
        .arg("c2")
        .ignore()
        .query_async(conn)
        .await
        .expect("silent write");
}

impl Replica {
    pub async fn start(settings: Settings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(electiond::run(settings, listener, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the replica and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), electiond::RunError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("run task did not panic"),
            None => Ok(()),
        }
    }

    pub async fn client(&self, election: &str, client_id: &str) -> Client {
        Client::connect(self.addr, election, client_id).await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A gRPC client acting as one `client_id` on one election.
#[derive(Clone)]
pub struct Client {
    pub election: String,
    pub client_id: String,
    pub svc: LeaderElectionServiceClient<Channel>,
    pub prim: PrimitiveServiceClient<Channel>,
    pub sess: SessionServiceClient<Channel>,
    /// Sent as `authorization: Bearer <token>` with every call, when set.
    pub token: Option<String>,
}

/// The parts of a term the tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct T {
    pub id: u64,
    pub leader: String,
    pub candidates: Vec<String>,
    pub has_timestamp: bool,
    pub timestamp: Option<(i64, i32)>,
}

impl T {
    pub fn from(term: Option<epb::Term>) -> Self {
        let term = term.expect("response carries a term");
        let timestamp = term.timestamp.map(|t| (t.seconds, t.nanos));
        T {
            id: term.id.map_or(0, |e| e.value),
            leader: term.leader,
            candidates: term.candidates,
            has_timestamp: timestamp.is_some(),
            timestamp,
        }
    }

    /// Just (id, leader, candidates), for compact assertions.
    pub fn brief(&self) -> (u64, &str, Vec<&str>) {
        (
            self.id,
            self.leader.as_str(),
            self.candidates.iter().map(String::as_str).collect(),
        )
    }
}

pub fn header(election: &str, client_id: &str) -> Option<pb::RequestHeader> {
    Some(pb::RequestHeader {
        client_id: client_id.to_owned(),
        primitive_id: Some(pb::PrimitiveId {
            r#type: "Election".to_owned(),
            name: election.to_owned(),
        }),
        request_id: 0,
        request_type: 0,
    })
}

/// A gRPC channel to a replica.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to replica")
}

impl Client {
    pub async fn connect(addr: SocketAddr, election: &str, client_id: &str) -> Self {
        Self::on(channel(addr).await, election, client_id)
    }

    /// A client on an existing channel.
    pub fn on(channel: Channel, election: &str, client_id: &str) -> Self {
        Self {
            election: election.to_owned(),
            client_id: client_id.to_owned(),
            svc: LeaderElectionServiceClient::new(channel.clone()),
            prim: PrimitiveServiceClient::new(channel.clone()),
            sess: SessionServiceClient::new(channel),
            token: None,
        }
    }

    /// The same client, sending `token` with every call.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// `message` as a request, with the token when there is one.
    fn req<M>(&self, message: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = &self.token {
            let value = format!("Bearer {t}")
                .parse()
                .expect("a token fit for a header");
            r.metadata_mut().insert("authorization", value);
        }
        r
    }

    /// The same connection, acting as another client or on another election.
    pub fn acting_as(&self, election: &str, client_id: &str) -> Self {
        Self {
            election: election.to_owned(),
            client_id: client_id.to_owned(),
            ..self.clone()
        }
    }

    fn h(&self) -> Option<pb::RequestHeader> {
        header(&self.election, &self.client_id)
    }

    pub async fn enter(&mut self) -> Result<T, Status> {
        let r = epb::EnterRequest {
            header: self.h(),
            input: Some(epb::EnterInput {}),
        };
        let out = self.svc.enter(self.req(r)).await?.into_inner().output;
        Ok(T::from(out.and_then(|o| o.term)))
    }

    pub async fn withdraw(&mut self) -> Result<T, Status> {
        let r = epb::WithdrawRequest {
            header: self.h(),
            input: Some(epb::WithdrawInput {}),
        };
        let out = self.svc.withdraw(self.req(r)).await?.into_inner().output;
        Ok(T::from(out.and_then(|o| o.term)))
    }

    pub async fn anoint(&mut self, candidate: &str) -> Result<T, Status> {
        let r = epb::AnointRequest {
            header: self.h(),
            input: Some(epb::AnointInput {
                candidate_id: candidate.to_owned(),
            }),
        };
        let out = self.svc.anoint(self.req(r)).await?.into_inner().output;
        Ok(T::from(out.and_then(|o| o.term)))
    }

    pub async fn promote(&mut self, candidate: &str) -> Result<T, Status> {
        let r = epb::PromoteRequest {
            header: self.h(),
            input: Some(epb::PromoteInput {
                candidate_id: candidate.to_owned(),
            }),
        };
        let out = self.svc.promote(self.req(r)).await?.into_inner().output;
        Ok(T::from(out.and_then(|o| o.term)))
    }

    pub async fn evict(&mut self, candidate: &str) -> Result<T, Status> {
        let r = epb::EvictRequest {
            header: self.h(),
            input: Some(epb::EvictInput {
                candidate_id: candidate.to_owned(),
            }),
        };
        let out = self.svc.evict(self.req(r)).await?.into_inner().output;
        Ok(T::from(out.and_then(|o| o.term)))
    }

    pub async fn get_term(&mut self) -> Result<T, Status> {
        let r = epb::GetTermRequest {
            header: self.h(),
            input: Some(epb::GetTermInput {}),
        };
        let out = self.svc.get_term(self.req(r)).await?.into_inner().output;
        Ok(T::from(out.and_then(|o| o.term)))
    }

    pub async fn snapshot(&mut self) -> Result<epb::Snapshot, Status> {
        let r = epb::SnapshotRequest { header: self.h() };
        Ok(self
            .svc
            .snapshot(self.req(r))
            .await?
            .into_inner()
            .snapshot
            .expect("snapshot in response"))
    }

    pub async fn restore(
        &mut self,
        id: u64,
        leader: &str,
        candidates: &[&str],
    ) -> Result<(), Status> {
        let term = epb::Term {
            id: Some(pb::meta::Epoch { value: id }),
            timestamp: None,
            leader: leader.to_owned(),
            candidates: candidates.iter().map(|s| s.to_string()).collect(),
        };
        let r = epb::RestoreRequest {
            header: self.h(),
            snapshot: Some(epb::Snapshot { term: Some(term) }),
        };
        self.svc.restore(self.req(r)).await?;
        Ok(())
    }

    pub async fn create(&mut self) -> Result<(), Status> {
        self.prim
            .create(self.req(pb::CreateRequest { header: self.h() }))
            .await?;
        Ok(())
    }

    pub async fn close(&mut self) -> Result<(), Status> {
        self.prim
            .close(self.req(pb::CloseRequest { header: self.h() }))
            .await?;
        Ok(())
    }

    /// KeepAlive as this client: (the service's lease TTL in ms, the elections it stands in).
    pub async fn keep_alive(&mut self) -> Result<(u64, u32), Status> {
        let r = spb::KeepAliveRequest {
            client_id: self.client_id.clone(),
        };
        let out = self.sess.keep_alive(self.req(r)).await?.into_inner();
        Ok((out.ttl_ms, out.elections))
    }

    pub async fn delete(&mut self) -> Result<(), Status> {
        self.prim
            .delete(self.req(pb::DeleteRequest { header: self.h() }))
            .await?;
        Ok(())
    }
}

/// Asserts that `r` failed with `code` and returns its message.
#[track_caller]
pub fn expect_code<X: std::fmt::Debug>(r: Result<X, Status>, code: Code) -> String {
    match r {
        Ok(x) => panic!("expected {code:?}, got Ok({x:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s.message().to_owned()
        }
    }
}

/// The service's store on `redis` with no replica around it, and so no sweeper: what expires,
/// a call expired.
pub fn bare_store(
    redis: &RedisServer,
    prefix: &str,
    ttl_ms: u64,
    pool_size: usize,
) -> electiond::store::Store {
    use electiond::store::{Source, Store, StoreConfig};
    Store::new(&StoreConfig {
        source: Source::Url(redis.url()),
        ca_cert: None,
        key_prefix: prefix.to_owned(),
        pool_size,
        timeout: Duration::from_secs(2),
        lease_ttl_ms: ttl_ms,
        max_candidates: 1000,
        max_term_bytes: 1 << 20,
        wait_replicas: 0,
        history_len: 100,
        metrics: Default::default(),
    })
    .expect("store")
}

/// What a call to a [`bare_store`] takes as a name and a client id, checked against the
/// limits the store is given.
const BARE_LIMITS: electiond::election::Limits = electiond::election::Limits {
    max_name_bytes: 100,
    max_id_bytes: 100,
    max_candidates: 1000,
    max_term_bytes: 1 << 20,
};

/// An election name for a [`bare_store`].
pub fn election(name: &str) -> electiond::election::ElectionName {
    electiond::election::ElectionName::parse(name, &BARE_LIMITS).expect("election name")
}

/// A client id for a [`bare_store`].
pub fn member(id: &str) -> electiond::election::MemberId {
    electiond::election::MemberId::parse(id, "client id", &BARE_LIMITS).expect("client id")
}

/// A unique key prefix per test, so tests sharing nothing still never collide.
pub fn prefix(test: &str) -> String {
    format!("t-{test}")
}

/// An open Events stream, past its handshake.
pub struct Watch {
    pub stream: tonic::Streaming<epb::EventsResponse>,
}

impl Client {
    /// Opens an Events stream and checks its handshake.
    pub async fn watch(&mut self) -> Result<Watch, Status> {
        let req = epb::EventsRequest {
            header: self.h(),
            input: Some(epb::EventsInput {}),
        };
        let mut stream = self.svc.events(self.req(req)).await?.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("handshake arrives")?
            .expect("stream open");
        assert_eq!(
            first.header.map(|h| h.response_type),
            Some(pb::ResponseType::ResponseStream as i32),
            "handshake header"
        );
        let out = first.output.expect("handshake output");
        assert_eq!(out.r#type, epb::events_output::Type::None as i32);
        Ok(Watch { stream })
    }
}

impl Watch {
    /// The next CHANGED event's term; panics after a generous deadline.
    pub async fn next(&mut self) -> T {
        match self.try_next(Duration::from_secs(15)).await {
            Some(Ok(t)) => t,
            Some(Err(s)) => panic!("stream failed: {s:?}"),
            None => panic!("no event within 15 s"),
        }
    }

    /// The next event within `wait`: `None` if none came, `Some(Err)` if the stream ended.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Result<T, Status>> {
        let msg = tokio::time::timeout(wait, self.stream.message())
            .await
            .ok()?;
        Some(match msg {
            Ok(Some(m)) => {
                assert_eq!(
                    m.header.map(|h| h.response_type),
                    Some(pb::ResponseType::Response as i32)
                );
                let out = m.output.expect("event output");
                assert_eq!(out.r#type, epb::events_output::Type::Changed as i32);
                Ok(T::from(out.term))
            }
            Ok(None) => Err(Status::cancelled("stream ended")),
            Err(s) => Err(s),
        })
    }

    /// Events until one matches `last` (inclusive).
    pub async fn until_matching(&mut self, last: impl Fn(&T) -> bool) -> Vec<T> {
        let mut seen = Vec::new();
        loop {
            let t = self.next().await;
            let done = last(&t);
            seen.push(t);
            if done {
                return seen;
            }
        }
    }

    /// Events until `last` is seen (inclusive).
    pub async fn until(&mut self, last: &T) -> Vec<T> {
        self.until_matching(|t| t.brief() == last.brief()).await
    }
}

/// Subscribed pub/sub channels on `redis` under `prefix`.
pub async fn subscribed_channels(redis: &RedisServer, prefix: &str) -> usize {
    let mut conn = redis.connection().await;
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("PUBSUB CHANNELS");
    channels.len()
}

/// Client connections open on `redis`, this query's own included.
pub async fn client_count(redis: &RedisServer) -> usize {
    let mut conn = redis.connection().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    list.lines().count()
}

/// The Redis key holding `election`'s term, as the service names it.
pub fn term_key(prefix: &str, election: &str) -> String {
    election_keys(prefix, election).term
}

/// Every Redis name of one election.
pub fn election_keys(prefix: &str, election: &str) -> electiond::store::ElectionKeys {
    let limits = electiond::election::Limits {
        max_name_bytes: usize::MAX,
        max_id_bytes: usize::MAX,
        max_candidates: usize::MAX,
        max_term_bytes: usize::MAX,
    };
    let name = electiond::election::ElectionName::parse(election, &limits).expect("valid name");
    electiond::store::Keys::new(prefix).election(&name)
}

/// Polls `check` until it holds, failing after a generous deadline.
pub async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 15 s");
}

/// (id, leader, candidates) of each term, for comparing whole histories.
pub fn brief(seen: &[T]) -> Vec<(u64, String, Vec<String>)> {
    seen.iter()
        .map(|x| (x.id, x.leader.clone(), x.candidates.clone()))
        .collect()
}

/// The (id, leader, candidates) of a state whose leader is its first candidate.
pub fn state(id: u64, candidates: &[&str]) -> (u64, String, Vec<String>) {
    (
        id,
        candidates.first().map_or("", |c| c).to_owned(),
        candidates.iter().map(|c| c.to_string()).collect(),
    )
}

/// The text a replica serves on `/metrics` at the local `port`.
pub async fn scrape(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of one series (name and labels, exactly) in a `/metrics` text; 0 when absent.
pub fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
