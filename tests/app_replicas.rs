//! Three reference-app processes (`examples/axum_app.rs`), one real `redis-server` and one Kratos
//! stand-in, over real HTTP: a session is looked up once whatever replica serves it, a
//! revocation through one replica is honoured by the others within a second, and an app told to
//! share a cache without its secret refuses to start.

mod app_support;
use test_support as support;

use std::time::{Duration, Instant};

use app_support::App;
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use support::redis_server::RedisServer;

const SECRET: &str = "thirty-two bytes or more, the same on all three";

fn replica(kratos: &KratosStandIn, redis: &RedisServer) -> App {
    replica_with(kratos, redis, &[])
}

/// A replica with more settings than the shared cache's.
fn replica_with(kratos: &KratosStandIn, redis: &RedisServer, more: &[(&str, &str)]) -> App {
    let public_url = kratos.public_url();
    let redis_env = redis.app_env();
    let mut env = vec![
        ("KRATOS_PUBLIC_URL", public_url.as_str()),
        ("SHARED_CACHE_SECRET", SECRET),
        // The prefix the `acl` flavor's user is limited to.
        ("REDIS_KEY_PREFIX", "test"),
    ];
    env.extend(
        redis_env
            .iter()
            .map(|(name, value)| (*name, value.as_str())),
    );
    env.extend_from_slice(more);
    App::spawn(&env)
}

async fn status(client: &reqwest::Client, url: &str, session: &TestSession) -> u16 {
    client
        .get(url)
        .header("x-session-token", &session.token)
        .send()
        .await
        .expect("a request to the app")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_app_processes_share_one_cache_and_every_revocation() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let apps = [
        replica(&kratos, &redis),
        replica(&kratos, &redis),
        replica(&kratos, &redis),
    ];
    let client = reqwest::Client::new();
    let me = kratos.create_session();
    let other = kratos.session().identity(&me.identity_id).create();

    // Each app subscribes at start; until then it reads no shared entries (and asks Kratos):
    // wait until the first lookup of a warm-up session on the last app is a Redis hit.
    let warm = kratos.create_session();
    assert_eq!(status(&client, &apps[0].url("/me"), &warm).await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    for app in &apps[1..] {
        loop {
            let fresh = kratos.session().identity(&warm.identity_id).create();
            assert_eq!(status(&client, &apps[0].url("/me"), &fresh).await, 200);
            assert_eq!(status(&client, &app.url("/me"), &fresh).await, 200);
            if kratos.calls_for_session(Endpoint::Whoami, &fresh.id) == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never used the shared cache",
                app.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // One whoami for `other`, whichever app serves it.
    for app in &apps {
        assert_eq!(status(&client, &app.url("/me"), &other).await, 200);
    }
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &other.id), 1);

    // Revoked through the first app; the others refuse it within a second.
    let revoke = client
        .delete(apps[0].url(&format!("/me/sessions/{}", other.id)))
        .header("x-session-token", &me.token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status(), 204);
    let since = Instant::now();
    for app in &apps[1..] {
        loop {
            match status(&client, &app.url("/me"), &other).await {
                401 => break,
                200 => {}
                unexpected => panic!("{}: {unexpected}", app.base),
            }
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "{} served the revoked session {:?} after the revocation",
                app.base,
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_a_redis_url_and_no_secret_refuses_to_start() {
    let refused = App::try_spawn(&[("REDIS_URL", "redis://127.0.0.1:6379")])
        .expect_err("started without a secret");
    assert!(refused.contains("SHARED_CACHE_SECRET"), "{refused}");

    // Redis unreachable at start is no reason not to serve.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = App::spawn(&[
        ("KRATOS_PUBLIC_URL", &kratos.public_url()),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("SHARED_CACHE_SECRET", SECRET),
    ]);
    let session = kratos.create_session();
    assert_eq!(
        status(&reqwest::Client::new(), &app.url("/me"), &session).await,
        200
    );
}

#[tokio::test]
async fn an_app_given_two_redis_or_an_unreadable_file_refuses_to_start_naming_them() {
    let both = App::try_spawn(&[
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        (
            "REDIS_CLUSTER_NODES",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
        ),
        ("SHARED_CACHE_SECRET", SECRET),
    ])
    .expect_err("started with two Redis");
    assert!(
        both.contains("REDIS_URL") && both.contains("REDIS_CLUSTER_NODES"),
        "{both}"
    );
    let no_name = App::try_spawn(&[
        ("REDIS_SENTINELS", "127.0.0.1:26379"),
        ("SHARED_CACHE_SECRET", SECRET),
    ])
    .expect_err("started without the primary's name");
    assert!(no_name.contains("REDIS_SENTINEL_MASTER"), "{no_name}");
    let unreadable = App::try_spawn(&[
        ("REDIS_URL", "rediss://127.0.0.1:6380"),
        ("REDIS_CA_FILE", "/nonexistent/ca.pem"),
        ("SHARED_CACHE_SECRET", SECRET),
    ])
    .expect_err("started with an unreadable CA file");
    assert!(unreadable.contains("REDIS_CA_FILE"), "{unreadable}");
}

/// The reference app with `KRATOS_HOOK_KEY`: Kratos's web hook (the stand-in playing it) reaches
/// one process, and every process refuses the identity's other sessions within a second; a key
/// shorter than 32 bytes stops the app with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kratoss_web_hook_reaches_every_app_process() {
    const HOOK_KEY: &str = "the reference app's hook key, 32 bytes or more";
    let short = App::try_spawn(&[("KRATOS_HOOK_KEY", "too short")]).expect_err("started");
    assert!(
        short.contains("KRATOS_HOOK_KEY") && short.contains("32 bytes"),
        "{short}"
    );

    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let apps: Vec<App> = (0..3)
        .map(|_| replica_with(&kratos, &redis, &[("KRATOS_HOOK_KEY", HOOK_KEY)]))
        .collect();
    let kept = kratos.create_session();
    let other = kratos.session().identity(&kept.identity_id).create();
    let client = reqwest::Client::new();
    for app in &apps {
        for session in [&kept, &other] {
            assert_eq!(status(&client, &app.url("/me"), session).await, 200);
        }
    }
    kratos.set_web_hook(kratos_stand_in::WebHook {
        url: apps[1].url("/hooks/kratos/sessions-revoked"),
        header: "X-Kratos-Hook-Key".to_owned(),
        key: HOOK_KEY.to_owned(),
    });
    let sent = Instant::now();
    let delivered = kratos
        .revoke_active_sessions(&kept.identity_id, Some(&kept.id))
        .await
        .expect("delivered");
    assert_eq!(delivered.map(|status| status.as_u16()), Some(204));
    for app in &apps {
        loop {
            match status(&client, &app.url("/me"), &other).await {
                401 => break,
                200 => assert!(sent.elapsed() < Duration::from_secs(1), "still served"),
                other => panic!("neither served nor refused: {other}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(status(&client, &app.url("/me"), &kept).await, 200);
    }
}
