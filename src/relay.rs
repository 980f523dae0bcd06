//! Passing Kratos's `Set-Cookie` on to the browser: which of them, to whom, and how they join the
//! response.
//!
//! Kratos re-issues the session cookie on whoami when the one sent carries an older expiry than
//! the session's (after an extension, here or elsewhere: Kratos's `session/handler.go` `whoami`). Only the session cookie (by
//! the configured names) is passed on, only to a request that came with a cookie, and appended,
//! never replacing the response's own cookies.

use http::{header, HeaderMap, HeaderValue};

use crate::credentials::{CookieNames, Credential, CredentialSource};

/// The `Set-Cookie` headers worth passing to this caller: only for cookie credentials, and only
/// those that set one of the layer's session cookies.
pub(crate) fn relayable(
    credential: &Credential,
    mut set_cookies: Vec<HeaderValue>,
    cookie_names: &CookieNames,
) -> Vec<HeaderValue> {
    if set_cookies.is_empty() {
        return set_cookies;
    }
    if credential.source() != CredentialSource::Cookie {
        return Vec::new();
    }
    set_cookies.retain(|value| {
        value
            .to_str()
            .ok()
            .and_then(|text| text.split_once('='))
            .is_some_and(|(name, _)| cookie_names.matches(name.trim()))
    });
    set_cookies
}

/// Appends `Set-Cookie` headers (never replacing the response's own), and keeps shared caches
/// from storing a response that carries a session cookie: `Cache-Control: private` unless the
/// response already says how it may be cached.
pub(crate) fn append_set_cookies(headers: &mut HeaderMap, set_cookies: Vec<HeaderValue>) {
    if set_cookies.is_empty() {
        return;
    }
    for value in set_cookies {
        headers.append(header::SET_COOKIE, value);
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// axum's `IntoResponseParts` for a lifecycle answer with a `set_cookies: Vec<HeaderValue>`
/// field: returned with a response, it appends them (see [`append_set_cookies`]).
macro_rules! set_cookies_as_response_parts {
    ($answer:ty) => {
        #[cfg(feature = "axum")]
        impl axum_core::response::IntoResponseParts for $answer {
            type Error = std::convert::Infallible;

            fn into_response_parts(
                self,
                mut parts: axum_core::response::ResponseParts,
            ) -> Result<axum_core::response::ResponseParts, std::convert::Infallible> {
                crate::relay::append_set_cookies(parts.headers_mut(), self.set_cookies);
                Ok(parts)
            }
        }
    };
}
pub(crate) use set_cookies_as_response_parts;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_cookies_are_relayed_and_only_to_cookie_callers() {
        let names = CookieNames::default();
        let cookies = vec![
            HeaderValue::from_static("ory_kratos_session=new; Path=/; HttpOnly"),
            HeaderValue::from_static("tracking=1; Path=/"),
            HeaderValue::from_static("ory_session_slug=x; Path=/"),
            HeaderValue::from_static("garbage"),
        ];
        let cookie = Credential::cookie("ory_kratos_session", "old").unwrap();
        let kept = relayable(&cookie, cookies.clone(), &names);
        assert_eq!(kept, [cookies[0].clone(), cookies[2].clone()]);
        let token = Credential::session_token("ory_st_x").unwrap();
        assert!(relayable(&token, cookies, &names).is_empty());
    }

    #[test]
    fn set_cookies_append_and_mark_the_response_private() {
        let mut headers = HeaderMap::new();
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("app=1"));
        append_set_cookies(
            &mut headers,
            vec![HeaderValue::from_static("ory_kratos_session=v")],
        );
        assert_eq!(headers.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(headers[header::CACHE_CONTROL], "private");

        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        append_set_cookies(
            &mut headers,
            vec![HeaderValue::from_static("ory_kratos_session=v")],
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");

        let mut untouched = HeaderMap::new();
        append_set_cookies(&mut untouched, Vec::new());
        assert!(untouched.is_empty());
    }
}
