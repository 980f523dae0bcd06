//! Tokenized sessions downstream (feature `jwt`): [`JwtLayer`] verifies the JWT Kratos issues for
//! `whoami?tokenize_as=<template>` with no Kratos call, for internal services behind the edge app
//! that forwards it (`Authorization: Bearer`).
//!
//! What it checks, in order: a compact JWS of at most [`MAX_TOKEN_LEN`](crate::defaults::MAX_TOKEN_LEN) bytes; an algorithm on
//! the allow-list ([`Algorithm`]: ES256 and ES512, which Kratos's docs recommend, RS256, RS512,
//! EdDSA; never `none` or HMAC, so a public key can never serve as an HMAC secret) that fits the
//! type and curve of the key its `kid` names; the signature (aws-lc-rs); `iss` equal to the
//! configured Kratos public URL; `exp`, `nbf` and `iat` with a small leeway; `aud` when one is
//! configured (and no `aud` when none is); `sid` and `sub` present; no member named twice in
//! the header or the claims. With a shared cache (feature `redis`), a token whose session or
//! identity was revoked through the crate on any replica is refused although it has not
//! expired.
//!
//! The checks are written here on purpose, on aws-lc-rs's signature verification (no
//! cryptography of this crate's own), rather than taken from a JWT crate: Kratos's tokens need
//! refusals those crates do not make (a member named twice, an `alg` that does not fit its key's
//! type and curve) and a key fetch after an unknown `kid` before any refusal.
//!
//! A verified token is cached (under a keyed hash) until its `exp`: a repeated token costs a
//! lookup, not a signature check. Handlers get a [`TokenizedSession`] in the request's
//! extensions (an axum extractor, and with `tonic` through
//! `tonic::KratosRequestExt::tokenized_session`).
//!
//! Refusals are [`Outcome`](crate::Outcome)s answered by the same rejection as the session
//! layer's: no token or a bad one is `Unauthenticated` (401, gRPC 16) with a
//! [`TokenRejected`](crate::outcome::TokenRejected) reason; keys that cannot be had are
//! `Unavailable` (503 with `Retry-After`, gRPC 14). A token naming a key the keys had lack is
//! refused only once a fetch made after it came has not found that key: until then it waits
//! for that fetch, or is answered 503, as it may be signed with a key Kratos has just rotated
//! in.

mod future;
mod json;
mod keys;
mod layer;
mod service;
mod source;
mod token;
mod verifier;

#[cfg(feature = "axum")]
mod extract;

pub use self::{
    future::JwtResponseFuture,
    keys::Algorithm,
    layer::{JwtLayer, JwtLayerBuilder},
    service::JwtService,
    token::TokenizedSession,
};
