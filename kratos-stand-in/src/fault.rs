//! Behaviour knobs: injected faults, latency, the extend response, the session cache header,
//! the bulk route's wildcard batch and the web hook.

use std::collections::HashMap;
use std::time::Duration;

use super::hook::WebHook;
use super::record::Endpoint;

/// A failure to inject into every later call of one endpoint, until cleared.
///
/// The call is still counted and recorded before the fault applies.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Fault {
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer from the state the call finds on arrival, but deliver that answer this much later:
    /// a whoami that was "active" when Kratos read it and arrives after a revocation.
    AnswerLate(Duration),
    /// Answer with this status and Kratos's JSON error body for it
    /// (`{"error":{"code":..,"status":..,"message":..}}`). 204 and 304 get no body; 1xx codes, which
    /// cannot end an HTTP exchange, are answered 500.
    Status(http::StatusCode),
    /// Answer 429 as Ory Network's rate limiter does: `Retry-After` (when given, in seconds) and the
    /// `x-ratelimit-limit`, `x-ratelimit-remaining` (`0`) and `x-ratelimit-reset` headers.
    RateLimited {
        /// The `Retry-After` value in seconds; also used for `x-ratelimit-reset` (else `1`).
        retry_after: Option<u64>,
    },
    /// Never answer. Other connections are unaffected; the client has to time out.
    Hang,
    /// Answer 200 with `Content-Type: application/json` and a body that is not JSON, as a
    /// misconfigured proxy in front of Kratos might.
    GarbageBody,
    /// Close the TCP connection without writing a response; the client sees a connection error
    /// (an incomplete message).
    CloseConnection,
    /// Refuse with `status` every request with a header line (name, `: ` and value) longer than
    /// `max` bytes, as a server or proxy in front of Kratos does: nginx answers 400 "Request
    /// Header Or Cookie Too Large" past its 8 KiB buffers, Go's server 431. Other requests are
    /// answered normally.
    HeaderLimit {
        /// The longest header line accepted, in bytes.
        max: usize,
        /// The status of the refusal (431, or nginx's 400).
        status: http::StatusCode,
    },
}

/// What `PATCH /admin/sessions/{id}/extend` answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtendResponse {
    /// 200 with the session JSON: stock self-hosted Kratos (`faster_session_extend` off, the default).
    WithBody,
    /// 204 No Content: Ory Network and Kratos with `feature_flags.faster_session_extend` on.
    NoContent,
}

/// The knobs a test can turn while the server runs.
#[derive(Debug)]
pub(crate) struct Knobs {
    pub(crate) faults: HashMap<Endpoint, Fault>,
    pub(crate) whoami_latency: Duration,
    pub(crate) extend_response: ExtendResponse,
    /// `Some(max_age)` emulates `feature_flags.cacheable_sessions` with that
    /// `cacheable_sessions_max_age`.
    pub(crate) session_cache_for: Option<Duration>,
    /// The most sessions one wildcard `POST /admin/sessions` processes.
    pub(crate) bulk_batch_size: usize,
    /// Where `KratosStandIn::revoke_active_sessions` delivers Kratos's web hook, if anywhere.
    pub(crate) web_hook: Option<WebHook>,
}
