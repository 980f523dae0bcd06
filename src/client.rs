//! The Kratos HTTP API over one pooled `reqwest` client: whoami, and the session lifecycle
//! calls (extend, revoke, list, API logout) on the public and admin APIs.
//!
//! Every call has a hard deadline (enforced here, so it holds for a client the user supplied
//! too), never follows redirects (a 3xx from Kratos is a misconfiguration, and following it
//! would carry the credential elsewhere), and reads a bounded answer body ([`MAX_BODY_LEN`] for
//! single sessions, [`MAX_LIST_BODY_LEN`] for session lists).

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{header, HeaderMap, HeaderValue, StatusCode};
use reqwest::Url;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::{
    credentials::{Credential, CredentialSource, MalformedCredential},
    outcome::{AalRequired, Outcome, Unauthenticated, Unavailable},
    session::{KratosSession, Session},
};

/// The largest answer body read from Kratos. A whoami body is a few KiB; identities with large
/// traits stay far below this.
pub(crate) const MAX_BODY_LEN: usize = 1024 * 1024;

/// The header Kratos (with Ory Network's `cacheable_sessions`) uses to say how long an answer may
/// be cached.
pub(crate) const SESSION_CACHE_FOR: &str = "ory-session-cache-for";

/// The longest `X-Request-ID` passed on to Kratos, in bytes. Request ids are UUIDs or similar
/// (36 bytes); a longer one is not passed on, so a caller cannot make the lookup's headers too
/// large for Kratos or a proxy in front of it to answer.
pub(crate) const MAX_FORWARDED_REQUEST_ID_LEN: usize = 200;

/// Whether a request's `X-Request-ID` is passed on to Kratos: short, and visible ASCII only.
fn is_forwardable_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_FORWARDED_REQUEST_ID_LEN
        && bytes.iter().all(u8::is_ascii_graphic)
}

/// The longest `Retry-After` taken from Kratos; a larger value is clamped so a bogus header
/// cannot tell clients to go away for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What whoami answered, with the caching hint that came with it.
#[derive(Debug)]
pub(crate) struct WhoamiAnswer {
    pub(crate) outcome: Outcome,
    /// `Ory-Session-Cache-For`, when Kratos sent it.
    pub(crate) cache_for: Option<Duration>,
    /// How long Kratos took.
    pub(crate) latency: Duration,
    /// The `Set-Cookie` headers of a 200: Kratos re-issues the session cookie when the one sent
    /// carries an older expiry than the session's (after an extension, API.md §a).
    pub(crate) set_cookies: Vec<HeaderValue>,
}

/// The Kratos public API as this crate uses it.
#[derive(Clone)]
pub(crate) struct KratosClient {
    http: reqwest::Client,
    whoami_url: Url,
    request_timeout: Duration,
    /// The lifecycle endpoints: behind one `Arc`, so the clone a whoami miss makes stays cheap.
    lifecycle: Arc<LifecycleApi>,
}

impl fmt::Debug for KratosClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the reqwest client: its Debug lists default headers, where a user-supplied client
        // may carry an API key.
        f.debug_struct("KratosClient")
            .field("whoami_url", &self.whoami_url.as_str())
            .field("request_timeout", &self.request_timeout)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

/// Where the lifecycle calls go.
#[derive(Debug)]
struct LifecycleApi {
    public_url: Url,
    admin: Option<AdminApi>,
}

/// The admin API: its base URL, its credential and its deadline.
pub(crate) struct AdminApi {
    base: Url,
    /// `Bearer <API key>` (Ory Network), marked sensitive; `None` for self-hosted Kratos, whose
    /// admin port has no authentication of its own.
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl AdminApi {
    /// `authorization` must already be a valid, sensitive `Bearer …` header value.
    pub(crate) fn new(base: Url, authorization: Option<HeaderValue>, timeout: Duration) -> Self {
        Self {
            base,
            authorization,
            timeout,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi")
            .field("base", &self.base.as_str())
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KratosClient {
    pub(crate) fn new(http: reqwest::Client, public_url: &Url, request_timeout: Duration) -> Self {
        Self {
            http,
            whoami_url: join(public_url, "sessions/whoami"),
            request_timeout,
            lifecycle: Arc::new(LifecycleApi {
                public_url: public_url.clone(),
                admin: None,
            }),
        }
    }

    /// This client, with the admin API configured.
    pub(crate) fn with_admin(mut self, admin: AdminApi) -> Self {
        self.lifecycle = Arc::new(LifecycleApi {
            public_url: self.lifecycle.public_url.clone(),
            admin: Some(admin),
        });
        self
    }

    /// The admin API, when configured.
    pub(crate) fn admin(&self) -> Option<&AdminApi> {
        self.lifecycle.admin.as_ref()
    }

    /// `GET /sessions/whoami` with this credential alone. `fresh` asks Ory Network's session
    /// cache ("Edge Sessions") for a fresh read (`Cache-Control: max-age=0`, API.md §f): for a
    /// session this process has just revoked or extended, whose cached answer would be stale.
    pub(crate) async fn whoami(
        &self,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
        fresh: bool,
    ) -> WhoamiAnswer {
        let started = Instant::now();
        let call = self.whoami_inner(credential, request_id, fresh);
        let (outcome, cache_for, set_cookies) =
            match tokio::time::timeout(self.request_timeout, call).await {
                Ok(answer) => answer,
                Err(_elapsed) => (Outcome::Unavailable(Unavailable::Timeout), None, Vec::new()),
            };
        WhoamiAnswer {
            outcome,
            cache_for,
            latency: started.elapsed(),
            set_cookies,
        }
    }

    async fn whoami_inner(
        &self,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
        fresh: bool,
    ) -> (Outcome, Option<Duration>, Vec<HeaderValue>) {
        let Some((name, value)) = credential.to_kratos_header() else {
            // Unreachable for credentials built by this crate (they are validated); refuse anyway.
            return (
                Outcome::Unauthenticated(Unauthenticated::Rejected),
                None,
                Vec::new(),
            );
        };
        let mut request = self
            .http
            .get(self.whoami_url.clone())
            .header(name, value)
            .header(header::ACCEPT, "application/json");
        if let Some(request_id) = request_id.filter(|id| is_forwardable_request_id(id)) {
            request = request.header("x-request-id", request_id.clone());
        }
        if fresh {
            request = request.header(header::CACHE_CONTROL, "max-age=0");
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return (Outcome::Unavailable(classify(&error)), None, Vec::new()),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match read_body(response).await {
            Ok(body) => body,
            Err(unavailable) => return (Outcome::Unavailable(unavailable), None, Vec::new()),
        };
        let cache_for = parse_seconds(&headers, SESSION_CACHE_FOR);
        let outcome = interpret_whoami(status, &headers, &body);
        // Only a session's own cookie is worth passing on; whatever came with an error is not.
        // The values are session secrets: marked sensitive, `Debug` shows none of them.
        let set_cookies = if matches!(outcome, Outcome::Authenticated(_)) {
            headers
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|value| {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    value
                })
                .collect()
        } else {
            Vec::new()
        };
        (outcome, cache_for, set_cookies)
    }
}

/// The largest session-list answer read from Kratos: a full page (500 sessions with their
/// identities and devices) stays well below it.
pub(crate) const MAX_LIST_BODY_LEN: usize = 16 * 1024 * 1024;

/// The most sessions one page may ask for: Kratos's own limit for `page_size`.
pub const MAX_PAGE_SIZE: u16 = 500;

/// Kratos's answer to `DELETE /sessions/{id}` for the caller's own session (API.md §d).
const CANNOT_REVOKE_CURRENT: &str = "current session";

/// What `PATCH /admin/sessions/{id}/extend` answered (API.md §c: clients must accept both).
#[derive(Debug)]
pub(crate) enum ExtendAnswer {
    /// 200 with the session: stock self-hosted Kratos (`faster_session_extend` off).
    Session(Box<Session>),
    /// 204: Ory Network, or Kratos with `faster_session_extend` on.
    NoContent,
}

/// Which API a call went to, for what its 401 and 403 mean.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// The public API, called with the caller's credential: a 401 is about the caller.
    Public,
    /// The admin API, called with this process's API key: a 401 or 403 is about that key.
    Admin,
}

/// A complete answer, body read.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl KratosClient {
    /// `PATCH {admin}/admin/sessions/{id}/extend`. `session_id` must come from [`session_id`].
    pub(crate) async fn extend_session(
        &self,
        session_id: &str,
    ) -> Result<ExtendAnswer, LifecycleError> {
        let (request, timeout) = self.admin_request(
            reqwest::Method::PATCH,
            &["admin", "sessions", session_id, "extend"],
        )?;
        let answer = self.execute(request, timeout, MAX_BODY_LEN).await?;
        match answer.status {
            StatusCode::OK => serde_json::from_slice::<Session>(&answer.body)
                .map(|session| ExtendAnswer::Session(Box::new(session)))
                .map_err(|_| LifecycleError::Unavailable(Unavailable::InvalidBody)),
            StatusCode::NO_CONTENT => Ok(ExtendAnswer::NoContent),
            StatusCode::NOT_FOUND => Err(LifecycleError::NotFound),
            _ => Err(failure(Api::Admin, &answer)),
        }
    }

    /// `DELETE {admin}/admin/sessions/{id}`: deactivate one session.
    pub(crate) async fn disable_session(&self, session_id: &str) -> Result<(), LifecycleError> {
        self.admin_delete(&["admin", "sessions", session_id]).await
    }

    /// `DELETE {admin}/admin/identities/{id}/sessions`: delete every session of an identity.
    pub(crate) async fn delete_identity_sessions(
        &self,
        identity_id: &str,
    ) -> Result<(), LifecycleError> {
        self.admin_delete(&["admin", "identities", identity_id, "sessions"])
            .await
    }

    /// An admin `DELETE`: 204 is done, 404 is "no such session or identity" (API.md §d),
    /// anything else a failure. A 200 is not Kratos's answer (an error page from a proxy, say):
    /// nothing says the session was revoked, so it is not reported as done.
    async fn admin_delete(&self, path: &[&str]) -> Result<(), LifecycleError> {
        let (request, timeout) = self.admin_request(reqwest::Method::DELETE, path)?;
        let answer = self.execute(request, timeout, MAX_BODY_LEN).await?;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            StatusCode::NOT_FOUND => Err(LifecycleError::NotFound),
            _ => Err(failure(Api::Admin, &answer)),
        }
    }

    /// `DELETE {public}/sessions/{id}` as the caller: revoke another of the caller's sessions.
    pub(crate) async fn revoke_my_session(
        &self,
        credential: &Credential,
        session_id: &str,
    ) -> Result<(), LifecycleError> {
        let request = self.public_request(
            reqwest::Method::DELETE,
            &["sessions", session_id],
            credential,
        )?;
        let answer = self
            .execute(request, self.request_timeout, MAX_BODY_LEN)
            .await?;
        // Only Kratos's own 204 says the session was revoked (API.md §d).
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            StatusCode::BAD_REQUEST if refuses_current_session(&answer.body) => {
                Err(LifecycleError::CurrentSession)
            }
            _ => Err(failure(Api::Public, &answer)),
        }
    }

    /// `DELETE {public}/sessions` as the caller: revoke all the caller's other sessions.
    pub(crate) async fn revoke_my_other_sessions(
        &self,
        credential: &Credential,
    ) -> Result<u64, LifecycleError> {
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        let request = self.public_request(reqwest::Method::DELETE, &["sessions"], credential)?;
        let answer = self
            .execute(request, self.request_timeout, MAX_BODY_LEN)
            .await?;
        match answer.status {
            StatusCode::OK => serde_json::from_slice::<Count>(&answer.body)
                .map(|count| count.count)
                .map_err(|_| LifecycleError::Unavailable(Unavailable::InvalidBody)),
            _ => Err(failure(Api::Public, &answer)),
        }
    }

    /// `GET {public}/sessions` as the caller: one page of the caller's other active sessions.
    pub(crate) async fn list_my_sessions(
        &self,
        credential: &Credential,
        page: &Page,
    ) -> Result<SessionList, LifecycleError> {
        let mut url = self.public_url(&["sessions"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(size) = page.size {
                query.append_pair("page_size", &size.to_string());
            }
            if let Some(token) = &page.token {
                query.append_pair("page_token", token);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let request = self.with_credential(self.http.get(url), credential)?;
        let answer = self
            .execute(request, self.request_timeout, MAX_LIST_BODY_LEN)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(failure(Api::Public, &answer));
        }
        let sessions = serde_json::from_slice::<Vec<Session>>(&answer.body)
            .map_err(|_| LifecycleError::Unavailable(Unavailable::InvalidBody))?;
        let total = answer
            .headers
            .get("x-total-count")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse().ok());
        let next = next_page(&answer.headers, page.size);
        Ok(SessionList {
            sessions,
            total,
            next,
        })
    }

    /// `DELETE {public}/self-service/logout/api` with `{"session_token": …}`.
    pub(crate) async fn logout_api(&self, credential: &Credential) -> Result<(), LifecycleError> {
        if credential.source() == CredentialSource::Cookie {
            return Err(LifecycleError::NotATokenSession);
        }
        let token = std::str::from_utf8(credential.key_material().1)
            .map_err(|_| LifecycleError::Malformed(MalformedCredential::NotText))?;
        let body = serde_json::json!({ "session_token": token }).to_string();
        let url = self.public_url(&["self-service", "logout", "api"]);
        let request = self
            .http
            .delete(url)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let answer = self
            .execute(request, self.request_timeout, MAX_BODY_LEN)
            .await?;
        // Only Kratos's own 204 says the token was logged out (API.md §e).
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            // "The provided Ory Session Token could not be found, is invalid, or otherwise
            // malformed" (API.md §e): to the caller, the same as a 401.
            StatusCode::FORBIDDEN => Err(LifecycleError::Unauthenticated),
            _ => Err(failure(Api::Public, &answer)),
        }
    }

    fn public_url(&self, segments: &[&str]) -> Url {
        with_segments(&self.lifecycle.public_url, segments)
    }

    fn public_request(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        credential: &Credential,
    ) -> Result<reqwest::RequestBuilder, LifecycleError> {
        let request = self.http.request(method, self.public_url(segments));
        self.with_credential(request, credential)
    }

    /// Adds the caller's credential (only it) and `Accept: application/json`.
    fn with_credential(
        &self,
        request: reqwest::RequestBuilder,
        credential: &Credential,
    ) -> Result<reqwest::RequestBuilder, LifecycleError> {
        // Unreachable for credentials built by this crate (they are validated).
        let (name, value) = credential
            .to_kratos_header()
            .ok_or(LifecycleError::Malformed(
                MalformedCredential::InvalidCharacters,
            ))?;
        Ok(request
            .header(name, value)
            .header(header::ACCEPT, "application/json"))
    }

    fn admin_request(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<(reqwest::RequestBuilder, Duration), LifecycleError> {
        let admin = self.admin().ok_or(LifecycleError::AdminNotConfigured)?;
        let mut request = self
            .http
            .request(method, with_segments(&admin.base, segments))
            .header(header::ACCEPT, "application/json");
        if let Some(authorization) = &admin.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        Ok((request, admin.timeout))
    }

    /// Sends the request and reads at most `limit` bytes of the answer, all within `deadline`.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Duration,
        limit: usize,
    ) -> Result<Answer, LifecycleError> {
        let call = async {
            let response = request.send().await.map_err(|error| classify(&error))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_body_up_to(response, limit).await?;
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(answer) => answer.map_err(LifecycleError::Unavailable),
            Err(_elapsed) => Err(LifecycleError::Unavailable(Unavailable::Timeout)),
        }
    }
}

/// What an answer outside an endpoint's own contract means.
fn failure(api: Api, answer: &Answer) -> LifecycleError {
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
            retry_after: parse_seconds(&answer.headers, "retry-after")
                .map(|wait| wait.min(MAX_RETRY_AFTER)),
        },
        other => LifecycleError::Unavailable(Unavailable::Status(other)),
    }
}

/// Whether a 400 is Kratos's "cannot revoke current session".
fn refuses_current_session(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Envelope {
        error: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        message: String,
        #[serde(default)]
        reason: String,
    }
    serde_json::from_slice::<Envelope>(body).is_ok_and(|envelope| {
        let Message { message, reason } = envelope.error;
        [message, reason]
            .iter()
            .any(|text| text.to_ascii_lowercase().contains(CANNOT_REVOKE_CURRENT))
    })
}

/// The `rel="next"` page of a `Link` header. Only its `page_token` (and `page_size`) are taken:
/// the URL itself is never followed.
fn next_page(headers: &HeaderMap, size: Option<u16>) -> Option<Page> {
    let base = Url::parse("http://link.invalid/").ok()?;
    for value in headers.get_all(header::LINK) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for link in text.split(',') {
            let Some((target, params)) = link.split_once(';') else {
                continue;
            };
            let is_next = params.split(';').any(|param| {
                let param = param.trim();
                param.eq_ignore_ascii_case("rel=\"next\"") || param.eq_ignore_ascii_case("rel=next")
            });
            let target = target.trim();
            let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            if !is_next {
                continue;
            }
            let Ok(url) = base.join(target) else {
                continue;
            };
            let mut next = Page { size, token: None };
            for (key, value) in url.query_pairs() {
                match key.as_ref() {
                    "page_token" if !value.is_empty() => next.token = Some(value.into_owned()),
                    "page_size" => {
                        if let Ok(parsed) = value.parse::<u16>() {
                            next.size = Some(parsed.clamp(1, MAX_PAGE_SIZE));
                        }
                    }
                    _ => {}
                }
            }
            return next.token.is_some().then_some(next);
        }
    }
    None
}

/// `base` + path segments, each percent-encoded as one segment (so no id can add a segment).
fn with_segments(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A Kratos id (session or identity) in canonical form: a UUID, lowercase, hyphenated.
///
/// Kratos itself answers 400 for anything that is not a UUID; refusing it here keeps a
/// caller-supplied id from ever shaping a Kratos URL, and the lowercase form is what Kratos
/// writes, so revocation marks match cached sessions.
pub(crate) fn canonical_id(id: &str) -> Result<String, LifecycleError> {
    let bytes = id.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        });
    if well_formed {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(LifecycleError::InvalidId)
    }
}

/// Which page of the caller's sessions to list ([`list_sessions`]).
///
/// [`list_sessions`]: crate::lifecycle::SessionLifecycle::list_sessions
///
/// ```
/// use tower_kratos::lifecycle::Page;
///
/// let first = Page::first().with_size(20);
/// assert_eq!(first.size(), Some(20));
/// assert_eq!(first.token(), None);
/// assert_eq!(Page::first().with_size(10_000).size(), Some(500));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    size: Option<u16>,
    token: Option<String>,
}

impl Page {
    /// The first page, of Kratos's default size (250).
    pub fn first() -> Self {
        Self::default()
    }

    /// This many sessions per page, clamped to `1..=500` as Kratos clamps it.
    pub fn with_size(mut self, size: u16) -> Self {
        self.size = Some(size.clamp(1, MAX_PAGE_SIZE));
        self
    }

    /// The page Kratos's `page_token` names (from an earlier [`SessionList::next`], say after a
    /// round trip through your own API's pagination). The token is opaque; it is sent as a
    /// query parameter, encoded, and never shapes the URL otherwise.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.is_empty()).then_some(token);
        self
    }

    /// The page size asked for, if set.
    pub fn size(&self) -> Option<u16> {
        self.size
    }

    /// Kratos's opaque token for this page (none for the first page).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// One page of the caller's other active sessions, newest first, as `GET /sessions` lists them.
/// The session the request was made with is never in it (Kratos leaves it out).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionList {
    /// The sessions on this page.
    pub sessions: Vec<Session>,
    /// How many there are on all pages (Kratos's `X-Total-Count`), when Kratos said.
    pub total: Option<u64>,
    /// The next page, when there is one (from Kratos's `Link` header).
    pub next: Option<Page>,
}

/// Why a session lifecycle call did not succeed.
///
/// Each variant is one real situation, so a handler can answer it precisely; with the `axum`
/// feature the error is also a response (see its `IntoResponse`). Nothing in it shows a credential
/// or the admin API key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The request carried no Kratos credential. Kratos was not asked.
    NoCredential,
    /// The request's credential is malformed. Kratos was not asked.
    Malformed(MalformedCredential),
    /// A session or identity id that is not a UUID. Kratos was not asked.
    InvalidId,
    /// Kratos refuses to revoke the session the request was made with (400 "cannot revoke
    /// current session"): that is a logout, not a revocation. Nothing changed.
    CurrentSession,
    /// API logout needs a session token (`X-Session-Token` or `Authorization: Bearer`); this
    /// caller has a browser session cookie, which logs out through Kratos's browser flow.
    NotATokenSession,
    /// Kratos does not accept the caller's credential (401, or 403 on API logout): no, expired
    /// or revoked session.
    Unauthenticated,
    /// The caller's session must complete a second factor first (403 `session_aal2_required`).
    AalRequired(AalRequired),
    /// Kratos answered 404: the session or identity (or, when revoking an identity's sessions,
    /// any session of it) does not exist. When extending on Ory Network, it can also mean
    /// another request is extending the same session at this moment.
    NotFound,
    /// The call needs the admin API, and the layer was built without
    /// [`admin_url`](crate::KratosLayerBuilder::admin_url).
    AdminNotConfigured,
    /// The admin API refused this process's credentials (401 or 403): check
    /// [`admin_api_key`](crate::KratosLayerBuilder::admin_api_key).
    AdminRefused(StatusCode),
    /// Kratos (or Ory Network) answered 429.
    RateLimited {
        /// Kratos's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Kratos could not give an answer: down, slow, 5xx, an unexpected status, or a body that
    /// is not what the endpoint returns.
    Unavailable(Unavailable),
}

impl LifecycleError {
    /// How long Kratos asked callers to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoCredential => "no_credential",
            Self::Malformed(_) => "malformed",
            Self::InvalidId => "invalid_id",
            Self::CurrentSession => "current_session",
            Self::NotATokenSession => "not_a_token_session",
            Self::Unauthenticated => "unauthenticated",
            Self::AalRequired(_) => "aal_required",
            Self::NotFound => "not_found",
            Self::AdminNotConfigured => "admin_not_configured",
            Self::AdminRefused(_) => "admin_refused",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCredential => f.write_str("the request carries no Kratos credential"),
            Self::Malformed(why) => write!(f, "malformed credential ({why})"),
            Self::InvalidId => f.write_str("the id is not a UUID"),
            Self::CurrentSession => f.write_str(
                "Kratos does not revoke the session the request was made with; log out instead",
            ),
            Self::NotATokenSession => {
                f.write_str("API logout needs a session token, not a session cookie")
            }
            Self::Unauthenticated => f.write_str("Kratos did not accept the credential"),
            Self::AalRequired(_) => {
                f.write_str("a higher authenticator assurance level is required")
            }
            Self::NotFound => f.write_str("Kratos found no such session or identity (404)"),
            Self::AdminNotConfigured => f.write_str("the Kratos admin API is not configured"),
            Self::AdminRefused(status) => {
                write!(f, "the Kratos admin API refused the API key ({status})")
            }
            Self::RateLimited { .. } => f.write_str("Kratos rate limited the call (429)"),
            Self::Unavailable(reason) => write!(f, "Kratos unavailable: {reason}"),
        }
    }
}

impl std::error::Error for LifecycleError {}

/// Maps whoami's answer to an outcome, per API.md §a.
pub(crate) fn interpret_whoami(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
    match status {
        StatusCode::OK => match serde_json::from_slice::<Session>(body) {
            Ok(session) if !session.active => Outcome::Unauthenticated(Unauthenticated::Inactive),
            Ok(session) if !session.is_valid_at(OffsetDateTime::now_utc()) => {
                Outcome::Unauthenticated(Unauthenticated::Expired)
            }
            Ok(session) => Outcome::Authenticated(KratosSession::new(session.into())),
            Err(_) => Outcome::Unavailable(Unavailable::InvalidBody),
        },
        StatusCode::UNAUTHORIZED => Outcome::Unauthenticated(Unauthenticated::Rejected),
        // Kratos's Go server, or a proxy, refusing the lookup's headers: the credential cannot
        // be checked, which says nothing about Kratos's health.
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            Outcome::Unauthenticated(Unauthenticated::TooLarge)
        }
        StatusCode::FORBIDDEN => match aal_required(headers, body) {
            Some(step_up) => Outcome::AalRequired(step_up),
            None => Outcome::Unavailable(Unavailable::Status(status)),
        },
        // Ory's guidance is to prefer `x-ratelimit-reset` (API.md §f).
        StatusCode::TOO_MANY_REQUESTS => Outcome::Unavailable(Unavailable::RateLimited {
            retry_after: parse_seconds(headers, "x-ratelimit-reset")
                .or_else(|| parse_seconds(headers, "retry-after"))
                .map(|wait| wait.min(MAX_RETRY_AFTER)),
        }),
        other => Outcome::Unavailable(Unavailable::Status(other)),
    }
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

fn aal_required(headers: &HeaderMap, body: &[u8]) -> Option<AalRequired> {
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

/// Whole seconds from a header (`Retry-After`'s delta-seconds form, `Ory-Session-Cache-For`).
fn parse_seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

async fn read_body(response: reqwest::Response) -> Result<Vec<u8>, Unavailable> {
    read_body_up_to(response, MAX_BODY_LEN).await
}

async fn read_body_up_to(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Unavailable> {
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
    Ok(body)
}

fn classify(error: &reqwest::Error) -> Unavailable {
    if error.is_timeout() {
        Unavailable::Timeout
    } else {
        Unavailable::Transport
    }
}

/// `base` + `path`, keeping any path prefix `base` has (Kratos behind `/kratos/`, say).
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}/{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_canonical_uuids_and_become_lowercase() {
        assert_eq!(
            canonical_id("6F5E3C4A-0000-4000-8000-00000000000A").unwrap(),
            "6f5e3c4a-0000-4000-8000-00000000000a"
        );
        for bad in [
            "",
            "whoami",
            "6f5e3c4a00004000800000000000000a",
            "6f5e3c4a-0000-4000-8000-00000000000a/",
            "6f5e3c4a-0000-4000-8000-0000000000%2F",
            "../../admin/identities/x/sessions",
            "6f5e3c4a-0000-4000-8000-00000000000\u{e9}",
        ] {
            assert_eq!(canonical_id(bad), Err(LifecycleError::InvalidId), "{bad:?}");
        }
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

    #[test]
    fn the_next_page_comes_from_the_link_header_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            HeaderValue::from_static(
                "<http://k/sessions?page=0&page_size=2&page_token=0&per_page=2>; rel=\"first\",\
                 <http://k/sessions?page=1&page_size=2&page_token=2&per_page=2>; rel=\"next\",\
                 <http://k/sessions?page=2&page_size=2&page_token=4&per_page=2>; rel=\"last\"",
            ),
        );
        let next = next_page(&headers, Some(2)).unwrap();
        assert_eq!((next.token(), next.size()), (Some("2"), Some(2)));
        headers.insert(
            header::LINK,
            HeaderValue::from_static("<http://k/sessions?page_token=0>; rel=\"first\""),
        );
        assert!(next_page(&headers, None).is_none());
        for garbage in ["", "nonsense", "<>; rel=next", "<::>; rel=\"next\""] {
            headers.insert(header::LINK, HeaderValue::from_static(garbage));
            assert!(next_page(&headers, None).is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn only_kratoss_current_session_400_is_current_session() {
        assert!(refuses_current_session(
            br#"{"error":{"code":400,"status":"Bad Request","message":"cannot revoke current session"}}"#
        ));
        assert!(!refuses_current_session(
            br#"{"error":{"code":400,"message":"invalid UUID length: 3"}}"#
        ));
        assert!(!refuses_current_session(b"current session"));
    }

    #[test]
    fn join_keeps_prefixes() {
        let base = Url::parse("https://x.example/kratos/").unwrap();
        assert_eq!(
            join(&base, "sessions/whoami").as_str(),
            "https://x.example/kratos/sessions/whoami"
        );
        let base = Url::parse("http://127.0.0.1:4433").unwrap();
        assert_eq!(
            join(&base, "sessions/whoami").as_str(),
            "http://127.0.0.1:4433/sessions/whoami"
        );
    }

    fn outcome_of(status: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        interpret_whoami(StatusCode::from_u16(status).unwrap(), &map, body.as_bytes())
    }

    #[test]
    fn a_200_is_trusted_only_for_an_active_unexpired_session() {
        let fixture = include_str!("../tests/fixtures/whoami-docs-example.json");
        // The docs example expired in 2022: a 200 carrying it is not a session to serve.
        assert!(matches!(
            outcome_of(200, &[], fixture),
            Outcome::Unauthenticated(Unauthenticated::Expired)
        ));
        assert!(matches!(
            outcome_of(200, &[], r#"{"id":"s","active":false}"#),
            Outcome::Unauthenticated(Unauthenticated::Inactive)
        ));
        assert!(matches!(
            outcome_of(
                200,
                &[],
                r#"{"id":"s","active":true,"expires_at":"2999-01-01T00:00:00Z"}"#
            ),
            Outcome::Authenticated(_)
        ));
        for garbage in ["", "{", "[]", r#"{"active":true}"#] {
            assert!(
                matches!(
                    outcome_of(200, &[], garbage),
                    Outcome::Unavailable(Unavailable::InvalidBody)
                ),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn statuses_map_to_outcomes_never_collapsed() {
        assert!(matches!(
            outcome_of(401, &[], "{}"),
            Outcome::Unauthenticated(Unauthenticated::Rejected)
        ));
        match outcome_of(429, &[("retry-after", "12")], "") {
            Outcome::Unavailable(unavailable) => {
                assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(12)))
            }
            other => panic!("unexpected {other:?}"),
        }
        // Ory Network's x-ratelimit-reset (seconds until the window resets) wins over Retry-After.
        match outcome_of(
            429,
            &[("retry-after", "12"), ("x-ratelimit-reset", "3")],
            "",
        ) {
            Outcome::Unavailable(unavailable) => {
                assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(3)))
            }
            other => panic!("unexpected {other:?}"),
        }
        match outcome_of(
            429,
            &[("retry-after", "12"), ("x-ratelimit-reset", "soon")],
            "",
        ) {
            Outcome::Unavailable(unavailable) => {
                assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(12)))
            }
            other => panic!("unexpected {other:?}"),
        }
        // An HTTP-date Retry-After is not understood: the default applies later.
        match outcome_of(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], "") {
            Outcome::Unavailable(unavailable) => assert_eq!(unavailable.retry_after(), None),
            other => panic!("unexpected {other:?}"),
        }
        for status in [500, 502, 503, 302, 404, 400] {
            assert!(
                matches!(
                    outcome_of(status, &[], ""),
                    Outcome::Unavailable(Unavailable::Status(_))
                ),
                "{status}"
            );
        }
        // The Ory-Error-Id header alone identifies a step-up.
        assert!(matches!(
            outcome_of(
                403,
                &[("ory-error-id", "session_aal2_required")],
                "not json"
            ),
            Outcome::AalRequired(AalRequired {
                redirect_browser_to: None,
                ..
            })
        ));
    }

    #[test]
    fn step_up_is_recognised_from_the_real_body() {
        let body = br#"{"error":{"id":"session_aal2_required","code":403,"status":"Forbidden","details":{"redirect_browser_to":"https://k/self-service/login/browser?aal=aal2"},"message":"m"},"redirect_browser_to":"https://k/self-service/login/browser?aal=aal2"}"#;
        match interpret_whoami(StatusCode::FORBIDDEN, &HeaderMap::new(), body) {
            Outcome::AalRequired(step_up) => assert_eq!(
                step_up.redirect_browser_to.as_deref(),
                Some("https://k/self-service/login/browser?aal=aal2")
            ),
            other => panic!("unexpected {other:?}"),
        }
        let other_403 = br#"{"error":{"code":403,"message":"nope"}}"#;
        assert!(matches!(
            interpret_whoami(StatusCode::FORBIDDEN, &HeaderMap::new(), other_403),
            Outcome::Unavailable(Unavailable::Status(StatusCode::FORBIDDEN))
        ));
    }
}
