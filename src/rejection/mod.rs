//! Turning an outcome the request cannot go on with into a response.
//!
//! Every middleware of the crate refuses a request the same way, in this order:
//!
//! 1. **A gRPC client** (`content-type: application/grpc…` or `application/grpc-web…`, see
//!    [`is_grpc`]) gets gRPC's own trailers-only answer: HTTP 200 with `grpc-status` 16 (no or
//!    invalid credential), 7 (step-up, an unmet requirement, a cross-origin request; Kratos's page in
//!    [`REDIRECT_BROWSER_TO`]) or 14 (Kratos unavailable; the delay in [`RETRY_AFTER`] and
//!    [`RETRY_PUSHBACK_MS`]), and a percent-encoded `grpc-message`. Never a redirect.
//! 2. **A browser** (`Accept: text/html`), when the layer has a
//!    [`login_url`](crate::authenticate::KratosLayerBuilder::login_url), is sent with a 303 to
//!    the login page, or to Kratos's step-up page or the login flow that meets a route's
//!    requirement, with a `return_to` that never leaves the app. A cross-origin request is
//!    never redirected: it is no navigation of the user's, and gets the 403 below.
//! 3. **Everyone else** gets your [`RejectionResponse`]: [`DefaultRejection`] (JSON in Kratos's
//!    own error envelope) unless you chose another. The layer then adds what a refusal must
//!    carry where yours left it out: `Retry-After` on a 503, `WWW-Authenticate` on a 401,
//!    `Cache-Control: no-store`.
//!
//! So replacing the rejection changes the shape of the answer and nothing else: redirects,
//! step-up flows and gRPC answers stay. A closure replaces it, with no type annotations,
//! through [`rejection_fn`](crate::authenticate::KratosLayerBuilder::rejection_fn), in any
//! order with the other settings; the types it needs are re-exported at the crate's root
//! ([`tower_kratos::http`](crate::http), [`tower_kratos::bytes`](crate::bytes)), and the
//! [`Outcome`] says its status, its retry delay and its step-up page:
//!
//! ```
//! use tower_kratos::{bytes::Bytes, http::Response, KratosLayer};
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

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};

pub use self::body::ResponseBody;
pub(crate) use self::browser::BrowserRedirects;
#[cfg(feature = "tonic")]
pub(crate) use self::grpc::{code_for as grpc_code, metadata as grpc_metadata};
pub use self::grpc::{REDIRECT_BROWSER_TO, RETRY_AFTER, RETRY_PUSHBACK_MS};
pub use crate::response::Refusal;
use crate::{
    outcome::Outcome,
    response::{no_store, refusal_response, set_retry_after, ErrorBody},
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
/// [`rejection_fn`](crate::authenticate::KratosLayerBuilder::rejection_fn): there the closure's
/// argument types are known, so it needs no annotations.
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

/// The default rejection: Kratos's own JSON error envelope, so a client that reads Kratos's
/// errors reads the layer's.
///
/// | outcome | API client |
/// |---|---|
/// | no credential, or invalid; past the maximum session age | 401 (`WWW-Authenticate: Bearer`) |
/// | step-up required | 403 with `redirect_browser_to` (`id` `session_aal2_required`) |
/// | a route's [`Requirement`](crate::require::Requirement) unmet: second factor, recent sign-in | 403 (`id` `second_factor_required`, `recent_sign_in_required`) with `redirect_browser_to` |
/// | a route's condition unmet | 403 (`id` `condition_unmet`) |
/// | the session cookie on a request from another origin that could change state | 403 (`id` `cross_origin_request`) |
/// | Kratos unavailable | 503 with `Retry-After` |
///
/// Never a 401 for an outage: a 401 makes clients drop their session. Browser redirects and
/// gRPC answers are the layer's, with this rejection or any other (see the [module](self)).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DefaultRejection {}

impl DefaultRejection {
    /// The default rejection.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RejectionResponse for DefaultRejection {
    fn response(&self, outcome: &Outcome, _request: &Parts) -> Response<Bytes> {
        match outcome {
            // Not a refusal; answer as a server error rather than let the request through.
            Outcome::Authenticated(_) => ErrorBody::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "an authenticated request was rejected",
            )
            .response(),
            _ => refusal_response(outcome),
        }
    }
}

/// Whether the request is a gRPC call (`content-type: application/grpc…` or
/// `application/grpc-web…`): such clients read only gRPC's own answer (HTTP 200 with
/// `grpc-status` in trailers), which the layer gives them whatever the rejection.
pub fn is_grpc(request: &Parts) -> bool {
    grpc::grpc_content_type(request).is_some()
}

/// How a layer refuses a request: the crate's own answers where the client needs them (gRPC's
/// trailers-only answer, a browser's redirect to the login or step-up page), else the
/// [`RejectionResponse`] of your choice, completed with the headers a refusal must carry.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rejecter<R> {
    pub(crate) browser: BrowserRedirects,
    pub(crate) response: R,
}

impl<R: RejectionResponse> Rejecter<R> {
    /// The response refusing this request, with the outcome in its extensions for whoever is
    /// outside the layer. Every middleware of the crate refuses through here.
    pub(crate) fn reject(&self, outcome: Outcome, request: &Parts) -> Response<Bytes> {
        let mut response = self.answer(&outcome, request);
        response.extensions_mut().insert(outcome);
        response
    }

    /// The response refusing this request, without the outcome attached.
    pub(crate) fn answer(&self, outcome: &Outcome, request: &Parts) -> Response<Bytes> {
        if let Some(content_type) = grpc::grpc_content_type(request) {
            return grpc::trailers_only(outcome, content_type);
        }
        if let Some(redirect) = self.browser.redirect_for(outcome, request) {
            return redirect;
        }
        let mut response = self.response.response(outcome, request);
        complete_headers(&mut response, outcome);
        response
    }
}

/// What every refusal carries, added where the rejection left it out: `Retry-After` on a 503,
/// `WWW-Authenticate` on a 401, and `Cache-Control: no-store` (an answer about one caller's
/// session is never for a cache to keep).
fn complete_headers(response: &mut Response<Bytes>, outcome: &Outcome) {
    let status = response.status();
    let headers = response.headers_mut();
    if status == StatusCode::SERVICE_UNAVAILABLE && !headers.contains_key(header::RETRY_AFTER) {
        if let Some(wait) = outcome.retry_after() {
            set_retry_after(response, wait);
        }
    }
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED && !headers.contains_key(header::WWW_AUTHENTICATE) {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"kratos\""),
        );
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        no_store(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{AalRequired, Unavailable};
    use http::Request;
    use std::time::Duration;

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
        let rejection = Rejecter::<DefaultRejection>::default();
        let outcome = Outcome::Unavailable(Unavailable::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
        let response = rejection.answer(&outcome, &parts("/", "*/*"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let response = rejection.answer(
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
