//! Typed settings: embedded defaults, then an optional TOML file, then `ELECTION_*` environment
//! variables (each layer overrides the one before).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Everything `electiond` can be configured with. See the README for the table of variables.
/// Its `Debug` output hides secrets (tokens, passwords in the Redis URL).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The TOML file read before the environment (`ELECTION_CONFIG`); unknown keys and
    /// unknown `ELECTION_*` variables are errors, so a typo cannot go unnoticed.
    #[serde(default)]
    pub config: Option<String>,
    /// gRPC listen address (`ELECTION_LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Redis URL (`ELECTION_REDIS_URL`), e.g. `redis://127.0.0.1:6379/0`. When empty, a private
    /// `redis-server` is started on a free local port and stopped on exit.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Sentinels to ask for the master, comma-separated `redis://host:port`
    /// (`ELECTION_REDIS_SENTINELS`); with `ELECTION_REDIS_SENTINEL_MASTER`, replaces
    /// `ELECTION_REDIS_URL`.
    #[serde(default)]
    pub redis_sentinels: Option<String>,
    /// The master's name in Sentinel (`ELECTION_REDIS_SENTINEL_MASTER`).
    #[serde(default)]
    pub redis_sentinel_master: Option<String>,
    /// With Sentinel: the username for the master and its replicas
    /// (`ELECTION_REDIS_MASTER_USERNAME`). The Sentinels' own credentials go in their URLs.
    #[serde(default)]
    pub redis_master_username: Option<String>,
    /// With Sentinel: the password for the master and its replicas
    /// (`ELECTION_REDIS_MASTER_PASSWORD`).
    #[serde(default)]
    pub redis_master_password: Option<String>,
    /// Seed nodes of a Redis Cluster, comma-separated `redis://host:port` or
    /// `rediss://user:password@host:port` (`ELECTION_REDIS_CLUSTER_NODES`); replaces
    /// `ELECTION_REDIS_URL`. The first node's credentials and scheme apply to every node.
    #[serde(default)]
    pub redis_cluster_nodes: Option<String>,
    /// PEM CA certificate to verify a `rediss://` Redis with, instead of the system's roots
    /// (`ELECTION_REDIS_CA_CERT`).
    #[serde(default)]
    pub redis_ca_cert: Option<String>,
    /// Program started for the private Redis (`ELECTION_REDIS_SERVER_BIN`).
    pub redis_server_bin: String,
    /// Prefix of every Redis key and channel this service uses (`ELECTION_KEY_PREFIX`).
    pub key_prefix: String,
    /// Connections in the Redis command pool (`ELECTION_REDIS_POOL_SIZE`).
    pub redis_pool_size: usize,
    /// Upper bound for one Redis round trip, connection set-up included
    /// (`ELECTION_REDIS_TIMEOUT_MS`). A call that would take longer fails with `UNAVAILABLE`.
    pub redis_timeout_ms: u64,
    /// Replicas that must confirm a change (Redis `WAIT`) before it is acknowledged
    /// (`ELECTION_REDIS_WAIT_REPLICAS`); 0 acknowledges once the primary has it.
    pub redis_wait_replicas: u32,
    /// Longest election name, in bytes (`ELECTION_MAX_NAME_BYTES`).
    pub max_name_bytes: usize,
    /// Longest client or candidate id, in bytes (`ELECTION_MAX_ID_BYTES`).
    pub max_id_bytes: usize,
    /// Most candidates one election may hold (`ELECTION_MAX_CANDIDATES`).
    pub max_candidates: usize,
    /// Largest candidate list of one election, in stored bytes: each id plus one
    /// (`ELECTION_MAX_TERM_BYTES`). Bounds how long one operation holds Redis.
    pub max_term_bytes: usize,
    /// Candidate lease, in milliseconds; 0 turns expiry off (`ELECTION_LEASE_TTL_MS`).
    pub lease_ttl_ms: u64,
    /// Most open Events streams on this replica (`ELECTION_MAX_STREAMS`).
    pub max_streams: usize,
    /// Largest request message accepted, in bytes (`ELECTION_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before the process
    /// exits anyway (`ELECTION_DRAIN_TIMEOUT_MS`).
    pub drain_timeout_ms: u64,
    /// How often the server pings each client connection (HTTP/2 PING), in milliseconds; 0
    /// turns pings off (`ELECTION_KEEPALIVE_INTERVAL_MS`).
    pub keepalive_interval_ms: u64,
    /// How long a ping may go unanswered before the connection, and every stream on it, is
    /// closed, in milliseconds (`ELECTION_KEEPALIVE_TIMEOUT_MS`).
    pub keepalive_timeout_ms: u64,
    /// Prometheus `/metrics` listen address (`ELECTION_METRICS_ADDR`); empty turns it off.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// The web console's listen address (`ELECTION_CONSOLE_ADDR`); empty turns it off.
    #[serde(default)]
    pub console_addr: Option<String>,
    /// Leadership changes each election's history keeps (`ELECTION_HISTORY_LEN`); 0 keeps
    /// none.
    pub history_len: u32,
    /// Bearer tokens accepted on the gRPC port, comma-separated (`ELECTION_AUTH_TOKENS`);
    /// empty turns authentication off. Health stays open.
    #[serde(default)]
    pub auth_tokens: Option<String>,
    /// The access file (`ELECTION_ACCESS_FILE`): TOML grants, each a credential (a token's
    /// SHA-256, or a client certificate's name), a role and the elections it covers. Read
    /// again on SIGHUP and when it changes.
    #[serde(default)]
    pub access_file: Option<String>,
    /// PEM CA whose client certificates the gRPC port accepts as credentials
    /// (`ELECTION_TLS_CLIENT_CA`); needs TLS and an access file.
    #[serde(default)]
    pub tls_client_ca: Option<String>,
    /// PEM certificate chain for TLS on the gRPC port (`ELECTION_TLS_CERT`); with
    /// `ELECTION_TLS_KEY`, turns TLS on.
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// PEM private key for TLS on the gRPC port (`ELECTION_TLS_KEY`).
    #[serde(default)]
    pub tls_key: Option<String>,
    /// `text` or `json` (`ELECTION_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Default log filter when `RUST_LOG` is unset (`ELECTION_LOG_LEVEL`).
    pub log_level: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen_addr", &self.listen_addr)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field(
                "redis_sentinels",
                &self
                    .sentinels()
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .field("redis_master_username", &self.redis_master_username)
            .field(
                "redis_master_password",
                &self.redis_master_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "redis_cluster_nodes",
                &self
                    .cluster_nodes()
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .field("key_prefix", &self.key_prefix)
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("keepalive_interval_ms", &self.keepalive_interval_ms)
            .field("keepalive_timeout_ms", &self.keepalive_timeout_ms)
            .field("metrics_addr", &self.metrics_addr)
            .field("console_addr", &self.console_addr)
            .field("history_len", &self.history_len)
            .field(
                "auth_tokens",
                &self.auth_tokens.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls_cert.is_some())
            .field("access_file", &self.access_file)
            .field("tls_client_ca", &self.tls_client_ca)
            .finish_non_exhaustive()
    }
}

/// A URL with any password replaced, fit for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:<redacted>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

const DEFAULTS: &str = r#"
listen_addr = "0.0.0.0:5678"
redis_server_bin = "redis-server"
key_prefix = "electiond"
redis_pool_size = 16
redis_timeout_ms = 1000
redis_wait_replicas = 0
max_name_bytes = 1024
max_id_bytes = 1024
max_candidates = 10000
max_term_bytes = 524288
lease_ttl_ms = 10000
max_streams = 100000
max_message_bytes = 4194304
drain_timeout_ms = 10000
keepalive_interval_ms = 10000
keepalive_timeout_ms = 10000
metrics_addr = "0.0.0.0:9090"
console_addr = "127.0.0.1:8080"
history_len = 100
log_format = "text"
log_level = "info"
"#;

/// The longest history an election may keep: what one History call may return.
pub const MAX_HISTORY_LEN: u32 = 10_000;

fn environment(vars: Option<std::collections::HashMap<String, String>>) -> config::Environment {
    config::Environment::with_prefix("ELECTION")
        .prefix_separator("_")
        .try_parsing(true)
        .source(vars)
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// A value has the right type but makes no sense.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting's name.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Settings {
    /// Loads defaults, then the file named by `ELECTION_CONFIG` (if set) or `electiond.toml`
    /// (if present), then the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("ELECTION_CONFIG").ok();
        let required = file.is_some();
        let file = file.unwrap_or_else(|| "electiond.toml".to_owned());
        let raw = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(config::File::with_name(&file).required(required))
            .add_source(environment(None))
            .build()?;
        let settings: Settings = raw.try_deserialize()?;
        settings.validate()
    }

    /// Defaults overridden by the given `ELECTION_*` variables instead of the process's
    /// environment: what a deployment file's `environment:` section would produce.
    pub fn from_vars(vars: std::collections::HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(environment(Some(vars)))
            .build()?;
        let settings: Settings = raw.try_deserialize()?;
        settings.validate()
    }

    /// The embedded defaults alone, with no file and no environment: what tests start from.
    pub fn defaults() -> Self {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<Settings>());
        match raw {
            Ok(s) => s,
            // The defaults are a constant of this file; a unit test proves they parse.
            Err(e) => unreachable!("embedded defaults do not parse: {e}"),
        }
    }

    fn validate(mut self) -> Result<Self, ConfigError> {
        if self
            .redis_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            self.redis_url = None;
        }
        let invalid = |key, reason| Err(ConfigError::Invalid { key, reason });
        if self.key_prefix.contains(['{', '}']) {
            return invalid(
                "key_prefix",
                "must not contain '{' or '}' (they delimit the Redis Cluster hash tag)",
            );
        }
        if self.redis_pool_size == 0 {
            return invalid("redis_pool_size", "must be at least 1");
        }
        if self.redis_timeout_ms == 0 {
            return invalid("redis_timeout_ms", "must be at least 1");
        }
        if self.keepalive_interval_ms > 0 && self.keepalive_timeout_ms == 0 {
            return invalid(
                "keepalive_timeout_ms",
                "must be at least 1 while keep-alive pings are on",
            );
        }
        if self.max_name_bytes == 0
            || self.max_id_bytes == 0
            || self.max_candidates == 0
            || self.max_term_bytes == 0
        {
            return invalid("max_*", "limits must be at least 1");
        }
        if self.history_len > MAX_HISTORY_LEN {
            return invalid("history_len", "must be at most 10000");
        }
        for opt in [
            &mut self.metrics_addr,
            &mut self.console_addr,
            &mut self.auth_tokens,
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.access_file,
            &mut self.tls_client_ca,
        ] {
            if opt.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *opt = None;
            }
        }
        if self.redis_sentinels.is_some() != self.redis_sentinel_master.is_some() {
            return invalid(
                "redis_sentinels/redis_sentinel_master",
                "set both, or neither",
            );
        }
        if self
            .redis_cluster_nodes
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            self.redis_cluster_nodes = None;
        }
        let modes = [
            self.redis_url.is_some(),
            self.redis_sentinels.is_some(),
            self.redis_cluster_nodes.is_some(),
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return invalid(
                "redis_url/redis_sentinels/redis_cluster_nodes",
                "set one way to reach Redis: a URL, Sentinels, or Cluster nodes",
            );
        }
        for opt in [
            &mut self.redis_master_username,
            &mut self.redis_master_password,
        ] {
            if opt.as_deref().is_some_and(|v| v.is_empty()) {
                *opt = None;
            }
        }
        if self.redis_sentinels.is_none()
            && (self.redis_master_username.is_some() || self.redis_master_password.is_some())
        {
            return invalid(
                "redis_master_username/redis_master_password",
                "only apply with Sentinels; elsewhere credentials go in the Redis URLs",
            );
        }
        if self.redis_cluster_nodes.is_some() {
            let nodes = self.cluster_nodes();
            if nodes.is_empty() {
                return invalid("redis_cluster_nodes", "lists no node");
            }
            if nodes
                .iter()
                .any(|n| !n.starts_with("redis://") && !n.starts_with("rediss://"))
            {
                return invalid(
                    "redis_cluster_nodes",
                    "every node must be a redis:// or rediss:// URL",
                );
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert/tls_key", "set both, or neither");
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return invalid(
                "tls_client_ca",
                "client certificates need TLS on the gRPC port (tls_cert and tls_key)",
            );
        }
        if self.tls_client_ca.is_some() && self.access_file.is_none() {
            return invalid(
                "tls_client_ca",
                "client certificates are credentials of grants: set access_file too",
            );
        }
        if self.auth_tokens.is_some() && self.tokens().is_empty() {
            return invalid("auth_tokens", "lists no token");
        }
        Ok(self)
    }

    /// The accepted bearer tokens (empty: authentication off).
    pub fn tokens(&self) -> Vec<String> {
        self.auth_tokens
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The Sentinel URLs, when Sentinel mode is configured.
    pub fn sentinels(&self) -> Vec<String> {
        list(self.redis_sentinels.as_deref())
    }

    /// The Cluster seed node URLs, when Cluster mode is configured.
    pub fn cluster_nodes(&self) -> Vec<String> {
        list(self.redis_cluster_nodes.as_deref())
    }

    /// [`Self::drain_timeout_ms`] as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// The HTTP/2 keep-alive ping interval and timeout, or `None` when pings are off.
    pub fn keepalive(&self) -> Option<(Duration, Duration)> {
        (self.keepalive_interval_ms > 0).then(|| {
            (
                Duration::from_millis(self.keepalive_interval_ms),
                Duration::from_millis(self.keepalive_timeout_ms),
            )
        })
    }

    /// [`Self::redis_timeout_ms`] as a duration.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

/// A comma-separated list, trimmed, without empty entries.
fn list(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let s = Settings::defaults().validate().expect("defaults are valid");
        assert_eq!(s.listen_addr.port(), 5678);
        assert_eq!(s.max_candidates, 10_000);
        assert_eq!(s.max_term_bytes, 512 * 1024);
        assert_eq!(s.lease_ttl_ms, 10_000);
        assert!(s.redis_url.is_none());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut s = Settings::defaults();
        s.redis_url = Some("rediss://app:hunter2@redis:6380/0".into());
        s.auth_tokens = Some("tok-1,tok-2".into());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-1"),
            "{shown}"
        );
        assert!(
            shown.contains("rediss://app:<redacted>@redis:6380/0"),
            "{shown}"
        );
        assert_eq!(s.tokens(), vec!["tok-1", "tok-2"]);
    }

    #[test]
    fn unknown_variables_are_errors() {
        let vars = |k: &str, v: &str| [(k.to_owned(), v.to_owned())].into_iter().collect();
        assert!(Settings::from_vars(vars("ELECTION_REDIS_ULR", "redis://x")).is_err());
        let ok = Settings::from_vars(vars("ELECTION_REDIS_URL", "redis://x")).expect("valid");
        assert_eq!(ok.redis_url.as_deref(), Some("redis://x"));
    }

    #[test]
    fn braces_in_prefix_are_rejected() {
        let mut s = Settings::defaults();
        s.key_prefix = "a{b".into();
        assert!(matches!(
            s.validate(),
            Err(ConfigError::Invalid {
                key: "key_prefix",
                ..
            })
        ));
    }

    #[test]
    fn exactly_one_way_to_reach_redis() {
        let from = |pairs: &[(&str, &str)]| {
            Settings::from_vars(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let nodes = "redis://a:7000, rediss://:pw@b:7001";
        let s = from(&[("ELECTION_REDIS_CLUSTER_NODES", nodes)]).expect("valid");
        assert_eq!(
            s.cluster_nodes(),
            vec!["redis://a:7000", "rediss://:pw@b:7001"]
        );
        assert!(
            !format!("{s:?}").contains("pw@"),
            "cluster passwords stay out of logs"
        );
        assert!(from(&[
            ("ELECTION_REDIS_CLUSTER_NODES", nodes),
            ("ELECTION_REDIS_URL", "redis://x")
        ])
        .is_err());
        assert!(from(&[
            ("ELECTION_REDIS_CLUSTER_NODES", nodes),
            ("ELECTION_REDIS_SENTINELS", "redis://s:26379"),
            ("ELECTION_REDIS_SENTINEL_MASTER", "m")
        ])
        .is_err());
        assert!(from(&[("ELECTION_REDIS_CLUSTER_NODES", "a:7000")]).is_err());
        assert!(from(&[("ELECTION_REDIS_CLUSTER_NODES", " , ")]).is_err());
        assert!(from(&[("ELECTION_REDIS_CLUSTER_NODES", "")])
            .expect("empty means unset")
            .redis_cluster_nodes
            .is_none());
    }
}
