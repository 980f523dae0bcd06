//! [`KratosService`]: checks each request's credential, then calls the inner service or rejects.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use tower_service::Service;

use crate::{
    credentials::{CredentialSource, FoundCredential},
    future::{Relay, Resolved, ResponseBody, ResponseFuture},
    layer::Policy,
    lifecycle::{extend_for_request, is_due, relayable},
    log_limit::WarnLimiter,
    outcome::{Outcome, StaleSession, Unauthenticated},
    rejection::{DefaultRejection, RejectionResponse},
};

/// The service [`KratosLayer`](crate::KratosLayer) wraps around yours.
///
/// Readiness is the inner service's: `poll_ready` is forwarded. When `call` can decide at once (a
/// cache hit, no credential, a malformed one) it calls the inner service it polled ready right
/// away; when it must wait for Kratos it hands that service to the response future and keeps a
/// fresh clone for the next call, as tower-service's docs advise under "Be careful when cloning
/// inner services".
#[must_use]
pub struct KratosService<S, R = DefaultRejection> {
    inner: S,
    policy: Arc<Policy<R>>,
}

impl<S, R> KratosService<S, R> {
    pub(crate) fn new(inner: S, policy: Arc<Policy<R>>) -> Self {
        Self { inner, policy }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, R> Clone for KratosService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for KratosService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KratosService")
            .field("inner", &self.inner)
            .field("mode", &self.policy.mode)
            .finish_non_exhaustive()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for KratosService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: RejectionResponse,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.policy.shared;
        match FoundCredential::find(request.headers(), &shared.cookie_names) {
            Ok(Some(found)) => {
                // The hot path: a fresh cache entry, found without copying the credential out of
                // the request, boxing a future or opening a span.
                let key = shared.cache.key_for_found(&found);
                if let Some(outcome) = shared.cache.hit_now(&key) {
                    let due = match (&outcome, shared.lifecycle.extend_within) {
                        (Outcome::Authenticated(session), Some(within)) => is_due(session, within),
                        _ => false,
                    };
                    if !due {
                        log_hit(found.source(), &outcome);
                        return ResponseFuture::decided(
                            outcome,
                            request,
                            &mut self.inner,
                            &self.policy,
                        );
                    }
                }
                let credential = found.into_credential();
                // The inner service is called only when the lookup is done: the one polled ready
                // goes with the future, and a clone stays for the next call.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let request_id = request.headers().get(&REQUEST_ID).cloned();
                let policy = Arc::clone(&self.policy);
                let lookup_policy = Arc::clone(&policy);
                let lookup = Box::pin(async move {
                    let span = tracing::debug_span!(
                        "kratos_session",
                        source = credential.source().as_str(),
                        cache = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                    );
                    let shared = &lookup_policy.shared;
                    let lookup = tracing::Instrument::instrument(
                        shared.cache.lookup_keyed(
                            key,
                            &credential,
                            request_id.as_ref(),
                            &shared.client,
                        ),
                        span.clone(),
                    )
                    .await;
                    let (outcome, status) = (lookup.outcome, lookup.status);
                    span.record("cache", status.as_str());
                    span.record("outcome", outcome.kind());
                    log_outcome(
                        &span,
                        &outcome,
                        status.as_str(),
                        lookup.stale.as_ref(),
                        &shared.warnings,
                    );
                    let lifecycle = &shared.lifecycle;
                    let mut relay = Relay {
                        stale: lookup.stale,
                        ..Relay::default()
                    };
                    if lifecycle.relay_set_cookie {
                        // A session extended elsewhere gets its cookie re-issued on whoami too.
                        relay.set_cookies =
                            relayable(&credential, lookup.set_cookies, &shared.cookie_names);
                    }
                    let outcome = match (lifecycle.extend_within, outcome) {
                        (Some(within), Outcome::Authenticated(session))
                            if is_due(&session, within) =>
                        {
                            // Boxed: only due requests pay for the extension's state, and the
                            // lookup future every request allocates stays as small as before.
                            let extension = Box::pin(tracing::Instrument::instrument(
                                extend_for_request(shared, &credential, &session),
                                span,
                            ))
                            .await;
                            if lifecycle.relay_set_cookie && !extension.set_cookies.is_empty() {
                                relay.set_cookies = extension.set_cookies;
                            }
                            relay.extension = Some(extension.report);
                            Outcome::Authenticated(extension.session.unwrap_or(session))
                        }
                        (_, outcome) => outcome,
                    };
                    let relay = (!relay.set_cookies.is_empty()
                        || relay.extension.is_some()
                        || relay.stale.is_some())
                    .then(|| Box::new(relay));
                    Resolved { outcome, relay }
                });
                ResponseFuture::lookup(lookup, request, ready, policy)
            }
            Ok(None) => {
                tracing::trace!(outcome = "anonymous", "no Kratos credential in the request");
                ResponseFuture::decided(Outcome::Anonymous, request, &mut self.inner, &self.policy)
            }
            Err(malformed) => {
                tracing::debug!(
                    outcome = "unauthenticated",
                    reason = %malformed,
                    "credential refused without asking Kratos"
                );
                let outcome = Outcome::Unauthenticated(Unauthenticated::Malformed(malformed));
                ResponseFuture::decided(outcome, request, &mut self.inner, &self.policy)
            }
        }
    }
}

/// The header whose value is passed on to Kratos, to follow one request through both logs.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A cache hit's log line: an event, not a span, since a hit does no work worth timing.
fn log_hit(source: CredentialSource, outcome: &Outcome) {
    match outcome {
        Outcome::Authenticated(session) => tracing::debug!(
            source = source.as_str(),
            cache = "hit",
            outcome = outcome.kind(),
            identity_id = session.identity_id().unwrap_or(""),
            "session accepted"
        ),
        other => tracing::debug!(
            source = source.as_str(),
            cache = "hit",
            outcome = other.kind(),
            reason = %other,
            "session refused"
        ),
    }
}

/// A lookup's log line. Warnings (outages, stale sessions) go through the layer's
/// [`WarnLimiter`]: during an outage or an attack every request would write one.
fn log_outcome(
    span: &tracing::Span,
    outcome: &Outcome,
    cache: &str,
    stale: Option<&StaleSession>,
    warnings: &WarnLimiter,
) {
    match (outcome, stale) {
        (Outcome::Unavailable(reason), _) => {
            if let Some(left_out) = warnings.admit(("unavailable", reason.kind())) {
                tracing::warn!(
                    parent: span,
                    outcome = outcome.kind(),
                    cache,
                    reason = %reason,
                    left_out_since_last = left_out,
                    "Kratos unavailable; answering 503"
                );
            }
        }
        (Outcome::Authenticated(session), Some(stale)) => {
            if let Some(left_out) = warnings.admit(("stale", stale.cause.kind())) {
                tracing::warn!(
                    parent: span,
                    outcome = outcome.kind(),
                    cache,
                    identity_id = session.identity_id().unwrap_or(""),
                    age_ms = stale.age.as_millis() as u64,
                    stale_for_ms = stale.stale_for.as_millis() as u64,
                    reason = %stale.cause,
                    left_out_since_last = left_out,
                    "Kratos unavailable; serving a session it has not confirmed lately \
                     (stale-if-error)"
                );
            }
        }
        (Outcome::Authenticated(session), None) => tracing::debug!(
            parent: span,
            outcome = outcome.kind(),
            cache,
            identity_id = session.identity_id().unwrap_or(""),
            "session accepted"
        ),
        (other, _) => {
            tracing::debug!(parent: span, outcome = other.kind(), cache, reason = %other, "session refused")
        }
    }
}
