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
const ADMIN: &str = "admin-secret";
const READER: &str = "reader-secret";
const WORKER: &str = "worker-secret";
const OPERATOR: &str = "operator-secret";

/// The hex SHA-256 of `token`, as a grant names it.
pub fn sha256_hex(token: &str) -> String {
    electiond::access::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An access file in a fresh directory; returns its path.
pub fn access_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("electiond-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("access.toml");
    std::fs::write(&path, text).expect("access file");
    path
}

/// Three roles on `team-a/*`, workers acting as `a-*`, and an operator on everything.
fn grants() -> String {
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
}

/// Inside its elections: whether a reader, a worker as its own client, a worker as another
/// client, and an operator may make the call. Outside them, nobody may.
const ALLOWED: [(Rpc, [bool; 4]); 14] = [
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
            _ if !inside => false,
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
                        // the refusal names the operation, the election and the grant
                        for part in [rpc.operation(), election.as_str(), who.grant()] {
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
