//! Redis key and channel names.
//!
//! Every name starts with the configured prefix. Elections are spread over [`BUCKETS`] buckets
//! by a stable hash of their name, and the bucket is the Redis Cluster hash tag: all keys of an
//! election, and its bucket's lease index, live in one hash slot. So one script can change an
//! election and keep the lease index exact, on one Redis or on a sharded Cluster, while the
//! buckets spread elections over the Cluster's masters.

use crate::election::ElectionName;

/// Number of buckets. Part of the data layout: changing it moves every election.
pub const BUCKETS: u64 = 128;

/// Builds the names of an election's keys and channel.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Every bucket's tag (`<prefix>:{e<bucket>}`), built once: names are made on every call.
    tags: std::sync::Arc<[String]>,
    /// Every bucket's lease index, in bucket order.
    indexes: std::sync::Arc<[String]>,
    /// Every bucket's sessions (sorted set: client -> when its session ends). Named apart
    /// from the hash `sessions` of the first build with sessions, which newer builds ignore.
    sessions: std::sync::Arc<[String]>,
    /// Every bucket's memberships (sorted set of "<client>\n<election>").
    members: std::sync::Arc<[String]>,
}

/// The Redis names of one bucket: what a KeepAlive passes for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketKeys<'a> {
    /// Its lease index.
    pub index: &'a str,
    /// Its sessions.
    pub sessions: &'a str,
    /// Its memberships.
    pub members: &'a str,
    /// What every key of its elections starts with (`<prefix>:{e<bucket>}:`).
    pub prefix: String,
}

/// The Redis names of one election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionKeys {
    /// The serialized term (see `lua/prelude.lua`).
    pub term: String,
    /// The candidates' leases (sorted set, expiry in ms on the Redis clock).
    pub leases: String,
    /// The lease index of the election's bucket (sorted set: election -> earliest expiry).
    pub index: String,
    /// The sessions of the election's bucket.
    pub sessions: String,
    /// The memberships of the election's bucket.
    pub members: String,
    /// The pub/sub channel its changes are published on.
    pub channel: String,
    /// Its last changes of leader (list, newest first; see `record` in `lua/prelude.lua`).
    pub history: String,
}

impl BucketKeys<'_> {
    /// The names of the bucket's elections (sorted set, all scores 0): what listing reads.
    pub fn names(&self) -> String {
        format!("{}names", self.prefix)
    }
}

impl Keys {
    /// Names under `prefix` (validated to hold no braces).
    pub fn new(prefix: &str) -> Self {
        let tags: std::sync::Arc<[String]> =
            (0..BUCKETS).map(|b| format!("{prefix}:{{e{b}}}")).collect();
        let of = |kind: &str| tags.iter().map(|t| format!("{t}:{kind}")).collect();
        Self {
            indexes: of("lease-index"),
            sessions: of("session-ends"),
            members: of("members"),
            tags,
        }
    }

    /// The names for one election.
    pub fn election(&self, name: &ElectionName) -> ElectionKeys {
        let b = bucket(name.as_str()) as usize;
        let tag = &self.tags[b];
        let name = name.as_str();
        let of = |kind: &str| {
            let mut k = String::with_capacity(tag.len() + name.len() + kind.len() + 2);
            k.push_str(tag);
            k.push(':');
            k.push_str(name);
            k.push(':');
            k.push_str(kind);
            k
        };
        ElectionKeys {
            term: of("term"),
            leases: of("leases"),
            index: self.indexes[b].clone(),
            sessions: self.sessions[b].clone(),
            members: self.members[b].clone(),
            channel: of("events"),
            history: of("history"),
        }
    }

    /// Every bucket's names, in bucket order.
    pub fn buckets(&self) -> impl Iterator<Item = BucketKeys<'_>> {
        (0..self.tags.len()).map(|b| self.bucket(b))
    }

    /// The keys of bucket `b` (`b` below [`BUCKETS`]).
    pub fn bucket(&self, b: usize) -> BucketKeys<'_> {
        BucketKeys {
            index: &self.indexes[b],
            sessions: &self.sessions[b],
            members: &self.members[b],
            prefix: format!("{}:", self.tags[b]),
        }
    }

    /// The prefix every name starts with.
    pub fn prefix(&self) -> &str {
        let tag = &self.tags[0];
        &tag[..tag.len() - ":{e0}".len()]
    }

    /// The bucket and election of a term key (`<prefix>:{e<bucket>}:<election>:term`), when
    /// it is one: the election must belong to that bucket.
    pub fn parse_term_key<'k>(&self, key: &'k str) -> Option<(usize, &'k str)> {
        let rest = key.strip_prefix(self.prefix())?.strip_prefix(":{e")?;
        let (b, rest) = rest.split_once("}:")?;
        let b: usize = b.parse().ok()?;
        let name = rest.strip_suffix(":term")?;
        (b < self.tags.len() && !name.is_empty() && bucket(name) as usize == b).then_some((b, name))
    }

    /// Every bucket's lease index, for the sweepers.
    pub fn lease_indexes(&self) -> &[String] {
        &self.indexes
    }
}

/// The bucket of an election: 64-bit FNV-1a of its name. Stable across versions and
/// platforms, since every replica must agree on it.
fn bucket(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % BUCKETS
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
            max_term_bytes: 1,
        };
        ElectionName::parse(s, &limits).expect("valid name")
    }

    #[test]
    fn an_elections_keys_and_its_index_share_one_hash_tag() {
        let k = Keys::new("electiond").election(&name("jobs"));
        let tag = format!("electiond:{{e{}}}", bucket("jobs"));
        assert_eq!(k.term, format!("{tag}:jobs:term"));
        assert_eq!(k.leases, format!("{tag}:jobs:leases"));
        assert_eq!(k.index, format!("{tag}:lease-index"));
        assert_eq!(k.sessions, format!("{tag}:session-ends"));
        assert_eq!(k.members, format!("{tag}:members"));
        assert_eq!(k.channel, format!("{tag}:jobs:events"));
        assert_eq!(k.history, format!("{tag}:jobs:history"));
        let b = Keys::new("electiond");
        let bucket_keys = b
            .buckets()
            .nth(bucket("jobs") as usize)
            .expect("its bucket");
        assert_eq!(bucket_keys.prefix, format!("{tag}:"));
        assert_eq!(bucket_keys.members, k.members);
        assert_eq!(bucket_keys.names(), format!("{tag}:names"));
        assert!(Keys::new("electiond").lease_indexes().contains(&k.index));
    }

    #[test]
    fn the_bucket_hash_is_stable_and_spreads() {
        // fixed values: replicas of different builds must agree
        assert_eq!(bucket(""), 0xcbf2_9ce4_8422_2325 % BUCKETS);
        assert_eq!(bucket("a"), 0xaf63_dc4c_8601_ec8c % BUCKETS);
        let used: std::collections::HashSet<u64> = (0..2000)
            .map(|i| bucket(&format!("election-{i}")))
            .collect();
        assert_eq!(used.len() as u64, BUCKETS);
    }

    #[test]
    fn term_keys_parse_back_to_their_election() {
        let keys = Keys::new("p:x");
        assert_eq!(keys.prefix(), "p:x");
        for n in ["jobs", "a:term", "{x}", "a b"] {
            let k = keys.election(&name(n));
            assert_eq!(
                keys.parse_term_key(&k.term),
                Some((bucket(n) as usize, n)),
                "{n}"
            );
            assert_eq!(keys.parse_term_key(&k.leases), None);
            assert_eq!(keys.parse_term_key(&k.history), None);
        }
        // another bucket's tag, another prefix: not ours
        let wrong = format!("p:x:{{e{}}}:jobs:term", (bucket("jobs") + 1) % BUCKETS);
        assert_eq!(keys.parse_term_key(&wrong), None);
        assert_eq!(keys.parse_term_key("q:{e1}:jobs:term"), None);
    }

    #[test]
    fn braces_in_names_cannot_move_the_hash_tag() {
        // Redis takes the first {...}: the bucket tag comes before the name
        let k = Keys::new("p").election(&name("{x}"));
        assert!(k.term.starts_with(&format!("p:{{e{}}}:", bucket("{x}"))));
    }
}
