//! Helpers for the layer's integration tests (`credentials`, `cache`, `hyper`, `https`): the app
//! under test (the layer in front of a handler that echoes the session it was given), sending a
//! request through it, and reading what the Kratos stand-in received.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Extensions, HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_kratos::testing::{Endpoint, KratosStandIn};
use tower_kratos::{KratosLayer, KratosSession, ResponseBody};

/// The response header in which the handler reports the identity of the session it was given.
pub const IDENTITY_HEADER: &str = "x-test-identity-id";

/// The layer in front of [`echo_session`], boxed so tests can clone it into tasks.
pub type App = BoxCloneService<Request<String>, Response<ResponseBody<String>>, Infallible>;

/// The handler behind the layer: 200 with the session id as the body and the identity id in
/// [`IDENTITY_HEADER`]; 500 if it was called without a session (which the required layer must
/// never allow).
pub async fn echo_session(request: Request<String>) -> Result<Response<String>, Infallible> {
    let response = match request.extensions().get::<KratosSession>() {
        Some(session) => Response::builder()
            .header(IDENTITY_HEADER, session.identity_id().unwrap_or_default())
            .body(session.id.clone()),
        None => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body("the handler ran without a session".to_owned()),
    };
    Ok(response.expect("a valid response"))
}

/// `layer` in front of [`echo_session`].
pub fn app(layer: KratosLayer) -> App {
    BoxCloneService::new(ServiceBuilder::new().layer(layer).service_fn(echo_session))
}

/// A layer with every default, for this stand-in.
pub fn default_layer(kratos: &KratosStandIn) -> KratosLayer {
    KratosLayer::builder(kratos.public_url())
        .build()
        .expect("layer")
}

/// The app with a default layer for this stand-in.
pub fn default_app(kratos: &KratosStandIn) -> App {
    app(default_layer(kratos))
}

/// A response, collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub extensions: Extensions,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII header"))
    }

    /// The outcome the layer attached to a rejection.
    pub fn outcome(&self) -> Option<&tower_kratos::Outcome> {
        self.extensions.get::<tower_kratos::Outcome>()
    }
}

/// Sends `request` through `app` (a fresh clone, `oneshot`) and collects the response. The clone
/// is taken before the future starts, so the future is `Send` and can be spawned.
pub fn send(app: &App, request: Request<String>) -> impl Future<Output = Reply> + Send {
    let service = app.clone();
    async move {
        let response = service.oneshot(request).await.expect("infallible");
        collect(response).await
    }
}

/// Collects a response the app returned.
pub async fn collect(response: Response<ResponseBody<String>>) -> Reply {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("infallible body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        extensions: parts.extensions,
        body: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
    }
}

/// `GET /` with these headers.
pub fn get(headers: &[(&str, &str)]) -> Request<String> {
    let mut request = Request::get("/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(String::new()).expect("request")
}

/// `GET /` with `X-Session-Token: token`.
pub fn with_token(token: &str) -> Request<String> {
    get(&[("x-session-token", token)])
}

/// Asserts a 200 that the handler answered for this session.
#[track_caller]
pub fn assert_session(reply: &Reply, session_id: &str, identity_id: &str) {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    assert_eq!(reply.body, session_id, "the handler got another session");
    assert_eq!(reply.header(IDENTITY_HEADER), Some(identity_id));
}

/// Asserts the layer's 401 JSON.
#[track_caller]
pub fn assert_unauthorized(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "body: {}",
        reply.body
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["error"]["code"], 401);
    assert!(
        reply.outcome().is_some(),
        "a rejection carries its outcome in the response extensions"
    );
}

/// Asserts the layer's 503 JSON with a usable `Retry-After`.
#[track_caller]
pub fn assert_unavailable(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "body: {}",
        reply.body
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["error"]["code"], 503);
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert!(matches!(
        reply.outcome(),
        Some(tower_kratos::Outcome::Unavailable(_))
    ));
}

/// The headers of the `index`-th whoami Kratos received.
pub fn whoami_headers(kratos: &KratosStandIn, index: usize) -> HeaderMap {
    let requests = kratos.requests(Endpoint::Whoami);
    requests
        .get(index)
        .unwrap_or_else(|| panic!("whoami #{index} was not received ({} were)", requests.len()))
        .headers
        .clone()
}

/// All values of one header, as text.
pub fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().expect("ASCII header").to_owned())
        .collect()
}

/// Kratos received exactly this token, as `X-Session-Token`, and no other credential.
#[track_caller]
pub fn assert_kratos_got_token_only(headers: &HeaderMap, token: &str) {
    assert_eq!(values(headers, "x-session-token"), [token]);
    assert_eq!(values(headers, "cookie"), Vec::<String>::new());
    assert_eq!(values(headers, "authorization"), Vec::<String>::new());
}

/// Kratos received exactly one `Cookie` header, `name=value`, and no other credential.
#[track_caller]
pub fn assert_kratos_got_cookie_only(headers: &HeaderMap, name_value: &str) {
    assert_eq!(values(headers, "cookie"), [name_value]);
    assert_eq!(values(headers, "x-session-token"), Vec::<String>::new());
    assert_eq!(values(headers, "authorization"), Vec::<String>::new());
}

/// Waits (at most 5 s) until Kratos has received `count` whoami calls. For ordering a test's
/// steps, never for asserting speed.
pub async fn wait_for_whoami_calls(kratos: &KratosStandIn, count: usize) {
    for _ in 0..1000 {
        if kratos.calls(Endpoint::Whoami) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "Kratos received {} whoami calls, expected {count}",
        kratos.calls(Endpoint::Whoami)
    );
}
