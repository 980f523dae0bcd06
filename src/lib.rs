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
//! # let kratos = tower_kratos::testing::KratosStandIn::start().await?;
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
//! # assert_eq!(kratos.calls(tower_kratos::testing::Endpoint::Whoami), 1);
//! # Ok(()) }
//! ```
//!
//! # Modules
//! - [`credentials`]: finding the credential, Kratos's precedence, size limits.
//! - [`session`]: the lenient Kratos session model.
//! - [`outcome`]: what a lookup can end in.
//! - [`rejection`]: turning an outcome into a response, and replacing that.
//! - [`lifecycle`]: extending sessions close to expiry, revoking, listing, API logout.
//! - `extract` (feature `axum`): extractors, `Option<…>` included.
//! - `testing` (feature `test-util`): a Kratos stand-in for your tests.
//!
//! # Security
//! - Only the chosen credential is sent to Kratos: the session cookie as `name=value` (with any
//!   other session-named cookie, so Kratos picks its own by name), or a token as
//!   `X-Session-Token`. The request's other cookies never leave your process.
//! - The cache is keyed by a keyed BLAKE3 hash of the credential; the raw credential is not
//!   stored, logged, or shown by any `Debug` implementation.
//! - A cached session is never served past its `expires_at`. A session revoked outside this
//!   process stays accepted until its cache entry expires: at most the cache TTL, 60 s by
//!   default ([`KratosLayerBuilder::cache_ttl`]); with stale-if-error on, up to TTL + grace while
//!   Kratos is unavailable ([`KratosLayerBuilder::stale_if_error`]). Revocations made through
//!   [`lifecycle`] are enforced by this process at once.
//! - While Kratos rate-limits or fails, the layer backs off and answers 503 without asking it;
//!   at most [`DEFAULT_MAX_CONCURRENT_LOOKUPS`] whoami calls run at once
//!   ([`KratosLayerBuilder::max_concurrent_lookups`]), so made-up credentials cannot open
//!   unbounded connections to Kratos.
//! - The admin API key ([`KratosLayerBuilder::admin_api_key`]) is sent only to the admin URL,
//!   as a sensitive header, and is shown by no `Debug` implementation or log.
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

mod cache;
mod client;
pub mod credentials;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;
mod future;
mod gate;
mod layer;
pub mod lifecycle;
mod log_limit;
pub mod outcome;
pub mod rejection;
mod service;
pub mod session;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

pub use crate::{
    cache::LayerStats,
    future::{ResponseBody, ResponseFuture},
    layer::{
        BuildError, KratosLayer, KratosLayerBuilder, Mode, DEFAULT_ADMIN_TIMEOUT,
        DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL, DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_EXTEND_COOLDOWN, DEFAULT_REQUEST_TIMEOUT, MAX_EXTEND_COOLDOWN, MAX_REJECTION_TTL,
    },
    layer::{
        DEFAULT_BACKOFF_AFTER_FAILURES, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN,
        DEFAULT_LOOKUP_QUEUE_TIMEOUT, DEFAULT_MAX_CONCURRENT_LOOKUPS, MAX_STALE_IF_ERROR,
    },
    outcome::{Outcome, StaleSession},
    rejection::{DefaultRejection, RejectionResponse},
    service::KratosService,
    session::{KratosIdentity, KratosSession, Session},
};

#[cfg(feature = "axum")]
pub use crate::extract::SessionRejection;

/// The README's Rust examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
