//! Access control: who may do what, on which elections, as which client.
//!
//! A credential (a bearer token, or a client certificate's name) holds one grant: a role
//! (reader, worker, operator), the elections it covers, and for a worker the client ids it may
//! act as (`grants.rs`). Every call is checked against the grants in force when it starts
//! (`Access::identify`, then `Caller::authorize`); the grants are swapped whole when the file
//! is read again (`reload.rs`), so a check takes no lock and allocates nothing unless it
//! refuses. Nothing here knows gRPC or Redis: the wire layer says which operation a call is
//! and what it presented, and turns a [`Refusal`] into a status.
//!
//! Lease expiry runs inside the service and is never checked: a credential taken away cannot
//! keep a dead candidate leader.

mod certs;
mod grants;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

pub use certs::PeerCerts;
pub use grants::{sha256, sha256_hex, Role};
pub use reload::watch;

use crate::metrics::Metrics;
use crate::telemetry::Throttle;
use certs::CertNames;
use grants::{Grant, Grants};

/// One operation, as access control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Enter,
    Withdraw,
    Close,
    GetTerm,
    Snapshot,
    Events,
    Anoint,
    Promote,
    Evict,
    Restore,
    Create,
    Delete,
    /// `electiond.session.v1.SessionService/KeepAlive`: acts as its client in all its elections.
    KeepAlive,
    /// `electiond.admin.v1.ElectionAdmin/List`: reads every election it returns.
    List,
    /// `electiond.admin.v1.ElectionAdmin/History`: reads its election.
    History,
}

impl Operation {
    /// Its RPC's name (metrics and messages use it).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Enter => "Enter",
            Operation::Withdraw => "Withdraw",
            Operation::Close => "Close",
            Operation::GetTerm => "GetTerm",
            Operation::Snapshot => "Snapshot",
            Operation::Events => "Events",
            Operation::Anoint => "Anoint",
            Operation::Promote => "Promote",
            Operation::Evict => "Evict",
            Operation::Restore => "Restore",
            Operation::Create => "Create",
            Operation::Delete => "Delete",
            Operation::KeepAlive => "KeepAlive",
            Operation::List => "List",
            Operation::History => "History",
        }
    }

    /// What the operation needs, called with `client` as the request's client id.
    fn needs(self, client: Option<&str>) -> Need<'_> {
        match self {
            // with a client id these refresh its lease: they act as it
            Operation::GetTerm | Operation::Snapshot => client.map_or(Need::Read, Need::ActAs),
            Operation::Events | Operation::List | Operation::History => Need::Read,
            // without a client id these are refused as bad input, for any reader of the election
            Operation::Enter | Operation::Withdraw | Operation::Close => {
                client.map_or(Need::Read, Need::ActAs)
            }
            // names no election: see `Caller::authorize_session`
            Operation::KeepAlive => client.map_or(Need::Operate, Need::ActAs),
            Operation::Anoint
            | Operation::Promote
            | Operation::Evict
            | Operation::Restore
            | Operation::Create
            | Operation::Delete => Need::Operate,
        }
    }
}

enum Need<'a> {
    Read,
    ActAs(&'a str),
    Operate,
}

/// Why a call is refused. Its message is for the client: it names what was refused and the
/// grant, never a secret.
#[derive(Debug)]
pub enum Refusal {
    /// No credential, or one that no grant holds.
    Unauthenticated(String),
    /// A known credential whose grant does not allow the call.
    Denied(String),
}

/// What a call presented: the bearer token of its `authorization` metadata, and its
/// connection's client certificates.
#[derive(Default)]
pub struct Presented<'a> {
    pub bearer: Option<&'a str>,
    pub certs: Option<&'a PeerCerts>,
}

/// The grants in force, and how to read them again.
#[derive(Debug)]
pub struct Access {
    /// `None`: no credentials configured, every call is allowed.
    grants: Option<ArcSwap<Grants>>,
    file: Option<PathBuf>,
    tokens: Vec<String>,
    certs: CertNames,
    metrics: Arc<Metrics>,
}

/// The caller of one call, once identified: its grant, as in force when the call started.
pub struct Caller<'a> {
    access: &'a Access,
    grant: Option<(Guard<Arc<Grants>>, usize)>,
}

/// How often refusals are logged, at most (each line counts the ones it stands for).
const LOG_EVERY: Duration = Duration::from_secs(5);
static DENIED: Throttle = Throttle::new(LOG_EVERY);
static UNKNOWN: Throttle = Throttle::new(LOG_EVERY);

impl Access {
    /// Reads the access file (if any) and takes `tokens` (`ELECTION_AUTH_TOKENS`) as
    /// operators on every election. With neither, access control is off. An error is one
    /// line naming the file and what is wrong.
    pub fn load(
        file: Option<PathBuf>,
        tokens: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let grants = match &file {
            None if tokens.is_empty() => None,
            _ => Some(ArcSwap::from_pointee(read(file.as_ref(), &tokens)?)),
        };
        Ok(Self {
            grants,
            file,
            tokens,
            certs: CertNames::default(),
            metrics,
        })
    }

    /// Whether calls need a credential.
    pub fn is_on(&self) -> bool {
        self.grants.is_some()
    }

    /// Who presented `presented` for `op`, or why not known.
    pub fn identify(
        &self,
        op: Operation,
        presented: &Presented<'_>,
    ) -> Result<Caller<'_>, Refusal> {
        let Some(grants) = &self.grants else {
            return Ok(Caller {
                access: self,
                grant: None,
            });
        };
        let grants = grants.load();
        let found = if let Some(token) = presented.bearer {
            match grants.by_token.get(&sha256(token.trim().as_bytes())) {
                Some(i) => Ok(*i),
                None => Err("unknown bearer token".to_owned()),
            }
        } else if let Some(certs) = presented.certs {
            let names = self.certs.of(certs);
            let mut held = names.iter().filter_map(|n| grants.by_subject.get(n));
            match (held.next(), held.next()) {
                (Some(i), None) => Ok(*i),
                (Some(_), Some(_)) => Err(format!(
                    "the client certificate ({}) matches more than one grant",
                    names.join(", ")
                )),
                (None, _) => Err(format!(
                    "no grant for the client certificate ({})",
                    names.join(", ")
                )),
            }
        } else {
            Err(
                "missing credentials: authorization: Bearer <token> metadata, or a client \
                 certificate"
                    .to_owned(),
            )
        };
        match found {
            Ok(i) => Ok(Caller {
                access: self,
                grant: Some((grants, i)),
            }),
            Err(why) => {
                self.metrics.access_denied("", op.name());
                if let Some(held) = UNKNOWN.allow() {
                    tracing::info!(reason = %why, similar_not_logged = held, "call refused: unauthenticated");
                }
                Err(Refusal::Unauthenticated(why))
            }
        }
    }

    /// Reads the file again; on success the new grants apply to calls that start from now on.
    /// On failure the grants in force stay, and the error says why.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(current) = &self.grants else {
            return Ok(0);
        };
        let grants = read(self.file.as_ref(), &self.tokens)?;
        let n = grants.list.len();
        current.store(Arc::new(grants));
        Ok(n)
    }

    /// The access file, if one is configured.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }
}

impl Caller<'_> {
    /// Whether the caller may run `op` on `election` with `client` as the request's client
    /// id. A refusal is counted and logged (at most every few seconds, with a count).
    pub fn authorize(
        &self,
        op: Operation,
        election: &str,
        client: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some((grants, i)) = &self.grant else {
            return Ok(());
        };
        let grant = &grants.list[*i];
        let need = op.needs(client);
        if allows(grant, &need, election) {
            return Ok(());
        }
        let message = match need {
            Need::ActAs(c) if grant.elections.matches(election) => format!(
                "grant {:?} ({}) may not {} as client {c:?} in election {election:?}",
                grant.name,
                grant.role.name(),
                op.name()
            ),
            _ => format!(
                "grant {:?} ({}) may not {} in election {election:?}",
                grant.name,
                grant.role.name(),
                op.name()
            ),
        };
        self.access.metrics.access_denied(&grant.name, op.name());
        if let Some(held) = DENIED.allow() {
            tracing::info!(grant = %grant.name, operation = op.name(), election, client, similar_not_logged = held, "call refused: not allowed");
        }
        Err(Refusal::Denied(message))
    }
}

impl Caller<'_> {
    /// Whether the caller may read `election`: what a listing keeps of what it finds. Not
    /// counted or logged as a refusal (a listing simply leaves the others out).
    pub fn may_read(&self, election: &str) -> bool {
        self.grant
            .as_ref()
            .is_none_or(|(grants, i)| grants.list[*i].elections.matches(election))
    }

    /// Whether the caller may change `election` as an operator (evict, anoint): what the
    /// console asks to offer those actions. Not counted or logged as a refusal.
    pub fn may_operate(&self, election: &str) -> bool {
        self.grant.as_ref().is_none_or(|(grants, i)| {
            let g = &grants.list[*i];
            g.role == Role::Operator && g.elections.matches(election)
        })
    }

    /// Where a listing of names starting with `prefix` need look for elections the caller
    /// may read: `prefix` itself, or a longer prefix when the grant covers one prefix alone;
    /// `None` when it may read none of them.
    pub fn readable_prefix<'p>(&'p self, prefix: &'p str) -> Option<&'p str> {
        let Some((grants, i)) = &self.grant else {
            return Some(prefix);
        };
        grants.list[*i].elections.narrow(prefix)
    }
}

impl Caller<'_> {
    /// Whether the caller may keep `client` alive (a KeepAlive names no election: it acts as
    /// the client in every election it stands in). A worker may for its own clients, an
    /// operator for any.
    pub fn authorize_session(&self, client: &str) -> Result<(), Refusal> {
        let Some((grants, i)) = &self.grant else {
            return Ok(());
        };
        let grant = &grants.list[*i];
        let allowed = match grant.role {
            Role::Operator => true,
            Role::Worker => grant.clients.matches(client),
            Role::Reader => false,
        };
        if allowed {
            return Ok(());
        }
        let op = Operation::KeepAlive;
        self.access.metrics.access_denied(&grant.name, op.name());
        if let Some(held) = DENIED.allow() {
            tracing::info!(grant = %grant.name, operation = op.name(), client, similar_not_logged = held, "call refused: not allowed");
        }
        Err(Refusal::Denied(format!(
            "grant {:?} ({}) may not {} as client {client:?}",
            grant.name,
            grant.role.name(),
            op.name()
        )))
    }
}

fn allows(grant: &Grant, need: &Need<'_>, election: &str) -> bool {
    if !grant.elections.matches(election) {
        return false;
    }
    match (grant.role, need) {
        (_, Need::Read) | (Role::Operator, _) => true,
        (Role::Worker, Need::ActAs(c)) => grant.clients.matches(c),
        _ => false,
    }
}

/// The grants of the file (read now) and the tokens.
fn read(file: Option<&PathBuf>, tokens: &[String]) -> Result<Grants, String> {
    let text = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("access file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Grants::build(text.as_deref(), tokens).map_err(|e| match file {
        Some(path) => format!("access file {}: {e}", path.display()),
        None => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(file: &str) -> Access {
        let dir = std::env::temp_dir().join(format!("electiond-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{:016x}.toml", grants::sha256(file.as_bytes())[0]));
        std::fs::write(&path, file).expect("write");
        Access::load(Some(path), Vec::new(), Arc::default()).expect("valid")
    }

    #[test]
    fn each_role_may_do_what_it_says_on_its_elections_only() {
        let a = access(&format!(
            r#"
            [[grant]]
            name = "r"
            token_sha256 = "{}"
            role = "reader"
            elections = ["a/*"]
            [[grant]]
            name = "w"
            token_sha256 = "{}"
            role = "worker"
            elections = ["a/*"]
            clients = ["w-*"]
            [[grant]]
            name = "o"
            token_sha256 = "{}"
            role = "operator"
            elections = ["a/*"]
            "#,
            sha256_hex("reader"),
            sha256_hex("worker"),
            sha256_hex("operator")
        ));
        let may = |token: &str, op: Operation, election: &str, client: Option<&str>| {
            let p = Presented {
                bearer: Some(token),
                certs: None,
            };
            a.identify(op, &p)
                .expect("known")
                .authorize(op, election, client)
                .is_ok()
        };
        use Operation::*;
        for op in [GetTerm, Snapshot, Events] {
            assert!(may("reader", op, "a/x", None), "{op:?}");
            assert!(!may("reader", op, "b/x", None), "{op:?} elsewhere");
        }
        assert!(
            !may("reader", GetTerm, "a/x", Some("w-1")),
            "a reader acts as no one"
        );
        assert!(!may("reader", Enter, "a/x", Some("w-1")));
        for op in [Enter, Withdraw, Close, GetTerm, Snapshot] {
            assert!(may("worker", op, "a/x", Some("w-1")), "{op:?}");
            assert!(!may("worker", op, "a/x", Some("x-1")), "{op:?} as another");
            assert!(!may("worker", op, "b/x", Some("w-1")), "{op:?} elsewhere");
        }
        for op in [Anoint, Promote, Evict, Restore, Create, Delete] {
            assert!(!may("worker", op, "a/x", Some("w-1")), "{op:?}");
            assert!(may("operator", op, "a/x", Some("anyone")), "{op:?}");
            assert!(!may("operator", op, "b/x", None), "{op:?} elsewhere");
        }
        let refused = a
            .identify(
                Enter,
                &Presented {
                    bearer: Some("worker"),
                    certs: None,
                },
            )
            .expect("known")
            .authorize(Enter, "a/x", Some("x-1"));
        let Err(Refusal::Denied(msg)) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(
            msg,
            "grant \"w\" (worker) may not Enter as client \"x-1\" in election \"a/x\""
        );
        for unknown in [Some("nope"), None] {
            let p = Presented {
                bearer: unknown,
                certs: None,
            };
            assert!(matches!(
                a.identify(GetTerm, &p),
                Err(Refusal::Unauthenticated(_))
            ));
        }
    }

    #[test]
    fn without_credentials_configured_every_call_is_allowed() {
        let a = Access::load(None, Vec::new(), Arc::default()).expect("off");
        assert!(!a.is_on());
        let caller = a
            .identify(Operation::Delete, &Presented::default())
            .expect("anyone");
        assert!(caller.authorize(Operation::Delete, "x", None).is_ok());
    }
}
