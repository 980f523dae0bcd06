//! The shared cache through Redis Sentinel (a primary, a replica, three Sentinels on loopback):
//! the primary is found through the Sentinels, and after it is killed under load the layer
//! follows the new one for commands and for its subscription by itself: no user gets an
//! error, and sharing is back within 10 s.

use test_support as support;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use http::StatusCode;
use kratos_stand_in::{Endpoint, KratosStandIn};
use support::{
    assert_session,
    redis_sentinel::{RedisSentinels, PRIMARY_NAME},
    replicas::{revoked_through_the_first, Replica, SECRET},
};
use tower_kratos::KratosLayer;

async fn replica(kratos: &KratosStandIn, sentinels: &RedisSentinels) -> Replica {
    Replica::start(
        KratosLayer::builder(kratos.public_url())
            .admin_url(kratos.admin_url())
            .request_timeout(Duration::from_secs(2))
            // Entries of a second: the load keeps reading and writing Redis through the fault.
            .cache_ttl(Duration::from_secs(1))
            .redis_sentinels(sentinels.addresses(), PRIMARY_NAME)
            .shared_cache_secret(SECRET)
            .redis_key_prefix("test"),
    )
    .await
}

/// Whether a new session, asked of every replica in turn, costs one whoami in all.
async fn shared(kratos: &KratosStandIn, replicas: &[Replica]) -> bool {
    let fresh = kratos.create_session();
    for replica in replicas {
        assert_session(&replica.get(&fresh).await, &fresh.id, &fresh.identity_id);
        // The first replica writes its entry on a task of its own.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kratos.calls_for_session(Endpoint::Whoami, &fresh.id) == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_without_an_error_and_sharing_is_back_within_10_s() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let sentinels = RedisSentinels::start();
    let replicas = vec![
        replica(&kratos, &sentinels).await,
        replica(&kratos, &sentinels).await,
    ];
    assert!(
        shared(&kratos, &replicas).await,
        "no sharing through the primary"
    );

    let sessions: Vec<_> = (0..10).map(|_| kratos.create_session()).collect();
    let stop = AtomicBool::new(false);
    let load = async {
        let mut failures = 0;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            for replica in &replicas {
                for session in &sessions {
                    if replica.get(session).await.status != StatusCode::OK {
                        failures += 1;
                    }
                }
            }
        }
        failures
    };
    let killed_at = std::cell::Cell::new(None);
    let fault = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = sentinels.kill_primary();
        killed_at.set(Some(Instant::now()));
        let deadline = Instant::now() + Duration::from_secs(15);
        while sentinels.primary_port() == old {
            assert!(Instant::now() < deadline, "the Sentinels did not fail over");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let (failures, ()) = tokio::join!(load, fault);
    assert_eq!(failures, 0, "answers other than 200");

    let killed_at = killed_at.get().expect("killed");
    loop {
        if shared(&kratos, &replicas).await {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "not sharing again 10 s after the primary died"
        );
    }
    println!(
        "sharing again {:?} after the primary died",
        killed_at.elapsed()
    );

    // Revocations reach the other replica through the new primary.
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    revoked_through_the_first(&replicas, &me, &victim, || {}).await;
}
