//! What the admin room reads: one bucket's share of a listing, an election's history, one
//! election with its leases, and how many elections there are. Nothing here changes anything:
//! listing and inspecting are reader functions (`lua/list.lua`, `lua/inspect.lua`, run with
//! `FCALL_RO`), the history and the count plain reads. Each is bounded by what it is asked for,
//! never by the number of elections, so none holds Redis for long.

use redis::{Cmd, FromRedisValue};

use super::decode::{decode_head, decode_term, escape, unescape, Head};
use super::keys::BUCKETS;
use super::scripts::Reader;
use super::{cluster, pool, Backend, Store, StoreError};
use crate::election::{ElectionName, Term};

/// One election as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub head: Head,
    pub candidates: u32,
}

/// One change of leader, as its election's history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The term id after the change.
    pub id: u64,
    /// The new leader; "" when the election was left without one.
    pub leader: String,
    /// When, in ms on the Redis clock.
    pub unix_ms: i64,
    /// Why: `enter`, `withdraw`, `expired`, `evict`, `anoint`, `promote`, `restore`, `delete`.
    pub cause: String,
}

/// One election as the console shows it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The Redis clock when it was read, in ms.
    pub now_ms: i64,
    /// The term (`None`: no such election).
    pub term: Option<Term>,
    /// Each candidate's lease, in the term's order.
    pub leases: Vec<Lease>,
}

/// Where a candidate's lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Runs until then (ms, Redis clock).
    Until(i64),
    /// Its own lease ran out, and its client's session holds it until then.
    Session(i64),
    /// Entered while expiry was off: no lease.
    None,
}

/// A lease held by a session (see `HELD` in `lua/prelude.lua`).
const HELD: f64 = 9_000_000_000_000_000.0;

impl Store {
    /// Up to `limit` elections of bucket `bucket` whose name starts with `prefix`, in name
    /// order, from the first after `after` ("": from the first). An election whose term is
    /// gone (deleted as it was read) is left out.
    pub async fn list_bucket(
        &self,
        bucket: usize,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let keys = self.keys.bucket(bucket);
        let names = keys.names();
        let mut cmd = self.scripts.read(Reader::List, &[&names]);
        // a token from a listing of another prefix must not start below this one
        let after = if after < prefix { "" } else { after };
        // the header (at most 62 bytes and its line feed) and a leader of up to ~450 bytes; a
        // longer one is read whole
        const READ_TO: usize = 511;
        cmd.arg(&keys.prefix)
            .arg(prefix)
            .arg(after)
            .arg(limit)
            .arg(READ_TO);
        let raw: Vec<redis::Value> = self.query(&cmd, true).await?;
        let mut out = Vec::with_capacity(raw.len() / 3);
        for item in raw.chunks(3) {
            let [name, head, count] = item else {
                return Err(StoreError::Corrupt("listing reply not in threes".into()));
            };
            let name: String = from(name)?;
            let head: Vec<u8> = from(head)?;
            if head.is_empty() || !name.starts_with(prefix) {
                continue;
            }
            out.push(Listed {
                head: decode_head(&head)?,
                candidates: from(count)?,
                name,
            });
        }
        Ok(out)
    }

    /// The last `limit` changes of leader of `name`, newest first.
    pub async fn history(
        &self,
        name: &ElectionName,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.keys.election(name).history)
            .arg(0)
            .arg(limit - 1);
        let lines: Vec<String> = self.query(&cmd, false).await?;
        lines.iter().map(|l| parse_change(l)).collect()
    }

    /// `name` with every candidate's lease, as stored now (no rule applied).
    pub async fn inspect(&self, name: &ElectionName) -> Result<Inspection, StoreError> {
        let keys = self.keys.election(name);
        let cmd = self
            .scripts
            .read(Reader::Inspect, &[&keys.sessions, &keys.term, &keys.leases]);
        type Reply = (i64, Option<Vec<u8>>, Vec<(String, f64)>, Vec<(String, i64)>);
        let (now_ms, raw, leases, held): Reply = self.query(&cmd, true).await?;
        let term = raw.as_deref().map(decode_term).transpose()?;
        let leases = match &term {
            None => Vec::new(),
            Some(t) => t
                .candidates
                .iter()
                .map(|c| {
                    let c = escape(c);
                    match leases.iter().find(|(m, _)| *m == *c) {
                        Some((_, s)) if *s >= HELD => held
                            .iter()
                            .find(|(m, _)| *m == *c)
                            .map_or(Lease::Session(0), |(_, end)| Lease::Session(*end)),
                        Some((_, s)) if *s > 0.0 => Lease::Until(*s as i64),
                        _ => Lease::None,
                    }
                })
                .collect(),
        };
        Ok(Inspection {
            now_ms,
            term,
            leases,
        })
    }

    /// How many elections exist: one count per bucket, sent together.
    pub async fn count_elections(&self) -> Result<u64, StoreError> {
        let counts = (0..BUCKETS as usize).map(|b| {
            let mut cmd = redis::cmd("ZCARD");
            cmd.arg(self.keys.bucket(b).names());
            async move { self.query::<u64>(&cmd, false).await }
        });
        Ok(futures::future::try_join_all(counts).await?.iter().sum())
    }

    /// Lists the elections stored by versions that kept no name sets (found by `SCAN`, a
    /// thousand keys at a time; on a Cluster, bucket by bucket on its master): what each
    /// replica does once when it starts, so that elections made by replicas of an earlier
    /// version, during a rolling upgrade too, are listed by the next start at the latest.
    /// Returns how many were added.
    pub async fn list_unlisted(&self) -> Result<u64, StoreError> {
        let mut added = 0;
        match &self.backend {
            // one keyspace: one scan for every bucket
            Backend::Pooled { .. } => {
                let pattern = format!("{}:{{e*}}:*:term", glob_escape(self.keys.prefix()));
                added += self.scan_and_note(&pattern, None).await?;
            }
            // a scan stays on one node: each bucket's, on its master
            Backend::Cluster(_) => {
                for b in 0..BUCKETS as usize {
                    let keys = self.keys.bucket(b);
                    let pattern = format!("{}*:term", glob_escape(&keys.prefix));
                    added += self.scan_and_note(&pattern, Some(keys.names())).await?;
                }
            }
        }
        Ok(added)
    }

    /// Scans for term keys matching `pattern` (on the master of `route`'s slot, on a Cluster)
    /// and lists each election found in its bucket.
    async fn scan_and_note(&self, pattern: &str, route: Option<String>) -> Result<u64, StoreError> {
        let mut cursor = 0u64;
        let mut added = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, found): (u64, Vec<String>) = match (&self.backend, &route) {
                (Backend::Cluster(c), Some(key)) => {
                    let to = cluster::master_of(key);
                    self.bounded(async {
                        let v = cluster::call(c, |mut conn| async move {
                            conn.route_command(scan, to).await
                        })
                        .await?;
                        redis::FromRedisValue::from_redis_value(v)
                            .map_err(|e| StoreError::Corrupt(format!("SCAN reply: {e}")))
                    })
                    .await?
                }
                _ => self.query(&scan, false).await?,
            };
            let mut by_bucket: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
            for key in found {
                if let Some((b, name)) = self.keys.parse_term_key(&key) {
                    by_bucket.entry(b).or_default().push(name.to_owned());
                }
            }
            for (b, names) in by_bucket {
                let keys = self.keys.bucket(b);
                let mut inv = self.scripts.note.prepare_invoke();
                inv.key(keys.names()).arg(&keys.prefix).arg(&names);
                added += self
                    .bounded(async {
                        Ok(match &self.backend {
                            Backend::Pooled { pool, .. } => {
                                let mut conn = pool.get().await?;
                                let r = inv.invoke_async::<u64>(&mut *conn).await;
                                pool::check(conn, r)?
                            }
                            Backend::Cluster(c) => {
                                cluster::call(c, |mut conn| async move {
                                    inv.invoke_async::<u64>(&mut conn).await
                                })
                                .await?
                            }
                        })
                    })
                    .await?;
            }
            if next == 0 {
                return Ok(added);
            }
            cursor = next;
        }
    }

    /// Runs one command (a function call when `function`, loading the library if Redis lacks
    /// it) where its first key lives, within the store's time bound.
    async fn query<T: FromRedisValue + Send>(
        &self,
        cmd: &Cmd,
        function: bool,
    ) -> Result<T, StoreError> {
        let scripts = &*self.scripts;
        self.bounded(async {
            match &self.backend {
                Backend::Pooled { pool, .. } => {
                    let mut conn = Box::pin(pool.get()).await?;
                    let r = if function {
                        Box::pin(scripts.run(cmd, &mut *conn)).await
                    } else {
                        cmd.query_async(&mut *conn).await
                    };
                    Ok(pool::check(conn, r)?)
                }
                Backend::Cluster(c) => Ok(Box::pin(cluster::call(c, |mut conn| async move {
                    if function {
                        scripts.run(cmd, &mut conn).await
                    } else {
                        cmd.query_async(&mut conn).await
                    }
                }))
                .await?),
            }
        })
        .await
    }
}

/// `s` with the characters `SCAN`'s `MATCH` treats as special escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn from<T: FromRedisValue>(v: &redis::Value) -> Result<T, StoreError> {
    T::from_redis_value(v.clone()).map_err(|e| StoreError::Corrupt(format!("listing reply: {e}")))
}

/// One history line: `"<id> <ms> <cause> <leader, escaped>"` (see `record` in
/// `lua/prelude.lua`).
fn parse_change(line: &str) -> Result<Change, StoreError> {
    let bad = || StoreError::Corrupt(format!("history entry {line:?} does not parse"));
    let mut parts = line.splitn(4, ' ');
    let id = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let unix_ms = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let cause = parts.next().ok_or_else(bad)?.to_owned();
    let leader = unescape(parts.next().ok_or_else(bad)?)?;
    Ok(Change {
        id,
        leader,
        unix_ms,
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_patterns_match_only_the_prefix_given() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("electiond"), "electiond");
    }

    #[test]
    fn history_lines_parse() {
        let c = parse_change("7 1700000000123 anoint a b\\nc").expect("parses");
        assert_eq!(c.id, 7);
        assert_eq!(c.unix_ms, 1_700_000_000_123);
        assert_eq!(c.cause, "anoint");
        assert_eq!(c.leader, "a b\nc");
        let none = parse_change("0 5 delete ").expect("parses");
        assert_eq!((none.id, none.leader.as_str()), (0, ""));
        assert!(parse_change("7 x anoint a").is_err());
        assert!(parse_change("7 5").is_err());
    }
}
