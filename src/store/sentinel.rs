//! Reaching the master that Sentinel names.

use super::StoreError;

/// A Sentinel client for `master`. The first Sentinel URL's credentials authenticate to the
/// Sentinels; `rediss://` Sentinel URLs mean TLS to the Sentinels and to the master alike,
/// verified with `ca` when given.
pub(super) fn sentinel_client(
    sentinels: &[String],
    master: &str,
    username: Option<&str>,
    password: Option<&str>,
    ca: Option<&[u8]>,
) -> Result<redis::sentinel::SentinelClient, StoreError> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    use redis::{ConnectionAddr, IntoConnectionInfo, TlsCertificates, TlsMode};

    let infos = sentinels
        .iter()
        .map(|u| u.as_str().into_connection_info())
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let tls = infos
        .iter()
        .any(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }));
    let mut b = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        master,
        SentinelServerType::Master,
    )?;
    if let Some(first) = infos.first() {
        if let Some(u) = first.redis_settings().username() {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = first.redis_settings().password() {
            b = b.set_client_to_sentinel_password(p);
        }
    }
    if let Some(u) = username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = password {
        b = b.set_client_to_redis_password(p);
    }
    if tls {
        b = b
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(ca) = ca {
            let certs = || TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            };
            b = b
                .set_client_to_sentinel_certificates(certs())
                .set_client_to_redis_certificates(certs());
        }
    }
    Ok(b.build()?)
}
