//! The last state this replica saw of each big election, so that a GetTerm (every lease
//! refresh is one) on an election that has not changed since needs no copy of the candidate
//! list from Redis. The replica sends the revision it holds; the refresh function applies
//! expiry and the caller's lease as always, and when the stored revision is still that one it
//! answers "same" without reading the list (lua/refresh.lua). A revision names one state of
//! one election, so a stale entry costs one full read, never a wrong answer.
//!
//! Each state held also keeps its answer as the wire layer encoded it the first time, so the
//! replica does not build and encode the same list again for every refresh either.
//!
//! Only elections of at least [`MIN_CANDIDATES`] are kept (below that a full read costs
//! little), and at most [`CAPACITY`] of them, one dropped at random when a new one comes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use crate::election::Term;

/// One state of a big election, and its answer once encoded.
#[derive(Debug)]
pub struct Held {
    pub term: Term,
    encoded: OnceLock<Bytes>,
}

impl Held {
    /// The answer for this state: `encode` makes it the first time, then it is kept.
    pub fn encoded(&self, encode: impl FnOnce(&Term) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(&self.term)).clone()
    }
}

/// Elections smaller than this are not kept.
pub const MIN_CANDIDATES: usize = 64;
/// Most elections kept at once (a term of 10,000 candidates with 28-byte ids and its encoded
/// answer took about 1.1 MB of a replica's memory, measured: about 70 MB at most, at that
/// size).
pub const CAPACITY: usize = 64;

#[derive(Default)]
pub struct RecentTerms {
    terms: Mutex<HashMap<String, Arc<Held>>>,
}

impl RecentTerms {
    /// The state last seen of the election whose term is stored at `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Held>> {
        let terms = self.lock();
        // the common case, no big election at all: no hashing of the key
        if terms.is_empty() {
            return None;
        }
        terms.get(key).cloned()
    }

    /// Notes `term` as the latest state of the election at `key`: kept when it is big (and
    /// given back as held), and any older state forgotten when it is not (and given back).
    pub fn saw(&self, key: &str, term: Term) -> Result<Arc<Held>, Term> {
        let mut terms = self.lock();
        if term.candidates.len() < MIN_CANDIDATES {
            if !terms.is_empty() {
                terms.remove(key);
            }
            return Err(term);
        }
        if let Some(held) = terms.get(key).filter(|h| h.term.revision == term.revision) {
            return Ok(held.clone());
        }
        if terms.len() >= CAPACITY && !terms.contains_key(key) {
            if let Some(other) = terms.keys().next().cloned() {
                terms.remove(&other);
            }
        }
        let held = Arc::new(Held {
            term,
            encoded: OnceLock::new(),
        });
        terms.insert(key.to_owned(), held.clone());
        Ok(held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Held>>> {
        // a panic while holding the lock leaves a map that is still whole
        self.terms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(revision: u64, candidates: usize) -> Term {
        Term {
            id: 1,
            timestamp: None,
            candidates: (0..candidates).map(|i| format!("c{i}")).collect(),
            revision,
        }
    }

    #[test]
    fn keeps_the_latest_big_state_and_forgets_an_election_that_shrank() {
        let r = RecentTerms::default();
        assert!(r.saw("a", term(1, 10)).is_err());
        assert!(r.get("a").is_none(), "small elections are not kept");
        assert!(r.saw("a", term(2, 100)).is_ok());
        let held = r.saw("a", term(3, 101)).expect("kept");
        assert_eq!(r.get("a").map(|h| h.term.revision), Some(3));
        assert_eq!(held.encoded(|_| Bytes::from_static(b"x")), "x");
        // the same state seen again keeps what was encoded for it
        let again = r.saw("a", term(3, 101)).expect("kept");
        assert_eq!(again.encoded(|_| Bytes::from_static(b"y")), "x");
        assert!(r.saw("a", term(4, 3)).is_err());
        assert!(
            r.get("a").is_none(),
            "a state too small to keep drops the old one"
        );
    }

    #[test]
    fn holds_at_most_its_capacity() {
        let r = RecentTerms::default();
        for i in 0..CAPACITY + 10 {
            let _ = r.saw(&format!("e{i}"), term(1, MIN_CANDIDATES));
        }
        let kept = (0..CAPACITY + 10)
            .filter(|i| r.get(&format!("e{i}")).is_some())
            .count();
        assert_eq!(kept, CAPACITY);
        assert!(
            r.get(&format!("e{}", CAPACITY + 9)).is_some(),
            "the newest is kept"
        );
    }
}
