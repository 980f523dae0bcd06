//! The layer in a plain hyper 1 server (no axum): `hyper::server::conn::http1` with
//! `hyper_util::service::TowerToHyperService`, in front of a `service_fn` answering
//! `Full<Bytes>`, reached by hyper-util's client over real TCP.

use test_support as support;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use kratos_stand_in::{Endpoint, Fault, KratosStandIn};
use serde_json::json;
use support::{
    assert_503_with_retry_after, assert_kratos_got_cookie_only, assert_kratos_got_token_only,
    default_layer, whoami_headers, Answer,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_kratos::{KratosLayer, KratosSession};

/// The handler: the session it was given and the request body it read, as JSON.
async fn handler(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let session = request.extensions().get::<KratosSession>().cloned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let answer = json!({
        "session_id": session.as_ref().map(|s| s.id.clone()),
        "identity_id": session.as_ref().and_then(|s| s.identity_id().map(str::to_owned)),
        "body": String::from_utf8_lossy(&body),
    });
    let response = Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .expect("response");
    Ok(response)
}

/// Serves `layer` + [`handler`] on `127.0.0.1:0` until the test's runtime ends.
async fn serve(layer: KratosLayer) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let service = ServiceBuilder::new().layer(layer).service_fn(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _peer)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The app server for this stand-in, with a default layer.
async fn serve_for(kratos: &KratosStandIn) -> SocketAddr {
    serve(default_layer(kratos)).await
}

/// A real HTTP request to the app server.
async fn request(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/me?x=1"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client
        .request(
            builder
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("request"),
        )
        .await
        .expect("the app server answers");
    Answer::read(response).await
}

async fn get(addr: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    request(addr, "GET", headers, "").await
}

#[tokio::test]
async fn a_session_token_gets_the_session_over_http() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let addr = serve_for(&kratos).await;

    let reply = get(addr, &[("x-session-token", &alice.token)]).await;

    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["session_id"], alice.id.as_str());
    assert_eq!(body["identity_id"], alice.identity_id.as_str());
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &alice.token);
}

#[tokio::test]
async fn a_browser_cookie_gets_the_session_over_http_and_the_body_reaches_the_handler() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let addr = serve_for(&kratos).await;
    let cookies = format!("theme=dark; {}; csrf=abc", alice.cookie_header());

    let reply = request(
        addr,
        "POST",
        &[("cookie", &cookies), ("content-type", "text/plain")],
        "the request body survives the lookup",
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["session_id"], alice.id.as_str());
    assert_eq!(body["body"], "the request body survives the lookup");
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &alice.cookie_header());
}

#[tokio::test]
async fn no_credential_gets_a_401_json_over_http() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let addr = serve_for(&kratos).await;

    let reply = get(addr, &[("accept", "application/json")]).await;

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"kratos\"")
    );
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str()),
        "the rejection body's exact size reaches hyper"
    );
    let body = reply.json();
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["status"], "Unauthorized");
    assert!(body.get("session_id").is_none(), "the handler did not run");
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
}

#[tokio::test]
async fn a_failing_kratos_gets_503_with_retry_after_over_http_then_recovers() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let addr = serve_for(&kratos).await;

    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let reply = get(addr, &[("x-session-token", &alice.token)]).await;
    assert_503_with_retry_after(&reply);

    kratos.set_fault(Endpoint::Whoami, Fault::CloseConnection);
    let reply = get(addr, &[("x-session-token", &alice.token)]).await;
    assert_503_with_retry_after(&reply);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 2);

    kratos.clear_faults();
    let reply = get(addr, &[("x-session-token", &alice.token)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["session_id"], alice.id.as_str());
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);
}

#[tokio::test]
async fn a_kratos_that_is_gone_gets_503_with_retry_after_over_http() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let addr = serve_for(&kratos).await;
    kratos.stop().await;

    let reply = get(addr, &[("x-session-token", &alice.token)]).await;

    assert_503_with_retry_after(&reply);
    assert!(
        reply.json().get("session_id").is_none(),
        "the handler did not run"
    );
}
