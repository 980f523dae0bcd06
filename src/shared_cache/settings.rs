//! The shared cache's builder settings and their checks: what
//! [`KratosLayerBuilder::redis_url`](crate::authenticate::KratosLayerBuilder::redis_url) and its siblings
//! collect, turned into a [`SharedCacheConfig`] by `build()`.

use std::{fmt, sync::Arc, time::Duration};

use redis::IntoConnectionInfo;

use super::{SharedCacheConfig, Topology};
use crate::config::BuildError;
use crate::defaults::{
    DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT, MIN_SHARED_CACHE_SECRET_LEN,
};

/// The longest Redis timeout accepted: Redis is a cache here, and a slow one is no help.
const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// The most seed nodes a cluster is given (a cluster's own limit is 1,000 nodes; a few seeds
/// are enough to find the rest).
const MAX_CLUSTER_SEEDS: usize = 100;
/// The longest key prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// A PEM certificate chain and its PEM private key.
pub(crate) type IdentityPem = (Arc<[u8]>, Arc<[u8]>);

/// What the builder was told; checked by [`SharedCacheSettings::config`].
#[derive(Clone, Default)]
pub(crate) struct SharedCacheSettings {
    pub(crate) url: Option<String>,
    pub(crate) secret: Option<Arc<[u8]>>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) timeout: Option<Duration>,
    /// A Redis 6 ACL user and its password, for URLs that carry none.
    pub(crate) credentials: Option<(String, Arc<str>)>,
    /// PEM certificates to trust instead of the platform's roots (`rediss://` only).
    pub(crate) ca_pem: Option<Arc<[u8]>>,
    /// A PEM certificate chain and its private key, for mutual TLS (`rediss://` only).
    pub(crate) client_identity_pem: Option<IdentityPem>,
    /// A Redis Cluster's seed nodes, instead of `url`.
    pub(crate) cluster_nodes: Option<Vec<String>>,
    /// Sentinels (`host:port`) and the name of the primary they monitor, instead of `url`.
    pub(crate) sentinels: Option<(Vec<String>, String)>,
}

impl fmt::Debug for SharedCacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password; the secret, the password and the key are secrets.
        let set = |is: bool| if is { "[set]" } else { "[none]" };
        f.debug_struct("SharedCacheSettings")
            .field("url", &self.url.as_ref().map(|_| "[set]"))
            // Named so a search of the Debug output for a secret's own text finds nothing.
            .field("shared_key", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field(
                "username",
                &self.credentials.as_ref().map(|(user, _)| user.as_str()),
            )
            .field("ca_pem", &set(self.ca_pem.is_some()))
            .field("client_identity", &set(self.client_identity_pem.is_some()))
            .field(
                "cluster_nodes",
                &self.cluster_nodes.as_ref().map(|nodes| nodes.len()),
            )
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

impl SharedCacheSettings {
    /// The shared cache's configuration; `None` when no Redis URL was given.
    ///
    /// # Errors
    /// A URL that does not parse (not repeated in the error: it may hold a password), a secret
    /// missing or shorter than [`MIN_SHARED_CACHE_SECRET_LEN`], a secret or another Redis
    /// setting without a URL, an empty or odd prefix, a zero or too long timeout, TLS settings
    /// with a plain URL, a TLS URL without a TLS feature or a rustls provider, a certificate
    /// that does not parse.
    pub(crate) fn config(self) -> Result<Option<SharedCacheConfig>, BuildError> {
        let given = [
            self.url.is_some(),
            self.cluster_nodes.is_some(),
            self.sentinels.is_some(),
        ];
        if given.iter().filter(|is| **is).count() > 1 {
            return Err(BuildError::setting(
                "redis_url",
                "redis_url, redis_cluster_nodes and redis_sentinels exclude each other: one \
                 Redis, one Redis Cluster, or one primary that Sentinels monitor",
            ));
        }
        let topology = match (&self.url, &self.cluster_nodes, &self.sentinels) {
            (Some(url), _, _) => Topology::Single(self.client(url)?),
            (_, Some(nodes), _) => self.cluster(nodes)?,
            (_, _, Some((sentinels, primary))) => self.sentinel(sentinels, primary)?,
            (None, None, None) => {
                let any_other = self.secret.is_some()
                    || self.key_prefix.is_some()
                    || self.timeout.is_some()
                    || self.credentials.is_some()
                    || self.ca_pem.is_some()
                    || self.client_identity_pem.is_some();
                if any_other {
                    return Err(BuildError::setting(
                        "redis_url",
                        "the shared cache settings need a Redis: redis_url, \
                         redis_cluster_nodes or redis_sentinels",
                    ));
                }
                return Ok(None);
            }
        };
        let secret = self.secret.ok_or_else(|| {
            BuildError::setting(
                "shared_cache_secret",
                "is required with a Redis: every replica derives its cache keys and value seal \
                 from it",
            )
        })?;
        if secret.len() < MIN_SHARED_CACHE_SECRET_LEN {
            return Err(BuildError::setting(
                "shared_cache_secret",
                format!(
                    "must be at least {MIN_SHARED_CACHE_SECRET_LEN} bytes (it has {}); make one \
                     with `openssl rand -base64 32`",
                    secret.len()
                ),
            ));
        }
        let key_prefix = self
            .key_prefix
            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_owned());
        if !is_key_prefix(&key_prefix) {
            return Err(BuildError::setting(
                "redis_key_prefix",
                format!(
                    "must be 1 to {MAX_PREFIX_LEN} visible ASCII characters, without `*`, `?`, \
                     `[`, `]`, `\\`, `{{` or `}}`"
                ),
            ));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_REDIS_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_REDIS_TIMEOUT {
            return Err(BuildError::setting(
                "redis_timeout",
                "must be more than zero and at most 5 s",
            ));
        }
        Ok(Some(SharedCacheConfig {
            topology,
            secret,
            key_prefix,
            timeout,
        }))
    }

    /// A Redis Cluster from its seed nodes' URLs (all `redis://` or all `rediss://`), with the
    /// credentials and TLS settings given: a client for the cluster, and one per seed node for
    /// the subscription.
    fn cluster(&self, urls: &[String]) -> Result<Topology, BuildError> {
        const SETTING: &str = "redis_cluster_nodes";
        if urls.is_empty() || urls.len() > MAX_CLUSTER_SEEDS {
            return Err(BuildError::setting(
                SETTING,
                format!("needs 1 to {MAX_CLUSTER_SEEDS} node URLs"),
            ));
        }
        let nodes = urls
            .iter()
            .map(|url| self.client(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                BuildError::setting(
                    SETTING,
                    "holds a URL that is not a Redis node's (redis://host:port or \
                     rediss://host:port)",
                )
            })?;
        let infos: Vec<redis::ConnectionInfo> = nodes
            .iter()
            .map(|node| node.get_connection_info().clone())
            .collect();
        let tls = infos
            .iter()
            .map(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }))
            .collect::<Vec<_>>();
        if tls.iter().any(|is| *is) != tls.iter().all(|is| *is) {
            return Err(BuildError::setting(
                SETTING,
                "mixes redis:// and rediss:// nodes: a cluster is all TLS or all plain",
            ));
        }
        let first = infos[0].redis_settings().clone();
        let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
            // A call has the link's timeout; within it, a MOVED or a failover is retried.
            .retries(3);
        if let Some(username) = first.username() {
            builder = builder.username(username);
        }
        if let Some(password) = first.password() {
            builder = builder.password(password);
        }
        if tls[0] {
            builder = tls::cluster(
                builder,
                self.ca_pem.as_deref(),
                self.client_identity_pem.as_ref(),
            );
        }
        let client = builder.build().map_err(|_| {
            BuildError::setting(
                SETTING,
                "the nodes' URLs do not make one cluster client (different users or passwords?)",
            )
        })?;
        Ok(Topology::Cluster { client, nodes })
    }

    /// The primary `primary_name` that these Sentinels (`host:port` each) monitor, connected
    /// to with the credentials given (Sentinels themselves without).
    fn sentinel(&self, sentinels: &[String], primary_name: &str) -> Result<Topology, BuildError> {
        const SETTING: &str = "redis_sentinels";
        if self.ca_pem.is_some() || self.client_identity_pem.is_some() {
            return Err(BuildError::setting(
                SETTING,
                "with TLS settings is not supported yet: use Sentinel over plain TCP on a \
                 private network, or a TLS URL or cluster",
            ));
        }
        if sentinels.is_empty() || sentinels.len() > MAX_CLUSTER_SEEDS {
            return Err(BuildError::setting(
                SETTING,
                format!("needs 1 to {MAX_CLUSTER_SEEDS} Sentinel addresses (host:port)"),
            ));
        }
        if primary_name.is_empty() || !primary_name.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(BuildError::setting(
                SETTING,
                "needs the monitored primary's name (visible ASCII)",
            ));
        }
        let addresses = sentinels
            .iter()
            .map(|address| {
                let (host, port) = address
                    .rsplit_once(':')
                    .filter(|(host, _)| !host.is_empty())?;
                let port: u16 = port.parse().ok()?;
                redis::ConnectionAddr::Tcp(host.to_owned(), port)
                    .into_connection_info()
                    .ok()
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                BuildError::setting(SETTING, "holds an address that is not host:port")
            })?;
        let mut primary = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some((username, password)) = &self.credentials {
            primary = primary
                .set_username(username)
                .set_password(password.as_ref());
        }
        let node = redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(primary);
        let client = redis::sentinel::SentinelClient::build(
            addresses,
            // A String: what redis-rs takes without its rustls feature.
            String::from(primary_name),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|_| BuildError::setting(SETTING, "do not make a Sentinel client"))?;
        Ok(Topology::Sentinel(Arc::new(tokio::sync::Mutex::new(
            client,
        ))))
    }

    /// The Redis client for `url`, with the credentials and TLS settings given.
    fn client(&self, url: &str) -> Result<redis::Client, BuildError> {
        // Said by name, not as "not a Redis URL" (which redis-rs says without TLS support).
        #[cfg(not(any(feature = "tls-aws-lc-rs", feature = "tls-ring")))]
        if url
            .get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
        {
            return Err(tls::without_feature());
        }
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| {
            BuildError::setting(
                "redis_url",
                "is not a Redis URL (redis://[user:password@]host[:port][/db], \
                 rediss://… for TLS, or unix:///path/to/socket)",
            )
        })?;
        // No `CLIENT SETINFO` on connecting: the crate sends only the commands the guide's
        // least-privilege ACL user is given.
        let mut redis = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some((username, password)) = &self.credentials {
            if redis.password().is_none() {
                redis = redis.set_username(username).set_password(password.as_ref());
            }
        }
        let info = info.set_redis_settings(redis);
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if !tls {
            if self.ca_pem.is_some() || self.client_identity_pem.is_some() {
                return Err(BuildError::setting(
                    "redis_url",
                    "is not a TLS URL (rediss://), but a CA or a client certificate was given",
                ));
            }
            return redis::Client::open(info).map_err(|_| {
                BuildError::setting("redis_url", "is not a Redis URL this client can use")
            });
        }
        tls::client(
            info,
            self.ca_pem.as_deref(),
            self.client_identity_pem.as_ref(),
        )
    }
}

/// Whether a key prefix is one every key and channel can start with, in a cluster too: no glob
/// characters (the ACL patterns `~prefix*` and `&prefix*` must match exactly what it names),
/// and no braces (a hash tag in the prefix would put every key in one slot).
fn is_key_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !b"*?{}[]\\".contains(&byte))
}

#[cfg(any(feature = "tls-aws-lc-rs", feature = "tls-ring"))]
mod tls {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

    use super::IdentityPem;
    use crate::config::BuildError;

    /// A TLS client: the server verified against the platform's roots, or against `ca_pem`
    /// alone; `identity` (a certificate chain and its key, PEM) for mutual TLS. Never without
    /// verification: a URL asking for that (`#insecure`) is refused.
    ///
    /// redis-rs builds its rustls configuration from the process's default provider (it takes
    /// none of its own), so one must be installed: this crate installs none behind the
    /// application's back, where a second install would make the application's own fail.
    pub(super) fn client(
        info: redis::ConnectionInfo,
        ca_pem: Option<&[u8]>,
        identity: Option<&IdentityPem>,
    ) -> Result<redis::Client, BuildError> {
        if let redis::ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
            return Err(BuildError::setting(
                "redis_url",
                "asks for TLS without verifying the server (#insecure): not supported; give \
                 the server's CA with redis_ca_pem instead",
            ));
        }
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(BuildError::setting(
                "redis_url",
                "is a TLS URL, and TLS to Redis (redis-rs) uses the process's default rustls \
                 provider, of which none is installed: install the one you use at start, e.g. \
                 `rustls::crypto::aws_lc_rs::default_provider().install_default()` (this crate \
                 installs none behind your back)",
            ));
        }
        // redis-rs takes PEM that holds no certificate as an empty trust store (every
        // handshake would fail at run time): say so now.
        if ca_pem.is_some_and(|pem| !holds_certificates(pem)) {
            return Err(BuildError::setting(
                "redis_ca_pem",
                "holds no PEM certificate this client can read",
            ));
        }
        if let Some((chain, key)) = identity {
            if !holds_certificates(chain) || PrivateKeyDer::from_pem_slice(key).is_err() {
                return Err(BuildError::setting(
                    "redis_client_identity_pem",
                    "needs a PEM certificate chain and its PEM private key",
                ));
            }
        }
        redis::Client::build_with_tls(info, certificates(ca_pem, identity)).map_err(|_| {
            BuildError::setting(
                "redis_ca_pem",
                "the CA, client certificate or key is not PEM this client can use",
            )
        })
    }

    /// A cluster's client builder with the same TLS settings as [`client`]'s (already checked
    /// there for every node).
    pub(super) fn cluster(
        builder: redis::cluster::ClusterClientBuilder,
        ca_pem: Option<&[u8]>,
        identity: Option<&IdentityPem>,
    ) -> redis::cluster::ClusterClientBuilder {
        builder.certs(certificates(ca_pem, identity))
    }

    fn certificates(
        ca_pem: Option<&[u8]>,
        identity: Option<&IdentityPem>,
    ) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: identity.map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.to_vec(),
                client_key: key.to_vec(),
            }),
            root_cert: ca_pem.map(<[u8]>::to_vec),
        }
    }

    /// Whether `pem` holds at least one certificate, and nothing unreadable.
    fn holds_certificates(pem: &[u8]) -> bool {
        let mut certificates = CertificateDer::pem_slice_iter(pem).peekable();
        certificates.peek().is_some() && certificates.all(|certificate| certificate.is_ok())
    }
}

#[cfg(not(any(feature = "tls-aws-lc-rs", feature = "tls-ring")))]
mod tls {
    use super::IdentityPem;
    use crate::config::BuildError;

    /// No TLS without a TLS feature.
    pub(super) fn client(
        _: redis::ConnectionInfo,
        _: Option<&[u8]>,
        _: Option<&IdentityPem>,
    ) -> Result<redis::Client, BuildError> {
        Err(without_feature())
    }

    /// Unreachable: a cluster's nodes are TLS only with a TLS feature.
    pub(super) fn cluster(
        builder: redis::cluster::ClusterClientBuilder,
        _: Option<&[u8]>,
        _: Option<&IdentityPem>,
    ) -> redis::cluster::ClusterClientBuilder {
        builder
    }

    pub(super) fn without_feature() -> BuildError {
        BuildError::setting(
            "redis_url",
            "is a TLS URL (rediss://), which needs the tls-aws-lc-rs or tls-ring feature",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: Option<&str>, secret: Option<&[u8]>) -> SharedCacheSettings {
        SharedCacheSettings {
            url: url.map(str::to_owned),
            secret: secret.map(Arc::from),
            ..SharedCacheSettings::default()
        }
    }

    fn refused(settings: SharedCacheSettings) -> BuildError {
        settings.config().expect_err("refused")
    }

    #[test]
    fn a_shared_cache_needs_a_url_and_a_long_secret() {
        assert!(settings(None, None).config().unwrap().is_none());
        let secret = [1u8; 32];
        assert!(settings(Some("redis://127.0.0.1:6379"), Some(&secret))
            .config()
            .unwrap()
            .is_some());
        assert_eq!(
            refused(settings(Some("redis://127.0.0.1"), None)).setting_name(),
            "shared_cache_secret"
        );
        assert_eq!(
            refused(settings(Some("redis://127.0.0.1"), Some(&[1; 31]))).setting_name(),
            "shared_cache_secret"
        );
        assert_eq!(
            refused(settings(None, Some(&secret))).setting_name(),
            "redis_url"
        );
        let bad = refused(settings(Some("http://user:hunter2@x"), Some(&secret)));
        assert_eq!(bad.setting_name(), "redis_url");
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
        // Verification cannot be turned off, and the password is never repeated.
        let insecure = refused(settings(
            Some("rediss://:hunter2@cache:6380/#insecure"),
            Some(&secret),
        ));
        assert_eq!(insecure.setting_name(), "redis_url");
        assert!(!insecure.to_string().contains("hunter2"), "{insecure}");
        // TLS settings with a plain URL are a mistake, not ignored.
        let plain = SharedCacheSettings {
            ca_pem: Some(Arc::from(&b"-----BEGIN CERTIFICATE-----"[..])),
            ..settings(Some("redis://cache:6379"), Some(&secret))
        };
        assert_eq!(refused(plain).setting_name(), "redis_url");
    }

    #[test]
    fn prefixes_and_timeouts_are_checked() {
        let with = |prefix: &str, timeout: Duration| SharedCacheSettings {
            key_prefix: Some(prefix.to_owned()),
            timeout: Some(timeout),
            ..settings(Some("redis://127.0.0.1"), Some(&[1; 32]))
        };
        let ok = Duration::from_millis(50);
        assert!(with("app-1:sessions", ok).config().is_ok());
        for prefix in ["", "has space", "glob*", "{tag}", "a[b]", &"x".repeat(65)] {
            assert_eq!(refused(with(prefix, ok)).setting_name(), "redis_key_prefix");
        }
        for timeout in [Duration::ZERO, Duration::from_secs(6)] {
            assert_eq!(
                refused(with("app", timeout)).setting_name(),
                "redis_timeout"
            );
        }
        // Never shown: the secret.
        let shown = format!("{:?}", with("app", ok));
        assert!(
            shown.contains("[redacted]") && !shown.contains("[1, 1"),
            "{shown}"
        );
    }
}
