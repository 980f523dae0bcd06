//! Kratos's `web_hook` as it runs after `revoke_active_sessions`: one JSON POST to the test's
//! receiver, with Kratos's headers, a timeout per attempt and Kratos's retries.
//!
//! Kratos's client (`oryx/httpx`'s resilient client over retryablehttp) makes at most 3
//! attempts, waiting 1 s then 2 s (a `Retry-After` in seconds on 429 and 503 instead), and
//! retries connection errors, timeouts, 429 and every 5xx but 501. This module knows nothing of
//! the stand-in: it is given the hook and the body, and reports what came of the delivery.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::ids;

const TRIGGER_ID: HeaderName = HeaderName::from_static("ory-webhook-trigger-id");
const REQUEST_ID: HeaderName = HeaderName::from_static("ory-webhook-request-id");
/// How much of an answer's body is read (so its connection can be reused) before it is dropped.
const MAX_ANSWER: usize = 64 * 1024;

/// Where Kratos's `web_hook` sends its call, and the `api_key` it authenticates with
/// (`auth: {type: api_key, config: {name: <header>, value: <key>, in: header}}`). Set it with
/// [`KratosStandIn::set_web_hook`](super::KratosStandIn::set_web_hook).
///
/// Its `Debug` does not show the key.
#[derive(Clone)]
pub struct WebHook {
    /// The receiver's URL, `http://` only: the stand-in's client speaks no TLS.
    pub url: String,
    /// The header the key goes in: the `api_key`'s `name`, e.g. `X-Key`.
    pub header: String,
    /// The key: the `api_key`'s `value`.
    pub key: String,
}

impl fmt::Debug for WebHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebHook")
            .field("url", &self.url)
            .field("header", &self.header)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Why [`KratosStandIn::revoke_active_sessions`](super::KratosStandIn::revoke_active_sessions)
/// got no answer from the web hook. The sessions are revoked all the same, as in Kratos, whose
/// revocation commits before the hook runs.
#[derive(Debug)]
#[non_exhaustive]
pub enum WebHookError {
    /// The URL is `https://`: the stand-in's web hook speaks plain HTTP only.
    PlainHttpOnly,
    /// The hook cannot be sent: the URL is not an absolute `http://` URL, or the header name or
    /// the key is not valid header text. The text says which, never showing the key.
    Invalid(String),
    /// The last attempt got no answer within its timeout (after 3 attempts).
    TimedOut,
    /// The last attempt failed to connect, or the connection broke before an answer came (after
    /// 3 attempts).
    Connection(String),
}

impl fmt::Display for WebHookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlainHttpOnly => f.write_str(
                "the stand-in's web hook speaks plain HTTP only: give it an http:// URL",
            ),
            Self::Invalid(what) => write!(f, "the web hook cannot be sent: {what}"),
            Self::TimedOut => f.write_str("the web hook's last attempt timed out"),
            Self::Connection(error) => write!(f, "the web hook's last attempt failed: {error}"),
        }
    }
}

impl std::error::Error for WebHookError {}

/// How long an attempt may take, and how long to wait between attempts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// One attempt, from connecting to the end of the answer.
    pub(crate) attempt_timeout: Duration,
    /// The waits after the first and the second failed attempt: 3 attempts at most.
    pub(crate) backoff: [Duration; 2],
    /// The longest `Retry-After` honoured.
    pub(crate) retry_after_cap: Duration,
}

impl Timing {
    /// Kratos's retries, with a 5 s attempt timeout (Kratos: 30 s) so a test that points the hook
    /// at a receiver that hangs fails in seconds, not minutes.
    pub(crate) const KRATOS: Self = Self {
        attempt_timeout: Duration::from_secs(5),
        backoff: [Duration::from_secs(1), Duration::from_secs(2)],
        retry_after_cap: Duration::from_secs(5),
    };
}

/// The body Kratos's hook template writes:
/// `{"identity_id":"<id>","keep_session_id":"<id>"}`, `keep_session_id` left out when none.
#[derive(Debug, Serialize)]
pub(crate) struct Payload<'a> {
    pub(crate) identity_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) keep_session_id: Option<&'a str>,
}

/// What came of a delivery.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The `Ory-Webhook-Trigger-ID` every attempt carried.
    pub(crate) trigger_id: String,
    /// 0 when nothing could be sent.
    pub(crate) attempts: u32,
    /// The last attempt's status, or why there was none.
    pub(crate) result: Result<StatusCode, WebHookError>,
}

/// An answer to one attempt.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// A `Retry-After` in seconds, on a 429 or a 503.
    retry_after: Option<Duration>,
}

/// Sends the hook's POST with `payload`, retrying as Kratos does.
///
/// # Panics
///
/// Only if the operating system's random number generator fails.
pub(crate) async fn deliver(hook: &WebHook, payload: &Payload<'_>, timing: Timing) -> Sent {
    let trigger_id = fresh_id();
    let delivery = match Delivery::new(hook, payload, &trigger_id) {
        Ok(delivery) => delivery,
        Err(err) => {
            return Sent {
                trigger_id,
                attempts: 0,
                result: Err(err),
            }
        }
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut attempts = 0u32;
    loop {
        let result = delivery.attempt(&client, timing.attempt_timeout).await;
        let backoff = usize::try_from(attempts)
            .ok()
            .and_then(|done_before| timing.backoff.get(done_before));
        attempts += 1;
        match backoff.and_then(|&backoff| retry_wait(&result, backoff, timing.retry_after_cap)) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => {
                return Sent {
                    trigger_id,
                    attempts,
                    result: result.map(|answer| answer.status),
                }
            }
        }
    }
}

/// A hook ready to send: everything but the per-attempt request id checked and built.
struct Delivery {
    uri: Uri,
    header: HeaderName,
    key: HeaderValue,
    trigger_id: HeaderValue,
    body: Bytes,
}

impl Delivery {
    fn new(hook: &WebHook, payload: &Payload<'_>, trigger_id: &str) -> Result<Self, WebHookError> {
        let not_http =
            || WebHookError::Invalid(format!("{:?} is not an absolute http:// URL", hook.url));
        let uri: Uri = hook.url.parse().map_err(|_| not_http())?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
                return Err(WebHookError::PlainHttpOnly)
            }
            Some(scheme) if scheme.eq_ignore_ascii_case("http") && uri.authority().is_some() => {}
            _ => return Err(not_http()),
        }
        let header = HeaderName::from_bytes(hook.header.as_bytes()).map_err(|_| {
            WebHookError::Invalid(format!("{:?} is not a header name", hook.header))
        })?;
        let mut key = HeaderValue::from_str(&hook.key)
            .map_err(|_| WebHookError::Invalid("the key is not valid header text".to_owned()))?;
        key.set_sensitive(true);
        let body = serde_json::to_vec(payload)
            .map_err(|err| WebHookError::Invalid(format!("the body: {err}")))?;
        Ok(Self {
            uri,
            header,
            key,
            trigger_id: header_value(trigger_id)?,
            body: Bytes::from(body),
        })
    }

    /// One attempt, with a fresh `Ory-Webhook-Request-ID`, its answer read within `timeout`.
    async fn attempt(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, WebHookError> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(self.header.clone(), self.key.clone());
        headers.insert(TRIGGER_ID, self.trigger_id.clone());
        headers.insert(REQUEST_ID, header_value(&fresh_id())?);
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|err| WebHookError::Connection(chain(&err)))?;
            let answer = Answer {
                status: response.status(),
                retry_after: retry_after(&response),
            };
            // Read, as Kratos's client does, so the connection can serve the next attempt.
            let _ = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await;
            Ok(answer)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(WebHookError::TimedOut))
    }
}

/// How long to wait before the next attempt after `result`, or `None` when Kratos's client
/// would not retry it: `backoff`, or a `Retry-After` (at most `cap`) on a 429 or a 503.
fn retry_wait(
    result: &Result<Answer, WebHookError>,
    backoff: Duration,
    cap: Duration,
) -> Option<Duration> {
    match result {
        Err(WebHookError::TimedOut | WebHookError::Connection(_)) => Some(backoff),
        Err(_) => None,
        Ok(answer) if retryable(answer.status) => {
            Some(answer.retry_after.map_or(backoff, |wait| wait.min(cap)))
        }
        Ok(_) => None,
    }
}

/// retryablehttp's `baseRetryPolicy` for an answer: 429, and 5xx but 501.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// A `Retry-After` in seconds on a 429 or a 503, as retryablehttp's `DefaultBackoff` reads it.
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    if !matches!(response.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// A fresh UUID for the trigger and request ids.
fn fresh_id() -> String {
    match ids::new_uuid() {
        Ok(id) => id,
        Err(err) => panic!("Kratos stand-in: the OS random number generator failed: {err}"),
    }
}

fn header_value(text: &str) -> Result<HeaderValue, WebHookError> {
    HeaderValue::from_str(text).map_err(|_| WebHookError::Invalid(format!("header {text:?}")))
}

/// An error and its sources, `: `-separated (hyper's own text is only "client error (Connect)").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use http::HeaderMap;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::{KratosStandIn, WebHookDelivery};

    /// Fast enough for tests, in the same shape as Kratos's.
    const FAST: Timing = Timing {
        attempt_timeout: Duration::from_millis(200),
        backoff: [Duration::from_millis(10), Duration::from_millis(20)],
        retry_after_cap: Duration::from_millis(50),
    };

    /// What the receiver does, request by request (then 200 for ever).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Answer(u16),
        Hang,
    }

    /// A plain HTTP server that follows a script and keeps every request's headers and body.
    struct Receiver {
        url: String,
        seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    }

    impl Receiver {
        async fn start(script: &[Step]) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/hooks/revoked", listener.local_addr().unwrap());
            let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
            let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
            let kept = Arc::clone(&seen);
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (seen, script) = (Arc::clone(&kept), Arc::clone(&script));
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (seen, script) = (Arc::clone(&seen), Arc::clone(&script));
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            seen.lock().unwrap().push((parts.headers, body));
                            let step = script.lock().unwrap().pop_front();
                            match step.unwrap_or(Step::Answer(200)) {
                                Step::Answer(status) => {
                                    let mut response = Response::new(Full::new(Bytes::new()));
                                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                                    Ok::<_, Infallible>(response)
                                }
                                Step::Hang => match std::future::pending::<Infallible>().await {},
                            }
                        }
                    });
                    tokio::spawn(
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                    );
                }
            });
            Self { url, seen }
        }

        fn hook(&self) -> WebHook {
            WebHook {
                url: self.url.clone(),
                header: "X-Key".to_owned(),
                key: "s3cret".to_owned(),
            }
        }

        fn seen(&self) -> Vec<(HeaderMap, Bytes)> {
            self.seen.lock().unwrap().clone()
        }
    }

    const PAYLOAD: Payload<'static> = Payload {
        identity_id: "7458af86-c1d8-401c-978a-8da89133f78b",
        keep_session_id: Some("432caf86-c1d8-401c-978a-8da89133f78b"),
    };

    #[tokio::test]
    async fn sends_kratos_headers_and_body() {
        let receiver = Receiver::start(&[]).await;
        let sent = deliver(&receiver.hook(), &PAYLOAD, FAST).await;
        assert_eq!((sent.attempts, sent.result.unwrap()), (1, StatusCode::OK));
        let seen = receiver.seen();
        let (headers, body) = &seen[0];
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-key"], "s3cret");
        assert_eq!(headers["ory-webhook-trigger-id"], sent.trigger_id.as_str());
        let request_id = headers["ory-webhook-request-id"].to_str().unwrap();
        assert!(ids::parse_uuid(request_id).is_ok() && request_id != sent.trigger_id);
        assert_eq!(
            body,
            r#"{"identity_id":"7458af86-c1d8-401c-978a-8da89133f78b","keep_session_id":"432caf86-c1d8-401c-978a-8da89133f78b"}"#
        );
        let without_keep = Payload {
            keep_session_id: None,
            ..PAYLOAD
        };
        deliver(&receiver.hook(), &without_keep, FAST)
            .await
            .result
            .unwrap();
        assert_eq!(
            receiver.seen()[1].1,
            r#"{"identity_id":"7458af86-c1d8-401c-978a-8da89133f78b"}"#
        );
    }

    #[tokio::test]
    async fn retries_429_and_5xx_but_not_501_or_4xx() {
        let receiver = Receiver::start(&[Step::Answer(500), Step::Answer(429)]).await;
        let sent = deliver(&receiver.hook(), &PAYLOAD, FAST).await;
        assert_eq!((sent.attempts, sent.result.unwrap()), (3, StatusCode::OK));
        let seen = receiver.seen();
        let header = |i: usize, name: &str| seen[i].0[name].to_str().unwrap().to_owned();
        assert!((0..3).all(|i| header(i, "ory-webhook-trigger-id") == sent.trigger_id));
        let request_ids: std::collections::HashSet<String> = (0..3)
            .map(|i| header(i, "ory-webhook-request-id"))
            .collect();
        assert_eq!(request_ids.len(), 3, "a fresh request id per attempt");

        let steps = [
            Step::Answer(503),
            Step::Answer(502),
            Step::Answer(500),
            Step::Answer(200),
        ];
        let failing = Receiver::start(&steps).await;
        let sent = deliver(&failing.hook(), &PAYLOAD, FAST).await;
        assert_eq!(
            (sent.attempts, sent.result.unwrap()),
            (3, StatusCode::INTERNAL_SERVER_ERROR)
        );
        for final_status in [501, 404, 400, 302, 204] {
            let receiver = Receiver::start(&[Step::Answer(final_status)]).await;
            let sent = deliver(&receiver.hook(), &PAYLOAD, FAST).await;
            assert_eq!(sent.attempts, 1, "{final_status}");
            assert_eq!(sent.result.unwrap().as_u16(), final_status);
        }
    }

    #[test]
    fn waits_backoff_or_a_capped_retry_after() {
        let second = Duration::from_secs(1);
        let cap = Duration::from_secs(5);
        let answer = |status: u16, retry_after: Option<u64>| {
            Ok(Answer {
                status: StatusCode::from_u16(status).unwrap(),
                retry_after: retry_after.map(Duration::from_secs),
            })
        };
        assert_eq!(retry_wait(&answer(500, None), second, cap), Some(second));
        assert_eq!(
            retry_wait(&answer(429, Some(3)), second, cap),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_wait(&answer(503, Some(60)), second, cap), Some(cap));
        assert_eq!(retry_wait(&answer(501, None), second, cap), None);
        assert_eq!(retry_wait(&answer(200, None), second, cap), None);
        assert_eq!(
            retry_wait(&Err(WebHookError::TimedOut), second, cap),
            Some(second)
        );
        assert_eq!(
            retry_wait(&Err(WebHookError::PlainHttpOnly), second, cap),
            None
        );

        let response = |status: u16, value: &str| {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            response
        };
        assert_eq!(
            retry_after(&response(429, " 2 ")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&response(503, "7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(&response(500, "2")), None);
        assert_eq!(
            retry_after(&response(429, "Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_retried() {
        let hanging = Receiver::start(&[Step::Hang, Step::Hang, Step::Hang]).await;
        let sent = deliver(&hanging.hook(), &PAYLOAD, FAST).await;
        assert_eq!(sent.attempts, 3);
        assert!(matches!(sent.result, Err(WebHookError::TimedOut)));
        assert_eq!(hanging.seen().len(), 3);

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let hook = WebHook {
            url,
            ..hanging.hook()
        };
        let sent = deliver(&hook, &PAYLOAD, FAST).await;
        assert_eq!(sent.attempts, 3);
        let Err(WebHookError::Connection(error)) = sent.result else {
            panic!("{:?}", sent.result)
        };
        assert!(error.contains("onnect"), "{error}");
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_send_without_showing_the_key() {
        let base = WebHook {
            url: "http://127.0.0.1:9/".to_owned(),
            header: "X-Key".to_owned(),
            key: "s3cret".to_owned(),
        };
        let https = WebHook {
            url: "HTTPS://127.0.0.1/".to_owned(),
            ..base.clone()
        };
        let sent = deliver(&https, &PAYLOAD, FAST).await;
        assert_eq!(sent.attempts, 0);
        let err = sent.result.unwrap_err();
        assert!(matches!(err, WebHookError::PlainHttpOnly));
        assert!(err.to_string().contains("plain HTTP only"), "{err}");
        for bad in [
            WebHook {
                url: "/relative".to_owned(),
                ..base.clone()
            },
            WebHook {
                url: "ftp://127.0.0.1/".to_owned(),
                ..base.clone()
            },
            WebHook {
                header: "X Key".to_owned(),
                ..base.clone()
            },
            WebHook {
                key: "s3cret\nInjected: 1".to_owned(),
                ..base.clone()
            },
        ] {
            let sent = deliver(&bad, &PAYLOAD, FAST).await;
            assert_eq!(sent.attempts, 0);
            let err = sent.result.unwrap_err();
            assert!(matches!(err, WebHookError::Invalid(_)), "{err:?}");
            assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        }
        assert_eq!(
            format!("{base:?}"),
            r#"WebHook { url: "http://127.0.0.1:9/", header: "X-Key", key: "[redacted]" }"#
        );
    }

    use crate::whoami_status as whoami;

    #[tokio::test]
    async fn revoke_active_sessions_disables_the_others_then_calls_the_hook() {
        let kratos = KratosStandIn::start().await.unwrap();
        let kept = kratos.create_session();
        let other = kratos.session().identity(&kept.identity_id).create();
        let stranger = kratos.create_session();

        let no_hook = kratos
            .revoke_active_sessions(&kept.identity_id, Some(&kept.id))
            .await;
        assert_eq!(no_hook.unwrap(), None);
        assert!(kratos.web_hook_deliveries().is_empty());
        assert_eq!(whoami(&kratos, &other.token).await, 401);
        assert!(
            !kratos.session_state(&other.id).unwrap().active,
            "the row is kept"
        );
        assert_eq!(whoami(&kratos, &kept.token).await, 200);
        assert_eq!(whoami(&kratos, &stranger.token).await, 200);

        let receiver = Receiver::start(&[Step::Answer(204)]).await;
        kratos.set_web_hook(receiver.hook());
        let status = kratos.revoke_active_sessions(&kept.identity_id, None).await;
        assert_eq!(status.unwrap(), Some(StatusCode::NO_CONTENT));
        assert_eq!(whoami(&kratos, &kept.token).await, 401);
        let deliveries = kratos.web_hook_deliveries();
        let [WebHookDelivery {
            trigger_id,
            attempts: 1,
            status: Some(StatusCode::NO_CONTENT),
            ..
        }] = deliveries.as_slice()
        else {
            panic!("{deliveries:?}")
        };
        let seen = receiver.seen();
        assert_eq!(seen[0].0["ory-webhook-trigger-id"], trigger_id.as_str());
        let expected = format!(r#"{{"identity_id":"{}"}}"#, kept.identity_id);
        assert_eq!(seen[0].1, expected);

        kratos.set_web_hook(WebHook {
            url: "https://127.0.0.1/".to_owned(),
            ..receiver.hook()
        });
        let refused = kratos
            .revoke_active_sessions(&stranger.identity_id, None)
            .await;
        assert!(matches!(refused, Err(WebHookError::PlainHttpOnly)));
        assert_eq!(
            whoami(&kratos, &stranger.token).await,
            401,
            "revoked all the same"
        );
        assert_eq!(kratos.web_hook_deliveries()[1].attempts, 0);
        kratos.reset_counters();
        assert!(kratos.web_hook_deliveries().is_empty());
        kratos.clear_web_hook();
        assert_eq!(
            kratos
                .revoke_active_sessions(&kept.identity_id, None)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn waits_kratos_backoff_between_attempts() {
        let kratos = KratosStandIn::start().await.unwrap();
        let session = kratos.create_session();
        let receiver = Receiver::start(&[Step::Answer(500), Step::Answer(502)]).await;
        kratos.set_web_hook(receiver.hook());
        let started = Instant::now();
        let status = kratos
            .revoke_active_sessions(&session.identity_id, None)
            .await;
        let elapsed = started.elapsed();
        assert_eq!(status.unwrap(), Some(StatusCode::OK));
        assert_eq!(kratos.web_hook_deliveries()[0].attempts, 3);
        assert!(
            elapsed >= Duration::from_secs(3),
            "1 s then 2 s: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
}
