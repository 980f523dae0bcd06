//! The credentials a request presents, read the way Kratos's `extractToken` reads them.
//!
//! This module only parses headers; which credential wins depends on whether the cookie decodes,
//! which only the store knows (`Store::extract`).

use std::borrow::Cow;

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

/// Every credential in a request, before precedence is applied.
#[derive(Debug, Default)]
pub(crate) struct Presented {
    /// A non-empty `X-Session-Token` (the first such header). When present, Kratos uses it and
    /// nothing else.
    pub(crate) session_token: Option<String>,
    /// The value of the first cookie named like the session cookie, across all `Cookie` headers.
    pub(crate) cookie: Option<String>,
    /// The token of `Authorization: <bearer> <token>`, split on single spaces into exactly two
    /// parts with the scheme compared case-insensitively, as Kratos's `bearerTokenFromRequest`.
    pub(crate) bearer: Option<String>,
}

impl Presented {
    pub(crate) fn from_headers(headers: &HeaderMap, cookie_name: &str) -> Self {
        let session_token = headers
            .get("x-session-token")
            .map(|v| lossy(v.as_bytes()).into_owned())
            .filter(|t| !t.is_empty());
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .find_map(|header| cookie_value(&lossy(header.as_bytes()), cookie_name));
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer_token(&lossy(v.as_bytes())))
            .filter(|t| !t.is_empty());
        Self {
            session_token,
            cookie,
            bearer,
        }
    }
}

/// Header bytes as text. Go treats header values as byte strings, so invalid UTF-8 is kept (lossily)
/// rather than refused: it simply never matches a credential.
pub(crate) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The value of cookie `name` in one `Cookie` header (`a=1; b=2`), without surrounding quotes.
fn cookie_value(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.to_owned())
    })
}

/// Kratos: `strings.Split(header, " ")`, exactly two parts, `strings.EqualFold(parts[0], "bearer")`.
pub(crate) fn bearer_token(header: &str) -> Option<String> {
    let mut parts = header.split(' ');
    let (scheme, token) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
                HeaderValue::from_str(value).expect("a valid header value"),
            );
        }
        map
    }

    #[test]
    fn bearer_needs_exactly_one_space() {
        assert_eq!(bearer_token("Bearer tok").as_deref(), Some("tok"));
        assert_eq!(bearer_token("bEaReR tok").as_deref(), Some("tok"));
        assert_eq!(bearer_token("Bearer  tok"), None);
        assert_eq!(bearer_token("Bearer tok x"), None);
        assert_eq!(bearer_token("Basic tok"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn first_cookie_with_the_name_wins_across_headers() {
        let h = headers(&[
            ("cookie", "other=1; sess=\"first\""),
            ("cookie", "sess=second"),
        ]);
        let p = Presented::from_headers(&h, "sess");
        assert_eq!(p.cookie.as_deref(), Some("first"));
    }

    #[test]
    fn empty_values_are_no_credential() {
        let h = headers(&[("x-session-token", ""), ("authorization", "Bearer ")]);
        let p = Presented::from_headers(&h, "sess");
        assert!(p.session_token.is_none() && p.bearer.is_none() && p.cookie.is_none());
    }
}
