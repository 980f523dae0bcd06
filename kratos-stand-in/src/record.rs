//! What the stand-in saw: call counters and recorded requests, per endpoint and per session;
//! and what it sent: web hook deliveries.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// A Kratos endpoint the stand-in serves, for counting calls and setting faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /sessions/whoami` (any method, and `DELETE /sessions/whoami`).
    Whoami,
    /// `GET /sessions`: the caller's other active sessions.
    ListMySessions,
    /// `DELETE /sessions`: revoke the caller's other sessions.
    RevokeMyOtherSessions,
    /// `DELETE /sessions/{id}`: revoke one of the caller's other sessions.
    RevokeMySession,
    /// `PATCH /admin/sessions/{id}/extend`.
    ExtendSession,
    /// `GET /admin/sessions/{id}`.
    AdminGetSession,
    /// `DELETE /admin/sessions/{id}`: deactivate a session.
    AdminDisableSession,
    /// `DELETE /admin/identities/{id}/sessions`: delete all of an identity's sessions.
    AdminDeleteIdentitySessions,
    /// `POST /admin/sessions`: disable or delete sessions in bulk (Kratos's `manageSessions`).
    /// Not counted per session: a call is about many.
    AdminSessionsBulk,
    /// `DELETE /self-service/logout/api`.
    LogoutApi,
    /// `GET /self-service/login/browser`: a browser login flow begins.
    LoginBrowser,
    /// The stand-in's own login UI pages: `GET /login` and `GET /welcome`.
    LoginUi,
    /// `POST /self-service/login`: the login page's form, posted.
    Login,
    /// `GET /self-service/logout/browser`: a browser logout flow (its URL and token).
    LogoutBrowser,
    /// `GET /self-service/logout?token=…`: a browser logout completed.
    Logout,
    /// `GET /.well-known/stand-in/jwks/{template}.json`: a tokenizer template's public keys
    /// ([`KratosStandIn::jwks_url`](super::KratosStandIn::jwks_url); the stand-in's own route,
    /// Kratos serves none).
    Jwks,
    /// Any other route (answered 404).
    Other,
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request method.
    pub method: http::Method,
    /// The request target (path and query).
    pub uri: http::Uri,
    /// All request headers, as received.
    pub headers: http::HeaderMap,
    /// The request body (empty for most routes).
    pub body: Bytes,
    /// The session the request was about: the one its credential resolved to (whoami, `/sessions`
    /// routes, API logout) or the `{id}` in the path (admin routes; the identity id for
    /// [`Endpoint::AdminDeleteIdentitySessions`]). `None` when there was none.
    pub session_id: Option<String>,
}

/// One web hook delivery: what one
/// [`KratosStandIn::revoke_active_sessions`](super::KratosStandIn::revoke_active_sessions)
/// with a web hook set sent, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebHookDelivery {
    /// The `Ory-Webhook-Trigger-ID` every attempt carried (a UUID), for matching what the
    /// receiver saw.
    pub trigger_id: String,
    /// How many attempts were made: 1 to 3, or 0 when the hook could not be sent at all (an
    /// `https://` URL, an invalid header).
    pub attempts: u32,
    /// The status of the last attempt's answer; `None` when it got none (a timeout, a
    /// connection error, nothing sent).
    pub status: Option<http::StatusCode>,
}

/// How many requests per endpoint are kept for [`RecordedRequest`] inspection. Counters are
/// unbounded; only the recorded requests are capped, so a long benchmark does not grow without end.
pub(crate) const RECORDED_PER_ENDPOINT: usize = 10_000;

/// Counters and recorded requests.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    calls: HashMap<Endpoint, usize>,
    calls_per_session: HashMap<(Endpoint, String), usize>,
    requests: HashMap<Endpoint, VecDeque<RecordedRequest>>,
    /// Requests being handled now, and the most handled at once, per endpoint.
    in_flight: HashMap<Endpoint, usize>,
    max_in_flight: HashMap<Endpoint, usize>,
    /// Web hook deliveries, oldest first (the most recent [`RECORDED_PER_ENDPOINT`]).
    deliveries: VecDeque<WebHookDelivery>,
}

impl Journal {
    pub(crate) fn record(&mut self, endpoint: Endpoint, request: RecordedRequest) {
        *self.calls.entry(endpoint).or_default() += 1;
        if let Some(id) = &request.session_id {
            *self
                .calls_per_session
                .entry((endpoint, id.clone()))
                .or_default() += 1;
        }
        let kept = self.requests.entry(endpoint).or_default();
        if kept.len() == RECORDED_PER_ENDPOINT {
            kept.pop_front();
        }
        kept.push_back(request);
    }

    pub(crate) fn calls(&self, endpoint: Endpoint) -> usize {
        self.calls.get(&endpoint).copied().unwrap_or(0)
    }

    pub(crate) fn calls_for_session(&self, endpoint: Endpoint, session_id: &str) -> usize {
        self.calls_per_session
            .get(&(endpoint, session_id.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn requests(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.requests
            .get(&endpoint)
            .map(|kept| kept.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn record_delivery(&mut self, delivery: WebHookDelivery) {
        if self.deliveries.len() == RECORDED_PER_ENDPOINT {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(delivery);
    }

    pub(crate) fn deliveries(&self) -> Vec<WebHookDelivery> {
        self.deliveries.iter().cloned().collect()
    }

    /// A request to `endpoint` starts being handled.
    pub(crate) fn enter(&mut self, endpoint: Endpoint) {
        let now = self.in_flight.entry(endpoint).or_default();
        *now += 1;
        let now = *now;
        let max = self.max_in_flight.entry(endpoint).or_default();
        *max = (*max).max(now);
    }

    /// A request to `endpoint` was answered, or dropped unanswered.
    pub(crate) fn leave(&mut self, endpoint: Endpoint) {
        let now = self.in_flight.entry(endpoint).or_default();
        *now = now.saturating_sub(1);
    }

    pub(crate) fn in_flight(&self, endpoint: Endpoint) -> usize {
        self.in_flight.get(&endpoint).copied().unwrap_or(0)
    }

    pub(crate) fn max_in_flight(&self, endpoint: Endpoint) -> usize {
        self.max_in_flight.get(&endpoint).copied().unwrap_or(0)
    }

    /// Forgets counters, recorded requests and deliveries. Requests still being handled stay counted, and
    /// become the new peak.
    pub(crate) fn clear(&mut self) {
        let in_flight = std::mem::take(&mut self.in_flight);
        *self = Self::default();
        self.max_in_flight = in_flight.clone();
        self.in_flight = in_flight;
    }
}
