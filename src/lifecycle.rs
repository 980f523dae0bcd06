//! Keeping sessions alive and ending them: extension when a session is close to expiry,
//! revocation, listing and API logout, each keeping this process's session cache honest at once.
//!
//! Get a [`SessionLifecycle`] from the layer with [`KratosLayer::lifecycle`] and hand it to your
//! handlers (axum `State` or `Extension`); it shares the layer's HTTP client and cache. The
//! self-service helpers act as the caller, with the credential of the request they are given
//! (found the way the layer finds it); the admin helpers need
//! [`admin_url`](crate::KratosLayerBuilder::admin_url).
//!
//! ```
//! use axum::{extract::{Path, State}, http::{HeaderMap, StatusCode}, routing::{delete, post}, Router};
//! use tower_kratos::{lifecycle::{ExtendOutcome, LifecycleError, SessionLifecycle}, KratosLayer};
//!
//! async fn extend(
//!     State(sessions): State<SessionLifecycle>,
//!     headers: HeaderMap,
//! ) -> Result<(ExtendOutcome, String), LifecycleError> {
//!     let outcome = sessions.extend_if_expiring(&headers, std::time::Duration::from_secs(3600)).await?;
//!     let text = format!("extended: {}", outcome.extended());
//!     // The outcome as response parts relays Kratos's re-issued session cookie.
//!     Ok((outcome, text))
//! }
//!
//! async fn revoke(
//!     State(sessions): State<SessionLifecycle>,
//!     headers: HeaderMap,
//!     Path(id): Path<String>,
//! ) -> Result<StatusCode, LifecycleError> {
//!     sessions.revoke_session(&headers, &id).await?;
//!     Ok(StatusCode::NO_CONTENT)
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let kratos = tower_kratos::testing::KratosStandIn::start().await?;
//! # let (public_url, admin_url) = (kratos.public_url(), kratos.admin_url());
//! let layer = KratosLayer::builder(public_url).admin_url(admin_url).build()?;
//! let app: Router = Router::new()
//!     .route("/me/extend", post(extend))
//!     .route("/me/sessions/{id}", delete(revoke))
//!     .layer(layer.clone())
//!     .with_state(layer.lifecycle());
//! # let alice = kratos.create_session();
//! # let other = kratos.session().identity(&alice.identity_id).create();
//! # use tower::ServiceExt;
//! # let request = http::Request::delete(format!("/me/sessions/{}", other.id))
//! #     .header("x-session-token", &alice.token)
//! #     .body(axum::body::Body::empty())?;
//! # assert_eq!(app.oneshot(request).await?.status(), 204);
//! # assert!(!kratos.session_state(&other.id).unwrap().active);
//! # Ok(()) }
//! ```
//!
//! # What happens to the cache
//! After a revocation made through this module succeeds, every request carrying an affected
//! session (by session id, by identity id, or by credential) is checked with Kratos again
//! before it is served, whatever the cache TTL; Kratos then rejects it. Revocations made
//! elsewhere (the Kratos admin UI, another replica) are seen when the cache entry expires: at
//! most [`cache_ttl`](crate::KratosLayerBuilder::cache_ttl).
//!
//! # Extension
//! [`SessionLifecycle::extend_if_expiring`] and the layer setting
//! [`extend_within`](crate::KratosLayerBuilder::extend_within) share one mechanism:
//! - Kratos is called only when `expires_at - now` is below the threshold.
//! - One extension per session at a time; requests arriving meanwhile wait for it and share
//!   its result, and for [`extend_cooldown`](crate::KratosLayerBuilder::extend_cooldown) after
//!   it the session is not extended again (Ory Network's admin rate limits are low).
//! - After a failure of the admin API (down, slow, 429, refused key), no session is extended
//!   for the cooldown, or for as long as a 429's `Retry-After` asks.
//! - 200 and 204 answers are both accepted. Success is confirmed with one whoami as the caller,
//!   which refreshes the cache entry (the next request sees the new `expires_at`) and, for a
//!   cookie session, yields the re-issued `Set-Cookie`.

use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use http::{header, request, HeaderMap, HeaderValue};
use moka::future::Cache;
use time::OffsetDateTime;
use tracing::Instrument;

pub use crate::client::{LifecycleError, Page, SessionList, MAX_PAGE_SIZE};
use crate::{
    cache::Revoked,
    client::{canonical_id, ExtendAnswer},
    credentials::{find_credential, CookieNames, Credential, CredentialSource},
    layer::Shared,
    outcome::{Outcome, Unauthenticated, Unavailable},
    session::KratosSession,
};

#[cfg(doc)]
use crate::KratosLayer;

/// What one extension attempt ended in.
///
/// The layer (with [`extend_within`](crate::KratosLayerBuilder::extend_within)) puts it in the
/// request's and the response's extensions when the request's session was due for extension,
/// and only then. Requests that shared one attempt (concurrent ones, or ones within the
/// cooldown after it) carry the same report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionExtension {
    /// Kratos moved the session's expiry to this time.
    Extended {
        /// The new expiry.
        expires_at: OffsetDateTime,
    },
    /// Kratos accepted the call but left the expiry as it was: its `earliest_possible_extend`
    /// window has not been reached yet ("too early").
    NotExtended {
        /// The unchanged expiry.
        expires_at: Option<OffsetDateTime>,
    },
    /// Kratos answered 404: the session no longer exists, or (Ory Network) another request is
    /// extending it at this moment. The request goes on with the session it had; the next one
    /// is checked with Kratos again.
    Gone,
    /// The admin API failed (down, slow, 429, refused key), or Kratos accepted a 204 extension
    /// whose result the confirming whoami could not read. The request goes on with the session
    /// it had.
    Failed(LifecycleError),
}

impl SessionExtension {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Extended { .. } => "extended",
            Self::NotExtended { .. } => "not_extended",
            Self::Gone => "gone",
            Self::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for SessionExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Extended { expires_at } => write!(f, "extended until {expires_at}"),
            Self::NotExtended { .. } => {
                f.write_str("not extended: Kratos left the expiry unchanged (too early)")
            }
            Self::Gone => f.write_str("session gone or being extended elsewhere (404)"),
            Self::Failed(error) => write!(f, "extension failed: {error}"),
        }
    }
}

/// The answer of [`SessionLifecycle::extend_if_expiring`].
///
/// With the `axum` feature it is axum's `IntoResponseParts`: returned with a response, it appends the `Set-Cookie` Kratos issued for the extended session
/// (cookie sessions only), so the browser's cookie does not expire at its old time.
#[derive(Clone)]
#[must_use]
pub struct ExtendOutcome {
    attempt: Option<SessionExtension>,
    session: KratosSession,
    set_cookies: Vec<HeaderValue>,
}

impl ExtendOutcome {
    /// What the extension attempt ended in; `None` when the session was not due, in which case
    /// Kratos was not called.
    pub fn attempt(&self) -> Option<&SessionExtension> {
        self.attempt.as_ref()
    }

    /// Whether Kratos moved the session's expiry.
    pub fn extended(&self) -> bool {
        matches!(self.attempt, Some(SessionExtension::Extended { .. }))
    }

    /// The session's expiry as now known: the new one after an extension.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        match &self.attempt {
            Some(SessionExtension::Extended { expires_at }) => Some(*expires_at),
            _ => self.session.expires_at,
        }
    }

    /// The caller's session: as Kratos confirmed it after an extension, else as it was.
    pub fn session(&self) -> &KratosSession {
        &self.session
    }

    /// The `Set-Cookie` headers to pass on to the browser (empty for token sessions).
    pub fn set_cookies(&self) -> &[HeaderValue] {
        &self.set_cookies
    }

    /// The `Set-Cookie` headers, owned.
    pub fn into_set_cookies(self) -> Vec<HeaderValue> {
        self.set_cookies
    }
}

impl fmt::Debug for ExtendOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The Set-Cookie values are session secrets: count them, never show them.
        f.debug_struct("ExtendOutcome")
            .field("attempt", &self.attempt)
            .field("session_id", &self.session.id)
            .field("expires_at", &self.expires_at())
            .field("set_cookies", &self.set_cookies.len())
            .finish()
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponseParts for ExtendOutcome {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut parts: axum_core::response::ResponseParts,
    ) -> Result<axum_core::response::ResponseParts, std::convert::Infallible> {
        append_set_cookies(parts.headers_mut(), self.set_cookies);
        Ok(parts)
    }
}

/// Appends `Set-Cookie` headers (never replacing the response's own), and keeps shared caches
/// from storing a response that carries a session cookie: `Cache-Control: private` unless the
/// response already says how it may be cached.
pub(crate) fn append_set_cookies(headers: &mut HeaderMap, set_cookies: Vec<HeaderValue>) {
    if set_cookies.is_empty() {
        return;
    }
    for value in set_cookies {
        headers.append(header::SET_COOKIE, value);
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// Whose session a self-service helper acts on: the caller's request headers (the credential is
/// found as the layer finds it, with its cookie names), the request head, or a [`Credential`].
///
/// Implemented for [`HeaderMap`], [`http::request::Parts`] and [`Credential`]; sealed.
pub trait Caller: Sync + sealed::Sealed {
    /// The caller's credential.
    #[doc(hidden)]
    fn credential(&self, cookie_names: &CookieNames)
        -> Result<Cow<'_, Credential>, LifecycleError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for http::HeaderMap {}
    impl Sealed for http::request::Parts {}
    impl Sealed for crate::credentials::Credential {}
}

impl Caller for HeaderMap {
    fn credential(
        &self,
        cookie_names: &CookieNames,
    ) -> Result<Cow<'_, Credential>, LifecycleError> {
        match find_credential(self, cookie_names) {
            Ok(Some(credential)) => Ok(Cow::Owned(credential)),
            Ok(None) => Err(LifecycleError::NoCredential),
            Err(malformed) => Err(LifecycleError::Malformed(malformed)),
        }
    }
}

impl Caller for request::Parts {
    fn credential(
        &self,
        cookie_names: &CookieNames,
    ) -> Result<Cow<'_, Credential>, LifecycleError> {
        self.headers.credential(cookie_names)
    }
}

impl Caller for Credential {
    fn credential(&self, _: &CookieNames) -> Result<Cow<'_, Credential>, LifecycleError> {
        Ok(Cow::Borrowed(self))
    }
}

/// The session lifecycle helpers, sharing one layer's HTTP client and cache; from
/// [`KratosLayer::lifecycle`]. Cloning is cheap (one `Arc`).
///
/// Every helper is safe to call from a request handler: bad input is a typed
/// [`LifecycleError`] before Kratos is called, and every Kratos call has a deadline.
#[derive(Clone)]
pub struct SessionLifecycle {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionLifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLifecycle")
            .field("admin", &self.shared.client.admin())
            .field("lifecycle", &self.shared.lifecycle)
            .finish_non_exhaustive()
    }
}

impl SessionLifecycle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Extends the caller's session if it expires within `within`; otherwise calls nothing.
    ///
    /// The caller's session is read through the layer's cache (normally a hit: the layer has
    /// just validated it). When it is due, the session is extended through the admin API
    /// (`PATCH /admin/sessions/{id}/extend`), at most once at a time per session and not again
    /// within the cooldown; the result is confirmed with one whoami as the caller, which
    /// refreshes the cache entry and yields Kratos's re-issued `Set-Cookie` for cookie sessions.
    ///
    /// Admin API failures are not errors: they are reported as
    /// [`SessionExtension::Failed`] in the outcome, and the session is as it was.
    ///
    /// # Errors
    /// No usable session to extend ([`NoCredential`](LifecycleError::NoCredential),
    /// [`Malformed`](LifecycleError::Malformed),
    /// [`Unauthenticated`](LifecycleError::Unauthenticated),
    /// [`AalRequired`](LifecycleError::AalRequired), or Kratos unavailable for the whoami
    /// lookup), or [`AdminNotConfigured`](LifecycleError::AdminNotConfigured).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_kratos::{lifecycle::SessionExtension, testing::{Endpoint, KratosStandIn}, KratosLayer};
    ///
    /// let kratos = KratosStandIn::start().await?;
    /// let layer = KratosLayer::builder(kratos.public_url()).admin_url(kratos.admin_url()).build()?;
    /// let sessions = layer.lifecycle();
    ///
    /// let session = kratos.session().expires_in(Duration::from_secs(600)).create();
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-session-token", session.token.parse()?);
    ///
    /// // Not due: expires in 10 minutes, not within 5.
    /// let outcome = sessions.extend_if_expiring(&headers, Duration::from_secs(300)).await?;
    /// assert!(outcome.attempt().is_none());
    /// assert_eq!(kratos.calls(Endpoint::ExtendSession), 0);
    ///
    /// // Due: expires within the hour.
    /// let outcome = sessions.extend_if_expiring(&headers, Duration::from_secs(3600)).await?;
    /// assert!(matches!(outcome.attempt(), Some(SessionExtension::Extended { .. })));
    /// assert_eq!(outcome.expires_at(), Some(kratos.session_state(&session.id).unwrap().expires_at));
    /// assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
    /// # Ok(()) }
    /// ```
    pub async fn extend_if_expiring(
        &self,
        caller: &impl Caller,
        within: Duration,
    ) -> Result<ExtendOutcome, LifecycleError> {
        let shared = &self.shared;
        let credential = caller.credential(&shared.cookie_names)?;
        if shared.client.admin().is_none() {
            return self.logged(Err(LifecycleError::AdminNotConfigured));
        }
        let lookup = shared.cache.lookup(&credential, None, &shared.client).await;
        let relayed = relayable(&credential, lookup.set_cookies, &shared.cookie_names);
        let session = match lookup.outcome {
            Outcome::Authenticated(session) => session,
            other => return Err(error_of(other)),
        };
        if !is_due(&session, within) {
            return Ok(ExtendOutcome {
                attempt: None,
                session,
                set_cookies: relayed,
            });
        }
        let attempt = extend_shared(shared, &credential, &session).await;
        let extended = relayable(
            &credential,
            attempt.set_cookies.clone(),
            &shared.cookie_names,
        );
        Ok(ExtendOutcome {
            attempt: Some(attempt.report.clone()),
            session: attempt.session.clone().unwrap_or(session),
            // The extension's cookie is the newest; an earlier one from the lookup is superseded.
            set_cookies: if extended.is_empty() {
                relayed
            } else {
                extended
            },
        })
    }

    /// One page of the caller's other active sessions (`GET /sessions`), newest first. The
    /// session the request was made with is not listed.
    ///
    /// # Errors
    /// [`NoCredential`](LifecycleError::NoCredential),
    /// [`Malformed`](LifecycleError::Malformed),
    /// [`Unauthenticated`](LifecycleError::Unauthenticated),
    /// [`AalRequired`](LifecycleError::AalRequired),
    /// [`RateLimited`](LifecycleError::RateLimited),
    /// [`Unavailable`](LifecycleError::Unavailable).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_kratos::{lifecycle::Page, testing::KratosStandIn, KratosLayer};
    ///
    /// let kratos = KratosStandIn::start().await?;
    /// let sessions = KratosLayer::builder(kratos.public_url()).build()?.lifecycle();
    /// let laptop = kratos.create_session();
    /// let phone = kratos.session().identity(&laptop.identity_id).create();
    /// let tablet = kratos.session().identity(&laptop.identity_id).create();
    ///
    /// let credential = tower_kratos::credentials::Credential::session_token(&laptop.token)?;
    /// let first = sessions.list_sessions(&credential, &Page::first().with_size(1)).await?;
    /// assert_eq!(first.sessions[0].id, tablet.id);
    /// assert_eq!(first.total, Some(2));
    /// let second = sessions.list_sessions(&credential, first.next.as_ref().unwrap()).await?;
    /// assert_eq!(second.sessions[0].id, phone.id);
    /// assert!(second.next.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn list_sessions(
        &self,
        caller: &impl Caller,
        page: &Page,
    ) -> Result<SessionList, LifecycleError> {
        let credential = caller.credential(&self.shared.cookie_names)?;
        let listed = self.shared.client.list_my_sessions(&credential, page).await;
        self.forget_if_refused(&credential, listed).await
    }

    /// Revokes another session of the caller (`DELETE /sessions/{id}`). From then on, requests
    /// carrying that session are rejected by this process at once, whatever the cache TTL.
    ///
    /// Kratos answers 204 for any id that is not one of the caller's sessions too, and revokes
    /// nothing then; requests carrying such a session are merely checked with Kratos again.
    ///
    /// # Errors
    /// [`InvalidId`](LifecycleError::InvalidId) (Kratos not called),
    /// [`CurrentSession`](LifecycleError::CurrentSession) (the session the request was made
    /// with: Kratos refuses with 400, and the session stays usable), and the caller errors of
    /// [`list_sessions`](Self::list_sessions).
    pub async fn revoke_session(
        &self,
        caller: &impl Caller,
        session_id: &str,
    ) -> Result<(), LifecycleError> {
        let credential = caller.credential(&self.shared.cookie_names)?;
        let session_id = canonical_id(session_id)?;
        let revoked = self
            .shared
            .client
            .revoke_my_session(&credential, &session_id)
            .await;
        let revoked = self.forget_if_refused(&credential, revoked).await;
        if may_have_acted(&revoked) {
            self.shared
                .cache
                .revoked(Revoked::Session(&session_id))
                .await;
        }
        revoked?;
        tracing::info!(session_id, "Kratos session revoked by its identity");
        Ok(())
    }

    /// Revokes all the caller's sessions but the one the request was made with
    /// (`DELETE /sessions`), and returns how many Kratos counted.
    ///
    /// From then on, requests carrying any session of the caller's identity are checked with
    /// Kratos again before they are served (whatever the cache TTL), so the revoked ones are
    /// rejected at once; the caller's own session costs one more whoami and stays usable.
    ///
    /// # Errors
    /// The caller errors of [`list_sessions`](Self::list_sessions).
    pub async fn revoke_other_sessions(&self, caller: &impl Caller) -> Result<u64, LifecycleError> {
        let shared = &self.shared;
        let credential = caller.credential(&shared.cookie_names)?;
        // The identity to mark; normally a cache hit, as the layer has just validated it.
        let lookup = shared.cache.lookup(&credential, None, &shared.client).await;
        let identity_id = match &lookup.outcome {
            Outcome::Authenticated(session) => session.identity_id().map(str::to_owned),
            _ => None,
        };
        let revoked = shared.client.revoke_my_other_sessions(&credential).await;
        let revoked = self.forget_if_refused(&credential, revoked).await;
        if !may_have_acted(&revoked) {
            return revoked;
        }
        let identity_id = match identity_id {
            Some(identity_id) => Some(identity_id),
            // The lookup failed (Kratos busy?) but the revocation went through: ask once more,
            // or the revoked sessions cached here would be served until their entries expire.
            None => match shared.client.whoami(&credential, None, true).await.outcome {
                Outcome::Authenticated(session) => session.identity_id().map(str::to_owned),
                _ => None,
            },
        };
        match &identity_id {
            Some(identity_id) => shared.cache.revoked(Revoked::Identity(identity_id)).await,
            // A session without an identity cannot have been looked up through whoami; should
            // Kratos ever send one, still make the caller's own entry ask again.
            None => {
                tracing::warn!(
                    "the caller's identity is unknown: its other sessions cached here stay \
                     accepted until their cache entries expire"
                );
                shared.cache.revoked(Revoked::Credential(&credential)).await;
            }
        }
        let count = revoked?;
        tracing::info!(
            identity_id = identity_id.as_deref().unwrap_or(""),
            count,
            "Kratos sessions revoked by their identity, but the current one"
        );
        Ok(count)
    }

    /// Logs out an API client (`DELETE /self-service/logout/api` with its session token). From
    /// then on, requests carrying that token (as `X-Session-Token` or Bearer) are rejected by
    /// this process at once. Logging out an already logged-out token succeeds, as in Kratos.
    ///
    /// # Errors
    /// [`NotATokenSession`](LifecycleError::NotATokenSession) for a cookie (browsers log out
    /// through Kratos's browser flow), [`Unauthenticated`](LifecycleError::Unauthenticated)
    /// when Kratos does not know the token (403), and the other caller errors of
    /// [`list_sessions`](Self::list_sessions).
    pub async fn logout(&self, caller: &impl Caller) -> Result<(), LifecycleError> {
        let credential = caller.credential(&self.shared.cookie_names)?;
        let logged_out = self.shared.client.logout_api(&credential).await;
        let logged_out = self.forget_if_refused(&credential, logged_out).await;
        if may_have_acted(&logged_out) {
            self.shared
                .cache
                .revoked(Revoked::Credential(&credential))
                .await;
        }
        logged_out?;
        tracing::info!("Kratos session logged out (API)");
        Ok(())
    }

    /// Deactivates a session through the admin API (`DELETE /admin/sessions/{id}`). From then
    /// on, requests carrying it are rejected by this process at once.
    ///
    /// # Errors
    /// [`InvalidId`](LifecycleError::InvalidId),
    /// [`AdminNotConfigured`](LifecycleError::AdminNotConfigured) (neither calls Kratos),
    /// [`NotFound`](LifecycleError::NotFound) (no such session; any cached entry for it is
    /// dropped all the same), [`AdminRefused`](LifecycleError::AdminRefused),
    /// [`RateLimited`](LifecycleError::RateLimited),
    /// [`Unavailable`](LifecycleError::Unavailable).
    pub async fn disable_session(&self, session_id: &str) -> Result<(), LifecycleError> {
        let session_id = canonical_id(session_id)?;
        let disabled = self.shared.client.disable_session(&session_id).await;
        if may_have_acted(&disabled) || matches!(disabled, Err(LifecycleError::NotFound)) {
            self.shared
                .cache
                .revoked(Revoked::Session(&session_id))
                .await;
        }
        self.logged(disabled)?;
        tracing::info!(session_id, "Kratos session disabled (admin)");
        Ok(())
    }

    /// Deletes every session of an identity through the admin API
    /// (`DELETE /admin/identities/{id}/sessions`), e.g. after a password change or when
    /// blocking a user. From then on, requests carrying any of them are rejected by this process
    /// at once.
    ///
    /// # Errors
    /// As [`disable_session`](Self::disable_session); [`NotFound`](LifecycleError::NotFound)
    /// is how Kratos says the identity has no sessions (or does not exist).
    pub async fn revoke_identity_sessions(&self, identity_id: &str) -> Result<(), LifecycleError> {
        let identity_id = canonical_id(identity_id)?;
        let deleted = self
            .shared
            .client
            .delete_identity_sessions(&identity_id)
            .await;
        if may_have_acted(&deleted) || matches!(deleted, Err(LifecycleError::NotFound)) {
            self.shared
                .cache
                .revoked(Revoked::Identity(&identity_id))
                .await;
        }
        self.logged(deleted)?;
        tracing::info!(
            identity_id,
            "all Kratos sessions of an identity revoked (admin)"
        );
        Ok(())
    }

    /// Logs what is the operator's to fix (the admin API not configured, or refusing the API
    /// key) at `error`, at most once per cause and window: every request to the route would.
    fn logged<T>(&self, result: Result<T, LifecycleError>) -> Result<T, LifecycleError> {
        if let Err(error @ (LifecycleError::AdminNotConfigured | LifecycleError::AdminRefused(_))) =
            &result
        {
            if let Some(left_out) = self.shared.warnings.admit(("lifecycle", error.kind())) {
                tracing::error!(
                    error = %error,
                    left_out_since_last = left_out,
                    "Kratos session lifecycle call failed"
                );
            }
        }
        result
    }

    /// When Kratos says the caller's credential is no longer valid, whatever this process has
    /// cached for it is stale: the next request with it asks Kratos again.
    async fn forget_if_refused<T>(
        &self,
        credential: &Credential,
        result: Result<T, LifecycleError>,
    ) -> Result<T, LifecycleError> {
        if matches!(result, Err(LifecycleError::Unauthenticated)) {
            self.shared
                .cache
                .revoked(Revoked::Credential(credential))
                .await;
        }
        result
    }
}

/// Whether Kratos may have carried a revocation out: it said so, or its answer could not be read
/// (a timeout after the call was sent, an answer outside the endpoint's contract). Either way,
/// what this process has cached for the affected sessions must be checked with Kratos again.
fn may_have_acted<T>(result: &Result<T, LifecycleError>) -> bool {
    matches!(result, Ok(_) | Err(LifecycleError::Unavailable(_)))
}

/// The lifecycle state one layer shares: its settings, the extension attempts of the cooldown
/// period, and the admin back-off.
pub(crate) struct Lifecycle {
    /// The layer setting: extend sessions expiring within this on every authenticated request.
    pub(crate) extend_within: Option<Duration>,
    /// Whether the layer passes Kratos's `Set-Cookie` on to the response.
    pub(crate) relay_set_cookie: bool,
    cooldown: Duration,
    /// One entry per session extended within the cooldown: concurrent callers share the one in
    /// flight, later ones its result.
    attempts: Cache<String, Arc<Attempt>>,
    /// After an admin API failure, no extension is tried until then.
    pause: Mutex<Option<Pause>>,
}

struct Pause {
    until: Instant,
    cause: LifecycleError,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("extend_within", &self.extend_within)
            .field("relay_set_cookie", &self.relay_set_cookie)
            .field("cooldown", &self.cooldown)
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    pub(crate) fn new(
        extend_within: Option<Duration>,
        relay_set_cookie: bool,
        cooldown: Duration,
        capacity: u64,
    ) -> Self {
        Self {
            extend_within,
            relay_set_cookie,
            cooldown,
            attempts: Cache::builder()
                .name("tower-kratos extensions")
                .max_capacity(capacity)
                .time_to_live(cooldown)
                .build(),
            pause: Mutex::new(None),
        }
    }

    /// The failure extensions are paused for, if they are.
    fn paused(&self) -> Option<LifecycleError> {
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        match &*pause {
            Some(current) if current.until > Instant::now() => Some(current.cause.clone()),
            Some(_) => {
                *pause = None;
                None
            }
            None => None,
        }
    }

    /// Pauses extensions after an admin API failure: for Kratos's `Retry-After`, else the
    /// cooldown. The admin API's rate limit is per project, so one 429 concerns every session.
    fn pause_after(&self, cause: &LifecycleError) {
        let wait = cause.retry_after().unwrap_or(self.cooldown);
        // Both are bounded (an hour, a day); a clock that cannot add them pauses for a day.
        let now = Instant::now();
        let until = now
            .checked_add(wait)
            .or_else(|| now.checked_add(crate::MAX_EXTEND_COOLDOWN))
            .unwrap_or(now);
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        if pause.as_ref().is_none_or(|current| current.until < until) {
            *pause = Some(Pause {
                until,
                cause: cause.clone(),
            });
        }
    }
}

/// One extension attempt's result, shared by every request of the session during the cooldown.
struct Attempt {
    report: SessionExtension,
    /// The session as whoami confirmed it after the extension.
    session: Option<KratosSession>,
    /// The `Set-Cookie` headers of that whoami.
    set_cookies: Vec<HeaderValue>,
}

impl Attempt {
    fn report(report: SessionExtension) -> Self {
        Self {
            report,
            session: None,
            set_cookies: Vec::new(),
        }
    }
}

/// What the layer's extension step gives one request.
pub(crate) struct LayerExtension {
    pub(crate) report: SessionExtension,
    /// The refreshed session, when the extension was confirmed.
    pub(crate) session: Option<KratosSession>,
    /// Kratos's `Set-Cookie` for the extended session, already filtered for relaying.
    pub(crate) set_cookies: Vec<HeaderValue>,
}

/// Whether a session expires within `within` from now.
pub(crate) fn is_due(session: &KratosSession, within: Duration) -> bool {
    session.expires_at.is_some_and(|expires_at| {
        let left = expires_at - OffsetDateTime::now_utc();
        left.is_negative() || left.unsigned_abs() < within
    })
}

/// The layer's extension step for one due request: the shared attempt, waited for at most the
/// admin timeout. Whatever happens, the request goes on; the attempt keeps running if this
/// request stops waiting for it.
pub(crate) async fn extend_for_request(
    shared: &Arc<Shared>,
    credential: &Credential,
    session: &KratosSession,
) -> LayerExtension {
    let Some(admin) = shared.client.admin() else {
        return LayerExtension {
            report: SessionExtension::Failed(LifecycleError::AdminNotConfigured),
            session: None,
            set_cookies: Vec::new(),
        };
    };
    match tokio::time::timeout(admin.timeout(), extend_shared(shared, credential, session)).await {
        Ok(attempt) => LayerExtension {
            report: attempt.report.clone(),
            session: attempt.session.clone(),
            set_cookies: relayable(
                credential,
                attempt.set_cookies.clone(),
                &shared.cookie_names,
            ),
        },
        Err(_elapsed) => LayerExtension {
            report: SessionExtension::Failed(LifecycleError::Unavailable(Unavailable::Timeout)),
            session: None,
            set_cookies: Vec::new(),
        },
    }
}

/// The `Set-Cookie` headers worth passing to this caller: only for cookie credentials, and only
/// those that set one of the layer's session cookies.
pub(crate) fn relayable(
    credential: &Credential,
    mut set_cookies: Vec<HeaderValue>,
    cookie_names: &CookieNames,
) -> Vec<HeaderValue> {
    if set_cookies.is_empty() {
        return set_cookies;
    }
    if credential.source() != CredentialSource::Cookie {
        return Vec::new();
    }
    set_cookies.retain(|value| {
        value
            .to_str()
            .ok()
            .and_then(|text| text.split_once('='))
            .is_some_and(|(name, _)| cookie_names.matches(name.trim()))
    });
    set_cookies
}

/// Joins (or starts) the session's extension attempt. It runs on its own task, so a caller that
/// goes away does not cancel the attempt the others wait for.
async fn extend_shared(
    shared: &Arc<Shared>,
    credential: &Credential,
    session: &KratosSession,
) -> Arc<Attempt> {
    if let Some(cause) = shared.lifecycle.paused() {
        return Arc::new(Attempt::report(SessionExtension::Failed(cause)));
    }
    let task_shared = Arc::clone(shared);
    let credential = credential.clone();
    let session = session.clone();
    let task = tokio::spawn(
        async move {
            let attempts = task_shared.lifecycle.attempts.clone();
            let init = run_attempt(&task_shared, &credential, &session);
            attempts
                .entry(session.id.clone())
                .or_insert_with(init)
                .await
                .into_value()
        }
        .instrument(tracing::Span::current()),
    );
    task.await.unwrap_or_else(|_join_error| {
        Arc::new(Attempt::report(SessionExtension::Failed(
            LifecycleError::Unavailable(Unavailable::Interrupted),
        )))
    })
}

/// One extension: the PATCH, then (when Kratos may have moved the expiry) one whoami as the
/// caller to confirm it, refresh the cache and get the re-issued cookie.
async fn run_attempt(
    shared: &Shared,
    credential: &Credential,
    session: &KratosSession,
) -> Arc<Attempt> {
    let attempt = match shared.client.extend_session(&session.id).await {
        Ok(answer) => confirm(shared, credential, session, answer).await,
        Err(LifecycleError::NotFound) => {
            // Deleted, or being extended by another request: what this process has cached for
            // the session is in doubt either way, so its next request asks Kratos again.
            shared.cache.revoked(Revoked::Session(&session.id)).await;
            Attempt::report(SessionExtension::Gone)
        }
        Err(error) => {
            shared.lifecycle.pause_after(&error);
            Attempt::report(SessionExtension::Failed(error))
        }
    };
    log_attempt(&session.id, &attempt.report);
    Arc::new(attempt)
}

async fn confirm(
    shared: &Shared,
    credential: &Credential,
    session: &KratosSession,
    answer: ExtendAnswer,
) -> Attempt {
    let before = session.expires_at;
    if let ExtendAnswer::Session(body) = &answer {
        if !moved(before, body.expires_at) {
            // "Too early": nothing changed, so there is nothing to confirm or re-issue.
            return Attempt::report(SessionExtension::NotExtended { expires_at: before });
        }
    }
    let asked_at = Instant::now();
    // A fresh read: Ory Network's session cache may still hold the old expiry.
    let whoami = shared.client.whoami(credential, None, true).await;
    match whoami.outcome {
        Outcome::Authenticated(confirmed) => {
            let report = match confirmed.expires_at {
                Some(expires_at) if moved(before, Some(expires_at)) => {
                    SessionExtension::Extended { expires_at }
                }
                expires_at => SessionExtension::NotExtended { expires_at },
            };
            shared
                .cache
                .store(credential, confirmed.clone(), whoami.cache_for, asked_at)
                .await;
            Attempt {
                report,
                session: Some(confirmed),
                set_cookies: whoami.set_cookies,
            }
        }
        Outcome::Unauthenticated(_) => {
            // Revoked or expired meanwhile: its cached entry must not be served again.
            shared.cache.revoked(Revoked::Credential(credential)).await;
            Attempt::report(SessionExtension::Gone)
        }
        unconfirmed => Attempt::report(match answer {
            // The 200 said what the expiry is now; only the cache refresh is missed.
            ExtendAnswer::Session(body) => match body.expires_at {
                Some(expires_at) => SessionExtension::Extended { expires_at },
                None => SessionExtension::NotExtended { expires_at: before },
            },
            ExtendAnswer::NoContent => SessionExtension::Failed(error_of(unconfirmed)),
        }),
    }
}

/// Whether the expiry moved later.
fn moved(before: Option<OffsetDateTime>, after: Option<OffsetDateTime>) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => after > before,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

fn log_attempt(session_id: &str, report: &SessionExtension) {
    match report {
        SessionExtension::Extended { expires_at } => tracing::info!(
            session_id,
            extension = report.kind(),
            %expires_at,
            "Kratos session extended"
        ),
        SessionExtension::NotExtended { .. } => tracing::debug!(
            session_id,
            extension = report.kind(),
            "Kratos left the session's expiry unchanged (earliest_possible_extend not reached)"
        ),
        SessionExtension::Gone => tracing::info!(
            session_id,
            extension = report.kind(),
            "Kratos answered 404 to the extension: session gone or being extended elsewhere"
        ),
        SessionExtension::Failed(error) => tracing::warn!(
            session_id,
            extension = report.kind(),
            reason = %error,
            "Kratos session extension failed; the request goes on with the session it had"
        ),
    }
}

/// The lifecycle error for a lookup that did not end in a session.
fn error_of(outcome: Outcome) -> LifecycleError {
    match outcome {
        Outcome::Anonymous => LifecycleError::NoCredential,
        Outcome::Unauthenticated(Unauthenticated::Malformed(malformed)) => {
            LifecycleError::Malformed(malformed)
        }
        Outcome::Unauthenticated(_) => LifecycleError::Unauthenticated,
        Outcome::AalRequired(step_up) => LifecycleError::AalRequired(step_up),
        Outcome::Unavailable(Unavailable::RateLimited { retry_after }) => {
            LifecycleError::RateLimited { retry_after }
        }
        Outcome::Unavailable(unavailable) => LifecycleError::Unavailable(unavailable),
        // Not an error; only reached if a caller passes a session here by mistake.
        Outcome::Authenticated(_) => LifecycleError::Unavailable(Unavailable::InvalidBody),
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for LifecycleError {
    /// A Kratos-style JSON error (`{"error": {"id": kind, "code", "status", "message"}}`):
    /// 400 (invalid id, current session, not a token session), 401
    /// (no or invalid credential), 403 (step-up, with `redirect_browser_to`), 404, 500 (admin
    /// API not configured or refusing the key), 503 with `Retry-After` (Kratos unavailable or
    /// rate limiting). Never shows a credential or the admin key.
    fn into_response(self) -> axum_core::response::Response {
        use http::StatusCode;
        use serde_json::json;

        let status = match &self {
            Self::InvalidId | Self::CurrentSession | Self::NotATokenSession => {
                StatusCode::BAD_REQUEST
            }
            Self::NoCredential | Self::Malformed(_) | Self::Unauthenticated => {
                StatusCode::UNAUTHORIZED
            }
            Self::AalRequired(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AdminNotConfigured | Self::AdminRefused(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RateLimited { .. } | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match &self {
            // The details are for the server's logs, not for the client.
            Self::AdminNotConfigured | Self::AdminRefused(_) => {
                "the session service is misconfigured".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = json!({
            "error": {
                "id": self.kind(),
                "code": status.as_u16(),
                "status": status.canonical_reason().unwrap_or(""),
                "message": message,
            }
        });
        if let Self::AalRequired(step_up) = &self {
            if let Some(redirect) = &step_up.redirect_browser_to {
                body["redirect_browser_to"] = json!(redirect);
            }
        }
        let mut response = crate::rejection::json_response(status, &body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let wait = self
                .retry_after()
                .unwrap_or(crate::rejection::DEFAULT_RETRY_AFTER);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response.map(axum_core::body::Body::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CookieNames;

    fn session_expiring_in(seconds: i64) -> KratosSession {
        let expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
        let body = serde_json::json!({
            "id": "6f5e3c4a-0000-4000-8000-000000000001",
            "active": true,
            "expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        });
        KratosSession::new(Arc::new(serde_json::from_value(body).unwrap()))
    }

    #[test]
    fn due_only_within_the_threshold() {
        let hour = Duration::from_secs(3600);
        assert!(is_due(&session_expiring_in(600), hour));
        assert!(!is_due(&session_expiring_in(7200), hour));
        assert!(is_due(&session_expiring_in(-5), hour));
        // A threshold beyond what time can represent never panics.
        assert!(is_due(&session_expiring_in(600), Duration::MAX));
        let no_expiry = KratosSession::new(Arc::new(
            serde_json::from_str(r#"{"id":"s","active":true}"#).unwrap(),
        ));
        assert!(!is_due(&no_expiry, hour));
    }

    #[test]
    fn only_session_cookies_are_relayed_and_only_to_cookie_callers() {
        let names = CookieNames::default();
        let cookies = vec![
            HeaderValue::from_static("ory_kratos_session=new; Path=/; HttpOnly"),
            HeaderValue::from_static("tracking=1; Path=/"),
            HeaderValue::from_static("ory_session_slug=x; Path=/"),
            HeaderValue::from_static("garbage"),
        ];
        let cookie = Credential::cookie("ory_kratos_session", "old").unwrap();
        let kept = relayable(&cookie, cookies.clone(), &names);
        assert_eq!(kept, [cookies[0].clone(), cookies[2].clone()]);
        let token = Credential::session_token("ory_st_x").unwrap();
        assert!(relayable(&token, cookies, &names).is_empty());
    }

    #[test]
    fn set_cookies_append_and_mark_the_response_private() {
        let mut headers = HeaderMap::new();
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("app=1"));
        append_set_cookies(
            &mut headers,
            vec![HeaderValue::from_static("ory_kratos_session=v")],
        );
        assert_eq!(headers.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(headers[header::CACHE_CONTROL], "private");

        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        append_set_cookies(
            &mut headers,
            vec![HeaderValue::from_static("ory_kratos_session=v")],
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");

        let mut untouched = HeaderMap::new();
        append_set_cookies(&mut untouched, Vec::new());
        assert!(untouched.is_empty());
    }

    #[test]
    fn expiry_moves_only_later() {
        let now = OffsetDateTime::now_utc();
        assert!(moved(Some(now), Some(now + time::Duration::SECOND)));
        assert!(!moved(Some(now), Some(now)));
        assert!(!moved(Some(now), None));
    }
}
