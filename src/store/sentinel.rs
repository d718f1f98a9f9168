//! Reaching the master that the Sentinels name, with its failover epoch.
//!
//! Each Sentinel is asked `SENTINEL MASTER <name>`, whose one reply holds the master's address
//! and the failover epoch that made it master (`config-epoch`). The epoch goes with every
//! function call made on a connection to that master, so that term ids handed out by two
//! masters of one group never meet (see `next_id` in `lua/prelude.lua`). For that, the address
//! and the epoch must belong together:
//! - They come from one reply of one Sentinel, never from two commands.
//! - A reply is used only when the Sentinel is not itself in the middle of a failover: the
//!   Sentinel leading one sets the new epoch a moment before it reports the new address, and
//!   in between its `SENTINEL MASTER` names the old master with the new epoch. Sentinels that
//!   only observe a failover switch both at once.
//! - A connection belongs to one master for its life: when Sentinel turns a master into a
//!   replica it closes every client connection of that Redis, so a connection made under one
//!   epoch is never used on a master of a later one.
//!
//! Of the usable replies, the one with the highest epoch wins, and the Redis it names must say
//! that it is a master (`ROLE`) before a connection to it is used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError,
    RedisResult, TlsCertificates,
};
use tokio::sync::Mutex;

use super::StoreError;

/// How long to wait for the other Sentinels once one has answered.
const LATE: Duration = Duration::from_millis(100);

/// The Sentinels of one master group, and what they last said.
pub(super) struct Sentinels {
    /// One client per Sentinel, with its URL's credentials and TLS.
    sentinels: Vec<redis::Client>,
    /// A connection per Sentinel, made on first use and again after one fails.
    conns: Vec<Mutex<Option<MultiplexedConnection>>>,
    /// The master's name in Sentinel.
    name: String,
    /// How to reach the master: TLS or not, its credentials (the address is filled in).
    master_info: ConnectionInfo,
    ca: Option<Vec<u8>>,
    config: AsyncConnectionConfig,
    timeout: Duration,
    /// The highest failover epoch any Sentinel has named.
    latest: AtomicU64,
}

/// A master, as one Sentinel named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// Where it is.
    pub addr: ConnectionAddr,
    /// The failover epoch that made it master (0 until the first failover).
    pub epoch: u64,
}

impl Sentinels {
    /// The first Sentinel URL's credentials authenticate to the Sentinels; `rediss://` Sentinel
    /// URLs mean TLS to the Sentinels and to the master alike, verified with `ca` when given.
    /// `username` and `password` are the master's. Connects nothing yet.
    pub fn new(
        urls: &[String],
        name: &str,
        username: Option<&str>,
        password: Option<&str>,
        ca: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let infos = urls
            .iter()
            .map(|u| u.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let Some(first) = infos.first() else {
            return Err(StoreError::Corrupt("no Sentinel URL".into()));
        };
        let tls = infos
            .iter()
            .any(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }));
        let sentinel_settings = first.redis_settings().clone();
        let sentinels = infos
            .iter()
            .map(|i| {
                let info = i.clone().set_redis_settings(sentinel_settings.clone());
                client(info, ca)
            })
            .collect::<RedisResult<Vec<_>>>()?;
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(u) = username {
            settings = settings.set_username(u);
        }
        if let Some(p) = password {
            settings = settings.set_password(p);
        }
        let placeholder = if tls {
            ConnectionAddr::TcpTls {
                host: String::new(),
                port: 0,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(String::new(), 0)
        };
        let master_info = first
            .clone()
            .set_addr(placeholder)
            .set_redis_settings(settings);
        Ok(Self {
            conns: sentinels.iter().map(|_| Mutex::new(None)).collect(),
            sentinels,
            name: name.to_owned(),
            master_info,
            ca: ca.map(<[u8]>::to_vec),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            timeout,
            latest: AtomicU64::new(0),
        })
    }

    /// The highest failover epoch any Sentinel has named so far: a connection made under a
    /// lower one leads to a master that has been replaced.
    pub fn latest_epoch(&self) -> u64 {
        self.latest.load(Ordering::Relaxed)
    }

    /// What the Sentinels say now, best first: every usable answer, highest epoch first.
    /// Asks them all at once, each within the timeout, and stops waiting once a majority has
    /// answered, or [`LATE`] after the first usable answer: a Sentinel that is down must not
    /// hold up every new connection.
    pub async fn named(&self) -> RedisResult<Vec<Named>> {
        use futures::StreamExt;
        let mut asks: futures::stream::FuturesUnordered<_> =
            (0..self.sentinels.len()).map(|i| self.ask(i)).collect();
        let majority = self.sentinels.len() / 2 + 1;
        let (mut answered, mut named, mut until) = (0, Vec::new(), None);
        loop {
            let next = match until {
                Some(t) => match tokio::time::timeout_at(t, asks.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => asks.next().await,
            };
            let Some(answer) = next else { break };
            answered += 1;
            if let Ok(Some(n)) = answer {
                named.push(n);
                until.get_or_insert_with(|| tokio::time::Instant::now() + LATE);
            }
            if answered >= majority && !named.is_empty() {
                break;
            }
        }
        named.sort_by_key(|n: &Named| std::cmp::Reverse(n.epoch));
        named.dedup();
        let Some(best) = named.first() else {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "no Sentinel names a master that is up",
            )));
        };
        let before = self.latest.fetch_max(best.epoch, Ordering::Relaxed);
        if best.epoch > before {
            tracing::info!(
                master = %best.addr,
                epoch = best.epoch,
                "following the master the Sentinels name, of a newer failover epoch"
            );
        }
        Ok(named)
    }

    /// Sentinel `i`'s answer: `None` when it knows no usable master (it thinks it is down, or
    /// it is failing it over right now).
    async fn ask(&self, i: usize) -> RedisResult<Option<Named>> {
        let mut slot = self.conns[i].lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => {
                bounded(
                    self.timeout,
                    self.sentinels[i].get_multiplexed_async_connection_with_config(&self.config),
                )
                .await?
            }
        };
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("MASTER").arg(&self.name);
        let reply: std::collections::HashMap<String, String> =
            bounded(self.timeout, cmd.query_async(&mut conn)).await?;
        *slot = Some(conn);
        Ok(self.usable(&reply))
    }

    fn usable(&self, reply: &std::collections::HashMap<String, String>) -> Option<Named> {
        let flags: Vec<&str> = reply.get("flags")?.split(',').collect();
        let down = ["s_down", "o_down", "failover_in_progress"];
        if !flags.contains(&"master") || flags.iter().any(|f| down.contains(f)) {
            return None;
        }
        let host = reply.get("ip")?.clone();
        let port = reply.get("port")?.parse().ok()?;
        let epoch = reply.get("config-epoch")?.parse().ok()?;
        let addr = match self.master_info.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        Some(Named { addr, epoch })
    }

    /// A client for the master `named` names (credentials and TLS as configured).
    pub fn client(&self, named: &Named) -> RedisResult<redis::Client> {
        let info = self.master_info.clone().set_addr(named.addr.clone());
        client(info, self.ca.as_deref())
    }

    /// A connection to the current master, checked to be one, and its epoch. Only the master
    /// of the highest epoch any Sentinel has named will do: an older one may still take
    /// writes (cut off from the Sentinels), but they would be lost.
    pub async fn connect(&self) -> RedisResult<(MultiplexedConnection, u64)> {
        let named = self.named().await?;
        let newest = named[0].epoch;
        if newest < self.latest_epoch() {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "the Sentinels that answered name a master that has been replaced",
            )));
        }
        let mut last = None;
        for named in named.into_iter().take_while(|n| n.epoch == newest) {
            let r = async {
                let mut conn = self
                    .client(&named)?
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?;
                let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
                match role.first() {
                    Some(redis::Value::BulkString(r)) if r == b"master" => Ok(conn),
                    _ => Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "the Redis a Sentinel names as master is not one",
                    ))),
                }
            };
            match bounded(self.timeout, r).await {
                Ok(conn) => return Ok((conn, named.epoch)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((redis::ErrorKind::Client, "no Sentinel names a master"))
        }))
    }
}

fn client(info: ConnectionInfo, ca: Option<&[u8]>) -> RedisResult<redis::Client> {
    match ca {
        Some(ca) if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) => {
            redis::Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.to_vec()),
                },
            )
        }
        _ => redis::Client::open(info),
    }
}

async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in time",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinels() -> Sentinels {
        Sentinels::new(
            &["redis://127.0.0.1:1".to_owned()],
            "elect",
            None,
            None,
            None,
            Duration::from_secs(1),
        )
        .expect("sentinels")
    }

    fn reply(flags: &str, ip: &str, epoch: &str) -> std::collections::HashMap<String, String> {
        [
            ("name", "elect"),
            ("ip", ip),
            ("port", "6379"),
            ("flags", flags),
            ("config-epoch", epoch),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn a_master_that_is_down_or_being_failed_over_is_not_used() {
        let s = sentinels();
        let named = s.usable(&reply("master", "10.0.0.1", "3")).expect("usable");
        assert_eq!(named.epoch, 3);
        assert_eq!(named.addr, ConnectionAddr::Tcp("10.0.0.1".into(), 6379));
        // the Sentinel leading a failover names the old address with the new epoch for a
        // moment: such an answer must not be taken
        for flags in [
            "master,failover_in_progress",
            "master,s_down",
            "master,s_down,o_down",
            "slave",
        ] {
            assert_eq!(s.usable(&reply(flags, "10.0.0.1", "4")), None, "{flags}");
        }
        let mut no_epoch = reply("master", "10.0.0.1", "3");
        no_epoch.remove("config-epoch");
        assert_eq!(s.usable(&no_epoch), None);
    }
}
