//! What the layer tells operators, and what it never tells anyone: lookups are logged with their
//! outcome, cache status and Kratos's latency; the credential appears in no event, no `Debug`
//! output and no rejection.
//!
//! The subscriber is installed as the thread's default (`support::capture`).

use test_support as support;

use http::StatusCode;
use kratos_stand_in::{Endpoint, Fault};
use tower::Layer;
use tower_kratos::{
    credentials::{find_credential, CookieNames, Credential},
    Outcome,
};

use support::{builder, capture::Captured, get, kratos, layer, send, with_token, Answer, Recorder};

/// A DEBUG capture, the level operators run at.
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    support::capture::capture(tracing::Level::DEBUG)
}

/// Some line of `output` contains every one of `needles`.
fn assert_line(output: &str, needles: &[&str]) {
    assert!(
        output
            .lines()
            .any(|line| needles.iter().all(|needle| line.contains(needle))),
        "no line contains all of {needles:?} in:\n{output}"
    );
}

fn assert_secret_free(text: &str, secrets: &[&str], what: &str) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} shows a credential:\n{text}");
    }
}

#[tokio::test]
async fn lookups_log_outcome_cache_status_and_latency_never_the_credential() {
    let (captured, _guard) = capture();
    let kratos = kratos().await;
    let by_token = kratos.create_session();
    let by_cookie = kratos.create_session();
    let by_bearer = kratos.create_session();
    let unknown = "ory_st_unknownunknownunknownunknown1";
    let recorder = Recorder::new();
    let service = layer(&kratos).layer(recorder.service());
    let mut all = captured.take();

    // A miss: Kratos asked, its latency logged.
    assert_eq!(
        send(&service, with_token("/", &by_token)).await.status,
        StatusCode::OK
    );
    let miss = captured.take();
    assert_line(&miss, &["outcome=\"authenticated\"", "cache=\"miss\""]);
    assert_line(&miss, &["kratos_latency_us="]);
    assert_line(&miss, &[&by_token.identity_id]);
    all += &miss;

    // A hit: served from the cache.
    assert_eq!(
        send(&service, with_token("/", &by_token)).await.status,
        StatusCode::OK
    );
    let hit = captured.take();
    assert_line(&hit, &["outcome=\"authenticated\"", "cache=\"hit\""]);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    all += &hit;

    // The cookie and Bearer paths.
    let cookie = send(
        &service,
        get("/", &[("cookie", &by_cookie.cookie_header())]),
    )
    .await;
    assert_eq!(cookie.status, StatusCode::OK);
    let bearer = format!("Bearer {}", by_bearer.token);
    let answer = send(&service, get("/", &[("authorization", &bearer)])).await;
    assert_eq!(answer.status, StatusCode::OK);
    let others = captured.take();
    assert_line(&others, &["source=\"cookie\"", "cache=\"miss\""]);
    assert_line(&others, &["source=\"bearer\"", "cache=\"miss\""]);
    all += &others;

    // A 401.
    let refused = send(&service, get("/", &[("x-session-token", unknown)])).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let rejected = captured.take();
    assert_line(
        &rejected,
        &["outcome=\"unauthenticated\"", "cache=\"miss\""],
    );
    assert_line(&rejected, &["kratos_latency_us="]);
    all += &rejected;

    // An outage, logged as a warning.
    kratos.clear_faults();
    let down_session = kratos.create_session();
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let down = send(&service, with_token("/", &down_session)).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    let outage = captured.take();
    assert_line(
        &outage,
        &["WARN", "outcome=\"unavailable\"", "cache=\"miss\""],
    );
    assert_line(&outage, &["kratos_latency_us="]);
    all += &outage;

    // A malformed credential, refused without asking Kratos.
    let malformed = "ory_st_secret with spaces";
    let answer = send(&service, get("/", &[("x-session-token", malformed)])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let refused_early = captured.take();
    assert_line(&refused_early, &["outcome=\"unauthenticated\""]);
    all += &refused_early;

    assert_eq!(kratos.calls(Endpoint::Whoami), 5);
    assert_secret_free(
        &all,
        &[
            &by_token.token,
            &by_cookie.cookie_value,
            &by_cookie.token,
            &by_bearer.token,
            unknown,
            &down_session.token,
            "ory_st_secret",
        ],
        "the log",
    );
}

#[tokio::test]
async fn debug_output_of_public_types_never_shows_the_secret() {
    let (captured, _guard) = capture();
    let kratos = kratos().await;
    let session = kratos.create_session();
    let secrets = [session.token.as_str(), session.cookie_value.as_str()];

    let token = Credential::session_token(&session.token).expect("token");
    assert_secret_free(&format!("{token:?}"), &secrets, "Credential (token)");
    let cookie = Credential::cookie(&session.cookie_name, &session.cookie_value).expect("cookie");
    assert_secret_free(&format!("{cookie:?}"), &secrets, "Credential (cookie)");
    assert!(format!("{cookie:?}").contains("[redacted]"));
    let request = get(
        "/",
        &[("authorization", &format!("Bearer {}", session.token))],
    );
    let bearer = find_credential(request.headers(), &CookieNames::default())
        .expect("well formed")
        .expect("found");
    assert_secret_free(&format!("{bearer:?}"), &secrets, "Credential (bearer)");

    // The layer, its service and the outcomes after real lookups (a cached session included).
    let kratos_layer = layer(&kratos);
    let recorder = Recorder::new();
    let service = kratos_layer.layer(recorder.service());
    let by_cookie = get("/", &[("cookie", &session.cookie_header())]);
    assert_eq!(send(&service, by_cookie).await.status, StatusCode::OK);
    assert_eq!(
        send(&service, with_token("/", &session)).await.status,
        StatusCode::OK
    );
    let refused = send(
        &service,
        get("/", &[("x-session-token", "ory_st_refusedrefused")]),
    )
    .await;
    kratos.set_fault(Endpoint::Whoami, Fault::Hang);
    let other = kratos.create_session();
    let down = send(&service, with_token("/", &other)).await;

    assert_secret_free(&format!("{kratos_layer:?}"), &secrets, "KratosLayer");
    assert_secret_free(&format!("{kratos_layer:#?}"), &secrets, "KratosLayer");
    assert_secret_free(&format!("{service:?}"), &secrets, "KratosService");
    let seen = recorder.seen();
    assert_eq!(seen.len(), 2);
    for seen in &seen {
        let session_debug = format!("{:?}", seen.session.as_ref().expect("session"));
        assert!(session_debug.contains(&session.id));
        assert_secret_free(&session_debug, &secrets, "KratosSession");
    }
    let authenticated = Outcome::Authenticated(seen[0].session.clone().expect("session"));
    assert_secret_free(&format!("{authenticated:?}"), &secrets, "Outcome");
    assert_secret_free(&format!("{authenticated}"), &secrets, "Outcome (Display)");
    let refused = refused.outcome();
    assert_secret_free(
        &format!("{refused:?}"),
        &["ory_st_refusedrefused"],
        "Outcome",
    );
    let down = down.outcome();
    assert!(matches!(down, Outcome::Unavailable(_)));
    assert_secret_free(
        &format!("{down:?} {down}"),
        &[other.token.as_str(), other.cookie_value.as_str()],
        "Outcome",
    );

    let log = captured.take();
    assert_line(&log, &["outcome=\"unavailable\""]);
    assert_secret_free(
        &log,
        &[
            secrets[0],
            secrets[1],
            &other.token,
            "ory_st_refusedrefused",
        ],
        "the log",
    );
}

#[tokio::test]
async fn rejections_never_carry_the_credential() {
    let (captured, _guard) = capture();
    let kratos = kratos().await;
    let revoked = kratos.create_session();
    assert!(kratos.revoke_session(&revoked.id));
    let step_up = kratos.session().requires_aal2().create();
    let down = kratos.create_session();
    let service = builder(&kratos)
        .login_url("https://auth.example.test/login")
        .build()
        .expect("layer")
        .layer(Recorder::new().service());
    let browser = |name: &str, value: &str| {
        get(
            "/account",
            &[
                ("host", "app.example.test"),
                ("accept", "text/html"),
                (name, value),
            ],
        )
    };

    let mut answers: Vec<(Answer, Vec<String>)> = Vec::new();
    for session in [&revoked, &step_up] {
        let secrets = vec![session.token.clone(), session.cookie_value.clone()];
        for (name, value) in [
            ("x-session-token", session.token.clone()),
            ("cookie", session.cookie_header()),
            ("authorization", format!("Bearer {}", session.token)),
        ] {
            let api = get("/account", &[(name, &value)]);
            answers.push((send(&service, api).await, secrets.clone()));
            answers.push((send(&service, browser(name, &value)).await, secrets.clone()));
        }
    }
    kratos.set_fault(Endpoint::Whoami, Fault::GarbageBody);
    let secrets = vec![down.token.clone(), down.cookie_value.clone()];
    answers.push((
        send(&service, with_token("/", &down)).await,
        secrets.clone(),
    ));
    let cookie = get("/", &[("cookie", &down.cookie_header())]);
    answers.push((send(&service, cookie).await, secrets));
    let malformed = "ory_st_bad token";
    answers.push((
        send(&service, get("/", &[("x-session-token", malformed)])).await,
        vec![malformed.to_owned()],
    ));

    let statuses: Vec<u16> = answers
        .iter()
        .map(|(answer, _)| answer.status.as_u16())
        .collect();
    assert_eq!(
        statuses,
        [401, 303, 401, 303, 401, 303, 403, 303, 403, 303, 403, 303, 503, 503, 401]
    );
    let log = captured.take();
    assert_line(&log, &["outcome=\"aal_required\""]);
    for (answer, secrets) in &answers {
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        assert_secret_free(&answer.everything(), &secrets, "a rejection");
        assert_secret_free(&format!("{:?}", answer.outcome()), &secrets, "its outcome");
        assert_secret_free(&log, &secrets, "the log");
    }
}

#[tokio::test]
async fn extensions_and_revocations_are_logged_without_any_secret() {
    use kratos_stand_in::{ExtendResponse, KratosStandIn};
    use tower_kratos::lifecycle::SessionExtension;

    let (captured, _guard) = capture();
    let admin_key = "ory_pat_adminsecret0123456789";
    let kratos = KratosStandIn::builder()
        .admin_token(admin_key)
        .extend_response(ExtendResponse::NoContent)
        .start()
        .await
        .expect("stand-in");
    let alice = kratos
        .session()
        .expires_in(std::time::Duration::from_secs(600))
        .create();
    let bob = kratos.create_session();
    let layer = builder(&kratos)
        .admin_url(kratos.admin_url())
        .admin_api_key(admin_key)
        .extend_within(std::time::Duration::from_secs(3600))
        .build()
        .expect("layer");
    let service = layer.clone().layer(Recorder::new().service());

    // An extension of a cookie session: logged with the session id and the new expiry.
    let answer = send(&service, get("/", &[("cookie", &alice.cookie_header())])).await;
    assert_eq!(answer.status, StatusCode::OK);
    let extension = answer
        .extensions
        .get::<SessionExtension>()
        .expect("a report")
        .clone();
    assert!(matches!(extension, SessionExtension::Extended { .. }));
    let extended = captured.take();
    assert_line(
        &extended,
        &["INFO", "Kratos session extended", &alice.id, "expires_at="],
    );
    let reissued = kratos
        .session_state(&alice.id)
        .expect("session")
        .cookie_value;
    assert_ne!(reissued, alice.cookie_value);

    // A failed one: a warning with the reason.
    kratos.set_fault(
        Endpoint::ExtendSession,
        Fault::Status(StatusCode::BAD_GATEWAY),
    );
    let carol = kratos
        .session()
        .expires_in(std::time::Duration::from_secs(600))
        .create();
    assert_eq!(
        send(&service, with_token("/", &carol)).await.status,
        StatusCode::OK
    );
    let failed = captured.take();
    assert_line(&failed, &["WARN", "extension failed", &carol.id, "502"]);

    // A revocation and an API logout.
    let sessions = layer.lifecycle();
    let caller = Credential::session_token(&bob.token).expect("credential");
    sessions.logout(&caller).await.expect("logged out");
    let logged_out = captured.take();
    assert_line(&logged_out, &["INFO", "logged out"]);

    let all = format!(
        "{extended}{failed}{logged_out}{:?}{:?}{:?}",
        extension,
        sessions,
        answer
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .count()
    );
    assert_secret_free(
        &all,
        &[
            &alice.token,
            &alice.cookie_value,
            &reissued,
            &bob.token,
            &carol.token,
            admin_key,
            "adminsecret",
        ],
        "the log",
    );
}

/// A sustained outage writes a bounded number of warnings: per cause, the first at once, then at
/// most one every few seconds saying how many like ones were left out.
#[tokio::test]
async fn a_sustained_outage_writes_a_bounded_number_of_warnings() {
    let (captured, _guard) = support::capture::capture(tracing::Level::WARN);
    let kratos = kratos().await;
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let service = builder(&kratos)
        .backoff(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_millis(400),
        )
        .build()
        .expect("layer")
        .layer(Recorder::new().service());
    let started = std::time::Instant::now();
    let mut requests = 0;
    while started.elapsed() < std::time::Duration::from_millis(6_500) {
        let token = format!("ory_st_{requests}");
        let answer = send(&service, get("/", &[("x-session-token", &token)])).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        requests += 1;
    }
    let log = captured.take();
    let warnings: Vec<&str> = log.lines().filter(|line| line.contains("WARN")).collect();
    let answering = warnings
        .iter()
        .filter(|line| line.contains("answering 503"))
        .count();
    // Two causes (Kratos's 502, and the back-off), each at most twice in 6.5 s.
    assert!(requests > 1_000, "{requests} requests");
    assert!(
        (2..=4).contains(&answering),
        "{answering} '503' warnings for {requests} requests:\n{log}"
    );
    // The summary says how many were left out.
    assert!(
        warnings.iter().any(|line| line.contains("answering 503")
            && line
                .split("left_out_since_last=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|count| count.parse::<u64>().ok())
                .is_some_and(|count| count > 100)),
        "no summary with a count in:\n{log}"
    );
    // Every cause is bounded alike, the back-off's own transitions (a probe failing every
    // 200-400 ms here) included: at most two lines each in 6.5 s.
    assert!(warnings.len() <= 10, "{} warnings:\n{log}", warnings.len());
}

#[tokio::test]
async fn a_call_to_kratos_is_a_client_span_named_as_opentelemetry_names_it() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let kratos = kratos().await;
    let session = kratos.create_session();
    let service = layer(&kratos).layer(Recorder::new().service());
    let answer = send(&service, with_token("/", &session)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let output = captured.take();
    let port = kratos.addr().port().to_string();
    assert_line(
        &output,
        &[
            "kratos_call",
            "otel.name=\"GET /sessions/whoami\"",
            "otel.kind=\"client\"",
            "http.request.method=\"GET\"",
            "server.address=\"127.0.0.1\"",
            &format!("server.port={port}"),
            "url.template=\"/sessions/whoami\"",
            "http.response.status_code=200",
        ],
    );
    // An admin call's span names its path without the id.
    let layer = builder(&kratos)
        .admin_url(kratos.admin_url())
        .build()
        .expect("a layer");
    layer
        .lifecycle()
        .disable_session(&session.id)
        .await
        .expect("disabled");
    let output = captured.take();
    assert_line(
        &output,
        &[
            "kratos_call",
            "otel.name=\"DELETE /admin/sessions/{id}\"",
            "url.template=\"/admin/sessions/{id}\"",
            "http.response.status_code=204",
        ],
    );
    assert_secret_free(&output, &[&session.token], "an admin call's log");
    // The span names no id (the lifecycle's own log line does name the session it disabled).
    let spans: String = output
        .lines()
        .filter_map(|line| line.split_once("kratos_call{").map(|(_, span)| span))
        .collect();
    assert!(!spans.is_empty());
    assert!(!spans.contains(&session.id), "{spans}");
}
