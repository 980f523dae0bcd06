//! What a new user tripped over, each answered: a custom rejection keeps browser redirects and
//! step-up flows in either builder order, and every wiring mistake says in its answer how to fix
//! it while the log names the cause. (The gRPC half is in `grpc.rs`:
//! `a_custom_rejection_still_answers_grpc_clients`.)
use test_support as support;

use axum::{routing::get as get_route, Router};
use http::StatusCode;
use kratos_stand_in::KratosStandIn;
use serde_json::json;
use support::{get, send, with_token};
use tower_kratos::{
    bytes::Bytes, http::Response, require::Requirement, KratosLayer, KratosTraits, Outcome,
};

/// The user's own shape for API clients: `{"problem": kind}`.
fn problem(outcome: &Outcome, _request: &http::request::Parts) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(format!(
        r#"{{"problem":"{}"}}"#,
        outcome.kind()
    )));
    *response.status_mut() = outcome.status();
    response
}

async fn hello() -> &'static str {
    "hello"
}

fn app(layer: &KratosLayer<impl tower_kratos::rejection::RejectionResponse>) -> Router {
    Router::new()
        .route("/billing", get_route(hello))
        .layer(layer.require(Requirement::new().second_factor()))
        .route("/me", get_route(hello))
        .layer(layer.clone())
}

fn browser(uri: &str, headers: &[(&str, &str)]) -> http::Request<String> {
    let mut request = get(uri, headers);
    request
        .headers_mut()
        .insert("accept", "text/html".parse().expect("ASCII"));
    request
}

#[tokio::test]
async fn a_custom_rejection_keeps_redirects_in_either_builder_order() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let login_url = kratos.login_url();
    let login_then_rejection = KratosLayer::builder(kratos.public_url())
        .login_url(&login_url)
        .app_url("http://app.test")
        .rejection_fn(problem)
        .build()
        .expect("layer");
    let rejection_then_login = KratosLayer::builder(kratos.public_url())
        .rejection_fn(problem)
        .login_url(&login_url)
        .app_url("http://app.test")
        .build()
        .expect("layer");
    let session = kratos.create_session();
    for layer in [login_then_rejection, rejection_then_login] {
        let app = app(&layer);
        // A browser without a session goes to the login page, back to where it was.
        let answer = send(&app, browser("/me", &[])).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        let location = answer.header("location").expect("a Location");
        assert!(location.starts_with(login_url.as_str()), "{location}");
        assert!(
            location.contains("return_to=http%3A%2F%2Fapp.test%2Fme"),
            "{location}"
        );
        // A browser without the second factor goes to Kratos's login flow for it.
        let mut request = browser("/billing", &[]);
        *request.headers_mut() = with_token("/billing", &session).headers().clone();
        request
            .headers_mut()
            .insert("accept", "text/html".parse().expect("ASCII"));
        let answer = send(&app, request).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        let location = answer.header("location").expect("a Location");
        assert!(location.contains("aal=aal2"), "{location}");
        // API clients get the user's shape, with the headers a refusal carries.
        let answer = send(&app, get("/me", &[])).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.json(), json!({ "problem": "anonymous" }));
        assert!(answer.header("www-authenticate").is_some());
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        let answer = send(&app, with_token("/billing", &session)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(
            answer.json(),
            json!({ "problem": "second_factor_required" })
        );
    }
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Phone {
    phone: u64,
}

async fn phone(KratosTraits(phone): KratosTraits<Phone>) -> String {
    format!("{phone:?}")
}

#[tokio::test]
async fn traits_that_do_not_match_say_how_to_fix_and_log_which_field() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let session = kratos
        .session()
        .traits(json!({ "email": "ada@example.org", "phone": "+44 20 7946 0958" }))
        .create();
    let layer = KratosLayer::builder(kratos.public_url())
        .build()
        .expect("layer");
    let app = Router::new().route("/phone", get_route(phone)).layer(layer);
    let (captured, _guard) = support::capture::capture(tracing::Level::TRACE);
    let answer = send(&app, with_token("/phone", &session)).await;
    let body = answer.assert_json_error(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["id"], "misconfigured");
    let reason = body["error"]["reason"].as_str().expect("a reason");
    assert!(reason.contains("KratosTraits<wiring::Phone>"), "{reason}");
    assert!(reason.contains("identity schema"), "{reason}");
    let log = captured.take();
    assert!(
        log.contains("phone: invalid type: (value withheld), expected u64"),
        "the log names the field and the cause:\n{log}"
    );
    for personal in ["ada@example.org", "7946"] {
        assert!(!answer.everything().contains(personal), "{personal}");
        assert!(!log.contains(personal), "{personal} in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_requirement_outside_the_session_layer_says_how_to_fix_it() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = KratosLayer::builder(kratos.public_url())
        .build()
        .expect("layer");
    // The mistake: the requirement is applied outside (after) the session layer.
    let app = Router::new()
        .route("/billing", get_route(hello))
        .layer(layer.clone())
        .layer(layer.require(Requirement::new().second_factor()));
    let session = kratos.create_session();
    let answer = send(&app, with_token("/billing", &session)).await;
    let body = answer.assert_json_error(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["id"], "misconfigured");
    let reason = body["error"]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("Apply the KratosLayer outside it"),
        "{reason}"
    );
}
