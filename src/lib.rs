//! Ory Kratos sessions for any tower service.
//!
//! Add one [`KratosLayer`] and your handlers get the caller's Kratos session. The layer finds the
//! credential (`X-Session-Token`, the session cookie, or `Authorization: Bearer`, in Kratos's own
//! precedence), validates it with `GET /sessions/whoami` through a cache that asks Kratos once
//! per session per TTL, however many requests arrive at once, and puts a [`KratosSession`] in the
//! request's extensions. Every other [`Outcome`] becomes a response: 401 (or a redirect to your
//! login page) when there is no valid session, 403 with Kratos's `redirect_browser_to` when a
//! second factor is required, and 503 with `Retry-After` when Kratos is down or rate-limiting,
//! never a 401 that would sign users out.
//!
//! # Quick start
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_kratos::{KratosLayer, KratosSession};
//!
//! async fn me(session: KratosSession) -> String {
//!     format!("hello {}", session.identity_id().unwrap_or("?"))
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let kratos = kratos_stand_in::KratosStandIn::start().await?;
//! # let kratos_public_url = kratos.public_url();
//! let kratos_layer = KratosLayer::builder(kratos_public_url).build()?;
//! let app = Router::new().route("/me", get(me)).layer(kratos_layer);
//! # let session = kratos.create_session();
//! # use tower::ServiceExt;
//! # let request = http::Request::get("/me")
//! #     .header("cookie", session.cookie_header())
//! #     .body(axum::body::Body::empty())?;
//! # let response = app.oneshot(request).await?;
//! # assert_eq!(response.status(), 200);
//! # assert_eq!(kratos.calls(kratos_stand_in::Endpoint::Whoami), 1);
//! # Ok(()) }
//! ```
//!
//! # Modules
//! - [`guide`]: the long-form documentation, chapter by chapter, with examples that run.
//! - [`authenticate`]: the session layer, its builder, service and future.
//! - [`defaults`]: every default and limit of the settings.
//! - [`credentials`]: finding the credential, Kratos's precedence, size limits.
//! - [`session`]: the lenient Kratos session model.
//! - [`outcome`]: what a lookup can end in.
//! - [`rejection`]: turning an outcome into a response, and replacing that.
//! - [`lifecycle`]: extending sessions close to expiry, revoking, listing, logging out.
//! - [`live`]: connections (streams, WebSockets, long work) that end with their session.
//! - [`hook`]: a receiver for Kratos's web hook, so revocations Kratos makes reach the cache.
//! - [`require`]: asking more of a session per route (second factor, recent sign-in, age).
//! - [`extract`] (feature `axum`): extractors, `Option<…>` included.
//! - [`metrics`] (feature `metrics`): the series the crate records, for your exporter.
//! - [`tonic`](mod@tonic) (feature `tonic`): the session in a gRPC handler, errors as statuses.
//!
//! # Layering
//! A request's way through the crate reads one direction: request → credentials → cache →
//! client → outcome → extensions or rejection. The modules' imports go one way too: in this
//! table, bottom first, each module uses only modules on rows above it. A module is a file under
//! `src/` or a folder taken whole (`client/`); "uses" lists exactly the modules it imports
//! directly. CI checks this table against the real imports, and that they have no cycle
//! (`.ci/module-graph`):
//!
//! | module | what it is | uses |
//! |---|---|---|
//! | `config` | [`Mode`], [`BuildError`], URL checks, the HTTP client's settings | nothing |
//! | `defaults` | every default and limit of the settings | nothing |
//! | `log_limit` | warnings that cannot flood the log | nothing |
//! | `macros` | what every middleware writes the same way (the inner-service accessors) | nothing |
//! | `guide/` | the long-form documentation | nothing |
//! | `session` | the Kratos session model | nothing |
//! | `credentials` | finding the credential in a request | nothing |
//! | `cross_origin` | the cross-origin rule for cookie requests, and the trusted origins | `config`, `credentials` |
//! | `response` | [`Refusal`](rejection::Refusal), the one JSON error body, `Retry-After` | nothing |
//! | `outcome` | what a lookup can end in | `credentials`, `defaults`, `response`, `session` |
//! | `metrics` | feature `metrics`: every series' name, unit, description and labels, and the recording helpers (nothing without the feature) | `outcome` |
//! | `relay` | passing Kratos's `Set-Cookie` on | `credentials` |
//! | `shared_cache/` | feature `redis`: the Redis second level (sealed entries, fill locks, revocation records and their channel, the back-off on Redis faults) | `config`, `defaults`, `log_limit`, `metrics`, `session` |
//! | `client/` | the Kratos API (whoami behind its admission: back-off and a cap on calls in flight; the lifecycle calls) and [`LifecycleError`](lifecycle::LifecycleError) | `credentials`, `defaults`, `log_limit`, `metrics`, `outcome`, `response`, `session` |
//! | `cache/` | keys, entries, the store, revocation marks and the open connections they wake, stale-if-error, the shared fill, the second level | `client/`, `credentials`, `defaults`, `log_limit`, `metrics`, `outcome`, `session`, `shared_cache/` |
//! | `rejection/` | outcome → response: the one place every middleware refuses through (gRPC's trailers-only answers, browser redirects, then your rejection), and the response body (which ends with its session) | `cache/`, `config`, `outcome`, `response` |
//! | `extract` | feature `axum`: axum extractors | `log_limit`, `outcome`, `rejection/`, `response`, `session` |
//! | `live/` | connections that end with their session: [`SessionEnd`](live::SessionEnd), WebSockets (feature `ws`) | `cache/`, `extract`, `session` |
//! | `extend` | the extension engine (one attempt per session, cooldown, pause) | `cache/`, `client/`, `credentials`, `defaults`, `metrics`, `outcome`, `session` |
//! | `jwt/` | feature `jwt`: tokenized sessions verified downstream (keys, token checks, the layer, extractors; revocations heard through the cache) | `cache/`, `config`, `defaults`, `extract`, `log_limit`, `metrics`, `outcome`, `rejection/`, `session`, `shared_cache/` |
//! | `state` | what the services of one builder share, and one layer's policy | `cache/`, `client/`, `config`, `credentials`, `cross_origin`, `extend`, `log_limit`, `metrics`, `outcome`, `rejection/` |
//! | `lifecycle` | the public lifecycle helpers, browser logout and the bulk admin API included | `cache/`, `client/`, `credentials`, `extend`, `metrics`, `outcome`, `relay`, `session`, `state` |
//! | `hook` | the receiver of Kratos's web hook after `revoke_active_sessions` | `cache/`, `client/`, `config`, `defaults`, `response`, `state` |
//! | `require/` | per-route requirements: [`Requirement`](require::Requirement), its check and its layer | `credentials`, `log_limit`, `outcome`, `rejection/`, `response`, `session`, `state` |
//! | `authenticate/` | the session layer: [`KratosLayer`], its builder, service and response future | `cache/`, `client/`, `config`, `credentials`, `cross_origin`, `defaults`, `extend`, `hook`, `lifecycle`, `log_limit`, `metrics`, `outcome`, `rejection/`, `relay`, `require/`, `shared_cache/`, `state` |
//! | `tonic` | feature `tonic`: the tonic extension trait, statuses, `NamedService` | `authenticate/`, `client/`, `credentials`, `jwt/`, `lifecycle`, `outcome`, `rejection/`, `require/`, `response`, `session` |
//!
//! # Security
//! - Only the chosen credential is sent to Kratos: the session cookie as `name=value` (with any
//!   other session-named cookie, so Kratos picks its own by name), or a token as
//!   `X-Session-Token`. The request's other cookies never leave your process.
//! - The cache is keyed by a keyed BLAKE3 hash of the credential; the raw credential is not
//!   stored, logged, or shown by any `Debug` implementation. An open connection that is watched
//!   ([`live`]) keeps its request's credential in memory while it lasts, to ask Kratos again
//!   when a revocation names its session; never in Redis, a log or a `Debug`.
//! - Streams, WebSockets and long handlers opened with a session end when it is revoked or
//!   expires ([`live`]), within a second, not when the client goes away.
//! - A cached session is never served past its `expires_at`. Revocations made through
//!   [`lifecycle`] are enforced by this process at once (browser logout and Kratos's bulk API
//!   included), and by every replica with a shared cache; so are those Kratos reports to the
//!   [`hook`] receiver (its `revoke_active_sessions`). Any other revocation made outside the
//!   crate stays accepted until the cache entry expires: at most the cache TTL, 60 s by default
//!   ([`KratosLayerBuilder::cache_ttl`](authenticate::KratosLayerBuilder::cache_ttl)); with
//!   stale-if-error on, up to TTL + grace while Kratos is unavailable
//!   ([`KratosLayerBuilder::stale_if_error`](authenticate::KratosLayerBuilder::stale_if_error)).
//! - Kratos's session lifespan rolls forward with every extension; for an absolute cap on how
//!   long one sign-in lasts, set [`KratosLayerBuilder::max_session_age`](authenticate::KratosLayerBuilder::max_session_age) (or a route's
//!   [`Requirement::max_session_age`](require::Requirement::max_session_age)).
//! - While Kratos rate-limits or fails, the layer backs off and answers 503 without asking it;
//!   at most [`DEFAULT_MAX_CONCURRENT_LOOKUPS`](defaults::DEFAULT_MAX_CONCURRENT_LOOKUPS) whoami calls run at once
//!   ([`KratosLayerBuilder::max_concurrent_lookups`](authenticate::KratosLayerBuilder::max_concurrent_lookups)), so made-up credentials cannot open
//!   unbounded connections to Kratos.
//! - The admin API key ([`KratosLayerBuilder::admin_api_key`](authenticate::KratosLayerBuilder::admin_api_key)) is sent only to the admin URL,
//!   as a sensitive header, and is shown by no `Debug` implementation or log.
//! - A request the session cookie authenticates, that could change state (any method but `GET`,
//!   `HEAD` and `OPTIONS`, and WebSocket upgrades), from another origin than the app's, is
//!   refused with 403 ([`Outcome::CrossOriginRequest`]) before Kratos is asked, as Go's
//!   `CrossOriginProtection` decides it (`Sec-Fetch-Site`, else `Origin` against `Host`); trust
//!   your front end's origin with [`KratosLayerBuilder::trusted_origin`](authenticate::KratosLayerBuilder::trusted_origin)
//!   (the guide's [cross-site request forgery](guide::security#cross-site-request-forgery)).
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

// The layering is in the crate docs above ("Layering"); `.ci/module-graph` checks it.
#[macro_use]
mod macros;

pub mod authenticate;
mod cache;
mod client;
mod config;
pub mod credentials;
mod cross_origin;
pub mod defaults;
mod extend;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;
pub mod guide;
pub mod hook;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
pub mod lifecycle;
pub mod live;
mod log_limit;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
pub mod outcome;
pub mod rejection;
mod relay;
pub mod require;
mod response;
pub mod session;
#[cfg(feature = "redis")]
mod shared_cache;
mod state;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use crate::{
    authenticate::KratosLayer,
    config::{BuildError, Mode},
    outcome::Outcome,
    session::{KratosIdentity, KratosSession},
};

#[cfg(feature = "axum")]
pub use crate::extract::KratosTraits;

// The crates this crate's API is written in (a rejection is an `http::Response<bytes::Bytes>`),
// so that writing one needs no dependency of your own; as `axum::http`.
pub use bytes;
pub use http;

/// The README's Rust examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
