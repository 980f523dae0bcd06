//! One request to Kratos and its complete, bounded answer, within a deadline; and what an answer
//! outside an endpoint's contract means.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use reqwest::Url;

use serde::Deserialize;
use tracing::Instrument;

use super::{Admission, LifecycleError};
use crate::outcome::{AalRequired, Unavailable};

/// The largest answer body read from Kratos for one session (whoami, extend). A whoami body is a
/// few KiB; identities with large traits stay far below this.
pub(super) const MAX_BODY_LEN: usize = 1024 * 1024;

/// The largest session-list answer read from Kratos: a full page (500 sessions with their
/// identities and devices) stays well below it.
pub(super) const MAX_LIST_BODY_LEN: usize = 16 * 1024 * 1024;

/// The longest `Retry-After` taken from Kratos; a larger value is clamped so a bogus header
/// cannot tell clients to go away for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A complete answer, body read.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

/// Sends the request and reads at most `limit` bytes of the answer, all within `deadline`, in
/// a span named and fielded as OpenTelemetry's HTTP client conventions say (`otel.kind`
/// client, `http.request.method`, `server.address`, `server.port`, `url.template`,
/// `http.response.status_code`, `error.type`), so an OpenTelemetry subscriber exports it as a
/// client span. The path is a template: ids in it (`/admin/sessions/{id}`) are not recorded.
pub(super) async fn exchange(
    request: reqwest::RequestBuilder,
    deadline: Duration,
    limit: usize,
) -> Result<Answer, Unavailable> {
    let (client, request) = request.build_split();
    // A request that cannot be built cannot be sent either: as a failed send would say.
    let request = request.map_err(|error| classify(&error))?;
    let span = call_span(&request);
    let result = send(client, request, deadline, limit)
        .instrument(span.clone())
        .await;
    match &result {
        Ok(answer) => {
            span.record("http.response.status_code", answer.status.as_u16());
            if answer.status.is_server_error() {
                span.record("error.type", answer.status.as_str());
            }
        }
        Err(cause) => {
            span.record("error.type", cause.kind());
        }
    }
    result
}

/// The span of one call to Kratos.
fn call_span(request: &reqwest::Request) -> tracing::Span {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return tracing::Span::none();
    }
    let url = request.url();
    let template = url_template(url.path());
    tracing::debug_span!(
        "kratos_call",
        otel.name = format!("{} {template}", request.method()),
        otel.kind = "client",
        http.request.method = request.method().as_str(),
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default(),
        url.template = template,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// The path with every id segment (a UUID: a session's, an identity's) as `{id}`.
fn url_template(path: &str) -> String {
    path.split('/')
        .map(|segment| if uuid_like(segment) { "{id}" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a path segment is an id: 36 characters, hex digits and dashes.
fn uuid_like(segment: &str) -> bool {
    segment.len() == 36
        && segment
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() || byte == b'-')
}

async fn send(
    client: reqwest::Client,
    request: reqwest::Request,
    deadline: Duration,
    limit: usize,
) -> Result<Answer, Unavailable> {
    let call = async {
        let mut response = client
            .execute(request)
            .await
            .map_err(|error| classify(&error))?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(Unavailable::InvalidBody);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| classify(&error))? {
            if body.len() + chunk.len() > limit {
                return Err(Unavailable::InvalidBody);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or(Err(Unavailable::Timeout))
}

/// [`exchange`] behind an admission: held back while it backs off or while its cap of calls in
/// flight is full (the caller gets the [`Unavailable`] that says so, and Kratos nothing), and
/// its answer taken into account, as whoami's are.
pub(super) async fn admitted_exchange(
    admission: &Admission,
    request: reqwest::RequestBuilder,
    deadline: Duration,
    limit: usize,
) -> Result<Answer, Unavailable> {
    let permit = admission.enter().await?;
    let result = exchange(request, deadline, limit).await;
    let answer = match &result {
        Ok(answer) => Ok((
            answer.status,
            retry_after(&answer.headers, &["x-ratelimit-reset", "retry-after"]),
        )),
        Err(cause) => Err(cause),
    };
    admission.record_call(permit, answer);
    result
}

fn classify(error: &reqwest::Error) -> Unavailable {
    if error.is_timeout() {
        Unavailable::Timeout
    } else {
        Unavailable::Transport
    }
}

/// Which API a call went to, for what its 401 and 403 mean.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    /// The public API, called with the caller's credential: a 401 is about the caller.
    Public,
    /// The admin API, called with this process's API key: a 401 or 403 is about that key.
    Admin,
}

/// What an answer outside an endpoint's own contract means.
pub(super) fn failure(api: Api, answer: &Answer) -> LifecycleError {
    match answer.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if api == Api::Admin => {
            LifecycleError::AdminRefused(answer.status)
        }
        StatusCode::UNAUTHORIZED => LifecycleError::Unauthenticated,
        StatusCode::FORBIDDEN => match aal_required(&answer.headers, &answer.body) {
            Some(step_up) => LifecycleError::AalRequired(step_up),
            None => LifecycleError::Unavailable(Unavailable::Status(answer.status)),
        },
        StatusCode::TOO_MANY_REQUESTS => LifecycleError::RateLimited {
            retry_after: retry_after(&answer.headers, &["retry-after"]),
        },
        other => LifecycleError::Unavailable(Unavailable::Status(other)),
    }
}

/// How long a 429 asks callers to wait: the first of these headers that holds whole seconds,
/// capped at an hour.
pub(super) fn retry_after(headers: &HeaderMap, names: &[&str]) -> Option<Duration> {
    names
        .iter()
        .find_map(|name| parse_seconds(headers, name))
        .map(|wait| wait.min(MAX_RETRY_AFTER))
}

/// Whole seconds from a header (`Retry-After`'s delta-seconds form, `Ory-Session-Cache-For`).
pub(super) fn parse_seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

/// `base` + path segments, each percent-encoded as one segment (so no id can add a segment),
/// keeping any path prefix `base` has (Kratos behind `/kratos/`, say). Every Kratos URL the
/// crate calls is made here.
pub(super) fn with_segments(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Kratos's error envelope, as far as this crate reads it.
#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    redirect_browser_to: Option<String>,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

const AAL2_REQUIRED: &str = "session_aal2_required";

/// Kratos's "second factor required" (`session_aal2_required`, in the body or the
/// `Ory-Error-Id` header), with the page that completes it.
pub(super) fn aal_required(headers: &HeaderMap, body: &[u8]) -> Option<AalRequired> {
    let envelope: Option<ErrorEnvelope> = serde_json::from_slice(body).ok();
    let error = envelope
        .as_ref()
        .and_then(|envelope| envelope.error.as_ref());
    let id_in_body = error.and_then(|error| error.id.as_deref()) == Some(AAL2_REQUIRED);
    let id_in_header = headers
        .get("ory-error-id")
        .is_some_and(|value| value.as_bytes() == AAL2_REQUIRED.as_bytes());
    if !(id_in_body || id_in_header) {
        return None;
    }
    let from_details = || {
        error
            .and_then(|error| error.details.as_ref())
            .and_then(|details| details.get("redirect_browser_to"))
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    let redirect = envelope
        .as_ref()
        .and_then(|envelope| envelope.redirect_browser_to.clone())
        .or_else(from_details);
    Some(AalRequired::new(redirect))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_names_the_path_without_its_ids() {
        assert_eq!(
            url_template("/admin/sessions/9f1c8e8a-6a0b-4b7e-9a3c-2b1d4c5e6f70/extend"),
            "/admin/sessions/{id}/extend"
        );
        assert_eq!(url_template("/sessions/whoami"), "/sessions/whoami");
    }

    #[test]
    fn segments_are_encoded_and_prefixes_kept() {
        let base = Url::parse("https://x.example/kratos/?q=1").unwrap();
        assert_eq!(
            with_segments(&base, &["admin", "sessions", "a/b?c", "extend"]).as_str(),
            "https://x.example/kratos/admin/sessions/a%2Fb%3Fc/extend"
        );
        let base = Url::parse("http://127.0.0.1:4434").unwrap();
        assert_eq!(
            with_segments(&base, &["sessions"]).as_str(),
            "http://127.0.0.1:4434/sessions"
        );
    }
}
