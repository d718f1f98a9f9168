//! Running one operation: its function, then, when configured, `WAIT` for replicas.

use super::decode::escape;
use super::scripts::Function;
use super::{cluster, decode_term, pool, Answer, Backend, ElectionKeys, Op, Store, StoreError};
use crate::election::{ElectionName, MemberId, Rejection, Term};
use crate::metrics::Metrics;

impl Store {
    /// Runs `op` on `election` as one function call; `caller` is the request's client id, if any.
    /// Returns the term after the operation.
    pub async fn apply(
        &self,
        election: &ElectionName,
        caller: Option<&MemberId>,
        op: Op<'_>,
    ) -> Result<Term, StoreError> {
        self.answer(election, caller, op)
            .await
            .map(Answer::into_term)
    }

    /// [`Self::apply`], with a big election's state as held here (see `recent.rs`), so that
    /// its answer can be encoded once for all who ask for that state.
    pub async fn answer(
        &self,
        election: &ElectionName,
        caller: Option<&MemberId>,
        op: Op<'_>,
    ) -> Result<Answer, StoreError> {
        let keys = self.keys.election(election);
        let function = match op {
            Op::Enter => Function::Enter,
            Op::Withdraw => Function::Withdraw,
            Op::Anoint(_) => Function::Anoint,
            Op::Promote(_) => Function::Promote,
            Op::Evict(_) => Function::Evict,
            Op::Restore(_) => Function::Restore,
            Op::Create => Function::Create,
            Op::Delete => Function::Delete,
            Op::GetTerm => Function::Refresh,
            Op::Expire => Function::Expire,
        };
        let scripts = &*self.scripts;
        // a big election's last state seen here: "same" answers that it is still the current one
        let known = match op {
            Op::GetTerm => self.recent.get(&keys.term),
            _ => None,
        };
        // a read that would change nothing needs no function (see `read_plainly`); with WAIT
        // configured a read runs the function and its WAIT, which refuses the read on a master
        // cut off from its replicas: a state read there may be lost in the failover to come
        if matches!(op, Op::GetTerm)
            && caller.is_none()
            && known.is_none()
            && self.wait_replicas == 0
        {
            if let Some(raw) = self.read_plainly(&keys, election).await? {
                return Ok(match self.recent.saw(&keys.term, decode_term(&raw)?) {
                    Ok(held) => Answer::Held(held),
                    Err(term) => Answer::Term(term),
                });
            }
        }
        // the call on a master of failover epoch `epoch` (see `next_id` in lua/prelude.lua)
        let call = |epoch: u64| {
            let mut call = scripts.call(
                function,
                &[
                    &keys.index,
                    &keys.sessions,
                    &keys.members,
                    &keys.term,
                    &keys.leases,
                ],
            );
            call.arg(&keys.channel)
                .arg(self.lease_ttl_ms)
                .arg(self.max_candidates)
                .arg(&*escape(caller.map_or("", MemberId::as_str)))
                .arg(election.as_str())
                .arg(self.max_term_bytes)
                .arg(epoch)
                .arg(self.history_len);
            match op {
                Op::GetTerm => {
                    if let Some(held) = &known {
                        call.arg(held.term.revision);
                    }
                }
                Op::Anoint(c) | Op::Promote(c) | Op::Evict(c) => {
                    call.arg(&*escape(c.as_str()));
                }
                Op::Restore(snap) => {
                    call.arg(snap.id);
                    for c in &snap.candidates {
                        call.arg(&*escape(c.as_str()));
                    }
                }
                _ => {}
            }
            call
        };
        let call = &call;
        let keys = &keys;
        let ((status, raw, expired, causes), acked): ((String, Vec<u8>, u64, String), Option<u64>) =
            self.bounded(async {
                let pool = match &self.backend {
                    Backend::Pooled { pool, .. } => pool,
                    Backend::Cluster(c) => {
                        // the cluster connection follows redirections and reconnects itself
                        // boxed, as every large future here: a call's future is moved several
                        // times on its way through the gRPC stack, and each move copies it
                        let (reply, acked) = Box::pin(cluster::call(c, |mut conn| async move {
                            // the function reads the node's own epoch
                            let reply = scripts.run(&call(0), &mut conn).await?;
                            if self.wait_replicas == 0 {
                                return Ok((reply, None));
                            }
                            // WAIT goes to the master that ran the script, on the same
                            // connection
                            let route = cluster::master_of(&keys.term);
                            let acked = conn.route_command(self.wait_command(), route).await?;
                            Ok((reply, Some(acked)))
                        }))
                        .await?;
                        let acked = match acked {
                            Some(v) => Some(
                                redis::FromRedisValue::from_redis_value(v)
                                    .map_err(|e| StoreError::Corrupt(format!("WAIT reply: {e}")))?,
                            ),
                            None => None,
                        };
                        return Ok((reply, acked));
                    }
                };
                // Pooled connections that broke since their last use (a Redis restart) fail at
                // once and are discarded; an operation whose repetition changes nothing more is
                // retried on the next one, within the same time bound. Promote, Evict and
                // Delete are not, since a first attempt may have been applied.
                let mut retries = if op.is_idempotent() {
                    self.pool_size
                } else {
                    0
                };
                loop {
                    let mut conn = Box::pin(pool.get()).await?;
                    let r = if self.wait_replicas == 0 {
                        // shared: the pooled object goes back at once, and calls made meanwhile
                        // pipeline on the same socket (see pool.rs)
                        let mut shared = conn.share();
                        drop(conn);
                        let call = call(shared.epoch);
                        let r = Box::pin(scripts.run(&call, &mut shared)).await;
                        shared.check(r.map(|reply| (reply, None)))
                    } else {
                        // with WAIT configured, the confirmation is asked on the same connection,
                        // so it covers this script's writes; WAIT blocks the connection in Redis,
                        // so the call keeps it to itself
                        let call = call(conn.epoch);
                        let r = match Box::pin(scripts.run(&call, &mut *conn)).await {
                            Ok(reply) => Box::pin(self.wait(&mut conn))
                                .await
                                .map(|acked| (reply, Some(acked))),
                            Err(e) => Err(e),
                        };
                        pool::check(conn, r)
                    };
                    match r {
                        Err(e) if retries > 0 && pool::breaks_connection(&e) => retries -= 1,
                        r => return Ok(r?),
                    }
                }
            })
            .await?;
        if expired > 0 {
            Metrics::add(&self.metrics.lease_expiries, expired);
        }
        self.metrics.leader_changes(&causes);
        if let Some(got) = acked.filter(|got| *got < u64::from(self.wait_replicas)) {
            return Err(StoreError::NotReplicated {
                got,
                want: self.wait_replicas,
            });
        }
        match status.as_str() {
            "ok" => Ok(match self.recent.saw(&keys.term, decode_term(&raw)?) {
                Ok(held) => Answer::Held(held),
                Err(term) => Answer::Term(term),
            }),
            "same" => known.map(Answer::Held).ok_or_else(|| {
                StoreError::Corrupt("\"same\" answered to a call that named no state".into())
            }),
            "not_candidate" => {
                let c = match op {
                    Op::Anoint(c) | Op::Promote(c) | Op::Evict(c) => c.as_str(),
                    _ => "",
                };
                Err(Rejection::NotCandidate(c.to_owned()).into())
            }
            "too_many" => Err(Rejection::TooManyCandidates {
                limit: self.max_candidates,
            }
            .into()),
            "too_big" => Err(Rejection::TermTooBig {
                limit: self.max_term_bytes,
            }
            .into()),
            "not_found" => Err(Rejection::NotFound(election.as_str().to_owned()).into()),
            other => Err(StoreError::Corrupt(format!(
                "unknown script status {other:?}"
            ))),
        }
    }

    /// A GetTerm without a client id, without the function, when it would change nothing: one
    /// `MULTI` of `TIME`, the term, and two scores of the bucket's lease index: the election's
    /// earliest lease, and the bucket's earliest session end (its entry `""`, which every
    /// change of a session keeps). When neither is due, the function would only have read the
    /// same term (no expiry, no session to end, no lease to refresh), so the term read in the
    /// same atomic block is the answer; otherwise `None`, and the function runs. An election
    /// its lease index does not list (no lease granted yet, candidates held by sessions, or
    /// ones that entered while expiry was off) goes to the function too. Not on a Cluster,
    /// whose client does not send `MULTI` blocks.
    async fn read_plainly(
        &self,
        keys: &ElectionKeys,
        election: &ElectionName,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Backend::Pooled { pool, .. } = &self.backend else {
            return Ok(None);
        };
        let expiry = self.lease_ttl_ms > 0;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("TIME").cmd("GET").arg(&keys.term);
        if expiry {
            pipe.cmd("ZMSCORE")
                .arg(&keys.index)
                .arg(election.as_str())
                .arg("");
        }
        type Read = ((u64, u64), Option<Vec<u8>>, Vec<Option<f64>>);
        let read = self
            .bounded(async {
                let conn = Box::pin(pool.get()).await?;
                let mut shared = conn.share();
                drop(conn);
                let r = if expiry {
                    pipe.query_async::<Read>(&mut shared).await
                } else {
                    pipe.query_async::<((u64, u64), Option<Vec<u8>>)>(&mut shared)
                        .await
                        .map(|(time, raw)| (time, raw, Vec::new()))
                };
                Ok(shared.check(r)?)
            })
            .await;
        let ((secs, micros), raw, scores) = match read {
            Ok(r) => r,
            // the function's path retries on another connection and reports what fails
            Err(StoreError::Redis(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if expiry {
            let now_ms = (secs * 1000 + micros / 1000) as f64;
            let (lease, session) = match scores[..] {
                [lease, session] => (lease, session),
                _ => return Ok(None),
            };
            let lease_due = lease.is_none_or(|t| t <= now_ms);
            let session_due = session.is_some_and(|t| t <= now_ms);
            if lease_due || session_due {
                return Ok(None);
            }
        }
        Ok(Some(raw.unwrap_or_else(|| b"0 0 0 0\n".to_vec())))
    }

    /// Asks Redis how many replicas have every write made so far on `conn` (`WAIT`), waiting
    /// at most three quarters of the timeout for `wait_replicas` of them.
    pub(super) async fn wait(&self, conn: &mut pool::Conn) -> redis::RedisResult<u64> {
        self.wait_command().query_async(&mut **conn).await
    }

    pub(super) fn wait_command(&self) -> redis::Cmd {
        let ms = (self.timeout.as_millis() as u64 * 3 / 4).max(1);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.wait_replicas).arg(ms);
        cmd
    }
}
