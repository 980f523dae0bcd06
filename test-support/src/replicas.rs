//! Replicas over one real `redis-server`: each a layer (and local cache) of its own over the
//! shared Redis, against the stand-in over HTTP; for `replicas` and `hardening`.

use std::time::{Duration, Instant};

use http::StatusCode;
use kratos_stand_in::{KratosStandIn, TestSession};
use tower_kratos::{authenticate::KratosLayerBuilder, KratosLayer};

use super::{app, get, redis_server::RedisServer, send, with_token, Answer, App};

pub const SECRET: &str = "a shared secret of at least 32 bytes, for the tests";
/// A revocation made through one replica is honoured by the others within this.
pub const DEADLINE: Duration = Duration::from_secs(1);

pub fn shared_builder(kratos: &KratosStandIn, redis: &RedisServer) -> KratosLayerBuilder {
    let builder = KratosLayer::builder(kratos.public_url());
    redis
        .configure(builder)
        .admin_url(kratos.admin_url())
        .request_timeout(Duration::from_secs(2))
        .cache_ttl(Duration::from_secs(60))
        .redis_url(redis.url())
        .shared_cache_secret(SECRET)
        .redis_key_prefix("test")
}

/// A replica: its own layer (and local cache) over the shared Redis.
pub struct Replica {
    pub layer: KratosLayer,
    pub app: App,
}

impl Replica {
    pub async fn start(builder: KratosLayerBuilder) -> Self {
        let layer = builder.build().expect("layer");
        subscribed(&layer).await;
        Self {
            app: app(layer.clone()),
            layer,
        }
    }

    pub async fn get(&self, session: &TestSession) -> Answer {
        send(&self.app, with_token("/", session)).await
    }

    pub async fn get_cookie(&self, session: &TestSession) -> Answer {
        send(&self.app, get("/", &[("cookie", &session.cookie_header())])).await
    }
}

pub async fn replicas(kratos: &KratosStandIn, redis: &RedisServer, n: usize) -> Vec<Replica> {
    let mut started = Vec::new();
    for _ in 0..n {
        started.push(Replica::start(shared_builder(kratos, redis)).await);
    }
    started
}

/// Waits (at most 5 s) until the layer's revocation subscription is live.
pub async fn subscribed(layer: &KratosLayer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = layer.stats().await.shared_cache.expect("a shared cache");
        if stats.subscribed && stats.in_use {
            return;
        }
        assert!(Instant::now() < deadline, "never subscribed: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long until `replica` refuses `session` (asked every 5 ms), at most 3 s.
pub async fn refused_after(replica: &Replica, session: &TestSession, since: Instant) -> Duration {
    loop {
        let answer = replica.get(session).await;
        match answer.status {
            StatusCode::UNAUTHORIZED => return since.elapsed(),
            StatusCode::OK => {}
            other => panic!("neither served nor refused: {other} {}", answer.text()),
        }
        assert!(
            since.elapsed() < Duration::from_secs(3),
            "still served {:?} after the revocation",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The session entries in Redis once there are `count` of them (at most 10 s): a replica
/// writes its entry on a task of its own, after it has answered.
pub async fn entries_written(redis: &RedisServer, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("test:{*}:s"));
        if keys.len() >= count {
            assert_eq!(keys.len(), count, "{keys:?}");
            return keys;
        }
        assert!(Instant::now() < deadline, "entries written: {keys:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (at most 10 s) until `done` holds for the layer's shared-cache stats.
pub async fn until_stats(
    layer: &KratosLayer,
    what: &str,
    done: impl Fn(&tower_kratos::authenticate::SharedCacheStats) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = layer.stats().await.shared_cache.expect("a shared cache");
        if done(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Warms every replica with the session (one whoami in all, through Redis).
pub async fn warm(replicas: &[Replica], session: &TestSession) {
    for replica in replicas {
        super::assert_session(
            &replica.get(session).await,
            &session.id,
            &session.identity_id,
        );
    }
}

/// Warms every replica with the session, revokes it with `revoke`, and returns how long the
/// other replicas went on serving it (the slowest of them; at most 3 s).
pub async fn served_elsewhere<F, Fut>(
    replicas: &[Replica],
    victim: &TestSession,
    revoke: F,
) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    warm(replicas, victim).await;
    revoke().await;
    let since = Instant::now();
    let mut slowest = Duration::ZERO;
    for replica in &replicas[1..] {
        slowest = slowest.max(refused_after(replica, victim, since).await);
    }
    slowest
}

/// [`served_elsewhere`], asserted within the deadline.
pub async fn honoured_by_all<F, Fut>(
    replicas: &[Replica],
    victim: &TestSession,
    revoke: F,
) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let slowest = served_elsewhere(replicas, victim, revoke).await;
    assert!(slowest < DEADLINE, "honoured after {slowest:?}");
    slowest
}

/// How long the other replicas serve `victim`, another session of `me`'s identity, after `me`
/// revokes it through the first replica (`revoke_session`) once `before` has run.
pub async fn served_after_revoking(
    replicas: &[Replica],
    me: &TestSession,
    victim: &TestSession,
    before: impl FnOnce(),
) -> Duration {
    served_elsewhere(replicas, victim, || async {
        before();
        replicas[0]
            .layer
            .lifecycle()
            .revoke_session(&super::token_headers(me), &victim.id)
            .await
            .expect("revoked at Kratos");
    })
    .await
}

/// [`served_after_revoking`], asserted within the deadline.
pub async fn revoked_through_the_first(
    replicas: &[Replica],
    me: &TestSession,
    victim: &TestSession,
    before: impl FnOnce(),
) -> Duration {
    let slowest = served_after_revoking(replicas, me, victim, before).await;
    assert!(slowest < DEADLINE, "honoured after {slowest:?}");
    slowest
}
