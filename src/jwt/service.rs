//! [`JwtService`]: the bearer token checked with the keys at hand, or handed to its response
//! future to wait for a key set fetch.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Request, Response};
use tower_service::Service;

use super::{
    future::JwtResponseFuture,
    token::TokenizedSession,
    verifier::{Checked, SharedVerifier},
};
use crate::{
    config::Mode,
    outcome::{Outcome, TokenRejected, Unauthenticated},
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

wrapping_service!(JwtService, policy: Arc<JwtPolicy<R>>);

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
            Ok(None) => {
                crate::metrics::jwt_token("anonymous", "none");
                Ok(Err(Outcome::Anonymous))
            }
            Err(why) => {
                crate::metrics::jwt_token("refused", why.kind());
                Ok(Err(Outcome::Unauthenticated(Unauthenticated::Token(why))))
            }
        };
        match checked {
            Ok(decided) => self.decided(decided, request),
            Err((token, seen)) => {
                let verifier = Arc::clone(&self.policy.verifier);
                let keys =
                    Box::pin(async move { verifier.check_with_fresh_keys(&token, seen).await });
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                JwtResponseFuture::keys(keys, request, ready, Arc::clone(&self.policy))
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
        JwtResponseFuture::decided(decided, request, &mut self.inner, &self.policy)
    }
}
