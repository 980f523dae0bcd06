//! The cost of the metrics on a cache hit: two layers in one process, one built before the
//! Prometheus recorder was installed (its handles record nothing: the baseline, what a hit costs
//! without the feature but for one branch per series) and one after (every hit counted), measured
//! in alternating batches in one run, for a session token. The issue's target: within 5 %.
//!
//! ```text
//! cargo bench --bench metrics
//! ```

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response, StatusCode};
use kratos_stand_in::KratosStandIn;
use metrics_exporter_prometheus::PrometheusBuilder;
use support::{trivial, with_token};
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_kratos::KratosLayer;

/// Rounds and batch size of the alternating measurement.
const ROUNDS: usize = 201;
const BATCH: u64 = 1_000;
/// The most the metrics may add to a hit, as a fraction of it.
const TARGET: f64 = 0.05;

/// Times `iters` requests through one service (`ready`, then `call`).
async fn requests<S, B>(mut service: S, iters: u64, token: &str) -> Duration
where
    S: Service<Request<String>, Response = Response<B>, Error = Infallible>,
{
    let started = Instant::now();
    for _ in 0..iters {
        let ready = service.ready().await.expect("infallible");
        let response = ready.call(with_token(token)).await.expect("infallible");
        std::hint::black_box(response);
    }
    started.elapsed()
}

fn metrics_on_a_hit(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let kratos = runtime.block_on(KratosStandIn::start()).expect("stand-in");
    let session = kratos.create_session();
    let token = session.token.as_str();
    let layered = |layer: KratosLayer| ServiceBuilder::new().layer(layer).service_fn(trivial);
    let build = || {
        KratosLayer::builder(kratos.public_url())
            .build()
            .expect("layer")
    };
    // Built before any recorder: its handles are no-ops.
    let silent = layered(build());
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder");
    let counted = layered(build());
    runtime.block_on(async {
        for service in [silent.clone(), counted.clone()] {
            let response = service
                .oneshot(with_token(token))
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
        }
    });

    let mut group = c.benchmark_group("metrics_hit");
    group.bench_function("layer_without_recorder", |b| {
        b.to_async(&runtime)
            .iter_custom(|iters| requests(silent.clone(), iters, token))
    });
    group.bench_function("layer_with_recorder", |b| {
        b.to_async(&runtime)
            .iter_custom(|iters| requests(counted.clone(), iters, token))
    });
    group.finish();

    let mut times: [Vec<Duration>; 2] = Default::default();
    for _ in 0..ROUNDS {
        times[0].push(runtime.block_on(requests(silent.clone(), BATCH, token)));
        times[1].push(runtime.block_on(requests(counted.clone(), BATCH, token)));
    }
    let [without, with] = times.map(|mut times| {
        times.sort_unstable();
        times[times.len() / 2] / BATCH as u32
    });
    let added = with.as_secs_f64() / without.as_secs_f64() - 1.0;
    println!();
    println!("cache hit, median of {ROUNDS} alternating batches of {BATCH} requests:");
    println!("| without a recorder | with the Prometheus recorder | added |");
    println!("|---:|---:|---:|");
    println!(
        "| {} ns | {} ns | {:+.1} % |",
        without.as_nanos(),
        with.as_nanos(),
        added * 100.0
    );
    println!(
        "target: within {:.0} %: {}",
        TARGET * 100.0,
        if added <= TARGET { "met" } else { "NOT met" }
    );
    let rendered = handle.render();
    assert!(rendered.contains("tower_kratos_served_from_total{source=\"hit\"}"));
}

criterion_group!(benches, metrics_on_a_hit);
criterion_main!(benches);
