//! Building the stand-in's answers: Kratos's JSON and herodot errors, the session cookie as
//! Kratos writes it, the login page's HTML; and reading a query string as Go does.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use time::OffsetDateTime;

use super::credentials::lossy;
use super::json::KratosError;
use super::shared::Config;

/// What the server sends back.
pub(crate) type Reply = Response<Full<Bytes>>;

/// A JSON reply.
pub(crate) fn json_reply(status: StatusCode, body: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// A herodot error reply, with the request's `X-Request-ID` in the body and `Ory-Error-Id` when
/// the error has an id.
pub(crate) fn error(err: &KratosError, parts: &Parts) -> Reply {
    let request_id = parts
        .headers
        .get("x-request-id")
        .map(|v| lossy(v.as_bytes()));
    let mut reply = if matches!(err.status.as_u16(), 204 | 304) {
        let mut reply = Response::new(Full::new(Bytes::new()));
        *reply.status_mut() = err.status;
        reply
    } else {
        json_reply(err.status, err.body(request_id.as_deref()))
    };
    if let Some(id) = err.id {
        insert(&mut reply, "ory-error-id", id);
    }
    reply
}

pub(crate) fn no_content() -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    reply
}

/// Sets a header, skipping values that are not valid header text (a cookie name configured with
/// odd characters must not turn into a panic).
pub(crate) fn insert(reply: &mut Reply, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        reply
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// The `Set-Cookie` value Kratos writes through gorilla/sessions and Go's `http.Cookie`.
pub(crate) fn cookie_header(
    config: &Config,
    value: &str,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> String {
    let mut cookie = format!("{}={value}; Path=/", config.cookie_name);
    if let Some(date) = http_date(expires_at) {
        cookie.push_str("; Expires=");
        cookie.push_str(&date);
    }
    let max_age = (expires_at - now).whole_seconds().max(0);
    cookie.push_str(&format!("; Max-Age={max_age}; HttpOnly"));
    if config.tls {
        cookie.push_str("; Secure");
    }
    cookie.push_str("; SameSite=Lax");
    cookie
}

/// `Mon, 02 Jan 2006 15:04:05 GMT`; `None` where Go omits `Expires` (years outside 1601..=9999).
pub(crate) fn http_date(t: OffsetDateTime) -> Option<String> {
    if !(1601..=9999).contains(&t.year()) {
        return None;
    }
    let weekday = t.weekday().to_string();
    let month = t.month().to_string();
    Some(format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        weekday.get(..3)?,
        t.day(),
        month.get(..3)?,
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// The `Set-Cookie` that clears the session cookie, as gorilla/sessions writes it for a
/// deleted session (`MaxAge: -1`).
pub(crate) fn clearing_cookie_header(config: &Config) -> String {
    let mut cookie = format!(
        "{}=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly",
        config.cookie_name
    );
    if config.tls {
        cookie.push_str("; Secure");
    }
    cookie.push_str("; SameSite=Lax");
    cookie
}

/// An HTML page: not cached, not framed, no scripts or other resources.
pub(crate) fn html_reply(status: StatusCode, title: &str, body: &str) -> Reply {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body>\n<h1>{}</h1>\n{body}\n<p><small>tower-kratos: the Kratos stand-in's demo login \
         (not Kratos's UI)</small></p>\n</body></html>\n",
        escape_html(title),
        escape_html(title),
    );
    let mut reply = Response::new(Full::new(Bytes::from(page)));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    reply
}

/// A 303 to `location`: a URL the stand-in built or validated, so always header text; one that
/// is not gives a 500 rather than a panic.
pub(crate) fn see_other(location: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    match HeaderValue::from_str(location) {
        Ok(value) => {
            *reply.status_mut() = StatusCode::SEE_OTHER;
            reply.headers_mut().insert(LOCATION, value);
        }
        Err(_) => *reply.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    reply
}

/// Text for HTML element content and attribute values.
pub(crate) fn escape_html(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether the request asks for JSON, as Kratos's `x.IsJSONRequest`: an `Accept` or a
/// `Content-Type` naming `application/json`.
pub(crate) fn wants_json(parts: &Parts) -> bool {
    [http::header::ACCEPT, CONTENT_TYPE].iter().any(|name| {
        parts
            .headers
            .get_all(name)
            .iter()
            .any(|value| lossy(value.as_bytes()).contains("application/json"))
    })
}

/// `key=value` pairs of a query string, percent-decoded (`+` is a space).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(k, true).into_owned(),
                percent_decode(v, true).into_owned(),
            )
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` when `plus_is_space`); malformed escapes stay as they are.
pub(crate) fn percent_decode(input: &str, plus_is_space: bool) -> Cow<'_, str> {
    if !(input.contains('%') || plus_is_space && input.contains('+')) {
        return Cow::Borrowed(input);
    }
    let bytes = input.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    // Two hex digits make a value below 256.
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html("plain"), "plain");
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn percent_decoding_never_panics() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%zz%", false), "%zz%");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
    }

    #[test]
    fn http_dates_look_like_go() {
        let t = OffsetDateTime::from_unix_timestamp(1_136_214_245).expect("t");
        assert_eq!(
            http_date(t).as_deref(),
            Some("Mon, 02 Jan 2006 15:04:05 GMT")
        );
    }
}
