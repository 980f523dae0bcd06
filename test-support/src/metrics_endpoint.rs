//! The reference apps' `GET /metrics` (`METRICS_ADDR`): the crate's series as Prometheus text,
//! from `metrics-exporter-prometheus`'s recorder, with the buckets the crate recommends for its
//! histograms.

use std::{convert::Infallible, error::Error, net::SocketAddr, time::Duration};

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_kratos::metrics::{
    REVOCATION_LAG, REVOCATION_LAG_BUCKETS, WHOAMI_BUCKETS, WHOAMI_DURATION,
};

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples recorded between scrapes are folded in: keeps memory bounded
/// when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The recorder, installed as the process's (before any layer is built: layers take their
/// handles then), with the crate's recommended buckets.
pub fn install() -> Result<PrometheusHandle, Box<dyn Error>> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(WHOAMI_DURATION.into()), WHOAMI_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(REVOCATION_LAG.into()), REVOCATION_LAG_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    Ok(handle)
}

/// Installs the recorder and serves `GET /metrics` on `addr`, on tasks of their own; returns
/// the address bound.
pub async fn start(addr: SocketAddr) -> Result<SocketAddr, Box<dyn Error>> {
    let handle = install()?;
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    let service = tower::service_fn(move |request: Request<Incoming>| {
        let handle = handle.clone();
        async move { Ok::<_, Infallible>(answer(&handle, &request)) }
    });
    tokio::spawn(async move {
        if let Err(error) = super::serve::serve(listener, service).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

fn answer<B>(handle: &PrometheusHandle, request: &Request<B>) -> Response<String> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(header::CONTENT_TYPE, TEXT_FORMAT)
            .body(handle.render()),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body("not found: GET /metrics\n".to_owned()),
    };
    response.unwrap_or_else(|_| Response::new(String::new()))
}
