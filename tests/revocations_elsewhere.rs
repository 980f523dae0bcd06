//! Revocations made outside the crate reach every replica: Kratos's web hook after
//! `revoke_active_sessions` (the receiver), and the bulk admin API through the lifecycle
//! helpers. Three replicas over a real `redis-server`, against the stand-in over HTTP.
use test_support as support;

use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession, WebHook};
use support::{
    redis_server::RedisServer,
    replicas::{refused_after, replicas, shared_builder, Replica, DEADLINE},
    send,
};
use tower_kratos::{
    hook::{RevocationHook, KEY_HEADER},
    lifecycle::{BulkAction, BulkTarget},
};

const HOOK_KEY: &str = "the hook key: at least thirty-two bytes long";

fn delivery(key: &str, body: &str) -> Request<String> {
    Request::post("/hooks/kratos/sessions-revoked")
        .header(KEY_HEADER, key)
        .header("content-type", "application/json")
        .header(
            "ory-webhook-trigger-id",
            "9f0c3e0a-6a8f-4a5e-9d0b-2f7c1c1e0d11",
        )
        .body(body.to_owned())
        .expect("a request")
}

fn hook_body(identity_id: &str, keep: Option<&str>) -> String {
    match keep {
        Some(keep) => format!(r#"{{"identity_id":"{identity_id}","keep_session_id":"{keep}"}}"#),
        None => format!(r#"{{"identity_id":"{identity_id}"}}"#),
    }
}

/// Past the window in which a mark heard from another replica still outdates fresh answers
/// (replicas' clocks may differ by up to a second).
async fn settled() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

/// Every replica serves every one of these sessions (so each has it cached).
async fn all_served(replicas: &[Replica], sessions: &[&TestSession]) {
    for replica in replicas {
        for session in sessions {
            let answer = replica.get(session).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        }
    }
}

/// Two sessions of one identity (the first is the one a settings change keeps), and another
/// identity's.
fn sessions(kratos: &KratosStandIn) -> (TestSession, TestSession, TestSession) {
    let kept = kratos.create_session();
    let other = kratos.session().identity(&kept.identity_id).create();
    let bob = kratos.create_session();
    (kept, other, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hook_ends_an_identitys_other_sessions_on_every_replica_within_a_second() {
    let kratos = support::kratos().await;
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let (kept, other, bob) = sessions(&kratos);
    all_served(&replicas, &[&kept, &other, &bob]).await;

    // Kratos disables the identity's other sessions and tells nobody: the gap.
    kratos.revoke_session(&other.id);
    all_served(&replicas, &[&kept, &other, &bob]).await;

    // Its web hook reaches one replica.
    let hook = replicas[0]
        .layer
        .revocation_hook(HOOK_KEY)
        .expect("a long key");
    let sent = Instant::now();
    let body = hook_body(&kept.identity_id, Some(&kept.id));
    let answer = send(&hook, delivery(HOOK_KEY, &body)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
    for replica in &replicas {
        let lag = refused_after(replica, &other, sent).await;
        assert!(lag < DEADLINE, "refused after {lag:?}");
    }
    // The kept session and the other identity's are served, the kept one after asking again;
    // once the clock-skew window of the heard mark has passed, from the cache again.
    all_served(&replicas, &[&kept, &bob]).await;
    settled().await;
    all_served(&replicas, &[&kept, &bob]).await;
    let whoami = kratos.calls(Endpoint::Whoami);
    all_served(&replicas, &[&kept, &bob]).await;
    assert_eq!(kratos.calls(Endpoint::Whoami), whoami, "cached again");

    // A repeated delivery (Kratos's retry) is harmless.
    let answer = send(&hook, delivery(HOOK_KEY, &body)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    all_served(&replicas, &[&kept, &bob]).await;
}

/// Kratos itself (the stand-in playing it) calls the receiver over HTTP after its
/// `revoke_active_sessions`, as the guide configures it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kratos_calls_the_hook_over_http_after_revoking() {
    let kratos = support::kratos().await;
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let (kept, other, bob) = sessions(&kratos);
    all_served(&replicas, &[&kept, &other, &bob]).await;

    let hook = replicas[2]
        .layer
        .revocation_hook(HOOK_KEY)
        .expect("a long key");
    let app = axum::Router::new().route_service("/hooks/kratos/sessions-revoked", hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    kratos.set_web_hook(WebHook {
        url: format!("http://{addr}/hooks/kratos/sessions-revoked"),
        header: "X-Kratos-Hook-Key".to_owned(),
        key: HOOK_KEY.to_owned(),
    });

    let sent = Instant::now();
    let status = kratos
        .revoke_active_sessions(&kept.identity_id, Some(&kept.id))
        .await
        .expect("delivered");
    assert_eq!(status, Some(StatusCode::NO_CONTENT));
    for replica in &replicas {
        let lag = refused_after(replica, &other, sent).await;
        assert!(lag < DEADLINE, "refused after {lag:?}");
    }
    all_served(&replicas, &[&kept, &bob]).await;
    let deliveries = kratos.web_hook_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].attempts, 1);

    // The wrong key: Kratos's delivery is refused, and nothing changes.
    settled().await;
    all_served(&replicas, &[&kept, &bob]).await;
    kratos.set_web_hook(WebHook {
        url: format!("http://{addr}/hooks/kratos/sessions-revoked"),
        header: "X-Kratos-Hook-Key".to_owned(),
        key: "another key, also thirty-two bytes or more".to_owned(),
    });
    let whoami = kratos.calls(Endpoint::Whoami);
    let status = kratos
        .revoke_active_sessions(&bob.identity_id, Some(&bob.id))
        .await
        .expect("delivered");
    assert_eq!(status, Some(StatusCode::UNAUTHORIZED));
    all_served(&replicas, &[&kept, &bob]).await;
    assert_eq!(kratos.calls(Endpoint::Whoami), whoami);
}

#[tokio::test]
async fn a_wrong_key_or_a_bad_delivery_changes_nothing() {
    let kratos = support::kratos().await;
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 1).await;
    let (kept, other, _) = sessions(&kratos);
    all_served(&replicas, &[&kept, &other]).await;
    let hook = replicas[0]
        .layer
        .revocation_hook(HOOK_KEY)
        .expect("a long key");
    let body = hook_body(&kept.identity_id, None);
    // The replica writes its entries to Redis after answering: counted writes start after them.
    support::replicas::entries_written(&redis, 2).await;
    redis.reset_stats();
    let whoami = kratos.calls(Endpoint::Whoami);

    let wrong = format!("{HOOK_KEY}!");
    for (request, status) in [
        (delivery(&wrong, &body), StatusCode::UNAUTHORIZED),
        (delivery(&HOOK_KEY[1..], &body), StatusCode::UNAUTHORIZED),
        (
            Request::post("/").body(body.clone()).expect("a request"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Request::get("/")
                .header(KEY_HEADER, HOOK_KEY)
                .body(String::new())
                .expect("a request"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (delivery(HOOK_KEY, "{}"), StatusCode::BAD_REQUEST),
        (delivery(HOOK_KEY, "not json"), StatusCode::BAD_REQUEST),
        (
            delivery(HOOK_KEY, r#"{"identity_id":"not-a-uuid"}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            delivery(
                HOOK_KEY,
                &format!(r#"{{"identity_id":"{}","extra":1}}"#, kept.identity_id),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            delivery(HOOK_KEY, &" ".repeat(64 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let answer = send(&hook, request).await;
        assert_eq!(answer.status, status, "{}", answer.text());
        assert!(!answer.everything().contains(HOOK_KEY));
    }
    assert!(redis.writes().is_empty(), "{:?}", redis.writes());
    all_served(&replicas, &[&kept, &other]).await;
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        whoami,
        "nothing was asked again"
    );
    // Short keys are refused when the receiver is made.
    let short = replicas[0]
        .layer
        .revocation_hook("thirty-one bytes is too short..");
    assert_eq!(
        short.expect_err("too short").setting_name(),
        "revocation_hook"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_the_hook_is_honoured_here_and_answered() {
    let kratos = support::kratos().await;
    let mut redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 2).await;
    let (kept, other, _) = sessions(&kratos);
    all_served(&replicas, &[&kept, &other]).await;
    let hook: RevocationHook = replicas[0]
        .layer
        .revocation_hook(HOOK_KEY)
        .expect("a long key");

    redis.stop();
    kratos.revoke_session(&other.id);
    let sent = Instant::now();
    let body = hook_body(&kept.identity_id, Some(&kept.id));
    let answer = send(&hook, delivery(HOOK_KEY, &body)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    // This replica marked the identity before it answered: its very next request is refused.
    let answer = replicas[0].get(&other).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());

    // Redis back (empty): the other replica, whose subscription broke, checks again too.
    redis.restart();
    let lag = refused_after(&replicas[1], &other, Instant::now()).await;
    assert!(lag < Duration::from_secs(3), "{lag:?}");
    all_served(&replicas, &[&kept]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_disables_reach_every_replica_by_identity_and_by_session() {
    let kratos = support::kratos().await;
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let (kept, other, bob) = sessions(&kratos);
    let carol = kratos.create_session();
    all_served(&replicas, &[&kept, &other, &bob, &carol]).await;
    let lifecycle = replicas[0].layer.lifecycle();

    let sent = Instant::now();
    let identities = [kept.identity_id.as_str()];
    let disabled = lifecycle
        .manage_sessions(BulkAction::Disable, BulkTarget::Identities(&identities))
        .await
        .expect("disabled");
    assert_eq!(disabled, 2);
    for replica in &replicas {
        for session in [&kept, &other] {
            let lag = refused_after(replica, session, sent).await;
            assert!(lag < DEADLINE, "{lag:?}");
        }
    }

    let sent = Instant::now();
    let sessions = [bob.id.as_str()];
    let deleted = lifecycle
        .manage_sessions(BulkAction::Delete, BulkTarget::Sessions(&sessions))
        .await
        .expect("deleted");
    assert_eq!(deleted, 1);
    for replica in &replicas {
        let lag = refused_after(replica, &bob, sent).await;
        assert!(lag < DEADLINE, "{lag:?}");
    }
    all_served(&replicas, &[&carol]).await;

    // Lists go 500 ids a call (Kratos's most); ids Kratos does not know are no error.
    let calls = kratos.calls(Endpoint::AdminSessionsBulk);
    let unknown: Vec<String> = (0..501)
        .map(|n| format!("00000000-0000-4000-8000-{n:012}"))
        .collect();
    let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
    let none = lifecycle
        .manage_sessions(BulkAction::Disable, BulkTarget::Sessions(&unknown))
        .await
        .expect("sent");
    assert_eq!(none, 0);
    assert_eq!(kratos.calls(Endpoint::AdminSessionsBulk), calls + 2);

    // Bad input sends nothing.
    let calls = kratos.calls(Endpoint::AdminSessionsBulk);
    let bad = lifecycle
        .manage_sessions(BulkAction::Disable, BulkTarget::Sessions(&["*"]))
        .await;
    assert!(bad.is_err());
    assert_eq!(kratos.calls(Endpoint::AdminSessionsBulk), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_everyone_out_reaches_every_replica_and_one_started_later() {
    let kratos = support::kratos().await;
    kratos.set_bulk_batch_size(2);
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let everyone: Vec<TestSession> = (0..4).map(|_| kratos.create_session()).collect();
    all_served(&replicas, &everyone.iter().collect::<Vec<_>>()).await;
    // Cached by one replica (and so in Redis), and not asked about again below.
    let untouched = kratos.create_session();
    all_served(&replicas[..1], &[&untouched]).await;
    support::replicas::entries_written(&redis, 5).await;

    let sent = Instant::now();
    let disabled = replicas[1]
        .layer
        .lifecycle()
        .manage_sessions(BulkAction::Disable, BulkTarget::Everyone)
        .await
        .expect("disabled");
    assert_eq!(disabled, 5);
    // 2 + 2 + 1: Kratos said `more` twice.
    assert_eq!(kratos.calls(Endpoint::AdminSessionsBulk), 3);
    for replica in &replicas {
        for session in &everyone {
            let lag = refused_after(replica, session, sent).await;
            assert!(lag < DEADLINE, "{lag:?}");
        }
    }

    // A replica started now does not serve what Redis kept from before: it asks Kratos.
    let later = Replica::start(shared_builder(&kratos, &redis)).await;
    let asked = kratos.calls_for_session(Endpoint::Whoami, &untouched.id);
    let answer = later.get(&untouched).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    assert_eq!(
        kratos.calls_for_session(Endpoint::Whoami, &untouched.id),
        asked + 1
    );
    let fresh = kratos.create_session();
    all_served(&[later], &[&fresh]).await;
}
