//! Turning an outcome the request cannot go on with into a response.
//!
//! The layer calls a [`RejectionResponse`] for every such outcome. The default,
//! [`DefaultRejection`], answers API clients with JSON in Kratos's own error envelope and sends
//! browsers to the login page. A closure replaces it, with no type annotations, through
//! [`rejection_fn`](crate::KratosLayerBuilder::rejection_fn); everything it needs is here (no
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

use std::{str::FromStr, time::Duration};

/// What a rejection is made of, re-exported so that writing one needs no dependency of your own.
pub use bytes::Bytes;
use http::uri::Authority;
pub use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use reqwest::Url;

pub use crate::{config::DEFAULT_RETRY_AFTER, response::Refusal};
use crate::{
    config::{parse_http_url, BuildError},
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
/// [`rejection_fn`](crate::KratosLayerBuilder::rejection_fn): there the closure's argument
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
/// | Kratos unavailable | 503 JSON with `Retry-After` | the same |
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

    /// The URL the request asked for, absolute, for `return_to`: the configured app URL with the
    /// request's path and query; without one, the request's own `http`/`https` origin (its
    /// absolute-form target, else its `Host` header) when that is a plain host and port. Anything
    /// else (userinfo such as `app.test@evil.com`, another scheme) gives no `return_to` at all,
    /// so a crafted request line can never send a browser elsewhere after signing in.
    fn original_url(&self, request: &Parts) -> Option<Url> {
        let uri = &request.uri;
        if let Some(base) = &self.app_url {
            return Some(with_path(base.clone(), uri.path(), uri.query()));
        }
        let origin = match (uri.scheme_str(), uri.authority()) {
            // Absolute form (`GET http://app.test/me`, as sent to proxies).
            (Some(scheme), Some(authority)) => trusted_origin(scheme, authority.as_str()),
            (None, None) => {
                let host = request.headers.get(header::HOST)?.to_str().ok()?;
                trusted_origin("http", host)
            }
            _ => None,
        }?;
        Some(with_path(origin, uri.path(), uri.query()))
    }

    fn redirect(&self, target: &Url, request: &Parts) -> Option<Response<Bytes>> {
        let mut location = target.clone();
        if let Some(original) = self.original_url(request) {
            location
                .query_pairs_mut()
                .append_pair("return_to", original.as_str());
        }
        let location = HeaderValue::from_str(location.as_str()).ok()?;
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::SEE_OTHER;
        response.headers_mut().insert(header::LOCATION, location);
        no_store(&mut response);
        Some(response)
    }

    fn browser_redirect(&self, outcome: &Outcome, request: &Parts) -> Option<Response<Bytes>> {
        let login_url = self.login_url.as_ref()?;
        if !accepts_html(request) {
            return None;
        }
        match outcome {
            Outcome::Anonymous | Outcome::Unauthenticated(_) => self.redirect(login_url, request),
            Outcome::AalRequired(step_up) => {
                let target = Url::parse(step_up.redirect_browser_to.as_deref()?).ok()?;
                self.redirect(&target, request)
            }
            _ => None,
        }
    }
}

impl RejectionResponse for DefaultRejection {
    fn response(&self, outcome: &Outcome, request: &Parts) -> Response<Bytes> {
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
            refusal => refusal_response(refusal),
        };
        match outcome {
            Outcome::Anonymous | Outcome::Unauthenticated(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"kratos\""),
                );
            }
            Outcome::Unavailable(unavailable) => {
                let wait = unavailable
                    .retry_after()
                    .or(self.retry_after)
                    .unwrap_or(DEFAULT_RETRY_AFTER);
                set_retry_after(&mut response, wait);
            }
            _ => {}
        }
        response
    }
}

/// `scheme://authority` when the scheme is `http`/`https` and the authority a plain host and
/// port: no userinfo (`app.test@evil.com`), nothing a URL parser would read another way.
fn trusted_origin(scheme: &str, authority: &str) -> Option<Url> {
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let authority = Authority::from_str(authority).ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let origin = Url::parse(&format!("{scheme}://{authority}/")).ok()?;
    // The parsed URL must name exactly the host that was checked.
    origin
        .host_str()
        .is_some_and(|host| host.eq_ignore_ascii_case(authority.host()))
        .then_some(origin)
}

/// `base` with the request's path and query set, not joined: a path such as `//evil.com/x` stays a
/// path on `base`'s host instead of naming another host.
fn with_path(mut base: Url, path: &str, query: Option<&str>) -> Url {
    base.set_path(path);
    base.set_query(query);
    base.set_fragment(None);
    base
}

/// Whether the client accepts HTML (`text/html` listed without `q=0`): a browser navigation.
fn accepts_html(request: &Parts) -> bool {
    request
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            let is_html = params
                .next()
                .is_some_and(|media| media.eq_ignore_ascii_case("text/html"));
            let refused = params.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_html && !refused
        })
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
    fn browsers_go_to_login_with_return_to() {
        let rejection = DefaultRejection::new()
            .with_login_url("https://auth.test/login?flow=x")
            .unwrap();
        let response = rejection.response(&Outcome::Anonymous, &parts("/me?a=1&b=2", "text/html"));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://auth.test/login?flow=x&return_to=http%3A%2F%2Fapp.test%3A8080%2Fme%3Fa%3D1%26b%3D2"
        );
        let api = rejection.response(&Outcome::Anonymous, &parts("/me", "application/json"));
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
        for refused in [
            "text/html;q=0",
            "application/json, text/html; q=0.0",
            "text/htmlx",
        ] {
            let response = rejection.response(&Outcome::Anonymous, &parts("/me", refused));
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{refused}");
        }
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let response = rejection.response(&Outcome::Anonymous, &parts("/me", browser));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }

    #[test]
    fn app_url_overrides_the_host_header() {
        let rejection = DefaultRejection::new()
            .with_login_url("https://auth.test/login")
            .unwrap()
            .with_app_url("https://app.example.com")
            .unwrap();
        let response = rejection.response(&Outcome::Anonymous, &parts("/me", "text/html"));
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://auth.test/login?return_to=https%3A%2F%2Fapp.example.com%2Fme"
        );
    }

    /// The `return_to` of the default rejection's redirect for this request, if any.
    fn return_to(rejection: &DefaultRejection, request: Parts) -> Option<String> {
        let response = rejection.response(&Outcome::Anonymous, &request);
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = Url::parse(response.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let found = location
            .query_pairs()
            .find(|(key, _)| key == "return_to")
            .map(|(_, value)| value.into_owned());
        found
    }

    fn browser(uri: &str, host: Option<&str>) -> Parts {
        let mut request = Request::get(uri).header("accept", "text/html");
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn return_to_never_leaves_the_app() {
        let plain = DefaultRejection::new()
            .with_login_url("https://auth.test/login")
            .unwrap();
        let with_app = plain
            .clone()
            .with_app_url("https://app.example.com")
            .unwrap();

        // Absolute-form targets: http(s) with a plain authority is kept, anything else is not.
        assert_eq!(
            return_to(&plain, browser("https://app.test/me?x=1", None)).as_deref(),
            Some("https://app.test/me?x=1")
        );
        for hostile in [
            "https://app.test@evil.com/me",
            "http://user:pw@app.test/me",
            "javascript://evil.com/me",
            "ftp://app.test/me",
        ] {
            assert_eq!(return_to(&plain, browser(hostile, None)), None, "{hostile}");
            assert_eq!(
                return_to(&with_app, browser(hostile, None)).as_deref(),
                Some("https://app.example.com/me"),
                "{hostile}"
            );
        }
        // A Host header with userinfo is no host.
        assert_eq!(
            return_to(&plain, browser("/me", Some("app.test@evil.com"))),
            None
        );

        // A scheme-relative path stays a path on the app's host, whichever origin is used.
        assert_eq!(
            return_to(&with_app, browser("//evil.com/me", Some("app.test"))).as_deref(),
            Some("https://app.example.com//evil.com/me")
        );
        assert_eq!(
            return_to(&plain, browser("//evil.com/me", Some("app.test"))).as_deref(),
            Some("http://app.test//evil.com/me")
        );
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
