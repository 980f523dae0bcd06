//! The reference app (`examples/axum_app.rs`) and its built-in Kratos stand-in in a real browser:
//! headless Chromium, driven through chromedriver.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`, which .ci/run installs); without them these tests fail, unless
//! `TOWER_KRATOS_SKIP_BROWSER=1` asks to skip them. The app is built with `cargo build --example
//! axum_app` on first use. Each test starts its own app and login page (port 0) and its own
//! browser (fresh profile), so they run in parallel.

mod app_support;
mod browser_support;

use std::future::Future;
use std::time::{Duration, Instant};

use browser_support::{
    skip_requested, start_app, App, Browser, LoginPage, OtherOrigin, LOGIN_TITLE,
};
use kratos_stand_in::{Endpoint, KratosStandIn};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A whole test, browser start included, takes seconds; this only stops a hung one.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The app, a login page it redirects browsers to, and a fresh browser; `None` when skipped.
struct Site {
    browser: Browser,
    app: App,
    login: LoginPage,
}

impl Site {
    async fn open() -> Option<Self> {
        if skip_requested() {
            return None;
        }
        let login = LoginPage::start().await;
        let app = start_app(Some(&login.url), &[]);
        let browser = Browser::launch().await;
        Some(Self {
            browser,
            app,
            login,
        })
    }

    /// Puts the demo session cookie into the browser, expiring at `expires`: first on a page of
    /// the app's origin, as WebDriver requires, that needs no session.
    async fn sign_in(&self, expires: OffsetDateTime) {
        self.browser.goto(&self.app.url("/health")).await;
        self.browser.add_session_cookie(&self.app, expires).await;
    }
}

async fn within(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_TIMEOUT:?}"));
}

fn unix_seconds(cookie_expiry: Option<OffsetDateTime>, what: &str) -> i64 {
    cookie_expiry
        .unwrap_or_else(|| {
            panic!("{what}: the session cookie has no expiry (the browser drops it on exit)")
        })
        .unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_session_cookie_the_browser_shows_the_protected_page() {
    let Some(site) = Site::open().await else {
        return;
    };
    within(async {
        let Site { browser, app, .. } = &site;
        site.sign_in(OffsetDateTime::now_utc() + Duration::from_secs(3600))
            .await;

        browser.goto(&app.url("/me")).await;

        assert_eq!(
            browser.current_url().await,
            app.url("/me"),
            "the browser was sent away from /me"
        );
        let page = browser.json_page().await;
        let session_id = page["session_id"].as_str().unwrap_or_default();
        assert!(!session_id.is_empty(), "no session_id on /me: {page}");
        assert!(
            page["identity_id"].is_string(),
            "no identity_id on /me: {page}"
        );
        assert!(
            page["expires_at"].is_string(),
            "no expires_at on /me: {page}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_the_browser_lands_on_the_login_page_with_return_to() {
    let Some(site) = Site::open().await else {
        return;
    };
    within(async {
        let Site {
            browser,
            app,
            login,
        } = &site;

        browser.goto(&app.url("/me")).await;

        // Read back by the browser itself: where it is, and the decoded `return_to`.
        let landed = browser
            .script(
                "return [location.origin + location.pathname, \
                 new URLSearchParams(location.search).get('return_to')];",
            )
            .await;
        let shown = browser.current_url().await;
        assert_eq!(
            landed[0],
            login.url.as_str(),
            "not on the login page: {shown}"
        );
        assert_eq!(
            landed[1],
            app.url("/me").as_str(),
            "wrong return_to: {shown}"
        );
        assert_eq!(
            browser.title().await,
            LOGIN_TITLE,
            "not the login page: {shown}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_extension_the_cookie_jar_holds_the_cookie_with_the_new_expiry() {
    let Some(site) = Site::open().await else {
        return;
    };
    within(async {
        let Site { browser, app, .. } = &site;
        // A cookie due to expire well before the session (24 h, the stand-in's default), so
        // the re-issued one's later expiry shows; the app extends whatever expires within
        // EXTEND_WITHIN_SECS (two days), so the demo session is due.
        site.sign_in(OffsetDateTime::now_utc() + Duration::from_secs(600))
            .await;
        browser.goto(&app.url("/me")).await;
        let me = browser.json_page().await;
        let session_expires_at = parse_time(&me["expires_at"], "/me's expires_at");
        let before = browser.cookies_named(app.demo_cookie().0).await;
        assert_eq!(before.len(), 1, "one session cookie before: {before:?}");
        let before = unix_seconds(before[0].expires_datetime(), "before the extension");

        let (status, body) = browser.post_from_page("/me/extend").await;

        assert_eq!(status, 200, "POST /me/extend answered {status}: {body:?}");
        let reply: Value = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("POST /me/extend: not JSON ({error}): {body:?}"));
        assert_eq!(reply["extended"], true, "POST /me/extend: {reply}");
        let expires_at = parse_time(&reply["expires_at"], "POST /me/extend's expires_at");
        assert!(
            expires_at > session_expires_at,
            "the session's expiry did not move: {session_expires_at} before, {expires_at} after"
        );
        let after = browser.cookies_named(app.demo_cookie().0).await;
        assert_eq!(after.len(), 1, "one session cookie after: {after:?}");
        let after = unix_seconds(after[0].expires_datetime(), "after the extension");
        assert!(
            after > before,
            "the cookie's expiry did not move forward: {before} before, {after} after"
        );
        assert!(
            (after - expires_at.unix_timestamp()).abs() <= 2,
            "the cookie expires at {after}, the session at {expires_at} ({})",
            expires_at.unix_timestamp()
        );

        // The re-issued cookie still opens the protected page, for the same session.
        browser.goto(&app.url("/me")).await;
        let again = browser.json_page().await;
        assert_eq!(
            again["session_id"], me["session_id"],
            "after the extension: {again}"
        );
    })
    .await;
}

fn parse_time(value: &Value, what: &str) -> OffsetDateTime {
    value
        .as_str()
        .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
        .unwrap_or_else(|| panic!("{what} is not an RFC 3339 time: {value}"))
}

/// `curl` a page of the app with this cookie, as someone who copied it would: the status.
fn curl_status(url: &str, cookie: &str) -> u16 {
    let output = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Cookie: {cookie}"))
        .arg(url)
        .output()
        .unwrap_or_else(|error| {
            panic!("running curl (Debian's `curl`; .ci/run installs it): {error}")
        });
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed no status: {output:?}"))
}

/// The README's first run, clicked through: no Kratos and no `LOGIN_URL` configured, so the app
/// sends the browser to the built-in stand-in's login page and back; a second factor for
/// `/billing`, a new sign-in for `/settings`, and a logout after which a copy of the cookie is
/// refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_clicks_through_sign_in_step_up_and_logout() {
    if skip_requested() {
        return;
    }
    // A short window for /settings, so the test can outwait it.
    let app = start_app(None, &[("RECENT_AUTH_SECS", "2")]);
    let browser = Browser::launch().await;
    within(async {
        let login_page = format!("{}/login?flow=", app.kratos_url);

        // /me without a session: the stand-in's login page, then back on /me signed in.
        browser.goto(&app.url("/me")).await;
        let shown = browser.current_url().await;
        assert!(
            shown.starts_with(&login_page),
            "not the login page: {shown}"
        );
        assert_eq!(browser.title().await, "Sign in");
        browser.click("#sign-in").await;
        assert_eq!(browser.current_url().await, app.url("/me"));
        let me = browser.json_page().await;
        assert_eq!(me["aal"], "aal1", "/me: {me}");
        let session_id = me["session_id"].clone();

        // /billing needs a second factor: Kratos's aal2 flow, then back on /billing.
        browser.goto(&app.url("/billing")).await;
        let shown = browser.current_url().await;
        assert!(
            shown.starts_with(&login_page),
            "not the step-up page: {shown}"
        );
        assert_eq!(browser.title().await, "Second factor");
        browser.click("#second-factor").await;
        assert_eq!(browser.current_url().await, app.url("/billing"));
        let billing = browser.json_page().await;
        assert_eq!(billing["aal"], "aal2", "/billing: {billing}");
        assert_eq!(
            billing["session_id"], session_id,
            "the same session, stepped up"
        );

        // /settings needs a sign-in within 2 s: past that, Kratos's refresh flow.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        browser.goto(&app.url("/settings")).await;
        assert_eq!(browser.title().await, "Confirm it is you");
        browser.click("#sign-in-again").await;
        assert_eq!(browser.current_url().await, app.url("/settings"));
        let settings = browser.json_page().await;
        assert_eq!(settings["session_id"], session_id, "/settings: {settings}");

        // The cookie as it is now, copied out of the browser; it opens /me (and is cached).
        let cookies = browser.cookies_named(app.demo_cookie().0).await;
        assert_eq!(cookies.len(), 1, "one session cookie: {cookies:?}");
        let copied = format!("{}={}", cookies[0].name(), cookies[0].value());
        assert_eq!(curl_status(&app.url("/me"), &copied), 200);

        // Sign out from the home page: back home, signed out, the cookie gone.
        browser.goto(&app.url("/")).await;
        assert!(browser.text_of("#who").await.contains("demo@example.org"));
        browser.click("#sign-out").await;
        assert_eq!(browser.current_url().await, app.url("/"));
        assert!(browser.text_of("#who").await.starts_with("Not signed in"));
        assert!(
            browser.cookies_named(app.demo_cookie().0).await.is_empty(),
            "the cookie was cleared"
        );

        // The copy is refused at once, not when the app's cache entry (60 s) ends.
        assert_eq!(curl_status(&app.url("/me"), &copied), 401);
        browser.goto(&app.url("/me")).await;
        assert!(
            browser.current_url().await.starts_with(&login_page),
            "signed out"
        );
    })
    .await;
}

/// The reference app against a stand-in of the test's own, so the test sees what Kratos was
/// asked; the browser holds the stand-in's session cookie for `127.0.0.1` (every port).
fn app_against(kratos: &KratosStandIn, env: &[(&str, &str)]) -> App {
    let public_url = kratos.public_url();
    let mut all = vec![("KRATOS_PUBLIC_URL", public_url.as_str())];
    all.extend_from_slice(env);
    start_app(None, &all)
}

/// Kratos's calls that acting on the session makes: whoami, extensions, browser logouts.
fn acted(kratos: &KratosStandIn) -> [usize; 3] {
    [
        kratos.calls(Endpoint::Whoami),
        kratos.calls(Endpoint::ExtendSession),
        kratos.calls(Endpoint::LogoutBrowser),
    ]
}

/// The page the browser shows is the layer's cross-origin refusal.
async fn assert_refused_page(browser: &Browser, what: &str) {
    let page = browser.json_page().await;
    assert_eq!(page["error"]["code"], 403, "{what}: {page}");
    assert_eq!(
        page["error"]["id"], "cross_origin_request",
        "{what}: {page}"
    );
}

/// Chromium's own headers: a page of another origin on the same host (same site, so the
/// `SameSite=Lax` cookie goes along, as from a sibling subdomain) posts a form and a `fetch` to
/// the app, and signs the user out with a form: each refused before anything acts. The app's
/// own page and a page of a trusted origin (`TRUSTED_ORIGINS`) pass; one that is not an origin
/// stops the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origins_forms_and_fetches_are_refused_the_apps_own_and_trusted_ones_pass() {
    if skip_requested() {
        return;
    }
    let typo = App::try_spawn(&[("TRUSTED_ORIGINS", "https://spa.test, https://admin.test/")])
        .expect_err("started trusting a URL that is not an origin");
    assert!(
        typo.contains("TRUSTED_ORIGINS") && typo.contains("\"https://admin.test/\""),
        "{typo}"
    );
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let session = kratos.create_session();
    let other = OtherOrigin::start().await;
    let app = app_against(&kratos, &[]);
    let trusting = app_against(&kratos, &[("TRUSTED_ORIGINS", other.origin.as_str())]);
    let browser = Browser::launch().await;
    within(async {
        browser.goto(&other.page()).await;
        browser.add_test_session("127.0.0.1", &session).await;

        // From the other origin: a form to a lifecycle route, and to logout.
        browser.post_form(&app.url("/me/extend")).await;
        assert_refused_page(&browser, "a form to /me/extend").await;
        browser.goto(&other.page()).await;
        browser.post_form(&app.url("/logout")).await;
        assert_refused_page(&browser, "a form to /logout").await;
        // A fetch: the page cannot read the answer (no CORS), and nothing acted.
        browser.goto(&other.page()).await;
        let fetched = browser.post_no_cors(&app.url("/me/extend")).await;
        assert_eq!(fetched, "opaque", "the fetch was sent");
        assert_eq!(acted(&kratos), [0, 0, 0], "Kratos was asked nothing");
        let state = kratos.session_state(&session.id).expect("the session");
        assert!(state.active, "the session was not signed out");

        // The same fetch to the app that trusts the other origin acts: so the cookie went along.
        let fetched = browser.post_no_cors(&trusting.url("/me/extend")).await;
        assert_eq!(fetched, "opaque");
        let [whoami, extended, _] = acted(&kratos);
        assert!(
            whoami >= 1 && extended >= 1,
            "the trusted fetch acted: {whoami}, {extended}"
        );
        browser.post_form(&trusting.url("/me/extend")).await;
        let page = browser.json_page().await;
        assert!(
            page["extended"].is_boolean(),
            "a trusted origin's form: {page}"
        );

        // The app's own page: its fetch and its form pass.
        browser.goto(&app.url("/health")).await;
        let (status, body) = browser.post_from_page("/me/extend").await;
        assert_eq!(status, 200, "POST /me/extend from the app's page: {body}");
        browser.post_form(&app.url("/logout")).await;
        assert_eq!(browser.current_url().await, app.url("/"));
        assert!(browser.text_of("#who").await.starts_with("Not signed in"));
        let state = kratos.session_state(&session.id).expect("the session");
        assert!(!state.active, "the app's own form signed the user out");
    })
    .await;
}

/// A WebSocket route behind the layer, with Chromium's own handshake: opened from a page of the
/// route's origin it is accepted; opened from a page of another origin on the same host, with
/// the cookie all the same, it is refused before Kratos is asked. (A server of the test's own:
/// the reference app has no WebSocket route.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_another_origin_is_refused_and_one_from_the_apps_origin_opens() {
    if skip_requested() {
        return;
    }
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let session = kratos.create_session();
    let other = OtherOrigin::start().await;
    let live = websocket::Live::start(&kratos).await;
    let browser = Browser::launch().await;
    within(async {
        browser.goto(&live.url("/")).await;
        browser.add_test_session("127.0.0.1", &session).await;
        let socket = live.url("/ws").replacen("http://", "ws://", 1);

        assert_eq!(browser.open_websocket(&socket).await, "open");
        browser.goto(&other.page()).await;
        assert_eq!(browser.open_websocket(&socket).await, "refused");

        let seen = live.handshakes();
        assert_eq!(seen.len(), 2, "{seen:#?}");
        let (own, foreign) = (&seen[0], &seen[1]);
        assert_eq!(own.origin.as_deref(), Some(live.origin.as_str()), "{own:?}");
        assert_eq!(own.status, 101, "{own:?}");
        assert_eq!(own.session_id.as_deref(), Some(session.id.as_str()));
        assert_eq!(
            foreign.origin.as_deref(),
            Some(other.origin.as_str()),
            "{foreign:?}"
        );
        assert!(foreign.cookie, "the browser sent the cookie: {foreign:?}");
        assert_eq!(foreign.status, 403, "{foreign:?}");
        // Chromium sends no `Sec-Fetch-Site` with a WebSocket handshake (as of 2025): `Origin`
        // against the `Host` refused it. Should it start to, `same-site` refuses it first.
        assert!(
            matches!(foreign.sec_fetch_site.as_deref(), None | Some("same-site")),
            "{foreign:?}"
        );
        assert_eq!(
            kratos.calls(Endpoint::Whoami),
            1,
            "the refusal asked Kratos nothing"
        );
    })
    .await;
}

/// A WebSocket server behind the layer (the crate's own upgrade), and a record of every
/// handshake request and its answer.
mod websocket {
    use std::sync::{Arc, Mutex, PoisonError};

    use axum::{
        extract::Request,
        middleware::{self, Next},
        response::{Html, Response},
        routing::get,
        Router,
    };
    use http::{header, HeaderValue};
    use kratos_stand_in::KratosStandIn;
    use tokio::{net::TcpListener, task::JoinHandle};
    use tower_kratos::{live::WebSocketUpgrade, KratosLayer, KratosSession};

    /// One handshake as the server saw it.
    #[derive(Clone, Debug)]
    pub struct Handshake {
        pub origin: Option<String>,
        pub sec_fetch_site: Option<String>,
        pub cookie: bool,
        pub session_id: Option<String>,
        pub status: u16,
    }

    pub struct Live {
        /// `http://127.0.0.1:PORT`.
        pub origin: String,
        seen: Arc<Mutex<Vec<Handshake>>>,
        server: JoinHandle<()>,
    }

    impl Live {
        pub async fn start(kratos: &KratosStandIn) -> Self {
            let layer = KratosLayer::builder(kratos.public_url())
                .build()
                .expect("the layer");
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = Arc::clone(&seen);
            let page = "<!doctype html><title>Live</title><h1>Live</h1>";
            let router = Router::new()
                .route("/", get(move || async move { Html(page) }))
                .route("/ws", get(accept).layer(layer))
                .layer(middleware::from_fn(move |request: Request, next: Next| {
                    let record = Arc::clone(&record);
                    async move { recorded(request, next, &record).await }
                }));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let origin = format!("http://{}", listener.local_addr().expect("address"));
            let server = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            Self {
                origin,
                seen,
                server,
            }
        }

        pub fn url(&self, path: &str) -> String {
            format!("{}{path}", self.origin)
        }

        /// Every handshake so far, oldest first.
        pub fn handshakes(&self) -> Vec<Handshake> {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl Drop for Live {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    /// Outside the layer: what each `/ws` request carried, and what it was answered.
    async fn recorded(request: Request, next: Next, record: &Mutex<Vec<Handshake>>) -> Response {
        if request.uri().path() != "/ws" {
            return next.run(request).await;
        }
        let headers = request.headers();
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let mut handshake = Handshake {
            origin: text("origin"),
            sec_fetch_site: text("sec-fetch-site"),
            cookie: headers.contains_key(header::COOKIE),
            session_id: None,
            status: 0,
        };
        let response = next.run(request).await;
        handshake.status = response.status().as_u16();
        handshake.session_id = response
            .headers()
            .get("x-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handshake);
        response
    }

    /// Behind the layer: the crate's own WebSocket upgrade (axum's, closed with the session),
    /// held open a while; says whose session it was in `x-session-id`.
    async fn accept(session: KratosSession, upgrade: WebSocketUpgrade) -> Response {
        let mut response = upgrade.on_upgrade(|mut socket| async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv()).await;
        });
        let id = HeaderValue::from_str(&session.id).expect("a session id");
        response.headers_mut().insert("x-session-id", id);
        response
    }
}
/// How long the live panel may take to say something: a WebSocket on loopback, and a revocation
/// the layer checks with Kratos (one whoami) before closing.
const LIVE_WITHIN: Duration = Duration::from_secs(5);

/// The two windows: two browsers, each signed in as the demo user with a session of its
/// own, on the home page. Window B signs A's session out from its list of other sessions, and A's
/// live panel (fed by `/live/ws`) shows the server's close, 1008 `session revoked`, within
/// seconds; B's own panel stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_signed_out_from_another_window_ends_its_live_panel_with_the_reason() {
    if skip_requested() {
        return;
    }
    // The test's own stand-in, so it can make the two sessions and see what Kratos was asked.
    let kratos = KratosStandIn::start()
        .await
        .expect("start the Kratos stand-in");
    let demo_user = kratos.demo_identity_id();
    let a = kratos.session().identity(&demo_user).create();
    let b = kratos.session().identity(&demo_user).create();
    let app = start_app(None, &[("KRATOS_PUBLIC_URL", &kratos.public_url())]);
    let window_a = Browser::launch().await;
    let window_b = Browser::launch().await;
    within(async {
        for (window, session) in [(&window_a, &a), (&window_b, &b)] {
            window.goto(&app.url("/health")).await;
            window.add_test_session(app.host(), session).await;
            window.goto(&app.url("/")).await;
            assert!(window.text_of("#who").await.contains("demo@example.org"));
            assert_eq!(window.text_of("#identity-id").await, demo_user);
            assert_eq!(window.text_of("#session-id").await, session.id);
            window
                .wait_for_text("#live-status", LIVE_WITHIN, |status| status == "open")
                .await;
        }
        window_a
            .wait_for_text("#live-ticks", LIVE_WITHIN, |ticks| {
                ticks.parse::<u32>().is_ok_and(|ticks| ticks >= 2)
            })
            .await;

        // In B's list of other sessions, A's, with its "sign out" button.
        let sign_out_a = format!("#other-sessions button[data-session-id=\"{}\"]", a.id);
        let pressed = Instant::now();
        window_b.press(&sign_out_a).await;

        let said = window_b
            .wait_for_text(&format!("{sign_out_a} + span"), LIVE_WITHIN, |said| {
                !said.is_empty()
            })
            .await;
        assert_eq!(said, "signed out", "B's page after pressing the button");
        let closed = window_a
            .wait_for_text("#live-status", LIVE_WITHIN, |status| {
                status.starts_with("closed")
            })
            .await;
        assert_eq!(closed, "closed 1008: session revoked");
        assert!(
            pressed.elapsed() < LIVE_WITHIN,
            "A's panel closed {:?} after B pressed the button",
            pressed.elapsed()
        );

        // Kratos was asked by B's session to revoke A's, once; A's is inactive, B's is not.
        let revocations = kratos.requests(Endpoint::RevokeMySession);
        assert_eq!(revocations.len(), 1, "{revocations:?}");
        assert_eq!(revocations[0].uri.path(), format!("/sessions/{}", a.id));
        assert_eq!(revocations[0].session_id.as_deref(), Some(b.id.as_str()));
        let state = |id: &str| kratos.session_state(id).expect("the session exists");
        assert!(!state(&a.id).active, "A's session is still active");
        assert!(state(&b.id).active, "B's session was revoked too");

        // B's own panel is still open and still ticking.
        assert_eq!(window_b.text_of("#live-status").await, "open");
        let ticks: u32 = window_b
            .text_of("#live-ticks")
            .await
            .parse()
            .expect("a count");
        window_b
            .wait_for_text("#live-ticks", LIVE_WITHIN, |now| {
                now.parse::<u32>().is_ok_and(|now| now > ticks)
            })
            .await;
    })
    .await;
}
