//! [`KratosLayer`]: the tower layer, holding one layer's policy behind an `Arc`; its builder is
//! in `builder.rs`.

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use crate::{
    authenticate::KratosService,
    config::{BuildError, Mode},
    hook::RevocationHook,
    lifecycle::SessionLifecycle,
    rejection::DefaultRejection,
    require::{RequireLayer, Requirement},
    state::Policy,
};

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
/// # let kratos = kratos_stand_in::KratosStandIn::start().await?;
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
            .field("state", &self.policy.state)
            .finish_non_exhaustive()
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
                state: Arc::clone(&self.policy.state),
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
        let state = &self.policy.state;
        let cache = state.cache.stats().await;
        let admission = state.client.admission();
        let (watched_credentials, watched_connections) = state.cache.watched();
        LayerStats {
            cache_entries: cache.entries,
            cache_bytes: cache.bytes,
            stale_entries: cache.stale_entries,
            lookups_in_flight: admission.in_flight(),
            backing_off: admission.backing_off(),
            watched_credentials,
            watched_connections,
            #[cfg(feature = "redis")]
            shared_cache: state.cache.shared_stats(),
        }
    }

    /// A [`Requirement`] as a layer for a route or a group of routes, inside this one: it
    /// answers through this layer's rejection, and asks Kratos again after a step-up. See
    /// [`require`](crate::require).
    pub fn require(&self, requirement: Requirement) -> RequireLayer<R> {
        RequireLayer::new(Arc::clone(&self.policy), requirement)
    }

    /// The session lifecycle helpers (extend, revoke, list, log out), sharing this layer's HTTP
    /// client and cache, so a revocation made through them is seen by this layer at once.
    pub fn lifecycle(&self) -> SessionLifecycle {
        SessionLifecycle::new(Arc::clone(&self.policy.state))
    }

    /// The receiver of Kratos's web hook after `revoke_active_sessions`, sharing this layer's
    /// cache (and so its shared cache): see [`hook`](crate::hook).
    ///
    /// # Errors
    /// When `key` is shorter than
    /// [`MIN_HOOK_KEY_LEN`](crate::defaults::MIN_HOOK_KEY_LEN) bytes.
    pub fn revocation_hook(&self, key: impl AsRef<[u8]>) -> Result<RevocationHook, BuildError> {
        RevocationHook::new(Arc::clone(&self.policy.state), key.as_ref())
    }
}

impl<S, R> Layer<S> for KratosLayer<R> {
    type Service = KratosService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        KratosService::new(inner, Arc::clone(&self.policy))
    }
}

/// A snapshot of a layer's shared state, from [`KratosLayer::stats`]: for metrics, health checks
/// and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Entries in the session cache: sessions, and 401s when
    /// [`cache_rejections`](crate::authenticate::KratosLayerBuilder::cache_rejections) is on.
    pub cache_entries: u64,
    /// What the cached entries weigh, in bytes, when the cache is sized in bytes
    /// ([`cache_max_bytes`](crate::authenticate::KratosLayerBuilder::cache_max_bytes)); `None`
    /// when it counts entries.
    pub cache_bytes: Option<u64>,
    /// Sessions kept for [`stale_if_error`](crate::authenticate::KratosLayerBuilder::stale_if_error) (0 when
    /// it is off).
    pub stale_entries: u64,
    /// whoami calls running now (at most
    /// [`max_concurrent_lookups`](crate::authenticate::KratosLayerBuilder::max_concurrent_lookups)).
    pub lookups_in_flight: usize,
    /// Whether the layer is backing off from Kratos: lookups are answered 503 (or stale) without
    /// asking it, until a probe lookup gets an answer.
    pub backing_off: bool,
    /// Credentials whose open connections are watched, to end with their session (see
    /// [`live`](crate::live)): one watch each, however many connections it has.
    pub watched_credentials: usize,
    /// Connections watched: streamed bodies that have waited, WebSockets, `SessionEnd`s.
    pub watched_connections: usize,
    /// The shared cache's state and counters, when one is configured
    /// ([`redis_url`](crate::authenticate::KratosLayerBuilder::redis_url)).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub shared_cache: Option<crate::authenticate::SharedCacheStats>,
}
