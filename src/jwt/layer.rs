//! [`JwtLayer`] and its builder.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use crate::defaults::{
    DEFAULT_JWKS_MIN_REFETCH, DEFAULT_JWKS_REFRESH, DEFAULT_JWT_LEEWAY, MAX_JWT_LEEWAY,
};

use tower_layer::Layer;

use super::{
    keys::Algorithm,
    service::{JwtPolicy, JwtService},
    source::{self, KeySource, UrlKeys},
    token::Checks,
    verifier::Verifier,
};
use crate::{
    config::{client_builder, parse_http_url, BuildError, Mode},
    rejection::{BrowserRedirects, DefaultRejection, Rejecter, RejectionResponse},
};

/// Verifies Kratos's tokenized sessions (`Authorization: Bearer <JWT>`, from
/// `whoami?tokenize_as=…`) with no Kratos call: for internal services behind the edge app.
///
/// ```
/// use tower_kratos::jwt::JwtLayer;
///
/// # fn main() -> Result<(), tower_kratos::BuildError> {
/// let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
///   "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;
/// let layer = JwtLayer::builder("https://auth.example.com/")
///     .jwks(jwks)
///     .build()?;
/// let app = tower::ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// # let _ = app;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtLayer<R = DefaultRejection> {
    policy: Arc<JwtPolicy<R>>,
}

impl<R> fmt::Debug for JwtLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtLayer")
            .field("verifier", &self.policy.verifier)
            .field("mode", &self.policy.mode)
            .finish_non_exhaustive()
    }
}

impl JwtLayer {
    /// A builder for tokens issued by the Kratos at `issuer`: its public URL, as Kratos writes
    /// it in `iss` (a trailing `/` does not matter).
    pub fn builder(issuer: impl Into<String>) -> JwtLayerBuilder {
        JwtLayerBuilder {
            issuer: issuer.into(),
            keys: None,
            audience: None,
            leeway: DEFAULT_JWT_LEEWAY,
            algorithms: Algorithm::ALL.to_vec(),
            refresh_every: DEFAULT_JWKS_REFRESH,
            min_refetch: DEFAULT_JWKS_MIN_REFETCH,
            fetch_timeout: Duration::from_secs(3),
            client: None,
            capacity: 10_000,
            mode: Mode::Required,
            rejection: DefaultRejection::new(),
            #[cfg(feature = "redis")]
            shared: crate::shared_cache::settings::SharedCacheSettings::default(),
            #[cfg(feature = "redis")]
            revocation_memory: Duration::from_secs(3600),
        }
    }
}

impl<R> JwtLayer<R> {
    /// How many verified tokens are cached now.
    pub fn cached_tokens(&self) -> u64 {
        self.policy.verifier.cached()
    }

    /// The revocation subscription's state, with a shared cache configured.
    #[cfg(feature = "redis")]
    pub fn shared_cache_stats(&self) -> Option<crate::shared_cache::SharedCacheStats> {
        self.policy
            .verifier
            .revocations
            .as_ref()
            .map(|watch| watch.stats())
    }
}

impl<S, R> Layer<S> for JwtLayer<R> {
    type Service = JwtService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        if let KeySource::Url(keys) = &self.policy.verifier.keys {
            keys.start_refreshing();
        }
        JwtService::new(inner, Arc::clone(&self.policy))
    }
}

/// Where the keys are, as the builder was told.
#[derive(Clone)]
enum KeysSetting {
    Inline(String),
    File(PathBuf),
    Url(String),
}

/// Builds a [`JwtLayer`]: the issuer, and one source of keys, are required.
#[must_use]
pub struct JwtLayerBuilder<R = DefaultRejection> {
    issuer: String,
    keys: Option<KeysSetting>,
    audience: Option<String>,
    leeway: Duration,
    algorithms: Vec<Algorithm>,
    refresh_every: Duration,
    min_refetch: Duration,
    fetch_timeout: Duration,
    client: Option<reqwest::Client>,
    capacity: u64,
    mode: Mode,
    rejection: R,
    #[cfg(feature = "redis")]
    shared: crate::shared_cache::settings::SharedCacheSettings,
    #[cfg(feature = "redis")]
    revocation_memory: Duration,
}

impl<R> fmt::Debug for JwtLayerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            None => "none",
            Some(KeysSetting::Inline(_)) => "inline",
            Some(KeysSetting::File(_)) => "file",
            Some(KeysSetting::Url(_)) => "url",
        };
        f.debug_struct("JwtLayerBuilder")
            .field("issuer", &self.issuer)
            .field("keys", &keys)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("algorithms", &self.algorithms)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<R> JwtLayerBuilder<R> {
    /// The public JWKS, as JSON text (`ory get jwk <set> --public` on Ory Network).
    pub fn jwks(mut self, jwks: impl Into<String>) -> Self {
        self.keys = Some(KeysSetting::Inline(jwks.into()));
        self
    }

    /// The public JWKS, read from this file when the layer is built.
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.keys = Some(KeysSetting::File(path.into()));
        self
    }

    /// The public JWKS, fetched from this URL (served by you: Kratos serves none for tokenized
    /// sessions): at start, then every [`jwks_refresh`](Self::jwks_refresh), and again for a
    /// token with an unknown `kid`, at most once per
    /// [`jwks_min_refetch`](Self::jwks_min_refetch). Keys are kept while the URL is down;
    /// until the first fetch succeeds, tokens are answered 503. A token with a `kid` the keys
    /// lack is refused (401) only after a fetch made since it came found no such key: until
    /// then it waits for that fetch, or is answered 503 with `Retry-After`.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.keys = Some(KeysSetting::Url(url.into()));
        self
    }

    /// Require this audience in `aud` (Kratos sets none unless the template's claims mapper
    /// adds one). Without it, a token that has an `aud` is refused.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock leeway on `exp`, `nbf` and `iat` (default [`DEFAULT_JWT_LEEWAY`], at most
    /// [`MAX_JWT_LEEWAY`]).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The algorithms accepted (default: all of [`Algorithm::ALL`]). `none` and HMAC are never
    /// accepted.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// How often a key set URL is fetched in the background (default 5 min).
    pub fn jwks_refresh(mut self, every: Duration) -> Self {
        self.refresh_every = every;
        self
    }

    /// The shortest time between two on-demand fetches for unknown `kid`s (default
    /// [`DEFAULT_JWKS_MIN_REFETCH`], 1 s): a flood of made-up `kid`s makes no more fetches than
    /// one per interval. A token with an unknown `kid` waits for the interval to end when that
    /// is at most 1 s away, then for the fetch.
    ///
    /// # Security
    /// A longer interval delays a key Kratos has just rotated in by up to that much: its tokens
    /// are answered 503 with `Retry-After` (never 401) until the next fetch is allowed.
    pub fn jwks_min_refetch(mut self, interval: Duration) -> Self {
        self.min_refetch = interval;
        self
    }

    /// The deadline of one key set fetch (default 3 s), with the default client or one given
    /// to [`http_client`](Self::http_client): tokens that wait for a fetch wait no longer.
    pub fn jwks_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// The HTTP client for the key set URL (default: one made with the fetch timeout).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// How many verified tokens are kept, each until its `exp` (default 10,000).
    pub fn cache_capacity(mut self, tokens: u64) -> Self {
        self.capacity = tokens;
        self
    }

    /// Let requests without a valid token through, with the [`Outcome`](crate::Outcome) in
    /// their extensions (503s for missing keys still answer).
    pub fn optional(mut self) -> Self {
        self.mode = Mode::Optional;
        self
    }

    /// Refuse tokens whose session or identity was revoked through tower-kratos on any replica
    /// sharing this Redis (feature `redis`): the edge's [`redis_url`](crate::authenticate::KratosLayerBuilder::redis_url),
    /// with the same [`shared_cache_secret`](Self::shared_cache_secret) and
    /// [`redis_key_prefix`](Self::redis_key_prefix).
    #[cfg(feature = "redis")]
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.shared.url = Some(url.into());
        self
    }

    /// The edge's shared cache secret (required with [`redis_url`](Self::redis_url)).
    #[cfg(feature = "redis")]
    pub fn shared_cache_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.shared.secret = Some(Arc::from(secret.as_ref()));
        self
    }

    /// The edge's Redis key prefix (default [`DEFAULT_REDIS_KEY_PREFIX`](crate::defaults::DEFAULT_REDIS_KEY_PREFIX)).
    #[cfg(feature = "redis")]
    pub fn redis_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.shared.key_prefix = Some(prefix.into());
        self
    }

    /// How long revocations heard are remembered (default 1 h): at least the tokenizer
    /// template's TTL, the longest a token issued before a revocation can be presented.
    #[cfg(feature = "redis")]
    pub fn revocation_memory(mut self, memory: Duration) -> Self {
        self.revocation_memory = memory;
        self
    }

    /// The rejection for refused requests (default [`DefaultRejection`]: JSON 401/503, gRPC's
    /// own answers to gRPC clients).
    pub fn rejection<R2: RejectionResponse>(self, rejection: R2) -> JwtLayerBuilder<R2> {
        JwtLayerBuilder {
            issuer: self.issuer,
            keys: self.keys,
            audience: self.audience,
            leeway: self.leeway,
            algorithms: self.algorithms,
            refresh_every: self.refresh_every,
            min_refetch: self.min_refetch,
            fetch_timeout: self.fetch_timeout,
            client: self.client,
            capacity: self.capacity,
            mode: self.mode,
            rejection,
            #[cfg(feature = "redis")]
            shared: self.shared,
            #[cfg(feature = "redis")]
            revocation_memory: self.revocation_memory,
        }
    }

    /// The layer.
    ///
    /// # Errors
    /// An issuer that is not an `http`/`https` URL; no key source, or a key set (inline or
    /// file) with no usable key; a zero or too long leeway, refresh or timeout; an empty
    /// algorithm list; shared cache settings as [`KratosLayerBuilder::build`](crate::authenticate::KratosLayerBuilder::build)
    /// checks them.
    pub fn build(self) -> Result<JwtLayer<R>, BuildError> {
        parse_http_url("issuer", &self.issuer)?;
        if self.leeway > MAX_JWT_LEEWAY {
            return Err(BuildError::setting("leeway", "must be at most 5 minutes"));
        }
        if self.algorithms.is_empty() {
            return Err(BuildError::setting("algorithms", "must name at least one"));
        }
        for (setting, value) in [
            ("jwks_refresh", self.refresh_every),
            ("jwks_min_refetch", self.min_refetch),
            ("jwks_timeout", self.fetch_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(24 * 3600) {
                return Err(BuildError::setting(
                    setting,
                    "must be between 1 ms and 24 h",
                ));
            }
        }
        let keys = key_source(
            self.keys,
            self.client,
            self.fetch_timeout,
            (self.refresh_every, self.min_refetch),
        )?;
        let checks = Checks {
            issuer: self.issuer,
            audience: self.audience,
            leeway: self.leeway,
            algorithms: self.algorithms,
        };
        #[cfg(feature = "redis")]
        let revocations = self
            .shared
            .config()?
            .map(|config| crate::cache::RevocationWatch::new(&config, self.revocation_memory));
        let verifier = Verifier::new(
            keys,
            checks,
            self.capacity,
            #[cfg(feature = "redis")]
            revocations,
        )
        .map_err(|_| BuildError::setting("jwt", "the operating system has no randomness"))?;
        Ok(JwtLayer {
            policy: Arc::new(JwtPolicy {
                verifier: Arc::new(verifier),
                mode: self.mode,
                rejection: Rejecter {
                    browser: BrowserRedirects::default(),
                    response: self.rejection,
                },
            }),
        })
    }
}

/// The key source the settings name; inline and file key sets are read now.
fn key_source(
    keys: Option<KeysSetting>,
    client: Option<reqwest::Client>,
    fetch_timeout: Duration,
    (refresh_every, min_refetch): (Duration, Duration),
) -> Result<KeySource, BuildError> {
    Ok(match keys {
        None => {
            return Err(BuildError::setting(
                "jwks",
                "a key set is required: jwks, jwks_file or jwks_url",
            ))
        }
        Some(KeysSetting::Inline(text)) => KeySource::Fixed(Arc::new(
            source::fixed(text.as_bytes(), "inline")
                .map_err(|why| BuildError::setting("jwks", why))?,
        )),
        Some(KeysSetting::File(path)) => {
            let bytes = std::fs::read(&path).map_err(|error| {
                BuildError::setting("jwks_file", format!("cannot be read ({error})"))
            })?;
            KeySource::Fixed(Arc::new(
                source::fixed(&bytes, "file")
                    .map_err(|why| BuildError::setting("jwks_file", why))?,
            ))
        }
        Some(KeysSetting::Url(url)) => {
            let url = parse_http_url("jwks_url", &url)?;
            let client = match client {
                Some(client) => client,
                None => client_builder(fetch_timeout, fetch_timeout)
                    .build()
                    .map_err(BuildError::client)?,
            };
            KeySource::Url(UrlKeys::new(
                url,
                client,
                (refresh_every, min_refetch),
                fetch_timeout,
            ))
        }
    })
}
