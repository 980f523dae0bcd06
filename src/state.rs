//! What every service made by one builder shares ([`LayerState`]), and one layer's [`Policy`]: the
//! shared state with that layer's mode and rejection.

use std::sync::Arc;

use crate::{
    cache::SessionCache, client::KratosClient, config::Mode, credentials::CookieNames,
    cross_origin::CrossOrigin, extend::Extender, log_limit::WarnLimiter, metrics::LayerMetrics,
    rejection::Rejecter,
};

/// What every service made by one builder shares: the client, the cache, the settings.
#[derive(Debug)]
pub(crate) struct LayerState {
    pub(crate) client: KratosClient,
    pub(crate) cache: SessionCache,
    pub(crate) cookie_names: CookieNames,
    /// The cross-origin rule for cookie requests, and the origins it trusts.
    pub(crate) cross_origin: CrossOrigin,
    pub(crate) extender: Extender,
    /// Whether Kratos's re-issued session cookie is passed on to the response.
    pub(crate) relay_set_cookie: bool,
    /// Whether connections opened with a session end with it (see [`live`](crate::live)).
    pub(crate) watch_connections: bool,
    /// Keeps outages and attacks from flooding the log with one warning per request.
    pub(crate) warnings: WarnLimiter,
    /// The handles each request's series are counted through (nothing without `metrics`).
    pub(crate) metrics: LayerMetrics,
}

/// One layer's policy: the shared state plus its mode and rejection. Services and their futures
/// hold it behind one `Arc`, so a request clones a pointer, never the settings.
#[derive(Debug)]
pub(crate) struct Policy<R> {
    pub(crate) state: Arc<LayerState>,
    pub(crate) mode: Mode,
    pub(crate) rejection: Rejecter<R>,
}

#[cfg(feature = "axum")]
impl<R: crate::rejection::RejectionResponse> crate::rejection::DynRejection for Policy<R> {
    fn response_for(
        &self,
        outcome: &crate::outcome::Outcome,
        request: &http::request::Parts,
    ) -> http::Response<bytes::Bytes> {
        self.rejection.answer(outcome, request)
    }
}
