//! Connections that end with their session.
//!
//! The layer checks a request when it arrives; what the request opens can outlive that check.
//! With [`watch_connections`](crate::authenticate::KratosLayerBuilder::watch_connections) on
//! (the default), everything a request opens with a session ends when the session does:
//!
//! | what | how it ends |
//! |---|---|
//! | a streamed response body (server-sent events, a chunked stream) | the body ends |
//! | a gRPC server-streaming or bidirectional call | trailers `grpc-status: 16` (UNAUTHENTICATED), `grpc-message: session revoked` |
//! | an axum WebSocket upgraded with [`WebSocketUpgrade`] (feature `ws`) | a close frame, code 1008 (policy violation), reason `session revoked` or `session expired` |
//! | a handler's own work | [`SessionEnd`] resolves with the reason ([`Ended`]) |
//!
//! **What ends a session:** a revocation made through the layer's
//! [`lifecycle`](crate::KratosLayer::lifecycle) helpers, Kratos's bulk admin API or its web
//! hook ([`hook`](crate::hook)), on this replica or, with a shared cache, on any other; and the
//! session's `expires_at` or the layer's
//! [`max_session_age`](crate::authenticate::KratosLayerBuilder::max_session_age), unless the
//! session was extended meanwhile (then the connection stays open until the new end). A
//! revocation is not taken on trust: it wakes the connections of the sessions it names (an
//! identity's: that identity's), whose credential is checked with Kratos again, and only a
//! session Kratos no longer accepts is ended. On loopback that takes a whoami call, milliseconds;
//! at most about a second. While Kratos cannot answer, connections stay open and are checked
//! again every second: requests would get 503, not 401.
//!
//! A revocation Kratos makes without telling the app (an admin deleting a session in the
//! console, an identity disabled, with no web hook) is seen at the connection's periodic check:
//! once per [`cache_ttl`](crate::authenticate::KratosLayerBuilder::cache_ttl) (60 s by
//! default), the bound requests have too. The check shares the cache with the session's
//! requests, so while those come it costs Kratos nothing.
//!
//! **What it costs:** a response that never waits for its body costs two reference counts.
//! A body that waits, a WebSocket or a `SessionEnd` is watched: per credential, one small record
//! and one task, shared by its connections; per connection, a waker.
//!
//! # axum
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use axum::{response::sse::{Event, Sse}, routing::get, Router};
//! use tower_kratos::{KratosLayer, KratosSession};
//!
//! // Nothing to add to the handler: the layer ends the stream with the session.
//! async fn events(_session: KratosSession) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
//!     let ticks = futures_util::stream::unfold((), |()| async {
//!         tokio::time::sleep(Duration::from_millis(500)).await;
//!         Some((Ok(Event::default().event("tick").data("tick")), ()))
//!     });
//!     Sse::new(ticks)
//! }
//!
//! # fn main() -> Result<(), tower_kratos::BuildError> {
//! let kratos = KratosLayer::builder("http://127.0.0.1:4433").build()?;
//! let app: Router = Router::new().route("/live/events", get(events)).layer(kratos);
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! # Plain hyper, tokio-tungstenite
//! Streamed bodies need nothing. A WebSocket upgraded by hand: take [`SessionEnd::of`] from
//! the request before upgrading, and when it resolves send a close frame with code 1008 and
//! [`Ended::reason`].

mod end;
#[cfg(feature = "ws")]
mod ws;

pub use crate::cache::Ended;
pub use end::SessionEnd;
#[cfg(feature = "ws")]
pub use ws::{SessionEnded, WebSocket, WebSocketUpgrade};
