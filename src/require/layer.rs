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
    credentials::find_credential,
    log_limit::WarnLimiter,
    outcome::{Insufficient, Outcome, Unmet},
    rejection::ResponseBody,
    rejection::{DefaultRejection, RejectionResponse},
    response::ErrorBody,
    session::KratosSession,
    state::Policy,
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

inner_service_accessors!(RequireService);

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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: RejectionResponse,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RequireFuture<S::Future, S, ReqBody, R>;

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
            return RequireFuture::inner(self.inner.call(request));
        };
        let layered =
            extensions.get::<Outcome>().is_some() || extensions.get::<KratosSession>().is_some();
        if !layered {
            // A wiring mistake: the server's, never the user's "signed out"; the answer says how
            // to fix it, as the extractors' does.
            let response = ErrorBody::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the session service is misconfigured",
            )
            .id("misconfigured")
            .reason(MISSING_LAYER)
            .response();
            return RequireFuture::refused(response);
        }
        if !meetable_at_kratos(&outcome) {
            let (parts, _body) = request.into_parts();
            return RequireFuture::refused(refusal_response(&self.layer.policy, outcome, &parts));
        }
        // The session may have met the requirement at Kratos since it was cached (the user
        // was sent to the flow and came back): the cache decides whether to ask again, and
        // this request goes on to the route if the newer answer meets it.
        let policy = Arc::clone(&self.layer.policy);
        let requirement = Arc::clone(&self.layer.requirement);
        let credential = find_credential(request.headers(), &policy.shared.cookie_names)
            .ok()
            .flatten();
        let verdict: Verdict<R> = Box::pin(async move {
            let shared = &policy.shared;
            let newer = match &credential {
                Some(credential) => {
                    shared
                        .cache
                        .recheck_refused(credential, &shared.client)
                        .await
                }
                None => None,
            };
            match newer {
                Some(Outcome::Authenticated(session)) => match requirement.check(&session) {
                    Ok(()) => Ok(session),
                    Err(unmet) => Err((policy, unmet)),
                },
                Some(other) => Err((policy, other)),
                None => Err((policy, outcome)),
            }
        });
        // The ready service goes with the request; a clone stays for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        RequireFuture {
            state: State::Rechecking {
                verdict,
                pending: Some((inner, request)),
            },
        }
    }
}

/// Whether the session can meet what it lacks at Kratos without changing: a second factor or
/// a fresh sign-in in the same session (a token keeps its value through both).
fn meetable_at_kratos(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Insufficient(Insufficient {
            unmet: Unmet::SecondFactor | Unmet::RecentSignIn { .. },
            ..
        })
    )
}

/// The layer's rejection of `outcome`, with the outcome attached for whoever is outside.
fn refusal_response<R: RejectionResponse>(
    policy: &Policy<R>,
    outcome: Outcome,
    parts: &http::request::Parts,
) -> Response<Bytes> {
    let outcome = with_flow(policy, outcome);
    policy.rejection.reject(outcome, parts)
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

/// What a recheck decided: the newer session that meets the requirement, or the refusal to
/// answer with (the policy travels with it, to render it).
type Verdict<R> =
    Pin<Box<dyn Future<Output = Result<KratosSession, (Arc<Policy<R>>, Outcome)>> + Send>>;

pin_project! {
    /// The future [`RequireService`] returns.
    pub struct RequireFuture<F, S, B, R = DefaultRejection> {
        #[pin]
        state: State<F, S, B, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B, R> {
        Inner { #[pin] future: F },
        Rechecking {
            verdict: Verdict<R>,
            // The ready inner service and the request, until the verdict is in.
            pending: Option<(S, Request<B>)>,
        },
        Refused { response: Option<Response<Bytes>> },
    }
}

impl<F, S, B, R> RequireFuture<F, S, B, R> {
    fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    fn refused(response: Response<Bytes>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, S, B, R> fmt::Debug for RequireFuture<F, S, B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireFuture").finish_non_exhaustive()
    }
}

impl<F, S, B, R, ResBody, E> Future for RequireFuture<F, S, B, R>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    S: Service<Request<B>, Future = F>,
    R: RejectionResponse,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            let next = match state.as_mut().project() {
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Refused { response } => {
                    let response = response.take().unwrap_or_else(polled_after_ready);
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
                StateProj::Rechecking { verdict, pending } => {
                    let verdict = ready!(verdict.as_mut().poll(cx));
                    let Some((mut inner, mut request)) = pending.take() else {
                        return Poll::Ready(Ok(polled_after_ready().map(ResponseBody::rejection)));
                    };
                    match verdict {
                        Ok(session) => {
                            request.extensions_mut().insert(session);
                            State::Inner {
                                future: inner.call(request),
                            }
                        }
                        Err((policy, outcome)) => {
                            let (parts, _body) = request.into_parts();
                            State::Refused {
                                response: Some(refusal_response(&policy, outcome, &parts)),
                            }
                        }
                    }
                }
            };
            state.set(next);
        }
    }
}

/// A future polled again after it finished: a caller's bug, answered rather than panicking.
fn polled_after_ready() -> Response<Bytes> {
    ErrorBody::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "the session service was polled after it answered",
    )
    .response()
}
