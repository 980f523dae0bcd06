//! How many whoami calls the layer makes: for a burst of first requests with one credential
//! (coalescing), and over a long mixed run where cache entries expire several times.
//!
//! ```text
//! cargo bench --bench kratos_calls                  # the load run lasts 30 s
//! LOAD_SECONDS=6 cargo bench --bench kratos_calls   # a quick run
//! ```
//!
//! `LOAD_TTL_SECONDS` (default 5) sets the cache TTL of the load run, `LOAD_CLIENTS` (default 16)
//! its concurrency.

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use http::{Request, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn};
use rand_distr::{Distribution, Zipf};
use support::{
    drive, env_count, env_seconds, machine, trivial, with_cookie, with_token, LoadCredential,
};
use tokio::{runtime::Runtime, sync::Barrier};
use tower::{ServiceBuilder, ServiceExt};
use tower_kratos::KratosLayer;

const BURST: usize = 1_000;
const SESSIONS: usize = 1_000;
const WHOAMI_LATENCY: Duration = Duration::from_millis(2);
/// Zipf exponent: 1.0 is the classic "a few users make most requests" curve.
const ZIPF_S: f64 = 1.0;

/// Builds one request; shared by the tasks of a burst.
type MakeRequest = Arc<dyn Fn() -> Request<String> + Send + Sync>;

fn main() {
    println!("kratos_calls: whoami calls made by the layer");
    println!("machine: {}", machine());
    let stand_in = support::SeparateKratos::start();
    let kratos = stand_in.kratos.clone();
    kratos.set_latency(WHOAMI_LATENCY);
    let runtime = Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        coalescing(&kratos).await;
        load(&kratos).await;
    });
}

/// 1,000 requests with one credential, released together on a cold cache: one whoami.
async fn coalescing(kratos: &KratosStandIn) {
    let session = kratos.create_session();
    let cookie = session.cookie_header();
    let cases: [(&str, MakeRequest); 2] = [
        ("token", Arc::new(move || with_token(&session.token))),
        ("cookie", Arc::new(move || with_cookie(&cookie))),
    ];
    println!();
    println!(
        "coalescing: {BURST} concurrent first requests for one credential \
         (whoami answers after {WHOAMI_LATENCY:?})"
    );
    for (name, request) in cases {
        // A fresh layer: a cold cache.
        let layered = ServiceBuilder::new()
            .layer(
                KratosLayer::builder(kratos.public_url())
                    .build()
                    .expect("layer"),
            )
            .service_fn(trivial);
        kratos.reset_counters();
        let start = Arc::new(Barrier::new(BURST));
        let started = Instant::now();
        let tasks: Vec<_> = (0..BURST)
            .map(|_| {
                let layered = layered.clone();
                let request = Arc::clone(&request);
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    let request = request();
                    start.wait().await;
                    layered.oneshot(request).await.map(|r| r.status())
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            if task.await.expect("task") == Ok(StatusCode::OK) {
                ok += 1;
            }
        }
        let whoami = kratos.calls(Endpoint::Whoami);
        println!(
            "  {name:6}: {ok}/{BURST} answered 200 in {:?}; whoami calls: {whoami} \
             (target 1: {})",
            started.elapsed(),
            if whoami == 1 { "met" } else { "NOT met" }
        );
    }
}

/// A long run with Zipf popularity and a short TTL: every session that is asked for costs at
/// most one whoami per TTL period.
async fn load(kratos: &KratosStandIn) {
    let smoke_test = support::smoke_test();
    let duration = env_seconds("LOAD_SECONDS", if smoke_test { 1.0 } else { 30.0 });
    let ttl = env_seconds("LOAD_TTL_SECONDS", if smoke_test { 0.5 } else { 5.0 });
    let clients = env_count("LOAD_CLIENTS", 16);
    let sessions = (0..SESSIONS)
        .map(|_| kratos.create_session())
        .collect::<Vec<_>>();
    let requests = LoadCredential::for_sessions(&sessions);
    let seen: Arc<Vec<AtomicBool>> =
        Arc::new((0..SESSIONS).map(|_| AtomicBool::new(false)).collect());
    let zipf = Zipf::new(SESSIONS as f64, ZIPF_S).expect("valid Zipf parameters");

    let layered = ServiceBuilder::new()
        .layer(
            KratosLayer::builder(kratos.public_url())
                .cache_ttl(ttl)
                .build()
                .expect("layer"),
        )
        .service_fn(trivial);
    kratos.reset_counters();
    println!();
    println!(
        "load: {SESSIONS} sessions, Zipf s={ZIPF_S}, {clients} clients, cache TTL {ttl:?}, \
         for {duration:?}"
    );
    let run = {
        let seen = Arc::clone(&seen);
        drive(layered, clients, duration, move |rng| {
            // Zipf draws ranks 1..=n.
            let rank = zipf.sample(rng) as usize - 1;
            seen[rank].store(true, Ordering::Relaxed);
            requests[rank].request()
        })
        .await
    };
    let whoami = kratos.calls(Endpoint::Whoami);
    let distinct = seen
        .iter()
        .filter(|seen| seen.load(Ordering::Relaxed))
        .count();
    let periods = (duration.as_secs_f64() / ttl.as_secs_f64()).ceil() as usize;
    let bound = distinct * periods;
    println!(
        "  {} requests ({:.0}/s), {} not 200",
        run.requests,
        run.throughput(),
        run.failures
    );
    println!(
        "  whoami calls: {whoami}; distinct sessions asked for: {distinct}; \
         bound distinct × ⌈duration/TTL⌉ = {distinct} × {periods} = {bound}"
    );
    println!(
        "  whoami per 1,000 requests: {:.3}; calls / bound: {:.2} (target <= 1: {})",
        whoami as f64 * 1000.0 / run.requests as f64,
        whoami as f64 / bound.max(1) as f64,
        if whoami <= bound { "met" } else { "NOT met" }
    );
}
