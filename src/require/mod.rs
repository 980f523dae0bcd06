//! Asking more of a session per route: a second factor, a recent sign-in, a maximum age, a
//! condition of the app's. Checked on the session the layer already has: no Kratos call.
//!
//! A [`Requirement`] goes in front of a route (or a group of routes) as a layer made from the
//! [`KratosLayer`](crate::KratosLayer), inside it, so the layer's cache, Kratos URL and rejection
//! serve it too:
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_kratos::{require::Requirement, KratosLayer, KratosSession};
//!
//! async fn billing(session: KratosSession) -> String {
//!     format!("billing for {}", session.identity_id().unwrap_or("?"))
//! }
//!
//! # fn main() -> Result<(), tower_kratos::BuildError> {
//! let kratos = KratosLayer::builder("http://127.0.0.1:4433")
//!     .login_url("http://127.0.0.1:4455/login")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/billing", get(billing).layer(kratos.require(Requirement::new().second_factor())))
//!     .route(
//!         "/settings",
//!         get(billing).layer(kratos.require(
//!             Requirement::new().signed_in_within(Duration::from_secs(300)),
//!         )),
//!     )
//!     .layer(kratos);
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! With axum's per-route layers, stack the layer and a requirement with tower's `ServiceBuilder`,
//! outer first: `get(billing).layer(ServiceBuilder::new().layer(kratos.required())
//! .layer(kratos.require(Requirement::new().second_factor())))`. A group of routes takes one
//! with `Router::route_layer`. Requirements compose: the conditions of one `Requirement` must
//! all hold, and stacked requirement layers must each be met. A met requirement calls nothing.
//!
//! After a refusal for a second factor or a recent sign-in, the user goes through Kratos's flow
//! and comes back with the same credential, which the cache still holds as it was. So the layer
//! asks Kratos again (once, `Cache-Control: max-age=0`) when a session it refused before is
//! refused again, and lets the request through if the newer answer meets the requirement: a
//! user who has just stepped up is not sent round again, whatever the cache TTL. A refusal is
//! not a revocation: nothing is marked or written to the shared cache, and a client that asks a
//! refused route in a loop costs at most one whoami per session every [`RECHECK_SPACING`](crate::defaults::RECHECK_SPACING) on
//! each replica (the first refusal of a cached answer asks nothing).
//!
//! An unmet second factor, recent sign-in or condition is
//! [`Outcome::Insufficient`](crate::Outcome::Insufficient), never a 401 (the user is signed in):
//! the default rejection sends browsers (with a login URL set) to Kratos's browser login flow that
//! meets it (`aal=aal2`, `refresh=true`, with `return_to`), answers API clients 403 JSON naming
//! the requirement and giving that flow's URL, and gRPC clients `PERMISSION_DENIED` with it in
//! `kratos-redirect-browser-to`. A session past the maximum age is refused like an expired one
//! (`Unauthenticated::TooOld`: 401, or the login page): signing in again is the only remedy.
//!
//! The age is counted from the session's `issued_at` (else, for legacy data, its first
//! factor): extending a session moves its `expires_at` forward, and re-authenticating moves its
//! `authenticated_at`, but neither moves `issued_at`, so it bounds how long one sign-in lasts,
//! which Kratos's rolling `lifespan` does not. A session whose age cannot be told is refused.
//!
//! In a handler, [`Requirement::check`] gives the same verdict on the session it extracted;
//! with axum, `?` turns a refusal into a
//! [`SessionRejection::Requirement`](crate::extract::SessionRejection::Requirement) (403 JSON naming what is
//! missing, or 401 past the maximum age). The layer is the one to use for browsers: only it knows
//! the Kratos flow to send them to, and the rejection you configured.
//!
//! ```
//! use std::time::Duration;
//! use tower_kratos::{require::Requirement, KratosSession, extract::SessionRejection};
//!
//! async fn delete_account(session: KratosSession) -> Result<&'static str, SessionRejection> {
//!     Requirement::new().signed_in_within(Duration::from_secs(300)).check(&session)?;
//!     Ok("deleted")
//! }
//! ```
mod future;
mod layer;
mod requirement;
mod service;

pub use self::{
    future::RequireFuture, layer::RequireLayer, requirement::Requirement, service::RequireService,
};
