//! Redis key and channel names. Every name starts with the configured prefix, and all of one
//! election's names share one Redis Cluster hash tag (`{...}`), so one script can touch them
//! all on a sharded Redis too.

use crate::election::ElectionName;

/// Builds the names of an election's keys and channel.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The Redis names of one election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionKeys {
    /// The serialized term (a JSON string).
    pub term: String,
    /// The candidates' leases (sorted set, expiry in ms on the Redis clock).
    pub leases: String,
    /// The pub/sub channel its changes are published on.
    pub channel: String,
}

impl Keys {
    /// Names under `prefix` (validated to hold no braces).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The names for one election.
    pub fn election(&self, name: &ElectionName) -> ElectionKeys {
        let base = format!("{}:{{{}}}", self.prefix, hash_tag(name.as_str()));
        ElectionKeys {
            term: format!("{base}:term"),
            leases: format!("{base}:leases"),
            channel: format!("{base}:events"),
        }
    }
}

/// Escapes the characters that would end or confuse the hash tag, keeping names readable in
/// `redis-cli` and the mapping one-to-one.
fn hash_tag(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::Limits;

    fn name(s: &str) -> ElectionName {
        let limits = Limits {
            max_name_bytes: 64,
            max_id_bytes: 64,
            max_candidates: 1,
        };
        ElectionName::parse(s, &limits).expect("valid name")
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("electiond").election(&name("jobs"));
        assert_eq!(k.term, "electiond:{jobs}:term");
        assert_eq!(k.leases, "electiond:{jobs}:leases");
        assert_eq!(k.channel, "electiond:{jobs}:events");
    }

    #[test]
    fn braces_and_percent_are_escaped_one_to_one() {
        let keys = Keys::new("p");
        assert_eq!(keys.election(&name("a}b{")).term, "p:{a%7Db%7B}:term");
        assert_ne!(
            keys.election(&name("%7D")).term,
            keys.election(&name("}")).term
        );
    }
}
