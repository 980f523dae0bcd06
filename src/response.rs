//! What every refusal of this crate knows about itself ([`Refusal`]), and the one JSON error body
//! they all answer with by default (the layer's rejections, the lifecycle errors, the extractors'
//! refusals): Kratos's own envelope, so a client that reads Kratos's errors reads ours. And the
//! `Retry-After` every 503 carries.

use std::{borrow::Cow, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

/// What every refusal of this crate (an [`Outcome`](crate::Outcome) that is not a session, a
/// [`LifecycleError`](crate::lifecycle::LifecycleError), an extractor's `SessionRejection`)
/// knows about itself: enough to answer it in one shape of your own.
///
/// Build your error body from it once, and use that for the layer's rejection
/// ([`rejection_fn`](crate::authenticate::KratosLayerBuilder::rejection_fn)) and for the errors your handlers
/// return, and every refusal of your app looks alike:
///
/// ```
/// use tower_kratos::{bytes::Bytes, http::Response, rejection::Refusal};
///
/// fn problem(refusal: &dyn Refusal) -> Response<Bytes> {
///     let body = format!(r#"{{"problem":"{}","detail":"{}"}}"#, refusal.kind(), refusal.reason());
///     let mut response = Response::new(Bytes::from(body));
///     *response.status_mut() = refusal.status();
///     if let Some(wait) = refusal.retry_after() {
///         response.headers_mut().insert("retry-after", wait.as_secs().max(1).into());
///     }
///     response
/// }
///
/// # fn main() -> Result<(), tower_kratos::BuildError> {
/// let layer = tower_kratos::KratosLayer::builder("http://127.0.0.1:4433")
///     .rejection_fn(|outcome, _request| problem(outcome))
///     .build()?;
/// // In a handler: `sessions.revoke_session(&headers, &id).await.map_err(|error| problem(&error))`
/// # let _ = layer;
/// let down = tower_kratos::lifecycle::LifecycleError::Unavailable(
///     tower_kratos::outcome::Unavailable::Timeout,
/// );
/// assert_eq!(problem(&down).status(), 503);
/// assert_eq!(problem(&down).headers()["retry-after"], "5");
/// # Ok(()) }
/// ```
pub trait Refusal {
    /// The status to answer with.
    fn status(&self) -> StatusCode;

    /// A short, stable name, safe to show a client (`anonymous`, `unavailable`,
    /// `current_session`, ...; `misconfigured` for whatever is the server's to fix).
    fn kind(&self) -> &'static str;

    /// What happened, in a sentence safe to show a client: never a credential, and nothing of
    /// the server's configuration.
    fn reason(&self) -> Cow<'_, str>;

    /// For a 503, how long a client should wait: the delay Kratos or the back-off named, else
    /// [`DEFAULT_RETRY_AFTER`](crate::defaults::DEFAULT_RETRY_AFTER). `None` for every other refusal.
    fn retry_after(&self) -> Option<Duration>;

    /// Where a browser completes what is missing (Kratos's step-up page), when Kratos said.
    fn redirect_browser_to(&self) -> Option<&str> {
        None
    }
}

/// herodot's `message` for a status: the short, generic half of Kratos's envelope.
fn message_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "The request was malformed or contained invalid parameters",
        StatusCode::UNAUTHORIZED => "The request could not be authorized",
        StatusCode::FORBIDDEN => "The requested action was forbidden",
        StatusCode::NOT_FOUND => "The requested resource could not be found",
        StatusCode::SERVICE_UNAVAILABLE => "The session could not be checked",
        _ => "An internal server error occurred, please contact the system administrator",
    }
}

/// Kratos's (herodot's) error envelope:
/// `{"error": {"id"?, "code", "status", "reason"?, "details"?, "message"}, "redirect_browser_to"?}`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorBody<'a> {
    status: StatusCode,
    message: &'a str,
    id: Option<&'a str>,
    reason: Option<&'a str>,
    redirect_browser_to: Option<&'a str>,
}

impl<'a> ErrorBody<'a> {
    /// An error with this status and Kratos's short `message`.
    pub(crate) fn new(status: StatusCode, message: &'a str) -> Self {
        Self {
            status,
            message,
            id: None,
            reason: None,
            redirect_browser_to: None,
        }
    }

    /// A stable error id (`session_aal2_required`, a lifecycle error's kind).
    pub(crate) fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// The longer explanation.
    pub(crate) fn reason(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Where a browser completes what is missing, in `error.details` and at the top level, as
    /// Kratos sends it.
    pub(crate) fn redirect_browser_to(mut self, url: Option<&'a str>) -> Self {
        self.redirect_browser_to = url;
        self
    }

    /// The body for a refusal: its kind as the id (Kratos's own `session_aal2_required` for a
    /// step-up, which clients already look for), its reason, its step-up page.
    pub(crate) fn of(refusal: &'a dyn Refusal, reason: &'a str) -> Self {
        let id = match refusal.kind() {
            "aal_required" => "session_aal2_required",
            kind => kind,
        };
        Self::new(refusal.status(), message_for(refusal.status()))
            .id(id)
            .reason(reason)
            .redirect_browser_to(refusal.redirect_browser_to())
    }

    fn to_json(self) -> Value {
        let mut error = json!({
            "code": self.status.as_u16(),
            "status": self.status.canonical_reason().unwrap_or(""),
            "message": self.message,
        });
        if let Some(id) = self.id {
            error["id"] = json!(id);
        }
        if let Some(reason) = self.reason {
            error["reason"] = json!(reason);
        }
        let mut body = json!({ "error": error });
        if let Some(url) = self.redirect_browser_to {
            body["error"]["details"] = json!({ "redirect_browser_to": url });
            body["redirect_browser_to"] = json!(url);
        }
        body
    }

    /// The response: this body as JSON, never stored by a cache.
    pub(crate) fn response(self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from(self.to_json().to_string()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        no_store(&mut response);
        response
    }
}

/// The default response for a refusal: [`ErrorBody::of`], with `Retry-After` on a 503.
pub(crate) fn refusal_response(refusal: &dyn Refusal) -> Response<Bytes> {
    let reason = refusal.reason();
    let mut response = ErrorBody::of(refusal, &reason).response();
    if let Some(wait) = refusal.retry_after() {
        set_retry_after(&mut response, wait);
    }
    response
}

/// Keeps every cache, the browser's included, from storing an answer about a session.
pub(crate) fn no_store<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Sets `Retry-After` in whole seconds, rounded up and at least 1: "0" would invite an immediate
/// retry storm.
pub(crate) fn set_retry_after<B>(response: &mut Response<B>, wait: Duration) {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_kratoss() {
        let response = ErrorBody::new(StatusCode::FORBIDDEN, "m")
            .id("session_aal2_required")
            .reason("r")
            .redirect_browser_to(Some("https://k/step-up"))
            .response();
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "error": {
                    "id": "session_aal2_required",
                    "code": 403,
                    "status": "Forbidden",
                    "reason": "r",
                    "details": {"redirect_browser_to": "https://k/step-up"},
                    "message": "m",
                },
                "redirect_browser_to": "https://k/step-up",
            })
        );
        let plain = ErrorBody::new(StatusCode::UNAUTHORIZED, "m").response();
        let body: Value = serde_json::from_slice(plain.body()).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": 401, "status": "Unauthorized", "message": "m"}})
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        for (wait, expected) in [
            (Duration::ZERO, "1"),
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(1001), "2"),
            (Duration::from_secs(7), "7"),
        ] {
            let mut response = Response::new(());
            set_retry_after(&mut response, wait);
            assert_eq!(
                response.headers()[header::RETRY_AFTER],
                expected,
                "{wait:?}"
            );
        }
    }
}
