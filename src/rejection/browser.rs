//! Browsers without a session: a 303 to the login page (or to Kratos's step-up page), with a
//! `return_to` that never leaves the app.

use http::{header, uri::Authority, HeaderValue, Response, StatusCode};
use reqwest::Url;
use std::str::FromStr;

use crate::{
    config::{parse_http_url, BuildError},
    outcome::Outcome,
    response::no_store,
};
use bytes::Bytes;
use http::request::Parts;

/// Where browsers without what a route needs are sent: the login page, Kratos's step-up page,
/// with a `return_to` built from the app's URL. The crate's own answer, whatever rejection
/// shapes the API clients' responses.
#[derive(Clone, Debug, Default)]
pub(crate) struct BrowserRedirects {
    login_url: Option<Url>,
    app_url: Option<Url>,
}

impl BrowserRedirects {
    /// Sends browsers without a valid session to this login page.
    pub(crate) fn set_login_url(&mut self, url: &str) -> Result<(), BuildError> {
        self.login_url = Some(parse_http_url("login_url", url)?);
        Ok(())
    }

    /// Builds `return_to` from this base URL instead of the request's own origin.
    pub(crate) fn set_app_url(&mut self, url: &str) -> Result<(), BuildError> {
        self.app_url = Some(parse_http_url("app_url", url)?);
        Ok(())
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
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                "a browser redirect's return_to is built from the request's Host header: set \
                 the app's public URL (KratosLayerBuilder::app_url) in production, and list it \
                 in Kratos's selfservice.allowed_return_urls"
            );
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

    pub(super) fn redirect_for(
        &self,
        outcome: &Outcome,
        request: &Parts,
    ) -> Option<Response<Bytes>> {
        let login_url = self.login_url.as_ref()?;
        if !accepts_html(request) {
            return None;
        }
        match outcome {
            Outcome::Anonymous | Outcome::Unauthenticated(_) => self.redirect(login_url, request),
            // Kratos's step-up page, or the login flow that meets a route's requirement.
            Outcome::AalRequired(_) | Outcome::Insufficient(_) => {
                let target = Url::parse(outcome.redirect_browser_to()?).ok()?;
                self.redirect(&target, request)
            }
            _ => None,
        }
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
    use crate::rejection::{DefaultRejection, Rejecter};

    fn rejecter(login_url: &str) -> Rejecter<DefaultRejection> {
        let mut rejecter = Rejecter::<DefaultRejection>::default();
        rejecter.browser.set_login_url(login_url).unwrap();
        rejecter
    }

    impl Rejecter<DefaultRejection> {
        fn with_app_url(mut self, url: &str) -> Self {
            self.browser.set_app_url(url).unwrap();
            self
        }
    }
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
        let rejection = rejecter("https://auth.test/login?flow=x");
        let response = rejection.answer(&Outcome::Anonymous, &parts("/me?a=1&b=2", "text/html"));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://auth.test/login?flow=x&return_to=http%3A%2F%2Fapp.test%3A8080%2Fme%3Fa%3D1%26b%3D2"
        );
        let api = rejection.answer(&Outcome::Anonymous, &parts("/me", "application/json"));
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
        for refused in [
            "text/html;q=0",
            "application/json, text/html; q=0.0",
            "text/htmlx",
        ] {
            let response = rejection.answer(&Outcome::Anonymous, &parts("/me", refused));
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{refused}");
        }
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let response = rejection.answer(&Outcome::Anonymous, &parts("/me", browser));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }

    #[test]
    fn a_cross_origin_request_is_answered_not_redirected() {
        let rejection = rejecter("https://auth.test/login");
        let response = rejection.answer(
            &Outcome::CrossOriginRequest,
            &parts("/orders", "text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(header::LOCATION).is_none());
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["id"], "cross_origin_request");
    }

    #[test]
    fn app_url_overrides_the_host_header() {
        let rejection = rejecter("https://auth.test/login").with_app_url("https://app.example.com");
        let response = rejection.answer(&Outcome::Anonymous, &parts("/me", "text/html"));
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://auth.test/login?return_to=https%3A%2F%2Fapp.example.com%2Fme"
        );
    }

    /// The `return_to` of the default rejection's redirect for this request, if any.
    fn return_to(rejection: &Rejecter<DefaultRejection>, request: Parts) -> Option<String> {
        let response = rejection.answer(&Outcome::Anonymous, &request);
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
        let plain = rejecter("https://auth.test/login");
        let with_app = plain.clone().with_app_url("https://app.example.com");

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
}
