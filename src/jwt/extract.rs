//! axum extractors for [`TokenizedSession`] (features `jwt` and `axum`): the verified token's
//! session, or `Option<TokenizedSession>` on an optional layer. Without [`JwtLayer`] in front,
//! a 500 naming the missing layer.
//!
//! [`JwtLayer`]: super::JwtLayer

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use super::token::TokenizedSession;
use crate::extract::{from_layer, not_authenticated, SessionRejection};

impl<S: Send + Sync> FromRequestParts<S> for TokenizedSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        from_layer::<TokenizedSession>(parts)?.ok_or_else(|| not_authenticated(parts))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for TokenizedSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        from_layer::<TokenizedSession>(parts)
    }
}
