//! Cache-hit cost in CPU instructions, counted by valgrind's callgrind: the same every run on the
//! same binary, whatever else the machine is doing, so two versions of the layer can be compared
//! on a shared, noisy machine where nanoseconds cannot.
//!
//! ```text
//! cargo bench --bench instructions        # needs valgrind (Debian's `valgrind` package)
//! ```
//!
//! The bench runs itself under `valgrind --tool=callgrind` for each side (the bare service and the
//! layer, with a cached `X-Session-Token` and with a cached session cookie among 4 cookies; and
//! the layer with a shared cache in a real `redis-server` the bench starts, whose hits must cost
//! what the others' do, since a hit never touches Redis), twice: with `REQUESTS` and with twice as many requests. The difference of the two counts is
//! what `REQUESTS` requests cost, start-up and the first, uncached request cancelled out; the
//! instructions the layer adds per request are the difference to the bare side.

use std::{convert::Infallible, process::Command, time::Instant};

mod support;

use test_support::redis_server;

use http::{Request, Response};
use kratos_stand_in::KratosStandIn;
use support::{trivial, with_cookie, with_token};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_kratos::KratosLayer;

/// Requests of the shorter run of each side; the longer one sends twice as many.
const REQUESTS: u64 = 20_000;

/// The sides, as the child process is told them: each credential through the bare service and
/// through the layer, since the two credentials' requests cost differently to build.
const SIDES: [&str; 5] = [
    "bare-token",
    "layer-token",
    "bare-cookie",
    "layer-cookie",
    "redis-token",
];

/// Sends `count` requests through the service as a server connection does (`ready`, then
/// `call`).
fn counted_requests<S, B>(
    runtime: &tokio::runtime::Runtime,
    mut service: S,
    request: &dyn Fn() -> Request<String>,
    count: u64,
) where
    S: Service<Request<String>, Response = Response<B>, Error = Infallible>,
{
    runtime.block_on(async {
        for _ in 0..count {
            let ready = service.ready().await.expect("infallible");
            let response = ready.call(request()).await.expect("infallible");
            std::hint::black_box(response);
        }
    });
}

/// One side, in this process: the stand-in, a warm cache, then `count` requests. `redis`: the
/// shared cache's URL, for the `redis-` side.
fn run_side(side: &str, count: u64, redis: Option<&str>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (kratos, layer) = runtime.block_on(async {
        let kratos = KratosStandIn::start().await.expect("stand-in");
        let builder = KratosLayer::builder(kratos.public_url());
        let builder = match redis.filter(|_| side.starts_with("redis")) {
            Some(url) => builder
                .redis_url(url)
                .shared_cache_secret("a shared secret of at least 32 bytes, for the bench"),
            None => builder,
        };
        let layer = builder.build().expect("layer");
        // Subscribed before counting: the subscriber's start-up is not a hit's cost.
        while layer
            .stats()
            .await
            .shared_cache
            .is_some_and(|shared| !shared.in_use)
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (kratos, layer)
    });
    let session = kratos.create_session();
    let cookie = session.cookie_header();
    let token = || with_token(&session.token);
    let cookie = || with_cookie(&cookie);
    let request: &dyn Fn() -> Request<String> = if side.ends_with("cookie") {
        &cookie
    } else {
        &token
    };
    if side.starts_with("bare") {
        counted_requests(&runtime, tower::service_fn(trivial), request, count);
        return;
    }
    let service = ServiceBuilder::new().layer(layer).service_fn(trivial);
    // The first request fills the cache; only hits are counted.
    let first = runtime.block_on(service.clone().oneshot(request()));
    assert_eq!(
        first.expect("infallible").status(),
        200,
        "the session is valid"
    );
    counted_requests(&runtime, service, request, count);
}

/// The instructions callgrind counted in a run of `side` with `count` requests.
fn instructions(binary: &std::path::Path, side: &str, count: u64, redis: &str) -> u64 {
    let output = std::env::temp_dir().join(format!(
        "tower-kratos-callgrind-{side}-{count}-{}",
        std::process::id()
    ));
    let run = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", output.display()))
        .arg(binary)
        .arg(format!("--side={side}"))
        .arg(format!("--requests={count}"))
        .arg(format!("--redis={redis}"))
        .output();
    match run {
        Ok(done) if done.status.success() => {}
        Ok(done) => panic!(
            "valgrind failed for {side}: {}",
            String::from_utf8_lossy(&done.stderr)
        ),
        Err(error) => panic!("valgrind could not be started ({error}): install valgrind"),
    }
    let text = std::fs::read_to_string(&output).expect("callgrind's output");
    let _ = std::fs::remove_file(&output);
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|total| total.trim().parse().ok())
        .expect("callgrind's summary line")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(side) = args.iter().find_map(|arg| arg.strip_prefix("--side=")) {
        let count = args
            .iter()
            .find_map(|arg| arg.strip_prefix("--requests="))
            .and_then(|count| count.parse().ok())
            .unwrap_or(REQUESTS);
        let redis = args.iter().find_map(|arg| arg.strip_prefix("--redis="));
        run_side(side, count, redis);
        return;
    }
    let redis = redis_server::RedisServer::start_as(redis_server::Flavor::Plain);
    if support::smoke_test() {
        // `cargo test --benches`: check that each side runs, without valgrind.
        for side in SIDES {
            let started = Instant::now();
            run_side(side, REQUESTS, Some(&redis.url()));
            println!("{side}: {REQUESTS} requests in {:?}", started.elapsed());
        }
        return;
    }
    let binary = std::env::current_exe().expect("this bench's path");
    let per_request: Vec<f64> = SIDES
        .iter()
        .map(|side| {
            let short = instructions(&binary, side, REQUESTS, &redis.url());
            let long = instructions(&binary, side, 2 * REQUESTS, &redis.url());
            long.saturating_sub(short) as f64 / REQUESTS as f64
        })
        .collect();
    println!("\ninstructions per request (callgrind; runs of {REQUESTS} and {} requests per side, the difference divided by {REQUESTS}; warm cache):", 2 * REQUESTS);
    println!("| credential | bare service | with the layer | added by the layer |");
    println!("|---|---:|---:|---:|");
    for (label, bare, with) in [
        ("X-Session-Token", per_request[0], per_request[1]),
        ("cookie among 4", per_request[2], per_request[3]),
    ] {
        println!("| {label} | {bare:.0} | {with:.0} | {:.0} |", with - bare);
    }
    println!(
        "| X-Session-Token, shared cache in Redis | {:.0} | {:.0} | {:.0} ({:+.0} against \
         the layer without Redis) |",
        per_request[0],
        per_request[4],
        per_request[4] - per_request[0],
        per_request[4] - per_request[1]
    );
}
