//! The shared cache over a real Redis Cluster (three primaries with a replica each, on
//! loopback): one whoami per session whatever the replica count, entries spread over the
//! primaries with no CROSSSLOT, revocations honoured by replicas subscribed on different nodes,
//! and a migrated slot, a manual failover and a killed primary costing valid sessions nothing.

use test_support as support;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use http::StatusCode;
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use support::{
    assert_session,
    redis_cluster::RedisCluster,
    replicas::{revoked_through_the_first, Replica, SECRET},
    token_headers,
};
use tower_kratos::KratosLayer;

/// Replica `index` of the app, its seed list starting at node `index` (so each subscribes on
/// another node).
async fn replica(kratos: &KratosStandIn, cluster: &RedisCluster, index: usize) -> Replica {
    replica_with_ttl(kratos, cluster, index, Duration::from_secs(60)).await
}

async fn replica_with_ttl(
    kratos: &KratosStandIn,
    cluster: &RedisCluster,
    index: usize,
    ttl: Duration,
) -> Replica {
    Replica::start(
        KratosLayer::builder(kratos.public_url())
            .admin_url(kratos.admin_url())
            .request_timeout(Duration::from_secs(2))
            .cache_ttl(ttl)
            .redis_cluster_nodes(cluster.seed_urls(index))
            .shared_cache_secret(SECRET)
            .redis_key_prefix("test"),
    )
    .await
}

async fn replicas(kratos: &KratosStandIn, cluster: &RedisCluster) -> Vec<Replica> {
    let mut started = Vec::new();
    for index in 0..3 {
        started.push(replica(kratos, cluster, index).await);
    }
    started
}

/// The shared entries each node holds now.
fn entries_per_node(cluster: &RedisCluster) -> Vec<usize> {
    cluster
        .running()
        .into_iter()
        .map(|index| {
            let keys: Vec<String> = cluster.query(index, redis::cmd("KEYS").arg("test:{*}:s"));
            keys.len()
        })
        .collect()
}

/// Waits (at most 10 s) until the cluster holds `count` shared entries.
async fn entries_written(cluster: &RedisCluster, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held: usize = entries_per_node(cluster).iter().sum();
        if held >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{held} of {count} entries written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cost_one_whoami_on_three_replicas_and_spread_over_the_primaries() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let cluster = RedisCluster::start();
    let replicas = replicas(&kratos, &cluster).await;
    let sessions: Vec<_> = (0..30).map(|_| kratos.create_session()).collect();
    for session in &sessions {
        assert_session(
            &replicas[0].get(session).await,
            &session.id,
            &session.identity_id,
        );
    }
    entries_written(&cluster, sessions.len()).await;
    for replica in &replicas[1..] {
        for session in &sessions {
            assert_session(
                &replica.get(session).await,
                &session.id,
                &session.identity_id,
            );
        }
    }
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        sessions.len(),
        "one per session"
    );
    // Spread: every primary holds some (30 random slots over three primaries).
    let held = entries_per_node(&cluster);
    let holding = held.iter().filter(|count| **count > 0).count();
    assert!(holding >= 2, "entries per node: {held:?}");
    for replica in &replicas {
        let stats = replica.layer.stats().await.shared_cache.expect("shared");
        assert!(stats.in_use && stats.errors == 0, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_replicas_subscribed_on_other_nodes() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let cluster = RedisCluster::start();
    let replicas = replicas(&kratos, &cluster).await;
    let me = kratos.create_session();
    for _ in 0..5 {
        let victim = kratos.session().identity(&me.identity_id).create();
        revoked_through_the_first(&replicas, &me, &victim, || {}).await;
    }
    // And a replica started later reads the records wherever their slot lives.
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    assert_session(
        &replicas[0].get(&victim).await,
        &victim.id,
        &victim.identity_id,
    );
    replicas[0]
        .layer
        .lifecycle()
        .revoke_session(&token_headers(&me), &victim.id)
        .await
        .expect("revoked");
    let late = replica(&kratos, &cluster, 4).await;
    assert_eq!(late.get(&victim).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_slot_is_followed() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let cluster = RedisCluster::start();
    let replicas = replicas(&kratos, &cluster).await;
    let session = kratos.create_session();
    assert_session(
        &replicas[0].get(&session).await,
        &session.id,
        &session.identity_id,
    );
    entries_written(&cluster, 1).await;
    let primaries = cluster.primaries();
    let (owner, key) = primaries
        .iter()
        .find_map(|&index| {
            let keys: Vec<String> = cluster.query(index, redis::cmd("KEYS").arg("test:{*}:s"));
            keys.into_iter().next().map(|key| (index, key))
        })
        .expect("the entry on a primary");
    let slot: u16 = cluster.query(owner, redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key));
    let target = *primaries
        .iter()
        .find(|&&index| index != owner)
        .expect("another primary");
    let id = |index: usize| -> String { cluster.query(index, redis::cmd("CLUSTER").arg("MYID")) };
    let (owner_id, target_id) = (id(owner), id(target));
    let target_port = cluster.seed_urls(target)[0]
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let setslot = |index: usize, state: &str, node: &str| {
        let _: () = cluster.query(
            index,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(node),
        );
    };
    setslot(target, "IMPORTING", &owner_id);
    setslot(owner, "MIGRATING", &target_id);
    let _: () = cluster.query(
        owner,
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(&target_port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&key),
    );
    for index in cluster.primaries() {
        setslot(index, "NODE", &target_id);
    }
    assert_eq!(cluster.primary_of(slot), target);

    // Another replica finds the entry where it went: from Redis, no whoami.
    let calls = kratos.calls(Endpoint::Whoami);
    assert_session(
        &replicas[1].get(&session).await,
        &session.id,
        &session.identity_id,
    );
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        calls,
        "served from the moved entry"
    );
}

/// Asks every replica about every session until `stop` is set; returns how many answers
/// were not a 200.
async fn load(replicas: &[Replica], sessions: &[TestSession], stop: &AtomicBool) -> usize {
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        // A round of cache hits may never wait: let the faults run between rounds.
        tokio::time::sleep(Duration::from_millis(5)).await;
        for replica in replicas {
            for session in sessions {
                if replica.get(session).await.status != StatusCode::OK {
                    failures += 1;
                }
            }
        }
    }
    failures
}

/// Waits (at most 20 s, without blocking the runtime) until the cluster is `ok` again with a
/// running primary for each of its three shards. `ok` alone is no sign: right after a primary is
/// killed the others still say `ok`, until its node timeout passes and they agree it failed.
async fn cluster_ok(cluster: &RedisCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.primaries().len() < 3 || !cluster.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the cluster never became ok with three primaries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_or_a_killed_primary_costs_valid_sessions_nothing() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let cluster = RedisCluster::start();
    // Entries of a second: the load keeps reading and writing Redis through the faults.
    let mut replicas = Vec::new();
    for index in 0..3 {
        replicas.push(replica_with_ttl(&kratos, &cluster, index, Duration::from_secs(1)).await);
    }
    let sessions: Vec<_> = (0..10).map(|_| kratos.create_session()).collect();
    let stop = AtomicBool::new(false);
    let faults = async {
        // A manual failover: a replica takes its primary's slots.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let replica_node = (0..6)
            .find(|index| !cluster.primaries().contains(index))
            .expect("a replica node");
        let _: () = cluster.query(replica_node, redis::cmd("CLUSTER").arg("FAILOVER"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster.primaries().contains(&replica_node) {
            assert!(
                Instant::now() < deadline,
                "the manual failover did not happen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A primary killed: its replica is promoted after the node timeout (1 s).
        let victim = cluster.primaries()[0];
        cluster.kill(victim);
        cluster_ok(&cluster).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let started = Instant::now();
    let (failures, ()) = tokio::join!(load(&replicas, &sessions, &stop), faults);
    assert_eq!(failures, 0, "answers other than 200");
    println!("faults over after {:?}", started.elapsed());
    let mut shared_hits = 0;
    for replica in &replicas {
        shared_hits += replica
            .layer
            .stats()
            .await
            .shared_cache
            .expect("shared")
            .hits;
    }
    assert!(shared_hits > 0, "the load read no entry from the cluster");

    // Sharing resumes within seconds: a new session asked once for three replicas. A replica
    // whose calls failed through the outage pauses its use of Redis for up to 30 s (a pause
    // doubles with each failed probe), so that is how long it may take to be in use again.
    let deadline = Instant::now() + Duration::from_secs(35);
    for replica in &replicas {
        while !replica
            .layer
            .stats()
            .await
            .shared_cache
            .expect("shared")
            .in_use
        {
            assert!(Instant::now() < deadline, "not in use after the failover");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = kratos.create_session();
        for replica in &replicas {
            assert_session(&replica.get(&fresh).await, &fresh.id, &fresh.identity_id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if kratos.calls_for_session(Endpoint::Whoami, &fresh.id) == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "sharing did not resume");
    }
    println!("sharing again after {:?}", started.elapsed());
    // And revocations still reach every replica.
    let me = kratos.create_session();
    let victim = kratos.session().identity(&me.identity_id).create();
    revoked_through_the_first(&replicas, &me, &victim, || {}).await;
}
