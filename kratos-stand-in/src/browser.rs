//! Kratos's browser flows, as far as a first run and a browser test need them: the login flow
//! (with `aal=aal2` and `refresh=true`), a plain HTML login page in place of Kratos's UI, and the
//! browser logout flow.
//!
//! The login page signs in one person, the demo user, with one factor or two. Flows are
//! single-use and expire; `return_to` must point at a loopback address, as Kratos's
//! `allowed_return_urls` would be set for a local app. No CSRF token: the page is for loopback
//! demos and tests, never for a deployment.

use bytes::Bytes;
use http::header::SET_COOKIE;
use http::request::Parts;
use http::StatusCode;
use time::OffsetDateTime;
use url::Url;

use super::credentials::Presented;
use super::ids;
use super::json::KratosError;
use super::reply::{
    clearing_cookie_header, cookie_header, error, escape_html, html_reply, insert, json_reply,
    no_content, query_pairs, see_other, wants_json, Reply,
};
use super::shared::Shared;
use super::store::{
    add, Aal, Factor, LoginFlow, NewSession, Session, Store, DEMO_EMAIL, LOGIN_FLOW_LIFESPAN,
};

/// Where the login page lives (Kratos's `selfservice.flows.login.ui_url`).
pub(crate) const LOGIN_PAGE_PATH: &str = "/login";
/// Where a browser lands after signing in or out without a `return_to` (Kratos's
/// `selfservice.default_browser_return_url`).
pub(crate) const WELCOME_PATH: &str = "/welcome";
/// Kratos's browser login flow, where apps send browsers.
pub(crate) const LOGIN_FLOW_PATH: &str = "/self-service/login/browser";

const NO_SESSION_REASON: &str = "No valid session credentials found in the request.";
const LOGOUT_TOKEN_MISMATCH: &str =
    "Unable to log out because the logout token in the URL query does not match the session cookie.";

/// `GET /self-service/login/browser?aal=&refresh=&return_to=`: starts a login flow and sends the
/// browser to the login page, or, when the session already has what is asked, straight to
/// `return_to` (Kratos's "already logged in").
pub(crate) fn create_login_flow(
    shared: &Shared,
    parts: &Parts,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let query = Query::of(parts);
    let return_to = allowed_return_to(query.get("return_to"))?;
    let second_factor = match query.get("aal").unwrap_or("") {
        "" | "aal1" => false,
        "aal2" => true,
        other => {
            return Err(KratosError::new(StatusCode::BAD_REQUEST).reason(format!(
            "Unable to parse AuthenticationMethod Assurance Level (AAL): unknown case \"{other}\""
        )))
        }
    };
    let refresh = query.get("refresh").is_some_and(go_parse_bool);
    let mut store = shared.store();
    let session = current_session(&store, shared, parts, now).map(|s| (s.id.clone(), s.aal));
    let session_id = match session {
        None if second_factor => {
            return Err(KratosError::new(StatusCode::UNAUTHORIZED).reason(
                "You can not requested a higher AAL (AAL2/AAL3) without an active session.",
            ))
        }
        None => None,
        Some((id, _)) if refresh => Some(id),
        Some((id, aal)) if second_factor && aal == Aal::Aal1 => Some(id),
        // Kratos's "already logged in": nothing to do but go back.
        Some(_) => return Ok(see_other(&return_to.unwrap_or_else(|| welcome_url(shared)))),
    };
    let flow = LoginFlow {
        id: new_id()?,
        second_factor: second_factor && session_id.is_some(),
        refresh: refresh && session_id.is_some(),
        session_id,
        return_to,
        expires_at: add(now, LOGIN_FLOW_LIFESPAN),
    };
    let location = format!(
        "{}{LOGIN_PAGE_PATH}?flow={}",
        shared.config.public_url, flow.id
    );
    store.begin_login(flow, now);
    Ok(see_other(&location))
}

/// `GET /login?flow=`: the page that completes a flow, by pressing a button.
pub(crate) fn login_page(shared: &Shared, parts: &Parts, now: OffsetDateTime) -> Reply {
    let flow_id = flow_id(parts);
    let store = shared.store();
    let Some(flow) = flow_id.as_deref().and_then(|id| store.login_flow(id, now)) else {
        return expired_page(shared);
    };
    let action = format!("/self-service/login?flow={}", escape_html(&flow.id));
    let button = |id: &str, method: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"{action}\"><button type=\"submit\" id=\"{id}\" \
             name=\"method\" value=\"{method}\">{label}</button></form>"
        )
    };
    let (title, body) = if flow.second_factor {
        (
            "Second factor",
            format!(
                "<p>This page asks for a second factor.</p>\n{}",
                button("second-factor", "totp", "Complete the second factor")
            ),
        )
    } else if flow.refresh {
        (
            "Confirm it is you",
            format!(
                "<p>This page asks for a recent sign-in.</p>\n{}",
                button(
                    "sign-in-again",
                    "password",
                    "Sign in again as the demo user"
                )
            ),
        )
    } else {
        (
            "Sign in",
            format!(
                "<p>Signs in as {}.</p>\n{}\n{}",
                escape_html(DEMO_EMAIL),
                button("sign-in", "password", "Sign in as the demo user"),
                button(
                    "sign-in-aal2",
                    "totp",
                    "Sign in as the demo user, with a second factor"
                ),
            ),
        )
    };
    html_reply(StatusCode::OK, title, &body)
}

/// `POST /self-service/login?flow=` with `method=password|totp`: signs the demo user in (a new
/// session), or completes the second factor or the new sign-in in the flow's session; sets the
/// session cookie and goes to `return_to`.
pub(crate) fn complete_login(
    shared: &Shared,
    parts: &Parts,
    body: &Bytes,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let form = Query(query_pairs(&String::from_utf8_lossy(body)));
    let method = match form.get("method") {
        Some("password") => Factor::Password,
        Some("totp") => Factor::Totp,
        _ => {
            return Err(KratosError::new(StatusCode::BAD_REQUEST)
                .reason("Could not find a strategy to log you in with."))
        }
    };
    let mut store = shared.store();
    let Some(flow) = flow_id(parts).and_then(|id| store.login_flow(&id, now).cloned()) else {
        return Ok(expired_page(shared));
    };
    let session_id = match &flow.session_id {
        Some(flow_session) => {
            let current = current_session(&store, shared, parts, now).map(|s| s.id.clone());
            if current.as_ref() != Some(flow_session) {
                store.end_login(&flow.id);
                return Ok(expired_page(shared));
            }
            let factors: &[Factor] = match (flow.second_factor, method) {
                (true, Factor::Totp) => &[Factor::Totp],
                (true, Factor::Password) => {
                    return Err(KratosError::new(StatusCode::BAD_REQUEST)
                        .reason("This flow asks for a second factor."))
                }
                (false, Factor::Password) => &[Factor::Password],
                (false, Factor::Totp) => &[Factor::Password, Factor::Totp],
            };
            store.authenticate(flow_session, factors, now);
            flow_session.clone()
        }
        None => {
            let identity_id = store.demo_identity(now).map_err(internal)?;
            let spec = NewSession {
                aal2: method == Factor::Totp,
                identity_id: Some(identity_id),
                ..NewSession::default()
            };
            let session = store
                .create(spec, shared.config.lifespan, now)
                .map_err(internal)?;
            session.id.clone()
        }
    };
    store.end_login(&flow.id);
    // Kratos writes the cookie anew whenever a login changes the session.
    let cookie = store.issue_cookie(&session_id).map_err(internal)?;
    let expires_at = store.session(&session_id).map(|session| session.expires_at);
    let mut reply = see_other(&flow.return_to.unwrap_or_else(|| welcome_url(shared)));
    if let (Some(value), Some(expires_at)) = (cookie, expires_at) {
        insert(
            &mut reply,
            SET_COOKIE.as_str(),
            &cookie_header(&shared.config, &value, expires_at, now),
        );
    }
    Ok(reply)
}

/// `GET /welcome`: where a browser lands without a `return_to`; says who is signed in.
pub(crate) fn welcome_page(shared: &Shared, parts: &Parts, now: OffsetDateTime) -> Reply {
    let store = shared.store();
    let body = match current_session(&store, shared, parts, now) {
        Some(session) => format!(
            "<p>Signed in as {} ({}).</p>\n<p><a id=\"sign-out\" \
             href=\"/self-service/logout?token={}\">Sign out</a></p>",
            escape_html(&email_of(&store, session)),
            session.aal.as_str(),
            escape_html(&session.logout_token),
        ),
        None => format!(
            "<p>Not signed in.</p>\n<p><a id=\"sign-in\" href=\"{LOGIN_FLOW_PATH}\">Sign \
             in</a></p>"
        ),
    };
    html_reply(StatusCode::OK, "Kratos stand-in", &body)
}

/// `GET /self-service/logout/browser?return_to=`: the session's logout URL and token (always
/// JSON, as Kratos's); 401 without a session.
pub(crate) fn create_logout_flow(
    shared: &Shared,
    parts: &Parts,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let return_to = allowed_return_to(Query::of(parts).get("return_to"))?;
    let store = shared.store();
    let session = current_session(&store, shared, parts, now)
        .ok_or_else(|| KratosError::new(StatusCode::UNAUTHORIZED).reason(NO_SESSION_REASON))?;
    let mut logout_url = Url::parse(&format!("{}/self-service/logout", shared.config.public_url))
        .map_err(internal)?;
    logout_url
        .query_pairs_mut()
        .append_pair("token", &session.logout_token);
    if let Some(return_to) = return_to {
        logout_url
            .query_pairs_mut()
            .append_pair("return_to", &return_to);
    }
    let body = serde_json::json!({
        "logout_url": logout_url.as_str(),
        "logout_token": session.logout_token,
    });
    Ok(json_reply(StatusCode::OK, body.to_string().into_bytes()))
}

/// `GET /self-service/logout?token=&return_to=`: revokes the session whose logout token it is,
/// clears the cookie, then 204 (JSON requests) or 303 to `return_to`.
pub(crate) fn complete_logout(
    shared: &Shared,
    parts: &Parts,
    now: OffsetDateTime,
) -> Result<Reply, KratosError> {
    let query = Query::of(parts);
    let token = query
        .get("token")
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            KratosError::new(StatusCode::BAD_REQUEST)
                .reason("Please include a token in the URL query.")
        })?;
    let return_to = allowed_return_to(query.get("return_to"))?;
    let mut store = shared.store();
    let session = current_session(&store, shared, parts, now)
        .ok_or_else(|| KratosError::new(StatusCode::UNAUTHORIZED).reason(NO_SESSION_REASON))?;
    if session.logout_token != token {
        return Err(KratosError::new(StatusCode::FORBIDDEN).reason(LOGOUT_TOKEN_MISMATCH));
    }
    let session_id = session.id.clone();
    store.revoke(&session_id);
    let mut reply = if wants_json(parts) {
        no_content()
    } else {
        see_other(&return_to.unwrap_or_else(|| welcome_url(shared)))
    };
    insert(
        &mut reply,
        SET_COOKIE.as_str(),
        &clearing_cookie_header(&shared.config),
    );
    Ok(reply)
}

/// A browser flow's error: herodot JSON for JSON requests, else a page (Kratos sends browsers
/// to its error UI).
pub(crate) fn refusal(shared: &Shared, err: &KratosError, parts: &Parts) -> Reply {
    if wants_json(parts) {
        return error(err, parts);
    }
    let reason = err.reason.as_deref().unwrap_or(&err.message);
    let body = format!(
        "<p>{}</p>\n<p><a href=\"{}{LOGIN_FLOW_PATH}\">Sign in</a></p>",
        escape_html(reason),
        shared.config.public_url
    );
    html_reply(err.status, "Something went wrong", &body)
}

/// The session the request's credential resolves to, if usable (Kratos's `FetchFromRequest`).
fn current_session<'s>(
    store: &'s Store,
    shared: &Shared,
    parts: &Parts,
    now: OffsetDateTime,
) -> Option<&'s Session> {
    let presented = Presented::from_headers(&parts.headers, &shared.config.cookie_name);
    store.usable_session(&presented, now)
}

/// A `return_to` the stand-in may redirect to: `http(s)` on a loopback host, without user
/// info (`http://127.0.0.1@evil.example/` is not loopback). `None` when absent or empty.
fn allowed_return_to(raw: Option<&str>) -> Result<Option<String>, KratosError> {
    let Some(raw) = raw.filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    let refused = || {
        KratosError::new(StatusCode::BAD_REQUEST)
            .reason(format!("Requested return_to URL \"{raw}\" is not allowed."))
    };
    let url = Url::parse(raw).map_err(|_| refused())?;
    let loopback = url.host_str().is_some_and(|host| {
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        match ip.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host.eq_ignore_ascii_case("localhost"),
        }
    });
    let plain = url.username().is_empty() && url.password().is_none();
    if matches!(url.scheme(), "http" | "https") && loopback && plain {
        Ok(Some(url.into()))
    } else {
        Err(refused())
    }
}

fn flow_id(parts: &Parts) -> Option<String> {
    Query::of(parts).get("flow").map(str::to_owned)
}

/// A query string (or a form body), decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn of(parts: &Parts) -> Self {
        Self(query_pairs(parts.uri.query().unwrap_or("")))
    }

    /// The first value of `key`, as Go's `Query().Get`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn expired_page(shared: &Shared) -> Reply {
    let body = format!(
        "<p>This sign-in has expired or was already used.</p>\n<p><a \
         href=\"{}{LOGIN_FLOW_PATH}\">Start again</a></p>",
        shared.config.public_url
    );
    html_reply(StatusCode::GONE, "Sign-in expired", &body)
}

fn welcome_url(shared: &Shared) -> String {
    format!("{}{WELCOME_PATH}", shared.config.public_url)
}

fn email_of(store: &Store, session: &Session) -> String {
    store
        .identity(&session.identity_id)
        .and_then(|identity| identity.traits.get("email"))
        .and_then(|email| email.as_str())
        .unwrap_or("the demo user")
        .to_owned()
}

/// Go's `strconv.ParseBool` truth: `1`, `t`, `T`, `TRUE`, `true`, `True`.
fn go_parse_bool(text: &str) -> bool {
    matches!(text, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

fn new_id() -> Result<String, KratosError> {
    ids::new_uuid().map_err(internal)
}

fn internal(_: impl std::fmt::Debug) -> KratosError {
    KratosError::new(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_return_to_is_allowed() {
        let allowed = |raw: &str| allowed_return_to(Some(raw)).ok().flatten();
        assert_eq!(
            allowed("http://127.0.0.1:3000/me?x=1").as_deref(),
            Some("http://127.0.0.1:3000/me?x=1")
        );
        assert!(allowed("http://localhost/").is_some());
        assert!(allowed("https://[::1]:8443/").is_some());
        assert!(allowed("http://127.0.0.1@evil.example/").is_none());
        assert!(allowed("http://user@127.0.0.1/").is_none());
        assert!(allowed("https://evil.example/").is_none());
        assert!(allowed("javascript://127.0.0.1/%0aalert(1)").is_none());
        assert!(allowed("/relative").is_none());
        assert_eq!(allowed_return_to(None).ok(), Some(None));
        assert_eq!(allowed_return_to(Some("")).ok(), Some(None));
    }

    #[test]
    fn go_booleans() {
        assert!(go_parse_bool("true") && go_parse_bool("1") && go_parse_bool("T"));
        assert!(!go_parse_bool("yes") && !go_parse_bool("") && !go_parse_bool("false"));
    }
}
