//! The reference app (`examples/axum_app.rs`) and its built-in Kratos stand-in in a real browser:
//! headless Chromium, driven through chromedriver.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`, which .ci/run installs); without them these tests fail, unless
//! `TOWER_KRATOS_SKIP_BROWSER=1` asks to skip them. The app is built with `cargo build --example
//! axum_app` on first use. Each test starts its own app and login page (port 0) and its own
//! browser (fresh profile), so they run in parallel.

mod browser_support;

use std::future::Future;
use std::time::Duration;

use browser_support::{skip_requested, App, Browser, LoginPage, LOGIN_TITLE};
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
        let app = App::start(&login.url);
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
