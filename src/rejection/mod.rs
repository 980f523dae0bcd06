//! Turning an outcome the request cannot go on with into a response.
//!
//! The layer calls a [`RejectionResponse`] for every such outcome. The default,
//! [`DefaultRejection`], answers API clients with JSON in Kratos's own error envelope and sends
//! browsers to the login page. A closure replaces it, with no type annotations, through
//! [`rejection_fn`](crate::authenticate::KratosLayerBuilder::rejection_fn); everything it needs is here (no
//! `http` or `bytes` dependency of your own), and the [`Outcome`] says its status, its retry
//! delay and its step-up page:
//!
//! ```
//! use tower_kratos::{rejection::{Bytes, Response}, KratosLayer};
//!
//! # fn main() -> Result<(), tower_kratos::BuildError> {
//! let layer = KratosLayer::builder("http://127.0.0.1:4433")
//!     .rejection_fn(|outcome, _request| {
//!         let mut response = Response::new(Bytes::from(format!("no entry: {}", outcome.kind())));
//!         *response.status_mut() = outcome.status();
//!         if let Some(wait) = outcome.retry_after() {
//!             response.headers_mut().insert("retry-after", wait.as_secs().into());
//!         }
//!         response
//!     })
//!     .build()?;
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! Whatever produces the response, the layer attaches the [`Outcome`] to its extensions. To give
//! lifecycle errors and extractor refusals the same shape, build them all from [`Refusal`].

mod body;
mod browser;
mod grpc;

use std::{borrow::Cow, time::Duration};

/// What a rejection is made of, re-exported so that writing one needs no dependency of your own.
pub use bytes::Bytes;
pub use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use reqwest::Url;

pub use self::body::ResponseBody;
#[cfg(feature = "tonic")]
pub(crate) use self::grpc::{code_for as grpc_code, metadata as grpc_metadata};
pub use self::grpc::{REDIRECT_BROWSER_TO, RETRY_AFTER, RETRY_PUSHBACK_MS};
pub use crate::response::Refusal;
use crate::{
    config::{parse_http_url, BuildError},
    defaults::DEFAULT_RETRY_AFTER,
    outcome::Outcome,
    response::{refusal_response, ErrorBody},
};

/// Builds the response for a request the layer does not let through.
pub trait RejectionResponse: Clone + Send + Sync + 'static {
    /// The response for this outcome. `request` is the rejected request's head.
    fn response(&self, outcome: &Outcome, request: &Parts) -> Response<Bytes>;
}

impl<F> RejectionResponse for F
where
    F: Fn(&Outcome, &Parts) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    fn response(&self, outcome: &Outcome, request: &Parts) -> Response<Bytes> {
        self(outcome, request)
    }
}

/// A closure as the rejection, from
/// [`rejection_fn`](crate::authenticate::KratosLayerBuilder::rejection_fn): there the closure's argument
/// types are known, so it needs no annotations.
#[derive(Clone)]
pub struct RejectionFn<F>(pub(crate) F);

impl<F> std::fmt::Debug for RejectionFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RejectionFn(..)")
    }
}

impl<F> RejectionResponse for RejectionFn<F>
where
    F: Fn(&Outcome, &Parts) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    fn response(&self, outcome: &Outcome, request: &Parts) -> Response<Bytes> {
        (self.0)(outcome, request)
    }
}

/// A layer's rejection, without its type, for the extractors.
#[cfg(feature = "axum")]
pub(crate) trait DynRejection: Send + Sync {
    fn response_for(&self, outcome: &Outcome, request: &Parts) -> Response<Bytes>;
}

/// Put in the extensions of requests that optional mode lets on without a session.
#[cfg(feature = "axum")]
#[derive(Clone)]
pub(crate) struct LayerRejection(pub(crate) std::sync::Arc<dyn DynRejection>);

#[cfg(feature = "axum")]
impl std::fmt::Debug for LayerRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerRejection")
    }
}

/// The default rejection.
///
/// | outcome | API client | browser (`Accept: text/html`), login URL set |
/// |---|---|---|
/// | no credential, or invalid | 401 JSON | 303 to the login URL with `return_to` |
/// | step-up required | 403 JSON with `redirect_browser_to` | 303 to Kratos's step-up page with `return_to` |
/// | a route's [`Requirement`](crate::require::Requirement) unmet: second factor, recent sign-in | 403 JSON (`id` `second_factor_required`, `recent_sign_in_required`) with `redirect_browser_to` | 303 to Kratos's login flow (`aal=aal2`, `refresh=true`) with `return_to` |
/// | a route's condition unmet | 403 JSON (`id` `condition_unmet`) | the same |
/// | past the maximum session age | 401 JSON | 303 to the login URL with `return_to` |
/// | Kratos unavailable | 503 JSON with `Retry-After` | the same |
///
/// A gRPC client (`content-type: application/grpc…` or `application/grpc-web…`) gets gRPC's own
/// trailers-only answer instead: HTTP 200 with `grpc-status` 16 (no or invalid credential), 7
/// (step-up or an unmet requirement; Kratos's page in [`REDIRECT_BROWSER_TO`]) or 14 (Kratos unavailable; the delay in
/// [`RETRY_AFTER`] and [`RETRY_PUSHBACK_MS`]), and a percent-encoded `grpc-message`; never a
/// redirect.
///
/// Never a 401 for an outage: a 401 makes clients drop their session.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DefaultRejection {
    login_url: Option<Url>,
    app_url: Option<Url>,
    retry_after: Option<Duration>,
}

impl DefaultRejection {
    /// The default: JSON only, no browser redirects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Send browsers without a valid session to this login page, with `return_to` set to the
    /// URL they asked for. Off by default (401 JSON for everyone).
    ///
    /// # Errors
    /// When `url` is not an absolute `http`/`https` URL.
    pub fn with_login_url(mut self, url: &str) -> Result<Self, BuildError> {
        self.login_url = Some(parse_http_url("login_url", url)?);
        Ok(self)
    }

    /// The app's public base URL (e.g. `https://app.example.com`), used to build `return_to`
    /// with the request's path and query. By default the request's own origin is used (its
    /// absolute-form target, else `http://` and its `Host` header) when it is a plain
    /// `http`/`https` host and port, and no `return_to` is sent otherwise: set this when the app
    /// is behind a proxy that terminates TLS.
    ///
    /// # Errors
    /// When `url` is not an absolute `http`/`https` URL.
    pub fn with_app_url(mut self, url: &str) -> Result<Self, BuildError> {
        self.app_url = Some(parse_http_url("app_url", url)?);
        Ok(self)
    }

    /// The `Retry-After` sent with 503 when Kratos gave none. Default: [`DEFAULT_RETRY_AFTER`].
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl RejectionResponse for DefaultRejection {
    fn response(&self, outcome: &Outcome, request: &Parts) -> Response<Bytes> {
        let refusal = WithDefaultWait {
            outcome,
            wait: self.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        };
        if let Some(content_type) = grpc::grpc_content_type(request) {
            return grpc::trailers_only(&refusal, content_type);
        }
        if let Some(redirect) = self.browser_redirect(outcome, request) {
            return redirect;
        }
        let mut response = match outcome {
            // Not a refusal; answer as a server error rather than let the request through.
            Outcome::Authenticated(_) => ErrorBody::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "an authenticated request was rejected",
            )
            .response(),
            _ => refusal_response(&refusal),
        };
        if matches!(outcome, Outcome::Anonymous | Outcome::Unauthenticated(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kratos\""),
            );
        }
        response
    }
}

/// An outcome, with this rejection's own retry delay for outages whose cause named none.
struct WithDefaultWait<'a> {
    outcome: &'a Outcome,
    wait: Duration,
}

impl Refusal for WithDefaultWait<'_> {
    fn status(&self) -> StatusCode {
        self.outcome.status()
    }

    fn kind(&self) -> &'static str {
        self.outcome.kind()
    }

    fn reason(&self) -> Cow<'_, str> {
        self.outcome.reason()
    }

    fn retry_after(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Unavailable(unavailable) => {
                Some(unavailable.retry_after().unwrap_or(self.wait))
            }
            _ => None,
        }
    }

    fn redirect_browser_to(&self) -> Option<&str> {
        self.outcome.redirect_browser_to()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{AalRequired, Unavailable};
    use http::Request;

    fn parts(uri: &str, accept: &str) -> Parts {
        Request::get(uri)
            .header("host", "app.test:8080")
            .header("accept", accept)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn outage_is_503_with_retry_after_never_401() {
        let rejection = DefaultRejection::new();
        let outcome = Outcome::Unavailable(Unavailable::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
        let response = rejection.response(&outcome, &parts("/", "*/*"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let response = rejection.response(
            &Outcome::Unavailable(Unavailable::Timeout),
            &parts("/", "*/*"),
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn step_up_keeps_redirect_browser_to() {
        let outcome = Outcome::AalRequired(AalRequired::new(Some(
            "http://k/self-service/login/browser?aal=aal2".into(),
        )));
        let response = DefaultRejection::new().response(&outcome, &parts("/", "application/json"));
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body["redirect_browser_to"],
            "http://k/self-service/login/browser?aal=aal2"
        );
        assert_eq!(body["error"]["id"], "session_aal2_required");
    }
}
