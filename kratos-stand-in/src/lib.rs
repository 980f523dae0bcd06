//! A Kratos stand-in for tests: a real HTTP(S) server on loopback that answers like Ory Kratos's
//! session API.
//!
//! It serves `/sessions/whoami`, the self-service `/sessions` routes, API and browser logout,
//! a browser login flow with a plain login page (a first run you can click through), and the
//! admin session routes, with Kratos's exact status codes, headers and JSON (herodot error bodies,
//! session JSON with the identity expanded). Tests create sessions, then drive their code
//! against [`KratosStandIn::public_url`] and assert on what Kratos saw
//! ([`calls`](KratosStandIn::calls), [`requests`](KratosStandIn::requests)). Faults, latency,
//! the extend response style and Ory Network's session-cache header are knobs.
//!
//! It also plays what Kratos does on its own: [`KratosStandIn::revoke_active_sessions`] is the
//! `revoke_active_sessions` hook followed by a `web_hook` to a receiver of the test's
//! ([`WebHook`]), with Kratos's headers and retries.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kratos_stand_in::{Endpoint, KratosStandIn};
//!
//! let kratos = KratosStandIn::start().await?;
//! let alice = kratos.create_session();
//!
//! let response = reqwest::Client::new()
//!     .get(format!("{}/sessions/whoami", kratos.public_url()))
//!     .header("Cookie", alice.cookie_header())
//!     .send()
//!     .await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Whoami also answers Kratos's `?tokenize_as=<template>`: register a
//! `TokenizerTemplate` with `StandInBuilder::tokenizer`, and the stand-in signs the session as a
//! JWT with a key it made at start, serves the public keys at `KratosStandIn::jwks_url`, rotates
//! them with `KratosStandIn::rotate_key`, and signs any claims with `KratosStandIn::sign_claims`.
//!
//! What follows Kratos exactly and what is simplified is listed on [`KratosStandIn`].
//!
//! Add it where your tests are:
//!
//! ```toml
//! [dev-dependencies]
//! kratos-stand-in = "0.1"
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::unwrap_used
)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod browser;
mod bulk;
mod credentials;
mod fault;
mod hook;
mod ids;
mod json;
mod record;
mod reply;
mod routes;
mod server;
mod shared;
mod spec;
mod store;
mod tokenizer;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The `http` crate [`Fault::Status`] is written in, so that a test needs no dependency of its own.
pub use http;

pub use fault::{ExtendResponse, Fault};
pub use hook::{WebHook, WebHookError};
pub use record::{Endpoint, RecordedRequest, WebHookDelivery};
pub use spec::{SessionSpec, TestSession};
// `tokenize_as`. The types carry their own docs: docs here would be prepended to both.
pub use tokenizer::{SigningAlg, TokenizerTemplate};

use fault::Knobs;
use shared::{Config, Shared};

/// Kratos's default `session.cookie.name`.
const DEFAULT_COOKIE_NAME: &str = "ory_kratos_session";
/// Kratos's default `session.lifespan`.
const DEFAULT_LIFESPAN: Duration = Duration::from_secs(24 * 60 * 60);

/// A running Kratos stand-in.
///
/// Cloning is cheap and every clone talks to the same server. The server stops with
/// [`stop`](Self::stop), whatever clones exist, or when the last clone is dropped: the listener
/// closes and every open connection, hung requests included, is dropped. It runs on the Tokio
/// runtime that started it.
///
/// # Routes
///
/// Public and admin routes share one address; admin routes live under `/admin/` as on Ory
/// Network ([`admin_url`](Self::admin_url) equals [`public_url`](Self::public_url)).
///
/// | Route | Answers |
/// |---|---|
/// | any method `/sessions/whoami`, `DELETE /sessions/whoami` | 200 session (`X-Kratos-Authenticated-Identity-Id`), 401, 403 `session_aal2_required`, 500 for bug #2945; with `?tokenize_as=NAME` also `"tokenized"` (a JWT, no `Ory-Session-Cache-For`), or 400 for a template that is not registered |
/// | `GET /sessions` | 200 the caller's other active sessions, newest first; `Link`, `X-Total-Count` |
/// | `DELETE /sessions` | 200 `{"count":n}` |
/// | `DELETE /sessions/{id}` | 204; 400 for the caller's own session or a bad UUID |
/// | `PATCH /admin/sessions/{id}/extend` | 200 session or 204 ([`ExtendResponse`]); 400; 404 |
/// | `GET /admin/sessions/{id}` | 200 (inactive ones too; `expand=identity`, `expand=devices`); 400; 404 |
/// | `DELETE /admin/sessions/{id}` | 204; 400; 404 |
/// | `DELETE /admin/identities/{id}/sessions` | 204; 400; 404 when the identity has no sessions |
/// | `POST /admin/sessions` | 200 `{"processed":n,"more":bool}`: `{"action":"disable"\|"delete"}` with `"identities"` or `"sessions"` (one non-empty list of at most 500 UUIDs), or `"identities":["*"]` for every session, a batch per call ([`set_bulk_batch_size`](Self::set_bulk_batch_size)); 400 for any other body |
/// | `DELETE /self-service/logout/api` | 204; 400 bad body; 403 unknown token |
/// | `GET /self-service/login/browser?aal=&refresh=&return_to=` | 303 to the login page (`/login?flow=…`), or to `return_to` when the session already has what is asked; 400 bad `aal` or `return_to`; 401 `aal=aal2` without a session |
/// | `GET /login?flow=…` | the login page (HTML, no JavaScript): sign in as the demo user, with or without a second factor; complete a second factor (`aal=aal2`); sign in again (`refresh=true`); 410 for an unknown, used or expired flow |
/// | `POST /self-service/login?flow=…` | the page's form (`method=password` or `totp`): a new session, or the flow's session upgraded to aal2 or re-authenticated (`authenticated_at` now, `issued_at` kept); `Set-Cookie`, 303 to `return_to` (else `/welcome`) |
/// | `GET /welcome` | who is signed in, with a sign-out link |
/// | `GET /self-service/logout/browser` | 200 `{"logout_url", "logout_token"}`; 401 without a session |
/// | `GET /self-service/logout?token=…&return_to=` | revokes the session and clears the cookie: 204 for JSON requests, else 303 to `return_to` (else `/welcome`); 400 no token; 401 no session; 403 another session's token |
/// | `GET /.well-known/stand-in/jwks/{template}.json` | 200 the template's public JWKS (the stand-in's own route, `jwks_url`); 404 for a template that is not registered |
/// | anything else | 404 |
///
/// # Credentials
///
/// As Kratos's `extractToken`: a non-empty `X-Session-Token` is used alone; else the session
/// cookie (the first cookie named `cookie_name` across all `Cookie` headers) if it decodes, i.e.
/// if the stand-in issued that value; else `Authorization: Bearer <token>` (split on single
/// spaces into exactly two parts, scheme case-insensitive). A revoked, expired, unknown or
/// disabled-identity session, or none at all, gets the same 401.
///
/// After a session's expiry moved later (an extend), a whoami that sends a cookie issued for the
/// older expiry gets a `Set-Cookie` with a new value. A whoami that authenticates by token or
/// Bearer while also sending a session cookie the stand-in never issued gets Kratos's 500
/// `securecookie: the value is not valid` (bug #2945), which proves a client does not forward
/// stray cookies with a token.
///
/// # Simplifications
///
/// One identity schema (`default`); `tokenize_as` templates (none unless a test registers
/// one) map claims statically instead of running Jsonnet, and sign with keys the stand-in
/// makes at start instead of reading a `jwks_url`; the login page signs in only the demo user,
/// with made-up factors and no CSRF token (it is for loopback tests and demos), and takes
/// `return_to` only to loopback addresses; login flows answer browsers only (no JSON flow); `page_token` is the decimal offset; bad-UUID
/// messages imitate Kratos's UUID library; the reasons of `POST /admin/sessions`'s 400s are the
/// stand-in's own words; the web hook speaks plain HTTP only and times attempts out after 5 s
/// (Kratos: 30 s). Only the most recent 10 000 requests per endpoint are
/// kept for [`requests`](Self::requests); the counters are exact.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use kratos_stand_in::{Endpoint, Fault, KratosStandIn};
///
/// let kratos = KratosStandIn::builder()
///     .cookie_name("ory_session_playground")
///     .lifespan(Duration::from_secs(3600))
///     .start()
///     .await?;
/// let session = kratos.session().aal2().create();
/// let client = reqwest::Client::new();
/// let whoami = format!("{}/sessions/whoami", kratos.public_url());
///
/// let ok = client.get(&whoami).header("X-Session-Token", &session.token).send().await?;
/// assert_eq!(ok.status(), 200);
/// assert_eq!(ok.headers()["x-kratos-authenticated-identity-id"], session.identity_id.as_str());
///
/// // `http` is re-exported: a test needs no dependency of its own for a status.
/// use kratos_stand_in::http::StatusCode;
/// kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
/// let down = client.get(&whoami).header("X-Session-Token", &session.token).send().await?;
/// assert_eq!(down.status(), 502);
///
/// kratos.clear_faults();
/// kratos.revoke_session(&session.id);
/// let gone = client.get(&whoami).header("X-Session-Token", &session.token).send().await?;
/// assert_eq!(gone.status(), 401);
/// assert_eq!(kratos.calls(Endpoint::Whoami), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KratosStandIn {
    inner: Arc<Running>,
}

/// The last handle's drop stops the server.
struct Running {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The accept loop; `None` once stopped.
    server: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Running {
    fn take_server(&self) -> Option<JoinHandle<()>> {
        self.server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks, so this ends them too.
        if let Some(server) = self.take_server() {
            server.abort();
        }
    }
}

impl fmt::Debug for KratosStandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KratosStandIn")
            .field("public_url", &self.inner.shared.config.public_url)
            .field("cookie_name", &self.inner.shared.config.cookie_name)
            .finish_non_exhaustive()
    }
}

impl KratosStandIn {
    /// Starts a plain-HTTP stand-in on `127.0.0.1` (a free port) with the defaults of
    /// [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// When the port cannot be bound.
    ///
    /// # Panics
    ///
    /// When not called from within a Tokio runtime.
    pub async fn start() -> io::Result<Self> {
        Self::builder().start().await
    }

    /// A builder for a stand-in with other settings (TLS, cookie name, lifespan, admin token ...).
    pub fn builder() -> StandInBuilder {
        StandInBuilder::default()
    }

    /// Stops the server now, whatever clones of this handle exist: Kratos is down. Once this
    /// returns, the port refuses connections and every open connection (a client's pooled
    /// keep-alive ones, hung requests) is closed. The counters and recorded requests stay
    /// readable. Stopping twice is a no-op; a stopped stand-in does not start again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use kratos_stand_in::KratosStandIn;
    ///
    /// let kratos = KratosStandIn::start().await?;
    /// let held_elsewhere = kratos.clone();
    /// kratos.stop().await;
    /// let refused = reqwest::get(format!("{}/sessions/whoami", kratos.public_url())).await;
    /// assert!(refused.is_err_and(|error| error.is_connect()));
    /// # drop(held_elsewhere);
    /// # Ok(()) }
    /// ```
    pub async fn stop(&self) {
        if let Some(server) = self.inner.take_server() {
            server.abort();
            // Dropped (the listener and the connections with it) once the task is done.
            let _ = server.await;
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), without a trailing slash.
    pub fn public_url(&self) -> String {
        self.inner.shared.config.public_url.clone()
    }

    /// The admin API's base URL. It is the same server: admin routes live under `/admin/`, as on
    /// Ory Network.
    pub fn admin_url(&self) -> String {
        self.public_url()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Creates a session with the defaults: active, aal1 by password, expiring after the
    /// `lifespan`, for a new identity with traits `{"email": "user-<n>@example.org"}`.
    ///
    /// # Panics
    ///
    /// Only if the operating system's random number generator fails.
    pub fn create_session(&self) -> TestSession {
        self.session().create()
    }

    /// Kratos's browser login flow, `{public_url}/self-service/login/browser`: the
    /// `login_url` (tower-kratos's `KratosLayerBuilder::login_url`) for an app in front of the
    /// stand-in. It leads to the stand-in's login page, which signs in the demo user
    /// ([`demo_identity_id`](Self::demo_identity_id)) with one factor or two, then back to
    /// `return_to`.
    pub fn login_url(&self) -> String {
        format!("{}{}", self.public_url(), browser::LOGIN_FLOW_PATH)
    }

    /// The demo user the login page signs in (traits `{"email": "demo@example.org"}`), created
    /// on first use: give it sessions of your own with
    /// `kratos.session().identity(&kratos.demo_identity_id())`. It has a second factor to
    /// complete, yet whoami accepts its aal1 sessions (Kratos's `session.whoami.required_aal:
    /// aal1`, which routes asking for a second factor themselves need).
    ///
    /// # Panics
    ///
    /// Only if the operating system's random number generator fails.
    pub fn demo_identity_id(&self) -> String {
        let mut store = self.inner.shared.store();
        match store.demo_identity(OffsetDateTime::now_utc()) {
            Ok(id) => id,
            Err(err) => panic!("Kratos stand-in: the OS random number generator failed: {err}"),
        }
    }

    /// Describes a session to create (aal2, expiry, identity, traits ...); finish with
    /// [`SessionSpec::create`].
    pub fn session(&self) -> SessionSpec<'_> {
        SessionSpec::new(&self.inner.shared)
    }

    /// The session's current state (expiry after extends, `active` after revocations, newest
    /// cookie value), or `None` if it does not exist (or was deleted).
    pub fn session_state(&self, session_id: &str) -> Option<TestSession> {
        let shared = &self.inner.shared;
        let store = shared.store();
        store
            .session(&ids::canonical(session_id))
            .map(|session| TestSession::of(session, &shared.config.cookie_name))
    }

    /// Revokes the session (`active = false`), as an admin disable does. Returns whether it
    /// exists.
    pub fn revoke_session(&self, session_id: &str) -> bool {
        self.inner
            .shared
            .store()
            .revoke(&ids::canonical(session_id))
    }

    /// Moves the session's expiry (a past time expires it). Returns whether it exists.
    ///
    /// Cookies issued earlier keep the expiry they were issued for, so moving it later makes the
    /// next cookie whoami answer with `Set-Cookie`.
    pub fn set_expires_at(&self, session_id: &str, at: OffsetDateTime) -> bool {
        self.inner
            .shared
            .store()
            .set_expires_at(&ids::canonical(session_id), at)
    }

    /// Activates or disables an identity; a disabled identity's sessions get 401. Returns whether
    /// the identity exists.
    pub fn set_identity_active(&self, identity_id: &str, active: bool) -> bool {
        self.inner.shared.store().set_identity_active(
            &ids::canonical(identity_id),
            active,
            OffsetDateTime::now_utc(),
        )
    }

    /// How many requests reached this endpoint (faulted ones included) since the start or the
    /// last [`reset_counters`](Self::reset_counters).
    pub fn calls(&self, endpoint: Endpoint) -> usize {
        self.inner.shared.journal().calls(endpoint)
    }

    /// How many requests reached this endpoint about this session: the session the request's
    /// credential resolved to (whoami, `/sessions` routes, the token of an API logout), or the
    /// `{id}` in the path (admin routes; for
    /// [`AdminDeleteIdentitySessions`](Endpoint::AdminDeleteIdentitySessions) pass the identity
    /// id). A credential counts for its session even when the session is revoked or expired.
    pub fn calls_for_session(&self, endpoint: Endpoint, session_id: &str) -> usize {
        self.inner
            .shared
            .journal()
            .calls_for_session(endpoint, &ids::canonical(session_id))
    }

    /// The requests this endpoint received, oldest first (the most recent 10 000).
    pub fn requests(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.inner.shared.journal().requests(endpoint)
    }

    /// How many requests to this endpoint are being handled right now (waiting out latency, a
    /// delay or a hang included).
    pub fn in_flight(&self, endpoint: Endpoint) -> usize {
        self.inner.shared.journal().in_flight(endpoint)
    }

    /// The most requests to this endpoint handled at once since the start or the last
    /// [`reset_counters`](Self::reset_counters): how many connections a client really had open
    /// to it at the same time.
    ///
    /// A request counts from when its body has been read until its answer is ready, or until
    /// it is dropped unanswered. A request hung by [`Fault::Hang`] counts until its connection
    /// closes.
    pub fn max_concurrent(&self, endpoint: Endpoint) -> usize {
        self.inner.shared.journal().max_in_flight(endpoint)
    }

    /// Forgets all counters, recorded requests and [web hook
    /// deliveries](Self::web_hook_deliveries). Requests still being handled stay in
    /// [`in_flight`](Self::in_flight) and become the new [`max_concurrent`](Self::max_concurrent).
    pub fn reset_counters(&self) {
        self.inner.shared.journal().clear();
    }

    /// Makes every later call of `endpoint` fail this way, until cleared. Calls are still
    /// counted and recorded first.
    pub fn set_fault(&self, endpoint: Endpoint, fault: Fault) {
        self.inner.shared.knobs().faults.insert(endpoint, fault);
    }

    /// Removes the fault of one endpoint.
    pub fn clear_fault(&self, endpoint: Endpoint) {
        self.inner.shared.knobs().faults.remove(&endpoint);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.inner.shared.knobs().faults.clear();
    }

    /// Waits this long before answering every whoami (e.g. a realistic 2 ms for benchmarks).
    /// `Duration::ZERO` (the default) turns it off.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.shared.knobs().whoami_latency = latency;
    }

    /// Switches what the extend route answers from now on.
    pub fn set_extend_response(&self, mode: ExtendResponse) {
        self.inner.shared.knobs().extend_response = mode;
    }

    /// Emulates Ory Network's `feature_flags.cacheable_sessions`: with `Some(max_age)`, whoami
    /// sends `Ory-Session-Cache-For` (seconds until the session expires, capped at `max_age`,
    /// on 200; `60` on a 401 without credentials). `None` (the default) turns it off.
    pub fn set_session_cache_for(&self, max_age: Option<Duration>) {
        self.inner.shared.knobs().session_cache_for = max_age;
    }

    /// How many sessions one wildcard `POST /admin/sessions` (`"identities": ["*"]`) processes
    /// at most. A call that processes that many answers `"more": true`, and the caller sends the
    /// same request again until `"more": false` (an exact multiple costs one more call that
    /// processes 0). Default 5,000, Kratos's batch; a small one lets a test drain a few sessions
    /// in several calls. 0 is taken as 1: a batch of none would never finish.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use kratos_stand_in::KratosStandIn;
    ///
    /// let kratos = KratosStandIn::start().await?;
    /// kratos.set_bulk_batch_size(2);
    /// let sessions: Vec<_> = (0..3).map(|_| kratos.create_session()).collect();
    ///
    /// let client = reqwest::Client::new();
    /// let mut calls = Vec::new();
    /// loop {
    ///     let answer = client
    ///         .post(format!("{}/admin/sessions", kratos.admin_url()))
    ///         .body(r#"{"action":"disable","identities":["*"]}"#)
    ///         .send()
    ///         .await?
    ///         .bytes()
    ///         .await?;
    ///     let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    ///     calls.push(answer["processed"].as_u64());
    ///     if answer["more"] == false {
    ///         break;
    ///     }
    /// }
    /// assert_eq!(calls, [Some(2), Some(1)]);
    /// assert!(sessions.iter().all(|s| !kratos.session_state(&s.id).unwrap().active));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_bulk_batch_size(&self, size: usize) {
        self.inner.shared.knobs().bulk_batch_size = size;
    }

    /// Makes [`revoke_active_sessions`](Self::revoke_active_sessions) call this web hook, as
    /// a `web_hook` listed after `revoke_active_sessions` in Kratos's hooks. It replaces any
    /// earlier one. Default: none.
    pub fn set_web_hook(&self, hook: WebHook) {
        self.inner.shared.knobs().web_hook = Some(hook);
    }

    /// Removes the web hook: [`revoke_active_sessions`](Self::revoke_active_sessions) only
    /// revokes.
    pub fn clear_web_hook(&self) {
        self.inner.shared.knobs().web_hook = None;
    }

    /// Plays Kratos's `revoke_active_sessions` hook, then the [web hook](Self::set_web_hook)
    /// after it (`hooks: [revoke_active_sessions, web_hook]` after a settings change, a
    /// recovery or a login).
    ///
    /// First every session of the identity but `keep_session_id` is disabled, as Kratos's
    /// `UPDATE sessions SET active=false WHERE identity_id=? AND id<>?`: the rows are kept
    /// (`session_state` says `active: false`) and whoami answers them 401. After a settings
    /// change Kratos keeps the current session; after a login or a recovery it keeps none.
    ///
    /// Then, with a web hook set, it POSTs `{"identity_id":"<id>","keep_session_id":"<id>"}`
    /// (`keep_session_id` left out when `None`) with `Content-Type: application/json`, the key
    /// in the hook's header, `Ory-Webhook-Trigger-ID` (a UUID, the same on every attempt) and
    /// `Ory-Webhook-Request-ID` (a UUID per attempt), and retries as Kratos's client: at most 3
    /// attempts, waiting 1 s then 2 s (or the `Retry-After` of a 429 or a 503, in seconds, at
    /// most 5 s), after a connection error, a timeout, a 429 or a 5xx other than 501. Each
    /// attempt may take 5 s (Kratos: 30 s). Every call with a hook set adds a
    /// [delivery](Self::web_hook_deliveries). The call returns once the hook is done, as a
    /// hook with `response.ignore: false` does.
    ///
    /// Returns the last attempt's status (any status: a 404 or a 500 after 3 attempts is
    /// returned too), or `None` without a web hook.
    ///
    /// # Errors
    ///
    /// When the last attempt got no answer ([`WebHookError::TimedOut`],
    /// [`WebHookError::Connection`]), or the hook cannot be sent: an `https://` URL
    /// ([`WebHookError::PlainHttpOnly`]), an invalid URL, header name or key. The sessions are
    /// revoked all the same, as in Kratos.
    ///
    /// # Panics
    ///
    /// Only if the operating system's random number generator fails.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use kratos_stand_in::http::StatusCode;
    /// use kratos_stand_in::{Endpoint, Fault, KratosStandIn, WebHook};
    ///
    /// let kratos = KratosStandIn::start().await?;
    /// let laptop = kratos.create_session();
    /// let phone = kratos.session().identity(&laptop.identity_id).create();
    ///
    /// // Any plain HTTP server can receive the hook: here a second stand-in, which answers 204
    /// // to every request of a route it does not serve and records what it got.
    /// let app = KratosStandIn::start().await?;
    /// app.set_fault(Endpoint::Other, Fault::Status(StatusCode::NO_CONTENT));
    /// kratos.set_web_hook(WebHook {
    ///     url: format!("{}/hooks/sessions-revoked", app.public_url()),
    ///     header: "X-Key".into(),
    ///     key: "s3cret".into(),
    /// });
    ///
    /// // A password change on the laptop: the phone's session goes.
    /// let status = kratos.revoke_active_sessions(&laptop.identity_id, Some(&laptop.id)).await?;
    /// assert_eq!(status, Some(StatusCode::NO_CONTENT));
    /// assert!(!kratos.session_state(&phone.id).unwrap().active);
    /// assert!(kratos.session_state(&laptop.id).unwrap().active);
    ///
    /// let received = &app.requests(Endpoint::Other)[0];
    /// assert_eq!(received.headers["x-key"], "s3cret");
    /// let body: serde_json::Value = serde_json::from_slice(&received.body)?;
    /// assert_eq!(body["identity_id"], laptop.identity_id.as_str());
    /// assert_eq!(body["keep_session_id"], laptop.id.as_str());
    /// assert_eq!(kratos.web_hook_deliveries()[0].attempts, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn revoke_active_sessions(
        &self,
        identity_id: &str,
        keep_session_id: Option<&str>,
    ) -> Result<Option<http::StatusCode>, WebHookError> {
        let shared = &self.inner.shared;
        let identity_id = ids::canonical(identity_id);
        let keep = keep_session_id.map(ids::canonical);
        shared.store().revoke_others(&identity_id, keep.as_deref());
        let hook = shared.knobs().web_hook.clone();
        let Some(hook) = hook else {
            return Ok(None);
        };
        let payload = hook::Payload {
            identity_id: &identity_id,
            keep_session_id: keep.as_deref(),
        };
        let sent = hook::deliver(&hook, &payload, hook::Timing::KRATOS).await;
        shared.journal().record_delivery(WebHookDelivery {
            trigger_id: sent.trigger_id,
            attempts: sent.attempts,
            status: sent.result.as_ref().ok().copied(),
        });
        sent.result.map(Some)
    }

    /// The web hook deliveries [`revoke_active_sessions`](Self::revoke_active_sessions) made,
    /// oldest first (the most recent 10 000), since the start or the last
    /// [`reset_counters`](Self::reset_counters).
    pub fn web_hook_deliveries(&self) -> Vec<WebHookDelivery> {
        self.inner.shared.journal().deliveries()
    }
}

/// Settings for a [`KratosStandIn`]; from [`KratosStandIn::builder`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `.start()`"]
pub struct StandInBuilder {
    tls: Option<(String, String)>,
    cookie_name: String,
    lifespan: Duration,
    earliest_possible_extend: Option<Duration>,
    admin_token: Option<String>,
    extend_response: ExtendResponse,
    session_cache_for: Option<Duration>,
    /// `tokenize_as` templates by name, in registration order.
    tokenizers: Vec<(String, TokenizerTemplate)>,
}

impl Default for StandInBuilder {
    fn default() -> Self {
        Self {
            tls: None,
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            lifespan: DEFAULT_LIFESPAN,
            earliest_possible_extend: None,
            admin_token: None,
            extend_response: ExtendResponse::WithBody,
            session_cache_for: None,
            tokenizers: Vec::new(),
        }
    }
}

impl fmt::Debug for StandInBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("StandInBuilder");
        debug
            .field("tls", &self.tls.is_some())
            .field("cookie_name", &self.cookie_name)
            .field("lifespan", &self.lifespan)
            .field("earliest_possible_extend", &self.earliest_possible_extend)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[redacted]"),
            )
            .field("extend_response", &self.extend_response)
            .field("session_cache_for", &self.session_cache_for);
        debug.field("tokenizers", &self.tokenizers);
        debug.finish()
    }
}

impl StandInBuilder {
    /// Serves HTTPS with this certificate chain and private key (PEM). Invalid PEM or a key that
    /// does not match makes [`start`](Self::start) fail. The TLS config uses the aws-lc-rs
    /// provider explicitly; no process-wide crypto provider is installed.
    pub fn tls(mut self, cert_chain_pem: &str, private_key_pem: &str) -> Self {
        self.tls = Some((cert_chain_pem.to_owned(), private_key_pem.to_owned()));
        self
    }

    /// The session cookie's name. Default `ory_kratos_session` (self-hosted Kratos); Ory Network
    /// uses `ory_session_<project slug>`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// `session.lifespan`: new sessions and extends last this long. Default 24 hours, Kratos's.
    pub fn lifespan(mut self, lifespan: Duration) -> Self {
        self.lifespan = lifespan;
        self
    }

    /// `session.earliest_possible_extend`: an extend only moves the expiry once less than this is
    /// left. Default: the lifespan, so every extend moves it (Kratos's default).
    pub fn earliest_possible_extend(mut self, window: Duration) -> Self {
        self.earliest_possible_extend = Some(window);
        self
    }

    /// Requires `Authorization: Bearer <token>` on admin routes (as an Ory Network API key);
    /// without it they answer 401. Default: no check, like self-hosted Kratos's admin port.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// What the extend route answers. Default [`ExtendResponse::WithBody`] (stock self-hosted
    /// Kratos); change it later with [`KratosStandIn::set_extend_response`].
    pub fn extend_response(mut self, mode: ExtendResponse) -> Self {
        self.extend_response = mode;
        self
    }

    /// Starts with Ory Network's session-cache header on; see
    /// [`KratosStandIn::set_session_cache_for`]. Default off.
    pub fn session_cache_for(mut self, max_age: Option<Duration>) -> Self {
        self.session_cache_for = max_age;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a cookie name that is not an HTTP token, for bad TLS material or for
    /// an empty tokenizer template name; `Other` when a template's key cannot be made; any error
    /// from binding the port.
    ///
    /// # Panics
    ///
    /// When not called from within a Tokio runtime.
    pub async fn start(self) -> io::Result<KratosStandIn> {
        if !is_token(&self.cookie_name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stand-in: invalid cookie name {:?}", self.cookie_name),
            ));
        }
        let tokenizers = tokenizer::Tokenizers::generate(self.tokenizers)?;
        let tls = match &self.tls {
            Some((chain, key)) => Some(server::tls_acceptor(chain, key)?),
            None => None,
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let config = Config {
            public_url: format!("{scheme}://{addr}"),
            cookie_name: self.cookie_name,
            lifespan: self.lifespan,
            earliest_possible_extend: self.earliest_possible_extend.unwrap_or(self.lifespan),
            admin_token: self.admin_token,
            tls: tls.is_some(),
        };
        let knobs = Knobs {
            faults: Default::default(),
            whoami_latency: Duration::ZERO,
            extend_response: self.extend_response,
            session_cache_for: self.session_cache_for,
            bulk_batch_size: bulk::DEFAULT_BATCH_SIZE,
            web_hook: None,
        };
        let shared = Shared::new(config, knobs);
        let shared = shared.with_tokenizers(tokenizers);
        let shared = Arc::new(shared);
        let server = tokio::spawn(server::run(listener, tls, Arc::clone(&shared)));
        Ok(KratosStandIn {
            inner: Arc::new(Running {
                shared,
                addr,
                server: std::sync::Mutex::new(Some(server)),
            }),
        })
    }
}

/// An RFC 7230 token: what a cookie name may be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The status whoami answers for this token, over HTTP: for the unit tests of several modules.
#[cfg(test)]
pub(crate) async fn whoami_status(kratos: &KratosStandIn, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/sessions/whoami", kratos.public_url()))
        .header("X-Session-Token", token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
