//! What an outside security trial of the shared cache found, each against real servers (the
//! stand-in over HTTP, `redis-server` processes the tests start): a refusal is not a
//! revocation, an anonymous logout writes nothing, a full or paused Redis still carries
//! revocations, junk records neither switch sharing off nor last, and a broken subscription
//! costs Kratos nothing when it comes back.

use test_support as support;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use http::StatusCode;
use kratos_stand_in::{Endpoint, KratosStandIn};
use support::{
    assert_session, echo_session, get,
    redis_server::RedisServer,
    replicas::{
        replicas, revoked_through_the_first, served_after_revoking, shared_builder, subscribed,
        until_stats, warm, Replica, DEADLINE,
    },
    send, token_headers, with_token,
};
use tower::ServiceBuilder;
use tower_kratos::require::Requirement;

/// The revocation records' key under the tests' prefix.
const RECORDS: &str = "test:revocations";

fn records(redis: &RedisServer) -> u64 {
    redis.query(redis::cmd("ZCARD").arg(RECORDS))
}

/// The ids of the pub/sub clients connected now.
fn pubsub_clients(redis: &RedisServer) -> HashSet<String> {
    let list: String = redis.query(redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"));
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

/// Kills every subscription and waits (at most 5 s) until `count` new ones are connected.
fn break_subscriptions(redis: &RedisServer, count: usize) {
    let old = pubsub_clients(redis);
    let _: i64 = redis.query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let new = pubsub_clients(redis).difference(&old).count();
        if new >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{new} of {count} resubscribed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `count` records that are not the crate's (they do not open) at `score`, each padded
/// with `padding` bytes.
fn add_junk_records(redis: &RedisServer, count: usize, score: i64, padding: usize) {
    let mut connection = redis.connection();
    let filler = "j".repeat(padding);
    for batch in 0..count.div_ceil(1000) {
        let mut pipe = redis::pipe();
        for index in 0..1000.min(count - batch * 1000) {
            let member = format!("{batch}-{index}-{filler}");
            pipe.cmd("ZADD")
                .arg(RECORDS)
                .arg(score)
                .arg(member)
                .ignore();
        }
        let _: () = pipe.query(&mut connection).expect("junk written");
    }
}

/// Breaks every subscription, waits until each replica has subscribed again, serves every
/// session on every replica, and returns the whoami calls that cost.
async fn served_after_a_break(
    kratos: &KratosStandIn,
    redis: &RedisServer,
    replicas: &[Replica],
    sessions: &[kratos_stand_in::TestSession],
) -> usize {
    let calls = kratos.calls(Endpoint::Whoami);
    break_subscriptions(redis, replicas.len());
    for replica in replicas {
        subscribed(&replica.layer).await;
        for session in sessions {
            assert_session(
                &replica.get(session).await,
                &session.id,
                &session.identity_id,
            );
        }
    }
    kratos.calls(Endpoint::Whoami) - calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_anonymous_logouts_write_nothing_to_redis_on_three_replicas() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let session = kratos.create_session();
    warm(&replicas, &session).await;
    let billing: Vec<_> = replicas
        .iter()
        .map(|replica| {
            ServiceBuilder::new()
                .layer(replica.layer.clone())
                .layer(replica.layer.require(Requirement::new().second_factor()))
                .service_fn(echo_session)
        })
        .collect();
    redis.reset_stats();
    let before = kratos.calls_for_session(Endpoint::Whoami, &session.id);

    for index in 0..100 {
        let answer = send(&billing[index % 3], with_token("/billing", &session)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    }
    let whoami = kratos.calls_for_session(Endpoint::Whoami, &session.id) - before;
    assert!(
        whoami <= 3,
        "100 refusals on 3 replicas: {whoami} whoami calls"
    );

    // Made-up cookies at the logout helper: Kratos says 401, nothing is recorded.
    for index in 0..300 {
        let mut headers = http::HeaderMap::new();
        let cookie = format!("ory_kratos_session=made-up-{index}");
        headers.insert("cookie", cookie.parse().expect("header"));
        let logout = replicas[index % 3]
            .layer
            .lifecycle()
            .logout_browser(&headers)
            .await
            .expect("nothing to sign out is no error");
        assert!(!logout.was_signed_in());
    }
    assert_eq!(kratos.calls(Endpoint::LogoutBrowser), 300);
    assert_eq!(redis.writes(), Default::default(), "writes to Redis");
    assert_eq!(records(&redis), 0);
    // And the refused session is still served where it meets the route's needs.
    for replica in &replicas {
        assert_session(
            &replica.get(&session).await,
            &session.id,
            &session.identity_id,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_still_carries_a_revocation_and_records_it_once_it_has_room() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    let served_elsewhere = served_after_revoking(&replicas, &me, &victim, || {
        // maxmemory with noeviction (Redis's default policy): every write is refused as OOM.
        let _: () = redis.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"));
    })
    .await;
    println!("full Redis: the revoked session was served elsewhere for {served_elsewhere:?}");
    assert!(
        served_elsewhere < DEADLINE,
        "served for {served_elsewhere:?}"
    );
    assert_eq!(records(&redis), 0, "Redis had no room for the record");
    let stats = replicas[0]
        .layer
        .stats()
        .await
        .shared_cache
        .expect("shared");
    assert_eq!(stats.unsent_revocations, 1, "{stats:?}");

    // Room again: the record is written by the retrier, and a replica started now reads it.
    let _: () = redis.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0"));
    until_stats(&replicas[0].layer, "the record retried", |stats| {
        stats.unsent_revocations == 0
    })
    .await;
    assert_eq!(records(&redis), 1);
    let late = Replica::start(shared_builder(&kratos, &redis)).await;
    assert_eq!(late.get(&victim).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_carries_a_revocation_as_soon_as_it_takes_writes() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    // CLIENT PAUSE WRITE (a failover's pause) holds back writes and PUBLISH alike: nothing can
    // reach the other replicas until it ends, so the revoking replica keeps trying.
    let pause = Duration::from_millis(700);
    let paused_at = std::cell::Cell::new(Instant::now());
    let served_elsewhere = served_after_revoking(&replicas, &me, &victim, || {
        let _: () = redis.query(
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(pause.as_millis() as u64)
                .arg("WRITE"),
        );
        paused_at.set(Instant::now());
    })
    .await;
    let refused_everywhere = Instant::now();
    let after_pause = refused_everywhere.saturating_duration_since(paused_at.get() + pause);
    println!(
        "paused Redis ({pause:?}): the revoked session was served elsewhere for \
         {served_elsewhere:?}, {after_pause:?} of it after the pause ended"
    );
    assert!(
        after_pause < Duration::from_millis(500),
        "refused {after_pause:?} after Redis took writes again"
    );
    until_stats(&replicas[0].layer, "the revocation retried", |stats| {
        stats.unsent_revocations == 0
    })
    .await;
    assert_eq!(records(&redis), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_records_neither_switch_sharing_off_nor_outlive_the_next_write() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let sessions: Vec<_> = (0..10).map(|_| kratos.create_session()).collect();
    for session in &sessions {
        warm(&replicas, session).await;
    }

    // 120,000 records far in the future (29 MB in the trial), then every subscription broken.
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    add_junk_records(&redis, 120_000, now_ms + 86_400_000, 240);
    let asked = served_after_a_break(&kratos, &redis, &replicas, &sessions).await;
    assert_eq!(asked, 0, "asked Kratos again");

    // The next revocation's record trims them.
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    replicas[0]
        .layer
        .lifecycle()
        .revoke_session(&token_headers(&me), &victim.id)
        .await
        .expect("revoked");
    assert_eq!(records(&redis), 1);

    // More live-looking junk than the crate can have written: read no further, distrust
    // what is cached (one whoami per cached session and replica at most), sharing on.
    add_junk_records(&redis, 11_000, now_ms, 0);
    let asked = served_after_a_break(&kratos, &redis, &replicas, &sessions).await;
    assert!(
        asked <= 30,
        "{asked} whoami calls for 10 sessions on 3 replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_subscription_breaks_cost_kratos_nothing_and_miss_no_revocation() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let redis = RedisServer::start();
    let replicas = replicas(&kratos, &redis, 3).await;
    let sessions: Vec<_> = (0..40).map(|_| kratos.create_session()).collect();
    for session in &sessions {
        warm(&replicas, session).await;
    }

    let mut asked = 0;
    for _ in 0..10 {
        asked += served_after_a_break(&kratos, &redis, &replicas, &sessions).await;
    }
    println!("10 breaks, 40 sessions, 3 replicas: {asked} whoami calls");
    assert_eq!(asked, 0);

    // A revocation published while the subscriptions are down is read from the records.
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    revoked_through_the_first(&replicas, &me, &victim, || {
        let _: i64 = redis.query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_not_back_within_the_grace_checks_what_was_cached_again() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let mut redis = RedisServer::start();
    let replica = Replica::start(shared_builder(&kratos, &redis)).await;
    let session = kratos.create_session();
    assert_session(
        &replica.get(&session).await,
        &session.id,
        &session.identity_id,
    );
    let calls = kratos.calls(Endpoint::Whoami);

    // Redis gone: revocations made elsewhere cannot be heard, so what was cached before the
    // break is asked for again once the grace is over (and served from Kratos meanwhile).
    redis.stop();
    let stopped = Instant::now();
    loop {
        let answer = send(
            &replica.app,
            get("/", &[("x-session-token", &session.token)]),
        )
        .await;
        assert_session(&answer, &session.id, &session.identity_id);
        if kratos.calls(Endpoint::Whoami) > calls {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "the entry from before the break was served on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
