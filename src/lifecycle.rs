//! Keeping sessions alive and ending them: extension when a session is close to expiry,
//! revocation, listing, API logout and browser logout, each keeping this process's session cache
//! honest at once.
//!
//! Get a [`SessionLifecycle`] from the layer with
//! [`KratosLayer::lifecycle`](crate::KratosLayer::lifecycle) and hand it to your
//! handlers (axum `State` or `Extension`); it shares the layer's HTTP client and cache. The
//! self-service helpers act as the caller, with the credential of the request they are given
//! (found the way the layer finds it): they take the request's headers rather than the session,
//! since Kratos acts only on the caller's own credential and a session holds none (see
//! [`Caller`]). The admin helpers need
//! [`admin_url`](crate::authenticate::KratosLayerBuilder::admin_url).
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
//! # let kratos = kratos_stand_in::KratosStandIn::start().await?;
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
//! most [`cache_ttl`](crate::authenticate::KratosLayerBuilder::cache_ttl).
//!
//! # Extension
//! [`SessionLifecycle::extend_if_expiring`] and the layer setting
//! [`extend_within`](crate::authenticate::KratosLayerBuilder::extend_within) share one mechanism:
//! - Kratos is called only when `expires_at - now` is below the threshold.
//! - One extension per session at a time; requests arriving meanwhile wait for it and share
//!   its result, and for [`extend_cooldown`](crate::authenticate::KratosLayerBuilder::extend_cooldown) after
//!   it the session is not extended again (Ory Network's admin rate limits are low).
//! - After a failure of the admin API (down, slow, 429, refused key), no session is extended
//!   for the cooldown, or for as long as a 429's `Retry-After` asks.
//! - 200 and 204 answers are both accepted. Success is confirmed with one whoami as the caller,
//!   which refreshes the cache entry (the next request sees the new `expires_at`) and, for a
//!   cookie session, yields the re-issued `Set-Cookie`.

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use http::{request, HeaderMap, HeaderValue};
use time::OffsetDateTime;

use crate::{
    cache::Revoked,
    client::{canonical_id, Correlation, MAX_BULK_IDS},
    credentials::{find_credential, CookieNames, Credential, CredentialSource},
    outcome::Outcome,
    relay::{relayable, set_cookies_as_response_parts},
    session::KratosSession,
    state::LayerState,
};
pub use crate::{
    client::{LifecycleError, Page, SessionList, MAX_PAGE_SIZE},
    extend::SessionExtension,
};

/// What [`SessionLifecycle::manage_sessions`] does to the sessions it names (Kratos's bulk
/// `POST /admin/sessions`). Either way whoami refuses them from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkAction {
    /// Set them inactive; Kratos keeps them (they are listed, and can be looked at).
    Disable,
    /// Delete them.
    Delete,
}

impl BulkAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Delete => "delete",
        }
    }
}

/// Whose sessions [`SessionLifecycle::manage_sessions`] disables or deletes.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum BulkTarget<'a> {
    /// Every session of these identities (ids as UUIDs; any number, sent 500 at a time).
    Identities(&'a [&'a str]),
    /// These sessions (ids as UUIDs; any number, sent 500 at a time).
    Sessions(&'a [&'a str]),
    /// Every session of every identity: an incident responder's "sign everyone out".
    Everyone,
}

/// The most `POST /admin/sessions` calls one "everyone" takes (Kratos takes 5,000 sessions a
/// call): a Kratos that kept answering `more` would otherwise be asked for ever.
const MAX_EVERYONE_CALLS: u32 = 100_000;

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

set_cookies_as_response_parts!(ExtendOutcome);

/// The answer of [`SessionLifecycle::logout_browser`]: the browser is signed out at Kratos.
///
/// With the `axum` feature it is axum's `IntoResponseParts`: returned with a response (a
/// redirect, typically), it appends Kratos's `Set-Cookie` that clears the session cookie, so the
/// browser forgets it.
#[derive(Clone)]
#[must_use]
pub struct BrowserLogout {
    was_signed_in: bool,
    set_cookies: Vec<HeaderValue>,
}

impl BrowserLogout {
    fn nothing() -> Self {
        Self {
            was_signed_in: false,
            set_cookies: Vec::new(),
        }
    }

    /// Whether Kratos signed a session out now; `false` when the request had no session
    /// cookie, or one Kratos no longer accepted (nothing was left to sign out).
    pub fn was_signed_in(&self) -> bool {
        self.was_signed_in
    }

    /// The `Set-Cookie` headers to pass on to the browser: Kratos's clearing of the session
    /// cookie (empty when nothing was signed out).
    pub fn set_cookies(&self) -> &[HeaderValue] {
        &self.set_cookies
    }

    /// The `Set-Cookie` headers, owned.
    pub fn into_set_cookies(self) -> Vec<HeaderValue> {
        self.set_cookies
    }
}

impl fmt::Debug for BrowserLogout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserLogout")
            .field("was_signed_in", &self.was_signed_in)
            .field("set_cookies", &self.set_cookies.len())
            .finish()
    }
}

set_cookies_as_response_parts!(BrowserLogout);

/// Whose session a self-service helper acts on: the caller's request headers (the credential is
/// found as the layer finds it, with its cookie names), the request head, or a [`Credential`].
///
/// Why the headers and not the [`KratosSession`]: Kratos answers the self-service calls
/// (`GET /sessions`, `DELETE /sessions/{id}`, API logout) only for the caller's own credential,
/// and a session holds none (Kratos never sends a token back, and the layer keeps no credential
/// past the request). So a handler that reads the session and acts on it extracts both: the
/// session to read, the headers to act with.
///
/// Implemented for [`HeaderMap`], [`http::request::Parts`] and [`Credential`]; sealed.
pub trait Caller: Sync + sealed::Sealed {
    /// The caller's credential.
    #[doc(hidden)]
    fn credential(&self, cookie_names: &CookieNames)
        -> Result<Cow<'_, Credential>, LifecycleError>;
}

pub(crate) mod sealed {
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
/// [`KratosLayer::lifecycle`](crate::KratosLayer::lifecycle). Cloning is cheap (one `Arc`).
///
/// Every helper is safe to call from a request handler: bad input is a typed
/// [`LifecycleError`] before Kratos is called, and every Kratos call has a deadline.
#[derive(Clone)]
pub struct SessionLifecycle {
    state: Arc<LayerState>,
}

impl fmt::Debug for SessionLifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLifecycle")
            .field("admin", &self.state.client.admin())
            .field("extender", &self.state.extender)
            .finish_non_exhaustive()
    }
}

impl SessionLifecycle {
    pub(crate) fn new(state: Arc<LayerState>) -> Self {
        Self { state }
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
    /// use kratos_stand_in::{Endpoint, KratosStandIn};
    /// use tower_kratos::{lifecycle::SessionExtension, KratosLayer};
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
        let state = &self.state;
        let credential = caller.credential(&state.cookie_names)?;
        if state.client.admin().is_none() {
            return self.logged(Err(LifecycleError::AdminNotConfigured));
        }
        let lookup = state.cache.lookup(&credential, &state.client).await;
        let relayed = relayable(&credential, lookup.set_cookies, &state.cookie_names);
        let session = match lookup.outcome {
            Outcome::Authenticated(session) => session,
            other => return Err(LifecycleError::from_outcome(other)),
        };
        if !state.extender.worth_extending(&session, within) {
            return Ok(ExtendOutcome {
                attempt: None,
                session,
                set_cookies: relayed,
            });
        }
        let attempt = state
            .extender
            .attempt(&state.client, &state.cache, &credential, &session)
            .await;
        let extended = relayable(
            &credential,
            attempt.set_cookies.clone(),
            &state.cookie_names,
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
    /// use kratos_stand_in::KratosStandIn;
    /// use tower_kratos::{lifecycle::Page, KratosLayer};
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
        let credential = caller.credential(&self.state.cookie_names)?;
        let listed = self.state.client.list_my_sessions(&credential, page).await;
        counted("list_sessions", &listed);
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
        let credential = caller.credential(&self.state.cookie_names)?;
        let session_id = canonical_id(session_id)?;
        let revoked = self
            .state
            .client
            .revoke_my_session(&credential, &session_id)
            .await;
        counted("revoke_session", &revoked);
        let revoked = self.forget_if_refused(&credential, revoked).await;
        if may_have_acted(&revoked) {
            self.state
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
        let state = &self.state;
        let credential = caller.credential(&state.cookie_names)?;
        // The identity to mark; normally a cache hit, as the layer has just validated it.
        let lookup = state.cache.lookup(&credential, &state.client).await;
        let identity_id = match &lookup.outcome {
            Outcome::Authenticated(session) => session.identity_id().map(str::to_owned),
            _ => None,
        };
        let revoked = state.client.revoke_my_other_sessions(&credential).await;
        counted("revoke_other_sessions", &revoked);
        let revoked = self.forget_if_refused(&credential, revoked).await;
        if !may_have_acted(&revoked) {
            return revoked;
        }
        let identity_id = match identity_id {
            Some(identity_id) => Some(identity_id),
            // The lookup failed (Kratos busy?) but the revocation went through: ask once more,
            // or the revoked sessions cached here would be served until their entries expire.
            None => match state
                .client
                .whoami(&credential, &Correlation::NONE, true)
                .await
                .outcome
            {
                Outcome::Authenticated(session) => session.identity_id().map(str::to_owned),
                _ => None,
            },
        };
        match &identity_id {
            Some(identity_id) => state.cache.revoked(Revoked::Identity(identity_id)).await,
            // A session without an identity cannot have been looked up through whoami; should
            // Kratos ever send one, still make the caller's own entry ask again.
            None => {
                tracing::warn!(
                    "the caller's identity is unknown: its other sessions cached here stay \
                     accepted until their cache entries expire"
                );
                state.cache.revoked(Revoked::Credential(&credential)).await;
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
        let credential = caller.credential(&self.state.cookie_names)?;
        let logged_out = self.state.client.logout_api(&credential).await;
        counted("logout", &logged_out);
        let logged_out = self.forget_if_refused(&credential, logged_out).await;
        if may_have_acted(&logged_out) {
            self.state
                .cache
                .revoked(Revoked::Credential(&credential))
                .await;
        }
        logged_out?;
        tracing::info!("Kratos session logged out (API)");
        Ok(())
    }

    /// Logs a browser out: completes Kratos's browser logout for the request's session cookie
    /// and returns Kratos's clearing `Set-Cookie` to pass on. From then on, requests carrying
    /// that cookie are refused by this process at once, whatever the cache TTL. For an app's
    /// logout route (a `POST`, so no other site can sign your users out with a link).
    ///
    /// Why the server completes the logout rather than sending the browser to Kratos's logout
    /// URL: Kratos has revoked the session before this returns, and this process has marked
    /// the cookie before the response leaves, so no moment exists in which the browser was told
    /// it is signed out while the cookie still opens a page here. Sending the browser to Kratos
    /// instead leaves a window: a request that comes back before Kratos has signed the session
    /// out (or a browser that never follows the redirect) asks Kratos again, hears "active",
    /// and caches the session anew. A lookup still in flight when the logout returns (its
    /// whoami sent before it) is asked again once its answer arrives, and refused too.
    ///
    /// A request without a session cookie, or with one Kratos no longer accepts, succeeds with
    /// nothing signed out ([`BrowserLogout::was_signed_in`] is `false`): the browser is signed
    /// out either way.
    ///
    /// # Errors
    /// [`NotACookieSession`](LifecycleError::NotACookieSession) for a session token (use
    /// [`logout`](Self::logout)), [`Malformed`](LifecycleError::Malformed),
    /// [`RateLimited`](LifecycleError::RateLimited) and
    /// [`Unavailable`](LifecycleError::Unavailable): the session may still be signed in at
    /// Kratos (this process asks Kratos again about the cookie all the same).
    ///
    /// ```
    /// use axum::{extract::State, http::HeaderMap, response::Redirect, routing::post, Router};
    /// use tower_kratos::lifecycle::{BrowserLogout, LifecycleError, SessionLifecycle};
    ///
    /// async fn logout(
    ///     State(sessions): State<SessionLifecycle>,
    ///     headers: HeaderMap,
    /// ) -> Result<(BrowserLogout, Redirect), LifecycleError> {
    ///     Ok((sessions.logout_browser(&headers).await?, Redirect::to("/")))
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kratos = kratos_stand_in::KratosStandIn::start().await?;
    /// let layer = tower_kratos::KratosLayer::builder(kratos.public_url()).build()?;
    /// let app: Router = Router::new()
    ///     .route("/logout", post(logout))
    ///     .with_state(layer.lifecycle());
    /// # let alice = kratos.create_session();
    /// # use tower::ServiceExt;
    /// # let request = http::Request::post("/logout")
    /// #     .header("cookie", alice.cookie_header())
    /// #     .body(axum::body::Body::empty())?;
    /// # let response = app.oneshot(request).await?;
    /// # assert_eq!(response.status(), 303);
    /// # assert!(response.headers()["set-cookie"].to_str()?.starts_with("ory_kratos_session=;"));
    /// # assert!(!kratos.session_state(&alice.id).unwrap().active);
    /// # Ok(()) }
    /// ```
    pub async fn logout_browser(
        &self,
        caller: &impl Caller,
    ) -> Result<BrowserLogout, LifecycleError> {
        let state = &self.state;
        let credential = match caller.credential(&state.cookie_names) {
            Ok(credential) => credential,
            Err(LifecycleError::NoCredential) => return Ok(BrowserLogout::nothing()),
            Err(error) => return Err(error),
        };
        if credential.source() != CredentialSource::Cookie {
            return Err(LifecycleError::NotACookieSession);
        }
        let logged_out = state.client.logout_browser(&credential).await;
        counted("logout_browser", &logged_out);
        let logged_out = self.forget_if_refused(&credential, logged_out).await;
        if may_have_acted(&logged_out) {
            state.cache.revoked(Revoked::Credential(&credential)).await;
        }
        let set_cookies = match logged_out {
            Ok(set_cookies) => set_cookies,
            // Kratos no longer accepts the cookie (signed out elsewhere, expired, revoked, or
            // made up): nothing was signed out, so nothing is recorded or published.
            Err(LifecycleError::Unauthenticated) => return Ok(BrowserLogout::nothing()),
            Err(error) => return Err(error),
        };
        tracing::info!("Kratos session logged out (browser)");
        Ok(BrowserLogout {
            was_signed_in: true,
            set_cookies: relayable(&credential, set_cookies, &state.cookie_names),
        })
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
        let disabled = self.state.client.disable_session(&session_id).await;
        counted("disable_session", &disabled);
        if may_have_acted(&disabled) || matches!(disabled, Err(LifecycleError::NotFound)) {
            self.state
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
            .state
            .client
            .delete_identity_sessions(&identity_id)
            .await;
        counted("revoke_identity_sessions", &deleted);
        if may_have_acted(&deleted) || matches!(deleted, Err(LifecycleError::NotFound)) {
            self.state
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

    /// Disables or deletes many sessions through Kratos's bulk admin API
    /// (`POST /admin/sessions`): those of given identities, given sessions, or everyone's. Lists
    /// are sent 500 ids a call (Kratos's most); "everyone" is sent again while Kratos answers
    /// that more are left. Returns how many sessions Kratos disabled or deleted.
    ///
    /// The cache follows on this replica and, with a shared cache, on every other (a replica
    /// started later included): every cached session of the named identities or sessions, or
    /// every cached session at all, is checked with Kratos again before it is served.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_kratos::{lifecycle::{BulkAction, BulkTarget}, KratosLayer};
    /// # let kratos = kratos_stand_in::KratosStandIn::start().await?;
    /// # let session = kratos.create_session();
    /// let layer = KratosLayer::builder(kratos.public_url())
    ///     .admin_url(kratos.admin_url())
    ///     .build()?;
    /// let lifecycle = layer.lifecycle();
    /// let identities = [session.identity_id.as_str()];
    /// let disabled = lifecycle
    ///     .manage_sessions(BulkAction::Disable, BulkTarget::Identities(&identities))
    ///     .await?;
    /// assert_eq!(disabled, 1);
    /// lifecycle.manage_sessions(BulkAction::Delete, BulkTarget::Everyone).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`InvalidId`](LifecycleError::InvalidId) for an id that is not a UUID (nothing is
    /// sent), [`AdminNotConfigured`](LifecycleError::AdminNotConfigured),
    /// [`AdminRefused`](LifecycleError::AdminRefused),
    /// [`RateLimited`](LifecycleError::RateLimited),
    /// [`Unavailable`](LifecycleError::Unavailable). A failure part-way leaves the calls made
    /// before it done, and the cache follows them (and the failed one, if it may have acted).
    pub async fn manage_sessions(
        &self,
        action: BulkAction,
        target: BulkTarget<'_>,
    ) -> Result<u64, LifecycleError> {
        let (field, ids) = match target {
            BulkTarget::Identities(ids) => ("identities", ids),
            BulkTarget::Sessions(ids) => ("sessions", ids),
            BulkTarget::Everyone => return self.manage_everyone(action).await,
        };
        let ids = ids
            .iter()
            .map(|id| canonical_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let mut processed = 0;
        for batch in ids.chunks(MAX_BULK_IDS) {
            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
            let answer = self
                .state
                .client
                .manage_sessions(action.as_str(), field, &batch)
                .await;
            counted("manage_sessions", &answer);
            if may_have_acted(&answer) {
                for id in &batch {
                    let revoked = match target {
                        BulkTarget::Sessions(_) => Revoked::Session(id),
                        _ => Revoked::Identity(id),
                    };
                    self.state.cache.revoked(revoked).await;
                }
            }
            processed += self.logged(answer)?.processed;
        }
        tracing::info!(
            processed,
            field,
            action = action.as_str(),
            "Kratos sessions managed in bulk (admin)"
        );
        Ok(processed)
    }

    /// `"identities": ["*"]`, sent again while Kratos says more are left; every cached session
    /// is checked again after each call that may have acted.
    async fn manage_everyone(&self, action: BulkAction) -> Result<u64, LifecycleError> {
        let mut processed = 0;
        for _ in 0..MAX_EVERYONE_CALLS {
            let answer = self
                .state
                .client
                .manage_sessions(action.as_str(), "identities", &["*"])
                .await;
            counted("manage_sessions", &answer);
            if may_have_acted(&answer) {
                self.state.cache.revoked(Revoked::Everything).await;
            }
            let answer = self.logged(answer)?;
            processed += answer.processed;
            // A Kratos that says more are left but took none would be asked for ever.
            if !answer.more || answer.processed == 0 {
                break;
            }
        }
        tracing::info!(
            processed,
            action = action.as_str(),
            "every Kratos session managed in bulk (admin)"
        );
        Ok(processed)
    }

    /// Logs what is the operator's to fix (the admin API not configured, or refusing the API
    /// key) at `error`, at most once per cause and window: every request to the route would.
    fn logged<T>(&self, result: Result<T, LifecycleError>) -> Result<T, LifecycleError> {
        if let Err(error @ (LifecycleError::AdminNotConfigured | LifecycleError::AdminRefused(_))) =
            &result
        {
            if let Some(left_out) = self.state.warnings.admit(("lifecycle", error.kind())) {
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
    /// cached for it is stale: the next request with it asks Kratos again. Only this process's
    /// copy is dropped: Kratos revoked nothing now, so nothing is marked or published (a
    /// made-up credential must cost no revocation record).
    async fn forget_if_refused<T>(
        &self,
        credential: &Credential,
        result: Result<T, LifecycleError>,
    ) -> Result<T, LifecycleError> {
        if matches!(result, Err(LifecycleError::Unauthenticated)) {
            self.state.cache.forget_credential(credential).await;
        }
        result
    }
}

/// Counts one lifecycle call to Kratos by how it ended (nothing without the `metrics` feature):
/// `ok`, `refused` (Kratos, or the layer before asking, said no) or `unavailable`.
fn counted<T>(call: &'static str, result: &Result<T, LifecycleError>) {
    let result = match result {
        Ok(_) => "ok",
        Err(LifecycleError::Unavailable(_)) => "unavailable",
        Err(_) => "refused",
    };
    crate::metrics::lifecycle_call(call, result);
}

/// Whether Kratos may have carried a revocation out: it said so, or the call was sent and its
/// answer could not be read (a timeout, an answer outside the endpoint's contract). Either way,
/// what this process has cached for the affected sessions must be checked with Kratos again. A
/// call the layer held back (backing off, too many calls in flight) never reached Kratos.
fn may_have_acted<T>(result: &Result<T, LifecycleError>) -> bool {
    match result {
        Ok(_) => true,
        Err(LifecycleError::Unavailable(cause)) => !cause.not_sent(),
        Err(_) => false,
    }
}
