//! [`JwtResponseFuture`]: a token decided with the keys at hand is served (or refused) at
//! once; one that needs the key set fetched first waits here.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{service::JwtPolicy, token::TokenizedSession};
use crate::{
    config::Mode,
    outcome::{Outcome, Unavailable},
    rejection::RejectionResponse,
    rejection::ResponseBody,
};

type KeysFuture = Pin<Box<dyn Future<Output = Result<TokenizedSession, Outcome>> + Send>>;

pin_project! {
    /// The response future of [`JwtService`].
    pub struct JwtResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        Keys {
            keys: KeysFuture,
            request: Option<Request<ReqBody>>,
            service: S,
            policy: Arc<JwtPolicy<R>>,
        },
        Inner { #[pin] future: S::Future },
        Refused { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody, R> JwtResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    /// Waits for the key set fetched for this token, then decides.
    pub(super) fn keys(
        keys: KeysFuture,
        request: Request<ReqBody>,
        service: S,
        policy: Arc<JwtPolicy<R>>,
    ) -> Self {
        Self {
            state: State::Keys {
                keys,
                request: Some(request),
                service,
                policy,
            },
        }
    }

    /// Decided with the keys at hand: the inner service's future, or the refusal.
    pub(super) fn decided(
        decided: Result<TokenizedSession, Outcome>,
        request: Request<ReqBody>,
        service: &mut S,
        policy: &Arc<JwtPolicy<R>>,
    ) -> Self
    where
        R: RejectionResponse,
    {
        Self {
            state: decide(decided, request, service, policy),
        }
    }
}

/// Lets the request on (with the token's session, or in optional mode the outcome, in its
/// extensions) or refuses it.
fn decide<S, ReqBody, R>(
    decided: Result<TokenizedSession, Outcome>,
    mut request: Request<ReqBody>,
    service: &mut S,
    policy: &JwtPolicy<R>,
) -> State<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
    R: RejectionResponse,
{
    match decided {
        Ok(session) => {
            request.extensions_mut().insert(session);
        }
        // Never let an unchecked request pass as anonymous.
        Err(outcome @ (Outcome::Anonymous | Outcome::Unauthenticated(_)))
            if policy.mode == Mode::Optional =>
        {
            request.extensions_mut().insert(outcome);
        }
        Err(outcome) => {
            if matches!(
                outcome,
                Outcome::Unavailable(Unavailable::SigningKeys { .. })
            ) {
                crate::metrics::jwt_token("unavailable", "none");
                policy.verifier.log_unavailable();
            }
            let (parts, _) = request.into_parts();
            return State::Refused {
                response: Some(policy.rejection.reject(outcome, &parts)),
            };
        }
    }
    State::Inner {
        future: service.call(request),
    }
}

impl<S, ReqBody, R, ResBody> Future for JwtResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponse,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Keys {
                    keys,
                    request,
                    service,
                    policy,
                } => {
                    let decided = ready!(keys.as_mut().poll(cx));
                    let request = request
                        .take()
                        .expect("JwtResponseFuture polled after completion");
                    decide(decided, request, service, policy)
                }
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Refused { response } => {
                    let response = response.take().unwrap_or_default();
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
            };
            state.set(next);
        }
    }
}
