//! [`KratosService`]: checks each request's credential, then calls the inner service or rejects.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use tracing::Instrument;

use crate::{
    authenticate::future::{Additions, Resolved, ResponseFuture},
    cache::{CacheKey, Lookup, Seed},
    client::Correlation,
    credentials::{Credential, CredentialCopy, CredentialSource, FoundCredential},
    log_limit::WarnLimiter,
    outcome::{Outcome, Unauthenticated},
    rejection::ResponseBody,
    rejection::{DefaultRejection, RejectionResponse},
    relay::relayable,
    state::{LayerState, Policy},
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

wrapping_service!(KratosService, policy: Arc<Policy<R>>);

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

    /// Finds the credential, then serves a cache hit at once, or hands the miss to
    /// `resolve` and the response future.
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let state = &self.policy.state;
        let found = match FoundCredential::find(request.headers(), &state.cookie_names) {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::trace!(outcome = "anonymous", "no Kratos credential in the request");
                return self.decided(Outcome::Anonymous, None, request);
            }
            Err(malformed) => {
                tracing::debug!(
                    outcome = "unauthenticated",
                    reason = %malformed,
                    "credential refused without asking Kratos"
                );
                let outcome = Outcome::Unauthenticated(Unauthenticated::Malformed(malformed));
                return self.decided(outcome, None, request);
            }
        };
        if state.cross_origin.refuses(found.source(), &request) {
            return self.decided(Outcome::CrossOriginRequest, None, request);
        }
        // The hot path: a fresh cache entry, found without copying the credential out of the
        // request, boxing a future or opening a span.
        let key = state.cache.key_for_found(&found);
        if let Some(outcome) = state.cache.hit_now(&key) {
            if !state.extender.is_due_for_layer(&outcome) {
                log_hit(found.source(), &outcome);
                // The one place a hit pays for watching connections: two reference counts.
                let seed = match &outcome {
                    Outcome::Authenticated(session) if state.watch_connections => {
                        Some(Seed::new(&state.cache, session.clone(), found.copy()))
                    }
                    _ => None,
                };
                return self.decided(outcome, seed, request);
            }
        }
        let credential = found.into_credential();
        let correlation = Correlation::of(request.headers());
        let lookup = Box::pin(resolve(Arc::clone(state), key, credential, correlation));
        // The inner service is called only when the lookup is done: the one polled ready goes
        // with the future, and a clone stays for the next call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::lookup(lookup, request, ready, Arc::clone(&self.policy))
    }
}

impl<S, R> KratosService<S, R> {
    /// The outcome is known without waiting: the inner service, polled ready, is called now.
    /// Inlined: the request is moved once, into the future, not through a call.
    #[inline(always)]
    fn decided<ReqBody>(
        &mut self,
        outcome: Outcome,
        seed: Option<Seed>,
        request: Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
        R: RejectionResponse,
    {
        ResponseFuture::decided(outcome, seed, request, &mut self.inner, &self.policy)
    }
}

/// The miss path: the cache's lookup (Kratos, when the entry is missing or outdated), then, for
/// a session due for extension, the layer's extension. Runs as the response future's boxed
/// lookup; only misses pay for it.
async fn resolve(
    state: Arc<LayerState>,
    key: CacheKey,
    credential: Credential,
    correlation: Correlation,
) -> Resolved {
    let span = tracing::debug_span!(
        "kratos_session",
        source = credential.source().as_str(),
        cache = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let lookup = state
        .cache
        .lookup_keyed(key, &credential, &correlation, &state.client)
        .instrument(span.clone())
        .await;
    span.record("cache", lookup.status.as_str());
    let served = lookup.status.served_from();
    span.record("outcome", lookup.outcome.kind());
    log_outcome(&span, &lookup, &state.warnings);
    let mut additions = Additions {
        stale: lookup.stale,
        ..Additions::default()
    };
    if state.relay_set_cookie {
        // A session extended elsewhere gets its cookie re-issued on whoami too.
        additions.set_cookies = relayable(&credential, lookup.set_cookies, &state.cookie_names);
    }
    let outcome = match lookup.outcome {
        outcome if state.extender.is_due_for_layer(&outcome) => {
            // Boxed: only due requests pay for the extension's state, and the lookup future
            // every miss allocates stays as small as before.
            Box::pin(extend(&state, &credential, outcome, &mut additions).instrument(span)).await
        }
        outcome => outcome,
    };
    let seed = match &outcome {
        Outcome::Authenticated(session) if state.watch_connections => Some(Seed::new(
            &state.cache,
            session.clone(),
            CredentialCopy::from(credential),
        )),
        _ => None,
    };
    Resolved {
        outcome,
        additions: additions.into_boxed(),
        seed,
        served,
    }
}

/// The layer's extension of a due session: the shared attempt, its report and its cookie for
/// the additions, and the refreshed session for the request.
async fn extend(
    state: &LayerState,
    credential: &Credential,
    outcome: Outcome,
    additions: &mut Additions,
) -> Outcome {
    let Outcome::Authenticated(session) = outcome else {
        return outcome;
    };
    let attempt = state
        .extender
        .for_request(&state.client, &state.cache, credential, &session)
        .await;
    if state.relay_set_cookie {
        let set_cookies = relayable(credential, attempt.set_cookies.clone(), &state.cookie_names);
        if !set_cookies.is_empty() {
            additions.set_cookies = set_cookies;
        }
    }
    additions.extension = Some(attempt.report.clone());
    match attempt.session.clone() {
        // Confirmed by Kratos just now: watched through this cache like a stored one.
        Some(extended) => Outcome::Authenticated(state.cache.adopt(extended)),
        None => Outcome::Authenticated(session),
    }
}

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
fn log_outcome(span: &tracing::Span, lookup: &Lookup, warnings: &WarnLimiter) {
    let (outcome, cache) = (&lookup.outcome, lookup.status.as_str());
    match (outcome, &lookup.stale) {
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
