//! gRPC clients refused in gRPC's own terms: a trailers-only answer (HTTP 200, the request's gRPC
//! content type, `grpc-status` and `grpc-message` in the one header block, no body), as
//! `doc/PROTOCOL-HTTP2.md` allows for an immediate error. gRPC-Web's trailers-only answer is the
//! same (`doc/PROTOCOL-WEB.md`: "no change to the gRPC protocol spec").
//!
//! Never an HTTP 401, 403 or 503, and never a redirect: a gRPC client reads those as a protocol
//! failure with a guessed status, and loses the reason.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use crate::response::Refusal;
use bytes::Bytes;
use http::request::Parts;

/// The metadata entry carrying Kratos's step-up page (`redirect_browser_to`) on a
/// `PERMISSION_DENIED` answer.
pub const REDIRECT_BROWSER_TO: &str = "kratos-redirect-browser-to";

/// The metadata entry carrying, on an `UNAVAILABLE` answer, how many seconds to wait before
/// trying again (as HTTP's `Retry-After`).
pub const RETRY_AFTER: &str = "retry-after";

/// The metadata entry gRPC clients with a retry policy honour: how many milliseconds to wait
/// before retrying (gRPC's A6 retry design).
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// The gRPC status code for a refusal's HTTP status.
pub(crate) fn code_for(status: StatusCode) -> u16 {
    match status {
        StatusCode::OK => 0,
        StatusCode::BAD_REQUEST => 3,          // INVALID_ARGUMENT
        StatusCode::NOT_FOUND => 5,            // NOT_FOUND
        StatusCode::FORBIDDEN => 7,            // PERMISSION_DENIED
        StatusCode::TOO_MANY_REQUESTS => 8,    // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        StatusCode::UNAUTHORIZED => 16,        // UNAUTHENTICATED
        _ => 13,                               // INTERNAL
    }
}

/// The request's content type when it is gRPC's (`application/grpc`, `application/grpc+…`) or
/// gRPC-Web's (`application/grpc-web…`): the content type to answer with.
pub(crate) fn grpc_content_type(request: &Parts) -> Option<&HeaderValue> {
    let value = request.headers.get(header::CONTENT_TYPE)?;
    let media = value.as_bytes();
    let grpc = b"application/grpc";
    let is_grpc = media.len() >= grpc.len()
        && media[..grpc.len()].eq_ignore_ascii_case(grpc)
        && matches!(media.get(grpc.len()), None | Some(b'+' | b'-' | b';'));
    is_grpc.then_some(value)
}

/// The trailers-only answer for a refusal, in the request's gRPC content type.
pub(crate) fn trailers_only(refusal: &dyn Refusal, content_type: &HeaderValue) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, answer_content_type(content_type));
    headers.insert(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from(code_for(refusal.status())),
    );
    if let Ok(message) = HeaderValue::from_str(&percent_encode(&refusal.reason())) {
        headers.insert(HeaderName::from_static("grpc-message"), message);
    }
    for (name, value) in metadata(refusal) {
        headers.insert(name, value);
    }
    response
}

/// The metadata entries of a refusal: the step-up page, the retry delay.
pub(crate) fn metadata(refusal: &dyn Refusal) -> Vec<(HeaderName, HeaderValue)> {
    let mut entries = Vec::new();
    if let Some(url) = refusal.redirect_browser_to() {
        if let Ok(value) = HeaderValue::from_str(url) {
            entries.push((HeaderName::from_static(REDIRECT_BROWSER_TO), value));
        }
    }
    if let Some(wait) = refusal.retry_after() {
        entries.push((
            HeaderName::from_static(RETRY_AFTER),
            HeaderValue::from(seconds_rounded_up(wait)),
        ));
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        entries.push((
            HeaderName::from_static(RETRY_PUSHBACK_MS),
            HeaderValue::from(millis),
        ));
    }
    entries
}

fn seconds_rounded_up(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// gRPC answers `application/grpc` to any `application/grpc+…` request; gRPC-Web keeps its own
/// type (`application/grpc-web+proto`, `application/grpc-web-text`), which tells the client how
/// the body would be encoded.
fn answer_content_type(request: &HeaderValue) -> HeaderValue {
    let web = request
        .as_bytes()
        .get(..b"application/grpc-web".len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"application/grpc-web"));
    if web {
        request.clone()
    } else {
        HeaderValue::from_static("application/grpc")
    }
}

/// `grpc-message` is percent-encoded: every byte outside visible ASCII and space, and `%`
/// itself, as `%XX` of its UTF-8 (`doc/PROTOCOL-HTTP2.md`).
pub(crate) fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7E).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{AalRequired, Outcome, Unavailable};

    fn request(content_type: &str) -> Parts {
        http::Request::post("/pkg.Service/Method")
            .header("content-type", content_type)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn only_grpc_content_types_are_grpc() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc-web",
            "application/grpc-web-text+proto",
        ] {
            assert!(grpc_content_type(&request(grpc)).is_some(), "{grpc}");
        }
        for other in [
            "application/json",
            "application/grpcx",
            "text/html",
            "application/gr",
        ] {
            assert!(grpc_content_type(&request(other)).is_none(), "{other}");
        }
    }

    #[test]
    fn each_refusal_has_its_code_and_metadata() {
        let grpc = HeaderValue::from_static("application/grpc+proto");
        let answer = |outcome: Outcome| trailers_only(&outcome, &grpc);

        let anonymous = answer(Outcome::Anonymous);
        assert_eq!(anonymous.status(), StatusCode::OK);
        assert_eq!(anonymous.headers()["content-type"], "application/grpc");
        assert_eq!(anonymous.headers()["grpc-status"], "16");
        assert!(anonymous.body().is_empty());

        let step_up = answer(Outcome::AalRequired(AalRequired::new(Some(
            "https://k/self-service/login/browser?aal=aal2".into(),
        ))));
        assert_eq!(step_up.headers()["grpc-status"], "7");
        assert_eq!(
            step_up.headers()[REDIRECT_BROWSER_TO],
            "https://k/self-service/login/browser?aal=aal2"
        );

        let down = answer(Outcome::Unavailable(Unavailable::BackingOff {
            retry_after: Duration::from_millis(2500),
        }));
        assert_eq!(down.headers()["grpc-status"], "14");
        assert_eq!(down.headers()[RETRY_AFTER], "3");
        assert_eq!(down.headers()[RETRY_PUSHBACK_MS], "2500");

        let forged = answer(Outcome::CrossOriginRequest);
        assert_eq!(forged.headers()["grpc-status"], "7");
        assert!(forged.headers().get(REDIRECT_BROWSER_TO).is_none());

        let web = trailers_only(
            &Outcome::Anonymous,
            &HeaderValue::from_static("application/grpc-web-text+proto"),
        );
        assert_eq!(
            web.headers()["content-type"],
            "application/grpc-web-text+proto"
        );
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("plain text: ok"), "plain text: ok");
        assert_eq!(percent_encode("100% sûr\n"), "100%25 s%C3%BBr%0A");
    }
}
