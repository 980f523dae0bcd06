//! TLS to Redis that fails (a CA the layer does not trust, a certificate for another host, a
//! plain server behind a `rediss://` URL): Redis is not used, the reason is logged at `warn`
//! (a bounded number of lines, no secret), requests are served without it, and nothing falls
//! back to plain text. (The whole shared-cache suite over TLS, mutual TLS and as a
//! least-privilege user is `TOWER_KRATOS_REDIS=tls|mtls|acl cargo test --test replicas --test
//! hardening --test app_replicas`, which `.ci/run` runs.)

use test_support as support;

use std::time::Duration;

use kratos_stand_in::KratosStandIn;
use support::{
    app, assert_session,
    capture::capture,
    redis_server::{Flavor, RedisServer},
    replicas::SECRET,
    send, with_token,
};
use tower_kratos::{authenticate::KratosLayerBuilder, KratosLayer};

const PASSWORD: &str = "never-in-a-log";

/// Builds a layer for `url` with `tweak`, serves five sessions through it, and checks what
/// a TLS failure must be: Redis not used, the reason (containing `reason`) logged, no secret,
/// nothing sent in plain text.
async fn served_without_redis(
    redis: &RedisServer,
    url: &str,
    tweak: impl FnOnce(KratosLayerBuilder) -> KratosLayerBuilder,
    reason: &str,
) {
    let (logs, _guard) = capture(tracing::Level::WARN);
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let builder = KratosLayer::builder(kratos.public_url())
        .redis_url(url)
        .redis_credentials("app", PASSWORD)
        .shared_cache_secret(SECRET)
        .redis_key_prefix("test");
    let layer = tweak(builder)
        .build()
        .expect("built: Redis is checked when used");
    let service = app(layer.clone());
    redis.reset_stats();
    for _ in 0..5 {
        let session = kratos.create_session();
        let answer = send(&service, with_token("/", &session)).await;
        assert_session(&answer, &session.id, &session.identity_id);
    }
    // Let the subscriber try (and fail) too: a plain server holds a TLS hello until the
    // subscription's timeout.
    let mut logged = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !logged.contains("cannot subscribe") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        logged.push_str(&logs.take());
    }
    let stats = layer.stats().await.shared_cache.expect("a shared cache");
    assert!(!stats.in_use && !stats.subscribed, "{stats:?}");
    let warnings = logged.lines().filter(|line| line.contains("WARN")).count();
    assert!(
        (1..=2).contains(&warnings),
        "one warning for commands, one for the subscription: {logged}"
    );
    assert!(!logged.contains(PASSWORD), "{logged}");
    // The reason is said: what was wrong with the TLS handshake.
    let subscription = logged
        .lines()
        .find(|line| line.contains("cannot subscribe"))
        .unwrap_or_else(|| panic!("no warning about the subscription: {logged}"));
    assert!(subscription.contains(reason), "{subscription}");
    // Nothing reached Redis in plain text: it ran only the test's own commands.
    let ran = redis.command_counts();
    assert!(
        ran.keys()
            .all(|name| ["info", "config|resetstat"].contains(&name.as_str())),
        "{ran:?}"
    );
}

#[tokio::test]
async fn a_ca_the_layer_does_not_trust_means_no_redis() {
    let redis = RedisServer::start_as(Flavor::Tls);
    // The test CA is not among the platform's roots.
    served_without_redis(&redis, &redis.url(), |builder| builder, "UnknownIssuer").await;
}

#[tokio::test]
async fn a_certificate_for_another_host_means_no_redis() {
    let redis = RedisServer::start_named(Flavor::Tls, &["redis.example.org"]);
    let ca = redis.pki().expect("TLS").ca_pem.clone();
    served_without_redis(
        &redis,
        &redis.url(),
        |builder| builder.redis_ca_pem(ca),
        "not valid for name",
    )
    .await;
}

#[tokio::test]
async fn a_plain_server_behind_a_tls_url_means_no_redis() {
    let redis = RedisServer::start_as(Flavor::Tls);
    let ca = redis.pki().expect("TLS").ca_pem.clone();
    let plain_port = redis
        .plain_url()
        .rsplit(':')
        .next()
        .expect("a port")
        .to_owned();
    let url = format!("rediss://127.0.0.1:{plain_port}");
    served_without_redis(&redis, &url, |builder| builder.redis_ca_pem(ca), "reason=").await;
}

#[tokio::test]
async fn tls_settings_are_checked_when_the_layer_is_built() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let builder = || {
        KratosLayer::builder(kratos.public_url())
            .shared_cache_secret(SECRET)
            .redis_key_prefix("test")
    };
    // No switch turns verification off.
    let insecure = builder()
        .redis_url("rediss://127.0.0.1:6380/#insecure")
        .build()
        .expect_err("refused");
    assert_eq!(insecure.setting_name(), "redis_url");
    // A CA with a plain URL is a mistake, not ignored.
    let plain = builder()
        .redis_url("redis://127.0.0.1:6379")
        .redis_ca_pem("-----BEGIN CERTIFICATE-----")
        .build()
        .expect_err("refused");
    assert_eq!(plain.setting_name(), "redis_url");
    // A CA that is not PEM.
    let garbage = builder()
        .redis_url("rediss://127.0.0.1:6380")
        .redis_ca_pem("not a certificate")
        .build()
        .expect_err("refused");
    assert_eq!(garbage.setting_name(), "redis_ca_pem");
    // The password is shown by no Debug.
    let shown = format!(
        "{:?}",
        builder()
            .redis_url("rediss://127.0.0.1:6380")
            .redis_credentials("app", PASSWORD)
    );
    assert!(!shown.contains(PASSWORD), "{shown}");
}
