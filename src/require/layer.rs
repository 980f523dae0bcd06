//! [`RequireLayer`]: a [`Requirement`] in front of a route, answering through the layer's own
//! rejection.

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::{RequireService, Requirement};
use crate::{rejection::DefaultRejection, state::Policy};

/// A [`Requirement`] as a layer, from [`KratosLayer::require`](crate::KratosLayer::require).
/// Goes inside the `KratosLayer` (which finds the session); refuses through its rejection.
pub struct RequireLayer<R = DefaultRejection> {
    pub(super) policy: Arc<Policy<R>>,
    pub(super) requirement: Arc<Requirement>,
}

impl<R> RequireLayer<R> {
    pub(crate) fn new(policy: Arc<Policy<R>>, requirement: Requirement) -> Self {
        Self {
            policy,
            requirement: Arc::new(requirement),
        }
    }
}

impl<R> Clone for RequireLayer<R> {
    fn clone(&self) -> Self {
        Self {
            policy: Arc::clone(&self.policy),
            requirement: Arc::clone(&self.requirement),
        }
    }
}

impl<R> fmt::Debug for RequireLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLayer")
            .field("requirement", &self.requirement)
            .finish_non_exhaustive()
    }
}

impl<S, R> Layer<S> for RequireLayer<R> {
    type Service = RequireService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService::new(inner, self.clone())
    }
}
