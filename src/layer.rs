//! [`KratosLayer`] and its builder: configuration only. Invalid configuration is refused here,
//! at build time, never at request time.

use std::{fmt, sync::Arc, time::Duration};

use reqwest::Url;
use tower_layer::Layer;

use crate::{
    cache::{CacheConfig, LayerStats, SessionCache},
    client::{AdminApi, KratosClient},
    credentials::CookieNames,
    gate::GateConfig,
    lifecycle::{Lifecycle, SessionLifecycle},
    log_limit::WarnLimiter,
    rejection::{DefaultRejection, RejectionResponse},
    service::KratosService,
};

/// The default cache TTL. See [`KratosLayerBuilder::cache_ttl`] for what it means for revocation.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// The default number of cached sessions.
pub const DEFAULT_CACHE_CAPACITY: u64 = 10_000;
/// The default connect timeout for Kratos.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default deadline for a whole whoami call.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a 401 may be cached ([`KratosLayerBuilder::cache_rejections`]).
pub const MAX_REJECTION_TTL: Duration = Duration::from_secs(60);
/// The default cap on whoami calls in flight ([`KratosLayerBuilder::max_concurrent_lookups`]).
pub const DEFAULT_MAX_CONCURRENT_LOOKUPS: usize = 32;
/// How long a lookup waits for a slot by default ([`KratosLayerBuilder::lookup_queue_timeout`]).
pub const DEFAULT_LOOKUP_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default shortest back-off window ([`KratosLayerBuilder::backoff`]).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The default longest back-off window: Ory's guidance for 429s ([`KratosLayerBuilder::backoff`]).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How many failed whoami calls in a row open the back-off by default
/// ([`KratosLayerBuilder::backoff_after_failures`]).
pub const DEFAULT_BACKOFF_AFTER_FAILURES: u32 = 5;
/// The longest stale-if-error grace ([`KratosLayerBuilder::stale_if_error`]).
pub const MAX_STALE_IF_ERROR: Duration = Duration::from_secs(3600);
/// The default deadline for one admin API call (extend, admin revocations).
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// The default time after a session's extension attempt before it is tried again.
pub const DEFAULT_EXTEND_COOLDOWN: Duration = Duration::from_secs(60);
/// The longest extension cooldown accepted: longer than a day would outlast most sessions.
pub const MAX_EXTEND_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest admin API key accepted, in bytes (Ory Network's keys are under 100).
const MAX_ADMIN_API_KEY_LEN: usize = 4096;
/// How long idle connections to Kratos are kept: below common load-balancer keep-alives (60 s),
/// so a pooled connection is not reused just as the other side closes it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether requests without a valid session reach the inner service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Only authenticated requests go on; every other outcome gets the rejection response.
    #[default]
    Required,
    /// Requests without a session (no credential, an invalid one, or one that needs a step-up)
    /// go on with the [`Outcome`](crate::Outcome) in their extensions. A request whose session
    /// could not be checked because Kratos is unavailable is still rejected (503): letting it on
    /// as anonymous would show a signed-in user a signed-out page.
    Optional,
}

/// What every service made by one builder shares: the client, the cache, the settings.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: KratosClient,
    pub(crate) cache: SessionCache,
    pub(crate) cookie_names: CookieNames,
    pub(crate) lifecycle: Lifecycle,
    /// Keeps outages and attacks from flooding the log with one warning per request.
    pub(crate) warnings: WarnLimiter,
}

/// One layer's policy: the shared state plus its mode and rejection. Services and their futures
/// hold it behind one `Arc`, so a request clones a pointer, never the settings.
#[derive(Debug)]
pub(crate) struct Policy<R> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) mode: Mode,
    pub(crate) rejection: R,
}

/// A tower layer that validates Ory Kratos sessions.
///
/// It finds the caller's credential (`X-Session-Token`, the session cookie, or
/// `Authorization: Bearer`, in Kratos's precedence), validates it with a cached, coalesced
/// `GET /sessions/whoami`, and puts the [`KratosSession`](crate::KratosSession) in the request's
/// extensions. Clones share one cache and one connection pool; so do the layers returned by
/// [`required`](Self::required) and [`optional`](Self::optional).
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kratos = tower_kratos::testing::KratosStandIn::start().await?;
/// # let kratos_url = kratos.public_url();
/// # let session = kratos.create_session();
/// use http::{Request, Response, StatusCode};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_kratos::{KratosLayer, KratosSession};
///
/// let layer = KratosLayer::builder(&kratos_url).build()?;
/// let service = ServiceBuilder::new().layer(layer).service_fn(|request: Request<String>| async move {
///     let session = request.extensions().get::<KratosSession>().expect("the layer ran");
///     Ok::<_, std::convert::Infallible>(Response::new(session.id.clone()))
/// });
///
/// let request = Request::get("/").header("x-session-token", &session.token).body(String::new())?;
/// let response = service.clone().oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::OK);
///
/// let anonymous = service.oneshot(Request::get("/").body(String::new())?).await?;
/// assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
/// # Ok(()) }
/// ```
pub struct KratosLayer<R = DefaultRejection> {
    pub(crate) policy: Arc<Policy<R>>,
}

impl<R> Clone for KratosLayer<R> {
    fn clone(&self) -> Self {
        Self {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<R> fmt::Debug for KratosLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KratosLayer")
            .field("mode", &self.policy.mode)
            .field("shared", &self.policy.shared)
            .finish_non_exhaustive()
    }
}

impl KratosLayer {
    /// Starts a builder for the Kratos public API at `public_url`
    /// (`http://127.0.0.1:4433` self-hosted, `https://<slug>.projects.oryapis.com` on Ory Network).
    pub fn builder(public_url: impl Into<String>) -> KratosLayerBuilder {
        KratosLayerBuilder::new(public_url.into())
    }
}

impl<R: Clone> KratosLayer<R> {
    /// This layer in required mode, sharing the cache and client.
    pub fn required(&self) -> Self {
        self.with_mode(Mode::Required)
    }

    /// This layer in optional mode, sharing the cache and client.
    pub fn optional(&self) -> Self {
        self.with_mode(Mode::Optional)
    }

    /// This layer in `mode`, sharing the cache and client.
    pub fn with_mode(&self, mode: Mode) -> Self {
        Self {
            policy: Arc::new(Policy {
                shared: Arc::clone(&self.policy.shared),
                mode,
                rejection: self.policy.rejection.clone(),
            }),
        }
    }

    /// The layer's mode.
    pub fn mode(&self) -> Mode {
        self.policy.mode
    }
}

impl<R> KratosLayer<R> {
    /// A snapshot of the state this layer shares with its clones: cache sizes, whoami calls in
    /// flight, whether it is backing off.
    ///
    /// Runs the cache's pending maintenance first, so every insert and removal so far is
    /// counted; an entry that expired in the last second or so may still be counted (it is never
    /// served). Too costly for every request: call it from a metrics scrape or a health check.
    pub async fn stats(&self) -> LayerStats {
        self.policy.shared.cache.stats().await
    }

    /// The session lifecycle helpers (extend, revoke, list, log out), sharing this layer's HTTP
    /// client and cache, so a revocation made through them is seen by this layer at once.
    pub fn lifecycle(&self) -> SessionLifecycle {
        SessionLifecycle::new(Arc::clone(&self.policy.shared))
    }
}

impl<S, R> Layer<S> for KratosLayer<R> {
    type Service = KratosService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        KratosService::new(inner, Arc::clone(&self.policy))
    }
}

/// Configures a [`KratosLayer`]. Every setting has a default; [`build`](Self::build) checks them
/// all and reports the first problem.
pub struct KratosLayerBuilder<R = DefaultRejection> {
    public_url: String,
    cookie_names: CookieNames,
    mode: Mode,
    cache: CacheConfig,
    connect_timeout: Duration,
    request_timeout: Duration,
    http_client: Option<reqwest::Client>,
    root_certificates: Vec<reqwest::Certificate>,
    lifecycle: LifecycleSettings,
    rejection: R,
    error: Option<BuildError>,
}

/// The builder's session lifecycle settings (admin API, extension, `Set-Cookie` relay).
#[derive(Clone)]
struct LifecycleSettings {
    admin_url: Option<String>,
    admin_api_key: Option<String>,
    admin_timeout: Duration,
    extend_within: Option<Duration>,
    extend_cooldown: Duration,
    relay_set_cookie: bool,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            admin_url: None,
            admin_api_key: None,
            admin_timeout: DEFAULT_ADMIN_TIMEOUT,
            extend_within: None,
            extend_cooldown: DEFAULT_EXTEND_COOLDOWN,
            relay_set_cookie: true,
        }
    }
}

impl fmt::Debug for LifecycleSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleSettings")
            .field("admin_url", &self.admin_url)
            .field(
                "admin_api_key",
                &self.admin_api_key.as_ref().map(|_| "[redacted]"),
            )
            .field("admin_timeout", &self.admin_timeout)
            .field("extend_within", &self.extend_within)
            .field("extend_cooldown", &self.extend_cooldown)
            .field("relay_set_cookie", &self.relay_set_cookie)
            .finish()
    }
}

impl<R> fmt::Debug for KratosLayerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KratosLayerBuilder")
            .field("public_url", &without_userinfo(&self.public_url))
            .field("cookie_names", &self.cookie_names)
            .field("mode", &self.mode)
            .field("cache", &self.cache)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

/// A URL as given to the builder, fit for `Debug`: without a user name or password (which
/// `build` refuses, but which must not reach a log meanwhile).
fn without_userinfo(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() || !parsed.username().is_empty() {
                // Only fails for URLs that cannot have credentials, which have none to hide.
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            parsed.to_string()
        }
        Err(_) => "[not a URL]".to_owned(),
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
                capacity: DEFAULT_CACHE_CAPACITY,
                negative_ttl: None,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                stale_grace: None,
                gate: GateConfig {
                    max_concurrent: DEFAULT_MAX_CONCURRENT_LOOKUPS,
                    queue_timeout: DEFAULT_LOOKUP_QUEUE_TIMEOUT,
                    backoff_min: DEFAULT_BACKOFF_MIN,
                    backoff_max: DEFAULT_BACKOFF_MAX,
                    failure_threshold: DEFAULT_BACKOFF_AFTER_FAILURES,
                },
            },
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            http_client: None,
            root_certificates: Vec::new(),
            lifecycle: LifecycleSettings::default(),
            rejection: DefaultRejection::new(),
            error: None,
        }
    }

    /// Redirect browsers (`Accept: text/html`) without a valid session to this login page, with
    /// `return_to` set to the URL they asked for. Default: none (401 JSON for everyone).
    pub fn login_url(mut self, url: &str) -> Self {
        match self.rejection.clone().with_login_url(url) {
            Ok(rejection) => self.rejection = rejection,
            Err(error) => self.fail(error),
        }
        self
    }

    /// The app's public base URL, used to build `return_to` for browser redirects. Default: the
    /// request's own origin (its absolute-form target, else its `Host` header, as `http`), when
    /// that is a plain `http`/`https` host and port; otherwise no `return_to` is sent. Set it
    /// behind a proxy, and wherever the `Host` header is not yours to trust.
    pub fn app_url(mut self, url: &str) -> Self {
        match self.rejection.clone().with_app_url(url) {
            Ok(rejection) => self.rejection = rejection,
            Err(error) => self.fail(error),
        }
        self
    }
}

impl<R> KratosLayerBuilder<R> {
    fn fail(&mut self, error: BuildError) {
        self.error.get_or_insert(error);
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
    /// more whoami calls (which Ory Network rate-limits).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// The most sessions kept in the cache; the least recently useful are evicted first.
    /// Default: 10,000.
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        self.cache.capacity = capacity;
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
    /// [`StaleSession`](crate::StaleSession) extension saying how old the session's last
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
    /// handlers refuse requests carrying a [`StaleSession`](crate::StaleSession).
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
            self.cache.gate.max_concurrent = n;
        }
        self
    }

    /// How long a lookup waits for a free slot (see
    /// [`max_concurrent_lookups`](Self::max_concurrent_lookups)) before getting 503. Default:
    /// 1 s. Zero means never wait; at most 60 s, since every waiting request holds its memory.
    pub fn lookup_queue_timeout(mut self, timeout: Duration) -> Self {
        if timeout > Duration::from_secs(60) {
            self.fail(BuildError::setting(
                "lookup_queue_timeout",
                "must be at most 60 s",
            ));
        } else {
            self.cache.gate.queue_timeout = timeout;
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
        if min.is_zero() || min > max || max > Duration::from_secs(300) {
            self.fail(BuildError::setting(
                "backoff",
                "needs 0 < min <= max <= 5 minutes",
            ));
        } else {
            self.cache.gate.backoff_min = min;
            self.cache.gate.backoff_max = max;
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
            self.cache.gate.failure_threshold = n;
        }
        self
    }

    /// How long to wait for a connection to Kratos. Default: 2 s. Applies to the client this
    /// builder makes, not to one given with [`http_client`](Self::http_client).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline for a whole whoami call, answer body included. Default: 3 s. Enforced by the
    /// layer itself, so it holds for a client given with [`http_client`](Self::http_client) too.
    /// A request waiting on a hung Kratos gets 503 after this long.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Use this `reqwest::Client` to reach Kratos (for its proxy, TLS or pool settings).
    ///
    /// Give it a `connect_timeout`, and `redirect(Policy::none())`: Kratos never redirects
    /// whoami, and following a redirect would carry the credential elsewhere.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Trust this root certificate for Kratos's HTTPS, besides the system's roots.
    pub fn add_root_certificate(mut self, certificate: reqwest::Certificate) -> Self {
        self.root_certificates.push(certificate);
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
        self.lifecycle.admin_url = Some(url.into());
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
        self.lifecycle.admin_api_key = Some(key.into());
        self
    }

    /// The deadline for one admin API call (extend, admin revocations). Default: 3 s. With
    /// [`extend_within`](Self::extend_within), also the longest a request waits for an
    /// extension before it goes on with the session it had.
    pub fn admin_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle.admin_timeout = timeout;
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
        self.lifecycle.extend_within = Some(within);
        self
    }

    /// After a session's extension attempt, how long before it is tried again; also how long
    /// extensions pause after an admin API failure without `Retry-After`. Default: 60 s; at
    /// most 24 h.
    ///
    /// Ory Network's admin rate limit (`kratos-admin-low`) is a few requests a second per
    /// project: the cooldown keeps a burst of one user's requests to one extension.
    pub fn extend_cooldown(mut self, cooldown: Duration) -> Self {
        self.lifecycle.extend_cooldown = cooldown;
        self
    }

    /// Pass on the `Set-Cookie` Kratos's whoami issues for a cookie session (after an extension,
    /// here or elsewhere), appended to your service's response, so the browser's cookie follows
    /// the session's new expiry. Default: on. Only the session cookie (by the configured cookie
    /// names) is passed, and only to requests that came with a session cookie; a response
    /// without `Cache-Control` then gets `Cache-Control: private`, so no shared cache stores it.
    pub fn relay_set_cookie(mut self, relay: bool) -> Self {
        self.lifecycle.relay_set_cookie = relay;
        self
    }

    /// Replace the rejection response (a [`RejectionResponse`] or a closure
    /// `Fn(&Outcome, &http::request::Parts) -> http::Response<bytes::Bytes>`).
    pub fn rejection<R2: RejectionResponse>(self, rejection: R2) -> KratosLayerBuilder<R2> {
        KratosLayerBuilder {
            public_url: self.public_url,
            cookie_names: self.cookie_names,
            mode: self.mode,
            cache: self.cache,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            http_client: self.http_client,
            root_certificates: self.root_certificates,
            lifecycle: self.lifecycle,
            rejection,
            error: self.error,
        }
    }

    /// Checks the configuration and builds the layer.
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
        let public_url = parse_http_url("public_url", &self.public_url)?;
        if self.connect_timeout.is_zero() {
            return Err(BuildError::setting("connect_timeout", "must not be zero"));
        }
        if self.request_timeout.is_zero() {
            return Err(BuildError::setting("request_timeout", "must not be zero"));
        }
        if self.cache.capacity == 0 {
            return Err(BuildError::setting("cache_capacity", "must not be zero"));
        }
        if !self.cookie_names.is_valid() {
            return Err(BuildError::setting(
                "cookie_names",
                "must be non-empty RFC 6265 cookie names",
            ));
        }
        let http = match self.http_client {
            Some(client) if self.root_certificates.is_empty() => client,
            Some(_) => {
                return Err(BuildError::setting(
                    "add_root_certificate",
                    "cannot be combined with http_client: add the roots to that client",
                ))
            }
            None => {
                let mut builder = reqwest::Client::builder()
                    .connect_timeout(self.connect_timeout)
                    .timeout(self.request_timeout)
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("tower-kratos/", env!("CARGO_PKG_VERSION")));
                for certificate in self.root_certificates {
                    builder = builder.add_root_certificate(certificate);
                }
                builder.build().map_err(BuildError::client)?
            }
        };
        let cache_config = CacheConfig {
            request_timeout: self.request_timeout,
            ..self.cache
        };
        let cache = SessionCache::new(cache_config).map_err(|_| {
            BuildError::setting(
                "cache",
                "the operating system provided no randomness for the cache key",
            )
        })?;
        let (admin, lifecycle) = build_lifecycle(self.lifecycle, self.cache.capacity)?;
        let mut client = KratosClient::new(http, &public_url, self.request_timeout);
        if let Some(admin) = admin {
            client = client.with_admin(admin);
        }
        let shared = Arc::new(Shared {
            client,
            cache,
            cookie_names: self.cookie_names,
            lifecycle,
            warnings: WarnLimiter::default(),
        });
        Ok(KratosLayer {
            policy: Arc::new(Policy {
                shared,
                mode: self.mode,
                rejection: self.rejection,
            }),
        })
    }
}

/// Checks the lifecycle settings: the admin API (URL, key, deadline) and extension.
fn build_lifecycle(
    settings: LifecycleSettings,
    capacity: u64,
) -> Result<(Option<AdminApi>, Lifecycle), BuildError> {
    if settings.admin_timeout.is_zero() {
        return Err(BuildError::setting("admin_timeout", "must not be zero"));
    }
    if settings.extend_cooldown.is_zero() || settings.extend_cooldown > MAX_EXTEND_COOLDOWN {
        return Err(BuildError::setting(
            "extend_cooldown",
            "must be between 1 ms and 24 h",
        ));
    }
    if settings
        .extend_within
        .is_some_and(|within| within.is_zero())
    {
        return Err(BuildError::setting("extend_within", "must not be zero"));
    }
    let admin = match &settings.admin_url {
        Some(url) => {
            let base = parse_http_url("admin_url", url)?;
            let authorization = match &settings.admin_api_key {
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
            Some(AdminApi::new(base, authorization, settings.admin_timeout))
        }
        None if settings.admin_api_key.is_some() => {
            return Err(BuildError::setting("admin_api_key", "needs admin_url"))
        }
        None if settings.extend_within.is_some() => {
            return Err(BuildError::setting("extend_within", "needs admin_url"))
        }
        None => None,
    };
    let lifecycle = Lifecycle::new(
        settings.extend_within,
        settings.relay_set_cookie,
        settings.extend_cooldown,
        capacity,
    );
    Ok((admin, lifecycle))
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

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses a URL setting: absolute, `http` or `https`, with a host and no credentials in it.
pub(crate) fn parse_http_url(setting: &'static str, url: &str) -> Result<Url, BuildError> {
    let parsed =
        Url::parse(url).map_err(|error| BuildError::setting(setting, error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(BuildError::setting(setting, "must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(BuildError::setting(setting, "must have a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(BuildError::setting(
            setting,
            "must not contain credentials; use http_client for authentication",
        ));
    }
    Ok(parsed)
}

/// Why a layer could not be built.
#[derive(Debug)]
pub struct BuildError {
    setting: &'static str,
    reason: String,
    source: Option<reqwest::Error>,
}

impl BuildError {
    fn setting(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
            source: None,
        }
    }

    fn client(error: reqwest::Error) -> Self {
        Self {
            setting: "http_client",
            reason: "the HTTP client could not be built".into(),
            source: Some(error),
        }
    }

    /// The setting at fault, as the builder method is named.
    pub fn setting_name(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid tower-kratos setting `{}`: {}",
            self.setting, self.reason
        )
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
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
