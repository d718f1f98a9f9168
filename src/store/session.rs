//! Sessions: one KeepAlive keeps a client a candidate in every election it stands in.
//!
//! A client's elections are spread over the buckets; each bucket keeps its clients' sessions
//! and memberships (`lua/prelude.lua`), so a KeepAlive is one function call per bucket
//! (`lua/keepalive.lua`), whatever the number of elections, all sent in one round trip (per
//! master on a Cluster).

use super::decode::escape;
use super::scripts::Function;
use super::{cluster, pool, Backend, Store, StoreError};
use crate::election::MemberId;

impl Store {
    /// Extends `client`'s session in every bucket, confirmed by `WAIT` when configured.
    /// Returns how many elections it stands in.
    pub async fn keep_alive(&self, client: &MemberId) -> Result<u64, StoreError> {
        let escaped = escape(client.as_str());
        let scripts = &*self.scripts;
        // every bucket's call, on a master of failover epoch `epoch`
        let calls = |epoch: u64| {
            let mut pipe = redis::pipe();
            for b in self.keys.buckets() {
                let mut call = scripts.call(Function::KeepAlive, &[b.index, b.sessions, b.members]);
                call.arg("")
                    .arg(self.lease_ttl_ms)
                    .arg(0)
                    .arg(&*escaped)
                    .arg("")
                    .arg(0)
                    .arg(epoch)
                    .arg(&b.prefix);
                pipe.add_command(call);
            }
            pipe
        };
        let (counts, acked): (Vec<u64>, Option<u64>) = self
            .bounded(async {
                let pool = match &self.backend {
                    Backend::Pooled { pool, .. } => pool,
                    Backend::Cluster(c) => {
                        let pipe = calls(0);
                        let r = Box::pin(cluster::call(c, |conn| async move {
                            // one call per bucket; the connection sends each node's together
                            let runs = pipe.cmd_iter().map(|cmd| {
                                let mut conn = conn.clone();
                                async move { scripts.run::<u64, _>(cmd, &mut conn).await }
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
                    let pipe = calls(conn.epoch);
                    let r = match Box::pin(scripts.run_all::<Vec<u64>, _>(&pipe, &mut *conn)).await
                    {
                        Ok(counts) if self.wait_replicas > 0 => Box::pin(self.wait(&mut conn))
                            .await
                            .map(|acked| (counts, Some(acked))),
                        r => r.map(|counts| (counts, None)),
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
        Ok(counts.iter().sum())
    }
}
