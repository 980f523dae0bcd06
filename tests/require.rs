//! Per-route requirements (`tower_kratos::require`) in front of real routes, against the
//! stand-in over HTTP: each requirement met and unmet for API clients and browsers, their
//! composition, the maximum session age with extension, the check in a handler, and the step-up
//! that is seen at once.

use test_support as support;

use std::time::Duration;

use axum::{routing, Router};
use http::{header, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn};
use serde_json::Value;
use support::{
    assert_session, builder, echo_session, get, kratos, send, split_return_to, with_token, Answer,
};
use time::OffsetDateTime;
use tower::ServiceBuilder;
use tower_kratos::{
    extract::SessionRejection,
    outcome::{Insufficient, Unauthenticated, Unmet},
    require::Requirement,
    KratosLayer, KratosSession, Outcome,
};

const APP: &str = "http://app.example.test";

/// A layer for the stand-in that sends browsers to its login flow.
fn layer(kratos: &KratosStandIn) -> KratosLayer {
    builder(kratos)
        .login_url(&kratos.login_url())
        .app_url(APP)
        .build()
        .expect("layer")
}

/// `layer` around one requirement around the echo handler.
fn route(
    layer: &KratosLayer,
    requirement: Requirement,
) -> impl tower::Service<
    http::Request<String>,
    Response = http::Response<impl http_body::Body<Data = bytes::Bytes, Error: std::fmt::Debug>>,
    Error: std::fmt::Debug,
> + Clone {
    ServiceBuilder::new()
        .layer(layer.clone())
        .layer(layer.require(requirement))
        .service_fn(echo_session)
}

fn browser(uri: &str, cookie: &str) -> http::Request<String> {
    get(
        uri,
        &[
            ("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
            ("cookie", cookie),
        ],
    )
}

fn ago(seconds: u64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::from_secs(seconds)
}

/// The 403 an API client gets: Kratos's envelope naming what is missing, with the flow's URL.
#[track_caller]
fn assert_insufficient(answer: &Answer, id: &str, flow: Option<&str>) -> Value {
    let body = answer.assert_json_error(StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["id"], id, "{body}");
    assert_eq!(body["redirect_browser_to"].as_str(), flow, "{body}");
    assert!(
        matches!(answer.outcome(), Outcome::Insufficient(_)),
        "{:?}",
        answer.outcome()
    );
    body
}

/// A 303 to the stand-in's login flow with `query` and `return_to`.
#[track_caller]
fn assert_sent_to_flow(answer: &Answer, kratos: &KratosStandIn, query: &str, return_to: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SEE_OTHER,
        "body: {}",
        answer.text()
    );
    let location = answer.header(header::LOCATION).expect("a Location");
    let (target, seen) = split_return_to(location);
    assert_eq!(
        target.as_str(),
        format!("{}{query}", kratos.login_url()),
        "{location}"
    );
    assert_eq!(seen.as_deref(), Some(return_to), "{location}");
}

#[tokio::test]
async fn a_second_factor_met_and_unmet() {
    let kratos = kratos().await;
    let layer = layer(&kratos);
    let billing = route(&layer, Requirement::new().second_factor());
    let aal1 = kratos.create_session();
    let aal2 = kratos.session().aal2().create();
    let flow = format!("{}?aal=aal2", kratos.login_url());

    let met = send(&billing, with_token("/billing", &aal2)).await;
    assert_session(&met, &aal2.id, &aal2.identity_id);

    let api = send(&billing, with_token("/billing", &aal1)).await;
    let body = assert_insufficient(&api, "second_factor_required", Some(&flow));
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("a second factor"),
        "{body}"
    );
    assert!(matches!(
        api.outcome(),
        Outcome::Insufficient(Insufficient {
            unmet: Unmet::SecondFactor,
            ..
        })
    ));

    let page = send(&billing, browser("/billing?tab=2", &aal1.cookie_header())).await;
    assert_sent_to_flow(&page, &kratos, "?aal=aal2", &format!("{APP}/billing?tab=2"));
    // Never a 401: the user is signed in.
    assert!(!matches!(
        page.outcome(),
        Outcome::Unauthenticated(_) | Outcome::Anonymous
    ));
}

#[tokio::test]
async fn a_recent_sign_in_met_and_unmet() {
    let kratos = kratos().await;
    let layer = layer(&kratos);
    let settings = route(
        &layer,
        Requirement::new().signed_in_within(Duration::from_secs(300)),
    );
    let fresh = kratos.session().authenticated_at(ago(60)).create();
    let stale = kratos.session().issued_at(ago(3600)).create();
    let flow = format!("{}?refresh=true", kratos.login_url());

    assert_session(
        &send(&settings, with_token("/settings", &fresh)).await,
        &fresh.id,
        &fresh.identity_id,
    );
    let api = send(&settings, with_token("/settings", &stale)).await;
    assert_insufficient(&api, "recent_sign_in_required", Some(&flow));
    assert!(matches!(
        api.outcome(),
        Outcome::Insufficient(Insufficient { unmet: Unmet::RecentSignIn { within }, .. })
            if *within == Duration::from_secs(300)
    ));
    let page = send(&settings, browser("/settings", &stale.cookie_header())).await;
    assert_sent_to_flow(&page, &kratos, "?refresh=true", &format!("{APP}/settings"));
}

#[tokio::test]
async fn a_condition_met_and_unmet_sends_no_browser_anywhere() {
    let kratos = kratos().await;
    let layer = layer(&kratos);
    let admins = route(
        &layer,
        Requirement::new().condition("role admin", |session: &KratosSession| {
            session
                .identity
                .as_ref()
                .is_some_and(|identity| identity.traits.to_value()["role"] == "admin")
        }),
    );
    let admin = kratos
        .session()
        .traits(serde_json::json!({"role": "admin"}))
        .create();
    let user = kratos.create_session();

    assert_session(
        &send(&admins, with_token("/admin", &admin)).await,
        &admin.id,
        &admin.identity_id,
    );
    let api = send(&admins, with_token("/admin", &user)).await;
    let body = assert_insufficient(&api, "condition_unmet", None);
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("role admin"),
        "{body}"
    );
    // No Kratos flow meets it: browsers get the 403 too, not a redirect.
    let page = send(&admins, browser("/admin", &user.cookie_header())).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text());
}

#[tokio::test]
async fn a_maximum_age_is_refused_like_an_expired_session() {
    let kratos = kratos().await;
    let layer = layer(&kratos);
    let young_only = route(
        &layer,
        Requirement::new().max_session_age(Duration::from_secs(3600)),
    );
    let young = kratos.session().issued_at(ago(600)).create();
    // Re-authenticated a minute ago, but signed in two hours ago: re-authenticating does not
    // make a session younger.
    let old = kratos
        .session()
        .issued_at(ago(7200))
        .authenticated_at(ago(60))
        .create();

    assert_session(
        &send(&young_only, with_token("/", &young)).await,
        &young.id,
        &young.identity_id,
    );
    let api = send(&young_only, with_token("/", &old)).await;
    api.assert_json_error(StatusCode::UNAUTHORIZED);
    assert!(
        matches!(
            api.outcome(),
            Outcome::Unauthenticated(Unauthenticated::TooOld)
        ),
        "{:?}",
        api.outcome()
    );
    // Browsers go to plain sign-in: that is the only remedy.
    let page = send(&young_only, browser("/", &old.cookie_header())).await;
    assert_sent_to_flow(&page, &kratos, "", &format!("{APP}/"));
}

#[tokio::test]
async fn requirements_compose_by_layering_and_by_adding() {
    let kratos = kratos().await;
    let layer = layer(&kratos);
    let both_added = route(
        &layer,
        Requirement::new()
            .second_factor()
            .signed_in_within(Duration::from_secs(300)),
    );
    let both_layered = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(layer.require(Requirement::new().second_factor()))
        .layer(layer.require(Requirement::new().signed_in_within(Duration::from_secs(300))))
        .service_fn(echo_session);
    let aal2_stale = kratos.session().aal2().issued_at(ago(3600)).create();
    let aal1_fresh = kratos.create_session();
    let aal2_fresh = kratos.session().aal2().create();

    for (name, answer) in [
        (
            "added",
            send(&both_added, with_token("/", &aal2_stale)).await,
        ),
        (
            "layered",
            send(&both_layered, with_token("/", &aal2_stale)).await,
        ),
    ] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(
            answer.json()["error"]["id"],
            "recent_sign_in_required",
            "{name}"
        );
    }
    for (name, answer) in [
        (
            "added",
            send(&both_added, with_token("/", &aal1_fresh)).await,
        ),
        (
            "layered",
            send(&both_layered, with_token("/", &aal1_fresh)).await,
        ),
    ] {
        assert_eq!(
            answer.json()["error"]["id"],
            "second_factor_required",
            "{name}"
        );
    }
    assert_session(
        &send(&both_added, with_token("/", &aal2_fresh)).await,
        &aal2_fresh.id,
        &aal2_fresh.identity_id,
    );
    assert_session(
        &send(&both_layered, with_token("/", &aal2_fresh)).await,
        &aal2_fresh.id,
        &aal2_fresh.identity_id,
    );
    // One whoami per session, whatever the number of requirements: they read the session the
    // layer has.
    assert_eq!(
        kratos.calls_for_session(Endpoint::Whoami, &aal2_fresh.id),
        1
    );
}

#[tokio::test]
async fn a_step_up_is_seen_at_once_whatever_the_cache_ttl() {
    let kratos = kratos().await;
    let layer = builder(&kratos)
        .cache_ttl(Duration::from_secs(3600))
        .build()
        .expect("layer");
    let billing = route(&layer, Requirement::new().second_factor());
    let session = kratos.create_session();

    let before = send(&billing, with_token("/billing", &session)).await;
    assert_eq!(before.status, StatusCode::FORBIDDEN);
    // The user completes the second factor in Kratos's flow (here: the stand-in's login page,
    // with the session's cookie).
    step_up(&kratos, &session.cookie_header()).await;
    assert_eq!(
        kratos.session_state(&session.id).expect("state").aal,
        "aal2"
    );

    // The token is the same; the layer asks Kratos again rather than serving the cached aal1.
    let after = send(&billing, with_token("/billing", &session)).await;
    assert_session(&after, &session.id, &session.identity_id);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 2);
    // And then it is cached again.
    send(&billing, with_token("/billing", &session)).await;
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 2);
}

/// A refusal is not a revocation (security trial, finding 1): a client asking a refused route in
/// a loop costs Kratos at most one whoami per session per recheck window, and a user who steps
/// up passes within that window, whatever the cache TTL.
#[tokio::test]
async fn refusals_in_a_loop_cost_kratos_one_whoami_per_window_and_a_step_up_passes_within_it() {
    let kratos = kratos().await;
    let layer = builder(&kratos)
        .cache_ttl(Duration::from_secs(3600))
        .build()
        .expect("layer");
    let billing = route(&layer, Requirement::new().second_factor());
    let session = kratos.create_session();
    let flow = format!("{}?aal=aal2", kratos.login_url());

    for _ in 0..100 {
        let answer = send(&billing, with_token("/billing", &session)).await;
        assert_insufficient(&answer, "second_factor_required", Some(&flow));
    }
    let looped = kratos.calls_for_session(Endpoint::Whoami, &session.id);
    assert!(looped <= 3, "100 refusals made {looped} whoami calls");

    step_up(&kratos, &session.cookie_header()).await;
    let stepped_up = std::time::Instant::now();
    let passed = loop {
        let answer = send(&billing, with_token("/billing", &session)).await;
        if answer.status == StatusCode::OK {
            break answer;
        }
        assert_insufficient(&answer, "second_factor_required", Some(&flow));
        assert!(
            stepped_up.elapsed() < tower_kratos::defaults::RECHECK_SPACING + Duration::from_secs(1),
            "still refused {:?} after the step-up",
            stepped_up.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_session(&passed, &session.id, &session.identity_id);
    let total = kratos.calls_for_session(Endpoint::Whoami, &session.id);
    assert!(total <= looped + 2, "{total} whoami calls in all");
}

/// Completes the stand-in's `aal=aal2` flow for the session with this cookie.
async fn step_up(kratos: &KratosStandIn, cookie: &str) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let started = client
        .get(format!("{}?aal=aal2", kratos.login_url()))
        .header("cookie", cookie)
        .send()
        .await
        .expect("start the flow");
    let page = started.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let posted = client
        .post(page.replacen("/login?", "/self-service/login?", 1))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("method=totp")
        .send()
        .await
        .expect("post the second factor");
    assert_eq!(posted.status(), 303);
}

#[tokio::test]
async fn the_layers_maximum_age_caps_entries_and_extensions() {
    let kratos = kratos().await;
    let max_age = Duration::from_secs(3600);
    let layer = builder(&kratos)
        .admin_url(kratos.admin_url())
        .max_session_age(max_age)
        .extend_within(Duration::from_secs(24 * 3600))
        .cache_ttl(Duration::from_secs(3600))
        .build()
        .expect("layer");
    let app = ServiceBuilder::new().layer(layer).service_fn(echo_session);

    // Past the age: refused, whatever Kratos says of it.
    let old = kratos.session().issued_at(ago(7200)).create();
    let refused = send(&app, with_token("/", &old)).await;
    assert!(
        matches!(
            refused.outcome(),
            Outcome::Unauthenticated(Unauthenticated::TooOld)
        ),
        "{:?}",
        refused.outcome()
    );
    assert_eq!(
        kratos.calls(Endpoint::ExtendSession),
        0,
        "no extension for a refused session"
    );

    // Young, expiring before its cap: extended (and Kratos's expiry moves past the cap).
    let young = kratos
        .session()
        .issued_at(ago(600))
        .expires_in(Duration::from_secs(300))
        .create();
    assert_session(
        &send(&app, with_token("/", &young)).await,
        &young.id,
        &young.identity_id,
    );
    support::wait_for_calls(&kratos, Endpoint::ExtendSession, 1).await;

    // Its present expiry already at or past the cap: an extension would give it nothing the
    // layer accepts, so Kratos is not asked.
    let capped = kratos
        .session()
        .issued_at(ago(3000))
        .expires_in(Duration::from_secs(1200))
        .create();
    assert_session(
        &send(&app, with_token("/", &capped)).await,
        &capped.id,
        &capped.identity_id,
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        kratos.calls_for_session(Endpoint::ExtendSession, &capped.id),
        0
    );

    // A cached entry ends when its session reaches the age, whatever the cache TTL.
    let nearly = kratos.session().issued_at(ago(3598)).create();
    assert_session(
        &send(&app, with_token("/", &nearly)).await,
        &nearly.id,
        &nearly.identity_id,
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let aged = send(&app, with_token("/", &nearly)).await;
    assert!(
        matches!(
            aged.outcome(),
            Outcome::Unauthenticated(Unauthenticated::TooOld)
        ),
        "{:?}",
        aged.outcome()
    );
}

#[tokio::test]
async fn a_handler_checks_a_requirement_with_question_mark() {
    async fn delete_account(session: KratosSession) -> Result<&'static str, SessionRejection> {
        Requirement::new()
            .signed_in_within(Duration::from_secs(300))
            .check(&session)?;
        Ok("deleted")
    }
    let kratos = kratos().await;
    let app = Router::new()
        .route("/account", routing::get(delete_account))
        .layer(layer(&kratos));
    let fresh = kratos.create_session();
    let stale = kratos.session().issued_at(ago(3600)).create();

    let ok = send(&app, with_token("/account", &fresh)).await;
    assert_eq!((ok.status, ok.text()), (StatusCode::OK, "deleted"));
    let refused = send(&app, with_token("/account", &stale)).await;
    let body = refused.assert_json_error(StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["id"], "recent_sign_in_required", "{body}");
    assert!(matches!(refused.outcome(), Outcome::Insufficient(_)));
}

#[tokio::test]
async fn a_requirement_without_the_layer_is_the_servers_fault() {
    let kratos = kratos().await;
    let layer = layer(&kratos);
    let unguarded = ServiceBuilder::new()
        .layer(layer.require(Requirement::new().second_factor()))
        .service_fn(echo_session);
    let session = kratos.session().aal2().create();

    let answer = send(&unguarded, with_token("/", &session)).await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        answer.text()
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);

    // Under the optional layer, no session is a 401 (or the login page), never the handler.
    let optional = ServiceBuilder::new()
        .layer(layer.optional())
        .layer(layer.require(Requirement::new()))
        .service_fn(echo_session);
    let anonymous = send(&optional, get("/", &[])).await;
    anonymous.assert_json_error(StatusCode::UNAUTHORIZED);
}
