//! Sessions: one KeepAlive keeps a client a candidate in every election it stands in.
//!
//! A client's elections are spread over the buckets; each bucket keeps its clients' sessions
//! and memberships (`lua/prelude.lua`), so a KeepAlive is one function call
//! (`lua/keepalive.lua`) on one Redis, and one per bucket on a Cluster (a call stays in one
//! hash slot), all sent in one round trip per master, whatever the number of elections. The
//! same function with no client is what the sweepers call on a bucket whose earliest session
//! end is due; besides, every call on a bucket first ends the bucket's sessions that ran out.

use super::decode::escape;
use super::scripts::Function;
use super::{cluster, pool, Backend, Store, StoreError};
use crate::election::MemberId;
use crate::metrics::Metrics;

impl Store {
    /// Extends `client`'s session in every bucket, confirmed by `WAIT` when configured.
    /// Returns how many elections it stands in.
    pub async fn keep_alive(&self, client: &MemberId) -> Result<u64, StoreError> {
        let escaped = escape(client.as_str());
        let all: Vec<usize> = (0..self.keys.lease_indexes().len()).collect();
        self.on_buckets(&escaped, &all).await
    }

    /// Ends the sessions that ran out in `buckets` (and the candidacies they held): what the
    /// sweepers run where a bucket's lease index says a session end is due. One call per
    /// bucket, sent together (the pool bounds how many run at once): a client gone from
    /// thousands of elections is thousands of changes, and one call would hold Redis for all
    /// of them at once.
    pub async fn end_sessions(&self, buckets: &[usize]) -> Result<(), StoreError> {
        let each: Vec<[usize; 1]> = buckets.iter().map(|b| [*b]).collect();
        futures::future::try_join_all(each.iter().map(|b| self.on_buckets("", b))).await?;
        Ok(())
    }

    /// KeepAlive's function for `client` (escaped; "" for none) on each of `buckets`, sent
    /// together, confirmed by `WAIT` when configured. Returns the elections it stands in.
    async fn on_buckets(&self, client: &str, buckets: &[usize]) -> Result<u64, StoreError> {
        let scripts = &*self.scripts;
        // the call on `buckets`, on a master of failover epoch `epoch`
        let call = |buckets: &[usize], epoch: u64| {
            let buckets: Vec<_> = buckets.iter().map(|b| self.keys.bucket(*b)).collect();
            let keys: Vec<&str> = buckets
                .iter()
                .flat_map(|b| [b.index, b.sessions, b.members])
                .collect();
            let mut call = scripts.call(Function::KeepAlive, &keys);
            call.arg("")
                .arg(self.lease_ttl_ms)
                .arg(0)
                .arg(client)
                .arg("")
                .arg(0)
                .arg(epoch)
                .arg(self.history_len);
            for b in &buckets {
                call.arg(&b.prefix);
            }
            call
        };
        let (counts, acked): (Vec<(u64, u64, String)>, Option<u64>) = self
            .bounded(async {
                let pool = match &self.backend {
                    Backend::Pooled { pool, .. } => pool,
                    Backend::Cluster(c) => {
                        // a call stays in one hash slot: one per bucket; the connection sends
                        // each node's together
                        let calls: Vec<redis::Cmd> =
                            buckets.iter().map(|b| call(&[*b], 0)).collect();
                        let r = Box::pin(cluster::call(c, |conn| async move {
                            let runs =
                                calls.iter().map(|cmd| {
                                    let mut conn = conn.clone();
                                    async move {
                                        scripts.run::<(u64, u64, String), _>(cmd, &mut conn).await
                                    }
                                });
                            let counts = futures::future::try_join_all(runs).await?;
                            if self.wait_replicas == 0 {
                                return Ok((counts, None));
                            }
                            // every master ran some: the least confirmed of them all
                            let mut conn = conn.clone();
                            let acked = conn
                                .route_command(self.wait_command(), cluster::all_masters_least())
                                .await?;
                            Ok((counts, Some(acked)))
                        }))
                        .await?;
                        let (counts, acked) = r;
                        let acked = match acked {
                            Some(v) => Some(
                                redis::FromRedisValue::from_redis_value(v)
                                    .map_err(|e| StoreError::Corrupt(format!("WAIT reply: {e}")))?,
                            ),
                            None => None,
                        };
                        return Ok((counts, acked));
                    }
                };
                // a KeepAlive is safe to repeat: on the next pooled connection after a broken one
                let mut retries = self.pool_size;
                loop {
                    let mut conn = Box::pin(pool.get()).await?;
                    // one Redis: all buckets in one call
                    let call = call(buckets, conn.epoch);
                    let r = match Box::pin(scripts.run::<(u64, u64, String), _>(&call, &mut *conn))
                        .await
                    {
                        Ok(counts) if self.wait_replicas > 0 => Box::pin(self.wait(&mut conn))
                            .await
                            .map(|acked| (vec![counts], Some(acked))),
                        r => r.map(|counts| (vec![counts], None)),
                    };
                    match pool::check(conn, r) {
                        Err(e) if retries > 0 && pool::breaks_connection(&e) => retries -= 1,
                        r => return Ok(r?),
                    }
                }
            })
            .await?;
        if let Some(got) = acked.filter(|got| *got < u64::from(self.wait_replicas)) {
            return Err(StoreError::NotReplicated {
                got,
                want: self.wait_replicas,
            });
        }
        let expired = counts.iter().map(|(_, e, _)| e).sum();
        if expired > 0 {
            Metrics::add(&self.metrics.lease_expiries, expired);
        }
        for (_, _, causes) in &counts {
            self.metrics.leader_changes(causes);
        }
        Ok(counts.iter().map(|(n, _, _)| n).sum())
    }
}
