//! The session cache: one whoami per credential per entry lifetime, however many requests arrive
//! at once; entries bounded by the TTL, Kratos's `Ory-Session-Cache-For` and the session's own
//! expiry; rejections cached only on request; step-ups and outages never cached; sessions never
//! mixed up; a cancelled request does not cancel the lookup others wait on.
//!
//! Sleeps only cross an expiry and stay short; nothing asserts on speed.

use test_support as support;

use std::time::Duration;

use http::StatusCode;
use kratos_stand_in::{Endpoint, Fault, KratosStandIn};
use support::{
    app, assert_session, assert_unauthorized, assert_unavailable, default_app, get, send,
    wait_for_whoami_calls, with_token, App,
};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tower_kratos::outcome::Unauthenticated;
use tower_kratos::{authenticate::KratosLayerBuilder, KratosLayer, Outcome};

/// The app with a layer configured by `configure`.
fn app_with(
    kratos: &KratosStandIn,
    configure: impl FnOnce(KratosLayerBuilder) -> KratosLayerBuilder,
) -> App {
    app(configure(KratosLayer::builder(kratos.public_url()))
        .build()
        .expect("layer"))
}

/// Sleeps until `at` has passed by `margin`.
async fn sleep_past(at: OffsetDateTime, margin: Duration) {
    let left = at - OffsetDateTime::now_utc();
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    assert!(
        left <= Duration::from_secs(2),
        "sleeps stay short ({left:?})"
    );
    tokio::time::sleep(left + margin).await;
}

// ---------------------------------------------------------------------------------------------
// Hits and coalescing

#[tokio::test]
async fn sequential_requests_with_one_credential_ask_kratos_once() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = default_app(&kratos);

    for _ in 0..20 {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_session(&reply, &alice.id, &alice.identity_id);
    }

    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_share_one_whoami() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    // Kratos answers slowly, so all 100 requests are waiting before the first answer exists.
    kratos.set_latency(Duration::from_millis(200));
    let app = default_app(&kratos);

    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let app = app.clone();
        let alice = alice.clone();
        tasks.spawn(async move { send(&app, with_token("/", &alice)).await });
    }
    let replies = tasks.join_all().await;

    assert_eq!(replies.len(), 100);
    for reply in &replies {
        assert_session(reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
}

#[tokio::test]
async fn the_same_token_as_header_and_as_bearer_shares_one_entry() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = default_app(&kratos);

    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    let reply = send(
        &app,
        get(
            "/",
            &[("authorization", &format!("Bearer {}", alice.token))],
        ),
    )
    .await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    // The session's cookie is another credential, with an entry of its own.
    let reply = send(&app, get("/", &[("cookie", &alice.cookie_header())])).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_ttl_disables_caching_but_still_coalesces() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = app_with(&kratos, |b| b.cache_ttl(Duration::ZERO));

    for _ in 0..3 {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_session(&reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 3, "nothing is cached");

    kratos.reset_counters();
    kratos.set_latency(Duration::from_millis(200));
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let app = app.clone();
        let alice = alice.clone();
        tasks.spawn(async move { send(&app, with_token("/", &alice)).await });
    }
    for reply in tasks.join_all().await {
        assert_session(&reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        1,
        "concurrent lookups share one call"
    );
}

// ---------------------------------------------------------------------------------------------
// Entry lifetimes

#[tokio::test]
async fn a_session_expiring_before_the_ttl_is_refused_after_its_expiry() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos
        .session()
        .expires_in(Duration::from_millis(1500))
        .create();
    let app = app_with(&kratos, |b| b.cache_ttl(Duration::from_secs(60)));

    for _ in 0..2 {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_session(&reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    sleep_past(alice.expires_at, Duration::from_millis(200)).await;
    let reply = send(&app, with_token("/", &alice)).await;

    assert_unauthorized(&reply);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2, "Kratos asked again once");
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 2);
}

#[tokio::test]
async fn a_short_cache_ttl_asks_kratos_again_after_it_passes() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = app_with(&kratos, |b| b.cache_ttl(Duration::from_secs(1)));

    for _ in 0..2 {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_session(&reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1, "cached within the TTL");

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = send(&app, with_token("/", &alice)).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

#[tokio::test]
async fn ory_session_cache_for_shortens_an_entry_below_the_ttl() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    kratos.set_session_cache_for(Some(Duration::from_secs(1)));
    let alice = kratos.create_session();
    let app = app_with(&kratos, |b| b.cache_ttl(Duration::from_secs(60)));

    for _ in 0..2 {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_session(&reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = send(&app, with_token("/", &alice)).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        2,
        "the 1 s hint ended the entry, not the 60 s TTL"
    );
}

#[tokio::test]
async fn a_session_revoked_at_kratos_is_served_from_cache_until_the_ttl_passes() {
    // The revocation lag the guide states: at most the cache TTL.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = app_with(&kratos, |b| b.cache_ttl(Duration::from_secs(1)));

    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert!(kratos.revoke_session(&alice.id));

    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1, "served from the cache");

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = send(&app, with_token("/", &alice)).await;

    assert_unauthorized(&reply);
    assert!(matches!(
        reply.outcome(),
        Outcome::Unauthenticated(Unauthenticated::Rejected)
    ));
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 2);
}

// ---------------------------------------------------------------------------------------------
// What is cached besides sessions

#[tokio::test]
async fn rejections_are_not_cached_by_default() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = default_app(&kratos);

    for _ in 0..2 {
        let reply = send(&app, get("/", &[("x-session-token", "ory_st_unknown")])).await;
        assert_unauthorized(&reply);
    }

    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

#[tokio::test]
async fn rejections_are_cached_when_asked_to() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = app_with(&kratos, |b| b.cache_rejections(Duration::from_secs(30)));

    for _ in 0..3 {
        let reply = send(&app, get("/", &[("x-session-token", "ory_st_unknown")])).await;
        assert_unauthorized(&reply);
        assert!(matches!(
            reply.outcome(),
            Outcome::Unauthenticated(Unauthenticated::Rejected)
        ));
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    // A cached rejection is for that credential only.
    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

#[tokio::test]
async fn step_up_answers_are_never_cached() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.session().requires_aal2().create();
    // Even with rejections cached, a step-up must be asked again.
    let app = app_with(&kratos, |b| b.cache_rejections(Duration::from_secs(30)));

    for _ in 0..2 {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "body: {}",
            reply.text()
        );
        let body = reply.json();
        assert_eq!(body["error"]["id"], "session_aal2_required");
        assert_eq!(
            body["redirect_browser_to"],
            format!(
                "{}/self-service/login/browser?aal=aal2",
                kratos.public_url()
            )
        );
        assert!(matches!(reply.outcome(), Outcome::AalRequired(_)));
    }

    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 2);
}

#[tokio::test]
async fn outages_are_never_cached() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = app_with(&kratos, |b| b.cache_rejections(Duration::from_secs(30)));

    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for _ in 0..2 {
        let reply = send(&app, with_token("/", &alice)).await;
        assert_unavailable(&reply);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 2, "each outage asked again");

    kratos.clear_fault(Endpoint::Whoami);
    let reply = send(&app, with_token("/", &alice)).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_during_an_outage_share_one_whoami() {
    // Not cached, but not a stampede either: requests waiting together share the failed call.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    kratos.set_latency(Duration::from_millis(200));
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let app = default_app(&kratos);

    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let app = app.clone();
        let alice = alice.clone();
        tasks.spawn(async move { send(&app, with_token("/", &alice)).await });
    }
    for reply in tasks.join_all().await {
        assert_unavailable(&reply);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    kratos.clear_faults();
    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

// ---------------------------------------------------------------------------------------------
// Isolation and cancellation

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_sessions_never_get_each_others_session() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let sessions: Vec<_> = (0..50).map(|_| kratos.create_session()).collect();
    kratos.set_latency(Duration::from_millis(50));
    let app = default_app(&kratos);

    // Two requests per session, all at once: one by token, one by Bearer (one cache entry).
    let mut tasks = JoinSet::new();
    for (index, session) in sessions.iter().enumerate() {
        for bearer in [false, true] {
            let app = app.clone();
            let session = session.clone();
            tasks.spawn(async move {
                let request = if bearer {
                    get(
                        "/",
                        &[("authorization", &format!("Bearer {}", session.token))],
                    )
                } else {
                    with_token("/", &session)
                };
                (index, send(&app, request).await)
            });
        }
    }
    let replies = tasks.join_all().await;

    assert_eq!(replies.len(), 100);
    for (index, reply) in &replies {
        let own = &sessions[*index];
        assert_session(reply, &own.id, &own.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 50);
    for session in &sessions {
        assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_sessions_than_hot_slots_each_get_their_own_session_from_one_whoami() {
    // Hits are served from a table of at most 1,024 slots in front of the cache; 2,000 sessions
    // make slots shared, taken over and given back, from four threads at once.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let sessions: Vec<_> = (0..2_000).map(|_| kratos.create_session()).collect();
    let app = default_app(&kratos);

    // Round 0 fills the cache 100 sessions at a time: 2,000 misses at once would overrun the
    // layer's lookup queue (32 whoami calls at a time, 1 s to wait) on a slow test machine.
    // Rounds 1 and 2 are all hits, all at once.
    for round in 0..3 {
        let batch = if round == 0 { 100 } else { sessions.len() };
        for (first, chunk) in sessions.chunks(batch).enumerate() {
            let mut tasks = JoinSet::new();
            for (offset, session) in chunk.iter().enumerate() {
                let app = app.clone();
                let session = session.clone();
                let index = first * batch + offset;
                tasks.spawn(async move { (index, send(&app, with_token("/", &session)).await) });
            }
            for (index, reply) in tasks.join_all().await {
                let own = &sessions[index];
                assert_session(&reply, &own.id, &own.identity_id);
            }
        }
        assert_eq!(
            kratos.calls(Endpoint::Whoami),
            2_000,
            "round {round}: one whoami per session, whichever slot served it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_request_does_not_stop_the_lookup_others_wait_on() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    kratos.set_latency(Duration::from_millis(300));
    let app = default_app(&kratos);
    let spawn = |app: &App| {
        let app = app.clone();
        let alice = alice.clone();
        tokio::spawn(async move { send(&app, with_token("/", &alice)).await })
    };

    // The first request's lookup is the one that reaches Kratos...
    let first = spawn(&app);
    wait_for_whoami_calls(&kratos, 1).await;
    let others: Vec<_> = (0..4).map(|_| spawn(&app)).collect();
    // ...and its caller goes away while Kratos is still answering.
    first.abort();
    let aborted = first.await.expect_err("the first request was aborted");
    assert!(aborted.is_cancelled());

    for other in others {
        let reply = other.await.expect("request task");
        assert_session(&reply, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    // The answer was cached, too.
    let reply = send(&app, with_token("/", &alice)).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}
