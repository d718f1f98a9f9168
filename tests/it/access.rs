//! Access control: every RPC, for each role, inside and outside its elections, as its own
//! client and as another, through two replicas and through nginx; what a refused call
//! changes (nothing: the term read back, and no event before the next change); the
//! refusals counted in the metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use tonic::Code;

use crate::harness::*;
use crate::liveness::Nginx;

/// The tokens of the table test, and the grants they hold (named after their role).
pub const ADMIN: &str = "admin-secret";
pub const READER: &str = "reader-secret";
pub const WORKER: &str = "worker-secret";
pub const OPERATOR: &str = "operator-secret";

use electiond::access::sha256_hex;

/// An access file in a fresh directory; returns its path.
pub fn access_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("electiond-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("access.toml");
    std::fs::write(&path, text).expect("access file");
    path
}

/// Three roles on `team-a/*`, workers acting as `a-*`, and an operator on everything.
pub fn grants() -> String {
    format!(
        r#"
[[grant]]
name = "admin"
token_sha256 = "{}"
role = "operator"
elections = ["*"]

[[grant]]
name = "team-a-readers"
token_sha256 = "{}"
role = "reader"
elections = ["team-a/*"]

[[grant]]
name = "team-a-workers"
token_sha256 = "{}"
role = "worker"
elections = ["team-a/*"]
clients = ["a-*"]

[[grant]]
name = "team-a-operators"
token_sha256 = "{}"
role = "operator"
elections = ["team-a/*"]
"#,
        sha256_hex(ADMIN),
        sha256_hex(READER),
        sha256_hex(WORKER),
        sha256_hex(OPERATOR)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rpc {
    Enter,
    Withdraw,
    Close,
    /// GetTerm with a client id (a lease refresh)
    GetTermAs,
    GetTerm,
    SnapshotAs,
    Snapshot,
    Events,
    Anoint,
    Promote,
    Evict,
    Restore,
    Create,
    Delete,
    /// SessionService/KeepAlive: names no election, only its client
    KeepAlive,
}

/// Inside its elections: whether a reader, a worker as its own client, a worker as another
/// client, and an operator may make the call. Outside them, nobody may.
const ALLOWED: [(Rpc, [bool; 4]); 15] = [
    (Rpc::Enter, [false, true, false, true]),
    (Rpc::Withdraw, [false, true, false, true]),
    (Rpc::Close, [false, true, false, true]),
    (Rpc::GetTermAs, [false, true, false, true]),
    (Rpc::GetTerm, [true, true, true, true]),
    (Rpc::SnapshotAs, [false, true, false, true]),
    (Rpc::Snapshot, [true, true, true, true]),
    (Rpc::Events, [true, true, true, true]),
    (Rpc::Anoint, [false, false, false, true]),
    (Rpc::Promote, [false, false, false, true]),
    (Rpc::Evict, [false, false, false, true]),
    (Rpc::Restore, [false, false, false, true]),
    (Rpc::Create, [false, false, false, true]),
    (Rpc::Delete, [false, false, false, true]),
    (Rpc::KeepAlive, [false, true, false, true]),
];

impl Rpc {
    /// The operation's name, as metrics and refusals give it.
    fn operation(self) -> &'static str {
        match self {
            Rpc::Enter => "Enter",
            Rpc::Withdraw => "Withdraw",
            Rpc::Close => "Close",
            Rpc::GetTermAs | Rpc::GetTerm => "GetTerm",
            Rpc::SnapshotAs | Rpc::Snapshot => "Snapshot",
            Rpc::Events => "Events",
            Rpc::Anoint => "Anoint",
            Rpc::Promote => "Promote",
            Rpc::Evict => "Evict",
            Rpc::Restore => "Restore",
            Rpc::Create => "Create",
            Rpc::Delete => "Delete",
            Rpc::KeepAlive => "KeepAlive",
        }
    }

    /// The request's client id, as the caller's own client (`a-*`) or another's.
    fn client(self, own: bool) -> &'static str {
        match (self, own) {
            (Rpc::GetTerm | Rpc::Snapshot, _) => "",
            // a newcomer, so that an Enter changes the election when it is allowed
            (Rpc::Enter, true) => "a-3",
            (Rpc::Enter, false) => "b-3",
            (_, true) => "a-2",
            (_, false) => "b-1",
        }
    }

    /// Makes the call; only its status matters.
    async fn call(self, c: &mut Client) -> Result<(), tonic::Status> {
        match self {
            Rpc::Enter => c.enter().await.map(drop),
            Rpc::Withdraw => c.withdraw().await.map(drop),
            Rpc::Close => c.close().await,
            Rpc::GetTermAs | Rpc::GetTerm => c.get_term().await.map(drop),
            Rpc::SnapshotAs | Rpc::Snapshot => c.snapshot().await.map(drop),
            Rpc::Events => c.watch().await.map(drop),
            Rpc::Anoint => c.anoint("a-2").await.map(drop),
            Rpc::Promote => c.promote("a-2").await.map(drop),
            Rpc::Evict => c.evict("a-2").await.map(drop),
            Rpc::Restore => c.restore(50, "a-2", &["a-2", "a-1"]).await,
            Rpc::Create => c.create().await,
            Rpc::Delete => c.delete().await,
            Rpc::KeepAlive => c.keep_alive().await.map(drop),
        }
    }
}

/// Who calls in one case: no token, a token no grant holds, or a role's.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    Stranger,
    Reader,
    Worker,
    Operator,
}

impl Who {
    fn token(self) -> Option<&'static str> {
        match self {
            Who::Nobody => None,
            Who::Stranger => Some("not-a-granted-token"),
            Who::Reader => Some(READER),
            Who::Worker => Some(WORKER),
            Who::Operator => Some(OPERATOR),
        }
    }

    fn grant(self) -> &'static str {
        match self {
            Who::Reader => "team-a-readers",
            Who::Worker => "team-a-workers",
            Who::Operator => "team-a-operators",
            _ => "",
        }
    }

    /// The code the table says the call gets.
    fn expects(self, rpc: Rpc, inside: bool, own: bool) -> Code {
        let allowed = ALLOWED
            .iter()
            .find(|(r, _)| *r == rpc)
            .expect("every rpc")
            .1;
        let may = match self {
            Who::Nobody | Who::Stranger => return Code::Unauthenticated,
            // a KeepAlive names no election, only its client
            _ if !inside && rpc != Rpc::KeepAlive => false,
            Who::Reader => allowed[0],
            Who::Worker if own => allowed[1],
            Who::Worker => allowed[2],
            Who::Operator => allowed[3],
        };
        if may {
            Code::Ok
        } else {
            Code::PermissionDenied
        }
    }
}

/// Runs the whole table through `via` (one address per case, in turn), with an admin reading
/// back on `admin_via`. Returns the refusals per (grant, operation) made through `via[0]`.
async fn table(
    via: &[SocketAddr],
    admin_via: &[SocketAddr],
    tag: &str,
) -> HashMap<(String, &'static str), u64> {
    let mut refused_on_first: HashMap<(String, &'static str), u64> = HashMap::new();
    let mut n = 0;
    for (rpc, _) in ALLOWED {
        for who in [
            Who::Nobody,
            Who::Stranger,
            Who::Reader,
            Who::Worker,
            Who::Operator,
        ] {
            for inside in [true, false] {
                for own in [true, false] {
                    n += 1;
                    let team = if inside { "team-a" } else { "team-b" };
                    let election = format!("{team}/{tag}{n}");
                    let admin = Client::connect(admin_via[n % admin_via.len()], &election, "")
                        .await
                        .with_token(ADMIN);
                    for c in ["a-1", "a-2", "b-1"] {
                        admin.acting_as(&election, c).enter().await.expect("set up");
                    }
                    let mut watcher = admin.clone().watch().await.expect("admin watches");
                    let before = admin.clone().get_term().await.expect("read");
                    let at = via[n % via.len()];
                    let mut c = Client::connect(at, &election, rpc.client(own)).await;
                    if let Some(t) = who.token() {
                        c = c.with_token(t);
                    }
                    let got = rpc.call(&mut c).await;
                    let code = got.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
                    let case = format!("{rpc:?} by {who:?} in {election} as {:?}", rpc.client(own));
                    assert_eq!(code, who.expects(rpc, inside, own), "{case}: {got:?}");
                    if code == Code::Ok {
                        continue;
                    }
                    let message = got.expect_err("refused").message().to_owned();
                    if code == Code::PermissionDenied {
                        // the refusal names the operation, the election (or for a
                        // KeepAlive, the client) and the grant
                        let named = match rpc {
                            Rpc::KeepAlive => rpc.client(own),
                            _ => election.as_str(),
                        };
                        for part in [rpc.operation(), named, who.grant()] {
                            assert!(message.contains(part), "{case}: {message}");
                        }
                        if n % via.len() == 0 {
                            *refused_on_first
                                .entry((who.grant().to_owned(), rpc.operation()))
                                .or_default() += 1;
                        }
                    } else if n % via.len() == 0 {
                        *refused_on_first
                            .entry((String::new(), rpc.operation()))
                            .or_default() += 1;
                    }
                    // nothing changed: the same term, and no event before the next change
                    let after = admin.clone().get_term().await.expect("read");
                    assert_eq!(after, before, "{case}: the refused call changed the term");
                    let marker = admin
                        .acting_as(&election, "marker")
                        .enter()
                        .await
                        .expect("marker");
                    assert_eq!(
                        watcher.next().await.brief(),
                        marker.brief(),
                        "{case}: an event before the marker's"
                    );
                }
            }
        }
    }
    refused_on_first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_each_role_through_two_replicas_and_nginx() {
    let redis = RedisServer::start().await;
    let file = access_file("access-table", &grants());
    let p = prefix("access-table");
    let metrics_port = free_port();
    let mut replicas = Vec::new();
    for i in 0..2 {
        let mut s = settings(&redis, &p);
        s.access_file = Some(file.display().to_string());
        if i == 0 {
            s.metrics_addr = Some(format!("127.0.0.1:{metrics_port}"));
        }
        replicas.push(Replica::start(s).await);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let refused = table(&addrs, &addrs, "r").await;

    // each refusal through the first replica is counted there, by grant and operation
    wait_for_port(metrics_port).await;
    let text = scrape(metrics_port).await;
    assert!(!refused.is_empty());
    for ((grant, op), n) in &refused {
        let series =
            format!("electiond_access_denied_total{{grant=\"{grant}\",operation=\"{op}\"}}");
        assert_eq!(value(&text, &series), *n as f64, "{series}\n{text}");
    }

    // the same through a balancer: the token travels as metadata
    let nginx = Nginx::start(&addrs).await;
    table(&[nginx.addr], &addrs, "n").await;
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

/// A channel to `addr` over TLS (the server's name `localhost`), trusting `ca`, presenting
/// `identity` when given.
async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect_lazy()
}

#[tokio::test]
async fn client_certificates_are_credentials_of_the_grants_that_name_them() {
    let redis = RedisServer::start().await;
    let ca = TestCa::new("electiond test CA");
    let dir = std::env::temp_dir().join(format!("electiond-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (server_cert, server_key) = ca.issue("electiond", &["localhost"], true);
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", server_cert),
        ("key.pem", server_key),
    ] {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let file = access_file(
        "access-mtls",
        &format!(
            r#"
[[grant]]
name = "team-a-worker-certs"
subject = "CN=a-worker-1"
role = "worker"
elections = ["team-a/*"]
clients = ["a-*"]

[[grant]]
name = "mesh-dashboards"
subject = "URI=spiffe://prod/ns/ops/sa/dashboard"
role = "reader"
elections = ["*"]

[[grant]]
name = "admin"
token_sha256 = "{}"
role = "operator"
elections = ["*"]
"#,
            sha256_hex(ADMIN)
        ),
    );
    let mut s = settings(&redis, &prefix("access-mtls"));
    let path = |f: &str| Some(dir.join(f).display().to_string());
    s.tls_cert = path("cert.pem");
    s.tls_key = path("key.pem");
    s.tls_client_ca = path("ca.pem");
    s.access_file = Some(file.display().to_string());
    let replica = Replica::start(s).await;
    let ca_pem = ca.pem();

    // the worker's certificate: it may act as its own clients on its team's elections
    let worker = ca.issue("a-worker-1", &[], false);
    let ch = tls_channel(replica.addr, &ca_pem, Some(&worker)).await;
    let mut c = Client::on(ch.clone(), "team-a/report", "a-worker-1");
    wait_for(|| {
        let mut c = c.clone();
        async move { c.get_term().await.is_ok() }
    })
    .await;
    assert_eq!(c.enter().await.expect("Enter").leader, "a-worker-1");
    let msg = expect_code(
        c.acting_as("team-a/report", "b-worker-1").enter().await,
        Code::PermissionDenied,
    );
    assert!(msg.contains("team-a-worker-certs"), "{msg}");
    expect_code(
        c.acting_as("team-b/report", "a-worker-1").enter().await,
        Code::PermissionDenied,
    );

    // a URI alternative name: the mesh's workload identity
    let dashboard = ca.issue(
        "dashboard",
        &["URI=spiffe://prod/ns/ops/sa/dashboard"],
        false,
    );
    let ch = tls_channel(replica.addr, &ca_pem, Some(&dashboard)).await;
    let mut reader = Client::on(ch, "team-a/report", "");
    assert_eq!(reader.get_term().await.expect("read").leader, "a-worker-1");
    expect_code(
        reader.acting_as("team-a/report", "x").enter().await,
        Code::PermissionDenied,
    );

    // a certificate of the right CA that no grant names
    let stranger = ca.issue("stranger", &[], false);
    let ch = tls_channel(replica.addr, &ca_pem, Some(&stranger)).await;
    let msg = expect_code(
        Client::on(ch, "team-a/report", "").get_term().await,
        Code::Unauthenticated,
    );
    assert!(msg.contains("CN=stranger"), "{msg}");

    // a certificate of another CA, with a name a grant holds: no connection at all
    let other_ca = TestCa::new("another CA");
    let forged = other_ca.issue("a-worker-1", &[], false);
    let ch = tls_channel(replica.addr, &ca_pem, Some(&forged)).await;
    let refused = Client::on(ch, "team-a/report", "a-worker-1").enter().await;
    assert!(refused.is_err(), "{refused:?}");

    // no certificate at all: a token still works, and nothing is the worker's to see
    let ch = tls_channel(replica.addr, &ca_pem, None).await;
    let admin = Client::on(ch.clone(), "team-a/report", "").with_token(ADMIN);
    let t = admin.clone().get_term().await.expect("a token over TLS");
    assert_eq!(t.candidates, vec!["a-worker-1"]);
    expect_code(
        Client::on(ch, "team-a/report", "").get_term().await,
        Code::Unauthenticated,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

/// One `electiond` process on `port`, its access file `file`, logging to `log`.
fn spawn_replica(
    redis: &RedisServer,
    prefix: &str,
    port: u16,
    file: &std::path::Path,
    log: &std::path::Path,
    extra: &[(&str, &str)],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_electiond"));
    cmd.env("ELECTION_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ELECTION_METRICS_ADDR", "")
        .env("ELECTION_CONSOLE_ADDR", "")
        .env("ELECTION_REDIS_URL", redis.url())
        .env("ELECTION_KEY_PREFIX", prefix)
        .env("ELECTION_LEASE_TTL_MS", "0")
        .env("ELECTION_ACCESS_FILE", file);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("electiond starts")
}

/// Replaces `path` with `text` at once (a new file renamed over it), as an operator should.
fn swap_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn worker_grant(name: &str, token: &str, clients: &str) -> String {
    format!(
        "[[grant]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nrole = \"worker\"\n\
         elections = [\"load/*\"]\nclients = [\"{clients}\"]\n",
        sha256_hex(token)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_access_file_applies_to_new_calls_without_failing_any_other() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let redis = RedisServer::start().await;
    let grant = |name: &str| match name {
        "a" => worker_grant("a", "token-a", "a-*"),
        "b" => worker_grant("b", "token-b", "b-*"),
        _ => worker_grant("c", "token-c", "c-*"),
    };
    let file = access_file("access-reload", &(grant("a") + &grant("b")));
    let dir = file.parent().expect("dir").to_path_buf();
    let p = prefix("access-reload");
    let mut procs = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..2 {
        let port = free_port();
        procs.push(spawn_replica(
            &redis,
            &p,
            port,
            &file,
            &dir.join(format!("r{i}.log")),
            &[],
        ));
        wait_for_port(port).await;
        addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let loaded = |what: &'static str| {
        let dir = dir.clone();
        move || {
            (0..2)
                .map(|i| {
                    std::fs::read_to_string(dir.join(format!("r{i}.log")))
                        .unwrap_or_default()
                        .matches(what)
                        .count()
                })
                .collect::<Vec<_>>()
        }
    };
    let loads = loaded("access file loaded");
    let refusals = loaded("access file refused");

    // a stream opened before any reload must outlive them all
    let mut stream = Client::connect(addrs[0], "load/0", "")
        .await
        .with_token("token-a")
        .watch()
        .await
        .expect("watch");

    // load: every token, through both replicas, each call's start time and code recorded
    let stop = Arc::new(AtomicBool::new(false));
    type Seen = Arc<Mutex<Vec<(&'static str, Instant, Code)>>>;
    let seen: Seen = Arc::default();
    let mut load = Vec::new();
    for (k, token) in [
        "token-a", "token-a", "token-a", "token-a", "token-b", "token-b", "token-c", "token-c",
    ]
    .into_iter()
    .enumerate()
    {
        let (stop, seen) = (stop.clone(), seen.clone());
        let base = Client::connect(addrs[k % 2], "load/0", "")
            .await
            .with_token(token);
        let me = format!("{}-{k}", &token[6..]);
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut c = base.acting_as(&format!("load/{}", n % 8), &me);
                let started = Instant::now();
                let r = if n.is_multiple_of(2) {
                    c.enter().await.map(drop)
                } else {
                    c.get_term().await.map(drop)
                };
                let code = r.map_or_else(|s| s.code(), |_| Code::Ok);
                seen.lock().unwrap().push((token, started, code));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let sighup = |procs: &Vec<tokio::process::Child>| {
        for child in procs {
            let pid = child.id().expect("running").to_string();
            let sent = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status();
            assert!(sent.expect("kill").success());
        }
    };
    // each change: when it was made, and when both replicas had taken it
    let mut changes: Vec<(Instant, Instant)> = Vec::new();
    // until both replicas logged one more such line than `before`
    async fn until_both(count: &dyn Fn() -> Vec<usize>, before: Vec<usize>) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(10);
        while count().iter().zip(&before).any(|(now, was)| now <= was) {
            assert!(
                Instant::now() < deadline,
                "the replicas did not read the file"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Instant::now()
    }

    // 1. grant b removed, grant c added (SIGHUP)
    let (made, before) = (Instant::now(), loads());
    swap_file(&file, &(grant("a") + &grant("c")));
    sighup(&procs);
    changes.push((made, until_both(&loads, before).await));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 2. a file that does not parse: refused, the grants in force stay (SIGHUP)
    let (made, before) = (Instant::now(), refusals());
    swap_file(&file, "[[grant]]\nname = \"a\"\nrole = \"admin\"\n");
    sighup(&procs);
    changes.push((made, until_both(&refusals, before).await));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 3. grant b back, noticed without a signal (the file changed)
    let (made, before) = (Instant::now(), loads());
    swap_file(&file, &(grant("a") + &grant("b") + &grant("c")));
    changes.push((made, until_both(&loads, before).await));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }

    // what each token may do in each phase: before change 1, after 1, after 2, after 3
    let may = |token: &str, phase: usize| match token {
        "token-a" => true,
        "token-b" => phase == 0 || phase == 3,
        _ => phase >= 1,
    };
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let per_second = seen.len() as f64 / (seen.last().unwrap().1 - seen[0].1).as_secs_f64();
    eprintln!("{} calls, {per_second:.0} a second", seen.len());
    assert!(
        per_second > 200.0,
        "the load ran: {per_second:.0} calls a second"
    );
    for (token, started, code) in seen.iter() {
        // a call started while a change was being taken may see either side of it
        if changes
            .iter()
            .any(|(made, taken)| started >= made && started <= taken)
        {
            assert!(
                matches!(code, Code::Ok | Code::Unauthenticated),
                "{token}: {code:?}"
            );
            continue;
        }
        let phase = changes.iter().filter(|(_, taken)| started > taken).count();
        let expected = if may(token, phase) {
            Code::Ok
        } else {
            Code::Unauthenticated
        };
        assert_eq!(*code, expected, "{token} in phase {phase}");
    }
    // the stream opened before the first change still delivers
    let t = Client::connect(addrs[1], "load/0", "a-stream")
        .await
        .with_token("token-a")
        .enter()
        .await
        .expect("enter");
    let got = stream.until(&t).await;
    assert_eq!(got.last().map(T::brief), Some(t.brief()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn no_token_hash_or_redis_password_reaches_the_log_even_at_debug() {
    let password = "redis-pw-8d1c";
    let redis = RedisServer::start().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query_async(&mut redis.connection().await)
        .await
        .expect("a password");
    let file = access_file(
        "access-secrets",
        &(worker_grant("a", "token-a-5f3e", "a-*")
            + &format!(
                "[[grant]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nrole = \"operator\"\n\
                 elections = [\"*\"]\n",
                sha256_hex("token-ops-77aa")
            )),
    );
    let dir = file.parent().expect("dir").to_path_buf();
    let log = dir.join("debug.log");
    let port = free_port();
    let url = format!("redis://:{password}@127.0.0.1:{}", redis.port);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_electiond"))
        .env("ELECTION_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ELECTION_METRICS_ADDR", "")
        .env("ELECTION_CONSOLE_ADDR", "")
        .env("ELECTION_REDIS_URL", &url)
        .env("ELECTION_KEY_PREFIX", prefix("access-secrets"))
        .env("ELECTION_ACCESS_FILE", &file)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("electiond starts");
    wait_for_port(port).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let c = Client::connect(addr, "load/secrets", "a-1").await;
    // allowed, refused, unknown, and missing credentials, and a reload
    c.with_token("token-a-5f3e").enter().await.expect("allowed");
    expect_code(
        c.with_token("token-a-5f3e").evict("a-1").await,
        Code::PermissionDenied,
    );
    c.with_token("token-ops-77aa")
        .evict("a-1")
        .await
        .expect("ops");
    expect_code(
        c.with_token("token-unknown-91b0").enter().await,
        Code::Unauthenticated,
    );
    expect_code(c.clone().enter().await, Code::Unauthenticated);
    let pid = child.id().expect("running").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    wait_for(|| {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("access file loaded")
        }
    })
    .await;
    let _ = child.kill().await;

    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("call refused"),
        "the refusals are logged:\n{text}"
    );
    for secret in [
        "token-a-5f3e".to_owned(),
        "token-ops-77aa".to_owned(),
        "token-unknown-91b0".to_owned(),
        sha256_hex("token-a-5f3e"),
        sha256_hex("token-ops-77aa"),
        password.to_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret} is in the log:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_mistake_in_the_access_file_stops_the_start_with_one_line() {
    let redis = RedisServer::start().await;
    let file = access_file(
        "access-mistake",
        "[[grant]]\nname = \"team-a-workers\"\ntoken_sha256 = \"abc\"\nrole = \"worker\"\n\
         elections = [\"team-a/*\"]\nclients = [\"a-*\"]\n",
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_electiond"))
        .env("ELECTION_LISTEN_ADDR", "127.0.0.1:0")
        .env("ELECTION_METRICS_ADDR", "")
        .env("ELECTION_CONSOLE_ADDR", "")
        .env("ELECTION_REDIS_URL", redis.url())
        .env("ELECTION_ACCESS_FILE", &file)
        .output()
        .await
        .expect("electiond runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let failed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("electiond failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{err}");
    for part in [
        "access file",
        "grant 1 (\"team-a-workers\")",
        "64 hex digits",
    ] {
        assert!(failed[0].contains(part), "{part}: {err}");
    }
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}
