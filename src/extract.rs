//! axum extractors (feature `axum`): the session, its identity, the identity's traits as your
//! own type ([`KratosTraits`]), and `Option<…>` of each.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_kratos::{KratosIdentity, KratosLayer, KratosSession, KratosTraits};
//!
//! async fn me(session: KratosSession) -> String {
//!     format!("session {}", session.id)
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Traits { email: String }
//!
//! async fn email(KratosTraits(traits): KratosTraits<Traits>) -> String {
//!     traits.email
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
//!     .route("/me/email", get(email).layer(kratos.required()))
//!     .route("/", get(home).layer(kratos.optional()));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Used on a route the layer does not cover, they answer 500 with a message naming the missing
//! layer, so the mistake shows in the first test rather than as a silent "signed out".
//! `KratosTraits<T>` whose `T` does not match the identity's traits is a 500 naming `T`: the
//! identity schema and the type disagree, which is the server's to fix.

use std::{borrow::Cow, fmt, time::Duration};

use axum_core::{
    body::Body,
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, StatusCode};

use serde::de::DeserializeOwned;

use crate::{
    log_limit::WarnLimiter,
    outcome::Outcome,
    rejection::{DefaultRejection, LayerRejection, Rejecter},
    response::{refusal_response, Refusal},
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
    /// The identity's traits do not match the type a [`KratosTraits`] asked for: the identity
    /// schema and the type disagree, a server bug (500). Neither the response nor the log shows
    /// the traits: they are personal data.
    TraitsMismatch {
        /// The type the traits were read as.
        type_name: &'static str,
        /// Where and why they did not fit, as serde says it (`email: missing field`,
        /// `phone: invalid type: (value withheld), expected u64`), with the traits' values left
        /// out. Logged, never in the response.
        cause: String,
    },
    /// The session does not meet a [`Requirement`](crate::require::Requirement) the handler
    /// checked ([`Requirement::check`](crate::require::Requirement::check) with `?`): 403 naming
    /// what is missing, or 401 past the maximum age.
    Requirement(Outcome),
}

impl From<Outcome> for SessionRejection {
    /// A requirement's refusal, from [`Requirement::check`](crate::require::Requirement::check).
    fn from(outcome: Outcome) -> Self {
        Self::Requirement(outcome)
    }
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLayer => f.write_str(MISSING_LAYER),
            Self::NotAuthenticated { outcome, .. } => write!(f, "no session: {outcome}"),
            Self::NoIdentity => f.write_str("the session carries no identity"),
            Self::TraitsMismatch { type_name, cause } => {
                write!(
                    f,
                    "the identity's traits do not match `{type_name}`: {cause}"
                )
            }
            Self::Requirement(outcome) => write!(f, "{outcome}"),
        }
    }
}

impl std::error::Error for SessionRejection {}

impl Refusal for SessionRejection {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingLayer | Self::TraitsMismatch { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotAuthenticated { outcome, .. } | Self::Requirement(outcome) => outcome.status(),
            Self::NoIdentity => StatusCode::UNAUTHORIZED,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            // The server's to fix; what exactly is in its log.
            Self::MissingLayer | Self::TraitsMismatch { .. } => "misconfigured",
            Self::NotAuthenticated { outcome, .. } | Self::Requirement(outcome) => outcome.kind(),
            Self::NoIdentity => "no_identity",
        }
    }

    fn reason(&self) -> Cow<'_, str> {
        match self {
            Self::NotAuthenticated { outcome, .. } | Self::Requirement(outcome) => outcome.reason(),
            Self::NoIdentity => Cow::Borrowed("The session carries no identity."),
            // The server's to fix: how, without the identity's data (the cause is in the log).
            Self::MissingLayer => Cow::Borrowed(MISSING_LAYER),
            Self::TraitsMismatch { type_name, .. } => Cow::Owned(format!(
                "tower-kratos: the identity's traits do not fit `KratosTraits<{type_name}>`. \
                 Make the type follow the identity schema (fields a schema does not require as \
                 `Option`); the server's log says which field and why."
            )),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::NotAuthenticated { outcome, .. } | Self::Requirement(outcome) => {
                outcome.retry_after()
            }
            _ => None,
        }
    }

    fn redirect_browser_to(&self) -> Option<&str> {
        match self {
            Self::NotAuthenticated { outcome, .. } | Self::Requirement(outcome) => {
                outcome.redirect_browser_to()
            }
            _ => None,
        }
    }
}

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
            Self::TraitsMismatch {
                type_name,
                ref cause,
            } => {
                static MISMATCH_ERRORS: WarnLimiter = WarnLimiter::new();
                if let Some(left_out) = MISMATCH_ERRORS.admit(("extract", type_name)) {
                    tracing::error!(
                        type_name,
                        %cause,
                        left_out_since_last = left_out,
                        "tower-kratos: the identity's traits do not match the type KratosTraits \
                         asked for; does it follow the identity schema?"
                    );
                }
                refusal_response(&self)
            }
            Self::NoIdentity => refusal_response(&self),
            Self::Requirement(ref outcome) => {
                let mut response = refusal_response(&self);
                response.extensions_mut().insert(outcome.clone());
                response
            }
        };
        response.map(Body::from)
    }
}

/// What the layer left in the extensions: a session, an outcome without one, or nothing.
fn session_from(parts: &Parts) -> Result<Option<KratosSession>, SessionRejection> {
    from_layer(parts)
}

/// What a layer put in the request's extensions: its value, `None` when it let the request on
/// without one (its outcome is there instead), or [`SessionRejection::MissingLayer`].
pub(crate) fn from_layer<T: Clone + Send + Sync + 'static>(
    parts: &Parts,
) -> Result<Option<T>, SessionRejection> {
    if let Some(value) = parts.extensions.get::<T>() {
        return Ok(Some(value.clone()));
    }
    if parts.extensions.get::<Outcome>().is_some() {
        return Ok(None);
    }
    Err(SessionRejection::MissingLayer)
}

pub(crate) fn not_authenticated(parts: &Parts) -> SessionRejection {
    let outcome = parts
        .extensions
        .get::<Outcome>()
        .cloned()
        .unwrap_or(Outcome::Anonymous);
    let response = match parts.extensions.get::<LayerRejection>() {
        Some(LayerRejection(rejection)) => rejection.response_for(&outcome, parts),
        None => Rejecter::<DefaultRejection>::default().answer(&outcome, parts),
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

/// The identity's traits, read as your own type `T` (`serde::Deserialize`), from the session the
/// layer found: no copy of the session, one deserialization per request.
///
/// Without a session, it answers as [`KratosSession`] does (the layer's rejection);
/// `Option<KratosTraits<T>>` is `None` then. Traits that do not match `T` are a
/// [`SessionRejection::TraitsMismatch`] (500): the identity schema and `T` disagree.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_kratos::{KratosLayer, KratosTraits};
///
/// #[derive(serde::Deserialize)]
/// struct Traits {
///     email: String,
/// }
///
/// async fn me(KratosTraits(traits): KratosTraits<Traits>) -> String {
///     format!("signed in as {}", traits.email)
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kratos = kratos_stand_in::KratosStandIn::start().await?;
/// let app: Router = Router::new()
///     .route("/me", get(me))
///     .layer(KratosLayer::builder(kratos.public_url()).build()?);
/// # let session = kratos.session().traits(serde_json::json!({"email": "ada@example.org"})).create();
/// # use tower::ServiceExt;
/// # let request = http::Request::get("/me").header("x-session-token", &session.token)
/// #     .body(axum::body::Body::empty())?;
/// # let response = app.oneshot(request).await?;
/// # assert_eq!(response.status(), 200);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct KratosTraits<T>(pub T);

/// The traits of the request's identity as `T`; `Ok(None)` when the request has no identity.
fn traits_from<T: DeserializeOwned>(
    parts: &Parts,
) -> Result<Option<KratosTraits<T>>, SessionRejection> {
    let Some(session) = parts.extensions.get::<KratosSession>() else {
        return match parts.extensions.get::<Outcome>() {
            Some(_) => Ok(None),
            None => Err(SessionRejection::MissingLayer),
        };
    };
    let Some(identity) = session.identity.as_ref() else {
        return Ok(None);
    };
    // The plain read first: tracking the path costs every request, and matters only to explain
    // a failure, which is read again for that.
    identity
        .traits_as()
        .map_err(|_| {
            let mut traits = serde_json::Deserializer::from_str(identity.traits.get());
            serde_path_to_error::deserialize::<_, T>(&mut traits)
                .err()
                .map_or_else(|| "inconsistent".to_owned(), |error| without_values(&error))
        })
        .map(|traits| Some(KratosTraits(traits)))
        .map_err(|cause| SessionRejection::TraitsMismatch {
            type_name: std::any::type_name::<T>(),
            cause,
        })
}

/// serde's error with the traits' values left out: `invalid type: string "ada@…", expected u64`
/// names the value, and traits are personal data. Field names and expected types stay.
fn without_values(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let message = error.inner().to_string();
    // Where in the traits' text it failed says nothing the path does not.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    let message = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|prefix| {
            let rest = message.strip_prefix(prefix)?;
            let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
            Some(format!("{prefix}(value withheld){expected}"))
        })
        .unwrap_or(message);
    match error.path().to_string().as_str() {
        "." | "" => message,
        path => format!("{path}: {message}"),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for KratosTraits<T> {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match traits_from(parts)? {
            Some(traits) => Ok(traits),
            None if parts.extensions.get::<KratosSession>().is_some() => {
                Err(SessionRejection::NoIdentity)
            }
            None => Err(not_authenticated(parts)),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequestParts<S> for KratosTraits<T> {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        traits_from(parts)
    }
}
