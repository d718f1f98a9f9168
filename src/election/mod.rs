//! The election's domain: validated names and ids, the term, and the rules that do not need
//! Redis. No tonic and no redis imports here.

use std::collections::HashSet;
use std::fmt;

/// Size limits that every name, id and candidate list is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest election name, in bytes.
    pub max_name_bytes: usize,
    /// Longest client or candidate id, in bytes.
    pub max_id_bytes: usize,
    /// Most candidates in one election.
    pub max_candidates: usize,
    /// Largest candidate list, in stored bytes (see [`stored_len`]).
    pub max_term_bytes: usize,
}

/// What a candidate id adds to its election's stored list: the id escaped (a backslash and a
/// line feed take two bytes each) and a line feed.
pub fn stored_len(id: &str) -> usize {
    id.len() + id.bytes().filter(|b| matches!(b, b'\\' | b'\n')).count() + 1
}

/// Why a request was refused before (or instead of) changing anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A required string is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A string is longer than the configured limit.
    #[error("{what} is {len} bytes, over the limit of {limit} bytes")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The election would hold more candidates than allowed.
    #[error("over the limit of {limit} candidates per election")]
    TooManyCandidates {
        /// The limit.
        limit: usize,
    },
    /// The election's candidate list would be larger than allowed.
    #[error("over the limit of {limit} bytes for one election's candidates")]
    TermTooBig {
        /// The limit.
        limit: usize,
    },
    /// The named candidate is not in the election.
    #[error("{0:?} is not a candidate")]
    NotCandidate(String),
    /// Any other malformed input.
    #[error("{0}")]
    Invalid(String),
    /// The election does not exist (Delete only).
    #[error("election {0:?} does not exist")]
    NotFound(String),
}

fn checked(value: &str, what: &'static str, limit: usize) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::Empty(what));
    }
    if value.len() > limit {
        return Err(Rejection::TooLong {
            what,
            len: value.len(),
            limit,
        });
    }
    Ok(())
}

/// The name of an election: non-empty and within [`Limits::max_name_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ElectionName(String);

impl ElectionName {
    /// Validates `name` against `limits`.
    pub fn parse(name: &str, limits: &Limits) -> Result<Self, Rejection> {
        checked(
            name,
            "election name (header.primitive_id.name)",
            limits.max_name_bytes,
        )?;
        Ok(Self(name.to_owned()))
    }

    /// A name read back from the store, which only ever holds validated names (limits may
    /// have been lowered since, which must not strand an election).
    pub(crate) fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ElectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client or candidate id (the same namespace: a client enters under its own id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberId(String);

impl MemberId {
    /// Validates `id` against `limits`; `what` names the field in the error message.
    pub fn parse(id: &str, what: &'static str, limits: &Limits) -> Result<Self, Rejection> {
        checked(id, what, limits.max_id_bytes)?;
        Ok(Self(id.to_owned()))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time read from the Redis server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: i32,
}

/// One election's state as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The term id: the fencing token. Up by one whenever leadership passes to another
    /// candidate; never down except by Delete.
    pub id: u64,
    /// When the candidate list last changed; `None` for an election never changed.
    pub timestamp: Option<Timestamp>,
    /// Candidates in order; the first is the leader.
    pub candidates: Vec<String>,
    /// Revision of this state: strictly increasing with every change of the election, across
    /// Delete too. Orders states for event delivery; not part of the wire `Term`.
    pub revision: u64,
}

impl Term {
    /// The leader, or `""` when there are no candidates.
    pub fn leader(&self) -> &str {
        self.candidates.first().map_or("", String::as_str)
    }

    /// Whether two terms show the same state to a client (revision and timestamp aside).
    pub fn same_state(&self, other: &Term) -> bool {
        self.id == other.id && self.candidates == other.candidates
    }
}

/// The largest term id the store keeps exactly (Redis scripts count in doubles).
pub const MAX_TERM_ID: u64 = (1 << 53) - 1;

/// A snapshot accepted for Restore: leader first, ids unique and within limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSnapshot {
    /// The snapshot's term id (the restored id is at least this).
    pub id: u64,
    /// The candidates, leader first.
    pub candidates: Vec<MemberId>,
}

impl ValidSnapshot {
    /// Checks a snapshot's leader and candidates; nothing is changed when this fails.
    pub fn parse(
        id: u64,
        leader: &str,
        candidates: &[String],
        limits: &Limits,
    ) -> Result<Self, Rejection> {
        if id > MAX_TERM_ID {
            return Err(Rejection::Invalid(format!(
                "snapshot term id {id} is above the largest supported id {MAX_TERM_ID}"
            )));
        }
        if candidates.len() > limits.max_candidates {
            return Err(Rejection::TooManyCandidates {
                limit: limits.max_candidates,
            });
        }
        let bytes: usize = candidates.iter().map(|c| stored_len(c)).sum();
        if bytes > limits.max_term_bytes {
            return Err(Rejection::TermTooBig {
                limit: limits.max_term_bytes,
            });
        }
        let mut seen = HashSet::with_capacity(candidates.len());
        let mut parsed = Vec::with_capacity(candidates.len());
        for c in candidates {
            let id = MemberId::parse(c, "snapshot candidate id", limits)?;
            if !seen.insert(c.as_str()) {
                return Err(Rejection::Invalid(format!(
                    "snapshot lists candidate {c:?} more than once"
                )));
            }
            parsed.push(id);
        }
        let expected = candidates.first().map_or("", String::as_str);
        if leader != expected {
            return Err(Rejection::Invalid(if candidates.is_empty() {
                format!("snapshot leader {leader:?} must be empty when there are no candidates")
            } else {
                format!("snapshot leader {leader:?} must be the first candidate {expected:?}")
            }));
        }
        Ok(Self {
            id,
            candidates: parsed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_name_bytes: 8,
        max_id_bytes: 4,
        max_candidates: 3,
        max_term_bytes: 12,
    };

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(ElectionName::parse("election", &LIMITS).is_ok());
        assert_eq!(
            ElectionName::parse("", &LIMITS),
            Err(Rejection::Empty("election name (header.primitive_id.name)"))
        );
        assert!(matches!(
            ElectionName::parse("election1", &LIMITS),
            Err(Rejection::TooLong {
                len: 9,
                limit: 8,
                ..
            })
        ));
        assert!(matches!(
            MemberId::parse("abcde", "client id", &LIMITS),
            Err(Rejection::TooLong { .. })
        ));
    }

    #[test]
    fn snapshot_leader_must_be_first_candidate() {
        assert!(ValidSnapshot::parse(3, "a", &strings(&["a", "b"]), &LIMITS).is_ok());
        assert!(ValidSnapshot::parse(0, "", &[], &LIMITS).is_ok());
        assert!(ValidSnapshot::parse(3, "b", &strings(&["a", "b"]), &LIMITS).is_err());
        assert!(ValidSnapshot::parse(3, "a", &[], &LIMITS).is_err());
        assert!(ValidSnapshot::parse(3, "", &strings(&["a"]), &LIMITS).is_err());
        assert!(ValidSnapshot::parse(MAX_TERM_ID + 1, "", &[], &LIMITS).is_err());
    }

    #[test]
    fn snapshot_ids_must_be_unique_non_empty_and_within_limits() {
        assert!(ValidSnapshot::parse(1, "a", &strings(&["a", "a"]), &LIMITS).is_err());
        assert!(ValidSnapshot::parse(1, "a", &strings(&["a", ""]), &LIMITS).is_err());
        assert!(matches!(
            ValidSnapshot::parse(1, "a", &strings(&["a", "b", "c", "d"]), &LIMITS),
            Err(Rejection::TooManyCandidates { limit: 3 })
        ));
    }

    #[test]
    fn a_snapshot_over_the_byte_limit_is_refused() {
        // the limit is 12 stored bytes: "abc\n" (4) + "d\\f\n" (5: the backslash doubled) + "gh\n" (3)
        let ids = ["abc".to_owned(), "d\\f".to_owned(), "gh".to_owned()];
        assert_eq!(ids.iter().map(|c| stored_len(c)).sum::<usize>(), 12);
        assert!(ValidSnapshot::parse(1, "abc", &ids, &LIMITS).is_ok());
        let over = ["abc".to_owned(), "d\\f".to_owned(), "ghi".to_owned()];
        assert_eq!(
            ValidSnapshot::parse(1, "abc", &over, &LIMITS),
            Err(Rejection::TermTooBig { limit: 12 })
        );
    }
}
