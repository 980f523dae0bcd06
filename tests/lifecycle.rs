//! Session lifecycle: extension (the layer setting and the handler helper), the relayed
//! `Set-Cookie`, admin API failures, and every revocation helper's immediate effect on this
//! process's cache. Each test runs a stand-in on loopback and asserts on the response and on
//! what Kratos saw (calls per endpoint, headers).

use test_support as support;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use http::{header, HeaderMap, Request, Response, StatusCode};
use kratos_stand_in::{Endpoint, ExtendResponse, Fault, KratosStandIn, TestSession};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tower::Layer;
use tower_kratos::{
    authenticate::KratosLayerBuilder,
    credentials::Credential,
    lifecycle::{LifecycleError, Page, SessionExtension, SessionLifecycle},
    outcome::Unavailable,
    KratosLayer, KratosSession,
};

use support::{
    assert_unauthorized, default_layer, get, post, send, token_headers, values, with_token, Answer,
};

const HOUR: Duration = Duration::from_secs(3600);
/// Far from expiry: never due for [`HOUR`].
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Close to expiry: due for [`HOUR`].
const TEN_MINUTES: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A layer builder for this stand-in: admin API configured, a cache TTL far longer than any test,
/// so every rejection below is this process's own doing, not an expired entry.
fn builder(kratos: &KratosStandIn) -> KratosLayerBuilder {
    KratosLayer::builder(kratos.public_url())
        .admin_url(kratos.admin_url())
        .cache_ttl(HOUR)
}

/// The layer that extends sessions expiring within the hour.
fn extending(kratos: &KratosStandIn) -> KratosLayerBuilder {
    builder(kratos).extend_within(HOUR)
}

/// What reached the inner service.
#[derive(Clone, Debug)]
struct Seen {
    session: KratosSession,
    extension: Option<SessionExtension>,
}

/// The inner service: 200 `inner` (with its own `Set-Cookie: app=1` when asked), recording the
/// session and extension report each request carried; 500 without a session.
#[derive(Clone, Default)]
struct Handler {
    seen: Arc<Mutex<Vec<Seen>>>,
    own_cookie: bool,
}

impl Handler {
    fn with_own_cookie() -> Self {
        Self {
            own_cookie: true,
            ..Self::default()
        }
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future: Send,
    > + Clone
           + Send
           + 'static {
        let handler = self.clone();
        tower::service_fn(move |request: Request<String>| {
            let handler = handler.clone();
            async move {
                let Some(session) = request.extensions().get::<KratosSession>().cloned() else {
                    let mut response = Response::new("no session".to_owned());
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return Ok(response);
                };
                handler
                    .seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Seen {
                        session,
                        extension: request.extensions().get::<SessionExtension>().cloned(),
                    });
                let mut response = Response::new("inner".to_owned());
                if handler.own_cookie {
                    response
                        .headers_mut()
                        .insert(header::SET_COOKIE, "app=1; Path=/".parse().expect("value"));
                }
                Ok(response)
            }
        })
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
            .expect("a request reached the handler")
    }
}

fn cookie(session: &TestSession) -> Request<String> {
    get("/", &[("cookie", &session.cookie_header())])
}

fn headers_with(name: &str, value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
        value.parse().expect("value"),
    );
    headers
}

fn set_cookies(answer: &Answer) -> Vec<String> {
    values(&answer.headers, "set-cookie")
}

fn extension(answer: &Answer) -> Option<&SessionExtension> {
    answer.extensions.get::<SessionExtension>()
}

/// A 200 from the inner service.
#[track_caller]
fn assert_served(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK, "body: {}", answer.text());
    assert_eq!(answer.text(), "inner");
}

fn expires_at(kratos: &KratosStandIn, session: &TestSession) -> OffsetDateTime {
    kratos
        .session_state(&session.id)
        .expect("the session exists")
        .expires_at
}

fn no_calls_at_all(kratos: &KratosStandIn) -> bool {
    [
        Endpoint::Whoami,
        Endpoint::ListMySessions,
        Endpoint::RevokeMyOtherSessions,
        Endpoint::RevokeMySession,
        Endpoint::ExtendSession,
        Endpoint::AdminGetSession,
        Endpoint::AdminDisableSession,
        Endpoint::AdminDeleteIdentitySessions,
        Endpoint::LogoutApi,
        Endpoint::Other,
    ]
    .into_iter()
    .all(|endpoint| kratos.calls(endpoint) == 0)
}

// ---------------------------------------------------------------------------------------------
// Extension by the layer: when, how often

#[tokio::test]
async fn a_session_far_from_expiry_is_never_extended() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(DAY).create();
    let handler = Handler::default();
    let service = extending(&kratos)
        .build()
        .expect("layer")
        .layer(handler.service());

    for _ in 0..5 {
        let answer = send(&service, with_token("/", &alice)).await;
        assert_served(&answer);
        assert!(extension(&answer).is_none());
        assert!(set_cookies(&answer).is_empty());
        assert!(handler.last().extension.is_none());
    }
    let sessions = extending(&kratos).build().expect("layer").lifecycle();
    let outcome = sessions
        .extend_if_expiring(&token_headers(&alice), HOUR)
        .await
        .expect("a session");
    assert!(outcome.attempt().is_none());
    assert!(!outcome.extended());
    assert_eq!(outcome.expires_at(), Some(alice.expires_at));

    assert_eq!(kratos.calls(Endpoint::ExtendSession), 0);
    // One whoami per layer (each has its own cache), none for extension.
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_of_a_nearly_expired_session_make_one_patch() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    // The admin API answers slowly, so every request is waiting before the extension ends.
    kratos.set_fault(
        Endpoint::ExtendSession,
        Fault::Delay(Duration::from_millis(300)),
    );
    let handler = Handler::default();
    let service = extending(&kratos)
        .build()
        .expect("layer")
        .layer(handler.service());

    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let service = service.clone();
        let request = with_token("/", &alice);
        tasks.spawn(async move { send(&service, request).await });
    }
    let answers = tasks.join_all().await;

    let extended_to = expires_at(&kratos, &alice);
    assert!(extended_to > alice.expires_at);
    for answer in &answers {
        assert_served(answer);
        assert_eq!(
            extension(answer),
            Some(&SessionExtension::Extended {
                expires_at: extended_to
            })
        );
    }
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
    assert_eq!(
        kratos.calls_for_session(Endpoint::ExtendSession, &alice.id),
        1
    );
    // One whoami for the 50 coalesced lookups, one to confirm the extension.
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);

    // The next request sees the new expiry from the cache: not due, nothing asked.
    let answer = send(&service, with_token("/", &alice)).await;
    assert_served(&answer);
    assert!(extension(&answer).is_none());
    assert_eq!(handler.last().session.expires_at, Some(extended_to));
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

/// One nearly-expired session through the extending layer, with Kratos answering the extension
/// as `style`: extended, confirmed, and the next request served the new expiry from the cache.
async fn extension_refreshes_the_cache(style: ExtendResponse) {
    let kratos = KratosStandIn::builder()
        .extend_response(style)
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let handler = Handler::default();
    let service = extending(&kratos)
        .build()
        .expect("layer")
        .layer(handler.service());

    let first = send(&service, with_token("/", &alice)).await;

    assert_served(&first);
    let extended_to = expires_at(&kratos, &alice);
    assert!(extended_to > alice.expires_at + Duration::from_secs(3600));
    let report = SessionExtension::Extended {
        expires_at: extended_to,
    };
    assert_eq!(extension(&first), Some(&report));
    let seen = handler.last();
    assert_eq!(seen.extension, Some(report));
    assert_eq!(seen.session.expires_at, Some(extended_to));
    assert!(
        set_cookies(&first).is_empty(),
        "a token session gets no cookie"
    );

    let patches = kratos.requests(Endpoint::ExtendSession);
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].method, http::Method::PATCH);
    assert_eq!(
        patches[0].uri.path(),
        format!("/admin/sessions/{}/extend", alice.id)
    );
    assert!(patches[0].headers.get(header::AUTHORIZATION).is_none());
    assert!(patches[0].headers.get("x-session-token").is_none());
    assert!(patches[0].headers.get(header::COOKIE).is_none());
    // The lookup's whoami, and the one confirming the extension, past Ory Network's cache.
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 2);
    let whoamis = kratos.requests(Endpoint::Whoami);
    assert!(whoamis[0].headers.get(header::CACHE_CONTROL).is_none());
    assert_eq!(whoamis[1].headers[header::CACHE_CONTROL], "max-age=0");

    let second = send(&service, with_token("/", &alice)).await;
    assert_served(&second);
    assert!(extension(&second).is_none());
    assert_eq!(handler.last().session.expires_at, Some(extended_to));
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

#[tokio::test]
async fn an_extension_answered_200_refreshes_the_cached_session() {
    extension_refreshes_the_cache(ExtendResponse::WithBody).await;
}

#[tokio::test]
async fn an_extension_answered_204_refreshes_the_cached_session() {
    extension_refreshes_the_cache(ExtendResponse::NoContent).await;
}

#[tokio::test]
async fn the_admin_api_key_goes_to_the_admin_api_only_and_never_into_debug() {
    let key = "ory_pat_0123456789secret";
    let kratos = KratosStandIn::builder()
        .admin_token(key)
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let layer = extending(&kratos)
        .admin_api_key(key)
        .build()
        .expect("layer");
    assert!(!format!("{layer:?}").contains("secret"), "{layer:?}");
    assert!(!format!("{:?}", layer.lifecycle()).contains("secret"));
    assert!(!format!("{:?}", extending(&kratos).admin_api_key(key)).contains("secret"));
    let service = layer.layer(Handler::default().service());

    let answer = send(&service, with_token("/", &alice)).await;

    assert_served(&answer);
    assert!(matches!(
        extension(&answer),
        Some(SessionExtension::Extended { .. })
    ));
    let patch = &kratos.requests(Endpoint::ExtendSession)[0];
    assert_eq!(
        patch.headers[header::AUTHORIZATION],
        format!("Bearer {key}").as_str()
    );
    for whoami in kratos.requests(Endpoint::Whoami) {
        assert!(whoami.headers.get(header::AUTHORIZATION).is_none());
    }
}

#[tokio::test]
async fn a_404_is_reported_as_gone_and_the_request_is_served() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    kratos.set_fault(
        Endpoint::ExtendSession,
        Fault::Status(StatusCode::NOT_FOUND),
    );
    let handler = Handler::default();
    let service = extending(&kratos)
        .build()
        .expect("layer")
        .layer(handler.service());

    let answer = send(&service, with_token("/", &alice)).await;

    assert_served(&answer);
    assert_eq!(extension(&answer), Some(&SessionExtension::Gone));
    assert_eq!(handler.last().session.expires_at, Some(alice.expires_at));
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    // The session's cached entry is in doubt: the next request asks Kratos again (which still
    // knows it), and within the cooldown the extension is not tried again.
    let again = send(&service, with_token("/", &alice)).await;
    assert_served(&again);
    assert_eq!(extension(&again), Some(&SessionExtension::Gone));
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
}

/// Kratos's `earliest_possible_extend` is 5 minutes; a session 10 minutes from expiry is due for
/// the layer (within the hour) but too early for Kratos.
async fn too_early(style: ExtendResponse, whoami_calls: usize) {
    let kratos = KratosStandIn::builder()
        .extend_response(style)
        .earliest_possible_extend(Duration::from_secs(300))
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let service = extending(&kratos)
        .build()
        .expect("layer")
        .layer(Handler::default().service());

    let answer = send(&service, with_token("/", &alice)).await;

    assert_served(&answer);
    assert_eq!(
        extension(&answer),
        Some(&SessionExtension::NotExtended {
            expires_at: Some(alice.expires_at)
        })
    );
    assert_eq!(expires_at(&kratos, &alice), alice.expires_at);
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
    assert_eq!(kratos.calls(Endpoint::Whoami), whoami_calls);

    // Still due, but within the cooldown: the same report, no second PATCH.
    let again = send(&service, with_token("/", &alice)).await;
    assert!(matches!(
        extension(&again),
        Some(SessionExtension::NotExtended { .. })
    ));
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
    assert_eq!(kratos.calls(Endpoint::Whoami), whoami_calls);
}

#[tokio::test]
async fn an_unchanged_expiry_in_a_200_is_not_extended_and_needs_no_whoami() {
    too_early(ExtendResponse::WithBody, 1).await;
}

#[tokio::test]
async fn an_unchanged_expiry_after_a_204_is_not_extended() {
    // 204 says nothing: one whoami finds the expiry unchanged.
    too_early(ExtendResponse::NoContent, 2).await;
}

// ---------------------------------------------------------------------------------------------
// The browser's cookie follows

#[tokio::test]
async fn a_cookie_session_gets_the_reissued_cookie_from_the_layer() {
    let kratos = KratosStandIn::builder()
        .extend_response(ExtendResponse::NoContent)
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let handler = Handler::with_own_cookie();
    let service = extending(&kratos)
        .build()
        .expect("layer")
        .layer(handler.service());

    let answer = send(&service, cookie(&alice)).await;

    assert_served(&answer);
    let now = kratos.session_state(&alice.id).expect("session");
    assert_ne!(now.cookie_value, alice.cookie_value, "Kratos re-issued it");
    let cookies = set_cookies(&answer);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert_eq!(cookies[0], "app=1; Path=/", "the handler's cookie is kept");
    assert!(
        cookies[1].starts_with(&format!("{}; ", now.cookie_header())),
        "{cookies:?}"
    );
    assert_eq!(answer.header(header::CACHE_CONTROL), Some("private"));
    assert!(matches!(
        extension(&answer),
        Some(SessionExtension::Extended { .. })
    ));

    // The browser sends the new cookie: it works, and needs nothing re-issued.
    let next = send(&service, cookie(&now)).await;
    assert_served(&next);
    assert_eq!(set_cookies(&next), ["app=1; Path=/"]);
    assert_eq!(handler.last().session.expires_at, Some(now.expires_at));
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
}

#[tokio::test]
async fn a_token_session_never_gets_a_cookie() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let service = extending(&kratos)
        .build()
        .expect("layer")
        .layer(Handler::default().service());

    for request in [
        with_token("/", &alice),
        get(
            "/",
            &[("authorization", &format!("Bearer {}", alice.token))],
        ),
    ] {
        let answer = send(&service, request).await;
        assert_served(&answer);
        assert!(set_cookies(&answer).is_empty());
        assert!(answer.header(header::CACHE_CONTROL).is_none());
    }
    assert!(expires_at(&kratos, &alice) > alice.expires_at);
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
}

#[tokio::test]
async fn relaying_the_cookie_can_be_switched_off() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let service = extending(&kratos)
        .relay_set_cookie(false)
        .build()
        .expect("layer")
        .layer(Handler::default().service());

    let answer = send(&service, cookie(&alice)).await;

    assert_served(&answer);
    assert!(matches!(
        extension(&answer),
        Some(SessionExtension::Extended { .. })
    ));
    let now = kratos.session_state(&alice.id).expect("session");
    assert_ne!(
        now.cookie_value, alice.cookie_value,
        "Kratos did re-issue it"
    );
    assert!(set_cookies(&answer).is_empty());
}

#[tokio::test]
async fn a_cookie_reissued_on_an_ordinary_lookup_is_appended_to_the_response() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    // Extended elsewhere (another replica, Kratos's own refresh): the cookie is now outdated.
    let later = alice.expires_at + Duration::from_secs(3600);
    assert!(kratos.set_expires_at(&alice.id, later));
    let service = builder(&kratos)
        .build()
        .expect("layer")
        .layer(Handler::with_own_cookie().service());

    let answer = send(&service, cookie(&alice)).await;

    assert_served(&answer);
    let now = kratos.session_state(&alice.id).expect("session");
    let cookies = set_cookies(&answer);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert_eq!(cookies[0], "app=1; Path=/");
    assert!(cookies[1].starts_with(&format!("{}; ", now.cookie_header())));
    assert!(extension(&answer).is_none(), "no extension was attempted");
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 0);

    // Off: the same situation relays nothing.
    let bob = kratos.create_session();
    assert!(kratos.set_expires_at(&bob.id, later));
    let quiet = builder(&kratos)
        .relay_set_cookie(false)
        .build()
        .expect("layer")
        .layer(Handler::default().service());
    let answer = send(&quiet, cookie(&bob)).await;
    assert_served(&answer);
    assert!(set_cookies(&answer).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The handler helper

async fn extend_route(
    axum::extract::State(sessions): axum::extract::State<SessionLifecycle>,
    headers: HeaderMap,
) -> Result<impl axum::response::IntoResponse, LifecycleError> {
    let outcome = sessions.extend_if_expiring(&headers, HOUR).await?;
    let body = serde_json::json!({
        "extended": outcome.extended(),
        "expires_at": outcome.expires_at().map(|at| at.unix_timestamp()),
    });
    Ok((outcome, axum::Json(body)))
}

fn helper_app(layer: KratosLayer) -> axum::Router {
    axum::Router::new()
        .route("/me/extend", axum::routing::post(extend_route))
        .layer(layer.clone())
        .with_state(layer.lifecycle())
}

#[tokio::test]
async fn the_helper_extends_once_and_relays_the_cookie_in_the_handlers_response() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let app = helper_app(builder(&kratos).build().expect("layer"));

    let answer = send(
        &app,
        post("/me/extend", &[("cookie", &alice.cookie_header())]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let now = kratos.session_state(&alice.id).expect("session");
    assert_eq!(
        answer.json(),
        serde_json::json!({"extended": true, "expires_at": now.expires_at.unix_timestamp()})
    );
    let cookies = set_cookies(&answer);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with(&format!("{}; ", now.cookie_header())));

    // Asked again with the new cookie: no longer due, no Kratos call, no cookie.
    let again = send(
        &app,
        post("/me/extend", &[("cookie", &now.cookie_header())]),
    )
    .await;
    assert_eq!(again.json()["extended"], false);
    assert!(set_cookies(&again).is_empty());
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
}

#[tokio::test]
async fn the_helper_gives_token_sessions_no_cookie() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let app = helper_app(builder(&kratos).build().expect("layer"));

    let answer = send(
        &app,
        post("/me/extend", &[("x-session-token", &alice.token)]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["extended"], true);
    assert!(set_cookies(&answer).is_empty());
    assert!(answer.header(header::CACHE_CONTROL).is_none());
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
}

#[tokio::test]
async fn the_helper_refuses_what_it_cannot_extend_without_calling_the_admin_api() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let sessions = builder(&kratos).build().expect("layer").lifecycle();

    assert_eq!(
        sessions
            .extend_if_expiring(&HeaderMap::new(), HOUR)
            .await
            .unwrap_err(),
        LifecycleError::NoCredential
    );
    let unknown = headers_with("x-session-token", "ory_st_unknown");
    assert_eq!(
        sessions
            .extend_if_expiring(&unknown, HOUR)
            .await
            .unwrap_err(),
        LifecycleError::Unauthenticated
    );
    let without_admin = default_layer(&kratos).lifecycle();
    assert_eq!(
        without_admin
            .extend_if_expiring(&token_headers(&alice), HOUR)
            .await
            .unwrap_err(),
        LifecycleError::AdminNotConfigured
    );
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 0);
}

// ---------------------------------------------------------------------------------------------
// Admin API failures never fail the request

/// A nearly-expired session's request while the admin API fails with `fault`: served with the
/// session it had, the failure in the report; then no further PATCH for it or any other session
/// until the pause ends.
async fn admin_failure(fault: Fault, expected: LifecycleError) {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let bob = kratos.session().expires_in(TEN_MINUTES).create();
    kratos.set_fault(Endpoint::ExtendSession, fault);
    let handler = Handler::default();
    let service = extending(&kratos)
        .admin_timeout(Duration::from_millis(300))
        .build()
        .expect("layer")
        .layer(handler.service());

    let answer = tokio::time::timeout(Duration::from_secs(10), send(&service, cookie(&alice)))
        .await
        .expect("the layer answers");

    assert_served(&answer);
    let report = SessionExtension::Failed(expected);
    assert_eq!(extension(&answer), Some(&report));
    let seen = handler.last();
    assert_eq!(seen.extension, Some(report.clone()));
    assert_eq!(seen.session.expires_at, Some(alice.expires_at));
    assert!(set_cookies(&answer).is_empty());
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);

    for session in [&alice, &bob] {
        let answer = send(&service, with_token("/", session)).await;
        assert_served(&answer);
        assert_eq!(extension(&answer), Some(&report));
    }
    assert_eq!(
        kratos.calls(Endpoint::ExtendSession),
        1,
        "the admin API is left alone"
    );
    assert_eq!(expires_at(&kratos, &alice), alice.expires_at);
}

#[tokio::test]
async fn an_admin_api_that_is_down_does_not_fail_the_request() {
    admin_failure(
        Fault::CloseConnection,
        LifecycleError::Unavailable(Unavailable::Transport),
    )
    .await;
}

#[tokio::test]
async fn an_admin_api_slower_than_its_timeout_does_not_fail_the_request() {
    admin_failure(
        Fault::Hang,
        LifecycleError::Unavailable(Unavailable::Timeout),
    )
    .await;
}

#[tokio::test]
async fn an_admin_api_rate_limit_does_not_fail_the_request() {
    admin_failure(
        Fault::RateLimited {
            retry_after: Some(30),
        },
        LifecycleError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        },
    )
    .await;
}

#[tokio::test]
async fn an_admin_api_5xx_does_not_fail_the_request() {
    admin_failure(
        Fault::Status(StatusCode::BAD_GATEWAY),
        LifecycleError::Unavailable(Unavailable::Status(StatusCode::BAD_GATEWAY)),
    )
    .await;
}

#[tokio::test]
async fn a_refused_admin_key_does_not_fail_the_request() {
    let kratos = KratosStandIn::builder()
        .admin_token("ory_pat_right")
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.session().expires_in(TEN_MINUTES).create();
    let service = extending(&kratos)
        .admin_api_key("ory_pat_wrong")
        .build()
        .expect("layer")
        .layer(Handler::default().service());

    let answer = send(&service, with_token("/", &alice)).await;

    assert_served(&answer);
    assert_eq!(
        extension(&answer),
        Some(&SessionExtension::Failed(LifecycleError::AdminRefused(
            StatusCode::UNAUTHORIZED
        )))
    );
    assert_eq!(expires_at(&kratos, &alice), alice.expires_at);
}

// ---------------------------------------------------------------------------------------------
// An answer that is not Kratos's own is never a success

/// A lifecycle error as the response a handler returning it gives: 503 for every answer outside
/// the endpoint's contract.
fn assert_answers_503(error: &LifecycleError) {
    use axum::response::IntoResponse;
    assert!(
        matches!(error, LifecycleError::Unavailable(_)),
        "expected Unavailable, got {error:?}"
    );
    let response = error.clone().into_response();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{error:?}"
    );
    assert!(response.headers().contains_key(header::RETRY_AFTER));
}

/// A 200 with an HTML error page (a proxy in front of Kratos) from each endpoint: every helper
/// answers a typed error, Kratos revoked nothing, and what this process has cached for the
/// sessions concerned is checked with Kratos again, since nothing says what happened.
#[tokio::test]
async fn a_garbage_200_is_an_error_for_every_helper() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family {
        current,
        phone,
        tablet,
    } = family(&kratos, &service).await;
    let sessions = layer.lifecycle();
    let caller = token_headers(&current);
    for endpoint in [
        Endpoint::RevokeMySession,
        Endpoint::RevokeMyOtherSessions,
        Endpoint::ListMySessions,
        Endpoint::LogoutApi,
        Endpoint::AdminDisableSession,
        Endpoint::AdminDeleteIdentitySessions,
        Endpoint::ExtendSession,
    ] {
        kratos.set_fault(endpoint, Fault::GarbageBody);
    }

    let errors = [
        sessions
            .revoke_session(&caller, &phone.id)
            .await
            .map(|_| ()),
        sessions.revoke_other_sessions(&caller).await.map(|_| ()),
        sessions
            .list_sessions(&caller, &Page::first())
            .await
            .map(|_| ()),
        sessions.logout(&caller).await,
        sessions.disable_session(&tablet.id).await,
        sessions
            .revoke_identity_sessions(&current.identity_id)
            .await,
    ];
    for (helper, result) in errors.iter().enumerate() {
        let error = result
            .as_ref()
            .expect_err(&format!("helper {helper} failed"));
        assert_answers_503(error);
    }
    // Extension failures are reported in the outcome, never as a success.
    let due = kratos
        .session()
        .identity(&current.identity_id)
        .expires_in(TEN_MINUTES)
        .create();
    let outcome = sessions
        .extend_if_expiring(&token_headers(&due), HOUR)
        .await
        .expect("the session was looked up");
    assert!(!outcome.extended());
    match outcome.attempt() {
        Some(SessionExtension::Failed(error)) => {
            assert_eq!(
                error,
                &LifecycleError::Unavailable(Unavailable::InvalidBody)
            );
            assert_answers_503(error);
        }
        other => panic!("expected a failed extension, got {other:?}"),
    }

    for session in [&current, &phone, &tablet, &due] {
        let state = kratos.session_state(&session.id).expect("a session");
        assert!(state.active, "nothing was revoked");
    }
    // Every session a helper may have acted on is asked about again, and still served.
    kratos.clear_faults();
    let before = kratos.calls(Endpoint::Whoami);
    assert_served(&send(&service, with_token("/", &current)).await);
    assert_served(&send(&service, with_token("/", &phone)).await);
    assert_served(&send(&service, cookie(&tablet)).await);
    assert_eq!(kratos.calls(Endpoint::Whoami), before + 3);
}

// ---------------------------------------------------------------------------------------------
// Revocation: this process rejects at once, whatever the TTL

/// Alice's identity with three sessions: `current` (the caller) and two others, all cached by
/// `service` (through three different credentials). Each is sent twice: the second request is a
/// hit, so each entry has been served from the cache when a test revokes it.
struct Family {
    current: TestSession,
    phone: TestSession,
    tablet: TestSession,
}

async fn family<S>(kratos: &KratosStandIn, service: &S) -> Family
where
    S: tower::Service<
            Request<String>,
            Response = Response<tower_kratos::rejection::ResponseBody<String>>,
        > + Clone,
    S::Error: std::fmt::Debug,
{
    let current = kratos.create_session();
    let phone = kratos.session().identity(&current.identity_id).create();
    let tablet = kratos.session().identity(&current.identity_id).create();
    for _ in 0..2 {
        assert_served(&send(service, with_token("/", &current)).await);
        assert_served(&send(service, with_token("/", &phone)).await);
        assert_served(&send(service, cookie(&tablet)).await);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);
    Family {
        current,
        phone,
        tablet,
    }
}

#[tokio::test]
async fn revoking_another_session_rejects_it_at_once() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family { current, phone, .. } = family(&kratos, &service).await;

    layer
        .lifecycle()
        .revoke_session(&token_headers(&current), &phone.id)
        .await
        .expect("revoked");

    assert_unauthorized(&send(&service, with_token("/", &phone)).await);
    assert_served(&send(&service, with_token("/", &current)).await);
    let deletes = kratos.requests(Endpoint::RevokeMySession);
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].uri.path(), format!("/sessions/{}", phone.id));
    assert_eq!(
        deletes[0].headers["x-session-token"],
        current.token.as_str()
    );
    // The revoked session was asked about again (and refused); the caller's was not.
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &phone.id), 2);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &current.id), 1);
}

#[tokio::test]
async fn revoking_the_current_session_is_refused_and_it_stays_usable() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family { current, .. } = family(&kratos, &service).await;

    let refused = layer
        .lifecycle()
        .revoke_session(&token_headers(&current), &current.id)
        .await;

    assert_eq!(refused, Err(LifecycleError::CurrentSession));
    assert_eq!(kratos.calls(Endpoint::RevokeMySession), 1);
    assert!(kratos.session_state(&current.id).expect("session").active);
    assert_served(&send(&service, with_token("/", &current)).await);
    assert_eq!(kratos.calls(Endpoint::Whoami), 3, "nothing was invalidated");
}

#[tokio::test]
async fn revoking_the_other_sessions_rejects_them_at_once_and_counts_them() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family {
        current,
        phone,
        tablet,
    } = family(&kratos, &service).await;

    let count = layer
        .lifecycle()
        .revoke_other_sessions(&token_headers(&current))
        .await
        .expect("revoked");

    assert_eq!(count, 2);
    assert_unauthorized(&send(&service, with_token("/", &phone)).await);
    assert_unauthorized(&send(&service, cookie(&tablet)).await);
    assert_served(&send(&service, with_token("/", &current)).await);
    assert_eq!(kratos.calls(Endpoint::RevokeMyOtherSessions), 1);
    // Marked by identity: each of the three asked again once.
    assert_eq!(kratos.calls(Endpoint::Whoami), 6);
    assert_served(&send(&service, with_token("/", &current)).await);
    assert_eq!(kratos.calls(Endpoint::Whoami), 6);
}

#[tokio::test]
async fn listing_pages_through_the_callers_other_sessions() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family {
        current,
        phone,
        tablet,
    } = family(&kratos, &service).await;
    let sessions = layer.lifecycle();
    let caller = headers_with(
        "cookie",
        &format!("theme=dark; {}", current.cookie_header()),
    );

    let all = sessions
        .list_sessions(&caller, &Page::first())
        .await
        .expect("listed");
    let ids: Vec<_> = all.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [tablet.id.as_str(), phone.id.as_str()]);
    assert_eq!(all.total, Some(2));
    assert!(all.next.is_none());

    let first = sessions
        .list_sessions(&caller, &Page::first().with_size(1))
        .await
        .expect("listed");
    assert_eq!(first.sessions.len(), 1);
    assert_eq!(first.sessions[0].id, tablet.id);
    let next = first.next.expect("a second page");
    let second = sessions
        .list_sessions(&caller, &next)
        .await
        .expect("listed");
    assert_eq!(second.sessions[0].id, phone.id);
    assert!(second.next.is_none());
    // The same page, from a token that made a round trip through the app's own API.
    let again = Page::first()
        .with_size(1)
        .with_token(next.token().expect("a token").to_owned());
    assert_eq!(again, next);

    let asked = kratos.requests(Endpoint::ListMySessions);
    assert_eq!(asked.len(), 3);
    assert_eq!(asked[0].uri.query(), None);
    assert_eq!(asked[1].uri.query(), Some("page_size=1"));
    assert_eq!(asked[2].uri.query(), Some("page_size=1&page_token=1"));
    // Only the session cookie went to Kratos.
    assert_eq!(
        asked[0].headers[header::COOKIE],
        current.cookie_header().as_str()
    );
}

#[tokio::test]
async fn disabling_a_session_through_the_admin_api_rejects_it_at_once() {
    let kratos = KratosStandIn::builder()
        .admin_token("ory_pat_admin")
        .start()
        .await
        .expect("stand-in");
    let layer = builder(&kratos)
        .admin_api_key("ory_pat_admin")
        .build()
        .expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family {
        current, tablet, ..
    } = family(&kratos, &service).await;

    layer
        .lifecycle()
        .disable_session(&tablet.id)
        .await
        .expect("disabled");

    assert_unauthorized(&send(&service, cookie(&tablet)).await);
    assert_served(&send(&service, with_token("/", &current)).await);
    // The re-check asks past Ory Network's session cache, which may not know of an admin
    // revocation yet; the ordinary lookups did not.
    let whoamis = kratos.requests(Endpoint::Whoami);
    let fresh: Vec<_> = whoamis
        .iter()
        .map(|request| request.headers.get(header::CACHE_CONTROL).is_some())
        .collect();
    assert_eq!(fresh, [false, false, false, true]);
    assert_eq!(whoamis[3].headers[header::CACHE_CONTROL], "max-age=0");
    let disable = &kratos.requests(Endpoint::AdminDisableSession)[0];
    assert_eq!(disable.uri.path(), format!("/admin/sessions/{}", tablet.id));
    assert_eq!(
        disable.headers[header::AUTHORIZATION],
        "Bearer ory_pat_admin"
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 4);
}

#[tokio::test]
async fn revoking_an_identitys_sessions_rejects_them_all_at_once() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family {
        current,
        phone,
        tablet,
    } = family(&kratos, &service).await;
    let stranger = kratos.create_session();
    assert_served(&send(&service, with_token("/", &stranger)).await);
    let sessions = layer.lifecycle();

    sessions
        .revoke_identity_sessions(&current.identity_id)
        .await
        .expect("revoked");

    assert_unauthorized(&send(&service, with_token("/", &current)).await);
    assert_unauthorized(&send(&service, with_token("/", &phone)).await);
    assert_unauthorized(&send(&service, cookie(&tablet)).await);
    assert_served(&send(&service, with_token("/", &stranger)).await);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &stranger.id), 1);

    // Nothing left to revoke: Kratos's 404, typed.
    assert_eq!(
        sessions
            .revoke_identity_sessions(&current.identity_id)
            .await,
        Err(LifecycleError::NotFound)
    );
}

#[tokio::test]
async fn api_logout_rejects_the_token_at_once_in_either_header() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let Family {
        current, tablet, ..
    } = family(&kratos, &service).await;
    let bearer = format!("Bearer {}", current.token);
    assert_served(&send(&service, get("/", &[("authorization", &bearer)])).await);
    let sessions = layer.lifecycle();

    sessions
        .logout(&headers_with("authorization", &bearer))
        .await
        .expect("logged out");

    assert_unauthorized(&send(&service, with_token("/", &current)).await);
    assert_unauthorized(&send(&service, get("/", &[("authorization", &bearer)])).await);
    let last = kratos.requests(Endpoint::Whoami).pop().expect("a whoami");
    assert_eq!(last.headers[header::CACHE_CONTROL], "max-age=0");
    let logout = &kratos.requests(Endpoint::LogoutApi)[0];
    assert_eq!(
        logout.body,
        serde_json::json!({"session_token": current.token}).to_string()
    );
    assert!(!kratos.session_state(&current.id).expect("session").active);

    // Browsers log out through Kratos's browser flow; a token Kratos does not know is refused.
    assert_eq!(
        sessions
            .logout(&headers_with("cookie", &tablet.cookie_header()))
            .await,
        Err(LifecycleError::NotATokenSession)
    );
    let unknown = Credential::session_token("ory_st_unknown").expect("credential");
    assert_eq!(
        sessions.logout(&unknown).await,
        Err(LifecycleError::Unauthenticated)
    );
    assert_eq!(kratos.calls(Endpoint::LogoutApi), 2);
}

#[tokio::test]
async fn ids_are_checked_before_kratos_is_called_and_case_does_not_matter() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let sessions = layer.lifecycle();
    let caller = headers_with("x-session-token", "ory_st_anything");
    for bad in [
        "",
        "whoami",
        "../admin/identities/6f5e3c4a-0000-4000-8000-000000000001/sessions",
        "6f5e3c4a-0000-4000-8000-00000000000",
        "6f5e3c4a-0000-4000-8000-00000000000g",
        "6f5e3c4a/0000-4000-8000-000000000001",
        "{6f5e3c4a-0000-4000-8000-000000000001}",
    ] {
        assert_eq!(
            sessions.revoke_session(&caller, bad).await,
            Err(LifecycleError::InvalidId),
            "{bad:?}"
        );
        assert_eq!(
            sessions.disable_session(bad).await,
            Err(LifecycleError::InvalidId)
        );
        assert_eq!(
            sessions.revoke_identity_sessions(bad).await,
            Err(LifecycleError::InvalidId)
        );
    }
    assert!(no_calls_at_all(&kratos));

    // Kratos writes lowercase ids; an uppercase one still reaches the cached session.
    let service = layer.clone().layer(Handler::default().service());
    let Family { phone, .. } = family(&kratos, &service).await;
    sessions
        .disable_session(&phone.id.to_uppercase())
        .await
        .expect("disabled");
    assert_unauthorized(&send(&service, with_token("/", &phone)).await);
}

#[tokio::test]
async fn admin_helpers_need_an_admin_url_and_callers_need_a_credential() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let sessions = default_layer(&kratos).lifecycle();

    assert_eq!(
        sessions.disable_session(&alice.id).await,
        Err(LifecycleError::AdminNotConfigured)
    );
    assert_eq!(
        sessions.revoke_identity_sessions(&alice.identity_id).await,
        Err(LifecycleError::AdminNotConfigured)
    );
    let nobody = HeaderMap::new();
    assert_eq!(
        sessions.revoke_session(&nobody, &alice.id).await,
        Err(LifecycleError::NoCredential)
    );
    assert_eq!(
        sessions
            .list_sessions(&nobody, &Page::first())
            .await
            .unwrap_err(),
        LifecycleError::NoCredential
    );
    let malformed = headers_with("x-session-token", "a\tb");
    assert!(matches!(
        sessions.revoke_other_sessions(&malformed).await,
        Err(LifecycleError::Malformed(_))
    ));
    assert!(no_calls_at_all(&kratos));

    // A revoked caller: 401, typed.
    kratos.revoke_session(&alice.id);
    assert_eq!(
        sessions
            .list_sessions(&token_headers(&alice), &Page::first())
            .await
            .unwrap_err(),
        LifecycleError::Unauthenticated
    );
}

#[tokio::test]
async fn lifecycle_settings_are_checked_at_build_time() {
    let cases: Vec<(KratosLayerBuilder, &str)> = vec![
        (
            KratosLayer::builder("http://k").extend_within(HOUR),
            "extend_within",
        ),
        (
            KratosLayer::builder("http://k").admin_api_key("ory_pat_x"),
            "admin_api_key",
        ),
        (
            KratosLayer::builder("http://k")
                .admin_url("http://k")
                .admin_api_key("two words"),
            "admin_api_key",
        ),
        (
            KratosLayer::builder("http://k")
                .admin_url("http://k")
                .admin_api_key(""),
            "admin_api_key",
        ),
        (
            KratosLayer::builder("http://k").admin_url("ftp://k"),
            "admin_url",
        ),
        (
            KratosLayer::builder("http://k")
                .admin_url("http://k")
                .extend_within(Duration::ZERO),
            "extend_within",
        ),
        (
            KratosLayer::builder("http://k").extend_cooldown(Duration::ZERO),
            "extend_cooldown",
        ),
        (
            KratosLayer::builder("http://k").extend_cooldown(Duration::MAX),
            "extend_cooldown",
        ),
        (
            KratosLayer::builder("http://k").admin_timeout(Duration::ZERO),
            "admin_timeout",
        ),
    ];
    for (builder, setting) in cases {
        let error = builder.build().expect_err(setting);
        assert_eq!(error.setting_name(), setting, "{error}");
    }
}

#[tokio::test]
async fn lifecycle_errors_become_kratos_style_responses() {
    use axum::response::IntoResponse;

    let cases = [
        (LifecycleError::CurrentSession, 400, "current_session"),
        (LifecycleError::InvalidId, 400, "invalid_id"),
        (LifecycleError::NoCredential, 401, "no_credential"),
        (LifecycleError::Unauthenticated, 401, "unauthenticated"),
        (LifecycleError::NotFound, 404, "not_found"),
        (
            LifecycleError::AdminNotConfigured,
            500,
            "admin_not_configured",
        ),
        (
            LifecycleError::AdminRefused(StatusCode::FORBIDDEN),
            500,
            "admin_refused",
        ),
        (
            LifecycleError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            },
            503,
            "rate_limited",
        ),
        (
            LifecycleError::Unavailable(Unavailable::Timeout),
            503,
            "unavailable",
        ),
    ];
    for (error, status, id) in cases {
        let answer = Answer::read(error.into_response()).await;
        let body = answer.assert_json_error(StatusCode::from_u16(status).expect("status"));
        assert_eq!(
            body["error"]["id"],
            if status == 500 { "misconfigured" } else { id }
        );
        if status == 503 {
            let expected = if id == "rate_limited" { "7" } else { "5" };
            assert_eq!(answer.header(header::RETRY_AFTER), Some(expected));
        }
        if status == 500 {
            // The server's to fix: the client learns nothing of the admin API or its key.
            assert_eq!(
                body["error"]["reason"],
                "the session service is misconfigured"
            );
            for detail in ["admin_", "admin API", "key"] {
                assert!(!answer.text().contains(detail), "{}", answer.text());
            }
        }
    }
}

/// A whoami sent before a revocation and answered after it returned ("active", read before the
/// revocation) must not let the request through: the lookup asks once more.
#[tokio::test]
async fn an_answer_read_before_a_revocation_is_not_served_after_it() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let service = layer.clone().layer(Handler::default().service());
    let alice = kratos.create_session();
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::AnswerLate(Duration::from_millis(500)),
    );

    let in_flight = tokio::spawn({
        let service = service.clone();
        let request = with_token("/", &alice);
        async move { send(&service, request).await }
    });
    // Kratos has read the session as active; now revoke it through the crate.
    while kratos.calls(Endpoint::Whoami) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    layer
        .lifecycle()
        .disable_session(&alice.id)
        .await
        .expect("disabled");
    kratos.clear_fault(Endpoint::Whoami);

    let answer = in_flight.await.expect("the request");
    assert_unauthorized(&answer);
    // The late "active" answer, then the second look that Kratos refused.
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

// ---------------------------------------------------------------------------------------------
// Browser logout: Kratos's browser flow completed by the server, the cookie refused at once

/// An app with `POST /logout` (the helper, then a 303 to `/`) and the layer on `/`.
fn logout_app(layer: &KratosLayer) -> axum::Router {
    use axum::{extract::State, response::Redirect, routing};
    use tower_kratos::lifecycle::BrowserLogout;

    async fn logout(
        State(sessions): State<SessionLifecycle>,
        headers: HeaderMap,
    ) -> Result<(BrowserLogout, Redirect), LifecycleError> {
        Ok((sessions.logout_browser(&headers).await?, Redirect::to("/")))
    }
    axum::Router::new()
        .route(
            "/",
            routing::get(|| async { "inner" }).layer(layer.required()),
        )
        .route("/logout", routing::post(logout))
        .with_state(layer.lifecycle())
}

#[tokio::test]
async fn browser_logout_clears_the_cookie_and_refuses_it_at_once() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let app = logout_app(&layer);
    let alice = kratos.create_session();
    let cookie = alice.cookie_header();
    // Cached for the hour.
    assert_served(&send(&app, get("/", &[("cookie", &cookie)])).await);

    let answer = send(&app, post("/logout", &[("cookie", &cookie)])).await;

    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    assert_eq!(answer.header(header::LOCATION), Some("/"));
    let cleared = set_cookies(&answer);
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert!(
        cleared[0].starts_with("ory_kratos_session=; Path=/;"),
        "{cleared:?}"
    );
    assert_eq!(answer.header(header::CACHE_CONTROL), Some("private"));
    assert!(!kratos.session_state(&alice.id).expect("session").active);
    // Kratos got the cookie (only) and was asked for JSON both times.
    for endpoint in [Endpoint::LogoutBrowser, Endpoint::Logout] {
        let seen = kratos.requests(endpoint);
        assert_eq!(seen.len(), 1, "{endpoint:?}");
        assert_eq!(
            values(&seen[0].headers, "cookie"),
            [cookie.as_str()],
            "{endpoint:?}"
        );
        assert_eq!(
            values(&seen[0].headers, "accept"),
            ["application/json"],
            "{endpoint:?}"
        );
    }

    // The copy of the old cookie is refused now, not when the hour is up: Kratos was asked.
    let replay = send(&app, get("/", &[("cookie", &cookie)])).await;
    assert_unauthorized(&replay);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);

    // Logging out again, or without a cookie, succeeds with nothing signed out.
    let sessions = layer.lifecycle();
    let again = sessions
        .logout_browser(&headers_with("cookie", &cookie))
        .await
        .expect("already signed out");
    assert!(!again.was_signed_in() && again.set_cookies().is_empty());
    let none = sessions
        .logout_browser(&HeaderMap::new())
        .await
        .expect("no cookie");
    assert!(!none.was_signed_in());
    // A token session logs out through API logout; Kratos is not asked.
    let calls = kratos.calls(Endpoint::LogoutBrowser);
    assert_eq!(
        sessions
            .logout_browser(&token_headers(&kratos.create_session()))
            .await
            .map(|_| ()),
        Err(LifecycleError::NotACookieSession)
    );
    assert_eq!(kratos.calls(Endpoint::LogoutBrowser), calls);
}

#[tokio::test]
async fn a_browser_logout_kratos_could_not_confirm_is_an_error_and_asks_again() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let app = logout_app(&layer);
    let alice = kratos.create_session();
    let cookie = alice.cookie_header();
    assert_served(&send(&app, get("/", &[("cookie", &cookie)])).await);
    kratos.set_fault(Endpoint::Logout, Fault::Status(StatusCode::BAD_GATEWAY));

    let answer = send(&app, post("/logout", &[("cookie", &cookie)])).await;

    answer.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        set_cookies(&answer).is_empty(),
        "nothing to clear: not signed out"
    );
    assert!(kratos.session_state(&alice.id).expect("session").active);
    // Whether Kratos acted is unknown: the cookie is checked with Kratos again (still valid).
    assert_served(&send(&app, get("/", &[("cookie", &cookie)])).await);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);

    // A logout flow answered with something that is not Kratos's is no logout either.
    kratos.clear_faults();
    kratos.set_fault(Endpoint::LogoutBrowser, Fault::GarbageBody);
    let garbage = send(&app, post("/logout", &[("cookie", &cookie)])).await;
    garbage.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(kratos.calls(Endpoint::Logout), 1, "no token, no completion");
}

#[tokio::test]
async fn the_browser_coming_back_during_the_logout_is_never_served_after_it() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let app = logout_app(&layer);
    let alice = kratos.create_session();
    let cookie = alice.cookie_header();

    // Kratos slow to sign the session out: the browser comes back meanwhile.
    kratos.set_fault(Endpoint::Logout, Fault::Delay(Duration::from_millis(300)));
    let logout = tokio::spawn(send(&app, post("/logout", &[("cookie", &cookie)])));
    support::wait_for_calls(&kratos, Endpoint::Logout, 1).await;
    let meanwhile = send(&app, get("/", &[("cookie", &cookie)])).await;
    // Kratos has not signed it out yet, and the browser has not been told it is: served, and
    // cached for the hour.
    assert_served(&meanwhile);
    let logged_out = logout.await.expect("the logout");
    assert_eq!(
        logged_out.status,
        StatusCode::SEE_OTHER,
        "{}",
        logged_out.text()
    );
    // From the logout's answer on, the cookie opens nothing.
    assert_unauthorized(&send(&app, get("/", &[("cookie", &cookie)])).await);

    // A lookup whose whoami Kratos answered "active" before the logout, arriving after it.
    let bob = kratos.create_session();
    let cookie = bob.cookie_header();
    let whoami_calls = kratos.calls(Endpoint::Whoami);
    kratos.clear_faults();
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::AnswerLate(Duration::from_millis(400)),
    );
    let in_flight = tokio::spawn(send(&app, get("/", &[("cookie", &cookie)])));
    support::wait_for_whoami_calls(&kratos, whoami_calls + 1).await;
    kratos.clear_fault(Endpoint::Whoami);
    let logged_out = send(&app, post("/logout", &[("cookie", &cookie)])).await;
    assert_eq!(
        logged_out.status,
        StatusCode::SEE_OTHER,
        "{}",
        logged_out.text()
    );
    // Asked again once its answer came: refused.
    assert_unauthorized(&in_flight.await.expect("the request in flight"));
    assert_eq!(kratos.calls(Endpoint::Whoami), whoami_calls + 2);
}

/// Anonymous logouts go through an admission (security trial, finding 2): a cap on calls in
/// flight and a back-off, so once Kratos rate-limits the logout flow no route makes Kratos calls
/// at the rate anonymous callers send them, and whoami, whose limits are its own, goes on.
#[tokio::test]
async fn anonymous_logouts_stop_at_kratoss_rate_limit_and_leave_whoami_alone() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let layer = builder(&kratos).build().expect("layer");
    let sessions = layer.lifecycle();
    kratos.set_fault(
        Endpoint::LogoutBrowser,
        Fault::RateLimited {
            retry_after: Some(30),
        },
    );

    for index in 0..100 {
        let headers = headers_with("cookie", &format!("ory_kratos_session=made-up-{index}"));
        let refused = sessions.logout_browser(&headers).await;
        assert!(
            matches!(
                refused,
                Err(LifecycleError::RateLimited { .. }
                    | LifecycleError::Unavailable(Unavailable::BackingOff { .. }))
            ),
            "{refused:?}"
        );
    }
    assert_eq!(kratos.calls(Endpoint::LogoutBrowser), 1, "after the 429");

    let alice = kratos.create_session();
    let answer = send(
        &layer
            .clone()
            .layer(tower::service_fn(support::echo_session)),
        with_token("/", &alice),
    )
    .await;
    support::assert_session(&answer, &alice.id, &alice.identity_id);
}
