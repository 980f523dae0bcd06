//! The Kratos HTTP API over one pooled `reqwest` client.
//!
//! Every call has a hard deadline (enforced here, so it holds for a client the user supplied
//! too), never follows redirects (a 3xx from Kratos is a misconfiguration, and following it
//! would carry the credential elsewhere), and reads at most [`MAX_BODY_LEN`] bytes of an answer.

use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, StatusCode};
use reqwest::Url;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::{
    credentials::Credential,
    outcome::{AalRequired, Outcome, Unauthenticated, Unavailable},
    session::{KratosSession, Session},
};

/// The largest answer body read from Kratos. A whoami body is a few KiB; identities with large
/// traits stay far below this.
pub(crate) const MAX_BODY_LEN: usize = 1024 * 1024;

/// The header Kratos (with Ory Network's `cacheable_sessions`) uses to say how long an answer may
/// be cached.
pub(crate) const SESSION_CACHE_FOR: &str = "ory-session-cache-for";

/// The longest `Retry-After` taken from Kratos; a larger value is clamped so a bogus header
/// cannot tell clients to go away for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What whoami answered, with the caching hint that came with it.
#[derive(Debug)]
pub(crate) struct WhoamiAnswer {
    pub(crate) outcome: Outcome,
    /// `Ory-Session-Cache-For`, when Kratos sent it.
    pub(crate) cache_for: Option<Duration>,
    /// How long Kratos took.
    pub(crate) latency: Duration,
    /// The `Set-Cookie` headers of a 200: Kratos re-issues the session cookie when the one sent
    /// carries an older expiry than the session's (after an extension, API.md §a).
    pub(crate) set_cookies: Vec<HeaderValue>,
}

/// The Kratos public API as this crate uses it.
#[derive(Clone, Debug)]
pub(crate) struct KratosClient {
    http: reqwest::Client,
    whoami_url: Url,
    request_timeout: Duration,
}

impl KratosClient {
    pub(crate) fn new(http: reqwest::Client, public_url: &Url, request_timeout: Duration) -> Self {
        Self {
            http,
            whoami_url: join(public_url, "sessions/whoami"),
            request_timeout,
        }
    }

    /// `GET /sessions/whoami` with this credential alone.
    pub(crate) async fn whoami(
        &self,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
    ) -> WhoamiAnswer {
        let started = Instant::now();
        let call = self.whoami_inner(credential, request_id);
        let (outcome, cache_for, set_cookies) =
            match tokio::time::timeout(self.request_timeout, call).await {
                Ok(answer) => answer,
                Err(_elapsed) => (Outcome::Unavailable(Unavailable::Timeout), None, Vec::new()),
            };
        WhoamiAnswer {
            outcome,
            cache_for,
            latency: started.elapsed(),
            set_cookies,
        }
    }

    async fn whoami_inner(
        &self,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
    ) -> (Outcome, Option<Duration>, Vec<HeaderValue>) {
        let Some((name, value)) = credential.to_kratos_header() else {
            // Unreachable for credentials built by this crate (they are validated); refuse anyway.
            return (
                Outcome::Unauthenticated(Unauthenticated::Rejected),
                None,
                Vec::new(),
            );
        };
        let mut request = self
            .http
            .get(self.whoami_url.clone())
            .header(name, value)
            .header(header::ACCEPT, "application/json");
        if let Some(request_id) = request_id {
            request = request.header("x-request-id", request_id.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return (Outcome::Unavailable(classify(&error)), None, Vec::new()),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match read_body(response).await {
            Ok(body) => body,
            Err(unavailable) => return (Outcome::Unavailable(unavailable), None, Vec::new()),
        };
        let cache_for = parse_seconds(&headers, SESSION_CACHE_FOR);
        let outcome = interpret_whoami(status, &headers, &body);
        // Only a session's own cookie is worth passing on; whatever came with an error is not.
        let set_cookies = if matches!(outcome, Outcome::Authenticated(_)) {
            headers
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        (outcome, cache_for, set_cookies)
    }
}

/// Maps whoami's answer to an outcome, per API.md §a.
pub(crate) fn interpret_whoami(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
    match status {
        StatusCode::OK => match serde_json::from_slice::<Session>(body) {
            Ok(session) if !session.active => Outcome::Unauthenticated(Unauthenticated::Inactive),
            Ok(session) if !session.is_valid_at(OffsetDateTime::now_utc()) => {
                Outcome::Unauthenticated(Unauthenticated::Expired)
            }
            Ok(session) => Outcome::Authenticated(KratosSession::new(session.into())),
            Err(_) => Outcome::Unavailable(Unavailable::InvalidBody),
        },
        StatusCode::UNAUTHORIZED => Outcome::Unauthenticated(Unauthenticated::Rejected),
        StatusCode::FORBIDDEN => match aal_required(headers, body) {
            Some(step_up) => Outcome::AalRequired(step_up),
            None => Outcome::Unavailable(Unavailable::Status(status)),
        },
        // Ory's guidance is to prefer `x-ratelimit-reset` (API.md §f).
        StatusCode::TOO_MANY_REQUESTS => Outcome::Unavailable(Unavailable::RateLimited {
            retry_after: parse_seconds(headers, "x-ratelimit-reset")
                .or_else(|| parse_seconds(headers, "retry-after"))
                .map(|wait| wait.min(MAX_RETRY_AFTER)),
        }),
        other => Outcome::Unavailable(Unavailable::Status(other)),
    }
}

/// Kratos's error envelope, as far as this crate reads it.
#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    redirect_browser_to: Option<String>,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

const AAL2_REQUIRED: &str = "session_aal2_required";

fn aal_required(headers: &HeaderMap, body: &[u8]) -> Option<AalRequired> {
    let envelope: Option<ErrorEnvelope> = serde_json::from_slice(body).ok();
    let error = envelope
        .as_ref()
        .and_then(|envelope| envelope.error.as_ref());
    let id_in_body = error.and_then(|error| error.id.as_deref()) == Some(AAL2_REQUIRED);
    let id_in_header = headers
        .get("ory-error-id")
        .is_some_and(|value| value.as_bytes() == AAL2_REQUIRED.as_bytes());
    if !(id_in_body || id_in_header) {
        return None;
    }
    let from_details = || {
        error
            .and_then(|error| error.details.as_ref())
            .and_then(|details| details.get("redirect_browser_to"))
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    let redirect = envelope
        .as_ref()
        .and_then(|envelope| envelope.redirect_browser_to.clone())
        .or_else(from_details);
    Some(AalRequired::new(redirect))
}

/// Whole seconds from a header (`Retry-After`'s delta-seconds form, `Ory-Session-Cache-For`).
fn parse_seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, Unavailable> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_LEN as u64)
    {
        return Err(Unavailable::InvalidBody);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| classify(&error))? {
        if body.len() + chunk.len() > MAX_BODY_LEN {
            return Err(Unavailable::InvalidBody);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn classify(error: &reqwest::Error) -> Unavailable {
    if error.is_timeout() {
        Unavailable::Timeout
    } else {
        Unavailable::Transport
    }
}

/// `base` + `path`, keeping any path prefix `base` has (Kratos behind `/kratos/`, say).
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}/{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_prefixes() {
        let base = Url::parse("https://x.example/kratos/").unwrap();
        assert_eq!(
            join(&base, "sessions/whoami").as_str(),
            "https://x.example/kratos/sessions/whoami"
        );
        let base = Url::parse("http://127.0.0.1:4433").unwrap();
        assert_eq!(
            join(&base, "sessions/whoami").as_str(),
            "http://127.0.0.1:4433/sessions/whoami"
        );
    }

    fn outcome_of(status: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        interpret_whoami(StatusCode::from_u16(status).unwrap(), &map, body.as_bytes())
    }

    #[test]
    fn a_200_is_trusted_only_for_an_active_unexpired_session() {
        let fixture = include_str!("../tests/fixtures/whoami-docs-example.json");
        // The docs example expired in 2022: a 200 carrying it is not a session to serve.
        assert!(matches!(
            outcome_of(200, &[], fixture),
            Outcome::Unauthenticated(Unauthenticated::Expired)
        ));
        assert!(matches!(
            outcome_of(200, &[], r#"{"id":"s","active":false}"#),
            Outcome::Unauthenticated(Unauthenticated::Inactive)
        ));
        assert!(matches!(
            outcome_of(
                200,
                &[],
                r#"{"id":"s","active":true,"expires_at":"2999-01-01T00:00:00Z"}"#
            ),
            Outcome::Authenticated(_)
        ));
        for garbage in ["", "{", "[]", r#"{"active":true}"#] {
            assert!(
                matches!(
                    outcome_of(200, &[], garbage),
                    Outcome::Unavailable(Unavailable::InvalidBody)
                ),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn statuses_map_to_outcomes_never_collapsed() {
        assert!(matches!(
            outcome_of(401, &[], "{}"),
            Outcome::Unauthenticated(Unauthenticated::Rejected)
        ));
        match outcome_of(429, &[("retry-after", "12")], "") {
            Outcome::Unavailable(unavailable) => {
                assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(12)))
            }
            other => panic!("unexpected {other:?}"),
        }
        // Ory Network's x-ratelimit-reset (seconds until the window resets) wins over Retry-After.
        match outcome_of(
            429,
            &[("retry-after", "12"), ("x-ratelimit-reset", "3")],
            "",
        ) {
            Outcome::Unavailable(unavailable) => {
                assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(3)))
            }
            other => panic!("unexpected {other:?}"),
        }
        match outcome_of(
            429,
            &[("retry-after", "12"), ("x-ratelimit-reset", "soon")],
            "",
        ) {
            Outcome::Unavailable(unavailable) => {
                assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(12)))
            }
            other => panic!("unexpected {other:?}"),
        }
        // An HTTP-date Retry-After is not understood: the default applies later.
        match outcome_of(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], "") {
            Outcome::Unavailable(unavailable) => assert_eq!(unavailable.retry_after(), None),
            other => panic!("unexpected {other:?}"),
        }
        for status in [500, 502, 503, 302, 404, 400] {
            assert!(
                matches!(
                    outcome_of(status, &[], ""),
                    Outcome::Unavailable(Unavailable::Status(_))
                ),
                "{status}"
            );
        }
        // The Ory-Error-Id header alone identifies a step-up.
        assert!(matches!(
            outcome_of(
                403,
                &[("ory-error-id", "session_aal2_required")],
                "not json"
            ),
            Outcome::AalRequired(AalRequired {
                redirect_browser_to: None,
                ..
            })
        ));
    }

    #[test]
    fn step_up_is_recognised_from_the_real_body() {
        let body = br#"{"error":{"id":"session_aal2_required","code":403,"status":"Forbidden","details":{"redirect_browser_to":"https://k/self-service/login/browser?aal=aal2"},"message":"m"},"redirect_browser_to":"https://k/self-service/login/browser?aal=aal2"}"#;
        match interpret_whoami(StatusCode::FORBIDDEN, &HeaderMap::new(), body) {
            Outcome::AalRequired(step_up) => assert_eq!(
                step_up.redirect_browser_to.as_deref(),
                Some("https://k/self-service/login/browser?aal=aal2")
            ),
            other => panic!("unexpected {other:?}"),
        }
        let other_403 = br#"{"error":{"code":403,"message":"nope"}}"#;
        assert!(matches!(
            interpret_whoami(StatusCode::FORBIDDEN, &HeaderMap::new(), other_403),
            Outcome::Unavailable(Unavailable::Status(StatusCode::FORBIDDEN))
        ));
    }
}
