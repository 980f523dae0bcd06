//! Connections that end with their session: what watching costs a cache hit (the layer with
//! the watch and without, side by side, interleaved), how fast 1,000 open event streams over
//! 500 sessions close after 100 revocations (p50, p99), and the memory a watched connection
//! holds (the same streams with the watch and without).
//!
//! ```text
//! cargo bench --bench live
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it runs small, to check that it works.

mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    net::SocketAddr,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use axum::{
    response::sse::{Event, Sse},
    routing::get,
    Router,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use kratos_stand_in::{KratosStandIn, TestSession};
use support::{machine, smoke_test, trivial, with_cookie, with_token};
use tokio::{net::TcpListener, runtime::Runtime};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_kratos::{KratosLayer, KratosSession};

/// Counts the bytes held and the allocations made, process-wide.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `block` came from `System` with `layout`.
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(block, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let smoke = smoke_test();
    let runtime = Runtime::new().expect("a runtime");
    println!("machine: {}", machine());
    runtime.block_on(hit_cost(smoke));
    runtime.block_on(open_connections(smoke));
}

/// The cache hit through a layer that watches connections and through one that does not,
/// alternating batches, so both see the same machine load.
async fn hit_cost(smoke: bool) {
    let (rounds, batch) = if smoke { (3, 100) } else { (201, 1_000) };
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let session = kratos.create_session();
    let cookie = session.cookie_header();
    let layered = |watch: bool| {
        let layer = KratosLayer::builder(kratos.public_url())
            .watch_connections(watch)
            .build()
            .expect("a layer");
        ServiceBuilder::new().layer(layer).service_fn(trivial)
    };
    let (watched, unwatched) = (layered(true), layered(false));
    println!();
    println!(
        "cache hit, with the watch and without: {rounds} alternating batches of {batch} \
         requests, median per request; allocations per request"
    );
    println!(
        "| credential | without the watch | with the watch | ratio | allocations without / with |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, request) in [
        (
            "X-Session-Token",
            &(|| with_token(&session.token)) as &dyn Fn() -> Request<String>,
        ),
        ("cookie among 4", &|| with_cookie(&cookie)),
    ] {
        for service in [&watched, &unwatched] {
            let response = service
                .clone()
                .oneshot(request())
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK, "warm");
        }
        let mut times = [Vec::new(), Vec::new()];
        let mut allocations = [0u64; 2];
        for _ in 0..rounds {
            for (side, service) in [&unwatched, &watched].into_iter().enumerate() {
                let mut service = service.clone();
                let allocated = ALLOCATIONS.load(Ordering::Relaxed);
                let started = Instant::now();
                for _ in 0..batch {
                    let ready = service.ready().await.expect("infallible");
                    let response = ready.call(request()).await.expect("infallible");
                    std::hint::black_box(response);
                }
                times[side].push(started.elapsed() / batch as u32);
                allocations[side] += ALLOCATIONS.load(Ordering::Relaxed) - allocated;
            }
        }
        let [without, with] = times.map(|mut side| {
            side.sort();
            side[side.len() / 2]
        });
        let per_request = |count: u64| count as f64 / (rounds as u64 * batch) as f64;
        println!(
            "| {name} | {} ns | {} ns | {:.3} | {:.2} / {:.2} |",
            without.as_nanos(),
            with.as_nanos(),
            with.as_secs_f64() / without.as_secs_f64(),
            per_request(allocations[0]),
            per_request(allocations[1]),
        );
    }
}

async fn events(
    _session: KratosSession,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let ticks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((Ok(Event::default().event("tick").data("tick")), ()))
    });
    Sse::new(ticks)
}

async fn serve(layer: KratosLayer) -> SocketAddr {
    let app = Router::new().route("/events", get(events)).layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(test_support::serve::serve(listener, app.into_service()));
    addr
}

/// Opens an event stream for `session`; the task ends, reporting when, once the stream does.
async fn open(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    session: &TestSession,
) -> tokio::task::JoinHandle<Instant> {
    let request = Request::get(format!("http://{addr}/events"))
        .header("x-session-token", &session.token)
        .body(Empty::new())
        .expect("a request");
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    tokio::spawn(async move {
        while let Some(Ok(_)) = body.frame().await {}
        Instant::now()
    })
}

async fn until_watched(layer: &KratosLayer, connections: usize) {
    while layer.stats().await.watched_connections != connections {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 1,000 streams over 500 sessions: the memory they hold with the watch and without, then
/// how long each stream of 100 revoked sessions takes to end.
async fn open_connections(smoke: bool) {
    let (sessions, per_session, revoked) = if smoke { (10, 2, 2) } else { (500, 2, 100) };
    let connections = sessions * per_session;
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let people: Vec<TestSession> = (0..sessions).map(|_| kratos.create_session()).collect();
    let client = Client::builder(TokioExecutor::new()).build_http();

    let mut held = [0i64; 2];
    let mut kept = None;
    for (side, watch) in [false, true].into_iter().enumerate() {
        let layer = KratosLayer::builder(kratos.public_url())
            .admin_url(kratos.admin_url())
            .watch_connections(watch)
            .build()
            .expect("a layer");
        let addr = serve(layer.clone()).await;
        // Sessions cached first (one stream each, kept open): the streams' own memory only.
        let mut warm = Vec::with_capacity(sessions);
        for session in &people {
            warm.push(open(&client, addr, session).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let mut streams = Vec::with_capacity(connections);
        for session in &people {
            for _ in 0..per_session {
                streams.push(open(&client, addr, session).await);
            }
        }
        if watch {
            until_watched(&layer, connections + sessions).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        held[side] = LIVE_BYTES.load(Ordering::Relaxed) - before;
        if watch {
            kept = Some((layer, streams));
        } else {
            drop(streams);
        }
    }
    println!();
    println!("{connections} open event streams over {sessions} sessions (server and client in one process):");
    println!("| | bytes held | per stream |");
    println!("|---|---:|---:|");
    for (name, bytes) in [("without the watch", held[0]), ("with the watch", held[1])] {
        println!("| {name} | {bytes} | {} |", bytes / connections as i64);
    }
    println!(
        "memory the watch adds per open stream: {} bytes",
        (held[1] - held[0]) / connections as i64
    );

    let (layer, streams) = kept.expect("the watched run");
    let lifecycle = layer.lifecycle();
    let started = Instant::now();
    let mut revocations = Vec::new();
    for session in &people[..revoked] {
        let lifecycle = lifecycle.clone();
        let id = session.id.clone();
        revocations.push(tokio::spawn(async move {
            let at = Instant::now();
            lifecycle.disable_session(&id).await.expect("disabled");
            at
        }));
    }
    let mut revoked_at = Vec::new();
    for revocation in revocations {
        revoked_at.push(revocation.await.expect("no panic"));
    }
    // The first `revoked * per_session` streams belong to the revoked sessions.
    let mut streams = streams.into_iter();
    let mut lags = Vec::new();
    for revoked_at in &revoked_at {
        for _ in 0..per_session {
            let stream = streams.next().expect("a stream");
            let ended = tokio::time::timeout(Duration::from_secs(10), stream)
                .await
                .expect("ended within 10 s")
                .expect("no panic");
            lags.push(ended.saturating_duration_since(*revoked_at));
        }
    }
    let all_ended = started.elapsed();
    lags.sort();
    let quantile = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    println!();
    println!(
        "{revoked} sessions revoked at once (disable_session, each its own task): their {} \
         streams ended after (from each revocation's start): p50 {:?}, p99 {:?}, max {:?}; \
         all within {all_ended:?}",
        lags.len(),
        quantile(0.5),
        quantile(0.99),
        lags.last().copied().unwrap_or_default(),
    );
    let left = layer.stats().await.watched_connections;
    println!(
        "streams still watched: {left} (the other {} sessions' streams stay open)",
        sessions - revoked
    );
    drop(streams);
}
