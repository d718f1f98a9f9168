//! Terms as the scripts store and publish them.

use serde::Deserialize;

use super::StoreError;
use crate::election::{Term, Timestamp};

/// The stored form of a term (see `lua/prelude.lua`).
#[derive(Debug, Deserialize)]
struct StoredTerm {
    id: u64,
    rev: u64,
    ts: i64,
    tsn: i32,
    c: Vec<String>,
}

/// Decodes a term as the scripts store and publish it.
pub fn decode_term(raw: &[u8]) -> Result<Term, StoreError> {
    let s: StoredTerm = serde_json::from_slice(raw)
        .map_err(|e| StoreError::Corrupt(format!("stored term does not parse: {e}")))?;
    let timestamp = (s.ts != 0 || s.tsn != 0).then_some(Timestamp {
        seconds: s.ts,
        nanos: s.tsn,
    });
    Ok(Term {
        id: s.id,
        timestamp,
        candidates: s.c,
        revision: s.rev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_terms_decode() {
        let t = decode_term(br#"{"id":3,"rev":17,"ts":1700000000,"tsn":5000,"c":["a","b"]}"#)
            .expect("decodes");
        assert_eq!(t.id, 3);
        assert_eq!(t.revision, 17);
        assert_eq!(t.leader(), "a");
        assert_eq!(t.timestamp.map(|t| t.nanos), Some(5000));
        let empty = decode_term(br#"{"id":0,"rev":1,"ts":0,"tsn":0,"c":[]}"#).expect("decodes");
        assert_eq!(empty.leader(), "");
        assert!(empty.timestamp.is_none());
        assert!(decode_term(b"{}").is_err());
    }
}
