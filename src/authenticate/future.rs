//! The response future: the lookup (when the cache could not answer at once), then the inner
//! service or the rejection, and what the layer adds to the request and the response.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{
    cache::Seed,
    config::Mode,
    extend::SessionExtension,
    metrics::ServedFrom,
    outcome::{Outcome, StaleSession},
    rejection::RejectionResponse,
    rejection::ResponseBody,
    relay::append_set_cookies,
    state::Policy,
};

/// A session lookup in progress (cache, then maybe Kratos, then maybe an extension).
pub(crate) type LookupFuture = Pin<Box<dyn Future<Output = Resolved> + Send>>;

/// What a lookup decided, and what it has for the request and the response.
pub(crate) struct Resolved {
    pub(crate) outcome: Outcome,
    /// `None` (no allocation, one word in the future) unless Kratos issued a cookie, an
    /// extension was attempted or a stale session was served.
    pub(crate) additions: Option<Box<Additions>>,
    /// For an authenticated request when the layer watches connections: what its response body
    /// is watched with, should it outlive the request.
    pub(crate) seed: Option<Seed>,
    /// Where an authenticated outcome's session came from, for the metrics.
    pub(crate) served: ServedFrom,
}

/// What the layer adds to the request and to the inner service's response, beyond the session.
#[derive(Default)]
pub(crate) struct Additions {
    /// Kratos's `Set-Cookie` headers for the session, appended to the response.
    pub(crate) set_cookies: Vec<HeaderValue>,
    /// The extension attempt's report, put in the request's and the response's extensions.
    pub(crate) extension: Option<SessionExtension>,
    /// Set when Kratos was unavailable and the session came from the stale-if-error store; put
    /// in the request's extensions.
    pub(crate) stale: Option<StaleSession>,
}

impl Additions {
    /// `None` (no allocation) when there is nothing to add.
    pub(crate) fn into_boxed(self) -> Option<Box<Self>> {
        let something =
            !self.set_cookies.is_empty() || self.extension.is_some() || self.stale.is_some();
        something.then(|| Box::new(self))
    }
}

pin_project! {
    /// The future [`KratosService`](crate::authenticate::KratosService) returns.
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S::Future>,
        // The request and the ready inner service, while the lookup runs.
        waiting: Option<Waiting<S, ReqBody, R>>,
    }
}

struct Waiting<S, ReqBody, R> {
    request: Request<ReqBody>,
    service: S,
    policy: Arc<Policy<R>>,
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Lookup { lookup: LookupFuture },
        Inner { #[pin] future: F, additions: Option<Box<Additions>>, seed: Option<Seed> },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
    R: RejectionResponse,
{
    pub(crate) fn lookup(
        lookup: LookupFuture,
        request: Request<ReqBody>,
        service: S,
        policy: Arc<Policy<R>>,
    ) -> Self {
        Self {
            state: State::Lookup { lookup },
            waiting: Some(Waiting {
                request,
                service,
                policy,
            }),
        }
    }

    /// The outcome is known without waiting (a cache hit, no credential, a malformed one): the
    /// inner service, polled ready, is called now.
    pub(crate) fn decided(
        outcome: Outcome,
        seed: Option<Seed>,
        request: Request<ReqBody>,
        service: &mut S,
        policy: &Arc<Policy<R>>,
    ) -> Self {
        let resolved = Resolved {
            outcome,
            additions: None,
            seed,
            served: ServedFrom::Hit,
        };
        Self {
            state: decide(resolved, request, service, policy),
            waiting: None,
        }
    }
}

/// Lets the request on (with the session or the outcome in its extensions) or rejects it. The
/// one place the session layer's requests are counted: every request, hit or miss, ends here.
fn decide<S, ReqBody, R>(
    Resolved {
        outcome,
        mut additions,
        seed,
        served,
    }: Resolved,
    mut request: Request<ReqBody>,
    service: &mut S,
    policy: &Arc<Policy<R>>,
) -> State<S::Future>
where
    S: Service<Request<ReqBody>>,
    R: RejectionResponse,
{
    policy.state.metrics.decided(&outcome, served);
    let goes_on = match &outcome {
        Outcome::Authenticated(_) => true,
        // Never let an unchecked request pass as anonymous: see Mode::Optional.
        Outcome::Unavailable(_) => false,
        Outcome::CrossOriginRequest => false,
        _ => policy.mode == Mode::Optional,
    };
    if goes_on {
        match outcome {
            Outcome::Authenticated(session) => {
                request.extensions_mut().insert(session);
                if let Some(additions) = &mut additions {
                    if let Some(extension) = &additions.extension {
                        request.extensions_mut().insert(extension.clone());
                    }
                    if let Some(stale) = additions.stale.take() {
                        request.extensions_mut().insert(stale);
                    }
                }
            }
            other => {
                // The extractors answer with this layer's rejection if a handler insists on a
                // session after all.
                #[cfg(feature = "axum")]
                {
                    use crate::rejection::{DynRejection, LayerRejection};
                    let rejection: Arc<dyn DynRejection> = policy.clone();
                    request.extensions_mut().insert(LayerRejection(rejection));
                }
                request.extensions_mut().insert(other);
            }
        }
        return State::Inner {
            future: service.call(request),
            additions,
            seed,
        };
    }
    let (parts, _body) = request.into_parts();
    State::Rejected {
        response: Some(policy.rejection.reject(outcome, &parts)),
    }
}

impl<S, ReqBody, R, ResBody> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponse,
    ResBody: http_body::Body,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Lookup { lookup } => {
                    let resolved = ready!(lookup.as_mut().poll(cx));
                    let Waiting {
                        request,
                        mut service,
                        policy,
                    } = this
                        .waiting
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let next = decide(resolved, request, &mut service, &policy);
                    this.state.set(next);
                }
                StateProj::Inner {
                    future,
                    additions,
                    seed,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(additions) = additions.take() {
                        let Additions {
                            set_cookies,
                            extension,
                            ..
                        } = *additions;
                        append_set_cookies(response.headers_mut(), set_cookies);
                        if let Some(extension) = extension {
                            response.extensions_mut().insert(extension);
                        }
                    }
                    let response = match seed.take() {
                        Some(seed) if !response.body().is_end_stream() => {
                            let (parts, body) = response.into_parts();
                            let body = ResponseBody::live(body, seed, &parts.headers);
                            Response::from_parts(parts, body)
                        }
                        _ => response.map(ResponseBody::inner),
                    };
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
            }
        }
    }
}

impl<S, ReqBody, R> fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Lookup { .. } => "lookup",
            State::Inner { .. } => "inner",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
