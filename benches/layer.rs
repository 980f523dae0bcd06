//! Cache-hit overhead: the layer around a trivial service vs the trivial service alone, with a
//! warm cache, measured side by side in one run.
//!
//! ```text
//! cargo bench --bench layer
//! ```

use std::convert::Infallible;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response, StatusCode};
use tokio::runtime::Runtime;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_kratos::{testing::KratosStandIn, KratosLayer};

async fn trivial(_request: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::new()))
}

fn with_token(token: &str) -> Request<String> {
    Request::get("/me")
        .header("x-session-token", token)
        .body(String::new())
        .expect("valid request")
}

fn with_cookie(cookie: &str) -> Request<String> {
    // The session cookie among the kind of cookies a real browser sends.
    let header =
        format!("_ga=GA1.1.123456789.1700000000; theme=dark; {cookie}; csrftoken=abcdef0123456789");
    Request::get("/me")
        .header("cookie", header)
        .body(String::new())
        .expect("valid request")
}

fn cache_hit_overhead(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let (kratos, session, layered) = runtime.block_on(async {
        let kratos = KratosStandIn::start().await.expect("stand-in");
        let session = kratos.create_session();
        let layer = KratosLayer::builder(kratos.public_url())
            .build()
            .expect("layer");
        let layered = ServiceBuilder::new().layer(layer).service_fn(trivial);
        // Warm the cache.
        let response = layered
            .clone()
            .oneshot(with_token(&session.token))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let response = layered
            .clone()
            .oneshot(with_cookie(&session.cookie_header()))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        (kratos, session, layered)
    });
    let bare = service_fn(trivial);
    let cookie = session.cookie_header();

    let mut group = c.benchmark_group("cache_hit");
    group.bench_function("bare_service", |b| {
        b.to_async(&runtime)
            .iter(|| bare.oneshot(with_token(&session.token)))
    });
    group.bench_function("layer_token", |b| {
        b.to_async(&runtime)
            .iter(|| layered.clone().oneshot(with_token(&session.token)))
    });
    group.bench_function("bare_service_cookies", |b| {
        b.to_async(&runtime)
            .iter(|| bare.oneshot(with_cookie(&cookie)))
    });
    group.bench_function("layer_cookie", |b| {
        b.to_async(&runtime)
            .iter(|| layered.clone().oneshot(with_cookie(&cookie)))
    });
    group.finish();

    let whoami = kratos.calls(tower_kratos::testing::Endpoint::Whoami);
    assert_eq!(whoami, 2, "every measured request was a cache hit");
    println!("whoami calls during the benchmark: {whoami} (both from warming)");
}

criterion_group!(benches, cache_hit_overhead);
criterion_main!(benches);
