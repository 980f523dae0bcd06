//! Many replicas, one Redis (feature `redis`): layers with separate local caches over one real
//! `redis-server` this test starts, against the stand-in over HTTP. Kratos is asked once per
//! session whatever the replica count, every revocation helper is honoured by the other
//! replicas within the deadline, an extension is made once, a replica that missed a message
//! never serves a revoked session, tampered values never give a wrong or revoked session, and
//! Redis faults never reach the user.

use test_support as support;

use std::time::{Duration, Instant};

use http::StatusCode;
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use support::{
    app, assert_session,
    redis_server::RedisServer,
    replicas::{
        entries_written, honoured_by_all, refused_after, replicas, shared_builder, until_stats,
        Replica, DEADLINE,
    },
    send, token_headers, with_token,
};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_used_on_three_replicas_costs_one_whoami() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let alice = kratos.create_session();

    for replica in &replicas {
        assert_session(&replica.get(&alice).await, &alice.id, &alice.identity_id);
    }
    // The first replica asked; the others read its entry (give its write a moment to land).
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    let stats = replicas[2]
        .layer
        .stats()
        .await
        .shared_cache
        .expect("shared");
    assert_eq!(stats.hits, 1, "{stats:?}");
    // Redis holds no credential and no readable session: only hashes and sealed bytes.
    let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("*"));
    assert!(keys.iter().all(|key| key.starts_with("test:")), "{keys:?}");
    for key in keys.iter().filter(|key| key.ends_with(":s")) {
        let value: Vec<u8> = redis.query(redis::cmd("GET").arg(key));
        let text = String::from_utf8_lossy(&value);
        for secret in [&alice.token, &alice.id, &alice.identity_id] {
            assert!(!key.contains(secret.as_str()) && !text.contains(secret.as_str()));
        }
        assert!(!text.contains("email"), "a readable session in Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_on_three_replicas_make_one_whoami() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    kratos.set_latency(Duration::from_millis(100));
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let alice = kratos.create_session();

    let mut requests = JoinSet::new();
    for replica in &replicas {
        for _ in 0..10 {
            requests.spawn(send(&replica.app, with_token("/", &alice)));
        }
    }
    while let Some(answer) = requests.join_next().await {
        assert_session(&answer.expect("a request"), &alice.id, &alice.identity_id);
    }
    // One replica claimed the fill; the others waited for its entry.
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_helper_is_honoured_by_the_other_replicas() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let sessions = replicas[0].layer.lifecycle();

    // revoke_session: another session of the caller's identity.
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    honoured_by_all(&replicas, &victim, || async {
        sessions
            .revoke_session(&token_headers(&me), &victim.id)
            .await
            .expect("revoked");
    })
    .await;

    // revoke_other_sessions.
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    honoured_by_all(&replicas, &victim, || async {
        sessions
            .revoke_other_sessions(&token_headers(&me))
            .await
            .expect("revoked");
    })
    .await;

    // logout (API): the token itself.
    let victim = kratos.create_session();
    honoured_by_all(&replicas, &victim, || async {
        sessions
            .logout(&token_headers(&victim))
            .await
            .expect("logged out");
    })
    .await;

    // disable_session (admin).
    let victim = kratos.create_session();
    honoured_by_all(&replicas, &victim, || async {
        sessions
            .disable_session(&victim.id)
            .await
            .expect("disabled");
    })
    .await;

    // revoke_identity_sessions (admin).
    let victim = kratos.create_session();
    honoured_by_all(&replicas, &victim, || async {
        sessions
            .revoke_identity_sessions(&victim.identity_id)
            .await
            .expect("revoked");
    })
    .await;

    // logout_browser: the cookie.
    let victim = kratos.create_session();
    for replica in &replicas {
        assert_session(
            &replica.get_cookie(&victim).await,
            &victim.id,
            &victim.identity_id,
        );
    }
    let mut cookie = http::HeaderMap::new();
    cookie.insert("cookie", victim.cookie_header().parse().expect("header"));
    let _cleared = sessions.logout_browser(&cookie).await.expect("logged out");
    let since = Instant::now();
    for replica in &replicas[1..] {
        loop {
            let answer = replica.get_cookie(&victim).await;
            if answer.status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(since.elapsed() < DEADLINE, "cookie still served");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_due_on_three_replicas_is_extended_once() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            Replica::start(
                shared_builder(&kratos, &redis).extend_within(Duration::from_secs(3600)),
            )
            .await,
        );
    }
    let alice = kratos
        .session()
        .expires_in(Duration::from_secs(600))
        .create();

    for replica in &replicas {
        assert_session(&replica.get(&alice).await, &alice.id, &alice.identity_id);
    }
    for replica in &replicas {
        assert_session(&replica.get(&alice).await, &alice.id, &alice.identity_id);
    }
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_after_a_revocation_never_serves_it() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let first = Replica::start(shared_builder(&kratos, &redis)).await;
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    let bystander = kratos.create_session();
    // Both in Redis.
    assert_session(&first.get(&victim).await, &victim.id, &victim.identity_id);
    assert_session(
        &first.get(&bystander).await,
        &bystander.id,
        &bystander.identity_id,
    );
    let mut headers = http::HeaderMap::new();
    headers.insert("x-session-token", me.token.parse().expect("header"));
    first
        .layer
        .lifecycle()
        .revoke_session(&headers, &victim.id)
        .await
        .expect("revoked");
    let calls = kratos.calls(Endpoint::Whoami);

    // A replica that was not there to hear it learns it from the records.
    let late = Replica::start(shared_builder(&kratos, &redis)).await;
    assert_session(
        &late.get(&bystander).await,
        &bystander.id,
        &bystander.identity_id,
    );
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        calls,
        "the bystander came from Redis"
    );
    support::assert_unauthorized(&late.get(&victim).await);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        calls + 1,
        "Kratos was asked about the victim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_subscription_broke_reads_what_it_missed() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 2).await;
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    for replica in &replicas {
        assert_session(&replica.get(&victim).await, &victim.id, &victim.identity_id);
    }
    let calls = kratos.calls(Endpoint::Whoami);

    // Every subscription killed; a revocation made at once may be published before the
    // replicas resubscribe, and then never heard.
    let killed: i64 = redis.query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
    assert!(killed >= 2, "killed {killed}");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-session-token", me.token.parse().expect("header"));
    replicas[0]
        .layer
        .lifecycle()
        .revoke_session(&headers, &victim.id)
        .await
        .expect("revoked");
    let since = Instant::now();
    let took = refused_after(&replicas[1], &victim, since).await;
    assert!(took < DEADLINE, "refused after {took:?}");
    assert!(kratos.calls(Endpoint::Whoami) > calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_values_never_give_a_wrong_or_revoked_session() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let writer = Replica::start(shared_builder(&kratos, &redis)).await;
    let alice = kratos.create_session();
    let bob = kratos.create_session();
    assert_session(&writer.get(&alice).await, &alice.id, &alice.identity_id);
    assert_session(&writer.get(&bob).await, &bob.id, &bob.identity_id);
    // Which key is whose: a fresh replica reads them; the one it was served from is alice's.
    let keys = entries_written(&redis, 2).await;
    let value = |key: &str| -> Vec<u8> { redis.query(redis::cmd("GET").arg(key)) };
    let set = |key: &str, value: &[u8]| {
        let _: () = redis.query(redis::cmd("SET").arg(key).arg(value).arg("EX").arg(60));
    };
    let (a, b) = (keys[0].clone(), keys[1].clone());
    let (value_a, value_b) = (value(&a), value(&b));

    // Swapped: each key holds the other's value.
    set(&a, &value_b);
    set(&b, &value_a);
    let reader = Replica::start(shared_builder(&kratos, &redis)).await;
    let calls = kratos.calls(Endpoint::Whoami);
    assert_session(&reader.get(&alice).await, &alice.id, &alice.identity_id);
    assert_session(&reader.get(&bob).await, &bob.id, &bob.identity_id);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        calls + 2,
        "both asked of Kratos"
    );
    let stats = reader.layer.stats().await.shared_cache.expect("shared");
    assert_eq!(stats.unreadable, 2, "{stats:?}");

    // A flipped byte, and garbage.
    for broken in [
        {
            let mut flipped = value(&a);
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            flipped
        },
        b"not even sealed".to_vec(),
    ] {
        set(&a, &broken);
        set(&b, &broken);
        let fresh = Replica::start(shared_builder(&kratos, &redis)).await;
        assert_session(&fresh.get(&alice).await, &alice.id, &alice.identity_id);
        assert_session(&fresh.get(&bob).await, &bob.id, &bob.identity_id);
    }

    // An old value replayed after a revocation.
    let victim = alice;
    let first = Replica::start(shared_builder(&kratos, &redis)).await;
    let _ = redis.query::<i64>(redis::cmd("DEL").arg(&a).arg(&b));
    assert_session(&first.get(&victim).await, &victim.id, &victim.identity_id);
    let key = entries_written(&redis, 1).await.remove(0);
    let old = value(&key);
    first
        .layer
        .lifecycle()
        .disable_session(&victim.id)
        .await
        .expect("disabled");
    set(&key, &old);
    let other = Replica::start(shared_builder(&kratos, &redis)).await;
    support::assert_unauthorized(&other.get(&victim).await);
    support::assert_unauthorized(&first.get(&victim).await);

    // A forged revocation record is ignored, never an error.
    let _: i64 = redis.query(redis::cmd("PUBLISH").arg("test:revocations").arg("forged"));
    assert_session(&first.get(&bob).await, &bob.id, &bob.identity_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_serves_without_it_and_is_used_once_it_comes() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let mut redis = RedisServer::start();
    redis.stop();
    let layer = shared_builder(&kratos, &redis)
        .build()
        .expect("built without Redis");
    let service = app(layer.clone());
    let alice = kratos.create_session();

    for _ in 0..5 {
        assert_session(
            &send(&service, with_token("/", &alice)).await,
            &alice.id,
            &alice.identity_id,
        );
    }
    let stats = layer.stats().await.shared_cache.expect("shared");
    assert!(!stats.in_use && !stats.subscribed, "{stats:?}");

    redis.restart();
    until_stats(&layer, "used once Redis is up", |stats| stats.in_use).await;
    let bob = kratos.create_session();
    assert_session(
        &send(&service, with_token("/", &bob)).await,
        &bob.id,
        &bob.identity_id,
    );
    let other = Replica::start(shared_builder(&kratos, &redis)).await;
    let calls = kratos.calls(Endpoint::Whoami);
    assert_session(&other.get(&bob).await, &bob.id, &bob.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), calls, "bob came from Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_never_reach_the_user() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let mut redis = RedisServer::start();
    let replica = Replica::start(shared_builder(&kratos, &redis)).await;
    let served = |session: TestSession| {
        let app = replica.app.clone();
        async move {
            let answer = send(&app, with_token("/", &session)).await;
            assert_session(&answer, &session.id, &session.identity_id);
        }
    };

    // Down: served by Kratos; after two failures Redis is not asked for a while, so a burst
    // of misses costs no timeout each.
    redis.stop();
    for _ in 0..3 {
        served(kratos.create_session()).await;
    }
    // The writes run on tasks of their own; let them fail.
    until_stats(&replica.layer, "paused after failures", |stats| {
        stats.errors >= 2
    })
    .await;
    // Calls started before the pause began may still be failing (over TLS a failed connection
    // takes longer than a refused one); each ends within the Redis timeout, so count from
    // when they all have.
    tokio::time::sleep(2 * tower_kratos::defaults::DEFAULT_REDIS_TIMEOUT).await;
    let paused = replica.layer.stats().await.shared_cache.expect("shared");
    assert!(!paused.in_use, "{paused:?}");
    for _ in 0..20 {
        served(kratos.create_session()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = replica.layer.stats().await.shared_cache.expect("shared");
    assert!(
        after.errors <= paused.errors + 1,
        "Redis asked while paused: {paused:?} {after:?}"
    );

    // Restarted (empty): resubscribed and used again.
    redis.restart();
    until_stats(&replica.layer, "back after a restart", |stats| stats.in_use).await;
    let carol = kratos.create_session();
    served(carol.clone()).await;
    let other = Replica::start(shared_builder(&kratos, &redis)).await;
    let calls = kratos.calls(Endpoint::Whoami);
    assert_session(&other.get(&carol).await, &carol.id, &carol.identity_id);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        calls,
        "carol came from Redis"
    );

    // Slower than the timeout: Redis blocked for a second.
    let blocker = {
        let url = redis.plain_url();
        std::thread::spawn(move || {
            let mut connection = redis::Client::open(url)
                .and_then(|client| client.get_connection())
                .expect("connect");
            let _: redis::RedisResult<()> = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(1)
                .query(&mut connection);
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    served(kratos.create_session()).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "waited for a blocked Redis"
    );
    blocker.join().expect("the blocker");

    // Flushed: nothing shared any more, nothing wrong either.
    until_stats(&replica.layer, "back after the block", |stats| stats.in_use).await;
    let _: () = redis.query(&mut redis::cmd("FLUSHALL"));
    served(kratos.create_session()).await;
    served(carol.clone()).await;

    // Full (maxmemory with noeviction): writes refused, requests served.
    let _: () = redis.query(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction"),
    );
    let _: () = redis.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"));
    for _ in 0..3 {
        served(kratos.create_session()).await;
    }
    let _: () = redis.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0"));
    let final_stats = replica.layer.stats().await.shared_cache.expect("shared");
    assert!(final_stats.errors > after.errors, "{final_stats:?}");
}
