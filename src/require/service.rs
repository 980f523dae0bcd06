//! [`RequireService`]: the session the layer found, checked against the requirement; a
//! refusal Kratos could lift (a second factor, a recent sign-in) asks it again first.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use super::{
    future::{RequireFuture, Verdict},
    RequireLayer,
};
use crate::{
    credentials::find_credential,
    log_limit::WarnLimiter,
    outcome::{Insufficient, Outcome, Unmet},
    rejection::ResponseBody,
    rejection::{DefaultRejection, RejectionResponse},
    response::ErrorBody,
    session::KratosSession,
    state::Policy,
};

/// The service a [`RequireLayer`] wraps around yours: its readiness is the inner service's.
pub struct RequireService<S, R = DefaultRejection> {
    inner: S,
    layer: RequireLayer<R>,
}

wrapping_service!(RequireService, layer: RequireLayer<R>);

impl<S: fmt::Debug, R> fmt::Debug for RequireService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireService")
            .field("inner", &self.inner)
            .field("requirement", &self.layer.requirement)
            .finish()
    }
}

const MISSING_LAYER: &str = "tower-kratos: a Requirement's layer found no session information. \
     Apply the KratosLayer outside it: `.layer(kratos.require(..))` on the route, and \
     `.layer(kratos)` around the router.";

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RequireService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: RejectionResponse,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RequireFuture<S::Future, S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions();
        let refusal = match extensions.get::<KratosSession>() {
            Some(session) => self.layer.requirement.check(session).err(),
            // Optional mode let it on without a session; this route needs one.
            None => Some(extensions.get::<Outcome>().cloned().unwrap_or_else(|| {
                static MISSING: WarnLimiter = WarnLimiter::new();
                if let Some(left_out) = MISSING.admit(("require", "missing_layer")) {
                    tracing::error!(left_out_since_last = left_out, "{MISSING_LAYER}");
                }
                Outcome::Anonymous
            })),
        };
        let Some(outcome) = refusal else {
            return RequireFuture::inner(self.inner.call(request));
        };
        let layered =
            extensions.get::<Outcome>().is_some() || extensions.get::<KratosSession>().is_some();
        if !layered {
            // A wiring mistake: the server's, never the user's "signed out"; the answer says how
            // to fix it, as the extractors' does.
            let response = ErrorBody::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the session service is misconfigured",
            )
            .id("misconfigured")
            .reason(MISSING_LAYER)
            .response();
            return RequireFuture::refused(response);
        }
        if !meetable_at_kratos(&outcome) {
            let (parts, _body) = request.into_parts();
            return RequireFuture::refused(refusal_response(&self.layer.policy, outcome, &parts));
        }
        // The session may have met the requirement at Kratos since it was cached (the user
        // was sent to the flow and came back): the cache decides whether to ask again, and
        // this request goes on to the route if the newer answer meets it.
        let policy = Arc::clone(&self.layer.policy);
        let requirement = Arc::clone(&self.layer.requirement);
        let credential = find_credential(request.headers(), &policy.state.cookie_names)
            .ok()
            .flatten();
        let verdict: Verdict<R> = Box::pin(async move {
            let state = &policy.state;
            let newer = match &credential {
                Some(credential) => state.cache.recheck_refused(credential, &state.client).await,
                None => None,
            };
            match newer {
                Some(Outcome::Authenticated(session)) => match requirement.check(&session) {
                    Ok(()) => Ok(session),
                    Err(unmet) => Err((policy, unmet)),
                },
                Some(other) => Err((policy, other)),
                None => Err((policy, outcome)),
            }
        });
        // The ready service goes with the request; a clone stays for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        RequireFuture::rechecking(verdict, inner, request)
    }
}

/// Whether the session can meet what it lacks at Kratos without changing: a second factor or
/// a fresh sign-in in the same session (a token keeps its value through both).
fn meetable_at_kratos(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Insufficient(Insufficient {
            unmet: Unmet::SecondFactor | Unmet::RecentSignIn { .. },
            ..
        })
    )
}

/// The layer's rejection of `outcome`, with the outcome attached for whoever is outside.
pub(super) fn refusal_response<R: RejectionResponse>(
    policy: &Policy<R>,
    outcome: Outcome,
    parts: &http::request::Parts,
) -> Response<Bytes> {
    policy.state.metrics.route_refused(&outcome);
    let outcome = with_flow(policy, outcome);
    policy.rejection.reject(outcome, parts)
}

/// The outcome with Kratos's browser login flow that meets it, for a second factor or a recent
/// sign-in.
fn with_flow<R>(policy: &Policy<R>, outcome: Outcome) -> Outcome {
    let Outcome::Insufficient(Insufficient { unmet, .. }) = outcome else {
        return outcome;
    };
    let query = match unmet {
        Unmet::SecondFactor => Some(("aal", "aal2")),
        Unmet::RecentSignIn { .. } => Some(("refresh", "true")),
        _ => None,
    };
    let redirect_browser_to =
        query.map(|query| policy.state.client.login_flow_url(query).to_string());
    Outcome::Insufficient(Insufficient {
        unmet,
        redirect_browser_to,
    })
}
