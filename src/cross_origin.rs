//! The cross-origin rule for cookie sessions. A browser sends the session cookie with requests
//! other pages make (a form another site posts to the app, a `fetch` without CORS, a WebSocket
//! another page opens), so a request the cookie authenticates and that can change state must come
//! from the app's own origin, or from one the app trusts. Decided from the headers browsers set
//! themselves, as Go's `net/http.CrossOriginProtection` decides it:
//!
//! 1. `GET`, `HEAD` and `OPTIONS` pass, unless they ask for a WebSocket (`Upgrade: websocket`):
//!    a WebSocket is a channel both ways, opened by whichever page asks.
//! 2. `Sec-Fetch-Site` (every browser since 2023): `same-origin` and `none` (the user's own
//!    navigation) pass; any other value is refused.
//! 3. Without it, `Origin`: refused when its `host[:port]` is not the request's (`Host`, or the
//!    HTTP/2 `:authority`), when it is `null`, or when it is not an origin at all.
//! 4. With neither header the request passes: no browser sent it.
//!
//! A request whose `Origin` is one of the trusted origins passes whatever steps 2 and 3 say.
//! Requests carrying a token (`X-Session-Token`, `Authorization: Bearer`) are not checked:
//! browsers never add those by themselves. It is the credential that decides: a request with
//! the session cookie and a `Bearer` header is authenticated by the cookie, and checked.

use http::{header, uri::Authority, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use reqwest::Url;

use crate::{config::BuildError, credentials::CredentialSource};

/// `Sec-Fetch-Site`: where the browser says the request comes from (Fetch Metadata).
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The layer's cross-origin settings: on or off, and the origins trusted as the app's own.
/// Checked when set, so a request never meets an origin that was not validated.
#[derive(Clone, Debug)]
pub(crate) struct CrossOrigin {
    enabled: bool,
    /// Serialised origins (`scheme://host[:port]`), lowercase, the scheme's default port left
    /// out: as browsers write `Origin`.
    trusted: Vec<Box<str>>,
}

impl Default for CrossOrigin {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted: Vec::new(),
        }
    }
}

impl CrossOrigin {
    /// Turns the rule on (the default) or off.
    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    /// Trusts every one of `origins`, or, when one is not an origin, none of them: the error
    /// names `setting`.
    pub(crate) fn trust<I>(&mut self, setting: &'static str, origins: I) -> Result<(), BuildError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let parsed = origins
            .into_iter()
            .map(|origin| {
                let origin = origin.as_ref();
                parse_trusted(origin).map_err(|why| {
                    BuildError::setting(setting, format!("{why} (got {:?})", origin))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for origin in parsed {
            if !self.trusted.contains(&origin) {
                self.trusted.push(origin);
            }
        }
        Ok(())
    }

    /// Whether the layer refuses `request`, authenticated by a credential from `source`, as a
    /// cross-origin request: only cookie requests are checked, and only when the rule is on.
    pub(crate) fn refuses<B>(&self, source: CredentialSource, request: &Request<B>) -> bool {
        if !self.enabled || source != CredentialSource::Cookie {
            return false;
        }
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        let Err(refused) = check(method, uri, headers, &self.trusted) else {
            return false;
        };
        tracing::debug!(
            outcome = "cross_origin_request",
            %method,
            refused_on = refused.header(),
            sec_fetch_site = ?headers.get(SEC_FETCH_SITE),
            origin = ?headers.get(header::ORIGIN),
            "a request from another origin with the session cookie refused without asking Kratos"
        );
        true
    }
}

/// Which header refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `Sec-Fetch-Site` said neither `same-origin` nor `none`.
    FetchSite,
    /// No `Sec-Fetch-Site`, and `Origin` is not the request's host, or not an origin.
    Origin,
}

impl Refused {
    fn header(self) -> &'static str {
        match self {
            Self::FetchSite => "sec-fetch-site",
            Self::Origin => "origin",
        }
    }
}

/// The rule, for one request that carries the session cookie (see the [module](self)):
/// `Ok` lets it on, `Err` says which header refused it.
pub(crate) fn check(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    trusted: &[Box<str>],
) -> Result<(), Refused> {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe && !is_websocket_upgrade(headers) {
        return Ok(());
    }
    let origin = headers.get(header::ORIGIN);
    let trusted_origin = || origin.is_some_and(|origin| is_trusted(origin, trusted));
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            _ if trusted_origin() => Ok(()),
            _ => Err(Refused::FetchSite),
        };
    }
    let Some(origin) = origin else {
        // Neither header: not a browser (every browser sends `Origin` with these requests).
        return Ok(());
    };
    if same_host(origin, uri, headers) || trusted_origin() {
        Ok(())
    } else {
        Err(Refused::Origin)
    }
}

/// Whether the request asks for a WebSocket: `Upgrade` lists `websocket`. A page cannot set
/// `Upgrade` itself; only the browser's `WebSocket` does.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether `Origin` is one of the trusted origins (which are stored as browsers write them).
fn is_trusted(origin: &HeaderValue, trusted: &[Box<str>]) -> bool {
    trusted
        .iter()
        .any(|trusted| trusted.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
}

/// Whether `Origin` names the request's own `host[:port]`: its target's authority (HTTP/2's
/// `:authority`, an absolute-form target), else its `Host` header; a port left out is the
/// origin's scheme's default. `null`, and anything that is not `scheme://host[:port]`, is not.
/// The scheme is not compared (the request's is not known here): an `http` page posting to the
/// `https` app passes this step, which only browsers without `Sec-Fetch-Site` reach, as in Go's
/// rule; HSTS closes that.
fn same_host(origin: &HeaderValue, uri: &Uri, headers: &HeaderMap) -> bool {
    let Some((scheme, origin)) = origin.to_str().ok().and_then(parse_origin) else {
        return false;
    };
    let request = match uri.authority() {
        Some(authority) => Some(authority.clone()),
        None => headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<Authority>().ok()),
    };
    let Some(request) = request.filter(has_valid_port) else {
        return false;
    };
    let default_port = match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    let port = |authority: &Authority| authority.port_u16().or(default_port);
    !request.as_str().contains('@')
        && origin.host().eq_ignore_ascii_case(request.host())
        && port(&origin) == port(&request)
}

/// An `Origin` value's scheme (lowercase) and authority, when it is a serialised origin:
/// `scheme://host[:port]`, nothing before or after.
fn parse_origin(origin: &str) -> Option<(&'static str, Authority)> {
    let (scheme, authority) = origin.split_once("://")?;
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        // Another scheme (a browser extension, an app's web view): never this server's.
        return None;
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '\\']) {
        return None;
    }
    let authority = authority.parse::<Authority>().ok()?;
    (!authority.host().is_empty() && has_valid_port(&authority)).then_some((scheme, authority))
}

/// Whether an authority's port, when it names one, is a port number (`Authority` parses
/// `host:99999` and `host:`, and reads no port from them).
fn has_valid_port(authority: &Authority) -> bool {
    let names_port = authority.as_str().len() > authority.host().len();
    !names_port || authority.port_u16().is_some()
}

/// A trusted origin as given to the builder, as browsers write it in `Origin`: exactly
/// `http(s)://host[:port]`, lowercased, the scheme's default port left out, an international
/// host in its ASCII form.
fn parse_trusted(origin: &str) -> Result<Box<str>, &'static str> {
    let Some((_, authority)) = parse_origin(origin) else {
        return Err(
            "must be an origin, exactly scheme://host[:port] with an http or https scheme: no \
             path (not even a trailing slash), query, fragment or user info",
        );
    };
    let host = authority.host();
    let plain = host.starts_with('[')
        || host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'));
    if !plain {
        return Err("must name one host: no wildcard, an international name in its ASCII form");
    }
    let url = Url::parse(origin).map_err(|_| "must have a valid host and port")?;
    let serialised = url.origin().ascii_serialization();
    // The parser must have read the host that was checked, and kept it: nothing else.
    let same = url
        .host_str()
        .is_some_and(|host| host.eq_ignore_ascii_case(authority.host()));
    if !same || serialised == "null" {
        return Err("must have a valid host and port");
    }
    Ok(serialised.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    fn decide(method: &str, headers: &[(&str, &str)], trusted: &[&str]) -> Result<(), Refused> {
        let mut settings = CrossOrigin::default();
        settings.trust("trusted_origins", trusted).unwrap();
        let request = request(method, "/orders", headers);
        check(
            request.method(),
            request.uri(),
            request.headers(),
            &settings.trusted,
        )
    }

    const HOST: (&str, &str) = ("host", "app.example.com");

    #[test]
    fn safe_methods_pass_whatever_their_headers_say() {
        for method in ["GET", "HEAD", "OPTIONS"] {
            let hostile = [HOST, ("sec-fetch-site", "cross-site"), ("origin", "null")];
            assert_eq!(decide(method, &hostile, &[]), Ok(()), "{method}");
        }
        for method in [
            "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "PROPFIND",
        ] {
            let hostile = [HOST, ("sec-fetch-site", "cross-site")];
            assert_eq!(decide(method, &hostile, &[]), Err(Refused::FetchSite));
        }
    }

    #[test]
    fn sec_fetch_site_decides_first() {
        for passes in ["same-origin", "none"] {
            let headers = [
                HOST,
                ("sec-fetch-site", passes),
                ("origin", "https://evil.test"),
            ];
            assert_eq!(decide("POST", &headers, &[]), Ok(()), "{passes}");
        }
        for refused in ["same-site", "cross-site", "Same-Origin", "", "whatever"] {
            let headers = [
                HOST,
                ("sec-fetch-site", refused),
                ("origin", "https://app.example.com"),
            ];
            assert_eq!(
                decide("POST", &headers, &[]),
                Err(Refused::FetchSite),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn without_sec_fetch_site_origin_must_name_the_host() {
        let post =
            |origin: &str, host: &str| decide("POST", &[("host", host), ("origin", origin)], &[]);
        assert_eq!(post("https://app.example.com", "app.example.com"), Ok(()));
        assert_eq!(post("https://APP.example.com", "app.Example.com"), Ok(()));
        assert_eq!(
            post("http://app.example.com:8080", "app.example.com:8080"),
            Ok(())
        );
        assert_eq!(
            post("https://app.example.com", "app.example.com:443"),
            Ok(())
        );
        assert_eq!(post("http://[::1]:3000", "[::1]:3000"), Ok(()));
        for (origin, host) in [
            ("https://evil.test", "app.example.com"),
            ("https://app.example.com", "app.example.com:8443"),
            ("http://app.example.com:8080", "app.example.com:8081"),
            ("https://sub.app.example.com", "app.example.com"),
            ("https://app.example.com.evil.test", "app.example.com"),
            ("http://app.example.com", "app.example.com:443"),
            ("null", "app.example.com"),
            ("", "app.example.com"),
            ("app.example.com", "app.example.com"),
            ("https://app.example.com/", "app.example.com"),
            ("https://app.example.com/path", "app.example.com"),
            ("https://user@app.example.com", "app.example.com"),
            ("https://app.example.com?x", "app.example.com"),
            ("https://app.example.com#x", "app.example.com"),
            ("ftp://app.example.com", "app.example.com"),
            ("https://", "app.example.com"),
            ("https://app.example.com:99999", "app.example.com:99999"),
            ("https://app.example.com", "user@app.example.com"),
        ] {
            assert_eq!(
                post(origin, host),
                Err(Refused::Origin),
                "{origin:?} on {host:?}"
            );
        }
        // Neither header: not a browser.
        assert_eq!(decide("POST", &[HOST], &[]), Ok(()));
        // No host to compare with.
        assert_eq!(
            decide("POST", &[("origin", "https://app.example.com")], &[]),
            Err(Refused::Origin)
        );
    }

    #[test]
    fn the_target_authority_is_the_host_for_http2() {
        let check_uri = |uri: &str, headers: &[(&str, &str)]| {
            let request = request("POST", uri, headers);
            check(request.method(), request.uri(), request.headers(), &[])
        };
        let origin = ("origin", "https://app.example.com");
        assert_eq!(
            check_uri("https://app.example.com/orders", &[origin]),
            Ok(())
        );
        assert_eq!(
            check_uri(
                "https://app.example.com/orders",
                &[origin, ("host", "evil.test")]
            ),
            Ok(())
        );
        assert_eq!(
            check_uri("https://evil.test/orders", &[origin, HOST]),
            Err(Refused::Origin)
        );
    }

    #[test]
    fn a_websocket_upgrade_is_checked_though_it_is_a_get() {
        let upgrade = [("connection", "Upgrade"), ("upgrade", "websocket")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut headers = vec![HOST];
            headers.extend_from_slice(&upgrade);
            headers.extend_from_slice(extra);
            decide("GET", &headers, &[])
        };
        assert_eq!(
            with(&[("origin", "https://evil.test")]),
            Err(Refused::Origin)
        );
        assert_eq!(with(&[("origin", "https://app.example.com")]), Ok(()));
        assert_eq!(
            with(&[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://app.example.com")
            ]),
            Err(Refused::FetchSite)
        );
        assert_eq!(with(&[("sec-fetch-site", "same-origin")]), Ok(()));
        let listed = [HOST, ("upgrade", "h2c, WebSocket"), ("origin", "null")];
        assert_eq!(decide("GET", &listed, &[]), Err(Refused::Origin));
        let other = [HOST, ("upgrade", "h2c"), ("origin", "null")];
        assert_eq!(decide("GET", &other, &[]), Ok(()));
    }

    #[test]
    fn a_trusted_origin_passes_both_steps() {
        let trusted = ["https://spa.example.com"];
        for headers in [
            vec![HOST, ("origin", "https://spa.example.com")],
            vec![
                HOST,
                ("sec-fetch-site", "same-site"),
                ("origin", "https://spa.example.com"),
            ],
            vec![
                HOST,
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://spa.example.com"),
            ],
        ] {
            assert_eq!(decide("POST", &headers, &trusted), Ok(()), "{headers:?}");
        }
        for headers in [
            vec![HOST, ("origin", "http://spa.example.com")],
            vec![HOST, ("origin", "https://spa.example.com:8443")],
            vec![
                HOST,
                ("sec-fetch-site", "same-site"),
                ("origin", "https://evil.test"),
            ],
            vec![HOST, ("sec-fetch-site", "same-site")],
        ] {
            assert!(decide("POST", &headers, &trusted).is_err(), "{headers:?}");
        }
    }

    #[test]
    fn trusted_origins_are_validated_and_normalised() {
        let normalised = |origin: &str| parse_trusted(origin).map(String::from);
        assert_eq!(
            normalised("https://App.Example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            normalised("HTTPS://app.example.com:443").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            normalised("http://127.0.0.1:3000").unwrap(),
            "http://127.0.0.1:3000"
        );
        assert_eq!(
            normalised("http://[::1]:8080").unwrap(),
            "http://[::1]:8080"
        );
        for bad in [
            "",
            "null",
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/app",
            "https://app.example.com?x=1",
            "https://app.example.com#top",
            "https://user:pw@app.example.com",
            "https://",
            "https://app.example.com:99999",
            "ftp://app.example.com",
            "chrome-extension://abcdef",
            " https://app.example.com",
            "https://app.example.com ",
            "https://app example.com",
            "https://*.example.com",
        ] {
            assert!(normalised(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_bad_origin_trusts_none_and_names_the_setting() {
        let mut settings = CrossOrigin::default();
        settings
            .trust("trusted_origin", ["https://a.example.com"])
            .unwrap();
        let error = settings
            .trust(
                "trusted_origins",
                ["https://b.example.com", "https://c.example.com/"],
            )
            .unwrap_err();
        assert_eq!(error.setting_name(), "trusted_origins");
        assert!(
            error.to_string().contains("https://c.example.com/"),
            "{error}"
        );
        assert_eq!(&*settings.trusted, [Box::from("https://a.example.com")]);
    }

    #[test]
    fn only_cookie_requests_are_checked_and_only_when_on() {
        let forged = request("POST", "/orders", &[HOST, ("sec-fetch-site", "cross-site")]);
        let mut settings = CrossOrigin::default();
        assert!(settings.refuses(CredentialSource::Cookie, &forged));
        assert!(!settings.refuses(CredentialSource::SessionToken, &forged));
        assert!(!settings.refuses(CredentialSource::Bearer, &forged));
        settings.set_enabled(false);
        assert!(!settings.refuses(CredentialSource::Cookie, &forged));
    }
}
