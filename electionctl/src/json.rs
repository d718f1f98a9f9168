//! Terms as JSON lines: `{"id":N,"leader":"...","candidates":[...],"timestamp":"RFC 3339"}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use electiond_client::{Reset, Term, WatchItem};
use serde_json::{json, Value};

/// The fields in the documented order (a JSON object's order is free, a reader's eye is not).
fn fields(t: &Term) -> String {
    format!(
        "\"id\":{},\"leader\":{},\"candidates\":{},\"timestamp\":{}",
        t.id,
        json!(t.leader.as_deref().unwrap_or("")),
        json!(t.candidates),
        json!(t.timestamp.map(rfc3339)),
    )
}

/// One term as a JSON line.
pub fn term(t: &Term) -> String {
    format!("{{{}}}", fields(t))
}

/// A watched term; a reset (lower id than before) says why in `"reset"`.
pub fn item(i: &WatchItem) -> String {
    match i.reset {
        None => term(&i.term),
        Some(r) => {
            let why = match r {
                Reset::Deleted => "deleted",
                Reset::DataLost => "redis-lost-data",
            };
            format!("{{{},\"reset\":{}}}", fields(&i.term), json!(why))
        }
    }
}

/// A term from the JSON `snapshot` prints (the timestamp is ignored).
pub fn parse_term(text: &str) -> Result<Term, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    let id = v["id"].as_u64().ok_or("\"id\" must be a number")?;
    let leader = v["leader"].as_str().unwrap_or("");
    let candidates = v["candidates"]
        .as_array()
        .ok_or("\"candidates\" must be a list")?
        .iter()
        .map(|c| {
            c.as_str()
                .map(str::to_owned)
                .ok_or("candidates must be strings")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Term {
        id,
        leader: (!leader.is_empty()).then(|| leader.to_owned()),
        candidates,
        timestamp: None,
    })
}

/// UTC, microseconds: `2026-11-26T10:13:48.123456Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_689_337_628_024);
        assert_eq!(rfc3339(t), "2026-11-26T10:35:37.628024Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // a leap day
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
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
}
