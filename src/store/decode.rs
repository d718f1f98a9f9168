//! Terms as the election library stores and publishes them (see `lua/prelude.lua`):
//! `"<id> <rev> <ts> <tsn>\n"` then one line per candidate, leader first, each id escaped so
//! that a line feed only ever ends a line. Over 2 KB of candidates the numbers are zero-padded
//! to a fixed width, which decodes the same. Terms stored by earlier versions (one JSON object)
//! still decode; the library converts them on their next operation.

use std::borrow::Cow;

use serde::Deserialize;

use super::StoreError;
use crate::election::{Term, Timestamp};

/// A candidate id as the library stores it: `\` as `\\`, a line feed as `\n`.
pub fn escape(id: &str) -> Cow<'_, str> {
    if !id.contains(['\\', '\n']) {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 4);
    for ch in id.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub(super) fn unescape(line: &str) -> Result<String, StoreError> {
    if !line.contains('\\') {
        return Ok(line.to_owned());
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            other => return Err(corrupt(format!("bad escape \\{other:?} in a candidate id"))),
        }
    }
    Ok(out)
}

fn corrupt(why: String) -> StoreError {
    StoreError::Corrupt(format!("stored term does not parse: {why}"))
}

/// Decodes a term as the library stores and publishes it.
pub fn decode_term(raw: &[u8]) -> Result<Term, StoreError> {
    if raw.first() == Some(&b'{') {
        return decode_json(raw);
    }
    let text = std::str::from_utf8(raw).map_err(|e| corrupt(e.to_string()))?;
    let (head, list) = text
        .split_once('\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let mut fields = head.split(' ');
    let mut field = |what: &str| fields.next().ok_or_else(|| corrupt(format!("no {what}")));
    let id = number(field("id")?)?;
    let revision = number(field("revision")?)?;
    let seconds = number(field("seconds")?)?;
    let nanos = number(field("nanos")?)?;
    let mut candidates = Vec::new();
    if !list.is_empty() {
        let list = list
            .strip_suffix('\n')
            .ok_or_else(|| corrupt("unterminated candidate".into()))?;
        for line in list.split('\n') {
            candidates.push(unescape(line)?);
        }
    }
    Ok(Term {
        id,
        timestamp: (seconds != 0 || nanos != 0).then_some(Timestamp {
            seconds: seconds as i64,
            nanos: nanos as i32,
        }),
        candidates,
        revision,
    })
}

/// What a listing shows of an election: read from the start of its stored term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub id: u64,
    pub revision: u64,
    /// The leader, unescaped ("" for none).
    pub leader: String,
    /// When the term last changed, ms on the Redis clock.
    pub changed_unix_ms: i64,
}

/// Decodes the start of a stored term: its header and its first candidate line, which must be
/// whole (the term's first bytes, read long enough for the longest id; or a whole term).
pub fn decode_head(raw: &[u8]) -> Result<Head, StoreError> {
    let (id, revision, seconds, nanos, leader) = if raw.first() == Some(&b'{') {
        let t = decode_json(raw)?;
        let (s, n) = t
            .timestamp
            .map_or((0, 0), |t| (t.seconds as u64, t.nanos as u64));
        (
            t.id,
            t.revision,
            s,
            n,
            t.candidates.into_iter().next().unwrap_or_default(),
        )
    } else {
        let text = std::str::from_utf8(raw).map_err(|e| corrupt(e.to_string()))?;
        let (head, list) = text
            .split_once('\n')
            .ok_or_else(|| corrupt("no header line".into()))?;
        let mut fields = head.split(' ').map(number);
        let mut field = || {
            fields
                .next()
                .unwrap_or_else(|| Err(corrupt("short header".into())))
        };
        let (id, revision, seconds, nanos) = (field()?, field()?, field()?, field()?);
        let leader = match list.split_once('\n') {
            Some((first, _)) => unescape(first)?,
            None if list.is_empty() => String::new(),
            None => return Err(corrupt("the leader's line was cut short".into())),
        };
        (id, revision, seconds, nanos, leader)
    };
    // a term that never had a change of candidates (Create) has no time: its revision is the
    // Redis clock in microseconds when it was made
    let changed_unix_ms = if seconds != 0 || nanos != 0 {
        seconds * 1000 + nanos / 1_000_000
    } else {
        revision / 1000
    };
    Ok(Head {
        id,
        revision,
        leader,
        changed_unix_ms: changed_unix_ms as i64,
    })
}

fn number(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| corrupt(format!("{s:?} is not a number")))
}

/// The form stored before the library: a JSON object with unescaped ids.
#[derive(Debug, Deserialize)]
struct JsonTerm {
    id: u64,
    rev: u64,
    ts: i64,
    tsn: i32,
    c: Vec<String>,
}

fn decode_json(raw: &[u8]) -> Result<Term, StoreError> {
    let s: JsonTerm = serde_json::from_slice(raw).map_err(|e| corrupt(e.to_string()))?;
    Ok(Term {
        id: s.id,
        timestamp: (s.ts != 0 || s.tsn != 0).then_some(Timestamp {
            seconds: s.ts,
            nanos: s.tsn,
        }),
        candidates: s.c,
        revision: s.rev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_terms_decode() {
        let t = decode_term(b"3 17 1700000000 5000\na\nb\n").expect("decodes");
        assert_eq!(t.id, 3);
        assert_eq!(t.revision, 17);
        assert_eq!(t.candidates, ["a", "b"]);
        assert_eq!(t.timestamp.map(|t| t.nanos), Some(5000));
        // the fixed-width header of a big election
        let t = decode_term(b"00000000000000000003 00001795715313594785 1795715313 000005000\na\n")
            .expect("decodes");
        assert_eq!((t.id, t.revision), (3, 1_795_715_313_594_785));
        assert_eq!(
            t.timestamp.map(|t| (t.seconds, t.nanos)),
            Some((1_795_715_313, 5000))
        );
        let empty = decode_term(b"0 1 0 0\n").expect("decodes");
        assert_eq!(empty.leader(), "");
        assert!(empty.candidates.is_empty());
        assert!(empty.timestamp.is_none());
        for bad in [
            &b""[..],
            b"1 2 3\n",
            b"1 2 3 4",
            b"1 2 3 4\na",
            b"x 2 3 4\n",
            b"1 2 3 4\n\\q\n",
        ] {
            assert!(decode_term(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_with_line_feeds_and_backslashes_survive() {
        let ids = ["a\nb", "c\\", "\\n", "plain"];
        let mut raw = String::from("1 2 3 4\n");
        for id in ids {
            let e = escape(id);
            assert!(!e.contains('\n'));
            raw.push_str(&e);
            raw.push('\n');
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            decode_term(raw.as_bytes()).expect("decodes").candidates,
            ids
        );
    }

    #[test]
    fn heads_decode_from_the_start_of_a_term() {
        let h = decode_head(b"3 17 1700000000 5000000\na\\nb\nc\nd").expect("decodes");
        assert_eq!((h.id, h.revision, h.leader.as_str()), (3, 17, "a\nb"));
        assert_eq!(h.changed_unix_ms, 1_700_000_000_005);
        let created = decode_head(b"0 1700000000123456 0 0\n").expect("decodes");
        assert_eq!(
            (created.leader.as_str(), created.changed_unix_ms),
            ("", 1_700_000_000_123)
        );
        assert!(decode_head(b"3 17 1 0\nab").is_err(), "a leader cut short");
        let json = decode_head(br#"{"id":3,"rev":17,"ts":1700000000,"tsn":0,"c":["a","b"]}"#)
            .expect("decodes");
        assert_eq!((json.id, json.leader.as_str()), (3, "a"));
    }

    #[test]
    fn terms_stored_by_earlier_versions_decode() {
        let t = decode_term(br#"{"id":3,"rev":17,"ts":1700000000,"tsn":5000,"c":["a","b"]}"#)
            .expect("decodes");
        assert_eq!((t.id, t.revision), (3, 17));
        assert_eq!(t.candidates, ["a", "b"]);
        assert!(decode_term(b"{}").is_err());
    }
}
