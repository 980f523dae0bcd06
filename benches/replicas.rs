//! Many replicas over one Redis (feature `redis`), measured side by side in one run against
//! real `redis-server` processes (started by the bench on free loopback ports: one plain, one
//! over TLS, and a 3-primary cluster with a replica each) and the stand-in:
//!
//! 1. **Kratos load by replica count**: one Zipf workload spread at random over N = 1, 2 and 4
//!    replicas, each with its own local cache, with and without the shared cache, then over the
//!    cluster. Target: with Redis, the same whoami calls for every N.
//! 2. **Revocation propagation**: 100 sessions cached on 3 replicas, each disabled through
//!    replica 0's admin helper; the time from the helper's return until replicas 1 and 2 refuse
//!    it; over one Redis, over TLS, and over the cluster. Target: p99 under 100 ms, never over
//!    1 s.
//! 3. **What a lookup costs**: a local hit, a Redis hit (another replica asked Kratos), and a miss
//!    that asks Kratos (whoami answering after 2 ms), with Redis and without, in alternating
//!    rounds; beside them one bare Redis round trip, the floor under a Redis hit.
//! 4. **The cached path with Redis on and off**: throughput of cached sessions in alternating
//!    slices, and the Redis commands the cached run sent. Target: within noise (a hit never
//!    touches Redis).
//! 5. **A Redis hit over TLS against plain TCP**, in alternating rounds.
//! 6. and 7. **Sizing**: Redis memory per cached session and per revocation record, and Redis
//!    commands per miss, per Redis hit, per local hit and per revocation, measured on the
//!    cluster (6) and on one Redis (7), then extrapolated to 100k–10M sessions on 10 and 100
//!    replicas.
//!
//! ```text
//! cargo bench --bench replicas                     # about 8 minutes (nine 30 s load runs)
//! LOAD_SECONDS=6 cargo bench --bench replicas      # a quicker run
//! ```
//!
//! `LOAD_TTL_SECONDS` (default 5) sets the cache TTL of the load runs, `LOAD_CLIENTS` (default
//! 16) their concurrency; `SECONDS` (default 0.5) and `ROUNDS` (default 12) the cached-path
//! slices; `PARTS` (default `1234567`) which parts run.

mod support;

use test_support::{redis_cluster, redis_server};

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use rand::{rngs::SmallRng, RngExt};
use rand_distr::{Distribution, Zipf};
use redis_cluster::RedisCluster;
use redis_server::RedisServer;
use support::{
    drive, env_count, env_seconds, latencies, machine, trivial, with_token, Human, Latencies,
    LoadCredential,
};
use tokio::runtime::Runtime;
use tower::{util::BoxCloneSyncService, Service, ServiceBuilder, ServiceExt};
use tower_kratos::{authenticate::KratosLayerBuilder, KratosLayer};

const SECRET: &str = "a shared secret of at least 32 bytes, for the bench";
const SESSIONS: usize = 1_000;
const WHOAMI_LATENCY: Duration = Duration::from_millis(2);
const ZIPF_S: f64 = 1.0;
const REVOCATIONS: usize = 100;

type Replica = BoxCloneSyncService<Request<String>, Response<String>, Infallible>;

fn main() {
    println!("replicas: many replicas over one Redis");
    println!("machine: {}", machine());
    let redis = RedisServer::start_as(redis_server::Flavor::Plain);
    println!("redis: {}", redis_version(&redis));
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "1234567".into());
    // The other topologies, started only for the parts that use them.
    let tls = parts
        .contains(['2', '5'])
        .then(|| RedisServer::start_as(redis_server::Flavor::Tls));
    let cluster = parts.contains(['1', '2', '6']).then(RedisCluster::start);
    let stand_in = support::SeparateKratos::start();
    let kratos = stand_in.kratos.clone();
    kratos.set_latency(WHOAMI_LATENCY);
    let runtime = Runtime::new().expect("tokio runtime");
    let plain = Backend::Server(&redis);
    runtime.block_on(async {
        if parts.contains('1') {
            load_by_replica_count(&kratos, plain, true).await;
            if let Some(cluster) = &cluster {
                load_by_replica_count(&kratos, Backend::Cluster(cluster), false).await;
            }
        }
        if parts.contains('2') {
            revocation_propagation(&kratos, plain).await;
            if let Some(tls) = &tls {
                revocation_propagation(&kratos, Backend::Server(tls)).await;
            }
            if let Some(cluster) = &cluster {
                revocation_propagation(&kratos, Backend::Cluster(cluster)).await;
            }
        }
        if parts.contains('3') {
            lookup_costs(&kratos, &redis).await;
        }
        if parts.contains('4') {
            cached_path(&kratos, &redis).await;
        }
        if let (true, Some(tls)) = (parts.contains('5'), &tls) {
            tls_against_plain(&kratos, &redis, tls).await;
        }
        if let (true, Some(cluster)) = (parts.contains('6'), &cluster) {
            sizing(&kratos, Backend::Cluster(cluster)).await;
        }
        if parts.contains('7') {
            sizing(&kratos, plain).await;
        }
    });
}

/// Where a part's Redis is: one server (plain or TLS) or a cluster.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Server(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

impl Backend<'_> {
    fn name(self) -> &'static str {
        match self {
            Self::Server(server) if server.pki().is_some() => "one Redis over TLS",
            Self::Server(_) => "one Redis",
            Self::Cluster(_) => "a 3-primary cluster",
        }
    }

    fn configure(self, builder: KratosLayerBuilder) -> KratosLayerBuilder {
        let builder = match self {
            Self::Server(server) => server.configure(builder).redis_url(server.url()),
            Self::Cluster(cluster) => builder.redis_cluster_nodes(cluster.seed_urls(0)),
        };
        builder
            .shared_cache_secret(SECRET)
            .redis_key_prefix("bench")
    }

    /// Empties it (every primary of a cluster).
    fn flush(self) {
        match self {
            Self::Server(server) => {
                let _: () = server.query(&mut redis::cmd("FLUSHALL"));
            }
            Self::Cluster(cluster) => {
                for index in cluster.primaries() {
                    let _: () = cluster.query(index, &mut redis::cmd("FLUSHALL"));
                }
            }
        }
    }

    /// Each server's (each primary's) connection, for counting and sizing.
    fn connections(self) -> Vec<redis::Connection> {
        match self {
            Self::Server(server) => vec![server.connection()],
            Self::Cluster(cluster) => cluster
                .primaries()
                .into_iter()
                .map(|index| cluster.connection(index))
                .collect(),
        }
    }
}

fn redis_version(redis: &RedisServer) -> String {
    let info: String = redis.query(redis::cmd("INFO").arg("server"));
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .to_owned()
}

fn builder(kratos: &KratosStandIn, redis: Option<Backend<'_>>) -> KratosLayerBuilder {
    let builder = KratosLayer::builder(kratos.public_url()).admin_url(kratos.admin_url());
    match redis {
        Some(redis) => redis.configure(builder),
        None => builder,
    }
}

/// Waits until the layer hears revocations (it reads no shared entry before).
async fn subscribed(layer: &KratosLayer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !layer.stats().await.shared_cache.is_some_and(|s| s.in_use) {
        assert!(Instant::now() < deadline, "the layer never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A layer over the trivial handler, as a replica serves.
async fn replica(builder: KratosLayerBuilder, shared: bool) -> (KratosLayer, Replica) {
    let layer = builder.build().expect("layer");
    if shared {
        subscribed(&layer).await;
    }
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(trivial)
        .map_response(|response| response.map(|_| String::new()));
    (layer, BoxCloneSyncService::new(service))
}

async fn status(replica: &Replica, request: Request<String>) -> StatusCode {
    replica
        .clone()
        .oneshot(request)
        .await
        .expect("infallible")
        .status()
}

/// Which replica a request goes to (set by the client, as a load balancer would choose).
#[derive(Clone, Copy)]
struct To(usize);

/// A load balancer in front of the replicas.
#[derive(Clone)]
struct Balancer(Arc<Vec<Replica>>);

impl Service<Request<String>> for Balancer {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let to = request.extensions().get::<To>().map_or(0, |to| to.0);
        let replica = self.0[to % self.0.len()].clone();
        Box::pin(replica.oneshot(request))
    }
}

/// Part 1: the whoami calls of one Zipf workload over N replicas, with Redis (and, when
/// `alone`, without it).
async fn load_by_replica_count(kratos: &KratosStandIn, redis: Backend<'_>, alone: bool) {
    let smoke_test = support::smoke_test();
    let duration = env_seconds("LOAD_SECONDS", if smoke_test { 1.0 } else { 30.0 });
    let ttl = env_seconds("LOAD_TTL_SECONDS", if smoke_test { 0.5 } else { 5.0 });
    let clients = env_count("LOAD_CLIENTS", 16);
    let sessions: Vec<TestSession> = (0..SESSIONS).map(|_| kratos.create_session()).collect();
    let requests = LoadCredential::for_sessions(&sessions);
    let zipf = Zipf::new(SESSIONS as f64, ZIPF_S).expect("valid Zipf parameters");
    println!();
    println!(
        "1. Kratos load by replica count over {}: {SESSIONS} sessions, Zipf s={ZIPF_S}, \
         {clients} clients spread at random over the replicas, cache TTL {ttl:?}, {duration:?} \
         per run",
        redis.name()
    );
    println!("   replicas  redis   requests      req/s  whoami  whoami/1k req  vs N=1");
    let sides: &[bool] = if alone { &[false, true] } else { &[true] };
    for &shared in sides {
        let mut first = None;
        for n in [1usize, 2, 4] {
            redis.flush();
            let mut replicas = Vec::with_capacity(n);
            for _ in 0..n {
                let builder = builder(kratos, shared.then_some(redis)).cache_ttl(ttl);
                replicas.push(replica(builder, shared).await.1);
            }
            kratos.reset_counters();
            let requests = Arc::clone(&requests);
            let run = drive(
                Balancer(Arc::new(replicas)),
                clients,
                duration,
                move |rng: &mut SmallRng| {
                    // Zipf draws ranks 1..=n.
                    let rank = zipf.sample(rng) as usize - 1;
                    let mut request = requests[rank].request();
                    request.extensions_mut().insert(To(rng.random_range(..n)));
                    request
                },
            )
            .await;
            let whoami = kratos.calls(Endpoint::Whoami);
            let first = *first.get_or_insert(whoami);
            println!(
                "   {n:>8}  {:5}  {:>9}  {:>9.0}  {whoami:>6}  {:>13.3}  {:>6.2}{}",
                if shared { "on" } else { "off" },
                run.requests,
                run.throughput(),
                whoami as f64 * 1000.0 / run.requests as f64,
                whoami as f64 / first.max(1) as f64,
                if run.failures > 0 {
                    format!("  ({} not 200)", run.failures)
                } else {
                    String::new()
                },
            );
        }
    }
    println!("   target: with Redis, whoami calls the same for every N (vs N=1 ≈ 1.00)");
}

/// 2. From a revocation's return on replica 0 until replicas 1 and 2 refuse the session.
async fn revocation_propagation(kratos: &KratosStandIn, redis: Backend<'_>) {
    kratos.set_latency(Duration::ZERO);
    redis.flush();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let builder = builder(kratos, Some(redis)).cache_ttl(Duration::from_secs(300));
        replicas.push(replica(builder, true).await);
    }
    let mut latencies = latencies();
    let mut worst = Duration::ZERO;
    for _ in 0..REVOCATIONS {
        let victim = kratos.create_session();
        for (_, service) in &replicas {
            assert_eq!(
                status(service, with_token(&victim.token)).await,
                StatusCode::OK
            );
        }
        replicas[0]
            .0
            .lifecycle()
            .disable_session(&victim.id)
            .await
            .expect("disabled");
        let revoked = Instant::now();
        for (_, service) in &replicas[1..] {
            loop {
                if status(service, with_token(&victim.token)).await == StatusCode::UNAUTHORIZED {
                    break;
                }
                assert!(
                    revoked.elapsed() < Duration::from_secs(5),
                    "a revoked session was served for 5 s"
                );
                tokio::task::yield_now().await;
            }
            let took = revoked.elapsed();
            worst = worst.max(took);
            latencies.record_latency(took);
        }
    }
    println!();
    println!(
        "2. revocation propagation over {}: {REVOCATIONS} sessions cached on 3 replicas, each \
         disabled through replica 0; from the helper's return until replicas 1 and 2 refuse it",
        redis.name()
    );
    println!(
        "   p50 {}, p99 {}, max {} (target: p99 < 100 ms, never over 1 s: {})",
        Human(latencies.at_quantile(0.5)),
        Human(latencies.at_quantile(0.99)),
        Human(worst),
        if latencies.at_quantile(0.99) < Duration::from_millis(100)
            && worst < Duration::from_secs(1)
        {
            "met"
        } else {
            "NOT met"
        }
    );
    kratos.set_latency(WHOAMI_LATENCY);
}

/// 3. A local hit, a Redis hit and a miss that asks Kratos, in alternating rounds.
async fn lookup_costs(kratos: &KratosStandIn, redis: &RedisServer) {
    let rounds = if support::smoke_test() { 2 } else { 10 };
    let per_round = 200;
    let _: () = redis.query(&mut redis::cmd("FLUSHALL"));
    let ttl = Duration::from_secs(600);
    let (_, writer) = replica(
        builder(kratos, Some(Backend::Server(redis))).cache_ttl(ttl),
        true,
    )
    .await;
    let (_, reader) = replica(
        builder(kratos, Some(Backend::Server(redis))).cache_ttl(ttl),
        true,
    )
    .await;
    let (_, alone) = replica(builder(kratos, None).cache_ttl(ttl), false).await;
    // The floor under a Redis hit: one round trip of redis-rs's connection manager.
    let mut manager = redis::Client::open(redis.url())
        .expect("a URL")
        .get_connection_manager()
        .await
        .expect("connect");
    let mut round_trip = latencies();
    let mut local_hit = latencies();
    let mut redis_hit = latencies();
    let mut miss_with_redis = latencies();
    let mut miss_alone = latencies();
    let timed = |service: &Replica, session: &TestSession| {
        let service = service.clone();
        let request = with_token(&session.token);
        async move {
            let started = Instant::now();
            let answered = status(&service, request).await;
            let took = started.elapsed();
            assert_eq!(answered, StatusCode::OK);
            took
        }
    };
    for _ in 0..rounds {
        // Written to Redis by the writer (its whoami), waiting for the reader.
        let shared: Vec<TestSession> = (0..per_round).map(|_| kratos.create_session()).collect();
        for session in &shared {
            timed(&writer, session).await;
        }
        wait_for_entries(redis, &shared).await;
        for session in &shared {
            redis_hit.record_latency(timed(&reader, session).await);
        }
        for session in &shared {
            local_hit.record_latency(timed(&reader, session).await);
        }
        for _ in 0..per_round {
            miss_with_redis.record_latency(timed(&reader, &kratos.create_session()).await);
        }
        for _ in 0..per_round {
            miss_alone.record_latency(timed(&alone, &kratos.create_session()).await);
        }
        for _ in 0..per_round {
            let started = Instant::now();
            let _: String = redis::cmd("PING")
                .query_async(&mut manager)
                .await
                .expect("PONG");
            round_trip.record_latency(started.elapsed());
        }
    }
    let rows = [
        ("local hit", summary(&local_hit)),
        ("Redis hit (another replica asked)", summary(&redis_hit)),
        ("miss with Redis (whoami 2 ms)", summary(&miss_with_redis)),
        ("miss without Redis (whoami 2 ms)", summary(&miss_alone)),
        ("(one Redis round trip: PING)", summary(&round_trip)),
    ];
    println!();
    println!(
        "3. what one lookup costs: {rounds} alternating rounds of {per_round} sequential \
         requests each"
    );
    println!(
        "   {:36} {:>10} {:>10} {:>10} {:>11}",
        "", "mean", "p50", "p99", "mean/local"
    );
    let local_mean = rows[0].1 .0.as_secs_f64();
    for (name, (mean, p50, p99)) in rows {
        println!(
            "   {name:36} {:>10} {:>10} {:>10} {:>11.1}",
            Human(mean).to_string(),
            Human(p50).to_string(),
            Human(p99).to_string(),
            mean.as_secs_f64() / local_mean
        );
    }
    println!(
        "   a Redis hit costs {:.2}× a miss that asks Kratos",
        rows[1].1 .0.as_secs_f64() / rows[3].1 .0.as_secs_f64()
    );
}

/// Mean, median and p99.
fn summary(latencies: &Histogram<u64>) -> (Duration, Duration, Duration) {
    (
        latencies.mean_latency(),
        latencies.at_quantile(0.5),
        latencies.at_quantile(0.99),
    )
}

/// A replica writes its entry on a task of its own after answering: wait until all are there,
/// so the reader's first requests are Redis hits.
async fn wait_for_entries(redis: &RedisServer, sessions: &[TestSession]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: usize = redis.query(&mut redis::cmd("DBSIZE"));
        // Entries, plus the revocation records when there are any.
        if keys >= sessions.len() {
            return;
        }
        assert!(Instant::now() < deadline, "entries not written: {keys}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 4. Cached-path throughput with Redis on and off, in alternating slices.
async fn cached_path(kratos: &KratosStandIn, redis: &RedisServer) {
    let smoke_test = support::smoke_test();
    let slice = env_seconds("SECONDS", if smoke_test { 0.2 } else { 0.5 });
    let rounds = env_count("ROUNDS", if smoke_test { 2 } else { 12 });
    let clients = env_count("LOAD_CLIENTS", 16);
    let _: () = redis.query(&mut redis::cmd("FLUSHALL"));
    let ttl = Duration::from_secs(600);
    let sessions: Arc<Vec<String>> =
        Arc::new((0..100).map(|_| kratos.create_session().token).collect());
    let (_, with_redis) = replica(
        builder(kratos, Some(Backend::Server(redis))).cache_ttl(ttl),
        true,
    )
    .await;
    let (_, without) = replica(builder(kratos, None).cache_ttl(ttl), false).await;
    for token in sessions.iter() {
        for service in [&with_redis, &without] {
            assert_eq!(status(service, with_token(token)).await, StatusCode::OK);
        }
    }
    let commands_before = commands_processed(redis);
    // Each round measures both sides back to back (which goes first alternates), so the ratio
    // of a round is what a change in the machine's load touches least; the median of the
    // rounds' ratios is reported.
    let mut ratios = Vec::with_capacity(rounds);
    let (mut on, mut off) = (0.0, 0.0);
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut rates = [0.0; 2];
        for shared in order {
            let service = if shared { &with_redis } else { &without };
            let sessions = Arc::clone(&sessions);
            let run = drive(
                service.clone(),
                clients,
                slice,
                move |rng: &mut SmallRng| with_token(&sessions[rng.random_range(..sessions.len())]),
            )
            .await;
            assert_eq!(run.failures, 0);
            rates[usize::from(shared)] = run.throughput();
        }
        off += rates[0];
        on += rates[1];
        ratios.push(rates[1] / rates[0]);
    }
    // INFO itself is a command: one of them is the second reading.
    let commands = commands_processed(redis).saturating_sub(commands_before + 1);
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!();
    println!(
        "4. the cached path: 100 cached sessions, {clients} clients, {rounds} rounds of {slice:?} \
         per side"
    );
    println!(
        "   Redis on {:.0} req/s, off {:.0} req/s (means); ratio on/off per round: median \
         {median:.3}, range {:.3}–{:.3} (target ≥ 0.95: {}); Redis commands sent by the cached \
         run: {commands}",
        on / rounds as f64,
        off / rounds as f64,
        ratios[0],
        ratios[ratios.len() - 1],
        if median >= 0.95 { "met" } else { "NOT met" }
    );
}

fn commands_processed(redis: &RedisServer) -> u64 {
    let info: String = redis.query(redis::cmd("INFO").arg("stats"));
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// 5. A Redis hit over TLS against one over plain TCP, in alternating rounds.
async fn tls_against_plain(kratos: &KratosStandIn, plain: &RedisServer, tls: &RedisServer) {
    let rounds = if support::smoke_test() { 2 } else { 12 };
    let per_round = 200;
    let ttl = Duration::from_secs(600);
    let mut sides = Vec::new();
    for server in [plain, tls] {
        let backend = Backend::Server(server);
        backend.flush();
        let (_, writer) = replica(builder(kratos, Some(backend)).cache_ttl(ttl), true).await;
        let (_, reader) = replica(builder(kratos, Some(backend)).cache_ttl(ttl), true).await;
        sides.push((server, writer, reader, latencies()));
    }
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut means = [Duration::ZERO; 2];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (server, writer, reader, latencies) = &mut sides[side];
            let sessions: Vec<TestSession> =
                (0..per_round).map(|_| kratos.create_session()).collect();
            for session in &sessions {
                assert_eq!(
                    status(writer, with_token(&session.token)).await,
                    StatusCode::OK
                );
            }
            wait_for_keys(server, (round + 1) * per_round).await;
            let started = Instant::now();
            for session in &sessions {
                let one = Instant::now();
                assert_eq!(
                    status(reader, with_token(&session.token)).await,
                    StatusCode::OK
                );
                latencies.record_latency(one.elapsed());
            }
            means[side] = started.elapsed() / per_round as u32;
        }
        ratios.push(means[1].as_secs_f64() / means[0].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let [plain_side, tls_side] = [sides.remove(0), sides.remove(0)];
    let (plain_mean, plain_p50, plain_p99) = summary(&plain_side.3);
    let (tls_mean, tls_p50, tls_p99) = summary(&tls_side.3);
    println!();
    println!(
        "5. a Redis hit (another replica asked Kratos) over TLS against plain TCP: {rounds} \
         alternating rounds of {per_round} sequential requests"
    );
    println!(
        "   plain: mean {}, p50 {}, p99 {}; TLS: mean {}, p50 {}, p99 {}; TLS/plain per round: \
         median {:.2} (range {:.2}–{:.2})",
        Human(plain_mean),
        Human(plain_p50),
        Human(plain_p99),
        Human(tls_mean),
        Human(tls_p50),
        Human(tls_p99),
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

/// Waits until the server holds at least `count` keys.
async fn wait_for_keys(redis: &RedisServer, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: usize = redis.query(&mut redis::cmd("DBSIZE"));
        if keys >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{keys} of {count} keys written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sums one `INFO` field over every server of the backend.
fn info_sum(redis: Backend<'_>, section: &str, field: &str) -> u64 {
    redis
        .connections()
        .iter_mut()
        .map(|connection| {
            let info: String = redis::cmd("INFO")
                .arg(section)
                .query(connection)
                .expect("INFO");
            info.lines()
                .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Commands the backend has processed (the `INFO` calls that read it excluded).
fn commands(redis: Backend<'_>) -> u64 {
    let servers = redis.connections().len() as u64;
    info_sum(redis, "stats", "total_commands_processed").saturating_sub(servers)
}

/// 6 and 7. What Redis holds and is sent per session, per lookup and per revocation, measured
/// on `redis`, then extrapolated to large deployments.
async fn sizing(kratos: &KratosStandIn, redis: Backend<'_>) {
    let sessions_measured = if support::smoke_test() { 200 } else { 2_000 };
    let revocations = 100;
    kratos.set_latency(Duration::ZERO);
    redis.flush();
    let ttl = Duration::from_secs(600);
    let (writer_layer, writer) = replica(builder(kratos, Some(redis)).cache_ttl(ttl), true).await;
    let (_, reader) = replica(builder(kratos, Some(redis)).cache_ttl(ttl), true).await;
    let sessions: Vec<TestSession> = (0..sessions_measured)
        .map(|_| kratos.create_session())
        .collect();
    let memory_before = info_sum(redis, "memory", "used_memory");
    let before = commands(redis);
    for session in &sessions {
        assert_eq!(
            status(&writer, with_token(&session.token)).await,
            StatusCode::OK
        );
    }
    // Entries are written on tasks of their own: wait for all of them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys(redis) < sessions_measured as u64 {
        assert!(Instant::now() < deadline, "entries not written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let per_miss = (commands(redis) - before) as f64 / sessions_measured as f64;
    let per_entry = info_sum(redis, "memory", "used_memory").saturating_sub(memory_before) as f64
        / sessions_measured as f64;
    let before = commands(redis);
    for session in &sessions {
        assert_eq!(
            status(&reader, with_token(&session.token)).await,
            StatusCode::OK
        );
    }
    let per_shared_hit = (commands(redis) - before) as f64 / sessions_measured as f64;
    let before = commands(redis);
    for session in &sessions {
        assert_eq!(
            status(&reader, with_token(&session.token)).await,
            StatusCode::OK
        );
    }
    let per_local_hit = (commands(redis) - before) as f64 / sessions_measured as f64;
    let memory_before = info_sum(redis, "memory", "used_memory");
    let before = commands(redis);
    for session in sessions.iter().take(revocations) {
        writer_layer
            .lifecycle()
            .disable_session(&session.id)
            .await
            .expect("disabled");
    }
    let per_revocation = (commands(redis) - before) as f64 / revocations as f64;
    let per_record = info_sum(redis, "memory", "used_memory").saturating_sub(memory_before) as f64
        / revocations as f64;
    kratos.set_latency(WHOAMI_LATENCY);

    println!();
    println!(
        "{}. sizing on {}: {sessions_measured} sessions asked through one replica, read from \
         Redis by another, then {revocations} revocations",
        if matches!(redis, Backend::Cluster(_)) {
            6
        } else {
            7
        },
        redis.name()
    );
    println!(
        "   Redis memory: {per_entry:.0} B per cached session (sealed entry, key, expiry; the \
         fill lock lives only during a miss), {per_record:.0} B per live revocation record"
    );
    println!(
        "   Redis commands: {per_miss:.2} per miss that asks Kratos, {per_shared_hit:.2} per hit \
         read from Redis, {per_local_hit:.2} per local hit, {per_revocation:.2} per revocation"
    );
    println!(
        "   extrapolated, cache TTL 60 s, every active session used on every replica within \
         each TTL (the most Redis is asked):"
    );
    println!(
        "   {:>11} {:>9} {:>13} {:>17} {:>13}",
        "sessions", "replicas", "Redis memory", "Redis commands/s", "whoami/s"
    );
    for active in [100_000u64, 1_000_000, 10_000_000] {
        for replicas in [10u64, 100] {
            let ttl = 60.0;
            let misses = active as f64 / ttl;
            // Each replica's own entry for a session ends once per TTL: one replica asks
            // Kratos (and writes), the others read Redis.
            let reads = misses * (replicas - 1) as f64;
            let commands_per_second = misses * per_miss + reads * per_shared_hit;
            println!(
                "   {active:>11} {replicas:>9} {:>10.1} GB {:>17.0} {:>13.0}",
                active as f64 * per_entry / 1e9,
                commands_per_second,
                misses
            );
        }
    }
}

/// The keys every server of the backend holds.
fn keys(redis: Backend<'_>) -> u64 {
    redis
        .connections()
        .iter_mut()
        .map(|connection| {
            redis::cmd("DBSIZE")
                .query::<u64>(connection)
                .expect("DBSIZE")
        })
        .sum()
}
