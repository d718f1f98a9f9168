//! The grants: read from the access file (and `ELECTION_AUTH_TOKENS`), checked whole before
//! any of them is used.

use std::collections::HashMap;

use serde::Deserialize;

/// What a grant allows, besides naming its elections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads: GetTerm without a client id, Events, Snapshot without a client id.
    Reader,
    /// A reader that may also act as one of its clients: Enter, Withdraw, Close, and any call
    /// with a client id (which refreshes that client's lease).
    Worker,
    /// Everything, as any client: Anoint, Promote, Evict, Restore, Create, Delete too.
    Operator,
}

impl Role {
    /// Its name in the access file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Worker => "worker",
            Role::Operator => "operator",
        }
    }
}

/// Names a grant covers: each exact, or a prefix when it ends in `*` (`*` alone: all).
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Patterns {
    fn parse(raw: &[String], what: &str) -> Result<Self, String> {
        let mut p = Patterns::default();
        for r in raw {
            match r.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => p.prefixes.push(prefix.to_owned()),
                None if !r.is_empty() && !r.contains('*') => p.exact.push(r.clone()),
                _ => {
                    return Err(format!(
                        "{what} {r:?}: an exact name, or a prefix ending in a single '*'"
                    ))
                }
            }
        }
        Ok(p)
    }

    /// The narrowest prefix under which every covered name starting with `prefix` lies: a
    /// longer one when the patterns are one prefix alone; `None` when no name starting with
    /// `prefix` is covered.
    pub fn narrow<'p>(&'p self, prefix: &'p str) -> Option<&'p str> {
        match (self.exact.as_slice(), self.prefixes.as_slice()) {
            ([], [only]) if only.starts_with(prefix) => Some(only),
            ([], [only]) if prefix.starts_with(only.as_str()) => Some(prefix),
            ([], [_]) => None,
            (exact, prefixes)
                if prefixes
                    .iter()
                    .all(|p| !p.starts_with(prefix) && !prefix.starts_with(p.as_str()))
                    && exact.iter().all(|e| !e.starts_with(prefix)) =>
            {
                None
            }
            _ => Some(prefix),
        }
    }

    /// Whether `name` is covered. No allocation.
    pub fn matches(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// One credential's rights.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Shown in logs, metrics and refusals; never the secret.
    pub name: String,
    pub role: Role,
    pub elections: Patterns,
    /// The client ids a worker may act as.
    pub clients: Patterns,
}

/// Every grant, found by the credential that holds it.
#[derive(Debug, Default)]
pub struct Grants {
    pub list: Vec<Grant>,
    /// SHA-256 of a bearer token -> its grant.
    pub by_token: HashMap<[u8; 32], usize>,
    /// A client certificate's name (`CN=...`, `DNS=...`, `URI=...`) -> its grant.
    pub by_subject: HashMap<String, usize>,
}

/// The access file: `[[grant]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    grant: Vec<RawGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    name: String,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    role: String,
    elections: Vec<String>,
    #[serde(default)]
    clients: Vec<String>,
}

/// The kinds of certificate name a grant's `subject` may give.
pub const SUBJECT_KINDS: [&str; 3] = ["CN=", "DNS=", "URI="];

impl Grants {
    /// The grants of the access file's text `file` (if any) and of `tokens`
    /// (`ELECTION_AUTH_TOKENS`, each an operator on every election). An error names the
    /// grant and what is wrong with it, in one line.
    pub fn build(file: Option<&str>, tokens: &[String]) -> Result<Self, String> {
        let mut grants = Grants::default();
        for (i, token) in tokens.iter().enumerate() {
            let name = format!("auth-token-{}", i + 1);
            let hash = sha256(token.as_bytes());
            grants.add_token(hash, &name)?;
            grants.list.push(Grant {
                name,
                role: Role::Operator,
                elections: Patterns {
                    exact: Vec::new(),
                    prefixes: vec![String::new()],
                },
                clients: Patterns::default(),
            });
        }
        let Some(text) = file else {
            return Ok(grants);
        };
        let file: File = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        for (i, raw) in file.grant.into_iter().enumerate() {
            let at = format!("grant {} ({:?})", i + 1, raw.name);
            grants.add(raw).map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(grants)
    }

    fn add(&mut self, raw: RawGrant) -> Result<(), String> {
        if raw.name.is_empty() {
            return Err("an empty name".into());
        }
        if self.list.iter().any(|g| g.name == raw.name) {
            return Err(
                "a second grant of that name (names must be unique: logs and metrics \
                        show them)"
                    .into(),
            );
        }
        let role = match raw.role.as_str() {
            "reader" => Role::Reader,
            "worker" => Role::Worker,
            "operator" => Role::Operator,
            other => {
                return Err(format!(
                    "unknown role {other:?} (reader, worker or operator)"
                ))
            }
        };
        if raw.elections.is_empty() {
            return Err("no elections (name them, or \"*\" for all)".into());
        }
        let elections = Patterns::parse(&raw.elections, "election")?;
        let clients = match role {
            Role::Worker if raw.clients.is_empty() => {
                return Err("a worker needs `clients`: the client ids it may act as".into())
            }
            Role::Worker => Patterns::parse(&raw.clients, "client")?,
            _ if !raw.clients.is_empty() => {
                return Err(format!(
                    "`clients` applies to workers only (a {} {})",
                    role.name(),
                    match role {
                        Role::Operator => "acts as any client",
                        _ => "acts as none",
                    }
                ))
            }
            _ => Patterns::default(),
        };
        let index = self.list.len();
        match (raw.token_sha256, raw.subject) {
            (Some(hex), None) => {
                let hash = parse_sha256(&hex).ok_or(
                    "token_sha256 must be 64 hex digits (the SHA-256 of the token: \
                     printf %s \"$TOKEN\" | sha256sum)",
                )?;
                self.add_token(hash, &raw.name)?;
            }
            (None, Some(subject)) => {
                if !SUBJECT_KINDS.iter().any(|k| subject.starts_with(k)) || subject.len() < 5 {
                    return Err(format!(
                        "subject {subject:?}: CN=<common name>, DNS=<DNS name> or URI=<URI> of \
                         the client certificate"
                    ));
                }
                if let Some(other) = self.by_subject.get(&subject) {
                    return Err(format!(
                        "subject {subject:?} is already grant {:?}'s: which would apply?",
                        self.list[*other].name
                    ));
                }
                self.by_subject.insert(subject, index);
            }
            (Some(_), Some(_)) => {
                return Err("either token_sha256 or subject, not both (two grants)".into())
            }
            (None, None) => return Err("no credential: token_sha256 or subject".into()),
        }
        self.list.push(Grant {
            name: raw.name,
            role,
            elections,
            clients,
        });
        Ok(())
    }

    /// Refuses a token that another grant holds already: which one would apply?
    fn add_token(&mut self, hash: [u8; 32], name: &str) -> Result<(), String> {
        match self.by_token.get(&hash) {
            Some(other) => Err(format!(
                "{name}: its token is also grant {:?}'s: which would apply?",
                self.list[*other].name
            )),
            None => {
                self.by_token.insert(hash, self.list.len());
                Ok(())
            }
        }
    }
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of a token in hex: what a grant's `token_sha256` holds.
pub fn sha256_hex(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// A parser's message on one line (TOML errors quote the offending line below the message).
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_OF_TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn build(text: &str) -> Result<Grants, String> {
        Grants::build(Some(text), &[])
    }

    #[test]
    fn a_listing_looks_only_where_a_grant_reads() {
        let p = |raw: &[&str]| {
            Patterns::parse(&raw.iter().map(|r| r.to_string()).collect::<Vec<_>>(), "t")
                .expect("patterns")
        };
        let team = p(&["team-a/*"]);
        assert_eq!(team.narrow(""), Some("team-a/"));
        assert_eq!(team.narrow("team-a/jobs"), Some("team-a/jobs"));
        assert_eq!(team.narrow("team-b/"), None);
        let all = p(&["*"]);
        assert_eq!(all.narrow("x"), Some("x"));
        let mixed = p(&["team-a/*", "nightly"]);
        assert_eq!(mixed.narrow(""), Some(""));
        assert_eq!(mixed.narrow("night"), Some("night"));
        assert_eq!(mixed.narrow("zzz"), None);
    }

    #[test]
    fn a_grant_file_is_read_with_its_three_roles() {
        let g = build(&format!(
            r#"
            [[grant]]
            name = "team-a-workers"
            token_sha256 = "{HASH_OF_TEST}"
            role = "worker"
            elections = ["team-a/*", "shared"]
            clients = ["a-worker-*"]

            [[grant]]
            name = "mesh-reader"
            subject = "URI=spiffe://prod/ns/a/sa/dash"
            role = "reader"
            elections = ["*"]
            "#
        ))
        .expect("valid");
        let worker = &g.list[g.by_token[&sha256(b"test")]];
        assert_eq!(
            (worker.name.as_str(), worker.role),
            ("team-a-workers", Role::Worker)
        );
        assert!(worker.elections.matches("team-a/report") && worker.elections.matches("shared"));
        assert!(!worker.elections.matches("team-b/report") && !worker.elections.matches("shared2"));
        assert!(worker.clients.matches("a-worker-1") && !worker.clients.matches("b-worker-1"));
        let reader = &g.list[g.by_subject["URI=spiffe://prod/ns/a/sa/dash"]];
        assert!(reader.role == Role::Reader && reader.elections.matches("anything"));
    }

    #[test]
    fn each_mistake_stops_with_one_line_naming_the_grant() {
        let grant = |body: &str| format!("[[grant]]\nname = \"g\"\n{body}\n");
        let token = format!("token_sha256 = \"{HASH_OF_TEST}\"");
        for (body, says) in [
            (
                format!("{token}\nrole = \"admin\"\nelections = [\"*\"]"),
                "unknown role \"admin\"",
            ),
            (
                "token_sha256 = \"abc\"\nrole = \"reader\"\nelections = [\"*\"]".to_owned(),
                "64 hex digits",
            ),
            (
                format!("{token}\nrole = \"worker\"\nelections = [\"*\"]"),
                "a worker needs `clients`",
            ),
            (
                format!("{token}\nrole = \"reader\"\nelections = [\"*\"]\nclients = [\"x\"]"),
                "workers only",
            ),
            (
                format!("{token}\nrole = \"reader\"\nelections = [\"a*b\"]"),
                "single '*'",
            ),
            (
                format!("{token}\nrole = \"reader\"\nelections = []"),
                "no elections",
            ),
            (
                "subject = \"OU=x\"\nrole = \"reader\"\nelections = [\"*\"]".to_owned(),
                "CN=<common name>",
            ),
            (
                "role = \"reader\"\nelections = [\"*\"]".to_owned(),
                "no credential",
            ),
        ] {
            let e = build(&grant(&body)).expect_err(&body);
            assert!(e.starts_with("grant 1 (\"g\"): "), "{e}");
            assert!(e.contains(says), "{body}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e =
            build("[[grant]]\nname = \"g\"\nrole = \"reader\"\nelections = [\"*\"]\ncolour = 1")
                .expect_err("unknown key");
        assert!(e.contains("colour") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn one_credential_in_two_grants_or_two_grants_of_one_name_are_ambiguous() {
        let g = |name: &str, cred: &str| {
            format!(
                "[[grant]]\nname = \"{name}\"\n{cred}\nrole = \"reader\"\nelections = [\"*\"]\n"
            )
        };
        let token = format!("token_sha256 = \"{HASH_OF_TEST}\"");
        let e = build(&(g("a", &token) + &g("b", &token))).expect_err("same token");
        assert!(e.contains("grant 2 (\"b\")") && e.contains("\"a\""), "{e}");
        let subject = "subject = \"CN=w1\"";
        let e = build(&(g("a", subject) + &g("b", subject))).expect_err("same subject");
        assert!(e.contains("CN=w1"), "{e}");
        let e = build(&(g("a", &token) + &g("a", subject))).expect_err("same name");
        assert!(e.contains("a second grant of that name"), "{e}");
        // and a file token that ELECTION_AUTH_TOKENS already holds
        let e = Grants::build(Some(&g("a", &token)), &["test".to_owned()]).expect_err("env");
        assert!(e.contains("auth-token-1"), "{e}");
    }

    #[test]
    fn env_tokens_are_operators_on_every_election() {
        let g = Grants::build(None, &["s3cret".to_owned(), "other".to_owned()]).expect("valid");
        let second = &g.list[g.by_token[&sha256(b"other")]];
        assert_eq!(
            (second.name.as_str(), second.role),
            ("auth-token-2", Role::Operator)
        );
        assert!(second.elections.matches("any/election"));
    }
}
