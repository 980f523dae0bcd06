//! axum extractors (feature `axum`): the session, its identity, and `Option<…>` of both.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_kratos::{KratosIdentity, KratosLayer, KratosSession};
//!
//! async fn me(session: KratosSession) -> String {
//!     format!("session {}", session.id)
//! }
//!
//! async fn home(identity: Option<KratosIdentity>) -> String {
//!     match identity {
//!         Some(identity) => format!("hello {}", identity.id),
//!         None => "hello stranger".to_owned(),
//!     }
//! }
//!
//! # fn main() -> Result<(), tower_kratos::BuildError> {
//! let kratos = KratosLayer::builder("http://127.0.0.1:4433").build()?;
//! let app: Router = Router::new()
//!     .route("/me", get(me).layer(kratos.required()))
//!     .route("/", get(home).layer(kratos.optional()));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Used on a route the layer does not cover, they answer 500 with a message naming the missing
//! layer, so the mistake shows in the first test rather than as a silent "signed out".

use std::fmt;

use axum_core::{
    body::Body,
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, StatusCode};

use crate::{
    log_limit::WarnLimiter,
    outcome::Outcome,
    rejection::{DefaultRejection, LayerRejection, RejectionResponse},
    response::ErrorBody,
    session::{KratosIdentity, KratosSession},
};

const MISSING_LAYER: &str = "tower-kratos: no session information on this request. \
     Is `KratosLayer` applied to this route? Add `.layer(kratos_layer)` (or `.route_layer`) \
     around the handlers that extract `KratosSession` or `KratosIdentity`.";

/// Why a session extractor refused the request.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The request did not pass through [`KratosLayer`](crate::KratosLayer): a server bug (500).
    MissingLayer,
    /// The layer let the request on without a session (optional mode); the handler requires one.
    /// The response is the layer's own rejection for that outcome.
    NotAuthenticated {
        /// Why there is no session.
        outcome: Outcome,
        /// The layer's rejection response.
        response: Box<http::Response<Bytes>>,
    },
    /// The session carries no identity (Kratos sends none until a session is fully
    /// authenticated): 401.
    NoIdentity,
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLayer => f.write_str(MISSING_LAYER),
            Self::NotAuthenticated { outcome, .. } => write!(f, "no session: {outcome}"),
            Self::NoIdentity => f.write_str("the session carries no identity"),
        }
    }
}

impl std::error::Error for SessionRejection {}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        let response = match self {
            Self::MissingLayer => {
                // Every request to the route answers this, so its log line is rate-limited.
                static MISSING_LAYER_ERRORS: WarnLimiter = WarnLimiter::new();
                if let Some(left_out) = MISSING_LAYER_ERRORS.admit(("extract", "missing_layer")) {
                    tracing::error!(left_out_since_last = left_out, "{MISSING_LAYER}");
                }
                let mut response =
                    http::Response::new(Bytes::from_static(MISSING_LAYER.as_bytes()));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
            Self::NotAuthenticated {
                outcome,
                mut response,
            } => {
                response.extensions_mut().insert(outcome);
                *response
            }
            Self::NoIdentity => ErrorBody::new(
                StatusCode::UNAUTHORIZED,
                "The request could not be authorized",
            )
            .reason("The session carries no identity.")
            .response(),
        };
        response.map(Body::from)
    }
}

/// What the layer left in the extensions: a session, an outcome without one, or nothing.
fn session_from(parts: &Parts) -> Result<Option<KratosSession>, SessionRejection> {
    if let Some(session) = parts.extensions.get::<KratosSession>() {
        return Ok(Some(session.clone()));
    }
    if parts.extensions.get::<Outcome>().is_some() {
        return Ok(None);
    }
    Err(SessionRejection::MissingLayer)
}

fn not_authenticated(parts: &Parts) -> SessionRejection {
    let outcome = parts
        .extensions
        .get::<Outcome>()
        .cloned()
        .unwrap_or(Outcome::Anonymous);
    let response = match parts.extensions.get::<LayerRejection>() {
        Some(LayerRejection(rejection)) => rejection.response_for(&outcome, parts),
        None => DefaultRejection::new().response(&outcome, parts),
    };
    SessionRejection::NotAuthenticated {
        outcome,
        response: Box::new(response),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KratosSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        session_from(parts)?.ok_or_else(|| not_authenticated(parts))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for KratosSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        session_from(parts)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KratosIdentity {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = session_from(parts)?.ok_or_else(|| not_authenticated(parts))?;
        Self::of(&session).ok_or(SessionRejection::NoIdentity)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for KratosIdentity {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(session_from(parts)?.as_ref().and_then(Self::of))
    }
}
