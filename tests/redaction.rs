//! No credential leaves through a side door: not in the `Debug` or `Display` of a public type
//! that holds one or is derived from one, not in anything logged at TRACE (the layer's events,
//! the stand-in's, and the `log` records of reqwest and rustls), and not in any rejection's body
//! or headers, for every outcome and every credential source.
//!
//! The secrets are the stand-in's real tokens and cookie values (random alphanumerics) and
//! invented ones marked `SECRETSECRET`. Every 12-byte window of each is searched for, so a
//! truncated or partly masked credential is caught too.

use test_support as support;

use std::time::Duration;

use axum::{routing::get as route, Router};
use http::{header, Request, StatusCode};
use kratos_stand_in::{Endpoint, Fault, KratosStandIn, TestSession};
use tower::{Layer, ServiceExt};
use tower_kratos::{
    credentials::{find_credential, CookieNames, Credential},
    extract::SessionRejection,
    session::Session,
    KratosIdentity, KratosLayer, KratosSession, Outcome,
};
use tracing::Level;

use support::{builder, capture::capture, get, kratos, send, Answer, Recorder};

/// The length of the pieces of a secret searched for.
const WINDOW: usize = 12;

/// Fails when `text` holds any `WINDOW`-byte piece of any secret.
#[track_caller]
fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        let bytes = secret.as_bytes();
        for piece in bytes.windows(WINDOW.min(bytes.len())) {
            let piece = String::from_utf8_lossy(piece);
            assert!(
                !text.contains(piece.as_ref()),
                "{what} shows {piece:?}, a piece of a credential:\n{text}"
            );
        }
    }
}

/// Some line of `log` contains every one of `needles`.
#[track_caller]
fn assert_logged(log: &str, needles: &[&str]) {
    assert!(
        log.lines()
            .any(|line| needles.iter().all(|needle| line.contains(needle))),
        "no line contains all of {needles:?} in:\n{log}"
    );
}

/// A token the stand-in never issued, easy to spot.
fn invented(tag: &str) -> String {
    format!("ory_st_SECRETSECRET{tag}7f3a9c1e5b")
}

/// The three ways a session reaches the layer: header name and value.
fn sources(session: &TestSession) -> [(&'static str, String); 3] {
    [
        ("x-session-token", session.token.clone()),
        ("cookie", session.cookie_header()),
        ("authorization", format!("Bearer {}", session.token)),
    ]
}

/// What a session's credentials are, as secrets to search for.
fn secrets_of(session: &TestSession) -> Vec<String> {
    vec![session.token.clone(), session.cookie_value.clone()]
}

/// The same credential from an API client and from a browser (which gets redirects).
fn api_and_browser(name: &str, value: &str) -> [Request<String>; 2] {
    [
        get("/account?tab=keys", &[(name, value)]),
        get(
            "/account?tab=keys",
            &[
                ("host", "app.example.test"),
                ("accept", "text/html"),
                (name, value),
            ],
        ),
    ]
}

/// Checks one answer: its status, and no secret in its body, headers or outcome.
#[track_caller]
fn check(answer: &Answer, status: StatusCode, secrets: &[String], what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.text());
    assert_no_secret(&answer.everything(), secrets, what);
    if let Some(outcome) = answer.extensions.get::<Outcome>() {
        assert_no_secret(
            &format!("{outcome:?} {outcome:#?} {outcome}"),
            secrets,
            what,
        );
    }
}

#[tokio::test]
async fn no_outcome_logs_or_answers_with_the_credential() {
    let (captured, _guard) = capture(Level::TRACE);
    let kratos = kratos().await;
    let service = builder(&kratos)
        .login_url("https://auth.example.test/login")
        .build()
        .expect("a layer")
        .layer(Recorder::new().service());
    let mut secrets: Vec<String> = Vec::new();

    // Misses, then hits, from each source.
    for (index, session) in [0, 1, 2]
        .map(|_| kratos.create_session())
        .iter()
        .enumerate()
    {
        secrets.extend(secrets_of(session));
        let (name, value) = &sources(session)[index];
        for _ in 0..2 {
            let answer = send(&service, get("/", &[(name, value)])).await;
            check(&answer, StatusCode::OK, &secrets, "a session");
        }
    }
    // Coalesced: two requests for one session while Kratos is slow.
    let slow = kratos.create_session();
    secrets.extend(secrets_of(&slow));
    kratos.set_latency(Duration::from_millis(100));
    let (first, second) = tokio::join!(
        send(&service, get("/", &[("x-session-token", &slow.token)])),
        send(&service, get("/", &[("x-session-token", &slow.token)])),
    );
    kratos.set_latency(Duration::ZERO);
    check(&first, StatusCode::OK, &secrets, "a coalesced lookup");
    check(&second, StatusCode::OK, &secrets, "a coalesced lookup");

    // 401: revoked, and never issued.
    let revoked = kratos.create_session();
    assert!(kratos.revoke_session(&revoked.id));
    secrets.extend(secrets_of(&revoked));
    let unknown = invented("unknown");
    secrets.push(unknown.clone());
    let mut refused = sources(&revoked).to_vec();
    refused.push(("x-session-token", unknown.clone()));
    refused.push(("cookie", format!("ory_kratos_session={unknown}")));
    for (name, value) in &refused {
        let [api, browser] = api_and_browser(name, value);
        let api = send(&service, api).await;
        check(&api, StatusCode::UNAUTHORIZED, &secrets, "a 401");
        let browser = send(&service, browser).await;
        check(
            &browser,
            StatusCode::SEE_OTHER,
            &secrets,
            "a login redirect",
        );
        assert!(browser.header(header::LOCATION).is_some());
    }

    // 403: a second factor is required.
    let step_up = kratos.session().requires_aal2().create();
    secrets.extend(secrets_of(&step_up));
    for (name, value) in &sources(&step_up) {
        let [api, browser] = api_and_browser(name, value);
        check(
            &send(&service, api).await,
            StatusCode::FORBIDDEN,
            &secrets,
            "a 403",
        );
        let browser = send(&service, browser).await;
        check(
            &browser,
            StatusCode::SEE_OTHER,
            &secrets,
            "a step-up redirect",
        );
    }

    // 503: every way Kratos can fail to answer.
    let faults = [
        Fault::Status(StatusCode::BAD_GATEWAY),
        Fault::RateLimited {
            retry_after: Some(7),
        },
        Fault::GarbageBody,
        Fault::CloseConnection,
        Fault::Hang,
    ];
    for fault in faults {
        let down = kratos.create_session();
        secrets.extend(secrets_of(&down));
        kratos.set_fault(Endpoint::Whoami, fault.clone());
        for (name, value) in &sources(&down) {
            for request in api_and_browser(name, value) {
                let answer = send(&service, request).await;
                check(&answer, StatusCode::SERVICE_UNAVAILABLE, &secrets, "a 503");
                assert!(answer.header(header::RETRY_AFTER).is_some(), "{fault:?}");
            }
        }
    }
    kratos.clear_faults();

    // Malformed: refused without asking Kratos.
    let whoami_before = kratos.calls(Endpoint::Whoami);
    let spaced = format!("{} tail", invented("spaced"));
    let long = invented("long").repeat(200);
    let backslashed = format!("{}\\x", invented("cookie"));
    secrets.extend([spaced.clone(), long.clone(), backslashed.clone()]);
    let malformed = [
        ("x-session-token", spaced),
        ("x-session-token", long.clone()),
        ("authorization", format!("Bearer {long}")),
        (
            "cookie",
            format!("theme=dark; ory_kratos_session={backslashed}"),
        ),
    ];
    for (name, value) in &malformed {
        let [api, browser] = api_and_browser(name, value);
        check(
            &send(&service, api).await,
            StatusCode::UNAUTHORIZED,
            &secrets,
            "malformed",
        );
        let browser = send(&service, browser).await;
        check(
            &browser,
            StatusCode::SEE_OTHER,
            &secrets,
            "malformed, browser",
        );
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), whoami_before);

    // A remembered 401 (negative caching), and no credential at all.
    let remembering = builder(&kratos)
        .cache_rejections(Duration::from_secs(30))
        .build()
        .expect("a layer")
        .layer(Recorder::new().service());
    let forgotten = invented("remembered");
    secrets.push(forgotten.clone());
    for _ in 0..2 {
        let request = get("/", &[("x-session-token", &forgotten)]);
        let answer = send(&remembering, request).await;
        check(&answer, StatusCode::UNAUTHORIZED, &secrets, "a cached 401");
    }
    let anonymous = send(&service, get("/", &[])).await;
    check(
        &anonymous,
        StatusCode::UNAUTHORIZED,
        &secrets,
        "no credential",
    );

    // 403: the session cookie from another origin, refused without asking Kratos.
    let forged = kratos.create_session();
    secrets.extend(secrets_of(&forged));
    let whoami_before = kratos.calls(Endpoint::Whoami);
    for accept in ["application/json", "text/html"] {
        let request = support::post(
            "/account",
            &[
                ("host", "app.example.test"),
                ("accept", accept),
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example.test"),
                ("cookie", &forged.cookie_header()),
            ],
        );
        let answer = send(&service, request).await;
        check(
            &answer,
            StatusCode::FORBIDDEN,
            &secrets,
            "a cross-origin request",
        );
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), whoami_before);

    let log = captured.take();
    // Every path was logged, down to TRACE, so the search below had something to search.
    for (outcome, cache) in [
        ("authenticated", "miss"),
        ("authenticated", "hit"),
        ("authenticated", "coalesced"),
        ("unauthenticated", "miss"),
        ("unauthenticated", "hit"),
        ("aal_required", "miss"),
        ("unavailable", "miss"),
    ] {
        let outcome = format!("outcome=\"{outcome}\"");
        let cache = format!("cache=\"{cache}\"");
        assert_logged(&log, &[&outcome, &cache]);
    }
    for source in ["x-session-token", "cookie", "bearer"] {
        assert_logged(&log, &[&format!("source=\"{source}\"")]);
    }
    assert_logged(&log, &["credential refused without asking Kratos"]);
    assert_logged(
        &log,
        &[
            "outcome=\"cross_origin_request\"",
            "with the session cookie refused without asking Kratos",
        ],
    );
    assert_logged(&log, &["TRACE", "no Kratos credential in the request"]);
    // The HTTP client's own events are in it too.
    assert_logged(&log, &["TRACE", "hyper_util::client"]);
    assert_no_secret(&log, &secrets, "the TRACE log");
}

#[tokio::test]
async fn no_public_type_shows_a_credential_in_debug_or_display() {
    let kratos = kratos().await;
    let session = kratos.create_session();
    let other = kratos.create_session();
    let mut secrets = secrets_of(&session);
    secrets.extend(secrets_of(&other));

    // Credentials from each source, several session cookies at once included.
    let two_cookies = format!(
        "{}; ory_session_staging={}",
        session.cookie_header(),
        other.cookie_value
    );
    let requests = [
        ("x-session-token", session.token.clone()),
        ("authorization", format!("bEaReR {}", session.token)),
        ("cookie", two_cookies),
    ];
    for (name, value) in &requests {
        let request = get("/", &[(name, value)]);
        let credential = find_credential(request.headers(), &CookieNames::default())
            .expect("well formed")
            .expect("a credential");
        let shown = format!("{credential:?} {credential:#?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_no_secret(&shown, &secrets, "Credential");
    }
    let built = [
        Credential::session_token(&session.token),
        Credential::cookie(&session.cookie_name, &session.cookie_value),
    ];
    for credential in built {
        let credential = credential.expect("valid");
        assert_no_secret(&format!("{credential:?}"), &secrets, "Credential");
    }
    // Refusals, built from secrets.
    let long = invented("long").repeat(200);
    for value in [format!("{} x", invented("spaced")), long.clone()] {
        let request = get("/", &[("x-session-token", &value)]);
        let refusal =
            find_credential(request.headers(), &CookieNames::default()).expect_err("malformed");
        let shown = format!("{refusal:?} {refusal}");
        assert_no_secret(&shown, &[value], "MalformedCredential");
    }

    // The session as the layer hands it over, and as it parses.
    let recorder = Recorder::new();
    let layer = builder(&kratos).build().expect("a layer");
    let service = layer.layer(recorder.service());
    let answer = send(&service, get("/", &[("cookie", &session.cookie_header())])).await;
    assert_eq!(answer.status, StatusCode::OK);
    let handed = recorder.only().session.expect("a session");
    let identity = KratosIdentity::of(&handed).expect("an identity");
    let outcome = Outcome::Authenticated(handed.clone());
    let shown = format!("{handed:?} {handed:#?} {identity:?} {outcome:?} {outcome}");
    assert!(shown.contains(&session.id), "{shown}");
    assert_no_secret(&shown, &secrets, "the session");
    let shown = format!("{layer:?} {layer:#?} {service:?}");
    assert_no_secret(&shown, &secrets, "KratosLayer, KratosService");

    // A stand-in with an admin token, and its builder.
    let admin_token = invented("admin");
    let standin_builder = KratosStandIn::builder().admin_token(admin_token.clone());
    let shown = format!("{standin_builder:?}");
    let admin = standin_builder.start().await.expect("a stand-in");
    let shown = format!("{shown} {admin:?} {kratos:?}");
    assert_no_secret(&shown, &[admin_token], "the stand-in");
}

#[test]
fn a_tokenized_session_does_not_show_its_jwt() {
    // With `tokenize_as`, whoami returns the session as a signed JWT: a bearer credential for
    // whatever accepts it.
    let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJTRUNSRVRTRUNSRVQiOnRydWV9.SECRETSECRETc2lnbmF0dXJl";
    let body = format!(r#"{{"id": "s", "active": true, "tokenized": "{jwt}"}}"#);
    let session: Session = serde_json::from_str(&body).expect("a session");
    assert_eq!(session.tokenized.as_deref(), Some(jwt));
    let shared = KratosSession::new(std::sync::Arc::new(session.clone()));
    let outcome = Outcome::Authenticated(shared.clone());
    let shown = format!("{session:?} {session:#?} {shared:?} {outcome:?}");
    assert_no_secret(&shown, &[jwt.to_owned()], "a tokenized session");
    assert!(shown.contains("tokenized"), "the field is listed: {shown}");
}

#[test]
fn build_errors_do_not_show_credentials_in_urls() {
    let password = "SECRETSECRETpassw0rd";
    for url in [
        format!("https://admin:{password}@kratos.example.test"),
        format!("https://{password}@kratos.example.test"),
    ] {
        let error = KratosLayer::builder(&url).build().expect_err("refused");
        let shown = format!("{error:?} {error}");
        assert_no_secret(&shown, &[password.to_owned()], "BuildError (public_url)");
        let error = KratosLayer::builder("http://127.0.0.1:4433")
            .login_url(&url)
            .build()
            .expect_err("refused");
        let shown = format!("{error:?} {error}");
        assert_no_secret(&shown, &[password.to_owned()], "BuildError (login_url)");
    }
}

#[tokio::test]
async fn layer_debug_shows_no_url_password_and_no_client_header() {
    let kratos = kratos().await;
    let secret = invented("apikey");
    let with_password = KratosLayer::builder(format!("https://admin:{secret}@kratos.example.test"));
    assert_no_secret(
        &format!("{with_password:?}"),
        std::slice::from_ref(&secret),
        "KratosLayerBuilder",
    );
    // An API key for Ory Network's admin routes, as a client's default header.
    let mut headers = http::HeaderMap::new();
    let value = format!("Bearer {secret}").parse().expect("a header value");
    headers.insert(header::AUTHORIZATION, value);
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client");
    let layer = builder(&kratos)
        .http_client(client)
        .build()
        .expect("a layer");
    assert_no_secret(&format!("{layer:?}"), &[secret], "KratosLayer");
}

/// A handler that needs a session behind an optional layer, which shows its rejection.
async fn shows_rejection(session: Result<KratosSession, SessionRejection>) -> String {
    match session {
        Ok(session) => session.id.clone(),
        Err(rejection) => format!("{rejection:?}\n{rejection}"),
    }
}

#[tokio::test]
async fn extractor_rejections_do_not_show_the_credential() {
    let kratos = kratos().await;
    let revoked = kratos.create_session();
    assert!(kratos.revoke_session(&revoked.id));
    let layer = builder(&kratos)
        .login_url("https://auth.example.test/login")
        .build()
        .expect("a layer");
    let app = Router::new()
        .route("/shown", route(shows_rejection))
        .route(
            "/required",
            route(|session: KratosSession| async move { session.id.clone() }),
        )
        .layer(layer.optional());
    let unknown = invented("extractor");
    let mut secrets = secrets_of(&revoked);
    secrets.push(unknown.clone());
    let mut credentials = sources(&revoked).to_vec();
    credentials.push(("x-session-token", unknown));
    credentials.push(("x-session-token", invented("spaced") + " x"));
    for (name, value) in &credentials {
        for path in ["/shown", "/required"] {
            for request in api_and_browser(name, value) {
                let (mut parts, body) = request.into_parts();
                parts.uri = path.parse().expect("a path");
                let request = Request::from_parts(parts, axum::body::Body::from(body));
                let response = app.clone().oneshot(request).await.expect("infallible");
                let answer = Answer::read(response).await;
                if path == "/shown" {
                    assert!(
                        answer.text().contains("NotAuthenticated"),
                        "{}",
                        answer.text()
                    );
                } else {
                    assert_ne!(answer.status, StatusCode::OK, "{path} let {name} through");
                }
                assert_no_secret(&answer.everything(), &secrets, path);
            }
        }
    }
}
