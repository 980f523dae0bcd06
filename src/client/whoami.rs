//! `GET /sessions/whoami`: the one call a cache miss makes, admitted by the [`Admission`], and
//! what its answer means (Kratos's `session/handler.go` `whoami`).

use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, StatusCode};
use time::OffsetDateTime;

use super::{
    exchange::{aal_required, exchange, parse_seconds, retry_after, MAX_BODY_LEN},
    Correlation, KratosClient,
};
use crate::{
    credentials::Credential,
    outcome::{Outcome, Unauthenticated, Unavailable},
    session::{KratosSession, Session},
};

#[cfg(doc)]
use super::Admission;

/// The header Kratos (with Ory Network's `cacheable_sessions`) uses to say how long an answer may
/// be cached.
const SESSION_CACHE_FOR: &str = "ory-session-cache-for";

/// What whoami answered, with the caching hint that came with it.
#[derive(Debug)]
pub(crate) struct WhoamiAnswer {
    pub(crate) outcome: Outcome,
    /// `Ory-Session-Cache-For`, when Kratos sent it.
    pub(crate) cache_for: Option<Duration>,
    /// When the call was sent (or refused): a revocation made after this instant may not be
    /// reflected in the answer.
    pub(crate) asked_at: Instant,
    /// The `Set-Cookie` headers of a 200: Kratos re-issues the session cookie when the one sent
    /// carries an older expiry than the session's (after an extension, Kratos's `session/handler.go` `whoami`).
    pub(crate) set_cookies: Vec<HeaderValue>,
}

impl WhoamiAnswer {
    fn unanswered(outcome: Outcome, asked_at: Instant) -> Self {
        Self {
            outcome,
            cache_for: None,
            asked_at,
            set_cookies: Vec::new(),
        }
    }
}

impl KratosClient {
    /// `GET /sessions/whoami` with this credential alone, when the admission lets it go (else
    /// the answer is [`Unavailable`]). `fresh` asks Ory Network's session cache ("Edge
    /// Sessions") for a fresh read (`Cache-Control: max-age=0`, Ory's docs, `concepts/cache.mdx`): for a session this
    /// process has just revoked or extended, whose cached answer would be stale.
    pub(crate) async fn whoami(
        &self,
        credential: &Credential,
        correlation: &Correlation,
        fresh: bool,
    ) -> WhoamiAnswer {
        let admission = &self.inner.admission;
        let permit = match admission.enter().await {
            Ok(permit) => permit,
            Err(refused) => {
                return WhoamiAnswer::unanswered(Outcome::Unavailable(refused), Instant::now())
            }
        };
        let asked_at = Instant::now();
        let in_flight = crate::metrics::whoami_in_flight();
        let mut answer = self.ask(credential, correlation, fresh, asked_at).await;
        crate::metrics::whoami_done(&answer.outcome, asked_at.elapsed());
        drop(in_flight);
        admission.record(permit, &mut answer.outcome);
        tracing::debug!(
            outcome = answer.outcome.kind(),
            kratos_latency_us = asked_at.elapsed().as_micros() as u64,
            "whoami answered"
        );
        answer
    }

    async fn ask(
        &self,
        credential: &Credential,
        correlation: &Correlation,
        fresh: bool,
        asked_at: Instant,
    ) -> WhoamiAnswer {
        let Some((name, value)) = credential.to_kratos_header() else {
            // Unreachable for credentials built by this crate (they are validated); refuse anyway.
            let refused = Outcome::Unauthenticated(Unauthenticated::Rejected);
            return WhoamiAnswer::unanswered(refused, asked_at);
        };
        let inner = &self.inner;
        let request = inner
            .http
            .get(inner.whoami_url.clone())
            .header(name, value)
            .header(header::ACCEPT, "application/json");
        let mut request = correlation.apply(request);
        if fresh {
            request = request.header(header::CACHE_CONTROL, "max-age=0");
        }
        let answer = match exchange(request, inner.request_timeout, MAX_BODY_LEN).await {
            Ok(answer) => answer,
            Err(unavailable) => {
                return WhoamiAnswer::unanswered(Outcome::Unavailable(unavailable), asked_at)
            }
        };
        let outcome = interpret_whoami(answer.status, &answer.headers, &answer.body);
        if let Some(template) = &inner.tokenize_as {
            self.check_tokenized(template, answer.status, &outcome);
        }
        // Only a session's own cookie is worth passing on; whatever came with an error is not.
        // The values are session secrets: marked sensitive, `Debug` shows none of them.
        let set_cookies = if matches!(outcome, Outcome::Authenticated(_)) {
            answer
                .headers
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|value| {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    value
                })
                .collect()
        } else {
            Vec::new()
        };
        WhoamiAnswer {
            outcome,
            cache_for: parse_seconds(&answer.headers, SESSION_CACHE_FOR),
            asked_at,
            set_cookies,
        }
    }
}

impl KratosClient {
    /// With `tokenize_as`: Kratos's 400 for an unknown template, or a session without the JWT
    /// (a Kratos older than v1.1 ignores the parameter), is the operator's to fix, said at
    /// `error` (rate-limited). The 400 stays a 503 for the caller, whose session may be fine.
    fn check_tokenized(&self, template: &str, status: StatusCode, outcome: &Outcome) {
        let problem = match outcome {
            _ if status == StatusCode::BAD_REQUEST => {
                "Kratos has no such tokenizer template (its 400): set \
                 session.whoami.tokenizer.templates in Kratos's configuration, or fix tokenize_as"
            }
            Outcome::Authenticated(session) if session.tokenized.is_none() => {
                "Kratos answered a session without its JWT: tokenize_as needs Kratos v1.1 or later"
            }
            _ => return,
        };
        if let Some(left_out) = self.inner.warnings.admit(("whoami", "tokenize_as")) {
            tracing::error!(template, left_out_since_last = left_out, "{problem}");
        }
    }
}

/// Maps whoami's answer to an outcome, per Kratos's `session/handler.go` `whoami`.
fn interpret_whoami(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
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
        // Kratos's Go server, or a proxy, refusing the lookup's headers: the credential cannot
        // be checked, which says nothing about Kratos's health.
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            Outcome::Unauthenticated(Unauthenticated::TooLarge)
        }
        StatusCode::FORBIDDEN => match aal_required(headers, body) {
            Some(step_up) => Outcome::AalRequired(step_up),
            None => Outcome::Unavailable(Unavailable::Status(status)),
        },
        // Ory's guidance is to prefer `x-ratelimit-reset` (Ory's docs, `concepts/cache.mdx`).
        StatusCode::TOO_MANY_REQUESTS => Outcome::Unavailable(Unavailable::RateLimited {
            retry_after: retry_after(headers, &["x-ratelimit-reset", "retry-after"]),
        }),
        other => Outcome::Unavailable(Unavailable::Status(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::AalRequired;

    #[test]
    fn a_200_is_trusted_only_for_an_active_unexpired_session() {
        let fixture = include_str!("../../tests/fixtures/whoami-docs-example.json");
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
}
