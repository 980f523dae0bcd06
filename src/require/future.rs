//! [`RequireFuture`]: the inner service's response, a refusal, or a recheck with Kratos in
//! progress.

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
use tower_service::Service;

use super::service::refusal_response;
use crate::{
    outcome::Outcome,
    rejection::ResponseBody,
    rejection::{DefaultRejection, RejectionResponse},
    response::ErrorBody,
    session::KratosSession,
    state::Policy,
};

/// What a recheck decided: the newer session that meets the requirement, or the refusal to
/// answer with (the policy travels with it, to render it).
pub(super) type Verdict<R> =
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
    pub(super) fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    /// Waits for the recheck's verdict, holding the ready inner service and the request.
    pub(super) fn rechecking(verdict: Verdict<R>, inner: S, request: Request<B>) -> Self {
        Self {
            state: State::Rechecking {
                verdict,
                pending: Some((inner, request)),
            },
        }
    }

    pub(super) fn refused(response: Response<Bytes>) -> Self {
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
