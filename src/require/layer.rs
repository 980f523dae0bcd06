//! [`RequireLayer`]: a [`Requirement`] in front of a route, answering through the layer's own
//! rejection.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::Requirement;
use crate::{
    body::ResponseBody,
    cache::Revoked,
    credentials::find_credential,
    log_limit::WarnLimiter,
    outcome::{Insufficient, Outcome, Unmet},
    rejection::{DefaultRejection, RejectionResponse},
    response::ErrorBody,
    session::KratosSession,
    shared::Policy,
};

/// A [`Requirement`] as a layer, from [`KratosLayer::require`](crate::KratosLayer::require).
/// Goes inside the `KratosLayer` (which finds the session); refuses through its rejection.
pub struct RequireLayer<R = DefaultRejection> {
    policy: Arc<Policy<R>>,
    requirement: Arc<Requirement>,
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
        RequireService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service a [`RequireLayer`] wraps around yours: its readiness is the inner service's.
pub struct RequireService<S, R = DefaultRejection> {
    inner: S,
    layer: RequireLayer<R>,
}

impl<S: Clone, R> Clone for RequireService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for RequireService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireService")
            .field("inner", &self.inner)
            .field("requirement", &self.layer.requirement)
            .finish()
    }
}

const MISSING_LAYER: &str = "tower-kratos: a Requirement's layer found no session information. \
     Apply the KratosLayer outside it: `.layer(kratos.require(..))` on the route, and \
     `.layer(kratos)` around the router.";

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RequireService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponse,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RequireFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions();
        let refusal = match extensions.get::<KratosSession>() {
            Some(session) => self.layer.requirement.check(session).err(),
            // Optional mode let it on without a session; this route needs one.
            None => Some(extensions.get::<Outcome>().cloned().unwrap_or_else(|| {
                static MISSING: WarnLimiter = WarnLimiter::new();
                if let Some(left_out) = MISSING.admit(("require", "missing_layer")) {
                    tracing::error!(left_out_since_last = left_out, "{MISSING_LAYER}");
                }
                Outcome::Anonymous
            })),
        };
        let Some(outcome) = refusal else {
            return RequireFuture {
                state: State::Inner {
                    future: self.inner.call(request),
                },
            };
        };
        let layered =
            extensions.get::<Outcome>().is_some() || extensions.get::<KratosSession>().is_some();
        let policy = Arc::clone(&self.layer.policy);
        let (parts, _body) = request.into_parts();
        let refusal: Refused = Box::pin(async move {
            if !layered {
                // A wiring mistake: the server's, never the user's "signed out".
                return ErrorBody::new(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "the session service is misconfigured",
                )
                .response();
            }
            let outcome = with_flow(&policy, outcome);
            if let Outcome::Insufficient(Insufficient {
                unmet: Unmet::SecondFactor | Unmet::RecentSignIn { .. },
                ..
            }) = &outcome
            {
                // After the step-up or the fresh sign-in the session is another: Kratos is
                // asked again, whatever the cache TTL (a token keeps its value through both).
                let shared = &policy.shared;
                if let Ok(Some(credential)) = find_credential(&parts.headers, &shared.cookie_names)
                {
                    shared.cache.revoked(Revoked::Credential(&credential)).await;
                }
            }
            let mut response = policy.rejection.response(&outcome, &parts);
            response.extensions_mut().insert(outcome);
            response
        });
        RequireFuture {
            state: State::Refused { refusal },
        }
    }
}

/// The outcome with Kratos's browser login flow that meets it, for a second factor or a recent
/// sign-in.
fn with_flow<R>(policy: &Policy<R>, outcome: Outcome) -> Outcome {
    let Outcome::Insufficient(Insufficient { unmet, .. }) = outcome else {
        return outcome;
    };
    let query = match unmet {
        Unmet::SecondFactor => Some(("aal", "aal2")),
        Unmet::RecentSignIn { .. } => Some(("refresh", "true")),
        _ => None,
    };
    let redirect_browser_to =
        query.map(|query| policy.shared.client.login_flow_url(query).to_string());
    Outcome::Insufficient(Insufficient {
        unmet,
        redirect_browser_to,
    })
}

type Refused = Pin<Box<dyn Future<Output = Response<Bytes>> + Send>>;

pin_project! {
    /// The future [`RequireService`] returns.
    pub struct RequireFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Refused { refusal: Refused },
    }
}

impl<F> fmt::Debug for RequireFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for RequireFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            StateProj::Refused { refusal } => {
                let response = ready!(refusal.as_mut().poll(cx));
                Poll::Ready(Ok(response.map(ResponseBody::rejection)))
            }
        }
    }
}
