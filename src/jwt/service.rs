//! [`JwtService`] and its response future: a token decided with the keys at hand is served (or
//! refused) at once; one that needs the key set fetched first waits in the future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    token::TokenizedSession,
    verifier::{Checked, SharedVerifier},
};
use crate::{
    config::Mode,
    outcome::{Outcome, TokenRejected, Unauthenticated, Unavailable},
    rejection::RejectionResponse,
    rejection::ResponseBody,
};

/// What one layer's services share.
pub(crate) struct JwtPolicy<R> {
    pub(crate) verifier: SharedVerifier,
    pub(crate) mode: Mode,
    pub(crate) rejection: crate::rejection::Rejecter<R>,
}

/// The service [`JwtLayer`](super::JwtLayer) wraps around yours. Readiness is the inner
/// service's; a request that must wait for the key set takes the service it polled ready into
/// its future and leaves a clone for the next call.
#[must_use]
pub struct JwtService<S, R> {
    inner: S,
    policy: Arc<JwtPolicy<R>>,
}

impl<S, R> JwtService<S, R> {
    pub(crate) fn new(inner: S, policy: Arc<JwtPolicy<R>>) -> Self {
        Self { inner, policy }
    }
}

inner_service_accessors!(JwtService);

impl<S: Clone, R> Clone for JwtService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for JwtService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtService")
            .field("inner", &self.inner)
            .field("mode", &self.policy.mode)
            .finish_non_exhaustive()
    }
}

/// The token of `Authorization: Bearer <token>`; `Err` for an `Authorization` header that is
/// there but is not one (never passed on as "no token").
fn bearer<B>(request: &Request<B>) -> Result<Option<&str>, TokenRejected> {
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenRejected::Malformed);
    }
    let text = value.to_str().map_err(|_| TokenRejected::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(TokenRejected::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(TokenRejected::Malformed);
    }
    Ok(Some(token))
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for JwtService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: RejectionResponse,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = JwtResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The token is read where it lies in the request; only a wait for keys copies it.
        let checked = match bearer(&request) {
            Ok(Some(token)) => match self.policy.verifier.check(token) {
                Checked::Decided(decided) => Ok(decided),
                Checked::NeedsKeys(seen) => Err((token.to_owned(), seen)),
            },
            Ok(None) => Ok(Err(Outcome::Anonymous)),
            Err(why) => Ok(Err(Outcome::Unauthenticated(Unauthenticated::Token(why)))),
        };
        match checked {
            Ok(decided) => self.decided(decided, request),
            Err((token, seen)) => {
                let verifier = Arc::clone(&self.policy.verifier);
                let keys =
                    Box::pin(async move { verifier.check_with_fresh_keys(&token, seen).await });
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                JwtResponseFuture {
                    state: State::Keys {
                        keys,
                        request: Some(request),
                        service: ready,
                        policy: Arc::clone(&self.policy),
                    },
                }
            }
        }
    }
}

impl<S, R> JwtService<S, R> {
    fn decided<ReqBody>(
        &mut self,
        decided: Result<TokenizedSession, Outcome>,
        request: Request<ReqBody>,
    ) -> JwtResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
        R: RejectionResponse,
    {
        JwtResponseFuture {
            state: decide(decided, request, &mut self.inner, &self.policy),
        }
    }
}

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
