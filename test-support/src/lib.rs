//! What tower-kratos's own tests, benches and reference apps share (not published): the
//! stand-in and the layer in front of it (here), the inner services behind it (`inner`), sending
//! a request and reading the answer (`answer`), what Kratos received (`received`), a subscriber
//! that keeps what is logged (`capture`), certificates (`pki`), real `redis-server` processes,
//! clusters and Sentinels the tests start (`redis_*`), replicas sharing one Redis (`replicas`),
//! and the reference apps' settings (`app_settings`) and server (`serve`).
//!
//! Tests name every helper `support::…` (`use test_support as support;`).
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::missing_panics_doc)]

mod answer;
pub mod app_settings;
pub mod capture;
/// The reference apps' gRPC services (`demo/demo.proto`), generated once and committed so that no
/// `protoc` is needed.
#[path = "demo/tower_kratos.demo.v1.rs"]
#[allow(clippy::all, missing_debug_implementations)]
pub mod demo;
mod inner;
pub mod metrics_endpoint;
pub mod pki;
mod received;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod replicas;
pub mod serve;

use std::time::Duration;

use kratos_stand_in::KratosStandIn;
use tower_kratos::{authenticate::KratosLayerBuilder, KratosLayer};

pub use {answer::*, inner::*, received::*};

/// The layer's whoami deadline in these tests: short, so hang and delay tests end quickly.
pub const KRATOS_TIMEOUT: Duration = Duration::from_millis(300);

/// A guard for tests that could hang if the deadline were not enforced; far above
/// [`KRATOS_TIMEOUT`], so it only fires when the layer is broken.
pub const GUARD: Duration = Duration::from_secs(5);

/// A fresh stand-in on loopback.
pub async fn kratos() -> KratosStandIn {
    KratosStandIn::start()
        .await
        .expect("start the Kratos stand-in")
}

/// A layer builder for this stand-in with the short [`KRATOS_TIMEOUT`] deadline.
pub fn builder(kratos: &KratosStandIn) -> KratosLayerBuilder {
    KratosLayer::builder(kratos.public_url()).request_timeout(KRATOS_TIMEOUT)
}

/// The required layer for this stand-in with the short [`KRATOS_TIMEOUT`] deadline.
pub fn layer(kratos: &KratosStandIn) -> KratosLayer {
    builder(kratos).build().expect("build the layer")
}

/// The required layer for this stand-in with every setting at its default (the deadline too:
/// [`tower_kratos::defaults::DEFAULT_REQUEST_TIMEOUT`]), for tests whose Kratos answers slower than
/// [`KRATOS_TIMEOUT`] on purpose.
pub fn default_layer(kratos: &KratosStandIn) -> KratosLayer {
    KratosLayer::builder(kratos.public_url())
        .build()
        .expect("build the layer")
}
