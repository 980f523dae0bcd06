//! A receiver for Kratos's web hook: revocations Kratos makes itself reach the cache, on every
//! replica, within a second.
//!
//! Kratos's `revoke_active_sessions` hook (after a password or second-factor change, a
//! recovery, a login) disables an identity's other sessions in its database and tells nobody.
//! A `web_hook` listed after it in the same hook list is called once the revocation is
//! committed; pointed at a [`RevocationHook`], it makes every cached session of that identity,
//! here and on every replica sharing the Redis, ask Kratos again before it is served: a disabled
//! one is refused, the session that stays passes again.
//!
//! ```
//! use axum::Router;
//! use tower_kratos::KratosLayer;
//!
//! # fn main() -> Result<(), tower_kratos::BuildError> {
//! let kratos = KratosLayer::builder("http://127.0.0.1:4433").build()?;
//! // At least 32 bytes, from your secret store; Kratos's `api_key` auth sends it.
//! let key = "a key of at least thirty-two bytes, from a secret store";
//! let app: Router = Router::new()
//!     .route_service("/hooks/kratos/sessions-revoked", kratos.revocation_hook(key)?);
//! # Ok(()) }
//! ```
//!
//! The request Kratos sends: `POST` with the key in the [`KEY_HEADER`] header and the body
//! `{"identity_id": "<uuid>", "keep_session_id": "<uuid>"}` (`keep_session_id` left out, or
//! `null`, when no session stays: recovery, login). The guide's
//! [revocations](crate::guide::revocations) chapter has Kratos's configuration and the Jsonnet
//! templates that produce it.
//!
//! | answer | when |
//! |---|---|
//! | 204 | done: this replica's cache follows, and the revocation is published (or queued for Redis) |
//! | 401 | no key, or not the key: nothing changes, and the body is not read |
//! | 405 (`Allow: POST`) | any other method |
//! | 413 | a body over [`MAX_HOOK_BODY_LEN`] (4 KiB) |
//! | 400 | a body that is not what the template produces (unknown members included) |
//!
//! A Redis fault never makes the answer a 5xx (Kratos would retry it): the revocation is
//! honoured here at once, retried towards Redis in the background, and logged. A repeated
//! delivery (a retry, the same `Ory-Webhook-Trigger-ID`) marks the identity again, which is
//! harmless: its sessions are asked about once more.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use tower_service::Service;

use crate::{
    cache::Revoked,
    client::canonical_id,
    config::BuildError,
    defaults::{MAX_HOOK_BODY_LEN, MIN_HOOK_KEY_LEN},
    response::ErrorBody,
    state::LayerState,
};

/// The header Kratos's `api_key` auth sends the key in (`in: header`, `name: X-Kratos-Hook-Key`).
pub const KEY_HEADER: &str = "x-kratos-hook-key";

/// A tower service that receives Kratos's web hook after `revoke_active_sessions`, made by
/// [`KratosLayer::revocation_hook`](crate::KratosLayer::revocation_hook). See the
/// [module](self).
#[derive(Clone)]
pub struct RevocationHook {
    state: Arc<LayerState>,
    /// The key's BLAKE3 hash: compared in constant time (`blake3::Hash`'s equality), and
    /// whatever its length, with no copy of the key kept.
    key: blake3::Hash,
}

impl fmt::Debug for RevocationHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationHook").finish_non_exhaustive()
    }
}

impl RevocationHook {
    pub(crate) fn new(state: Arc<LayerState>, key: &[u8]) -> Result<Self, BuildError> {
        if key.len() < MIN_HOOK_KEY_LEN {
            return Err(BuildError::setting(
                "revocation_hook",
                format!(
                    "the key must be at least {MIN_HOOK_KEY_LEN} bytes (it has {}): make one \
                     with `openssl rand -base64 32`",
                    key.len()
                ),
            ));
        }
        Ok(Self {
            state,
            key: blake3::hash(key),
        })
    }

    /// Whether the request carries the key: one `X-Kratos-Hook-Key` header, equal to it.
    fn authorized<B>(&self, request: &Request<B>) -> bool {
        let mut values = request.headers().get_all(KEY_HEADER).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => blake3::hash(value.as_bytes()) == self.key,
            _ => false,
        }
    }
}

/// What the template produces.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivery {
    identity_id: String,
    #[serde(default)]
    keep_session_id: Option<String>,
}

impl<B> Service<Request<B>> for RevocationHook
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.method() != Method::POST {
            let mut response = refusal(StatusCode::METHOD_NOT_ALLOWED, "Only POST is accepted.");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return Box::pin(async move { Ok(response) });
        }
        // Checked before the body is read: a caller without the key costs a hash.
        if !self.authorized(&request) {
            let response = refusal(
                StatusCode::UNAUTHORIZED,
                "The hook key is missing or wrong.",
            );
            return Box::pin(async move { Ok(response) });
        }
        let hook = self.clone();
        Box::pin(async move { Ok(hook.receive(request).await) })
    }
}

impl RevocationHook {
    /// Reads the delivery and marks the identity: this replica at once, the others through the
    /// shared cache (queued and retried if Redis does not take it now).
    async fn receive<B>(self, request: Request<B>) -> Response<String>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let trigger = trigger_id(&request);
        let body = match Limited::new(request.into_body(), MAX_HOOK_BODY_LEN)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return refusal(StatusCode::PAYLOAD_TOO_LARGE, "The body is too large.");
            }
            Err(_) => return refusal(StatusCode::BAD_REQUEST, "The body could not be read."),
        };
        let Some((identity_id, keep)) = parse(&body) else {
            return refusal(
                StatusCode::BAD_REQUEST,
                "The body must be {\"identity_id\": \"<uuid>\", \"keep_session_id\": \"<uuid>\"} \
                 (keep_session_id optional).",
            );
        };
        self.state
            .cache
            .revoked(Revoked::Identity(&identity_id))
            .await;
        tracing::info!(
            identity_id,
            keep_session_id = keep.as_deref(),
            trigger = trigger.as_deref(),
            "Kratos revoked an identity's sessions (web hook): its cached sessions are checked again"
        );
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }
}

/// The identity id and the kept session id, canonical; `None` for anything else.
fn parse(body: &Bytes) -> Option<(String, Option<String>)> {
    let delivery: Delivery = serde_json::from_slice(body).ok()?;
    let identity_id = canonical_id(&delivery.identity_id).ok()?;
    let keep = match delivery.keep_session_id {
        Some(id) => Some(canonical_id(&id).ok()?),
        None => None,
    };
    Some((identity_id, keep))
}

/// Kratos's `Ory-Webhook-Trigger-ID` (the same across retries), for the log, when it is a
/// short visible-ASCII token.
fn trigger_id<B>(request: &Request<B>) -> Option<String> {
    let value = request
        .headers()
        .get("ory-webhook-trigger-id")?
        .to_str()
        .ok()?;
    let plain = value.len() <= 64
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
    plain.then(|| value.to_owned())
}

/// The crate's JSON error envelope, with this status and reason.
fn refusal(status: StatusCode, reason: &str) -> Response<String> {
    let response = ErrorBody::new(status, reason).response();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, String::from_utf8_lossy(&body).into_owned())
}
