//! The session layer: [`KratosLayer`] finds the caller's credential, validates it through the
//! cache (and Kratos when the cache has no answer), and either passes the request on with its
//! [`KratosSession`](crate::KratosSession) or answers with a refusal.
//!
//! As each tower-http middleware, it is a layer ([`KratosLayer`], built by
//! [`KratosLayerBuilder`]), the service it wraps around yours ([`KratosService`]), that
//! service's future ([`ResponseFuture`]) and the response body
//! ([`ResponseBody`](crate::rejection::ResponseBody), shared with the other middlewares). A hit
//! in the cache is answered in `call`, with no allocation beyond the session's `Arc`; a miss
//! runs its lookup inside the response future.
//!
//! ```
//! use tower_kratos::{authenticate::KratosLayerBuilder, KratosLayer, Mode};
//!
//! # fn main() -> Result<(), tower_kratos::BuildError> {
//! let builder: KratosLayerBuilder = KratosLayer::builder("http://127.0.0.1:4433");
//! let layer = builder.mode(Mode::Optional).build()?;
//! assert_eq!(layer.mode(), Mode::Optional);
//! # Ok(())
//! # }
//! ```

mod builder;
pub(crate) mod future;
mod layer;
mod service;

pub use self::{
    builder::KratosLayerBuilder,
    future::ResponseFuture,
    layer::{KratosLayer, LayerStats},
    service::KratosService,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::shared_cache::SharedCacheStats;
