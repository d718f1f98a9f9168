//! What electionctl prints: one JSON line per term, election or change, each from one
//! `Serialize` type (fields in the documented order), or the same as aligned columns
//! (`--output table`). Times are RFC 3339 in UTC.

use std::time::SystemTime;

use electiond_client::{Change, ElectionSummary, Reset, Term, WatchItem};
use serde::{Deserialize, Serialize};

/// `{"id":N,"leader":"...","candidates":[...],"timestamp":"RFC 3339"}`, and for a watched
/// term that went back, `"reset"`: why.
#[derive(Serialize)]
struct TermLine<'a> {
    id: u64,
    leader: &'a str,
    candidates: &'a [String],
    timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<&'static str>,
}

/// `{"name":..,"id":..,"leader":..,"candidates":N,"timestamp":..}`: one election of `ls`.
#[derive(Serialize)]
struct ElectionLine<'a> {
    name: &'a str,
    id: u64,
    leader: &'a str,
    candidates: u32,
    timestamp: String,
}

/// `{"id":..,"leader":..,"timestamp":..,"cause":..}`: one change of `history`.
#[derive(Serialize)]
struct ChangeLine<'a> {
    id: u64,
    leader: &'a str,
    timestamp: String,
    cause: &'a str,
}

/// A snapshot as `snapshot` prints it, read back by `restore` (the timestamp is ignored).
#[derive(Deserialize)]
struct SnapshotLine {
    id: u64,
    #[serde(default)]
    leader: String,
    candidates: Vec<String>,
}

fn line(v: &impl Serialize) -> String {
    // these types hold strings and numbers only: encoding cannot fail
    serde_json::to_string(v).unwrap_or_default()
}

/// UTC, microseconds: `2026-11-26T10:13:48.123456Z`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// UTC, milliseconds: what the service's history and listing hold.
fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn term_line(t: &Term, reset: Option<&'static str>) -> String {
    line(&TermLine {
        id: t.id,
        leader: t.leader.as_deref().unwrap_or(""),
        candidates: &t.candidates,
        timestamp: t.timestamp.map(rfc3339),
        reset,
    })
}

/// One term as a JSON line.
pub fn term(t: &Term) -> String {
    term_line(t, None)
}

/// A watched term; a reset (lower id than before) says why in `"reset"`.
pub fn item(i: &WatchItem) -> String {
    let why = i.reset.map(|r| match r {
        Reset::Deleted => "deleted",
        Reset::DataLost => "redis-lost-data",
    });
    term_line(&i.term, why)
}

/// One election of a listing as a JSON line.
pub fn election(e: &ElectionSummary) -> String {
    line(&ElectionLine {
        name: &e.name,
        id: e.id,
        leader: e.leader.as_deref().unwrap_or(""),
        candidates: e.candidates,
        timestamp: rfc3339_ms(e.changed),
    })
}

/// One change of leader as a JSON line.
pub fn change(c: &Change) -> String {
    line(&ChangeLine {
        id: c.id,
        leader: c.leader.as_deref().unwrap_or(""),
        timestamp: rfc3339_ms(c.at),
        cause: &c.cause,
    })
}

/// A term from the JSON `snapshot` prints.
pub fn parse_term(text: &str) -> Result<Term, String> {
    let s: SnapshotLine = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    Ok(Term {
        id: s.id,
        leader: (!s.leader.is_empty()).then_some(s.leader),
        candidates: s.candidates,
        timestamp: None,
    })
}

/// Rows as aligned columns under a header; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut put = |cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        let mut pending = String::new();
        for (i, cell) in cells.enumerate() {
            if !first {
                out.push_str(&pending);
            }
            first = false;
            out.push_str(cell);
            pending = " ".repeat(widths[i] - cell.chars().count() + 2);
        }
        out.push('\n');
    };
    put(&mut header.iter().copied());
    for row in rows {
        put(&mut row.iter().map(String::as_str));
    }
    out
}

/// A time for people: `2026-12-07T02:10:03Z (57m 12s ago)`.
pub fn when(t: SystemTime, now: SystemTime) -> String {
    let at = humantime::format_rfc3339_seconds(t);
    match now.duration_since(t) {
        Ok(ago) => {
            let ago = std::time::Duration::from_secs(ago.as_secs());
            format!("{at} ({} ago)", humantime::format_duration(ago))
        }
        Err(_) => at.to_string(),
    }
}

/// Names and ids in a table: control characters shown escaped, so a hostile name cannot
/// move the terminal's cursor or break the columns.
pub fn shown(s: &str) -> String {
    if s.is_empty() {
        return "-".to_owned();
    }
    s.chars().flat_map(char::escape_debug).collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_689_337_628_024);
        assert_eq!(rfc3339(t), "2026-11-26T10:35:37.628024Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn lines_keep_the_documented_order() {
        let t = Term {
            id: 7,
            leader: Some("a".into()),
            candidates: vec!["a".into(), "b\"".into()],
            timestamp: Some(UNIX_EPOCH),
        };
        assert_eq!(
            term(&t),
            r#"{"id":7,"leader":"a","candidates":["a","b\""],"timestamp":"1970-01-01T00:00:00.000000Z"}"#
        );
        let e = ElectionSummary {
            name: "n".into(),
            id: 3,
            leader: None,
            candidates: 0,
            changed: UNIX_EPOCH + Duration::from_millis(1500),
        };
        assert_eq!(
            election(&e),
            r#"{"name":"n","id":3,"leader":"","candidates":0,"timestamp":"1970-01-01T00:00:01.500Z"}"#
        );
        let c = Change {
            id: 4,
            leader: Some("<b>".into()),
            at: UNIX_EPOCH,
            cause: "expired".into(),
        };
        assert_eq!(
            change(&c),
            r#"{"id":4,"leader":"<b>","timestamp":"1970-01-01T00:00:00.000Z","cause":"expired"}"#
        );
    }

    #[test]
    fn a_snapshot_line_reads_back() {
        let t = Term {
            id: 7,
            leader: Some("a".into()),
            candidates: vec!["a".into(), "b".into()],
            timestamp: None,
        };
        assert_eq!(parse_term(&term(&t)), Ok(t));
        assert!(parse_term("{\"id\":\"x\"}").is_err());
    }

    #[test]
    fn tables_align_and_escape() {
        let rows = vec![
            vec!["a".to_owned(), shown("x\ny")],
            vec!["long-name".to_owned(), shown("")],
        ];
        assert_eq!(
            table(&["NAME", "LEADER"], &rows),
            "NAME       LEADER\na          x\\ny\nlong-name  -\n"
        );
        let now = UNIX_EPOCH + Duration::from_secs(3600);
        assert_eq!(when(UNIX_EPOCH, now), "1970-01-01T00:00:00Z (1h ago)");
    }
}
