//! Every outcome a lookup can end in, and the response (or inner call) each one becomes: driven
//! through the layer with `oneshot` against a real stand-in, asserting both what the client got
//! and what Kratos saw.

use test_support as support;

use std::time::Duration;

use bytes::Bytes;
use http::{header, request, Response, StatusCode};
use kratos_stand_in::{Endpoint, Fault, KratosStandIn, TestSession};
use time::OffsetDateTime;
use tower::Layer;
use tower_kratos::{
    credentials::MalformedCredential,
    outcome::{AalRequired, Unauthenticated, Unavailable},
    KratosLayer, Mode, Outcome,
};

use support::{builder, get, kratos, layer, send, split_return_to, with_token, Answer, Recorder};

/// The step-up page Kratos names in its 403.
fn step_up_url(kratos: &KratosStandIn) -> String {
    format!(
        "{}/self-service/login/browser?aal=aal2",
        kratos.public_url()
    )
}

fn assert_unauthenticated(answer: &Answer, reason: Unauthenticated) {
    let body = answer.assert_json_error(StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"]["message"],
        "The request could not be authorized"
    );
    assert!(
        answer
            .header(header::WWW_AUTHENTICATE)
            .is_some_and(|value| value.starts_with("Bearer")),
        "401 carries WWW-Authenticate: {:?}",
        answer.headers
    );
    match answer.outcome() {
        Outcome::Unauthenticated(seen) => assert_eq!(*seen, reason),
        other => panic!("expected Unauthenticated({reason:?}), got {other:?}"),
    }
}

/// 503, Kratos-style JSON, `Retry-After`, the outcome attached: never a 401 for an outage.
fn assert_unavailable(answer: &Answer, reason: &Unavailable, retry_after: &str) {
    assert_ne!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "an outage is never a 401"
    );
    answer.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header(header::RETRY_AFTER), Some(retry_after));
    assert!(answer.header(header::WWW_AUTHENTICATE).is_none());
    match answer.outcome() {
        Outcome::Unavailable(seen) => assert_eq!(seen, reason),
        other => panic!("expected Unavailable({reason:?}), got {other:?}"),
    }
}

/// A session whose token is sent while Kratos has `fault` on whoami: 503 with this reason, one
/// whoami, the inner service never called.
async fn outage(fault: Fault, reason: Unavailable, retry_after: &str) {
    let kratos = kratos().await;
    let session = kratos.create_session();
    kratos.set_fault(Endpoint::Whoami, fault);
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let answer = tokio::time::timeout(support::GUARD, send(&service, with_token("/", &session)))
        .await
        .expect("the layer answers within its own deadline");

    assert_unavailable(&answer, &reason, retry_after);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert!(recorder.seen().is_empty(), "no request reaches the handler");
}

// ---------------------------------------------------------------------------------------------
// Authenticated

#[tokio::test]
async fn valid_token_reaches_the_inner_service_with_the_session() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let request = get(
        "/orders",
        &[
            ("x-session-token", &session.token),
            ("x-request-id", "req-42"),
        ],
    );
    let answer = send(&service, request).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "inner");
    assert!(answer.extensions.get::<Outcome>().is_none());
    let seen = recorder
        .only()
        .session
        .expect("a KratosSession in the extensions");
    assert_eq!(seen.id, session.id);
    assert_eq!(seen.identity_id(), Some(session.identity_id.as_str()));
    assert!(seen.active);

    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 1);
    let asked = kratos.requests(Endpoint::Whoami);
    let headers = &asked[0].headers;
    assert_eq!(headers["x-session-token"], session.token.as_str());
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(headers["x-request-id"], "req-42");
    assert!(headers.get(header::COOKIE).is_none());
}

#[tokio::test]
async fn valid_cookie_reaches_the_inner_service_and_only_that_cookie_is_sent() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let cookies = format!("theme=dark; {}; tracking=abc", session.cookie_header());
    let answer = send(&service, get("/", &[("cookie", &cookies)])).await;

    assert_eq!(answer.status, StatusCode::OK);
    let seen = recorder.only().session.expect("a KratosSession");
    assert_eq!(seen.id, session.id);
    let asked = kratos.requests(Endpoint::Whoami);
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].headers[header::COOKIE],
        session.cookie_header().as_str()
    );
    assert!(asked[0].headers.get("x-session-token").is_none());
}

// ---------------------------------------------------------------------------------------------
// No or invalid credential: 401

#[tokio::test]
async fn no_credential_is_401_json_without_asking_kratos() {
    let kratos = kratos().await;
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let answer = send(&service, get("/", &[("cookie", "theme=dark")])).await;

    let body = answer.assert_json_error(StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["status"], "Unauthorized");
    assert!(body["error"]["reason"].is_string(), "{body}");
    assert!(answer.header(header::WWW_AUTHENTICATE).is_some());
    assert!(matches!(answer.outcome(), Outcome::Anonymous));
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn malformed_credential_is_401_without_asking_kratos() {
    let kratos = kratos().await;
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let answer = send(&service, get("/", &[("x-session-token", "ory_st_a b")])).await;

    assert_unauthenticated(
        &answer,
        Unauthenticated::Malformed(MalformedCredential::InvalidCharacters),
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn unknown_token_is_401_after_one_whoami() {
    let kratos = kratos().await;
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let token = "ory_st_0123456789abcdefghijklmnopqrstuv";
    let answer = send(
        &service,
        get("/", &[("authorization", &format!("Bearer {token}"))]),
    )
    .await;

    assert_unauthenticated(&answer, Unauthenticated::Rejected);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(
        kratos.requests(Endpoint::Whoami)[0].headers["x-session-token"],
        token
    );
    assert!(recorder.seen().is_empty());
}

/// Sends the session's token once: 401 `Rejected`, one whoami about that session.
async fn assert_refused(kratos: &KratosStandIn, session: &TestSession) {
    let recorder = Recorder::new();
    let service = layer(kratos).layer(recorder.service());
    let answer = send(&service, with_token("/", session)).await;
    assert_unauthenticated(&answer, Unauthenticated::Rejected);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 1);
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn revoked_session_is_401() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    assert!(kratos.revoke_session(&session.id));
    assert_refused(&kratos, &session).await;
}

#[tokio::test]
async fn expired_session_is_401() {
    let kratos = kratos().await;
    let moved = kratos.create_session();
    let past = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    assert!(kratos.set_expires_at(&moved.id, past));
    assert_refused(&kratos, &moved).await;

    let born_expired = kratos.session().expires_at(past).create();
    assert_refused(&kratos, &born_expired).await;
}

#[tokio::test]
async fn disabled_identity_is_401() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    assert!(kratos.set_identity_active(&session.identity_id, false));
    assert_refused(&kratos, &session).await;
}

// ---------------------------------------------------------------------------------------------
// Step-up: 403 with Kratos's redirect

#[tokio::test]
async fn step_up_is_403_with_kratos_redirect_and_is_asked_again() {
    let kratos = kratos().await;
    let session = kratos.session().requires_aal2().create();
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let answer = send(&service, with_token("/", &session)).await;

    let body = answer.assert_json_error(StatusCode::FORBIDDEN);
    let expected = step_up_url(&kratos);
    assert_eq!(body["error"]["id"], "session_aal2_required");
    assert_eq!(body["redirect_browser_to"], expected.as_str(), "{body}");
    assert_eq!(
        body["error"]["details"]["redirect_browser_to"],
        expected.as_str(),
        "{body}"
    );
    assert!(answer.header(header::WWW_AUTHENTICATE).is_none());
    match answer.outcome() {
        Outcome::AalRequired(step_up) => {
            assert_eq!(*step_up, AalRequired::new(Some(expected.clone())));
        }
        other => panic!("expected AalRequired, got {other:?}"),
    }
    assert!(recorder.seen().is_empty());

    // A step-up is never cached: the user may complete the second factor any moment.
    let again = send(&service, with_token("/", &session)).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 2);
}

// ---------------------------------------------------------------------------------------------
// Browsers: redirects with return_to

const LOGIN: &str = "https://auth.example.test/ui/login?flow_hint=x";

fn browser(uri: &str, extra: &[(&str, &str)]) -> http::Request<String> {
    let mut headers = vec![
        ("host", "app.example.test:8080"),
        ("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
    ];
    headers.extend_from_slice(extra);
    get(uri, &headers)
}

fn assert_redirect(answer: &Answer, to: &str, return_to: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SEE_OTHER,
        "body: {}",
        answer.text()
    );
    assert_eq!(answer.header(header::CACHE_CONTROL), Some("no-store"));
    let location = answer.header(header::LOCATION).expect("a Location");
    let (target, seen_return_to) = split_return_to(location);
    assert_eq!(target.as_str(), to, "Location: {location}");
    assert_eq!(
        seen_return_to.as_deref(),
        Some(return_to),
        "Location: {location}"
    );
}

#[tokio::test]
async fn anonymous_browser_is_sent_to_login_with_return_to_from_the_host() {
    let kratos = kratos().await;
    let recorder = Recorder::new();
    let service = builder(&kratos)
        .login_url(LOGIN)
        .build()
        .expect("layer")
        .layer(recorder.service());

    let answer = send(&service, browser("/account/orders?page=2&sort=new", &[])).await;

    assert_redirect(
        &answer,
        LOGIN,
        "http://app.example.test:8080/account/orders?page=2&sort=new",
    );
    assert!(matches!(answer.outcome(), Outcome::Anonymous));
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);

    // An invalid session goes to the login page too, after Kratos said so.
    let invalid = browser("/", &[("x-session-token", "ory_st_notarealtoken")]);
    let answer = send(&service, invalid).await;
    assert_redirect(&answer, LOGIN, "http://app.example.test:8080/");
    assert!(matches!(
        answer.outcome(),
        Outcome::Unauthenticated(Unauthenticated::Rejected)
    ));
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn app_url_replaces_the_host_header_in_return_to() {
    let kratos = kratos().await;
    let service = builder(&kratos)
        .login_url(LOGIN)
        .app_url("https://shop.example.com")
        .build()
        .expect("layer")
        .layer(Recorder::new().service());

    let answer = send(&service, browser("/cart?item=7", &[])).await;

    assert_redirect(&answer, LOGIN, "https://shop.example.com/cart?item=7");
}

#[tokio::test]
async fn step_up_browser_is_sent_to_kratos_with_return_to() {
    let kratos = kratos().await;
    let session = kratos.session().requires_aal2().create();
    let service = builder(&kratos)
        .login_url(LOGIN)
        .build()
        .expect("layer")
        .layer(Recorder::new().service());

    let answer = send(
        &service,
        browser("/settings", &[("cookie", &session.cookie_header())]),
    )
    .await;

    assert_redirect(
        &answer,
        &step_up_url(&kratos),
        "http://app.example.test:8080/settings",
    );
    assert!(matches!(answer.outcome(), Outcome::AalRequired(_)));
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 1);
}

#[tokio::test]
async fn api_clients_still_get_json_when_a_login_url_is_set() {
    let kratos = kratos().await;
    let step_up = kratos.session().requires_aal2().create();
    let service = builder(&kratos)
        .login_url(LOGIN)
        .build()
        .expect("layer")
        .layer(Recorder::new().service());
    let api = [("host", "app.example.test"), ("accept", "application/json")];

    let anonymous = send(&service, get("/", &api)).await;
    anonymous.assert_json_error(StatusCode::UNAUTHORIZED);
    assert!(anonymous.header(header::LOCATION).is_none());

    let mut headers = api.to_vec();
    headers.push(("x-session-token", &step_up.token));
    let answer = send(&service, get("/", &headers)).await;
    let body = answer.assert_json_error(StatusCode::FORBIDDEN);
    assert_eq!(body["redirect_browser_to"], step_up_url(&kratos).as_str());
    assert!(answer.header(header::LOCATION).is_none());
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn browser_gets_503_not_a_login_redirect_when_kratos_is_down() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let service = builder(&kratos)
        .login_url(LOGIN)
        .build()
        .expect("layer")
        .layer(Recorder::new().service());

    let answer = send(
        &service,
        browser("/", &[("cookie", &session.cookie_header())]),
    )
    .await;

    assert_unavailable(
        &answer,
        &Unavailable::Status(StatusCode::INTERNAL_SERVER_ERROR),
        "5",
    );
    assert!(answer.header(header::LOCATION).is_none());
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

// ---------------------------------------------------------------------------------------------
// Kratos unavailable: 503 with Retry-After, never 401

#[tokio::test]
async fn kratos_500_is_503() {
    outage(
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Unavailable::Status(StatusCode::INTERNAL_SERVER_ERROR),
        "5",
    )
    .await;
}

#[tokio::test]
async fn kratos_502_is_503() {
    outage(
        Fault::Status(StatusCode::BAD_GATEWAY),
        Unavailable::Status(StatusCode::BAD_GATEWAY),
        "5",
    )
    .await;
}

#[tokio::test]
async fn kratos_403_without_step_up_is_503_not_a_denial() {
    outage(
        Fault::Status(StatusCode::FORBIDDEN),
        Unavailable::Status(StatusCode::FORBIDDEN),
        "5",
    )
    .await;
}

#[tokio::test]
async fn rate_limited_passes_kratos_retry_after_on() {
    outage(
        Fault::RateLimited {
            retry_after: Some(7),
        },
        Unavailable::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        },
        "7",
    )
    .await;
}

#[tokio::test]
async fn rate_limited_without_retry_after_uses_x_ratelimit_reset() {
    // Ory Network always sends x-ratelimit-reset (the stand-in: 1 s when no Retry-After).
    outage(
        Fault::RateLimited { retry_after: None },
        Unavailable::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        },
        "1",
    )
    .await;
}

#[tokio::test]
async fn a_bare_429_gets_the_default_retry_after() {
    outage(
        Fault::Status(StatusCode::TOO_MANY_REQUESTS),
        Unavailable::RateLimited { retry_after: None },
        "5",
    )
    .await;
}

#[tokio::test]
async fn kratos_retry_after_is_kept_between_one_second_and_an_hour() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    let service = layer(&kratos).layer(Recorder::new().service());

    // "Retry-After: 0" would invite a retry storm.
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::RateLimited {
            retry_after: Some(0),
        },
    );
    let now = send(&service, with_token("/", &session)).await;
    assert_unavailable(
        &now,
        &Unavailable::RateLimited {
            retry_after: Some(Duration::ZERO),
        },
        "1",
    );

    // The 429 made the layer back off: a fresh layer for the next case.
    let service = layer(&kratos).layer(Recorder::new().service());
    // A day-long wait: clients are told when the layer asks Kratos again, at the end of its
    // back-off window (at most 30 s by default, spread between 80 % and 100 % of that).
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::RateLimited {
            retry_after: Some(86_400),
        },
    );
    let later = send(&service, with_token("/", &session)).await;
    later.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
    let told: u64 = later
        .header(header::RETRY_AFTER)
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((23..=30).contains(&told), "Retry-After: {told}");
    assert_eq!(kratos.calls(Endpoint::Whoami), 2, "outages are not cached");
}

#[tokio::test]
async fn hung_kratos_is_503_within_the_request_timeout() {
    outage(Fault::Hang, Unavailable::Timeout, "5").await;
}

#[tokio::test]
async fn hung_kratos_is_503_even_with_a_client_that_has_no_timeout() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    kratos.set_fault(Endpoint::Whoami, Fault::Hang);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let service = builder(&kratos)
        .http_client(client)
        .build()
        .expect("layer")
        .layer(Recorder::new().service());

    let answer = tokio::time::timeout(support::GUARD, send(&service, with_token("/", &session)))
        .await
        .expect("the layer enforces its deadline itself");

    assert_unavailable(&answer, &Unavailable::Timeout, "5");
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn kratos_slower_than_the_timeout_is_503() {
    outage(
        Fault::Delay(support::KRATOS_TIMEOUT * 5),
        Unavailable::Timeout,
        "5",
    )
    .await;
}

#[tokio::test]
async fn kratos_slower_but_within_the_timeout_is_fine() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    kratos.set_fault(Endpoint::Whoami, Fault::Delay(Duration::from_millis(30)));
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let answer = tokio::time::timeout(support::GUARD, send(&service, with_token("/", &session)))
        .await
        .expect("answered");

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(recorder.only().session.expect("session").id, session.id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn garbage_body_is_503() {
    outage(Fault::GarbageBody, Unavailable::InvalidBody, "5").await;
}

#[tokio::test]
async fn closed_connection_is_503() {
    outage(Fault::CloseConnection, Unavailable::Transport, "5").await;
}

#[tokio::test]
async fn stopped_kratos_is_503() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    let old_url = kratos.public_url();
    kratos.stop().await;
    let recorder = Recorder::new();
    let service = KratosLayer::builder(old_url)
        .request_timeout(support::KRATOS_TIMEOUT)
        .build()
        .expect("layer")
        .layer(recorder.service());

    let answer = tokio::time::timeout(support::GUARD, send(&service, with_token("/", &session)))
        .await
        .expect("answered");

    assert_unavailable(&answer, &Unavailable::Transport, "5");
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn an_outage_is_not_cached() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());

    let down = send(&service, with_token("/", &session)).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);

    kratos.clear_faults();
    let up = send(&service, with_token("/", &session)).await;
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(recorder.only().session.expect("session").id, session.id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

// ---------------------------------------------------------------------------------------------
// A custom rejection

fn teapot(outcome: &Outcome, request: &request::Parts) -> Response<Bytes> {
    let body = format!("custom {} at {}", outcome.kind(), request.uri.path());
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = StatusCode::IM_A_TEAPOT;
    response
        .headers_mut()
        .insert("x-custom", http::HeaderValue::from_static("yes"));
    response
}

#[tokio::test]
async fn a_rejection_closure_replaces_the_response_and_keeps_the_outcome() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    let recorder = Recorder::new();
    let service = builder(&kratos)
        .rejection(|outcome: &Outcome, request: &request::Parts| teapot(outcome, request))
        .build()
        .expect("layer")
        .layer(recorder.service());

    let anonymous = send(&service, get("/private", &[])).await;
    assert_eq!(anonymous.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(anonymous.text(), "custom anonymous at /private");
    assert_eq!(anonymous.header("x-custom"), Some("yes"));
    assert!(anonymous.header(header::WWW_AUTHENTICATE).is_none());
    assert!(matches!(anonymous.outcome(), Outcome::Anonymous));

    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let down = send(&service, with_token("/status", &session)).await;
    assert_eq!(down.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(down.text(), "custom unavailable at /status");
    assert!(matches!(
        down.outcome(),
        Outcome::Unavailable(Unavailable::Status(StatusCode::INTERNAL_SERVER_ERROR))
    ));

    // Accepted sessions never see the closure.
    kratos.clear_faults();
    let ok = send(&service, with_token("/", &session)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.text(), "inner");
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(recorder.seen().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Optional mode

/// What an optional-mode layer lets through, and what it still refuses.
async fn assert_optional_mode(kratos: &KratosStandIn, layer: KratosLayer) {
    assert_eq!(layer.mode(), Mode::Optional);
    let valid = kratos.create_session();
    let step_up = kratos.session().requires_aal2().create();
    let recorder = Recorder::new();
    let service = layer.layer(recorder.service());

    let anonymous = send(&service, get("/", &[])).await;
    let invalid = send(&service, get("/", &[("x-session-token", "ory_st_unknown")])).await;
    let stepping = send(&service, with_token("/", &step_up)).await;
    let accepted = send(&service, with_token("/", &valid)).await;
    let malformed = send(&service, get("/", &[("x-session-token", "a b")])).await;
    for answer in [&anonymous, &invalid, &stepping, &accepted, &malformed] {
        assert_eq!(answer.status, StatusCode::OK, "body: {}", answer.text());
        assert_eq!(answer.text(), "inner");
    }

    let seen = recorder.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen[..3].iter().all(|seen| seen.session.is_none()));
    assert!(seen[4].session.is_none());
    assert!(matches!(
        seen[4].outcome,
        Some(Outcome::Unauthenticated(Unauthenticated::Malformed(
            MalformedCredential::InvalidCharacters
        )))
    ));
    assert!(matches!(seen[0].outcome, Some(Outcome::Anonymous)));
    assert!(matches!(
        seen[1].outcome,
        Some(Outcome::Unauthenticated(Unauthenticated::Rejected))
    ));
    match &seen[2].outcome {
        Some(Outcome::AalRequired(step)) => {
            assert_eq!(
                step.redirect_browser_to.as_deref(),
                Some(step_up_url(kratos).as_str())
            );
        }
        other => panic!("expected AalRequired, got {other:?}"),
    }
    assert_eq!(seen[3].session.as_ref().expect("session").id, valid.id);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        3,
        "anonymous and malformed ask nobody"
    );

    // An outage is still an outage: letting it on as anonymous would sign the user out.
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
    );
    let other = kratos.create_session();
    let down = send(&service, with_token("/", &other)).await;
    assert_unavailable(
        &down,
        &Unavailable::Status(StatusCode::SERVICE_UNAVAILABLE),
        "5",
    );
    assert_eq!(
        recorder.seen().len(),
        5,
        "the outage never reached the handler"
    );
}

#[tokio::test]
async fn optional_layer_lets_requests_without_a_session_on_with_the_outcome() {
    let kratos = kratos().await;
    let optional = layer(&kratos).optional();
    assert_optional_mode(&kratos, optional).await;
}

#[tokio::test]
async fn optional_mode_from_the_builder_behaves_the_same() {
    let kratos = kratos().await;
    let optional = builder(&kratos)
        .mode(Mode::Optional)
        .build()
        .expect("layer");
    assert_optional_mode(&kratos, optional).await;
}

#[tokio::test]
async fn required_and_optional_from_one_layer_share_one_cache() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    let base = layer(&kratos);
    let recorder = Recorder::new();
    let required = base.required().layer(recorder.service());
    let optional = base.optional().layer(recorder.service());
    assert_eq!(base.required().mode(), Mode::Required);

    assert_eq!(
        send(&optional, with_token("/", &session)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&required, with_token("/", &session)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&optional, with_token("/", &session)).await.status,
        StatusCode::OK
    );

    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        1,
        "one whoami across both modes"
    );
    let seen = recorder.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|seen| seen.session.as_ref().map(|s| s.id.as_str()) == Some(session.id.as_str())));

    // The modes still differ for a request without a session.
    assert_eq!(
        send(&required, get("/", &[])).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&optional, get("/", &[])).await.status, StatusCode::OK);
}
