//! Helpers shared by `outcomes.rs`, `extractors.rs`, `tracing.rs`, `redaction.rs` and
//! `properties.rs`: a stand-in per test, a layer builder with a short Kratos deadline, an inner
//! service that records what reached it, small readers for responses, and (`capture`) a
//! subscriber that keeps what is logged.
//!
//! Each test file uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod capture;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::{Service, ServiceExt};
use tower_kratos::{
    testing::{KratosStandIn, TestSession},
    KratosLayer, KratosLayerBuilder, KratosSession, Outcome,
};

/// The layer's whoami deadline in these tests: short, so hang and delay tests end quickly.
pub const KRATOS_TIMEOUT: Duration = Duration::from_millis(300);

/// A guard for tests that could hang if the deadline were not enforced; far above
/// [`KRATOS_TIMEOUT`], so it only fires when the layer is broken.
pub const GUARD: Duration = Duration::from_secs(5);

/// A fresh stand-in on loopback.
pub async fn kratos() -> KratosStandIn {
    KratosStandIn::start()
        .await
        .expect("start the Kratos stand-in")
}

/// A layer builder for this stand-in with the short deadline.
pub fn builder(kratos: &KratosStandIn) -> KratosLayerBuilder {
    KratosLayer::builder(kratos.public_url()).request_timeout(KRATOS_TIMEOUT)
}

/// The default (required) layer for this stand-in.
pub fn layer(kratos: &KratosStandIn) -> KratosLayer {
    builder(kratos).build().expect("build the layer")
}

/// What one request carried into the inner service.
#[derive(Clone, Debug)]
pub struct Seen {
    pub session: Option<KratosSession>,
    pub outcome: Option<Outcome>,
}

/// An inner service that answers 200 `inner` and records the extensions each request carried.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The service to wrap in the layer.
    pub fn service(
        &self,
    ) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
           + Clone
           + Send
           + std::fmt::Debug
           + 'static {
        let seen = Arc::clone(&self.seen);
        tower::service_fn(move |request: Request<String>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Seen {
                        session: request.extensions().get::<KratosSession>().cloned(),
                        outcome: request.extensions().get::<Outcome>().cloned(),
                    });
                Ok::<_, Infallible>(Response::new("inner".to_owned()))
            }
        })
    }

    /// Everything that reached the inner service, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The only request that reached the inner service.
    pub fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "exactly one request reaches the inner service"
        );
        seen.into_iter().next().expect("one")
    }
}

/// A response with its body read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub extensions: http::Extensions,
    pub body: Bytes,
}

impl Answer {
    pub async fn read<B>(response: Response<B>) -> Self
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
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

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII header"))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

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

/// Sends one request through a fresh clone of `service`.
pub async fn send<S, B>(service: &S, request: Request<String>) -> Answer
where
    S: Service<Request<String>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service
        .clone()
        .oneshot(request)
        .await
        .expect("the layer answers with a response, never an error");
    Answer::read(response).await
}

/// `GET uri` with these headers.
pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<String> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(String::new()).expect("request")
}

/// `GET uri` carrying the session's token in `X-Session-Token`.
pub fn with_token(uri: &str, session: &TestSession) -> Request<String> {
    get(uri, &[("x-session-token", &session.token)])
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
