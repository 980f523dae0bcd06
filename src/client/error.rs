//! Why a session lifecycle call did not succeed, and the response each reason is.

use std::{borrow::Cow, fmt, time::Duration};

use http::StatusCode;

use crate::{
    credentials::MalformedCredential,
    defaults::DEFAULT_RETRY_AFTER,
    outcome::{AalRequired, Outcome, Unauthenticated, Unavailable},
    response::Refusal,
};

/// Why a session lifecycle call did not succeed.
///
/// Each variant is one real situation, so a handler can answer it precisely; with the `axum`
/// feature the error is also a response (see its `IntoResponse`). Nothing in it shows a credential
/// or the admin API key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The request carried no Kratos credential. Kratos was not asked.
    NoCredential,
    /// The request's credential is malformed. Kratos was not asked.
    Malformed(MalformedCredential),
    /// A session or identity id that is not a UUID. Kratos was not asked.
    InvalidId,
    /// Kratos refuses to revoke the session the request was made with (400 "cannot revoke
    /// current session"): that is a logout, not a revocation. Nothing changed.
    CurrentSession,
    /// API logout needs a session token (`X-Session-Token` or `Authorization: Bearer`); this
    /// caller has a browser session cookie, which logs out through Kratos's browser flow.
    NotATokenSession,
    /// Browser logout needs the session cookie; this caller has a session token, which logs
    /// out through API logout ([`SessionLifecycle::logout`](crate::lifecycle::SessionLifecycle::logout)).
    NotACookieSession,
    /// Kratos does not accept the caller's credential (401, or 403 on API logout): no, expired
    /// or revoked session.
    Unauthenticated,
    /// The caller's session must complete a second factor first (403 `session_aal2_required`).
    AalRequired(AalRequired),
    /// Kratos answered 404: the session or identity (or, when revoking an identity's sessions,
    /// any session of it) does not exist. When extending on Ory Network, it can also mean
    /// another request is extending the same session at this moment.
    NotFound,
    /// The call needs the admin API, and the layer was built without
    /// [`admin_url`](crate::authenticate::KratosLayerBuilder::admin_url).
    AdminNotConfigured,
    /// The admin API refused this process's credentials (401 or 403): check
    /// [`admin_api_key`](crate::authenticate::KratosLayerBuilder::admin_api_key).
    AdminRefused(StatusCode),
    /// Kratos (or Ory Network) answered 429.
    RateLimited {
        /// Kratos's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Kratos could not give an answer: down, slow, 5xx, an unexpected status, or a body that
    /// is not what the endpoint returns.
    Unavailable(Unavailable),
}

impl LifecycleError {
    /// The status this error answers with: 400 (an invalid id, the current session, not a
    /// token session, not a cookie session), 401 (no or invalid credential), 403 (step-up), 404, 500 (the admin API
    /// not configured or refusing the key: the server's fault), 503 (Kratos unavailable or rate
    /// limiting).
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_kratos::{lifecycle::LifecycleError, outcome::Unavailable};
    ///
    /// assert_eq!(LifecycleError::CurrentSession.status(), StatusCode::BAD_REQUEST);
    /// let down = LifecycleError::Unavailable(Unavailable::Timeout);
    /// assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidId
            | Self::CurrentSession
            | Self::NotATokenSession
            | Self::NotACookieSession => StatusCode::BAD_REQUEST,
            Self::NoCredential | Self::Malformed(_) | Self::Unauthenticated => {
                StatusCode::UNAUTHORIZED
            }
            Self::AalRequired(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AdminNotConfigured | Self::AdminRefused(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RateLimited { .. } | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Why a lookup of the caller's session did not give one.
    pub(crate) fn from_outcome(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Anonymous => Self::NoCredential,
            Outcome::Unauthenticated(Unauthenticated::Malformed(malformed)) => {
                Self::Malformed(malformed)
            }
            Outcome::Unauthenticated(_) => Self::Unauthenticated,
            Outcome::AalRequired(step_up) => Self::AalRequired(step_up),
            Outcome::Unavailable(Unavailable::RateLimited { retry_after }) => {
                Self::RateLimited { retry_after }
            }
            Outcome::Unavailable(unavailable) => Self::Unavailable(unavailable),
            // Not a lookup's answer (a session, a route's requirement, the layer's cross-origin
            // rule); only reached if a caller passes one here by mistake.
            Outcome::Authenticated(_) | Outcome::Insufficient(_) | Outcome::CrossOriginRequest => {
                Self::Unavailable(Unavailable::InvalidBody)
            }
        }
    }

    /// For a 503, how long a client should wait: what Kratos (after a 429) or the layer's
    /// back-off said, else [`DEFAULT_RETRY_AFTER`](crate::defaults::DEFAULT_RETRY_AFTER). `None` for every
    /// other error.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.status() == StatusCode::SERVICE_UNAVAILABLE)
            .then(|| self.named_retry_after().unwrap_or(DEFAULT_RETRY_AFTER))
    }

    /// The wait Kratos or the back-off named, if either did.
    pub(crate) fn named_retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            Self::Unavailable(unavailable) => unavailable.retry_after(),
            _ => None,
        }
    }

    /// What went wrong, in a sentence safe to show the client: the admin API's failures are
    /// the server's to fix and are described only as a misconfiguration (the log says more).
    pub fn reason(&self) -> Cow<'_, str> {
        match self {
            Self::AdminNotConfigured | Self::AdminRefused(_) => {
                Cow::Borrowed("the session service is misconfigured")
            }
            other => Cow::Owned(other.to_string()),
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoCredential => "no_credential",
            Self::Malformed(_) => "malformed",
            Self::InvalidId => "invalid_id",
            Self::CurrentSession => "current_session",
            Self::NotATokenSession => "not_a_token_session",
            Self::NotACookieSession => "not_a_cookie_session",
            Self::Unauthenticated => "unauthenticated",
            Self::AalRequired(_) => "aal_required",
            Self::NotFound => "not_found",
            Self::AdminNotConfigured => "admin_not_configured",
            Self::AdminRefused(_) => "admin_refused",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCredential => f.write_str("the request carries no Kratos credential"),
            Self::Malformed(why) => write!(f, "malformed credential ({why})"),
            Self::InvalidId => f.write_str("the id is not a UUID"),
            Self::CurrentSession => f.write_str(
                "Kratos does not revoke the session the request was made with; log out instead",
            ),
            Self::NotATokenSession => {
                f.write_str("API logout needs a session token, not a session cookie")
            }
            Self::NotACookieSession => {
                f.write_str("browser logout needs a session cookie, not a session token")
            }
            Self::Unauthenticated => f.write_str("Kratos did not accept the credential"),
            Self::AalRequired(_) => {
                f.write_str("a higher authenticator assurance level is required")
            }
            Self::NotFound => f.write_str("Kratos found no such session or identity (404)"),
            Self::AdminNotConfigured => f.write_str("the Kratos admin API is not configured"),
            Self::AdminRefused(status) => {
                write!(f, "the Kratos admin API refused the API key ({status})")
            }
            Self::RateLimited { .. } => f.write_str("Kratos rate limited the call (429)"),
            Self::Unavailable(reason) => write!(f, "Kratos unavailable: {reason}"),
        }
    }
}

impl std::error::Error for LifecycleError {}

impl Refusal for LifecycleError {
    fn status(&self) -> StatusCode {
        LifecycleError::status(self)
    }

    /// As [`LifecycleError::kind`], but the admin API's failures are `misconfigured`: which
    /// part of the server's configuration is at fault is for its log, not its clients.
    fn kind(&self) -> &'static str {
        match self {
            Self::AdminNotConfigured | Self::AdminRefused(_) => "misconfigured",
            other => other.kind(),
        }
    }

    fn reason(&self) -> Cow<'_, str> {
        LifecycleError::reason(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        LifecycleError::retry_after(self)
    }

    fn redirect_browser_to(&self) -> Option<&str> {
        match self {
            Self::AalRequired(step_up) => step_up.redirect_browser_to.as_deref(),
            _ => None,
        }
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for LifecycleError {
    /// The crate's JSON error ([`Refusal`]: `{"error": {"id": kind, "code", "status", "reason",
    /// "message"}}`) with [`status`](Self::status); a step-up carries `redirect_browser_to`, a
    /// 503 `Retry-After`. Never shows a credential or the admin key. For a shape of your own,
    /// answer your [`Refusal`] response instead (see [`Refusal`]).
    fn into_response(self) -> axum_core::response::Response {
        crate::response::refusal_response(&self).map(axum_core::body::Body::from)
    }
}
