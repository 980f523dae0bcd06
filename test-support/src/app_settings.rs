//! What the reference apps share: their Kratos settings from the environment, the built-in
//! Kratos stand-in when no Kratos is configured, and the layer built from both.

use std::{env, error::Error, time::Duration};

use kratos_stand_in::{KratosStandIn, SigningAlg, TestSession, TokenizerTemplate};
use tower_kratos::{authenticate::KratosLayerBuilder, KratosLayer};

/// The environment every reference app reads; a bad value stops the app with a clear error.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `KRATOS_PUBLIC_URL` | the stand-in | Kratos's public API |
/// | `KRATOS_ADMIN_URL` | `KRATOS_PUBLIC_URL` | Kratos's admin API (extension, revocation) |
/// | `KRATOS_ADMIN_TOKEN` | none | bearer token for the admin API (Ory Network API key) |
/// | `CACHE_TTL_SECS` | 60 | session cache TTL |
/// | `CACHE_CAPACITY` | 10000 | the most sessions cached (the alternative to `CACHE_MAX_BYTES`) |
/// | `CACHE_MAX_BYTES` | unset | bound the session cache by memory instead: at most this many bytes (at least 1048576), each session weighed by its size |
/// | `KRATOS_TIMEOUT_MS` | 3000 | deadline for one whoami call |
/// | `EXTEND_WITHIN_SECS` | 3600 | extend sessions expiring within this (lifecycle routes) |
/// | `STALE_IF_ERROR_SECS` | unset (off) | serve sessions up to this long past their cache entry while Kratos is unavailable |
/// | `MAX_CONCURRENT_LOOKUPS` | 32 | whoami calls to Kratos in flight at once |
/// | `REDIS_URL` | unset (no shared cache) | share the session cache and revocations with every replica through this Redis |
/// | `SHARED_CACHE_SECRET` | required with `REDIS_URL` | the same ≥ 32-byte secret on every replica |
/// | `REDIS_KEY_PREFIX` | `tower-kratos` | prefix of every Redis key, so several apps can share one Redis |
/// | `REDIS_CLUSTER_NODES` | unset | comma-separated seed node URLs of a Redis Cluster, instead of `REDIS_URL` |
/// | `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER` | unset | comma-separated Sentinel `host:port`s and the monitored primary's name, instead of `REDIS_URL` |
/// | `REDIS_USERNAME`, `REDIS_PASSWORD` | from `REDIS_URL` | a Redis 6 ACL user, for URLs that carry none (and for the Sentinels' primary) |
/// | `REDIS_CA_FILE` | the platform's roots | a PEM CA bundle to trust for `rediss://` instead |
/// | `REDIS_CLIENT_CERT_FILE`, `REDIS_CLIENT_KEY_FILE` | none | a PEM client certificate and key, for mutual TLS |
/// | `TOKENIZE_AS` | unset (off) | ask whoami for the session as a JWT with this tokenizer template |
/// | `METRICS_ADDR` | unset (no endpoint) | serve the crate's metrics as Prometheus text at `GET /metrics` on this address (e.g. `127.0.0.1:9464`) |
#[derive(Debug)]
pub struct Settings {
    pub kratos_public_url: Option<String>,
    pub kratos_admin_url: Option<String>,
    pub kratos_admin_token: Option<String>,
    pub cache_ttl: Duration,
    pub cache_size: CacheSize,
    pub kratos_timeout: Duration,
    pub extend_within: Duration,
    pub stale_if_error: Option<Duration>,
    pub max_concurrent_lookups: usize,
    pub shared_cache: Option<SharedCache>,
    /// Kratos's tokenizer template for whoami (`TOKENIZE_AS`); the stand-in gets one of that
    /// name, signing with ES256.
    pub tokenize_as: Option<String>,
    /// Where `GET /metrics` is served (`METRICS_ADDR`); unset, no endpoint and no recorder.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// How the session cache is bounded: `CACHE_CAPACITY` or `CACHE_MAX_BYTES`, not both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSize {
    Entries(u64),
    Bytes(u64),
}

impl CacheSize {
    fn from_env() -> Result<Self, String> {
        match (var("CACHE_CAPACITY"), var("CACHE_MAX_BYTES")) {
            (Some(_), Some(_)) => Err("CACHE_CAPACITY and CACHE_MAX_BYTES are alternatives: \
                                       set one of the two"
                .to_owned()),
            (_, Some(_)) => Ok(Self::Bytes(parse("CACHE_MAX_BYTES", "")?)),
            _ => Ok(Self::Entries(parse(
                "CACHE_CAPACITY",
                &tower_kratos::defaults::DEFAULT_CACHE_CAPACITY.to_string(),
            )?)),
        }
    }
}

/// Where the shared cache's Redis is: `REDIS_URL`, `REDIS_CLUSTER_NODES`, or `REDIS_SENTINELS`
/// with `REDIS_SENTINEL_MASTER`.
pub enum RedisTarget {
    Url(String),
    Cluster(Vec<String>),
    Sentinels(Vec<String>, String),
}

impl RedisTarget {
    /// The one of the three variables that is set, if any; an error naming them when more are.
    fn from_env() -> Result<Option<Self>, String> {
        let list = |name: &str| {
            var(name).map(|value| {
                value
                    .split(',')
                    .map(|item| item.trim().to_owned())
                    .filter(|item| !item.is_empty())
                    .collect::<Vec<_>>()
            })
        };
        let targets = [
            var("REDIS_URL").map(Self::Url),
            list("REDIS_CLUSTER_NODES").map(Self::Cluster),
            match (list("REDIS_SENTINELS"), var("REDIS_SENTINEL_MASTER")) {
                (Some(sentinels), Some(primary)) => Some(Self::Sentinels(sentinels, primary)),
                (Some(_), None) => {
                    return Err("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER (the \
                                monitored primary's name) is not"
                        .into())
                }
                (None, _) => None,
            },
        ];
        let mut set = targets.into_iter().flatten();
        let target = set.next();
        if set.next().is_some() {
            return Err(
                "REDIS_URL, REDIS_CLUSTER_NODES and REDIS_SENTINELS exclude each other: \
                        set one"
                    .into(),
            );
        }
        Ok(target)
    }

    fn uses_tls(&self) -> bool {
        match self {
            Self::Url(url) => url.starts_with("rediss://"),
            Self::Cluster(nodes) => nodes.iter().any(|node| node.starts_with("rediss://")),
            Self::Sentinels(..) => false,
        }
    }
}

/// The shared cache's Redis and what goes with it.
pub struct SharedCache {
    pub target: RedisTarget,
    pub secret: String,
    pub key_prefix: Option<String>,
    /// `REDIS_USERNAME` and `REDIS_PASSWORD`, for URLs that carry none.
    pub credentials: Option<(String, String)>,
    /// `REDIS_CA_FILE`'s PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// `REDIS_CLIENT_CERT_FILE`'s and `REDIS_CLIENT_KEY_FILE`'s PEM.
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl SharedCache {
    fn from_env(target: RedisTarget, secret: String) -> Result<Self, String> {
        let credentials = match (var("REDIS_USERNAME"), env::var("REDIS_PASSWORD").ok()) {
            (username, Some(password)) => Some((username.unwrap_or_default(), password)),
            (Some(_), None) => return Err("REDIS_USERNAME is set but REDIS_PASSWORD is not".into()),
            (None, None) => None,
        };
        let client_identity_pem = match (
            file("REDIS_CLIENT_CERT_FILE")?,
            file("REDIS_CLIENT_KEY_FILE")?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(
                    "REDIS_CLIENT_CERT_FILE and REDIS_CLIENT_KEY_FILE go together \
                                (mutual TLS)"
                        .into(),
                )
            }
        };
        Ok(Self {
            target,
            secret,
            key_prefix: var("REDIS_KEY_PREFIX"),
            credentials,
            ca_pem: file("REDIS_CA_FILE")?,
            client_identity_pem,
        })
    }
}

/// The bytes of the file a variable names, if it is set; an error naming the variable if the
/// file cannot be read.
fn file(name: &str) -> Result<Option<Vec<u8>>, String> {
    match var(name) {
        None => Ok(None),
        Some(path) => std::fs::read(&path)
            .map(Some)
            .map_err(|error| format!("{name}: cannot read {path}: {error}")),
    }
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password; the secret is one.
        f.debug_struct("SharedCache")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        Ok(Self {
            kratos_public_url: var("KRATOS_PUBLIC_URL"),
            kratos_admin_url: var("KRATOS_ADMIN_URL"),
            kratos_admin_token: var("KRATOS_ADMIN_TOKEN"),
            cache_ttl: Duration::from_secs(parse("CACHE_TTL_SECS", "60")?),
            cache_size: CacheSize::from_env()?,
            kratos_timeout: Duration::from_millis(parse("KRATOS_TIMEOUT_MS", "3000")?),
            extend_within: Duration::from_secs(parse("EXTEND_WITHIN_SECS", "3600")?),
            stale_if_error: match var("STALE_IF_ERROR_SECS") {
                Some(_) => Some(Duration::from_secs(parse("STALE_IF_ERROR_SECS", "0")?)),
                None => None,
            },
            max_concurrent_lookups: parse(
                "MAX_CONCURRENT_LOOKUPS",
                &tower_kratos::defaults::DEFAULT_MAX_CONCURRENT_LOOKUPS.to_string(),
            )?,
            shared_cache: match (
                RedisTarget::from_env()?,
                env::var("SHARED_CACHE_SECRET").ok(),
            ) {
                (None, _) => None,
                (Some(_), None) => {
                    return Err(
                        "a Redis is set but SHARED_CACHE_SECRET is not: every replica \
                                needs the same secret of at least 32 bytes (for example \
                                `openssl rand -base64 32`)"
                            .to_owned(),
                    )
                }
                (Some(target), Some(secret)) => Some(SharedCache::from_env(target, secret)?),
            },
            tokenize_as: var("TOKENIZE_AS"),
            metrics_addr: match var("METRICS_ADDR") {
                Some(_) => Some(parse("METRICS_ADDR", "")?),
                None => None,
            },
        })
    }
}

/// A variable's value, unless unset or blank.
pub fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// A variable parsed, or its default; a value that does not parse is an error naming it.
pub fn parse<T: std::str::FromStr>(name: &str, default: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let text = var(name).unwrap_or_else(|| default.to_owned());
    text.trim()
        .parse()
        .map_err(|error| format!("{name}={text:?} is not valid: {error}"))
}

/// The Kratos an app talks to: the configured one, or the stand-in with a demo session of its
/// demo user (the one its login page signs in) and a second session of that user, so there is
/// another session to list and revoke.
pub struct Kratos {
    pub public_url: String,
    pub admin_url: String,
    pub stand_in: Option<(KratosStandIn, TestSession)>,
    /// Where `GET /metrics` is served, as bound (`METRICS_ADDR` may name port 0).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Kratos {
    /// Starts (or names) Kratos; with `METRICS_ADDR`, first installs the Prometheus recorder
    /// and serves it, so the layers built afterwards record into it.
    pub async fn start(settings: &Settings) -> Result<Self, Box<dyn Error>> {
        let metrics_addr = match settings.metrics_addr {
            Some(addr) => Some(super::metrics_endpoint::start(addr).await?),
            None => None,
        };
        let (public_url, stand_in) = match &settings.kratos_public_url {
            Some(url) => (url.clone(), None),
            None => {
                let mut stand_in = KratosStandIn::builder();
                if let Some(template) = &settings.tokenize_as {
                    stand_in =
                        stand_in.tokenizer(template, TokenizerTemplate::new(SigningAlg::Es256));
                }
                let stand_in = stand_in.start().await?;
                let demo_user = stand_in.demo_identity_id();
                let demo = stand_in.session().identity(&demo_user).create();
                stand_in.session().identity(&demo_user).create();
                (stand_in.public_url(), Some((stand_in, demo)))
            }
        };
        let admin_url = settings
            .kratos_admin_url
            .clone()
            .unwrap_or_else(|| public_url.clone());
        Ok(Self {
            public_url,
            admin_url,
            stand_in,
            metrics_addr,
        })
    }

    /// The layer's builder with the settings every app shares.
    pub fn layer(&self, settings: &Settings) -> KratosLayerBuilder {
        let mut builder = KratosLayer::builder(&self.public_url)
            .cache_ttl(settings.cache_ttl)
            .request_timeout(settings.kratos_timeout)
            .max_concurrent_lookups(settings.max_concurrent_lookups)
            .admin_url(&self.admin_url);
        builder = match settings.cache_size {
            CacheSize::Entries(entries) => builder.cache_capacity(entries),
            CacheSize::Bytes(bytes) => builder.cache_max_bytes(bytes),
        };
        if let Some(grace) = settings.stale_if_error {
            builder = builder.stale_if_error(grace);
        }
        if let Some(token) = &settings.kratos_admin_token {
            builder = builder.admin_api_key(token);
        }
        if let Some(template) = &settings.tokenize_as {
            builder = builder.tokenize_as(template);
        }
        if let Some(shared) = &settings.shared_cache {
            if shared.target.uses_tls() {
                // The app is the application: it picks the process's rustls provider, which
                // redis-rs builds its TLS configuration from.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            }
            builder = match &shared.target {
                RedisTarget::Url(url) => builder.redis_url(url),
                RedisTarget::Cluster(nodes) => builder.redis_cluster_nodes(nodes.clone()),
                RedisTarget::Sentinels(sentinels, primary) => {
                    builder.redis_sentinels(sentinels.clone(), primary)
                }
            }
            .shared_cache_secret(&shared.secret);
            if let Some(prefix) = &shared.key_prefix {
                builder = builder.redis_key_prefix(prefix);
            }
            if let Some((username, password)) = &shared.credentials {
                builder = builder.redis_credentials(username, password);
            }
            if let Some(ca_pem) = &shared.ca_pem {
                builder = builder.redis_ca_pem(ca_pem);
            }
            if let Some((cert, key)) = &shared.client_identity_pem {
                builder = builder.redis_client_identity_pem(cert, key);
            }
        }
        builder
    }

    /// The lines every app prints at start, before `listening on …`.
    pub fn describe(&self, settings: &Settings) {
        println!("kratos public API: {}", self.public_url);
        if let Some(addr) = self.metrics_addr {
            println!("metrics: http://{addr}/metrics (Prometheus text)");
        }
        if let Some(shared) = &settings.shared_cache {
            println!(
                "shared session cache: Redis, key prefix {:?} (used once Redis answers)",
                shared
                    .key_prefix
                    .as_deref()
                    .unwrap_or(tower_kratos::defaults::DEFAULT_REDIS_KEY_PREFIX)
            );
        }
        println!(
            "kratos admin API: {} (token {}); sessions are extended within {} s of expiry",
            self.admin_url,
            if settings.kratos_admin_token.is_some() {
                "set"
            } else {
                "not set"
            },
            settings.extend_within.as_secs(),
        );
        if let Some(template) = &settings.tokenize_as {
            println!("tokenized sessions: template {template:?} (GET /me/token)");
            if let Some(url) = self.stand_in_jwks_url(template) {
                println!(
                    "  verify them downstream: KRATOS_ISSUER={} KRATOS_JWKS_URL={url} cargo run \
                     --example jwt_downstream",
                    self.public_url
                );
            }
        }
    }

    /// Where the stand-in serves the tokenizer template's public keys, for an internal service
    /// (`examples/jwt_downstream.rs`'s `KRATOS_JWKS_URL`).
    pub fn stand_in_jwks_url(&self, template: &str) -> Option<String> {
        self.stand_in
            .as_ref()
            .and_then(|(stand_in, _)| stand_in.jwks_url(template))
    }

    /// The stand-in's browser login flow (its login page), when running against the stand-in:
    /// the default `LOGIN_URL`.
    pub fn stand_in_login_url(&self) -> Option<String> {
        self.stand_in
            .as_ref()
            .map(|(stand_in, _)| stand_in.login_url())
    }

    /// The demo session, when running against the stand-in.
    pub fn demo(&self) -> Option<&TestSession> {
        self.stand_in.as_ref().map(|(_, demo)| demo)
    }
}
