//! When Kratos fails: the guide's fault matrix (each fault × the credential's cache entry ×
//! stale-if-error off or on, every cell a real request through the layer against a stand-in with
//! the fault injected), then the rules each column relies on: stale-if-error's limits, back-off
//! after 429s and failures, the cap on whoami calls in flight, cancelled requests, and a flood of
//! made-up tokens.
//!
//! Sleeps only wait for an entry or a back-off window to pass (all configured short here);
//! nothing asserts on speed.

use test_support as support;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::Poll,
    time::{Duration, Instant},
};

use http::{Request, Response, StatusCode};
use kratos_stand_in::{Endpoint, Fault, KratosStandIn, TestSession};
use support::{
    assert_session, assert_unauthorized, assert_unavailable, builder, default_layer, echo_session,
    get, send, wait_for_whoami_calls, with_token, Answer, App, GUARD, KRATOS_TIMEOUT,
};
use tokio::task::JoinSet;
use tower::{util::BoxCloneService, ServiceBuilder};
use tower_kratos::{
    authenticate::KratosLayerBuilder,
    credentials::MAX_FORWARDED_COOKIE_LEN,
    outcome::StaleSession,
    outcome::{Unauthenticated, Unavailable},
    KratosLayer, Outcome,
};

/// The cache TTL of cells whose entry must have expired by the time the fault hits.
const SHORT_TTL: Duration = Duration::from_millis(200);
/// The stale-if-error grace when it is on: far longer than any cell takes.
const GRACE: Duration = Duration::from_secs(60);
/// The `Retry-After` the stand-in's 429 carries in the matrix (and `x-ratelimit-reset`).
const KRATOS_RETRY_AFTER: u64 = 2;

/// [`echo_session`], also copying the request's [`StaleSession`] into the response's extensions
/// so tests can read it.
async fn echo_with_staleness(request: Request<String>) -> Result<Response<String>, Infallible> {
    let stale = request.extensions().get::<StaleSession>().cloned();
    let mut response = echo_session(request).await?;
    if let Some(stale) = stale {
        response.extensions_mut().insert(stale);
    }
    Ok(response)
}

/// `layer` in front of [`echo_with_staleness`].
fn app_for(layer: &KratosLayer) -> App {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(echo_with_staleness),
    )
}

fn stale_of(reply: &Answer) -> Option<&StaleSession> {
    reply.extensions.get::<StaleSession>()
}

/// The outage's reason, as the rejection carried it.
fn unavailable(reply: &Answer) -> &Unavailable {
    match reply.outcome() {
        Outcome::Unavailable(reason) => reason,
        other => panic!("expected an Unavailable outcome, got {other:?}"),
    }
}

/// A 503 whose outcome is `BackingOff`: how long the layer said is left.
#[track_caller]
fn assert_backing_off(reply: &Answer) -> Duration {
    assert_unavailable(reply);
    match unavailable(reply) {
        Unavailable::BackingOff { retry_after } => *retry_after,
        other => panic!("expected BackingOff, got {other:?}"),
    }
}

/// Waits (at most 5 s) until the layer has no whoami call in flight.
async fn wait_until_idle(layer: &KratosLayer) {
    for _ in 0..500 {
        if layer.stats().await.lookups_in_flight == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("lookups still in flight");
}

// ---------------------------------------------------------------------------------------------
// The fault matrix

/// The faults of the guide's matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Down,
    Slow,
    ServerError,
    RateLimited,
    GarbageBody,
    ConnectionReset,
}

/// The credential's cache entry when the fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// Looked up within the TTL.
    Fresh,
    /// Looked up before; its entry expired less than the grace ago.
    Expired,
    /// Never looked up.
    Missing,
}

impl Failure {
    const ALL: [Self; 6] = [
        Self::Down,
        Self::Slow,
        Self::ServerError,
        Self::RateLimited,
        Self::GarbageBody,
        Self::ConnectionReset,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Down => "Kratos down (connection refused)",
            Self::Slow => "slower than `request_timeout`",
            Self::ServerError => "5xx",
            Self::RateLimited => "429",
            Self::GarbageBody => "200 with a body that is not a session",
            Self::ConnectionReset => "connection closed without an answer",
        }
    }

    fn test_name(self) -> &'static str {
        match self {
            Self::Down => "matrix_kratos_down",
            Self::Slow => "matrix_slower_than_the_timeout",
            Self::ServerError => "matrix_5xx",
            Self::RateLimited => "matrix_429",
            Self::GarbageBody => "matrix_garbage_body",
            Self::ConnectionReset => "matrix_connection_reset",
        }
    }

    /// What the rejection (or the stale marker) names as the cause.
    fn reason(self) -> Unavailable {
        match self {
            Self::Down | Self::ConnectionReset => Unavailable::Transport,
            Self::Slow => Unavailable::Timeout,
            Self::ServerError => Unavailable::Status(StatusCode::INTERNAL_SERVER_ERROR),
            Self::RateLimited => Unavailable::RateLimited {
                retry_after: Some(Duration::from_secs(KRATOS_RETRY_AFTER)),
            },
            Self::GarbageBody => Unavailable::InvalidBody,
        }
    }

    /// The `Retry-After` of the 503: Kratos's own after a 429, the default otherwise.
    fn retry_after(self) -> u64 {
        match self {
            Self::RateLimited => KRATOS_RETRY_AFTER,
            _ => tower_kratos::defaults::DEFAULT_RETRY_AFTER.as_secs(),
        }
    }

    /// Injects the fault. `Down` stops the stand-in, so nothing is left to count calls.
    async fn inject(self, kratos: KratosStandIn) -> Option<KratosStandIn> {
        let fault = match self {
            Self::Down => {
                // Down for good once this returns, whatever clones the test still holds.
                kratos.stop().await;
                return None;
            }
            Self::Slow => Fault::Delay(KRATOS_TIMEOUT * 5),
            Self::ServerError => Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
            Self::RateLimited => Fault::RateLimited {
                retry_after: Some(KRATOS_RETRY_AFTER),
            },
            Self::GarbageBody => Fault::GarbageBody,
            Self::ConnectionReset => Fault::CloseConnection,
        };
        kratos.set_fault(Endpoint::Whoami, fault);
        kratos.reset_counters();
        Some(kratos)
    }
}

impl Entry {
    const ALL: [Self; 3] = [Self::Fresh, Self::Expired, Self::Missing];

    fn label(self) -> &'static str {
        match self {
            Self::Fresh => "cached, fresh",
            Self::Expired => "cached, expired < grace ago",
            Self::Missing => "not cached",
        }
    }
}

/// What one cell must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    status: StatusCode,
    stale: bool,
    /// whoami calls Kratos saw once the fault was on (`None`: it is down, nothing can count).
    whoami: Option<usize>,
}

/// The matrix, as the guide states it.
fn expected(failure: Failure, entry: Entry, stale_if_error: bool) -> Expected {
    let (status, stale, whoami) = match (entry, stale_if_error) {
        (Entry::Fresh, _) => (StatusCode::OK, false, 0),
        (Entry::Expired, true) => (StatusCode::OK, true, 1),
        (Entry::Expired, false) | (Entry::Missing, _) => {
            (StatusCode::SERVICE_UNAVAILABLE, false, 1)
        }
    };
    Expected {
        status,
        stale,
        whoami: (failure != Failure::Down).then_some(whoami),
    }
}

/// One cell: a layer, the credential's entry put in the wanted state, the fault injected, one
/// request. Asserts the status, `Retry-After`, the outcome or stale marker, and Kratos's calls.
async fn cell(failure: Failure, entry: Entry, stale_if_error: bool) {
    let context = format!("{failure:?} × {entry:?} × stale-if-error {stale_if_error}");
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let ttl = if entry == Entry::Expired {
        SHORT_TTL
    } else {
        DEFAULT_TTL
    };
    let mut builder = builder(&kratos).cache_ttl(ttl);
    if stale_if_error {
        builder = builder.stale_if_error(GRACE);
    }
    let layer = builder.build().expect("layer");
    let app = app_for(&layer);

    if entry != Entry::Missing {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_session(&reply, &alice.id, &alice.identity_id);
        assert_eq!(kratos.calls(Endpoint::Whoami), 1, "{context}: warm-up");
    }
    if entry == Entry::Expired {
        tokio::time::sleep(SHORT_TTL + Duration::from_millis(100)).await;
    }
    let kratos = failure.inject(kratos).await;

    let reply = tokio::time::timeout(GUARD, send(&app, with_token("/", &alice)))
        .await
        .unwrap_or_else(|_| panic!("{context}: the layer answers within its deadline"));

    let want = expected(failure, entry, stale_if_error);
    assert_eq!(reply.status, want.status, "{context}: {}", reply.text());
    if want.status == StatusCode::OK {
        assert_session(&reply, &alice.id, &alice.identity_id);
        match (stale_of(&reply), want.stale) {
            (None, false) => {}
            (Some(stale), true) => {
                assert_eq!(stale.cause, failure.reason(), "{context}");
                assert!(stale.age >= SHORT_TTL, "{context}: {stale:?}");
                assert!(stale.stale_for < GRACE, "{context}: {stale:?}");
                assert!(stale.age >= stale.stale_for, "{context}: {stale:?}");
            }
            (seen, _) => panic!("{context}: stale marker {seen:?}"),
        }
    } else {
        assert_unavailable(&reply);
        assert_eq!(unavailable(&reply), &failure.reason(), "{context}");
        assert_eq!(
            reply.header("retry-after"),
            Some(failure.retry_after().to_string().as_str()),
            "{context}"
        );
    }
    if let (Some(kratos), Some(whoami)) = (&kratos, want.whoami) {
        assert_eq!(
            kratos.calls(Endpoint::Whoami),
            whoami,
            "{context}: whoami calls"
        );
    }
}

const DEFAULT_TTL: Duration = tower_kratos::defaults::DEFAULT_CACHE_TTL;

/// Every cell of one fault's row, at once (each has its own stand-in and layer).
async fn row(failure: Failure) {
    let mut cells = JoinSet::new();
    for entry in Entry::ALL {
        for stale_if_error in [false, true] {
            cells.spawn(cell(failure, entry, stale_if_error));
        }
    }
    while let Some(done) = cells.join_next().await {
        if let Err(error) = done {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_kratos_down() {
    row(Failure::Down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_slower_than_the_timeout() {
    row(Failure::Slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_5xx() {
    row(Failure::ServerError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_429() {
    row(Failure::RateLimited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_garbage_body() {
    row(Failure::GarbageBody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_connection_reset() {
    row(Failure::ConnectionReset).await;
}

/// The guide's table (`tower_kratos::guide::operations`), rendered from [`expected`].
fn matrix_markdown() -> String {
    let mut table = String::from("| Kratos fault |");
    for entry in Entry::ALL {
        for stale_if_error in [false, true] {
            let stale = if stale_if_error { "on" } else { "off" };
            table.push_str(&format!(" {}, stale-if-error {stale} |", entry.label()));
        }
    }
    table.push_str(" test (`tests/faults.rs`) |\n|---|");
    table.push_str(&"---|".repeat(Entry::ALL.len() * 2 + 1));
    table.push('\n');
    for failure in Failure::ALL {
        table.push_str(&format!("| {} |", failure.label()));
        for entry in Entry::ALL {
            for stale_if_error in [false, true] {
                let want = expected(failure, entry, stale_if_error);
                let answer = match (want.status, want.stale) {
                    (StatusCode::OK, false) => "200".to_owned(),
                    (StatusCode::OK, true) => "200 stale".to_owned(),
                    (status, _) => format!(
                        "{}, `Retry-After: {}`",
                        status.as_u16(),
                        failure.retry_after()
                    ),
                };
                let calls = match want.whoami {
                    None => "–".to_owned(),
                    Some(1) => "1 call".to_owned(),
                    Some(n) => format!("{n} calls"),
                };
                table.push_str(&format!(" {answer} · {calls} |"));
            }
        }
        table.push_str(&format!(" `{}` |\n", failure.test_name()));
    }
    table
}

#[test]
fn the_guide_states_the_matrix_these_tests_check() {
    let guide = include_str!("../src/guide/operations.md");
    let table = matrix_markdown();
    assert!(
        guide.contains(&table),
        "src/guide/operations.md's fault matrix differs from tests/faults.rs; it should read:\n\n{table}"
    );
}

// ---------------------------------------------------------------------------------------------
// Stale-if-error: what is never served stale

#[tokio::test]
async fn stale_if_error_is_off_by_default() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let layer = builder(&kratos)
        .cache_ttl(SHORT_TTL)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    send(&app, with_token("/", &alice)).await;
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(100)).await;
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));

    let reply = send(&app, with_token("/", &alice)).await;

    assert_unavailable(&reply);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(layer.stats().await.stale_entries, 0);
}

#[tokio::test]
async fn a_session_is_not_served_stale_past_the_grace() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let grace = Duration::from_millis(300);
    let layer = builder(&kratos)
        .cache_ttl(SHORT_TTL)
        .stale_if_error(grace)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    send(&app, with_token("/", &alice)).await;
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));

    // Within the grace: served stale.
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(50)).await;
    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert!(stale_of(&reply).is_some());

    // Past it: 503.
    tokio::time::sleep(grace).await;
    let reply = send(&app, with_token("/", &alice)).await;
    assert_unavailable(&reply);
    assert!(stale_of(&reply).is_none());
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);
}

#[tokio::test]
async fn a_session_is_never_served_stale_past_its_expiry() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos
        .session()
        .expires_in(Duration::from_millis(800))
        .create();
    let layer = builder(&kratos)
        .stale_if_error(GRACE)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    send(&app, with_token("/", &alice)).await;
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));

    let left = Duration::try_from(alice.expires_at - time::OffsetDateTime::now_utc())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    let reply = send(&app, with_token("/", &alice)).await;

    assert_unavailable(&reply);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

#[tokio::test]
async fn a_credential_kratos_refused_is_never_served_stale() {
    // Revoked at Kratos, seen by this layer as a 401: its stale copy is gone for good.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let layer = builder(&kratos)
        .cache_ttl(SHORT_TTL)
        .stale_if_error(GRACE)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    send(&app, with_token("/", &alice)).await;
    assert_eq!(layer.stats().await.stale_entries, 1);
    assert!(kratos.revoke_session(&alice.id));
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(100)).await;

    let reply = send(&app, with_token("/", &alice)).await;
    assert_unauthorized(&reply);
    assert_eq!(layer.stats().await.stale_entries, 0);

    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let reply = send(&app, with_token("/", &alice)).await;
    assert_unavailable(&reply);
    assert!(stale_of(&reply).is_none());
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 3);
}

#[tokio::test]
async fn a_step_up_answer_drops_the_stale_copy() {
    // The identity sets up a second factor: its aal1 session now needs a step-up. An outage must
    // not let it through on the copy from before.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let layer = builder(&kratos)
        .cache_ttl(SHORT_TTL)
        .stale_if_error(GRACE)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    send(&app, with_token("/", &alice)).await;
    kratos
        .session()
        .identity(&alice.identity_id)
        .aal2()
        .create();
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(100)).await;

    let reply = send(&app, with_token("/", &alice)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert_eq!(layer.stats().await.stale_entries, 0);

    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let reply = send(&app, with_token("/", &alice)).await;
    assert_unavailable(&reply);
    assert!(stale_of(&reply).is_none());
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 3);
}

// ---------------------------------------------------------------------------------------------
// Back-off

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_backs_off_new_lookups_serves_cached_sessions_and_one_probe_recovers() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let sessions: Vec<TestSession> = (0..8).map(|_| kratos.create_session()).collect();
    let [alice, bob, carol, ..] = &sessions[..] else {
        unreachable!()
    };
    let layer = builder(&kratos)
        .backoff(Duration::from_millis(100), Duration::from_secs(5))
        .build()
        .expect("layer");
    let app = app_for(&layer);
    assert_session(
        &send(&app, with_token("/", alice)).await,
        &alice.id,
        &alice.identity_id,
    );

    kratos.set_fault(
        Endpoint::Whoami,
        Fault::RateLimited {
            retry_after: Some(1),
        },
    );
    let limited = send(&app, with_token("/", bob)).await;
    assert_unavailable(&limited);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert!(layer.stats().await.backing_off);

    // A lookup now is answered at once, without Kratos; what is left of the window is at least
    // Kratos's second.
    let refused = send(&app, with_token("/", carol)).await;
    let left = assert_backing_off(&refused);
    assert!(
        left <= Duration::from_millis(1250),
        "1 s plus at most a quarter: {left:?}"
    );
    assert!(matches!(refused.header("retry-after"), Some("1" | "2")));
    // A cached session is still served.
    assert_session(
        &send(&app, with_token("/", alice)).await,
        &alice.id,
        &alice.identity_id,
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 2, "Kratos was left alone");

    // Kratos recovers; once the window is over, one probe goes out while the rest still wait.
    kratos.clear_faults();
    kratos.set_latency(Duration::from_millis(150));
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    let mut lookups = JoinSet::new();
    for session in &sessions[1..] {
        let app = app.clone();
        let session = session.clone();
        lookups
            .spawn(async move { (session.clone(), send(&app, with_token("/", &session)).await) });
    }
    let mut answered = 0;
    for (session, reply) in lookups.join_all().await {
        if reply.status == StatusCode::OK {
            assert_session(&reply, &session.id, &session.identity_id);
            answered += 1;
        } else {
            assert_eq!(assert_backing_off(&reply), Duration::from_secs(1));
        }
    }
    assert_eq!(answered, 1, "one probe");
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);

    // The probe's answer ended the back-off.
    assert!(!layer.stats().await.backing_off);
    for session in &sessions[1..] {
        assert_session(
            &send(&app, with_token("/", session)).await,
            &session.id,
            &session.identity_id,
        );
    }
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        3 + 6,
        "the probe's session was cached"
    );
}

#[tokio::test]
async fn failures_in_a_row_back_off_and_a_failed_probe_backs_off_again() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let sessions: Vec<TestSession> = (0..6).map(|_| kratos.create_session()).collect();
    let layer = builder(&kratos)
        .backoff_after_failures(3)
        .backoff(Duration::from_millis(150), Duration::from_secs(5))
        .build()
        .expect("layer");
    let app = app_for(&layer);
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
    );

    for session in &sessions[..3] {
        let reply = send(&app, with_token("/", session)).await;
        assert_unavailable(&reply);
        assert_eq!(
            unavailable(&reply),
            &Unavailable::Status(StatusCode::SERVICE_UNAVAILABLE)
        );
    }
    let left = assert_backing_off(&send(&app, with_token("/", &sessions[3])).await);
    assert!(left <= Duration::from_millis(190), "{left:?}");
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);

    // The probe fails: backed off again, Kratos asked once more.
    tokio::time::sleep(left + Duration::from_millis(30)).await;
    let probe = send(&app, with_token("/", &sessions[3])).await;
    assert_eq!(
        unavailable(&probe),
        &Unavailable::Status(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 4);
    let left = assert_backing_off(&send(&app, with_token("/", &sessions[4])).await);
    assert_eq!(kratos.calls(Endpoint::Whoami), 4);

    // The next probe succeeds: lookups flow again.
    kratos.clear_faults();
    tokio::time::sleep(left + Duration::from_millis(30)).await;
    for session in &sessions[4..] {
        let reply = send(&app, with_token("/", session)).await;
        assert_session(&reply, &session.id, &session.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 6);
    assert!(!layer.stats().await.backing_off);
}

#[tokio::test]
async fn answers_from_kratos_reset_the_failure_count() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let layer = builder(&kratos)
        .backoff_after_failures(3)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    let fail_twice = || async {
        kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
        for n in 0..2 {
            let reply = send(
                &app,
                get("/", &[("x-session-token", &format!("ory_st_fails{n}"))]),
            )
            .await;
            assert_eq!(
                unavailable(&reply),
                &Unavailable::Status(StatusCode::BAD_GATEWAY)
            );
        }
        kratos.clear_faults();
    };

    fail_twice().await;
    // A 401 is Kratos answering.
    assert_unauthorized(&send(&app, get("/", &[("x-session-token", "ory_st_unknown")])).await);
    fail_twice().await;
    // ... and so is a 200.
    assert_session(
        &send(&app, with_token("/", &alice)).await,
        &alice.id,
        &alice.identity_id,
    );
    fail_twice().await;

    assert!(!layer.stats().await.backing_off);
    assert_eq!(kratos.calls(Endpoint::Whoami), 8);
}

#[tokio::test]
async fn sessions_are_served_stale_while_backing_off() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let layer = builder(&kratos)
        .cache_ttl(SHORT_TTL)
        .stale_if_error(GRACE)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    send(&app, with_token("/", &alice)).await;
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::RateLimited {
            retry_after: Some(5),
        },
    );
    assert_unavailable(
        &send(
            &app,
            get("/", &[("x-session-token", "ory_st_someone_else")]),
        )
        .await,
    );
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(100)).await;

    let reply = send(&app, with_token("/", &alice)).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    let stale = stale_of(&reply).expect("served stale");
    assert!(
        matches!(stale.cause, Unavailable::BackingOff { .. }),
        "{stale:?}"
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 2, "Kratos was not asked");
}

/// Whoami's headers, as Kratos received them, never carry more than the layer's own bounds.
#[track_caller]
fn assert_lookups_within_bounds(kratos: &KratosStandIn) {
    for request in kratos.requests(Endpoint::Whoami) {
        if let Some(id) = request.headers.get("x-request-id") {
            assert!(
                id.len() <= 200,
                "X-Request-ID of {} bytes forwarded",
                id.len()
            );
        }
        for cookie in request.headers.get_all("cookie") {
            assert!(
                cookie.len() <= MAX_FORWARDED_COOKIE_LEN,
                "a Cookie header of {} bytes forwarded",
                cookie.len()
            );
        }
    }
}

/// The attack that tripped the back-off for everyone: junk tokens with a 70,000-byte
/// `X-Request-ID`, then four made-up 4 KiB `ory_session_*` cookies, against a Kratos behind a
/// proxy that refuses header lines over 8 KiB. The layer makes no lookup that large, so Kratos
/// answers each one 401 and a valid, uncached session is still served.
#[tokio::test]
async fn a_callers_own_headers_never_trip_the_back_off() {
    let kratos = KratosStandIn::start().await.unwrap();
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::HeaderLimit {
            max: 8192,
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        },
    );
    let layer = builder(&kratos).build().unwrap();
    let app = app_for(&layer);
    let huge_id = "r".repeat(70_000);
    for attempt in 0..20 {
        let token = format!("ory_st_junk{attempt}");
        let reply = send(
            &app,
            get(
                "/",
                &[("x-session-token", &token), ("x-request-id", &huge_id)],
            ),
        )
        .await;
        assert_unauthorized(&reply);
    }
    for attempt in 0..20 {
        let cookies = ["a", "b", "c", "d"]
            .map(|name| {
                format!(
                    "ory_session_{name}={}",
                    format!("{attempt:04}").repeat(1020)
                )
            })
            .join("; ");
        assert!(cookies.len() > 4 * 4000, "{}", cookies.len());
        assert_unauthorized(&send(&app, get("/", &[("cookie", &cookies)])).await);
    }
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        40,
        "each was asked, none refused by size"
    );
    assert!(!layer.stats().await.backing_off);

    let alice = kratos.create_session();
    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_lookups_within_bounds(&kratos);
    // A request id within the bounds is passed on as it was.
    let bob = kratos.create_session();
    send(
        &app,
        get(
            "/",
            &[("x-session-token", &bob.token), ("x-request-id", "req-1")],
        ),
    )
    .await;
    let last = kratos.requests(Endpoint::Whoami).pop().expect("a whoami");
    assert_eq!(last.headers["x-request-id"], "req-1");
}

/// Refusals of the lookup's headers, whoever sends them, are answered on their own merits and
/// never count as Kratos failing: a 431 is a credential that cannot be checked (401), another
/// 4xx a fault of that request alone (503), and the layer never backs off for them.
#[tokio::test]
async fn refusals_of_the_lookup_itself_are_not_kratos_failing() {
    for (status, expect_unavailable) in [
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, false),
        (StatusCode::BAD_REQUEST, true),
    ] {
        let kratos = KratosStandIn::start().await.unwrap();
        // Every lookup is refused: even `Accept: application/json` is longer than this.
        kratos.set_fault(Endpoint::Whoami, Fault::HeaderLimit { max: 8, status });
        let layer = builder(&kratos).backoff_after_failures(2).build().unwrap();
        let app = app_for(&layer);
        for _ in 0..10 {
            let alice = kratos.create_session();
            let reply = send(&app, with_token("/", &alice)).await;
            if expect_unavailable {
                assert_unavailable(&reply);
                assert_eq!(unavailable(&reply), &Unavailable::Status(status));
            } else {
                assert_unauthorized(&reply);
                assert!(matches!(
                    reply.outcome(),
                    Outcome::Unauthenticated(Unauthenticated::TooLarge)
                ));
            }
        }
        assert_eq!(
            kratos.calls(Endpoint::Whoami),
            10,
            "{status}: every lookup was sent"
        );
        assert!(!layer.stats().await.backing_off, "{status}");
        // Kratos itself failing still backs off, as before.
        kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
        for _ in 0..2 {
            send(&app, with_token("/", &kratos.create_session())).await;
        }
        assert!(layer.stats().await.backing_off, "{status}");
    }
}

// ---------------------------------------------------------------------------------------------
// The cap on whoami calls in flight

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_beyond_the_cap_wait_for_a_slot() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let sessions: Vec<TestSession> = (0..8).map(|_| kratos.create_session()).collect();
    kratos.set_latency(Duration::from_millis(100));
    let layer = builder(&kratos)
        .max_concurrent_lookups(2)
        .lookup_queue_timeout(Duration::from_secs(10))
        .build()
        .expect("layer");
    let app = app_for(&layer);

    let mut lookups = JoinSet::new();
    for session in &sessions {
        let app = app.clone();
        let session = session.clone();
        lookups
            .spawn(async move { (session.clone(), send(&app, with_token("/", &session)).await) });
    }
    for (session, reply) in lookups.join_all().await {
        assert_session(&reply, &session.id, &session.identity_id);
    }

    assert_eq!(kratos.calls(Endpoint::Whoami), 8);
    assert_eq!(kratos.max_concurrent(Endpoint::Whoami), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lookup_that_cannot_get_a_slot_in_time_gets_503() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let bob = kratos.create_session();
    kratos.set_latency(Duration::from_millis(600));
    let layer = KratosLayer::builder(kratos.public_url())
        .max_concurrent_lookups(1)
        .lookup_queue_timeout(Duration::from_millis(50))
        .build()
        .expect("layer");
    let app = app_for(&layer);

    let first = {
        let app = app.clone();
        let alice = alice.clone();
        tokio::spawn(async move { send(&app, with_token("/", &alice)).await })
    };
    wait_for_whoami_calls(&kratos, 1).await;
    let reply = send(&app, with_token("/", &bob)).await;

    assert_unavailable(&reply);
    assert_eq!(unavailable(&reply), &Unavailable::Overloaded);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        1,
        "bob never reached Kratos"
    );
    let first = first.await.expect("first request");
    assert_session(&first, &alice.id, &alice.identity_id);
    // Being busy is not Kratos failing: no back-off.
    assert!(!layer.stats().await.backing_off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_for_one_credential_share_one_slot() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    kratos.set_latency(Duration::from_millis(200));
    let layer = builder(&kratos)
        .max_concurrent_lookups(1)
        .lookup_queue_timeout(Duration::ZERO)
        .build()
        .expect("layer");
    let app = app_for(&layer);

    let mut requests = JoinSet::new();
    for _ in 0..20 {
        let app = app.clone();
        let alice = alice.clone();
        requests.spawn(async move { send(&app, with_token("/", &alice)).await });
    }
    for reply in requests.join_all().await {
        assert_session(&reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[test]
fn bad_outage_settings_are_refused_at_build_time() {
    let second = Duration::from_secs(1);
    let cases: Vec<(KratosLayerBuilder, &str)> = vec![
        (
            KratosLayer::builder("http://k").max_concurrent_lookups(0),
            "max_concurrent_lookups",
        ),
        (
            KratosLayer::builder("http://k").stale_if_error(Duration::ZERO),
            "stale_if_error",
        ),
        (
            KratosLayer::builder("http://k").stale_if_error(second * 3601),
            "stale_if_error",
        ),
        (
            KratosLayer::builder("http://k").lookup_queue_timeout(second * 61),
            "lookup_queue_timeout",
        ),
        (
            KratosLayer::builder("http://k").backoff(Duration::ZERO, second),
            "backoff",
        ),
        (
            KratosLayer::builder("http://k").backoff(second * 2, second),
            "backoff",
        ),
        (
            KratosLayer::builder("http://k").backoff(second, second * 301),
            "backoff",
        ),
        (
            KratosLayer::builder("http://k").backoff_after_failures(0),
            "backoff_after_failures",
        ),
    ];
    for (builder, setting) in cases {
        let error = builder.build().expect_err(setting);
        assert_eq!(error.setting_name(), setting, "{error}");
    }
    let fine = KratosLayer::builder("http://k")
        .stale_if_error(tower_kratos::defaults::MAX_STALE_IF_ERROR)
        .max_concurrent_lookups(1)
        .lookup_queue_timeout(Duration::ZERO)
        .backoff(second, second)
        .backoff_after_failures(1)
        .build();
    assert!(fine.is_ok());
}

// ---------------------------------------------------------------------------------------------
// Cancellation

/// Polls a future once.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_request_futures_do_not_break_the_lookup_for_the_rest() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    kratos.set_latency(Duration::from_millis(300));
    let layer = default_layer(&kratos);
    let app = app_for(&layer);

    // Six requests for one credential, each polled once: the first starts the lookup, the
    // others wait on it.
    let mut requests: Vec<Pin<Box<dyn Future<Output = Answer> + Send>>> = (0..6)
        .map(|_| Box::pin(send(&app, with_token("/", &alice))) as Pin<Box<_>>)
        .collect();
    for request in &mut requests {
        assert!(poll_once(request).await.is_pending());
    }
    wait_for_whoami_calls(&kratos, 1).await;

    // Their clients go away, the first one included, while Kratos is still answering.
    let mut kept = Vec::new();
    for (index, request) in requests.into_iter().enumerate() {
        if index % 2 == 1 {
            kept.push(request);
        }
    }
    for request in kept {
        assert_session(&request.await, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    // The lookup's answer was cached too.
    assert_session(
        &send(&app, with_token("/", &alice)).await,
        &alice.id,
        &alice.identity_id,
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    wait_until_idle(&layer).await;
}

// ---------------------------------------------------------------------------------------------
// A flood of made-up tokens

/// How many distinct made-up tokens the flood sends, and from how many clients at once.
/// `examples/flood.rs` sends 100,000 from a release build; 5,000 keep this debug-build test
/// short.
const FLOOD_TOKENS: usize = 5_000;
const FLOOD_CLIENTS: usize = 256;
const FLOOD_CAP: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_bogus_tokens_is_bounded() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    // A few milliseconds per answer, as over a network: far more lookups want to run than the
    // cap lets through.
    kratos.set_latency(Duration::from_millis(2));
    let layer = KratosLayer::builder(kratos.public_url())
        .max_concurrent_lookups(FLOOD_CAP)
        .stale_if_error(GRACE)
        .build()
        .expect("layer");
    let app = app_for(&layer);
    assert_session(
        &send(&app, with_token("/", &alice)).await,
        &alice.id,
        &alice.identity_id,
    );
    kratos.reset_counters();

    let started = Instant::now();
    let mut clients = JoinSet::new();
    for client in 0..FLOOD_CLIENTS {
        let app = app.clone();
        let alice = alice.clone();
        clients.spawn(async move {
            let (mut rejected, mut overloaded) = (0usize, 0usize);
            for n in (client..FLOOD_TOKENS).step_by(FLOOD_CLIENTS) {
                let reply = send(
                    &app,
                    get("/", &[("x-session-token", &format!("ory_st_flood{n:08}"))]),
                )
                .await;
                match reply.outcome() {
                    Outcome::Unauthenticated(Unauthenticated::Rejected) => rejected += 1,
                    Outcome::Unavailable(Unavailable::Overloaded) => overloaded += 1,
                    other => panic!("a made-up token got {} {other:?}", reply.status),
                }
                // The real user keeps being served from the cache throughout.
                if n % 1000 == client {
                    let reply = send(&app, with_token("/", &alice)).await;
                    assert_session(&reply, &alice.id, &alice.identity_id);
                }
            }
            (rejected, overloaded)
        });
    }
    let (rejected, overloaded) = clients
        .join_all()
        .await
        .into_iter()
        .fold((0, 0), |(r, o), (r2, o2)| (r + r2, o + o2));
    let elapsed = started.elapsed();
    let stats = layer.stats().await;

    assert_eq!(rejected + overloaded, FLOOD_TOKENS);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        rejected,
        "one call per rejection"
    );
    // Reached, never exceeded.
    let peak = kratos.max_concurrent(Endpoint::Whoami);
    assert_eq!(peak, FLOOD_CAP, "peak whoami calls in flight");
    assert_eq!(stats.cache_entries, 1, "only alice's session");
    assert_eq!(stats.stale_entries, 1, "only alice's session");
    assert_eq!(stats.lookups_in_flight, 0);
    assert!(!stats.backing_off, "401s are Kratos answering");
    println!(
        "{FLOOD_TOKENS} made-up tokens from {FLOOD_CLIENTS} clients in {elapsed:?}: peak {peak} \
         whoami in flight (cap {FLOOD_CAP}), {rejected} 401, {overloaded} 503, cache entries {} \
         (alice), stale entries {}",
        stats.cache_entries, stats.stale_entries
    );
}

/// Kratos may ask for a long wait; the layer asks it again after its own (capped) window, and
/// tells clients that, not an hour.
#[tokio::test]
async fn a_429_tells_clients_the_layers_window_not_kratoss_longer_wait() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let layer = builder(&kratos)
        .backoff(Duration::from_millis(100), Duration::from_secs(3))
        .build()
        .expect("layer");
    let app = app_for(&layer);
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::RateLimited {
            retry_after: Some(3600),
        },
    );

    let limited = send(&app, with_token("/", &alice)).await;
    assert_unavailable(&limited);
    let told: u64 = limited
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=3).contains(&told), "Retry-After: {told}");
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}
