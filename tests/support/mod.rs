//! Helpers shared by the layer's integration tests (`cache`, `credentials`, `extractors`,
//! `faults`, `https`, `hyper`, `lifecycle`, `outcomes`, `properties`, `readiness`, `redaction`,
//! `tracing`): the stand-in and the layer in front of it (here), the inner services behind it
//! (`inner`), sending a request and reading the answer (`answer`), what Kratos received
//! (`received`), and a subscriber that keeps what is logged (`capture`).
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

mod answer;
pub mod capture;
mod inner;
pub mod pki;
mod received;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod replicas;

use std::time::Duration;

use tower_kratos::{testing::KratosStandIn, KratosLayer, KratosLayerBuilder};

// Re-exported so that tests name every helper `support::…`. A binary that uses nothing from one
// of these files would be warned about its re-export, as about dead code above.
#[allow(unused_imports)]
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
/// [`tower_kratos::DEFAULT_REQUEST_TIMEOUT`]), for tests whose Kratos answers slower than
/// [`KRATOS_TIMEOUT`] on purpose.
pub fn default_layer(kratos: &KratosStandIn) -> KratosLayer {
    KratosLayer::builder(kratos.public_url())
        .build()
        .expect("build the layer")
}
