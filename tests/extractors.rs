//! The axum extractors (`KratosSession`, `KratosIdentity` and `Option<…>` of both) on a real
//! `Router`, under the required layer, the optional layer and no layer at all.

use test_support as support;

use axum::{routing::get as get_route, Json, Router};
use bytes::Bytes;
use http::{header, request, Response, StatusCode};
use kratos_stand_in::{Endpoint, Fault, KratosStandIn, TestSession};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_kratos::{outcome::Unauthenticated, KratosIdentity, KratosLayer, KratosSession, Outcome};

use support::{builder, get, kratos, layer, send, split_return_to, with_token, Answer};

const ROUTES: [&str; 4] = ["/session", "/identity", "/maybe-session", "/maybe-identity"];

#[derive(Deserialize)]
struct Traits {
    email: String,
    name: Name,
}

#[derive(Deserialize)]
struct Name {
    first: String,
}

async fn session(session: KratosSession) -> Json<Value> {
    Json(json!({ "session": session.id, "identity": session.identity_id() }))
}

async fn identity(identity: KratosIdentity) -> Result<Json<Value>, StatusCode> {
    let traits: Traits = identity
        .traits_as()
        .map_err(|_| StatusCode::UNPROCESSABLE_ENTITY)?;
    Ok(Json(json!({
        "identity": identity.id,
        "email": traits.email,
        "first_name": traits.name.first,
    })))
}

async fn maybe_session(session: Option<KratosSession>) -> Json<Value> {
    Json(json!({ "session": session.map(|session| session.id.clone()) }))
}

async fn maybe_identity(identity: Option<KratosIdentity>) -> Json<Value> {
    Json(json!({ "identity": identity.map(|identity| identity.id.clone()) }))
}

/// Every route wrapped in the required layer, per route (`MethodRouter::layer`).
fn required_app(kratos: &KratosLayer) -> Router {
    Router::new()
        .route("/session", get_route(session).layer(kratos.required()))
        .route("/identity", get_route(identity).layer(kratos.required()))
        .route(
            "/maybe-session",
            get_route(maybe_session).layer(kratos.required()),
        )
        .route(
            "/maybe-identity",
            get_route(maybe_identity).layer(kratos.required()),
        )
}

/// Every route wrapped in the optional layer, per route (`MethodRouter::route_layer`).
fn optional_app<R: tower_kratos::rejection::RejectionResponse>(kratos: &KratosLayer<R>) -> Router {
    Router::new()
        .route(
            "/session",
            get_route(session).route_layer(kratos.optional()),
        )
        .route(
            "/identity",
            get_route(identity).route_layer(kratos.optional()),
        )
        .route(
            "/maybe-session",
            get_route(maybe_session).route_layer(kratos.optional()),
        )
        .route(
            "/maybe-identity",
            get_route(maybe_identity).route_layer(kratos.optional()),
        )
}

/// The same handlers with no layer: a wiring mistake.
fn bare_app() -> Router {
    Router::new()
        .route("/session", get_route(session))
        .route("/identity", get_route(identity))
        .route("/maybe-session", get_route(maybe_session))
        .route("/maybe-identity", get_route(maybe_identity))
}

fn ada(kratos: &KratosStandIn) -> TestSession {
    kratos
        .session()
        .traits(json!({ "email": "ada@example.org", "name": { "first": "Ada" } }))
        .create()
}

/// All four routes answer with Ada's session and identity.
async fn assert_every_extractor_yields(app: &Router, ada: &TestSession) {
    let answer = send(app, with_token("/session", ada)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!({ "session": ada.id, "identity": ada.identity_id })
    );

    let answer = send(app, with_token("/identity", ada)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!({ "identity": ada.identity_id, "email": "ada@example.org", "first_name": "Ada" })
    );

    let answer = send(app, with_token("/maybe-session", ada)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({ "session": ada.id }));

    let answer = send(app, with_token("/maybe-identity", ada)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({ "identity": ada.identity_id }));
}

// ---------------------------------------------------------------------------------------------
// With a session

#[tokio::test]
async fn required_layer_gives_every_extractor_the_session() {
    let kratos = kratos().await;
    let ada = ada(&kratos);
    let app = required_app(&layer(&kratos));

    assert_every_extractor_yields(&app, &ada).await;

    // One layer, one cache: four routes, one whoami.
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &ada.id), 1);

    // Without a session the layer answers before any extractor runs, `Option` routes included.
    for route in ROUTES {
        let answer = send(&app, get(route, &[])).await;
        answer.assert_json_error(StatusCode::UNAUTHORIZED);
        assert!(matches!(answer.outcome(), Outcome::Anonymous), "{route}");
    }
}

#[tokio::test]
async fn optional_layer_gives_every_extractor_the_session() {
    let kratos = kratos().await;
    let ada = ada(&kratos);
    let app = optional_app(&layer(&kratos));

    assert_every_extractor_yields(&app, &ada).await;

    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

// ---------------------------------------------------------------------------------------------
// Optional layer without a session

/// `Option` routes answer `null`; required extractors answer the layer's 401.
async fn assert_no_session(app: &Router, headers: &[(&str, &str)], reason: fn(&Outcome) -> bool) {
    let answer = send(app, get("/maybe-session", headers)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({ "session": null }));

    let answer = send(app, get("/maybe-identity", headers)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({ "identity": null }));

    for route in ["/session", "/identity"] {
        let answer = send(app, get(route, headers)).await;
        let body = answer.assert_json_error(StatusCode::UNAUTHORIZED);
        assert_eq!(
            body["error"]["message"],
            "The request could not be authorized"
        );
        assert!(answer.header(header::WWW_AUTHENTICATE).is_some(), "{route}");
        assert!(
            reason(answer.outcome()),
            "{route}: unexpected outcome {:?}",
            answer.outcome()
        );
    }
}

#[tokio::test]
async fn optional_layer_without_a_credential_gives_none_or_the_layers_401() {
    let kratos = kratos().await;
    let app = optional_app(&layer(&kratos));

    assert_no_session(&app, &[("accept", "application/json")], |outcome| {
        matches!(outcome, Outcome::Anonymous)
    })
    .await;

    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
}

#[tokio::test]
async fn optional_layer_with_an_invalid_token_gives_none_or_the_layers_401() {
    let kratos = kratos().await;
    let revoked = kratos.create_session();
    assert!(kratos.revoke_session(&revoked.id));
    let app = optional_app(&layer(&kratos));

    assert_no_session(&app, &[("x-session-token", &revoked.token)], |outcome| {
        matches!(outcome, Outcome::Unauthenticated(Unauthenticated::Rejected))
    })
    .await;

    // Four requests, each asked Kratos (401s are not cached by default).
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &revoked.id), 4);
}

#[tokio::test]
async fn optional_layer_with_a_step_up_gives_none_or_the_layers_403() {
    let kratos = kratos().await;
    let step_up = kratos.session().requires_aal2().create();
    let app = optional_app(&layer(&kratos));
    let redirect = format!(
        "{}/self-service/login/browser?aal=aal2",
        kratos.public_url()
    );

    let answer = send(&app, with_token("/maybe-session", &step_up)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({ "session": null }));

    for route in ["/session", "/identity"] {
        let answer = send(&app, with_token(route, &step_up)).await;
        let body = answer.assert_json_error(StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["id"], "session_aal2_required");
        assert_eq!(body["redirect_browser_to"], redirect.as_str());
        assert_eq!(
            body["error"]["details"]["redirect_browser_to"],
            redirect.as_str()
        );
        assert!(matches!(answer.outcome(), Outcome::AalRequired(_)));
    }
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &step_up.id), 3);
}

#[tokio::test]
async fn optional_layer_with_a_login_url_redirects_browsers_from_required_extractors() {
    let kratos = kratos().await;
    let step_up = kratos.session().requires_aal2().create();
    let login = "https://auth.example.test/login";
    let kratos_layer = builder(&kratos).login_url(login).build().expect("layer");
    let app = optional_app(&kratos_layer);
    let browser = [
        ("host", "app.example.test"),
        ("accept", "text/html,*/*;q=0.8"),
    ];

    let answer = send(&app, get("/session?tab=keys", &browser)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    assert_eq!(answer.header(header::CACHE_CONTROL), Some("no-store"));
    let (target, return_to) = split_return_to(answer.header(header::LOCATION).expect("Location"));
    assert_eq!(target.as_str(), login);
    assert_eq!(
        return_to.as_deref(),
        Some("http://app.example.test/session?tab=keys")
    );
    assert!(matches!(answer.outcome(), Outcome::Anonymous));

    // The step-up goes to Kratos's page, with the way back.
    let cookie_header = step_up.cookie_header();
    let mut stepping = browser.to_vec();
    stepping.push(("cookie", &cookie_header));
    let answer = send(&app, get("/identity", &stepping)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let (target, return_to) = split_return_to(answer.header(header::LOCATION).expect("Location"));
    assert_eq!(
        target.as_str(),
        format!(
            "{}/self-service/login/browser?aal=aal2",
            kratos.public_url()
        )
    );
    assert_eq!(
        return_to.as_deref(),
        Some("http://app.example.test/identity")
    );

    // `Option` routes are unaffected, and API clients still get JSON.
    let answer = send(&app, get("/maybe-identity", &browser)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({ "identity": null }));
    let api = send(&app, get("/session", &[("accept", "application/json")])).await;
    api.assert_json_error(StatusCode::UNAUTHORIZED);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn optional_layer_with_a_custom_rejection_answers_it_from_the_extractor() {
    let kratos = kratos().await;
    let kratos_layer = builder(&kratos)
        .rejection(|outcome: &Outcome, request: &request::Parts| {
            let body = format!(
                "please sign in ({}) for {}",
                outcome.kind(),
                request.uri.path()
            );
            let mut response = Response::new(Bytes::from(body));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            response
        })
        .build()
        .expect("layer");
    let app = optional_app(&kratos_layer);

    let answer = send(&app, get("/session", &[])).await;
    assert_eq!(answer.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(answer.text(), "please sign in (anonymous) for /session");
    assert!(matches!(answer.outcome(), Outcome::Anonymous));

    let answer = send(&app, get("/maybe-session", &[])).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({ "session": null }));
}

#[tokio::test]
async fn optional_layer_answers_503_when_kratos_is_down_even_for_option_routes() {
    let kratos = kratos().await;
    let ada = ada(&kratos);
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let app = optional_app(&layer(&kratos));

    for route in ROUTES {
        let answer = send(&app, with_token(route, &ada)).await;
        answer.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.header(header::RETRY_AFTER), Some("5"), "{route}");
        assert!(
            matches!(answer.outcome(), Outcome::Unavailable(_)),
            "{route}"
        );
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 4);
}

// ---------------------------------------------------------------------------------------------
// No layer

fn assert_missing_layer(answer: &Answer, route: &str) {
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{route}: {}",
        answer.text()
    );
    assert!(
        answer
            .header(header::CONTENT_TYPE)
            .is_some_and(|value| value.starts_with("text/plain")),
        "{route}: {:?}",
        answer.headers
    );
    assert!(
        answer.text().contains("KratosLayer"),
        "{route}: {}",
        answer.text()
    );
}

#[tokio::test]
async fn without_the_layer_every_extractor_answers_500_naming_it() {
    let kratos = kratos().await;
    let ada = ada(&kratos);
    let app = bare_app();

    for route in ROUTES {
        assert_missing_layer(&send(&app, with_token(route, &ada)).await, route);
        assert_missing_layer(&send(&app, get(route, &[])).await, route);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 0, "nothing asked Kratos");
}

// ---------------------------------------------------------------------------------------------
// The traits as your own type

#[derive(Debug, Deserialize)]
struct Phone {
    // Ada's traits have no phone: a type that does not follow the identity schema.
    #[allow(dead_code)]
    phone: u64,
}

async fn email(tower_kratos::KratosTraits(traits): tower_kratos::KratosTraits<Traits>) -> String {
    format!("{} {}", traits.email, traits.name.first)
}

async fn maybe_email(traits: Option<tower_kratos::KratosTraits<Traits>>) -> String {
    traits.map_or("anonymous".to_owned(), |traits| traits.0.email)
}

async fn phone(tower_kratos::KratosTraits(phone): tower_kratos::KratosTraits<Phone>) -> String {
    format!("{phone:?}")
}

#[tokio::test]
async fn traits_are_read_as_your_type_and_a_mismatch_is_a_500_naming_it() {
    let kratos = kratos().await;
    let ada = ada(&kratos);
    let layer = layer(&kratos);
    let app = Router::new()
        .route("/email", get_route(email))
        .route("/phone", get_route(phone))
        .layer(layer.required())
        .merge(
            Router::new()
                .route("/maybe-email", get_route(maybe_email))
                .layer(layer.optional()),
        );

    let answer = send(&app, with_token("/email", &ada)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "ada@example.org Ada");
    let answer = send(&app, with_token("/maybe-email", &ada)).await;
    assert_eq!(answer.text(), "ada@example.org");
    let answer = send(&app, get("/maybe-email", &[])).await;
    assert_eq!(answer.text(), "anonymous");

    // The identity schema and the type disagree: the server's to fix, never a panic, and the
    // traits (personal data) are in neither the answer nor the log.
    let (captured, _guard) = support::capture::capture(tracing::Level::TRACE);
    let answer = send(&app, with_token("/phone", &ada)).await;
    let body = answer.assert_json_error(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["id"], "misconfigured");
    assert!(!answer.everything().contains("ada@example.org"));
    let log = captured.take();
    assert!(
        log.contains("ERROR") && log.contains("extractors::Phone"),
        "the log names the type:\n{log}"
    );
    assert!(!log.contains("ada@example.org"), "{log}");

    // Without a session, the layer's own rejection, as for KratosSession.
    let answer = send(&app, get("/email", &[])).await;
    answer.assert_json_error(StatusCode::UNAUTHORIZED);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn every_refusal_has_a_status_and_answers_one_shape() {
    use tower_kratos::{extract::SessionRejection, lifecycle::LifecycleError, rejection::Refusal};

    let refusals: [(&dyn Refusal, StatusCode); 5] = [
        (&Outcome::Anonymous, StatusCode::UNAUTHORIZED),
        (
            &Outcome::Unavailable(tower_kratos::outcome::Unavailable::Transport),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (&LifecycleError::CurrentSession, StatusCode::BAD_REQUEST),
        (&LifecycleError::NotFound, StatusCode::NOT_FOUND),
        (&SessionRejection::NoIdentity, StatusCode::UNAUTHORIZED),
    ];
    for (refusal, status) in refusals {
        assert_eq!(refusal.status(), status, "{}", refusal.kind());
        assert!(!refusal.reason().is_empty());
        // Every outage has a delay to retry after, whether or not its cause named one.
        assert_eq!(
            refusal.retry_after().is_some(),
            status == StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            refusal.kind()
        );
    }
    // The crate's own answers share the envelope.
    for response in [
        axum::response::IntoResponse::into_response(LifecycleError::NotFound),
        axum::response::IntoResponse::into_response(SessionRejection::NoIdentity),
    ] {
        let answer = Answer::read(response).await;
        let body = answer.json();
        for field in ["id", "code", "status", "reason", "message"] {
            assert!(
                body["error"][field].is_string() || body["error"][field].is_number(),
                "{field}: {body}"
            );
        }
    }
}
