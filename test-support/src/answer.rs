//! Sending a request through a service and reading what it answered: [`send`], the requests it
//! takes ([`get`], [`with_token`]), the [`Answer`], and assertions on the layer's answers.

use std::{fmt::Debug, future::Future};

use bytes::Bytes;
use http::{header, Extensions, HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kratos_stand_in::TestSession;
use serde_json::Value;
use tower::{Service, ServiceExt};
use tower_kratos::Outcome;

use super::IDENTITY_HEADER;

/// A response with its body read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub extensions: Extensions,
    pub body: Bytes,
}

impl Answer {
    /// Reads the whole of `response`.
    pub async fn read<B>(response: Response<B>) -> Self
    where
        B: http_body::Body,
        B::Error: Debug,
    {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("read the body").to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            extensions: parts.extensions,
            body,
        }
    }

    /// A response header as text.
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII header"))
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.text()))
    }

    /// The outcome the layer attached to a rejection.
    pub fn outcome(&self) -> &Outcome {
        self.extensions
            .get::<Outcome>()
            .expect("the outcome is attached to the rejection")
    }

    /// A Kratos-style JSON error with this code, never cached by anyone.
    pub fn assert_json_error(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.header(header::CONTENT_TYPE), Some("application/json"));
        assert_eq!(self.header(header::CACHE_CONTROL), Some("no-store"));
        let body = self.json();
        assert_eq!(body["error"]["code"], status.as_u16(), "{body}");
        assert_eq!(
            body["error"]["status"],
            status.canonical_reason().expect("a known status"),
            "{body}"
        );
        assert!(body["error"]["message"].is_string(), "{body}");
        body
    }

    /// Every header value and the body, for "the secret is nowhere" checks.
    pub fn everything(&self) -> String {
        let mut all = String::from_utf8_lossy(&self.body).into_owned();
        for (name, value) in &self.headers {
            all.push_str(&format!(
                "\n{name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        all
    }
}

/// Sends one request through a fresh clone of `service` and reads the answer. The clone is
/// taken before the future starts, so the future borrows nothing and can be spawned.
pub fn send<S, B>(service: &S, request: Request<String>) -> impl Future<Output = Answer>
where
    S: Service<Request<String>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: http_body::Body,
    B::Error: Debug,
{
    let service = service.clone();
    async move {
        let response = service
            .oneshot(request)
            .await
            .expect("the layer answers with a response, never an error");
        Answer::read(response).await
    }
}

/// `GET uri` with these headers.
pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<String> {
    with_headers(Request::get(uri), headers)
}

/// `POST uri` with these headers and no body.
pub fn post(uri: &str, headers: &[(&str, &str)]) -> Request<String> {
    with_headers(Request::post(uri), headers)
}

fn with_headers(mut request: http::request::Builder, headers: &[(&str, &str)]) -> Request<String> {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(String::new()).expect("request")
}

/// The session's token as request headers (`X-Session-Token`), for the lifecycle helpers.
pub fn token_headers(session: &TestSession) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-session-token",
        session.token.parse().expect("a token header"),
    );
    headers
}

/// `GET uri` carrying the session's token in `X-Session-Token`.
pub fn with_token(uri: &str, session: &TestSession) -> Request<String> {
    get(uri, &[("x-session-token", &session.token)])
}

/// Asserts a 200 that [`super::echo_session`] answered for this session.
#[track_caller]
pub fn assert_session(answer: &Answer, session_id: &str, identity_id: &str) {
    assert_eq!(answer.status, StatusCode::OK, "body: {}", answer.text());
    assert_eq!(answer.text(), session_id, "the handler got another session");
    assert_eq!(answer.header(IDENTITY_HEADER), Some(identity_id));
}

/// Asserts the layer's 401: Kratos-style JSON, never cached, with its outcome attached.
#[track_caller]
pub fn assert_unauthorized(answer: &Answer) {
    answer.assert_json_error(StatusCode::UNAUTHORIZED);
    answer.outcome();
}

/// Asserts the layer's 503 as it crosses the wire: Kratos-style JSON, never cached, with a
/// usable `Retry-After`.
#[track_caller]
pub fn assert_503_with_retry_after(answer: &Answer) {
    answer.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = answer
        .header(header::RETRY_AFTER)
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
}

/// Asserts the layer's 503 ([`assert_503_with_retry_after`]) with an `Unavailable` outcome.
#[track_caller]
pub fn assert_unavailable(answer: &Answer) {
    assert_503_with_retry_after(answer);
    assert!(
        matches!(answer.outcome(), Outcome::Unavailable(_)),
        "{:?}",
        answer.outcome()
    );
}

/// The `return_to` of a redirect's `Location`, and the location without it.
pub fn split_return_to(location: &str) -> (reqwest::Url, Option<String>) {
    let mut url = reqwest::Url::parse(location).expect("an absolute Location");
    let mut return_to = None;
    let others: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(key, value)| {
            if key == "return_to" {
                assert!(return_to.is_none(), "one return_to in {location}");
                return_to = Some(value.into_owned());
                None
            } else {
                Some((key.into_owned(), value.into_owned()))
            }
        })
        .collect();
    url.set_query(None);
    if !others.is_empty() {
        url.query_pairs_mut().extend_pairs(others);
    }
    (url, return_to)
}
