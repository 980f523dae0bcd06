//! Kratos's routes: matching a request to an endpoint, and answering it as Kratos would.
//!
//! Every function here is synchronous and takes the store lock at most once; faults, latency and
//! recording happen before, in the server.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{LOCATION, SET_COOKIE};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use time::OffsetDateTime;

use super::browser;
use super::bulk;
use super::credentials::{bearer_token, lossy, Presented};
use super::fault::ExtendResponse;
use super::ids;
use super::json::{self, Expand, IdentityView, KratosError, TokenizedSession};
use super::record::Endpoint;
use super::reply::{
    cookie_header, error, insert, json_reply, no_content, percent_decode, query_pairs, Reply,
};
use super::shared::Shared;
use super::store::{CookieSeen, Identity, Session, Store};

/// whoami's 401 reason (`session/error.go` `ErrNoSessionFound`).
const NO_SESSION_REASON: &str = "No valid session credentials found in the request.";
/// The 401 reason of the other `/sessions` routes.
const NO_COOKIE_REASON: &str = "No valid session cookie found.";
const NOT_LOCATED: &str = "Unable to locate the resource";
const LOGOUT_FORBIDDEN_REASON: &str =
    "The provided Ory Session Token could not be found, is invalid, or otherwise malformed.";
/// Kratos's `x/pagination` defaults and limits.
const DEFAULT_PAGE_SIZE: usize = 250;
const MAX_PAGE_SIZE: usize = 500;
const MAX_PER_PAGE: usize = 1000;

/// A matched route, with its raw (percent-decoded) `{id}` where it has one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Whoami,
    ListMySessions,
    RevokeMyOtherSessions,
    RevokeMySession(String),
    ExtendSession(String),
    AdminGetSession(String),
    AdminDisableSession(String),
    AdminDeleteIdentitySessions(String),
    AdminSessionsBulk,
    LogoutApi,
    LoginBrowser,
    LoginPage,
    Login,
    Welcome,
    LogoutBrowser,
    Logout,
    /// A tokenizer template's public JWKS, by template name.
    Jwks(String),
    NotFound,
}

impl Route {
    pub(crate) fn parse(method: &Method, path: &str) -> Self {
        let segments: Vec<Cow<'_, str>> = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .map(|s| percent_decode(s, false))
            .collect();
        let segments: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
        // Go's `{id}` wildcard never matches an empty segment.
        let id = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let route = match (method, segments.as_slice()) {
            (_, ["sessions", "whoami"]) => Some(Self::Whoami),
            (&Method::GET, ["sessions"]) => Some(Self::ListMySessions),
            (&Method::DELETE, ["sessions"]) => Some(Self::RevokeMyOtherSessions),
            (&Method::DELETE, ["sessions", sid]) => id(sid).map(Self::RevokeMySession),
            (&Method::PATCH, ["admin", "sessions", sid, "extend"]) => {
                id(sid).map(Self::ExtendSession)
            }
            (&Method::GET, ["admin", "sessions", sid]) => id(sid).map(Self::AdminGetSession),
            (&Method::DELETE, ["admin", "sessions", sid]) => id(sid).map(Self::AdminDisableSession),
            (&Method::POST, ["admin", "sessions"]) => Some(Self::AdminSessionsBulk),
            (&Method::DELETE, ["admin", "identities", iid, "sessions"]) => {
                id(iid).map(Self::AdminDeleteIdentitySessions)
            }
            (&Method::DELETE, ["self-service", "logout", "api"]) => Some(Self::LogoutApi),
            (&Method::GET, ["self-service", "login", "browser"]) => Some(Self::LoginBrowser),
            (&Method::GET, ["login"]) => Some(Self::LoginPage),
            (&Method::POST, ["self-service", "login"]) => Some(Self::Login),
            (&Method::GET, ["welcome"]) => Some(Self::Welcome),
            (&Method::GET, ["self-service", "logout", "browser"]) => Some(Self::LogoutBrowser),
            (&Method::GET, ["self-service", "logout"]) => Some(Self::Logout),
            (&Method::GET, [".well-known", "stand-in", "jwks", file]) => file
                .strip_suffix(super::tokenizer::JWKS_PATH_SUFFIX)
                .filter(|name| !name.is_empty())
                .map(|name| Self::Jwks(name.to_owned())),
            _ => None,
        };
        route.unwrap_or(Self::NotFound)
    }

    pub(crate) fn endpoint(&self) -> Endpoint {
        match self {
            Self::Whoami => Endpoint::Whoami,
            Self::ListMySessions => Endpoint::ListMySessions,
            Self::RevokeMyOtherSessions => Endpoint::RevokeMyOtherSessions,
            Self::RevokeMySession(_) => Endpoint::RevokeMySession,
            Self::ExtendSession(_) => Endpoint::ExtendSession,
            Self::AdminGetSession(_) => Endpoint::AdminGetSession,
            Self::AdminDisableSession(_) => Endpoint::AdminDisableSession,
            Self::AdminDeleteIdentitySessions(_) => Endpoint::AdminDeleteIdentitySessions,
            Self::AdminSessionsBulk => Endpoint::AdminSessionsBulk,
            Self::LogoutApi => Endpoint::LogoutApi,
            Self::LoginBrowser => Endpoint::LoginBrowser,
            Self::LoginPage | Self::Welcome => Endpoint::LoginUi,
            Self::Login => Endpoint::Login,
            Self::LogoutBrowser => Endpoint::LogoutBrowser,
            Self::Logout => Endpoint::Logout,
            Self::Jwks(_) => Endpoint::Jwks,
            Self::NotFound => Endpoint::Other,
        }
    }

    /// A flow browsers go through: its errors are pages for them (JSON for JSON requests).
    fn is_browser_flow(&self) -> bool {
        matches!(
            self,
            Self::LoginBrowser | Self::LoginPage | Self::Login | Self::Welcome | Self::Logout
        )
    }

    fn is_admin(&self) -> bool {
        matches!(
            self,
            Self::ExtendSession(_)
                | Self::AdminGetSession(_)
                | Self::AdminDisableSession(_)
                | Self::AdminDeleteIdentitySessions(_)
                | Self::AdminSessionsBulk
        )
    }
}

/// The session a request is about, for per-session counters: the one its credential resolves to
/// (even if revoked or expired), the token in an API logout body, or the `{id}` of an admin route.
pub(crate) fn session_of(
    shared: &Shared,
    route: &Route,
    parts: &Parts,
    body: &Bytes,
) -> Option<String> {
    match route {
        Route::Whoami
        | Route::ListMySessions
        | Route::RevokeMyOtherSessions
        | Route::RevokeMySession(_)
        | Route::LoginBrowser
        | Route::Login
        | Route::Welcome
        | Route::LogoutBrowser
        | Route::Logout => {
            let presented = Presented::from_headers(&parts.headers, &shared.config.cookie_name);
            let store = shared.store();
            let token = store.extract(&presented).token?;
            store.by_token(&token).map(|s| s.id.clone())
        }
        Route::LogoutApi => {
            let token = logout_token(body).ok()?;
            shared.store().by_token(&token).map(|s| s.id.clone())
        }
        Route::ExtendSession(id)
        | Route::AdminGetSession(id)
        | Route::AdminDisableSession(id)
        | Route::AdminDeleteIdentitySessions(id) => Some(ids::canonical(id)),
        Route::AdminSessionsBulk | Route::LoginPage | Route::NotFound => None,
        Route::Jwks(_) => None,
    }
}

/// Answers a request that no fault intercepted.
pub(crate) fn respond(shared: &Shared, route: &Route, parts: &Parts, body: &Bytes) -> Reply {
    if route.is_admin() && !admin_authorized(shared, parts) {
        return error(&KratosError::new(StatusCode::UNAUTHORIZED), parts);
    }
    let now = OffsetDateTime::now_utc();
    let result = match route {
        Route::Whoami => Ok(whoami(shared, parts, now)),
        Route::ListMySessions => list_my_sessions(shared, parts, now),
        Route::RevokeMyOtherSessions => revoke_my_other_sessions(shared, parts, now),
        Route::RevokeMySession(id) => revoke_my_session(shared, parts, id, now),
        Route::ExtendSession(id) => extend_session(shared, id, now),
        Route::AdminGetSession(id) => admin_get_session(shared, parts, id, now),
        Route::AdminDisableSession(id) => admin_disable_session(shared, id),
        Route::AdminDeleteIdentitySessions(id) => admin_delete_identity_sessions(shared, id),
        Route::AdminSessionsBulk => bulk::manage_sessions(shared, body),
        Route::LogoutApi => logout_api(shared, body),
        Route::LoginBrowser => browser::create_login_flow(shared, parts, now),
        Route::LoginPage => Ok(browser::login_page(shared, parts, now)),
        Route::Login => browser::complete_login(shared, parts, body, now),
        Route::Welcome => Ok(browser::welcome_page(shared, parts, now)),
        Route::LogoutBrowser => browser::create_logout_flow(shared, parts, now),
        Route::Logout => browser::complete_logout(shared, parts, now),
        Route::Jwks(name) => jwks(shared, name),
        Route::NotFound => Err(KratosError::new(StatusCode::NOT_FOUND)),
    };
    result.unwrap_or_else(|err| {
        if route.is_browser_flow() {
            browser::refusal(shared, &err, parts)
        } else {
            error(&err, parts)
        }
    })
}

fn admin_authorized(shared: &Shared, parts: &Parts) -> bool {
    let Some(expected) = &shared.config.admin_token else {
        return true;
    };
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| bearer_token(&lossy(v.as_bytes())))
        .is_some_and(|token| token == *expected)
}

/// `/sessions/whoami`, following Kratos's order: extract the credential, find the session, check
/// it is active, check the AAL, tokenize (`tokenize_as`), then set headers and refresh the cookie.
fn whoami(shared: &Shared, parts: &Parts, now: OffsetDateTime) -> Reply {
    let config = &shared.config;
    let cache_max_age = shared.knobs().session_cache_for;
    let presented = Presented::from_headers(&parts.headers, &config.cookie_name);
    let mut store = shared.store();
    let extracted = store.extract(&presented);
    let unauthorized = KratosError::new(StatusCode::UNAUTHORIZED).reason(NO_SESSION_REASON);

    let Some(token) = extracted.token else {
        let mut reply = error(&unauthorized, parts);
        if cache_max_age.is_some() {
            // Kratos tells its edge cache to remember "no credentials" for a minute.
            insert(&mut reply, "ory-session-cache-for", "60");
        }
        return reply;
    };
    let Some(session) = store.by_token(&token) else {
        return error(&unauthorized, parts);
    };
    if !store.is_active(session, now) {
        return error(&unauthorized, parts);
    }
    if store.needs_step_up(session) {
        return error(&KratosError::aal2_required(&config.public_url), parts);
    }
    // An unknown template or a failed tokenization ends here: no headers, no cookie refresh.
    let tokenized =
        match tokenize_as(parts).map(|name| tokenize(shared, &name, &store, session, now)) {
            Some(Ok(jwt)) => Some(jwt),
            Some(Err(err)) => return error(&err, parts),
            None => None,
        };

    let session_id = session.id.clone();
    let set_cookie = match refresh_cookie(&mut store, config, extracted.cookie, &session_id, now) {
        Ok(set_cookie) => set_cookie,
        Err(err) => return error(&err, parts),
    };
    let Some(session) = store.session(&session_id) else {
        return error(&unauthorized, parts);
    };
    let identity = store.identity(&session.identity_id);
    let mut reply = match whoami_body(config, session, identity, tokenized.as_deref()) {
        Ok(body) => json_reply(StatusCode::OK, body),
        Err(err) => return error(&err, parts),
    };
    insert(
        &mut reply,
        "x-kratos-authenticated-identity-id",
        &session.identity_id,
    );
    // Kratos sets the cache header only when no tokenization was asked for.
    if let Some(max_age) = cache_max_age.filter(|_| tokenized.is_none()) {
        let until = (session.expires_at - now).as_seconds_f64().max(0.0);
        let seconds = until.min(max_age.as_secs_f64()).round();
        insert(
            &mut reply,
            "ory-session-cache-for",
            &format!("{seconds:.0}"),
        );
    }
    if let Some(cookie) = set_cookie {
        insert(&mut reply, SET_COOKIE.as_str(), &cookie);
    }
    reply
}

/// whoami's 200 body: the session with its identity and devices, and `tokenized` when asked.
fn whoami_body(
    config: &super::shared::Config,
    session: &Session,
    identity: Option<&Identity>,
    tokenized: Option<&str>,
) -> Result<Vec<u8>, KratosError> {
    let expand = Expand {
        identity: Some(IdentityView::Public),
        devices: true,
    };
    let session = json::session(session, identity, true, expand, &config.public_url);
    let body = match tokenized {
        Some(tokenized) => serde_json::to_vec(&TokenizedSession { session, tokenized }),
        None => serde_json::to_vec(&session),
    };
    body.map_err(|_| KratosError::new(StatusCode::INTERNAL_SERVER_ERROR))
}

/// The template whoami is asked to tokenize with: the first `tokenize_as` in the query, as Go's
/// `Query().Get`; an empty one asks for none.
fn tokenize_as(parts: &Parts) -> Option<String> {
    query_pairs(parts.uri.query().unwrap_or(""))
        .into_iter()
        .find(|(key, _)| key == "tokenize_as")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Kratos's `TokenizeSession` for this session; `iss` is the public base URL as Kratos writes
/// its default one, with a trailing slash.
fn tokenize(
    shared: &Shared,
    name: &str,
    store: &Store,
    session: &Session,
    now: OffsetDateTime,
) -> Result<String, KratosError> {
    let subject = super::tokenizer::SessionSubject {
        session_id: &session.id,
        identity_id: &session.identity_id,
        external_id: store
            .identity(&session.identity_id)
            .and_then(|identity| identity.external_id.as_deref()),
    };
    let issuer = format!("{}/", shared.config.public_url);
    shared.tokenizers().tokenize(name, &subject, &issuer, now)
}

/// `GET /.well-known/stand-in/jwks/{template}.json`: the template's public keys.
fn jwks(shared: &Shared, name: &str) -> Result<Reply, KratosError> {
    let tokenizers = shared.tokenizers();
    let tokenizer = tokenizers
        .get(name)
        .ok_or_else(|| KratosError::new(StatusCode::NOT_FOUND))?;
    let body = serde_json::to_vec(&tokenizer.jwks())
        .map_err(|_| KratosError::new(StatusCode::INTERNAL_SERVER_ERROR))?;
    Ok(json_reply(StatusCode::OK, body))
}

/// Kratos's `RefreshCookie`: any session cookie in the request must decode (bug #2945 when it
/// does not), and one issued for an older expiry than the session's is replaced: the
/// `Set-Cookie` to send, if any.
fn refresh_cookie(
    store: &mut Store,
    config: &super::shared::Config,
    seen: CookieSeen,
    session_id: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, KratosError> {
    let Some(expires_at) = store.session(session_id).map(|session| session.expires_at) else {
        return Ok(None);
    };
    match seen {
        CookieSeen::Absent => Ok(None),
        CookieSeen::Undecodable => Err(KratosError::new(StatusCode::INTERNAL_SERVER_ERROR)
            .message("securecookie: the value is not valid")),
        CookieSeen::Decodable {
            expires_at: issued_for,
        } if issued_for < expires_at => match store.issue_cookie(session_id) {
            Ok(value) => Ok(value.map(|value| cookie_header(config, &value, expires_at, now))),
            Err(_) => Err(KratosError::new(StatusCode::INTERNAL_SERVER_ERROR)),
        },
        CookieSeen::Decodable { .. } => Ok(None),
    }
}

/// Authenticates a `/sessions` route caller like whoami, with that family's 401 reason.
fn caller<'s>(
    store: &'s Store,
    shared: &Shared,
    parts: &Parts,
    now: OffsetDateTime,
) -> Result<&'s Session, KratosError> {
    let presented = Presented::from_headers(&parts.headers, &shared.config.cookie_name);
    store
        .usable_session(&presented, now)
        .ok_or_else(|| KratosError::new(StatusCode::UNAUTHORIZED).reason(NO_COOKIE_REASON))
}

/// `GET /sessions`: the caller's other active sessions, newest first, paginated.
fn list_my_sessions(
    shared: &Shared,
    parts: &Parts,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let store = shared.store();
    let current = caller(&store, shared, parts, now)?;
    if store.needs_step_up(current) {
        return Err(KratosError::aal2_required(&shared.config.public_url));
    }
    let others = store.other_active_sessions(current, now);
    let page = Page::from_query(parts.uri.query().unwrap_or(""));
    let expand = Expand {
        identity: Some(IdentityView::Public),
        devices: true,
    };
    let items: Vec<_> = others
        .iter()
        .skip(page.offset)
        .take(page.size)
        .map(|s| {
            let identity = store.identity(&s.identity_id);
            json::session(s, identity, true, expand, &shared.config.public_url)
        })
        .collect();
    let body = serde_json::to_vec(&items)
        .map_err(|_| KratosError::new(StatusCode::INTERNAL_SERVER_ERROR))?;
    let mut reply = json_reply(StatusCode::OK, body);
    insert(&mut reply, "x-total-count", &others.len().to_string());
    insert(
        &mut reply,
        "link",
        &page.link_header(
            &format!("{}/sessions", shared.config.public_url),
            others.len(),
        ),
    );
    Ok(reply)
}

/// `DELETE /sessions`: revoke all the caller's other sessions.
fn revoke_my_other_sessions(
    shared: &Shared,
    parts: &Parts,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let mut store = shared.store();
    let current = caller(&store, shared, parts, now)?;
    let (identity_id, current_id) = (current.identity_id.clone(), current.id.clone());
    let count = store.revoke_others(&identity_id, Some(&current_id));
    Ok(json_reply(
        StatusCode::OK,
        format!(r#"{{"count":{count}}}"#).into_bytes(),
    ))
}

/// `DELETE /sessions/{id}`: revoke one of the caller's other sessions.
fn revoke_my_session(
    shared: &Shared,
    parts: &Parts,
    raw_id: &str,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let mut store = shared.store();
    let current = caller(&store, shared, parts, now)?;
    let id = parse_uuid(raw_id)?;
    if id == current.id {
        return Err(
            KratosError::new(StatusCode::BAD_REQUEST).message("cannot revoke current session")
        );
    }
    let identity_id = current.identity_id.clone();
    // Kratos's UPDATE .. WHERE id = ? AND identity_id = ? does not report a miss: always 204.
    store.revoke_of_identity(&identity_id, &id);
    Ok(no_content())
}

/// `PATCH /admin/sessions/{id}/extend`.
fn extend_session(
    shared: &Shared,
    raw_id: &str,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let id = parse_uuid(raw_id)?;
    let mode = shared.knobs().extend_response;
    let config = &shared.config;
    let mut store = shared.store();
    if !store.extend(&id, now, config.lifespan, config.earliest_possible_extend) {
        return Err(not_located());
    }
    if mode == ExtendResponse::NoContent {
        return Ok(no_content());
    }
    let session = store.session(&id).ok_or_else(not_located)?;
    let active = store.is_active(session, now);
    let expand = Expand {
        identity: Some(IdentityView::Public),
        devices: false,
    };
    let identity = store.identity(&session.identity_id);
    let body = json::session(session, identity, active, expand, &config.public_url);
    let body = serde_json::to_vec(&body)
        .map_err(|_| KratosError::new(StatusCode::INTERNAL_SERVER_ERROR))?;
    Ok(json_reply(StatusCode::OK, body))
}

/// `GET /admin/sessions/{id}`: any session, active or not; `expand=identity` / `expand=devices`.
fn admin_get_session(
    shared: &Shared,
    parts: &Parts,
    raw_id: &str,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let config = &shared.config;
    if raw_id == "whoami" {
        let mut reply = Response::new(Full::new(Bytes::new()));
        *reply.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        insert(
            &mut reply,
            LOCATION.as_str(),
            &format!("{}/sessions/whoami", config.public_url),
        );
        return Ok(reply);
    }
    let id = parse_uuid(raw_id)?;
    let mut expand = Expand {
        identity: None,
        devices: false,
    };
    for (key, value) in query_pairs(parts.uri.query().unwrap_or("")) {
        if key != "expand" {
            continue;
        }
        match value.to_ascii_lowercase().as_str() {
            "identity" => expand.identity = Some(IdentityView::Admin),
            "devices" => expand.devices = true,
            _ => {
                return Err(KratosError::new(StatusCode::BAD_REQUEST)
                    .reason(format!("Could not parse expand option: {value}")))
            }
        }
    }
    let store = shared.store();
    let session = store.session(&id).ok_or_else(not_located)?;
    let active = store.is_active(session, now);
    let identity = store.identity(&session.identity_id);
    let body = json::session(session, identity, active, expand, &config.public_url);
    let body = serde_json::to_vec(&body)
        .map_err(|_| KratosError::new(StatusCode::INTERNAL_SERVER_ERROR))?;
    Ok(json_reply(StatusCode::OK, body))
}

/// `DELETE /admin/sessions/{id}`: deactivate (data is kept).
fn admin_disable_session(shared: &Shared, raw_id: &str) -> Result<Reply, KratosError> {
    let id = parse_uuid(raw_id)?;
    if shared.store().revoke(&id) {
        Ok(no_content())
    } else {
        Err(not_located())
    }
}

/// `DELETE /admin/identities/{id}/sessions`: delete every session of the identity; 404 if none.
fn admin_delete_identity_sessions(shared: &Shared, raw_id: &str) -> Result<Reply, KratosError> {
    let id = parse_uuid(raw_id)?;
    if shared.store().delete_identity_sessions(&id) > 0 {
        Ok(no_content())
    } else {
        Err(not_located())
    }
}

/// `DELETE /self-service/logout/api` with `{"session_token": ".."}`.
fn logout_api(shared: &Shared, body: &Bytes) -> Result<Reply, KratosError> {
    let token = logout_token(body)?;
    if shared.store().revoke_by_token(&token) {
        Ok(no_content())
    } else {
        Err(KratosError::new(StatusCode::FORBIDDEN).reason(LOGOUT_FORBIDDEN_REASON))
    }
}

/// The `session_token` of an API logout body. Kratos decodes the body as JSON whatever its
/// content type, and validates it against a schema that requires the field.
fn logout_token(body: &Bytes) -> Result<String, KratosError> {
    let bad = |reason: &str| KratosError::new(StatusCode::BAD_REQUEST).reason(reason);
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("Unable to decode JSON payload."))?;
    match value.get("session_token") {
        Some(serde_json::Value::String(token)) if !token.is_empty() => Ok(token.clone()),
        Some(_) => Err(bad("session_token must be a non-empty string.")),
        None => Err(bad(r#"missing properties: "session_token""#)),
    }
}

fn parse_uuid(raw: &str) -> Result<String, KratosError> {
    ids::parse_uuid(raw)
        .map_err(|message| KratosError::new(StatusCode::BAD_REQUEST).message(message))
}

fn not_located() -> KratosError {
    KratosError::new(StatusCode::NOT_FOUND).message(NOT_LOCATED)
}

/// Pagination of `GET /sessions`: `page_token`/`page_size` when either is given, else the legacy
/// `page`/`per_page`. The page token is the decimal offset (opaque to clients, as Kratos's).
#[derive(Debug, PartialEq, Eq)]
struct Page {
    offset: usize,
    size: usize,
}

impl Page {
    fn from_query(query: &str) -> Self {
        let pairs = query_pairs(query);
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse::<usize>().ok())
        };
        let size = |key: &str, max: usize| match get(key) {
            Some(0) | None => DEFAULT_PAGE_SIZE,
            Some(n) => n.min(max),
        };
        if pairs
            .iter()
            .any(|(k, _)| k == "page_token" || k == "page_size")
        {
            Self {
                offset: get("page_token").unwrap_or(0),
                size: size("page_size", MAX_PAGE_SIZE),
            }
        } else {
            let size = size("per_page", MAX_PER_PAGE);
            Self {
                offset: get("page").unwrap_or(0).saturating_mul(size),
                size,
            }
        }
    }

    /// `Link` with first, prev (if any), next (if any) and last, each carrying both pagination
    /// styles, like Kratos's migration paginator.
    fn link_header(&self, base: &str, total: usize) -> String {
        let size = self.size;
        let link = |offset: usize, rel: &str| {
            format!(
                "<{base}?page={}&page_size={size}&page_token={offset}&per_page={size}>; rel=\"{rel}\"",
                offset / size
            )
        };
        let last = total.saturating_sub(1) / size * size;
        let mut links = vec![link(0, "first")];
        if self.offset > 0 {
            links.push(link(self.offset.saturating_sub(size), "prev"));
        }
        if self.offset.saturating_add(size) < total {
            links.push(link(self.offset + size, "next"));
        }
        links.push(link(last, "last"));
        links.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_kratos_paths() {
        let r = |m: Method, p: &str| Route::parse(&m, p);
        assert_eq!(r(Method::POST, "/sessions/whoami"), Route::Whoami);
        assert_eq!(r(Method::DELETE, "/sessions/whoami"), Route::Whoami);
        assert_eq!(r(Method::GET, "/sessions"), Route::ListMySessions);
        assert_eq!(r(Method::POST, "/sessions"), Route::NotFound);
        assert_eq!(r(Method::DELETE, "/sessions/"), Route::NotFound);
        assert_eq!(
            r(Method::DELETE, "/sessions/x%2Fy"),
            Route::RevokeMySession("x/y".into())
        );
        assert_eq!(
            r(Method::PATCH, "/admin/sessions/abc/extend"),
            Route::ExtendSession("abc".into())
        );
        assert_eq!(r(Method::PATCH, "/sessions/abc/extend"), Route::NotFound);
        assert_eq!(r(Method::POST, "/admin/sessions"), Route::AdminSessionsBulk);
        assert_eq!(r(Method::PUT, "/admin/sessions"), Route::NotFound);
        assert_eq!(r(Method::GET, "/"), Route::NotFound);
        assert_eq!(r(Method::GET, ""), Route::NotFound);
    }

    #[test]
    fn jwks_route_takes_the_template_name() {
        let r = |m: Method, p: &str| Route::parse(&m, p);
        let prefix = super::super::tokenizer::JWKS_PATH_PREFIX;
        assert_eq!(
            r(Method::GET, &format!("{prefix}api.json")),
            Route::Jwks("api".into())
        );
        assert_eq!(
            r(Method::GET, &format!("{prefix}a%20b.json.json")),
            Route::Jwks("a b.json".into())
        );
        assert_eq!(r(Method::GET, &format!("{prefix}.json")), Route::NotFound);
        assert_eq!(r(Method::GET, &format!("{prefix}api")), Route::NotFound);
        assert_eq!(
            r(Method::POST, &format!("{prefix}api.json")),
            Route::NotFound
        );
        assert_eq!(
            r(Method::GET, "/.well-known/stand-in/jwks/a/b.json"),
            Route::NotFound
        );
    }

    #[test]
    fn pagination_reads_both_styles() {
        assert_eq!(
            Page::from_query(""),
            Page {
                offset: 0,
                size: 250
            }
        );
        assert_eq!(
            Page::from_query("page_size=2&page_token=4"),
            Page { offset: 4, size: 2 }
        );
        assert_eq!(
            Page::from_query("per_page=3&page=2"),
            Page { offset: 6, size: 3 }
        );
        assert_eq!(
            Page::from_query("page_size=100000"),
            Page {
                offset: 0,
                size: 500
            }
        );
        assert_eq!(
            Page::from_query("page=99999999999999999999999&per_page=x"),
            Page {
                offset: 0,
                size: 250
            }
        );
        assert_eq!(
            Page::from_query(&format!("page={}&per_page=1000", usize::MAX)),
            Page {
                offset: usize::MAX,
                size: 1000
            }
        );
    }

    #[test]
    fn link_header_has_the_pages_that_exist() {
        let page = Page { offset: 2, size: 2 };
        let link = page.link_header("http://k/sessions", 5);
        assert_eq!(
            link,
            "<http://k/sessions?page=0&page_size=2&page_token=0&per_page=2>; rel=\"first\",\
             <http://k/sessions?page=0&page_size=2&page_token=0&per_page=2>; rel=\"prev\",\
             <http://k/sessions?page=2&page_size=2&page_token=4&per_page=2>; rel=\"next\",\
             <http://k/sessions?page=2&page_size=2&page_token=4&per_page=2>; rel=\"last\""
        );
    }
}
