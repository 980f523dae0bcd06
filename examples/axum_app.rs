//! The reference app: an axum service behind Ory Kratos.
//!
//! ```text
//! cargo run --example axum_app
//! ```
//!
//! Without `KRATOS_PUBLIC_URL` it starts the built-in Kratos stand-in and sends browsers to the
//! stand-in's login page: open `http://127.0.0.1:3000/` and click through (sign in as the demo
//! user, step up to a second factor for `/billing`, sign out). It also creates a demo session and
//! prints `curl` lines to try it without a browser. Environment (the Kratos settings are every reference app's,
//! `test-support/src/app_settings.rs`):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `KRATOS_PUBLIC_URL` | the stand-in | Kratos's public API |
//! | `KRATOS_ADMIN_URL` | `KRATOS_PUBLIC_URL` | Kratos's admin API (session lifecycle routes) |
//! | `KRATOS_ADMIN_TOKEN` | none | bearer token for the admin API (Ory Network API key) |
//! | `BIND_ADDR` | `127.0.0.1:3000` | where the app listens |
//! | `CACHE_TTL_SECS` | 60 | session cache TTL |
//! | `KRATOS_TIMEOUT_MS` | 3000 | deadline for one whoami call |
//! | `LOGIN_URL` | the stand-in's login flow (none with `KRATOS_PUBLIC_URL`) | send browsers without a session there, with `return_to` |
//! | `RECENT_AUTH_SECS` | 300 | `GET /settings` needs a sign-in within this |
//! | `APP_URL` | required with `KRATOS_PUBLIC_URL` and `LOGIN_URL` (the app exits without it); else the request's `Host` | the app's public URL, for that `return_to`: Kratos's `selfservice.allowed_return_urls` must list it |
//! | `TRUSTED_ORIGINS` | none | comma-separated origins (`https://app.example.com`: exactly `scheme://host[:port]`, else the app exits saying which) whose cookie requests pass the cross-origin rule, e.g. a front end on a sibling subdomain |
//! | `KRATOS_HOOK_KEY` | none: no receiver | at least 32 bytes (else the app exits saying so): mounts Kratos's web hook receiver at `POST /hooks/kratos/sessions-revoked`, key in `X-Kratos-Hook-Key`, body `{"identity_id", "keep_session_id"}` |
//! | `EXTEND_WITHIN_SECS` | 3600 | extend sessions expiring within this (lifecycle routes) |
//! | `STALE_IF_ERROR_SECS` | unset (off) | serve sessions up to this long past their cache entry while Kratos is unavailable |
//! | `MAX_CONCURRENT_LOOKUPS` | 32 | whoami calls to Kratos in flight at once |
//! | `REDIS_URL` | unset (no shared cache) | share the session cache and revocations with every replica through this Redis |
//! | `SHARED_CACHE_SECRET` | required with `REDIS_URL` (the app exits without it) | the same ≥ 32-byte secret on every replica |
//! | `REDIS_KEY_PREFIX` | `tower-kratos` | prefix of every Redis key, so several apps can share one Redis |
//! | `REDIS_CLUSTER_NODES` | unset | comma-separated seed node URLs of a Redis Cluster, instead of `REDIS_URL` |
//! | `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER` | unset | comma-separated Sentinel `host:port`s and the monitored primary's name, instead of `REDIS_URL` |
//! | `REDIS_USERNAME`, `REDIS_PASSWORD` | from `REDIS_URL` | a Redis 6 ACL user, for URLs that carry none (and for the Sentinels' primary) |
//! | `REDIS_CA_FILE` | the platform's roots | a PEM CA bundle to trust for `rediss://` instead |
//! | `REDIS_CLIENT_CERT_FILE`, `REDIS_CLIENT_KEY_FILE` | none | a PEM client certificate and key, for mutual TLS |
//! | `TOKENIZE_AS` | unset (off) | ask whoami for the session as a JWT (Kratos's tokenizer template; the stand-in gets one of that name) |
//! | `METRICS_ADDR` | unset (no endpoint) | serve the crate's metrics as Prometheus text at `GET /metrics` on this address (e.g. `127.0.0.1:9464`) |
//!
//! Routes: `GET /health` (no session needed), `GET /` (optional session: a page for browsers,
//! JSON otherwise; signed in, the page shows the session, the user's other sessions with a
//! button to sign each out, and a live panel fed by `/live/ws`), `GET /me` (required), the
//! per-route requirements, browser logout (optional session), the session lifecycle routes and
//! the live routes (required). Every route that acts on the cookie sits behind the layer, so a
//! request with the cookie from another origin (a form on another site, or on a sibling
//! subdomain) is refused with 403 `cross_origin_request` before it acts:
//!
//! | route | answer |
//! |---|---|
//! | `GET /settings` | 200 JSON with a sign-in within `RECENT_AUTH_SECS`; else browsers go to Kratos's `refresh=true` flow, API clients get 403 `recent_sign_in_required` |
//! | `GET /billing` | 200 JSON at `aal2`; else browsers go to Kratos's `aal=aal2` flow, API clients get 403 `second_factor_required` |
//! | `GET /me/token` | 200 `{"jwt": …}`, the caller's own tokenized session, to forward to internal services (`examples/jwt_downstream.rs`); 404 without `TOKENIZE_AS` |
//! | `POST /logout` | Kratos's browser logout, completed here; 303 to `/` clearing the session cookie, which is refused at once (303 too without a session) |
//! | `POST /me/extend` | 200 `{"extended": bool, "expires_at": …}`, with Kratos's re-issued `Set-Cookie` |
//! | `GET /me/sessions` | 200 `[{"id": …, "expires_at": …}]`: the caller's other sessions |
//! | `DELETE /me/sessions/{id}` | 204; 400 for the caller's own session (it stays usable) |
//! | `DELETE /me/sessions` | 200 `{"count": n}`: all the caller's other sessions revoked |
//! | `GET /live/ws` | a WebSocket: echoes each text message, sends `tick` every second; closed with code 1008 and `session revoked` / `session expired` when the session ends |
//! | `GET /live/events` | server-sent events: a `tick` event every 500 ms, until the session ends |

use std::{convert::Infallible, error::Error, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    extract::{ws::Message, Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, Sse},
        Html, IntoResponse, Redirect, Response,
    },
    routing::{delete, get, post},
    Json, Router,
};
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tower::ServiceBuilder;
use tower_kratos::{
    lifecycle::{BrowserLogout, ExtendOutcome, LifecycleError, Page, SessionLifecycle},
    live::{WebSocket, WebSocketUpgrade},
    require::Requirement,
    KratosSession,
};
use tracing_subscriber::EnvFilter;

use kratos::{parse, var, Kratos, Settings};
use serve::serve;
use test_support::{app_settings as kratos, serve};

/// The most pages `GET /me/sessions` reads (100 sessions each): a bound, not a real limit.
const MAX_PAGES: usize = 20;

/// What the lifecycle routes share.
#[derive(Clone)]
struct AppState {
    sessions: SessionLifecycle,
    extend_within: Duration,
}

/// This app's own settings, besides the Kratos ones every reference app reads.
#[derive(Debug)]
struct Config {
    kratos: Settings,
    bind_addr: SocketAddr,
    login_url: Option<String>,
    app_url: Option<String>,
    recent_auth: Duration,
    /// The key Kratos's web hook sends after `revoke_active_sessions`; unset: no receiver.
    hook_key: Option<String>,
    /// Origins whose cookie requests pass the cross-origin rule besides the app's own.
    trusted_origins: Vec<String>,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        Ok(Self {
            kratos: Settings::from_env()?,
            bind_addr: parse("BIND_ADDR", "127.0.0.1:3000")?,
            login_url: var("LOGIN_URL"),
            app_url: var("APP_URL"),
            recent_auth: Duration::from_secs(parse("RECENT_AUTH_SECS", "300")?),
            hook_key: var("KRATOS_HOOK_KEY"),
            trusted_origins: var("TRUSTED_ORIGINS")
                .map(|list| {
                    list.split(',')
                        .map(|origin| origin.trim().to_owned())
                        .filter(|origin| !origin.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axum_app: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let config = Config::from_env()?;
    let kratos_api = Kratos::start(&config.kratos).await?;
    let mut builder = kratos_api.layer(&config.kratos);
    // Against the stand-in, browsers sign in on its login page unless told otherwise.
    let login_url = config
        .login_url
        .clone()
        .or_else(|| kratos_api.stand_in_login_url());
    if let Some(login_url) = &login_url {
        builder = builder.login_url(login_url);
    }
    if config.app_url.is_none()
        && config.login_url.is_some()
        && config.kratos.kratos_public_url.is_some()
    {
        // Against a real Kratos, `return_to` from each request's Host header is not one to
        // ship: set the app's own URL (the stand-in's first run needs none).
        return Err(
            "LOGIN_URL is set for a real Kratos (KRATOS_PUBLIC_URL) but APP_URL is not: \
                    browsers' return_to would be built from each request's Host header. Set \
                    APP_URL to the app's public URL (and list it in Kratos's \
                    selfservice.allowed_return_urls)"
                .into(),
        );
    }
    if let Some(app_url) = &config.app_url {
        builder = builder.app_url(app_url);
    }
    // The cross-origin rule is on by default; these origins pass it as the app's own does.
    let kratos = builder
        .trusted_origins(&config.trusted_origins)
        .build()
        .map_err(|error| match error.setting_name() {
            "trusted_origins" => format!("TRUSTED_ORIGINS: {error}"),
            _ => error.to_string(),
        })?;
    let state = AppState {
        sessions: kratos.lifecycle(),
        extend_within: config.kratos.extend_within,
    };

    let lifecycle_routes = Router::new()
        .route("/me/extend", post(extend))
        .route(
            "/me/sessions",
            get(list_sessions).delete(revoke_other_sessions),
        )
        .route("/me/sessions/{id}", delete(revoke_session))
        .route_layer(kratos.required());
    let recent = Requirement::new().signed_in_within(config.recent_auth);
    let app = Router::new()
        .route("/", get(home).layer(kratos.optional()))
        .route("/me", get(me).layer(kratos.required()))
        .route("/me/token", get(token).layer(kratos.required()))
        // Outer first: the layer finds the session, then the requirement reads it.
        .route(
            "/settings",
            get(settings).layer(
                ServiceBuilder::new()
                    .layer(kratos.required())
                    .layer(kratos.require(recent)),
            ),
        )
        .route(
            "/billing",
            get(billing).layer(
                ServiceBuilder::new()
                    .layer(kratos.required())
                    .layer(kratos.require(Requirement::new().second_factor())),
            ),
        )
        // Nothing in these handlers watches the session: the layer ends the event stream, and
        // `tower_kratos::live::WebSocket` closes the socket, when it ends.
        .route("/live/ws", get(live_ws).layer(kratos.required()))
        .route("/live/events", get(live_events).layer(kratos.required()))
        // Behind the layer for its cross-origin rule: no other page can sign the user out.
        // Optional: without a valid session there is nothing to sign out, and still a 303.
        .route("/logout", post(logout).layer(kratos.optional()))
        .route("/health", get(|| async { "ok" }))
        .merge(lifecycle_routes)
        .with_state(state);
    // Kratos's web hook after `revoke_active_sessions` (the guide's shared cache chapter has
    // Kratos's configuration): a key shorter than 32 bytes stops the app with a message.
    let app = match &config.hook_key {
        Some(key) => app.route_service(
            "/hooks/kratos/sessions-revoked",
            kratos
                .revocation_hook(key)
                .map_err(|error| format!("KRATOS_HOOK_KEY: {error}"))?,
        ),
        None => app,
    };

    let listener = TcpListener::bind(config.bind_addr).await?;
    let addr = listener.local_addr()?;
    kratos_api.describe(&config.kratos);
    if let Some(demo) = kratos_api.demo() {
        println!("built-in Kratos stand-in: open http://{addr}/ in a browser and sign in as the demo user");
        println!("or, with its demo session:");
        println!(
            "  curl -H 'X-Session-Token: {}' http://{addr}/me",
            demo.token
        );
        println!(
            "  curl -H 'Cookie: {}' http://{addr}/me",
            demo.cookie_header()
        );
    }
    println!("listening on http://{addr}");
    // Not `axum::serve`: it has no header-read timeout (see `support/serve.rs`).
    serve(listener, app).await?;
    Ok(())
}

/// `GET /`: works with or without a session; a page for browsers, JSON for everyone else.
async fn home(
    State(app): State<AppState>,
    headers: HeaderMap,
    session: Option<KratosSession>,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !wants_html {
        return Json(json!({
            "authenticated": session.is_some(),
            "identity_id": session.as_ref().and_then(|session| session.identity_id()),
        }))
        .into_response();
    }
    let body = match &session {
        Some(session) => {
            let others = other_sessions(&app, &headers).await;
            signed_in(session, others)
        }
        None => "<p id=\"who\">Not signed in: any link below takes you to sign in.</p>\n<ul>\n\
                 <li><a href=\"/me\">/me</a>: your session (needs one)</li>\n\
                 <li><a href=\"/settings\">/settings</a>: needs a recent sign-in</li>\n\
                 <li><a href=\"/billing\">/billing</a>: needs a second factor</li>\n\
                 </ul>"
            .to_owned(),
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tower-kratos reference app</title></head>\n<body>\n\
         <h1>tower-kratos reference app</h1>\n{body}\n</body></html>\n"
    ))
    .into_response()
}

/// The home page's body for a signed-in browser: who, this session, the other sessions (each
/// with a button that revokes it: a same-origin `fetch` of `DELETE /me/sessions/{id}`), and a
/// live panel on `/live/ws` that shows the close code and reason when the session ends.
fn signed_in(session: &KratosSession, others: Result<Vec<OtherSession>, LifecycleError>) -> String {
    let identity = session.identity.as_ref();
    let traits = identity.map(|identity| identity.traits.to_value());
    let email = traits
        .as_ref()
        .and_then(|traits| traits.get("email"))
        .and_then(|email| email.as_str());
    // Escaped too: the lenient model keeps a level it does not know as Kratos wrote it.
    let aal = escape_html(
        session
            .authenticator_assurance_level
            .as_ref()
            .map_or("?", |aal| aal.as_str()),
    );
    let expires_at = rfc3339(session.expires_at).unwrap_or_else(|| "(none)".to_owned());
    let others = match others {
        Ok(others) if others.is_empty() => "<p id=\"other-sessions\">None.</p>".to_owned(),
        Ok(others) => {
            let items: String = others
                .iter()
                .map(|other| {
                    let id = escape_html(&other.id);
                    let expires = other.expires_at.as_deref().unwrap_or("?");
                    format!(
                        "<li>{id}, expires {} <button type=\"button\" \
                         data-session-id=\"{id}\">sign out</button> <span></span></li>\n",
                        escape_html(expires)
                    )
                })
                .collect();
            format!("<ul id=\"other-sessions\">\n{items}</ul>")
        }
        Err(error) => format!(
            "<p id=\"other-sessions\">Kratos did not list them: {}</p>",
            escape_html(&error.to_string())
        ),
    };
    format!(
        "<p id=\"who\">Signed in as {} ({aal}).</p>\n\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\" \
         id=\"sign-out\">Sign out</button></form>\n\
         <h2>This session</h2>\n<dl>\n\
         <dt>identity</dt><dd id=\"identity-id\">{}</dd>\n\
         <dt>session</dt><dd id=\"session-id\">{}</dd>\n\
         <dt>assurance level</dt><dd id=\"aal\">{aal}</dd>\n\
         <dt>expires at</dt><dd id=\"expires-at\">{}</dd>\n</dl>\n\
         <h2>Your other sessions</h2>\n{others}\n\
         <h2>Live</h2>\n\
         <p>A WebSocket on <code>/live/ws</code>: a tick every second until this session ends \
         (sign it out from another window), then the server closes it.</p>\n\
         <p>Ticks: <span id=\"live-ticks\">0</span>. \
         <span id=\"live-status\">connecting</span></p>\n\
         <script>{SIGNED_IN_SCRIPT}</script>",
        escape_html(email.unwrap_or("(no e-mail)")),
        escape_html(session.identity_id().unwrap_or("?")),
        escape_html(&session.id),
        escape_html(&expires_at),
    )
}

/// The signed-in home page's script: the live panel, and the other sessions' "sign out"
/// buttons (same-origin `fetch`es, so a rule refusing cross-site cookie writes lets them pass).
const SIGNED_IN_SCRIPT: &str = r#"
const liveStatus = document.getElementById('live-status');
const liveTicks = document.getElementById('live-ticks');
const liveSocket = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/live/ws');
liveSocket.onopen = () => { liveStatus.textContent = 'open'; };
liveSocket.onmessage = (message) => {
  if (message.data === 'tick') { liveTicks.textContent = String(Number(liveTicks.textContent) + 1); }
};
liveSocket.onclose = (close) => {
  liveStatus.textContent = 'closed ' + close.code + (close.reason ? ': ' + close.reason : '');
};
for (const button of document.querySelectorAll('button[data-session-id]')) {
  button.addEventListener('click', async () => {
    const said = button.nextElementSibling;
    const id = button.dataset.sessionId;
    try {
      const response = await fetch('/me/sessions/' + encodeURIComponent(id), { method: 'DELETE' });
      said.textContent = response.status === 204 ? 'signed out' : 'refused: ' + response.status;
      button.disabled = response.status === 204;
    } catch (error) {
      said.textContent = 'failed: ' + error;
    }
  });
}
"#;

/// Text for HTML: identity traits are the user's own input.
fn escape_html(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// `GET /settings`: only reached with a sign-in within `RECENT_AUTH_SECS`.
async fn settings(session: KratosSession) -> Json<Value> {
    Json(json!({
        "page": "settings",
        "session_id": session.id,
        "authenticated_at": rfc3339(session.authenticated_at),
    }))
}

/// `GET /billing`: only reached at `aal2`.
async fn billing(session: KratosSession) -> Json<Value> {
    let aal = session.authenticator_assurance_level.as_ref();
    Json(json!({
        "page": "billing",
        "session_id": session.id,
        "aal": aal.map(|aal| aal.as_str()),
    }))
}

/// `POST /logout`: Kratos's browser logout, completed by this server (the cookie is refused
/// here at once), then back home with Kratos's clearing `Set-Cookie`. A `POST`, so no link can
/// sign a user out, behind the layer, whose cross-origin rule refuses a form or a `fetch` from
/// another origin (`SameSite=Lax` alone lets a sibling subdomain's through).
async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<(BrowserLogout, Redirect), LifecycleError> {
    let logged_out = app.sessions.logout_browser(&headers).await?;
    Ok((logged_out, Redirect::to("/")))
}

/// `GET /me`: only reached with a valid session; the layer answers everything else.
async fn me(session: KratosSession) -> Json<Me> {
    Json(Me {
        expires_at: rfc3339(session.expires_at),
        session,
    })
}

/// `GET /me/token`: the caller's session as Kratos's JWT, with `TOKENIZE_AS` set.
async fn token(session: KratosSession) -> Response {
    match session.tokenized() {
        Some(jwt) => Json(serde_json::json!({ "jwt": jwt })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": "no tokenized session: start the app with TOKENIZE_AS=<template>"
            })),
        )
            .into_response(),
    }
}

/// `GET /me`'s answer, serialized straight from the shared session: a handler on the hot path
/// need not build a `serde_json::Value` first.
struct Me {
    session: KratosSession,
    expires_at: Option<String>,
}

impl serde::Serialize for Me {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut me = serializer.serialize_struct("Me", 4)?;
        me.serialize_field("session_id", &self.session.id)?;
        me.serialize_field("identity_id", &self.session.identity_id())?;
        let aal = self.session.authenticator_assurance_level.as_ref();
        me.serialize_field("aal", &aal.map(|aal| aal.as_str()))?;
        me.serialize_field("expires_at", &self.expires_at)?;
        me.end()
    }
}

fn rfc3339(at: Option<OffsetDateTime>) -> Option<String> {
    at.and_then(|at| at.format(&Rfc3339).ok())
}

/// `POST /me/extend`: extends the session if it expires within `EXTEND_WITHIN_SECS`, and passes
/// Kratos's re-issued cookie on (the `ExtendOutcome` is a response part).
async fn extend(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<(ExtendOutcome, Json<Value>), LifecycleError> {
    let outcome = app
        .sessions
        .extend_if_expiring(&headers, app.extend_within)
        .await?;
    let body = json!({
        "extended": outcome.extended(),
        "expires_at": rfc3339(outcome.expires_at()),
    });
    Ok((outcome, Json(body)))
}

/// One of the caller's other sessions, as `GET /me/sessions` and the home page show it.
#[derive(serde::Serialize)]
struct OtherSession {
    id: String,
    expires_at: Option<String>,
}

/// `GET /me/sessions`: the caller's other active sessions, every page.
async fn list_sessions(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<OtherSession>>, LifecycleError> {
    other_sessions(&app, &headers).await.map(Json)
}

/// The caller's other active sessions, every page (at most [`MAX_PAGES`]).
async fn other_sessions(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<Vec<OtherSession>, LifecycleError> {
    let mut listed = Vec::new();
    let mut page = Page::first().with_size(100);
    for _ in 0..MAX_PAGES {
        let list = app.sessions.list_sessions(headers, &page).await?;
        listed.extend(list.sessions.iter().map(|session| OtherSession {
            id: session.id.clone(),
            expires_at: rfc3339(session.expires_at),
        }));
        match list.next {
            Some(next) => page = next,
            None => break,
        }
    }
    Ok(listed)
}

/// `DELETE /me/sessions/{id}`: revokes another of the caller's sessions. Kratos refuses the
/// caller's own session with 400 (log out instead).
async fn revoke_session(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, LifecycleError> {
    app.sessions.revoke_session(&headers, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /me/sessions`: revokes all the caller's other sessions.
async fn revoke_other_sessions(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, LifecycleError> {
    let count = app.sessions.revoke_other_sessions(&headers).await?;
    Ok(Json(json!({ "count": count })))
}

/// `GET /live/ws`: echoes each text message and sends `tick` every second. When the session
/// ends, `recv` (waiting in the `select!`) sends the close frame, 1008 with the reason, and
/// returns `None`.
async fn live_ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if socket.send(Message::Text(text)).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    // The peer went away, or the session ended and the socket is closed.
                    Some(Err(_)) | None => break,
                },
                _ = ticks.tick() => {
                    if socket.send(Message::Text("tick".into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// `GET /live/events`: a `tick` event every 500 ms, its data the count. The layer ends the
/// stream when the session ends; the task feeding it stops at its next send.
async fn live_events() -> Sse<ReceiverStream<Result<Event, Infallible>>> {
    let (events, stream) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(500));
        for n in 1u64.. {
            ticks.tick().await;
            let event = Event::default().event("tick").data(n.to_string());
            if events.send(Ok(event)).await.is_err() {
                break;
            }
        }
    });
    Sse::new(ReceiverStream::new(stream))
}
