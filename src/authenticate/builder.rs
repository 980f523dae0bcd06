//! [`KratosLayerBuilder`]: every setting, its default, and the checks `build` makes. Invalid
//! configuration is refused here, at build time, never at request time.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{request::Parts, Response};

#[cfg(feature = "redis")]
use crate::shared_cache::settings::SharedCacheSettings;
use crate::{
    authenticate::KratosLayer,
    cache::{CacheConfig, CacheSize, SessionCache},
    client::{AdminApi, Admission, AdmissionConfig, KratosClient},
    config::{
        client_builder, is_loopback_host, parse_http_url, without_userinfo, BuildError, Mode,
    },
    credentials::CookieNames,
    cross_origin::CrossOrigin,
    defaults::{
        DEFAULT_ADMIN_TIMEOUT, DEFAULT_BACKOFF_AFTER_FAILURES, DEFAULT_BACKOFF_MAX,
        DEFAULT_BACKOFF_MIN, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL, DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_EXTEND_COOLDOWN, DEFAULT_LOOKUP_QUEUE_TIMEOUT, DEFAULT_MAX_CONCURRENT_LOOKUPS,
        DEFAULT_REQUEST_TIMEOUT, DEFAULT_TOKENIZED_MARGIN, MAX_ADMIN_API_KEY_LEN, MAX_BACKOFF,
        MAX_CACHE_TTL, MAX_EXTEND_COOLDOWN, MAX_LOOKUP_QUEUE_TIMEOUT, MAX_REJECTION_TTL,
        MAX_STALE_IF_ERROR, MIN_CACHE_BYTES,
    },
    extend::Extender,
    log_limit::WarnLimiter,
    metrics::LayerMetrics,
    outcome::Outcome,
    rejection::{BrowserRedirects, DefaultRejection, Rejecter, RejectionFn, RejectionResponse},
    state::{LayerState, Policy},
};

impl KratosLayer {
    /// Starts a builder for the Kratos public API at `public_url`
    /// (`http://127.0.0.1:4433` self-hosted, `https://<slug>.projects.oryapis.com` on Ory Network).
    pub fn builder(public_url: impl Into<String>) -> KratosLayerBuilder {
        KratosLayerBuilder::new(public_url.into())
    }
}

/// Configures a [`KratosLayer`]. Every setting has a default; [`build`](Self::build) checks them
/// all and reports the first problem.
pub struct KratosLayerBuilder<R = DefaultRejection> {
    public_url: String,
    cookie_names: CookieNames,
    mode: Mode,
    cache: CacheConfig,
    admission: AdmissionConfig,
    http: HttpSettings,
    admin: AdminSettings,
    extension: ExtensionSettings,
    rejection: R,
    browser: BrowserRedirects,
    cross_origin: CrossOrigin,
    #[cfg(feature = "redis")]
    shared_cache: SharedCacheSettings,
    tokenize_as: Option<String>,
    watch_connections: bool,
    /// Which of `cache_capacity` and `cache_max_bytes` was set, if one was: they are
    /// alternatives.
    cache_size_set: Option<&'static str>,
    error: Option<BuildError>,
}

/// How Kratos is reached: the builder's HTTP client settings.
struct HttpSettings {
    connect_timeout: Duration,
    /// The deadline of every call to the public API, whoami included.
    request_timeout: Duration,
    client: Option<reqwest::Client>,
    #[cfg(any(feature = "tls-aws-lc-rs", feature = "tls-ring"))]
    root_certificates: Vec<reqwest::Certificate>,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its Debug lists default headers, which may carry an API key.
        f.debug_struct("HttpSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("client", &self.client.as_ref().map(|_| "[given]"))
            .finish_non_exhaustive()
    }
}

/// The admin API: where, with which key, within which deadline.
#[derive(Clone)]
struct AdminSettings {
    url: Option<String>,
    api_key: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("url", &self.url.as_deref().map(without_userinfo))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Extension and the `Set-Cookie` relay.
#[derive(Clone, Copy, Debug)]
struct ExtensionSettings {
    within: Option<Duration>,
    cooldown: Duration,
    relay_set_cookie: bool,
}

impl<R> fmt::Debug for KratosLayerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("KratosLayerBuilder");
        f.field("public_url", &without_userinfo(&self.public_url))
            .field("cookie_names", &self.cookie_names)
            .field("mode", &self.mode)
            .field("cache", &self.cache)
            .field("admission", &self.admission)
            .field("http", &self.http)
            .field("admin", &self.admin)
            .field("extension", &self.extension)
            .field("cross_origin", &self.cross_origin);
        #[cfg(feature = "redis")]
        f.field("shared_cache", &self.shared_cache);
        f.finish_non_exhaustive()
    }
}

impl KratosLayerBuilder {
    fn new(public_url: String) -> Self {
        Self {
            public_url,
            cookie_names: CookieNames::default(),
            mode: Mode::Required,
            cache: CacheConfig {
                ttl: DEFAULT_CACHE_TTL,
                size: CacheSize::Entries(DEFAULT_CACHE_CAPACITY),
                negative_ttl: None,
                stale_grace: None,
                max_session_age: None,
                tokenized: false,
                tokenized_margin: DEFAULT_TOKENIZED_MARGIN,
            },
            admission: AdmissionConfig {
                max_concurrent: DEFAULT_MAX_CONCURRENT_LOOKUPS,
                queue_timeout: DEFAULT_LOOKUP_QUEUE_TIMEOUT,
                backoff_min: DEFAULT_BACKOFF_MIN,
                backoff_max: DEFAULT_BACKOFF_MAX,
                failure_threshold: DEFAULT_BACKOFF_AFTER_FAILURES,
            },
            http: HttpSettings {
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                client: None,
                #[cfg(any(feature = "tls-aws-lc-rs", feature = "tls-ring"))]
                root_certificates: Vec::new(),
            },
            admin: AdminSettings {
                url: None,
                api_key: None,
                timeout: DEFAULT_ADMIN_TIMEOUT,
            },
            extension: ExtensionSettings {
                within: None,
                cooldown: DEFAULT_EXTEND_COOLDOWN,
                relay_set_cookie: true,
            },
            rejection: DefaultRejection::new(),
            browser: BrowserRedirects::default(),
            cross_origin: CrossOrigin::default(),
            #[cfg(feature = "redis")]
            shared_cache: SharedCacheSettings::default(),
            tokenize_as: None,
            watch_connections: true,
            cache_size_set: None,
            error: None,
        }
    }
}

impl<R> KratosLayerBuilder<R> {
    /// Redirect browsers (`Accept: text/html`) without a valid session to this login page, with
    /// `return_to` set to the URL they asked for. Default: none (401 JSON for everyone).
    pub fn login_url(mut self, url: &str) -> Self {
        if let Err(error) = self.browser.set_login_url(url) {
            self.fail(error);
        }
        self
    }

    /// The app's public base URL, used to build `return_to` for browser redirects. Set it in
    /// production.
    ///
    /// Without it, `return_to` is built from the request itself: its absolute-form target,
    /// else its `Host` header, as `http`, when that is a plain host and port (no userinfo, no
    /// other scheme; otherwise no `return_to` is sent at all). The `Host` header is whatever
    /// the client or the proxy in front of the app sent, so behind a proxy it may name an
    /// internal host, and over TLS it gives an `http` URL. Kratos then decides where the
    /// browser goes after signing in: it follows `return_to` only when the URL is in its
    /// `selfservice.allowed_return_urls` (else it answers with an error or its default return
    /// URL), so that list must hold the app's public URL, and nothing a Host header could add.
    /// The layer keeps the fallback (it is what a first run on localhost needs) and says so
    /// once, at `warn`, when it builds a browser redirect with no app URL; the reference app
    /// refuses to start with `LOGIN_URL` and no `APP_URL`.
    pub fn app_url(mut self, url: &str) -> Self {
        if let Err(error) = self.browser.set_app_url(url) {
            self.fail(error);
        }
        self
    }

    fn fail(&mut self, error: BuildError) {
        self.error.get_or_insert(error);
    }

    /// Trust requests from this origin as from the app's own: exactly `scheme://host[:port]`
    /// (`http` or `https`), as browsers write it in `Origin`, e.g. the single-page app's
    /// `https://app.example.com` on a sibling subdomain of the API. Repeatable; default: none.
    ///
    /// The layer refuses a request that carries the session cookie, could change state (any
    /// method but `GET`, `HEAD` and `OPTIONS`, and WebSocket upgrades), and comes from another
    /// origin: 403 with [`Outcome::CrossOriginRequest`] (JSON `id` `cross_origin_request`),
    /// through your rejection, without asking Kratos, in optional mode too. It reads what
    /// browsers set themselves, as Go's `net/http.CrossOriginProtection` does: `Sec-Fetch-Site`
    /// first (`same-origin` and `none` pass, anything else is refused), else `Origin` against
    /// the request's `Host` (HTTP/2's `:authority`); with neither header it is no browser's
    /// request and passes. A request whose `Origin` is trusted passes. Token requests
    /// (`X-Session-Token`, `Authorization: Bearer`) are not checked: browsers never add those
    /// by themselves.
    ///
    /// An origin that is not exactly `scheme://host[:port]` (a path, even a lone trailing
    /// slash, a query, a fragment, user info, a wildcard, another scheme) is refused by
    /// [`build`](Self::build), naming this setting, and trusts nothing. Hosts are compared
    /// without case, and the scheme's default port may be written or left out.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kratos = kratos_stand_in::KratosStandIn::start().await?;
    /// # let alice = kratos.create_session();
    /// use http::{Request, Response, StatusCode};
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_kratos::KratosLayer;
    ///
    /// let layer = KratosLayer::builder(kratos.public_url())
    ///     .trusted_origin("https://app.example.com")
    ///     .build()?;
    /// let api = ServiceBuilder::new().layer(layer).service_fn(|_: Request<String>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(String::from("done")))
    /// });
    /// // A form or a fetch from `origin`, with the session cookie, as a browser sends it.
    /// let from = |origin: &str| {
    ///     Request::post("https://api.example.com/orders")
    ///         .header("cookie", alice.cookie_header())
    ///         .header("sec-fetch-site", "same-site")
    ///         .header("origin", origin)
    ///         .body(String::new())
    /// };
    /// let trusted = api.clone().oneshot(from("https://app.example.com")?).await?;
    /// assert_eq!(trusted.status(), StatusCode::OK);
    /// let forged = api.oneshot(from("https://blog.example.com")?).await?;
    /// assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    /// # Ok(()) }
    /// ```
    pub fn trusted_origin(mut self, origin: &str) -> Self {
        if let Err(error) = self.cross_origin.trust("trusted_origin", [origin]) {
            self.fail(error);
        }
        self
    }

    /// Trust every one of these origins: [`trusted_origin`](Self::trusted_origin) for each.
    /// When one is not an origin, [`build`](Self::build) says which, naming this setting, and
    /// none of them is trusted.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// use tower_kratos::KratosLayer;
    ///
    /// let layer = KratosLayer::builder("http://127.0.0.1:4433")
    ///     .trusted_origins(["https://app.example.com", "https://admin.example.com"])
    ///     .build()?;
    /// # let _ = layer;
    /// let refused = KratosLayer::builder("http://127.0.0.1:4433")
    ///     .trusted_origins(["https://app.example.com/"])
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(refused.setting_name(), "trusted_origins");
    /// # Ok(()) }
    /// ```
    pub fn trusted_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        if let Err(error) = self.cross_origin.trust("trusted_origins", origins) {
            self.fail(error);
        }
        self
    }

    /// Whether the layer refuses cookie requests from other origins (see
    /// [`trusted_origin`](Self::trusted_origin) for the rule). Default: on.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// // Another middleware in front of this one refuses cross-origin requests already.
    /// let layer = tower_kratos::KratosLayer::builder("http://127.0.0.1:4433")
    ///     .cross_origin_protection(false)
    ///     .build()?;
    /// # let _ = layer; Ok(()) }
    /// ```
    ///
    /// # Security
    /// Off, any page the user opens can make the browser send the session cookie with a form
    /// post, a `fetch` or a WebSocket to your app, and act as the user: cross-site request
    /// forgery. `SameSite=Lax` cookies (Kratos's default) stop that only across sites: another
    /// origin of the same site (a sibling subdomain, another port) gets the cookie sent. Turn
    /// it off only when something else refuses such requests (a CSRF token on every form, a
    /// proxy that checks `Sec-Fetch-Site`), or when no browser holds the cookie.
    pub fn cross_origin_protection(mut self, on: bool) -> Self {
        self.cross_origin.set_enabled(on);
        self
    }

    /// Recognise exactly this session cookie name (Kratos's `session.cookie.name`). Default:
    /// `ory_kratos_session` and Ory Network's `ory_session_*`.
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        self.cookie_names(CookieNames::exact(name))
    }

    /// Recognise these session cookie names.
    pub fn cookie_names(mut self, names: CookieNames) -> Self {
        self.cookie_names = names;
        self
    }

    /// Required (default) or optional mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How long a validated session is served from the cache. Default: 60 s.
    ///
    /// An entry also never outlives Kratos's `Ory-Session-Cache-For` hint or the session's own
    /// `expires_at`. Zero disables caching but keeps concurrent lookups coalesced.
    ///
    /// # Security
    /// A session revoked **outside this process** (the Kratos admin UI, another replica, a
    /// password-change hook) is still accepted here until its entry expires: up to this TTL,
    /// 60 s by default. Revocations made through this crate take effect at once. Choose the TTL
    /// as the longest revocation lag you accept; lower it for sensitive apps, at the cost of
    /// more whoami calls (which Ory Network rate-limits). At most
    /// [`MAX_CACHE_TTL`](crate::defaults::MAX_CACHE_TTL), a day.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        if ttl > MAX_CACHE_TTL {
            self.fail(BuildError::setting(
                "cache_ttl",
                "must be at most a day (86400 s): it is how long a revocation made elsewhere \
                 can go unnoticed",
            ));
        }
        self.cache.ttl = ttl;
        self
    }

    /// Refuse sessions older than `max`, counted from their `issued_at` (else, for legacy data,
    /// their first factor), whatever Kratos says: an absolute cap on how long one sign-in
    /// lasts, which Kratos's rolling `lifespan` does not give (an extended session can live
    /// forever). Off by default. Such a session is refused like an expired one
    /// (`Unauthenticated::TooOld`: 401, or the login page for browsers), a cached entry ends
    /// when its session reaches the age, and with [`extend_within`](Self::extend_within) no
    /// session is extended once its present expiry reaches the cap. A session whose age cannot
    /// be told is refused. For one route only, see
    /// [`Requirement::max_session_age`](crate::require::Requirement::max_session_age).
    pub fn max_session_age(mut self, max: Duration) -> Self {
        if max.is_zero() {
            self.fail(BuildError::setting("max_session_age", "must not be zero"));
        } else {
            self.cache.max_session_age = Some(max);
        }
        self
    }

    /// Ask whoami with `tokenize_as=<template>`: every session then carries Kratos's JWT of it
    /// ([`Session::tokenized`](crate::session::Session::tokenized)), for handlers to forward to
    /// internal services, which verify it with [`JwtLayer`](crate::jwt::JwtLayer) (feature
    /// `jwt`) without asking Kratos. The template is Kratos's
    /// `session.whoami.tokenizer.templates.<template>`.
    ///
    /// A cached entry ends [`tokenized_margin`](Self::tokenized_margin) before its JWT's `exp`,
    /// so a handler never forwards an expired token (Kratos sends no `Ory-Session-Cache-For`
    /// with `tokenize_as`; the TTL and the JWT bound the entry). A template Kratos does not know
    /// (its 400) is a configuration error: logged at `error` with the template's name, answered
    /// 503 (the caller's session may be fine), never cached. With a shared cache, sessions are
    /// not shared through Redis, which never holds a JWT; revocations still are.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// let layer = tower_kratos::KratosLayer::builder("http://127.0.0.1:4433")
    ///     .tokenize_as("internal")
    ///     .build()?;
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn tokenize_as(mut self, template: impl Into<String>) -> Self {
        let template = template.into();
        let valid = !template.is_empty()
            && template.len() <= 128
            && template
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
        if valid {
            self.tokenize_as = Some(template);
        } else {
            self.fail(BuildError::setting(
                "tokenize_as",
                "must be a Kratos tokenizer template name: 1 to 128 of A-Z a-z 0-9 - _ .",
            ));
        }
        self
    }

    /// With [`tokenize_as`](Self::tokenize_as), how long before its JWT's `exp` a cached
    /// session stops being served (default [`DEFAULT_TOKENIZED_MARGIN`](crate::defaults::DEFAULT_TOKENIZED_MARGIN),
    /// 10 s): time for the handler to forward the JWT and the internal service to check it. Keep
    /// it under the template's TTL (Kratos's default is 1 minute), or every request asks
    /// Kratos.
    pub fn tokenized_margin(mut self, margin: Duration) -> Self {
        self.cache.tokenized_margin = margin;
        self
    }

    /// The most sessions kept in the cache; the least useful (seldom or not lately used) are
    /// evicted first. Default: 10,000. [`cache_max_bytes`](Self::cache_max_bytes) is the
    /// alternative: set one of the two.
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        if capacity == 0 {
            self.fail(BuildError::setting("cache_capacity", "must not be zero"));
        }
        self.cache_size("cache_capacity", CacheSize::Entries(capacity))
    }

    /// Bounds the cache by memory instead of by count: its entries never weigh more than
    /// `bytes` in all, each weighed by its real size (the parsed session, with its traits,
    /// devices and addresses, and the cache's own bookkeeping for it), so a budget holds
    /// whatever the sessions are like. The alternative to
    /// [`cache_capacity`](Self::cache_capacity); set one of the two. At least 1 MiB.
    ///
    /// With [`stale_if_error`](Self::stale_if_error) on, the sessions kept for outages have a
    /// budget of their own of the same size; they are mostly the cached sessions themselves
    /// (shared, not copied), so the two together take little more than `bytes`.
    ///
    /// `bytes` counts what the allocator is asked for. The process's resident memory for the
    /// same sessions is more, by the allocator's own overhead: measured 1.1× with jemalloc and
    /// up to 1.9× with glibc's malloc, whose heap keeps holes between a session's blocks (see
    /// the [performance guide](crate::guide::performance)). Size the budget for that, or run
    /// the application on jemalloc.
    ///
    /// ```
    /// use tower_kratos::KratosLayer;
    ///
    /// // About 300,000 typical sessions in 512 MiB, or fewer large ones.
    /// let layer = KratosLayer::builder("http://127.0.0.1:4433")
    ///     .cache_max_bytes(512 << 20)
    ///     .build()
    ///     .unwrap();
    /// # drop(layer);
    /// ```
    pub fn cache_max_bytes(mut self, bytes: u64) -> Self {
        if bytes < MIN_CACHE_BYTES {
            self.fail(BuildError::setting(
                "cache_max_bytes",
                "must be at least 1 MiB (1048576)",
            ));
        }
        self.cache_size("cache_max_bytes", CacheSize::Bytes(bytes))
    }

    fn cache_size(mut self, setting: &'static str, size: CacheSize) -> Self {
        match self.cache_size_set {
            Some(other) if other != setting => self.fail(BuildError::setting(
                setting,
                "is the alternative to cache_capacity (entries) and cache_max_bytes (bytes): \
                 set one of the two",
            )),
            _ => {
                self.cache_size_set = Some(setting);
                self.cache.size = size;
            }
        }
        self
    }

    /// Also cache Kratos's 401s, for `ttl` (at most 60 s). Off by default.
    ///
    /// This spares Kratos from clients that retry a dead token in a loop.
    ///
    /// # Security
    /// A credential that becomes valid later (rare: Kratos tokens are valid from issue) is
    /// refused for up to `ttl`. Outages and step-ups are never cached, whatever this says.
    pub fn cache_rejections(mut self, ttl: Duration) -> Self {
        if ttl.is_zero() || ttl > MAX_REJECTION_TTL {
            self.fail(BuildError::setting(
                "cache_rejections",
                "must be between 1 ms and 60 s",
            ));
        } else {
            self.cache.negative_ttl = Some(ttl);
        }
        self
    }

    /// Serve a session from its expired cache entry for up to `grace` longer when Kratos cannot
    /// be asked (down, slower than the request timeout, 5xx, 429, a body that is not a session,
    /// back-off, too many lookups in flight). Off by default; `grace` is at most an hour.
    ///
    /// Such a request reaches your service with its [`KratosSession`](crate::KratosSession) and a
    /// [`StaleSession`](crate::outcome::StaleSession) extension saying how old the session's last
    /// confirmation is and why Kratos could not be asked; each one is logged at `warn`. A
    /// session is never served stale past its own `expires_at`, after a revocation made through
    /// this process, or after Kratos refused the credential (401, step-up). Cache hits are not
    /// slowed: the stale copies (the same shared session, not a copy of it) are read only when
    /// Kratos is unavailable.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// use std::time::Duration;
    /// use tower_kratos::KratosLayer;
    ///
    /// let layer = KratosLayer::builder("http://127.0.0.1:4433")
    ///     .stale_if_error(Duration::from_secs(300))
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    ///
    /// # Security
    /// During an outage, a session revoked **at Kratos** (admin API, another replica, a
    /// password-change hook) stays accepted for up to [`cache_ttl`](Self::cache_ttl) + `grace`
    /// after Kratos last confirmed it, instead of the TTL alone: 60 s + 5 min with the example
    /// above. Kratos being unreachable is also when an attacker holding a stolen, since revoked
    /// credential gains most from it. Turn it on only where keeping signed-in users working
    /// through a Kratos outage matters more than that, keep `grace` short, and have sensitive
    /// handlers refuse requests carrying a [`StaleSession`](crate::outcome::StaleSession).
    pub fn stale_if_error(mut self, grace: Duration) -> Self {
        if grace.is_zero() || grace > MAX_STALE_IF_ERROR {
            self.fail(BuildError::setting(
                "stale_if_error",
                "must be between 1 ms and 1 hour",
            ));
        } else {
            self.cache.stale_grace = Some(grace);
        }
        self
    }

    /// At most `n` whoami calls to Kratos at once, whatever arrives. Default: 32.
    ///
    /// Concurrent lookups of one credential share one call and one slot. A lookup that finds
    /// every slot taken waits up to [`lookup_queue_timeout`](Self::lookup_queue_timeout), then
    /// gets 503 with `Retry-After` ([`Unavailable::Overloaded`](crate::outcome::Unavailable)).
    /// This bounds the connections to Kratos (one per call over HTTP/1.1) and the memory held by
    /// calls in flight, so a flood of made-up credentials cannot exhaust either; cached sessions
    /// are still served. 32 calls at once sustain about 900 lookups a second at Ory Network's
    /// 35 ms latency, above every plan's burst limit, so the rate limiter (and then the back-off)
    /// binds before this cap does; against a self-hosted Kratos, keep it at or below its database
    /// pool size.
    pub fn max_concurrent_lookups(mut self, n: usize) -> Self {
        if n == 0 || n > tokio::sync::Semaphore::MAX_PERMITS {
            self.fail(BuildError::setting(
                "max_concurrent_lookups",
                "must be at least 1 (and at most tokio's Semaphore::MAX_PERMITS)",
            ));
        } else {
            self.admission.max_concurrent = n;
        }
        self
    }

    /// How long a lookup waits for a free slot (see
    /// [`max_concurrent_lookups`](Self::max_concurrent_lookups)) before getting 503. Default:
    /// 1 s. Zero means never wait; at most 60 s, since every waiting request holds its memory.
    pub fn lookup_queue_timeout(mut self, timeout: Duration) -> Self {
        if timeout > MAX_LOOKUP_QUEUE_TIMEOUT {
            self.fail(BuildError::setting(
                "lookup_queue_timeout",
                "must be at most 60 s",
            ));
        } else {
            self.admission.queue_timeout = timeout;
        }
        self
    }

    /// The bounds of the back-off windows. Default: 1 s to 30 s.
    ///
    /// After a 429, or after [`backoff_after_failures`](Self::backoff_after_failures) failed
    /// whoami calls in a row, the layer stops sending lookups to Kratos for a window: requests
    /// that need one get 503 at once, with `Retry-After` set to what is left of it
    /// ([`Unavailable::BackingOff`](crate::outcome::Unavailable)), while cached sessions are still
    /// served. Then one probe lookup goes to Kratos (the others still get 503): any answer from
    /// Kratos ends the back-off, a failure opens a window twice as long. A 429's window is
    /// Ory Network's `x-ratelimit-reset` (else `Retry-After`) when longer than that. Windows
    /// start at `min`, get up to a quarter added at random so replicas do not come back
    /// together, and never exceed `max` (30 s is Ory's advice for 429s). `min` must be non-zero
    /// and at most `max`; `max` at most 5 minutes.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        if min.is_zero() || min > max || max > MAX_BACKOFF {
            self.fail(BuildError::setting(
                "backoff",
                "needs 0 < min <= max <= 5 minutes",
            ));
        } else {
            self.admission.backoff_min = min;
            self.admission.backoff_max = max;
        }
        self
    }

    /// How many failed whoami calls in a row (timeouts, connection errors, 5xx and other
    /// unexpected statuses, bodies that are not sessions) open the back-off. Default: 5.
    ///
    /// One failure is often a blip (a pooled connection the other side just closed, one slow
    /// query) and should not turn every lookup into a 503 for a second; five in a row with no
    /// answer in between is an outage, reached within milliseconds under load. Any answer from
    /// Kratos (200, 401, 403) resets the count. A 429 opens the back-off at once, whatever this
    /// says.
    pub fn backoff_after_failures(mut self, n: u32) -> Self {
        if n == 0 {
            self.fail(BuildError::setting(
                "backoff_after_failures",
                "must be at least 1",
            ));
        } else {
            self.admission.failure_threshold = n;
        }
        self
    }

    /// How long to wait for a connection to Kratos. Default: 2 s. Applies to the client this
    /// builder makes, not to one given with [`http_client`](Self::http_client).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.http.connect_timeout = timeout;
        self
    }

    /// The deadline for a whole whoami call, answer body included. Default: 3 s. Enforced by the
    /// layer itself, so it holds for a client given with [`http_client`](Self::http_client) too.
    /// A request waiting on a hung Kratos gets 503 after this long.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.http.request_timeout = timeout;
        self
    }

    /// Use this `reqwest::Client` to reach Kratos (for its proxy, TLS or pool settings).
    ///
    /// Give it a `connect_timeout`, and `redirect(Policy::none())`: Kratos never redirects
    /// whoami, and following a redirect would carry the credential elsewhere.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http.client = Some(client);
        self
    }

    /// Trust this root certificate for Kratos's HTTPS, besides the system's roots.
    #[cfg(any(feature = "tls-aws-lc-rs", feature = "tls-ring"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "tls-aws-lc-rs", feature = "tls-ring"))))]
    pub fn add_root_certificate(mut self, certificate: reqwest::Certificate) -> Self {
        self.http.root_certificates.push(certificate);
        self
    }

    // Session lifecycle: the admin API, extension, and passing Kratos's Set-Cookie on.

    /// Kratos's admin API (`http://127.0.0.1:4434` self-hosted; on Ory Network the project URL,
    /// as for the public API). Needed for extension and the admin helpers of
    /// [`KratosLayer::lifecycle`]. Default: none (those return
    /// [`LifecycleError::AdminNotConfigured`](crate::lifecycle::LifecycleError::AdminNotConfigured)).
    ///
    /// # Security
    /// Self-hosted Kratos's admin API has no authentication: never expose it beyond your
    /// network.
    pub fn admin_url(mut self, url: impl Into<String>) -> Self {
        self.admin.url = Some(url.into());
        self
    }

    /// The API key sent as `Authorization: Bearer <key>` to the admin API (Ory Network's
    /// `ory_pat_…` / `ory_apikey_…`). Default: none (self-hosted Kratos needs none). It never
    /// appears in `Debug` output or logs, and is sent to the admin URL only.
    ///
    /// # Security
    /// Over plain `http` to a host other than loopback the key travels in clear; the build logs
    /// a warning then.
    pub fn admin_api_key(mut self, key: impl Into<String>) -> Self {
        self.admin.api_key = Some(key.into());
        self
    }

    /// The deadline for one admin API call (extend, admin revocations). Default: 3 s. With
    /// [`extend_within`](Self::extend_within), also the longest a request waits for an
    /// extension before it goes on with the session it had.
    pub fn admin_timeout(mut self, timeout: Duration) -> Self {
        self.admin.timeout = timeout;
        self
    }

    /// Extend every authenticated request's session when it expires within `within`. Off by
    /// default; needs [`admin_url`](Self::admin_url).
    ///
    /// A session further from expiry costs nothing (no Kratos call). A due session is extended
    /// once (`PATCH /admin/sessions/{id}/extend`), however many of its requests arrive at once,
    /// and not again within [`extend_cooldown`](Self::extend_cooldown); one whoami confirms it,
    /// refreshing the cache entry. The request carries a
    /// [`SessionExtension`](crate::lifecycle::SessionExtension) in its extensions saying how it
    /// went; admin API failures never fail the request (it goes on with the session it had).
    ///
    /// Choose `within` below Kratos's `session.earliest_possible_extend` window, or Kratos
    /// answers "too early" and the session is tried again every cooldown.
    pub fn extend_within(mut self, within: Duration) -> Self {
        self.extension.within = Some(within);
        self
    }

    /// After a session's extension attempt, how long before it is tried again; also how long
    /// extensions pause after an admin API failure without `Retry-After`. Default: 60 s; at
    /// most 24 h.
    ///
    /// Ory Network's admin rate limit (`kratos-admin-low`) is a few requests a second per
    /// project: the cooldown keeps a burst of one user's requests to one extension.
    pub fn extend_cooldown(mut self, cooldown: Duration) -> Self {
        self.extension.cooldown = cooldown;
        self
    }

    /// Pass on the `Set-Cookie` Kratos's whoami issues for a cookie session (after an extension,
    /// here or elsewhere), appended to your service's response, so the browser's cookie follows
    /// the session's new expiry. Default: on. Only the session cookie (by the configured cookie
    /// names) is passed, and only to requests that came with a session cookie; a response
    /// without `Cache-Control` then gets `Cache-Control: private`, so no shared cache stores it.
    pub fn relay_set_cookie(mut self, relay: bool) -> Self {
        self.extension.relay_set_cookie = relay;
        self
    }

    /// End the connections a request opens with its session: a streamed response body
    /// (server-sent events, a chunked stream, a gRPC server or bidirectional stream), a
    /// WebSocket upgraded through [`live::WebSocketUpgrade`](crate::live), a handler waiting on
    /// [`SessionEnd`](crate::live::SessionEnd). They end within a second of the session's
    /// revocation (here, or with a shared cache on any replica) or its end of life. Default: on.
    /// A response that does not wait costs nothing more; see the [`live`](crate::live) module.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// // Streams that must outlive their session (an audit log's export, say): not watched.
    /// let kratos = tower_kratos::KratosLayer::builder("https://auth.example.com")
    ///     .watch_connections(false)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn watch_connections(mut self, watch: bool) -> Self {
        self.watch_connections = watch;
        self
    }

    /// Share the session cache with every replica of the app through Redis (or Valkey) at
    /// `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS; feature
    /// `redis`): a session looked
    /// up by one replica is served by the others without asking Kratos, and a revocation made
    /// through any replica's [`lifecycle`](crate::KratosLayer::lifecycle) helpers is honoured
    /// by all. Needs [`shared_cache_secret`](Self::shared_cache_secret). Redis need not be up
    /// when the layer is built; while it is down or slow, requests are served without it
    /// (local cache and Kratos). See the guide's
    /// [shared cache](crate::guide::shared_cache) chapter.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// let layer = tower_kratos::KratosLayer::builder("http://127.0.0.1:4433")
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .shared_cache_secret("the same 32 or more random bytes on every replica")
    ///     .redis_key_prefix("my-app")
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.shared_cache.url = Some(url.into());
        self
    }

    /// The secret every replica sharing the Redis has (at least
    /// [`MIN_SHARED_CACHE_SECRET_LEN`](crate::defaults::MIN_SHARED_CACHE_SECRET_LEN) bytes; required with
    /// [`redis_url`](Self::redis_url)). From it every replica derives the same cache-key hash
    /// key, revocation-mark key and value-sealing key, so Redis holds no credential, no id and
    /// no readable session, and whoever can write to Redis cannot forge an entry. Keep it as
    /// secret as the admin API key; changing it empties the shared cache.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn shared_cache_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.shared_cache.secret = Some(std::sync::Arc::from(secret.as_ref()));
        self
    }

    /// Share the session cache through a Redis Cluster (ElastiCache cluster mode or Serverless,
    /// Azure's OSS cluster policy, a self-hosted cluster), given some of its nodes' URLs (all
    /// `redis://` or all `rediss://`); the others are learned from them. Instead of
    /// [`redis_url`](Self::redis_url), with the same other settings. Keys are spread over every
    /// slot (an entry and its fill lock share one), revocations use cluster-wide pub/sub, and
    /// resharding and failovers are followed by redis-rs's cluster connection.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// let layer = tower_kratos::KratosLayer::builder("http://127.0.0.1:4433")
    ///     .redis_cluster_nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
    ///     .shared_cache_secret("the same 32 or more random bytes on every replica")
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_cluster_nodes<I>(mut self, urls: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.shared_cache.cluster_nodes = Some(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Share the session cache through the primary that these Redis Sentinels (`host:port`
    /// each) monitor under `primary_name`, instead of [`redis_url`](Self::redis_url). The
    /// primary is asked of the Sentinels when connecting, and again whenever a call fails, so
    /// after a failover the layer follows the new primary for commands and for its
    /// subscription by itself. [`redis_credentials`](Self::redis_credentials) are the
    /// primary's (Sentinels are asked without). Not with TLS in this version.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_sentinels<I>(mut self, sentinels: I, primary_name: impl Into<String>) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let sentinels = sentinels.into_iter().map(Into::into).collect();
        self.shared_cache.sentinels = Some((sentinels, primary_name.into()));
        self
    }

    /// The Redis 6 ACL user and password to connect as, for a [`redis_url`](Self::redis_url)
    /// that carries none (`rediss://user:password@host` works too). Give the app a user of its
    /// own, limited to the prefix's keys and channels: the guide's
    /// [least-privilege user](crate::guide::shared_cache#a-least-privilege-user) has the
    /// `ACL SETUSER` line. The password is shown by no `Debug`, log or error.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_credentials(mut self, username: impl Into<String>, password: &str) -> Self {
        self.shared_cache.credentials = Some((username.into(), std::sync::Arc::from(password)));
        self
    }

    /// Trust these PEM certificates for a `rediss://` Redis instead of the platform's roots (a
    /// managed Redis's own CA: Memorystore's per-instance one, say). The server's certificate is
    /// always verified, host name included; there is no setting to skip that.
    ///
    /// TLS to Redis needs a TLS feature (`tls-aws-lc-rs`, the default, or `tls-ring`) and a
    /// process-wide rustls provider, which redis-rs builds its configuration from: install the
    /// one you use at start (`rustls::crypto::aws_lc_rs::default_provider().install_default()`).
    /// This crate installs none behind your back; `build()` says so if none is there.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.shared_cache.ca_pem = Some(std::sync::Arc::from(pem.as_ref()));
        self
    }

    /// A client certificate chain and its private key (PEM), for a `rediss://` Redis that asks
    /// for mutual TLS.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_client_identity_pem(
        mut self,
        certificate_chain: impl AsRef<[u8]>,
        private_key: impl AsRef<[u8]>,
    ) -> Self {
        self.shared_cache.client_identity_pem = Some((
            std::sync::Arc::from(certificate_chain.as_ref()),
            std::sync::Arc::from(private_key.as_ref()),
        ));
        self
    }

    /// The prefix of every Redis key and channel name, so several apps can share one Redis.
    /// Default: [`DEFAULT_REDIS_KEY_PREFIX`](crate::defaults::DEFAULT_REDIS_KEY_PREFIX).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.shared_cache.key_prefix = Some(prefix.into());
        self
    }

    /// How long one Redis call may take before the request goes on without it (at most 5 s).
    /// Default: [`DEFAULT_REDIS_TIMEOUT`](crate::defaults::DEFAULT_REDIS_TIMEOUT).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.shared_cache.timeout = Some(timeout);
        self
    }

    /// Replace the rejection response: a [`RejectionResponse`] of your own (or a closure
    /// with its argument types written out; without them, use
    /// [`rejection_fn`](Self::rejection_fn)). It shapes what API clients get; browser
    /// redirects ([`login_url`](Self::login_url)) and gRPC's answers stay the layer's, set
    /// before or after this (see [`rejection`](crate::rejection)).
    pub fn rejection<R2: RejectionResponse>(self, rejection: R2) -> KratosLayerBuilder<R2> {
        KratosLayerBuilder {
            public_url: self.public_url,
            cookie_names: self.cookie_names,
            mode: self.mode,
            cache: self.cache,
            admission: self.admission,
            http: self.http,
            admin: self.admin,
            extension: self.extension,
            rejection,
            browser: self.browser,
            cross_origin: self.cross_origin,
            #[cfg(feature = "redis")]
            shared_cache: self.shared_cache,
            tokenize_as: self.tokenize_as,
            watch_connections: self.watch_connections,
            cache_size_set: self.cache_size_set,
            error: self.error,
        }
    }

    /// Replace the rejection response with a closure `|outcome, request| -> Response<Bytes>`,
    /// written without type annotations: its argument types are inferred here (through
    /// [`rejection`](Self::rejection), a closure compiles only with them written out). The
    /// types it needs are re-exported at the crate's root ([`http`](crate::http),
    /// [`bytes`](crate::bytes)).
    ///
    /// ```
    /// use tower_kratos::{bytes::Bytes, http::Response, KratosLayer};
    ///
    /// # fn main() -> Result<(), tower_kratos::BuildError> {
    /// let layer = KratosLayer::builder("http://127.0.0.1:4433")
    ///     .rejection_fn(|outcome, _request| {
    ///         let mut response = Response::new(Bytes::from_static(b"sign in first"));
    ///         *response.status_mut() = outcome.status();
    ///         response
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    pub fn rejection_fn<F>(self, rejection: F) -> KratosLayerBuilder<RejectionFn<F>>
    where
        F: Fn(&Outcome, &Parts) -> Response<Bytes> + Clone + Send + Sync + 'static,
    {
        self.rejection(RejectionFn(rejection))
    }

    /// Checks the configuration and builds the layer. With the `metrics` feature, the layer
    /// takes its metric handles here and registers its series: install the application's
    /// recorder before (see `tower_kratos::metrics`).
    ///
    /// # Errors
    /// The first invalid setting: a URL that is not absolute `http`/`https`, a zero timeout, a
    /// zero capacity, an invalid cookie name, root certificates given together with a ready-made
    /// client, an HTTP client that cannot be built, an admin API key that is not a plain token,
    /// or an admin API key or `extend_within` without `admin_url`.
    pub fn build(self) -> Result<KratosLayer<R>, BuildError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let public_url = reachable(
            "public_url",
            parse_http_url("public_url", &self.public_url)?,
        )?;
        if !self.cookie_names.is_valid() {
            return Err(BuildError::setting(
                "cookie_names",
                "must be non-empty RFC 6265 cookie names",
            ));
        }
        let lookup_deadline = self.http.request_timeout;
        let http = http_client(self.http)?;
        let admin = admin_api(self.admin, self.extension)?;
        #[cfg(feature = "redis")]
        let shared_cache = self.shared_cache.config()?;
        #[cfg(not(feature = "redis"))]
        let shared_cache = ();
        let cache_config = CacheConfig {
            tokenized: self.tokenize_as.is_some(),
            ..self.cache.clone()
        };
        let cache =
            SessionCache::new(cache_config, lookup_deadline, shared_cache).map_err(|_| {
                BuildError::setting(
                    "cache",
                    "the operating system provided no randomness for the cache key",
                )
            })?;
        let client = KratosClient::new(
            http,
            &public_url,
            self.tokenize_as.as_deref(),
            lookup_deadline,
            admin,
            Admission::new(self.admission),
        );
        let extension = self.extension;
        if self.watch_connections {
            cache.watch_connections(client.clone(), self.cookie_names.clone());
        }
        let state = Arc::new(LayerState {
            client,
            cache,
            cookie_names: self.cookie_names,
            cross_origin: self.cross_origin,
            extender: Extender::new(
                extension.within,
                self.cache.max_session_age,
                extension.cooldown,
                self.cache.size.entries_hint(),
            ),
            relay_set_cookie: extension.relay_set_cookie,
            watch_connections: self.watch_connections,
            warnings: WarnLimiter::default(),
            metrics: LayerMetrics::new(),
        });
        Ok(KratosLayer {
            policy: Arc::new(Policy {
                state,
                mode: self.mode,
                rejection: Rejecter {
                    browser: self.browser,
                    response: self.rejection,
                },
            }),
        })
    }
}

/// The HTTP client for Kratos: the user's, or one made with the builder's settings.
fn http_client(settings: HttpSettings) -> Result<reqwest::Client, BuildError> {
    if settings.connect_timeout.is_zero() {
        return Err(BuildError::setting("connect_timeout", "must not be zero"));
    }
    if settings.request_timeout.is_zero() {
        return Err(BuildError::setting("request_timeout", "must not be zero"));
    }
    #[cfg(any(feature = "tls-aws-lc-rs", feature = "tls-ring"))]
    let roots = settings.root_certificates;
    #[cfg(not(any(feature = "tls-aws-lc-rs", feature = "tls-ring")))]
    let roots: Vec<std::convert::Infallible> = Vec::new();
    match settings.client {
        Some(client) if roots.is_empty() => Ok(client),
        Some(_) => Err(BuildError::setting(
            "add_root_certificate",
            "cannot be combined with http_client: add the roots to that client",
        )),
        None => {
            // The layer enforces the request timeout itself, for a given client too; this is
            // the same deadline, so the pool gives up on a hung connection as well.
            let builder = client_builder(settings.connect_timeout, settings.request_timeout);
            #[cfg(any(feature = "tls-aws-lc-rs", feature = "tls-ring"))]
            let builder = roots
                .into_iter()
                .fold(builder, reqwest::ClientBuilder::add_root_certificate);
            builder.build().map_err(BuildError::client)
        }
    }
}

/// Whether this build can speak HTTPS to Kratos: one of the TLS features is on.
const HTTPS: bool = cfg!(any(feature = "tls-aws-lc-rs", feature = "tls-ring"));

/// A URL setting this build can reach: `https` needs a TLS feature.
fn reachable(setting: &'static str, url: reqwest::Url) -> Result<reqwest::Url, BuildError> {
    if url.scheme() == "https" && !HTTPS {
        return Err(BuildError::setting(
            setting,
            "is https, and tower-kratos was built without a TLS feature \
             (tls-aws-lc-rs or tls-ring)",
        ));
    }
    Ok(url)
}

/// Checks the admin API settings (URL, key, deadline) and the extension settings that need it.
fn admin_api(
    settings: AdminSettings,
    extension: ExtensionSettings,
) -> Result<Option<AdminApi>, BuildError> {
    if settings.timeout.is_zero() {
        return Err(BuildError::setting("admin_timeout", "must not be zero"));
    }
    if extension.cooldown.is_zero() || extension.cooldown > MAX_EXTEND_COOLDOWN {
        return Err(BuildError::setting(
            "extend_cooldown",
            "must be between 1 ms and 24 h",
        ));
    }
    if extension.within.is_some_and(|within| within.is_zero()) {
        return Err(BuildError::setting("extend_within", "must not be zero"));
    }
    let Some(url) = &settings.url else {
        if settings.api_key.is_some() {
            return Err(BuildError::setting("admin_api_key", "needs admin_url"));
        }
        if extension.within.is_some() {
            return Err(BuildError::setting("extend_within", "needs admin_url"));
        }
        return Ok(None);
    };
    let base = reachable("admin_url", parse_http_url("admin_url", url)?)?;
    let authorization = match &settings.api_key {
        Some(key) => {
            let plain_http =
                base.scheme() == "http" && !base.host_str().is_some_and(is_loopback_host);
            if plain_http {
                tracing::warn!(
                    admin_url = base.as_str(),
                    "the Kratos admin API key will be sent over plain http"
                );
            }
            Some(bearer(key)?)
        }
        None => None,
    };
    Ok(Some(AdminApi::new(base, authorization, settings.timeout)))
}

/// `Bearer <key>` as a sensitive header value; the key must be a plain token.
fn bearer(key: &str) -> Result<http::HeaderValue, BuildError> {
    let plain = !key.is_empty()
        && key.len() <= MAX_ADMIN_API_KEY_LEN
        && key.bytes().all(|byte| byte.is_ascii_graphic());
    let value = plain
        .then(|| http::HeaderValue::from_str(&format!("Bearer {key}")).ok())
        .flatten();
    let Some(mut value) = value else {
        return Err(BuildError::setting(
            "admin_api_key",
            "must be 1 to 4096 visible ASCII characters without spaces",
        ));
    };
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_at_build_time() {
        let cases: Vec<(KratosLayerBuilder, &str)> = vec![
            (KratosLayer::builder("not a url"), "public_url"),
            (KratosLayer::builder("ftp://kratos"), "public_url"),
            (KratosLayer::builder("http://user:pw@kratos"), "public_url"),
            (
                KratosLayer::builder("http://k").request_timeout(Duration::ZERO),
                "request_timeout",
            ),
            (
                KratosLayer::builder("http://k").cache_capacity(0),
                "cache_capacity",
            ),
            (
                KratosLayer::builder("http://k").cache_ttl(Duration::MAX),
                "cache_ttl",
            ),
            (
                KratosLayer::builder("http://k").cache_max_bytes(MIN_CACHE_BYTES - 1),
                "cache_max_bytes",
            ),
            (
                KratosLayer::builder("http://k")
                    .cache_capacity(100)
                    .cache_max_bytes(MIN_CACHE_BYTES),
                "cache_max_bytes",
            ),
            (
                KratosLayer::builder("http://k")
                    .cache_max_bytes(MIN_CACHE_BYTES)
                    .cache_capacity(100),
                "cache_capacity",
            ),
            (
                KratosLayer::builder("http://k").cache_rejections(Duration::from_secs(61)),
                "cache_rejections",
            ),
            (
                KratosLayer::builder("http://k").cookie_name("a b"),
                "cookie_names",
            ),
            (
                KratosLayer::builder("http://k").login_url("/login"),
                "login_url",
            ),
            (
                KratosLayer::builder("http://k").trusted_origin("https://app.test/"),
                "trusted_origin",
            ),
            (
                KratosLayer::builder("http://k").trusted_origins(["https://a.test", "null"]),
                "trusted_origins",
            ),
        ];
        for (builder, setting) in cases {
            let error = builder.build().expect_err(setting);
            assert_eq!(error.setting_name(), setting, "{error}");
        }
        assert!(KratosLayer::builder("https://slug.projects.oryapis.com")
            .build()
            .is_ok());
    }
}
