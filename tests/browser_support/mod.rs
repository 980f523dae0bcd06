//! The processes behind `tests/browser.rs`: the reference app (`../app_support`, with its
//! built-in Kratos stand-in), a login page for it to redirect to, and headless Chromium driven
//! through chromedriver.
//!
//! Everything listens on a free loopback port (port 0), each browser gets its own profile
//! directory, and every process is killed when its guard drops, also when a test panics: tests
//! can run in parallel in one process.

use std::env;
use std::fmt::Display;
use std::fs;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use cookie::{Cookie, SameSite};
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use crate::app_support::App;
use crate::app_support::{Output, STEP_TIMEOUT};

/// Set to `1` to skip the browser tests on purpose (a machine without Chromium); CI never does.
pub const SKIP_VAR: &str = "TOWER_KRATOS_SKIP_BROWSER";
/// The title of the page [`LoginPage`] serves.
pub const LOGIN_TITLE: &str = "Log in";
/// `EXTEND_WITHIN_SECS` for the app: two days, more than the stand-in's default session
/// lifespan (24 h, Kratos's), so the demo session is always due for an extension.
pub const EXTEND_WITHIN_SECS: u64 = 2 * 24 * 60 * 60;

/// The reference app with its built-in stand-in, sending browsers without a session to
/// `login_url` (its own stand-in's login page when `None`), with these other variables.
pub fn start_app(login_url: Option<&str>, env: &[(&str, &str)]) -> App {
    let extend_within = EXTEND_WITHIN_SECS.to_string();
    let mut all = vec![("EXTEND_WITHIN_SECS", extend_within.as_str())];
    if let Some(login_url) = login_url {
        all.push(("LOGIN_URL", login_url));
    }
    all.extend_from_slice(env);
    App::spawn(&all)
}

/// Whether the browser tests were skipped on purpose with [`SKIP_VAR`]`=1` (said on stderr).
pub fn skip_requested() -> bool {
    let skip = env::var(SKIP_VAR).is_ok_and(|value| value.trim() == "1");
    if skip {
        eprintln!("{SKIP_VAR}=1: skipping this browser test; it ran nothing");
    }
    skip
}

/// Awaits `future`, panicking with `what` when it takes longer than [`STEP_TIMEOUT`] or fails.
async fn step<T, E: Display>(what: &str, future: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{what}: {error}"),
        Err(_) => panic!("{what}: no answer within {STEP_TIMEOUT:?}"),
    }
}

/// A fresh, empty directory under Cargo's scratch directory for integration tests.
fn fresh_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
    dir
}

/// A login page on its own port, for the app's `LOGIN_URL`: the app binds port 0, so its own
/// routes cannot be named before it starts.
#[derive(Debug)]
pub struct LoginPage {
    /// `http://127.0.0.1:PORT/login`.
    pub url: String,
    server: JoinHandle<()>,
}

impl LoginPage {
    pub async fn start() -> Self {
        let listener = step("binding the login page", TcpListener::bind("127.0.0.1:0")).await;
        let addr = step("the login page's address", async { listener.local_addr() }).await;
        let page = format!("<!doctype html><title>{LOGIN_TITLE}</title><h1>{LOGIN_TITLE}</h1>");
        let router = Router::new().route("/login", get(move || async move { Html(page) }));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{addr}/login"),
            server,
        }
    }
}

impl Drop for LoginPage {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An empty page on a port of its own: another origin than the app's on the same host, so the
/// same site (`SameSite=Lax` cookies go along), as a sibling subdomain would be.
#[derive(Debug)]
pub struct OtherOrigin {
    /// `http://127.0.0.1:PORT`, as the browser writes it in `Origin`.
    pub origin: String,
    server: JoinHandle<()>,
}

impl OtherOrigin {
    pub async fn start() -> Self {
        let listener = step("binding the other origin", TcpListener::bind("127.0.0.1:0")).await;
        let addr = step("the other origin's address", async {
            listener.local_addr()
        })
        .await;
        let page = "<!doctype html><title>Another origin</title><h1>Another origin</h1>";
        let router = Router::new().route("/", get(move || async move { Html(page) }));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            origin: format!("http://{addr}"),
            server,
        }
    }

    /// Its page's URL.
    pub fn page(&self) -> String {
        format!("{}/", self.origin)
    }
}

impl Drop for OtherOrigin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// chromedriver and the Chromium it starts, in their own process group, killed together on drop;
/// then the profile directory is removed.
#[derive(Debug)]
struct Driver {
    child: Child,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`); Chromium inherited it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.profile);
    }
}

/// The program at `default`, or at `$var` when set; a missing one fails the test.
fn required_binary(var: &str, default: &str) -> PathBuf {
    let path = env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "the browser tests need {} and it is not there. Install Debian's `chromium` and \
         `chromium-driver` (`apt-get install -y chromium chromium-driver`; .ci/run does), point \
         {var} at another binary, or set {SKIP_VAR}=1 to skip the browser tests on purpose.",
        path.display()
    );
    path
}

/// Headless Chromium with a fresh profile, driven through its own chromedriver.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    _driver: Driver,
}

impl Browser {
    pub async fn launch() -> Self {
        let chromium = required_binary("TOWER_KRATOS_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = required_binary("TOWER_KRATOS_CHROMEDRIVER", "/usr/bin/chromedriver");
        let profile = fresh_dir("chromium-profile");
        let mut child = Command::new(&chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", chromedriver.display()));
        let mut output = Output::of(&mut child);
        let driver = Driver { child, profile };
        let port: u16 = output
            .wait_for("chromedriver", |line| {
                let rest = line.split_once("started successfully on port ")?.1;
                rest.trim_end_matches('.').parse().ok()
            })
            .unwrap_or_else(|error| panic!("{error}"));

        // The machine's network is closed: no first-run, sync, component or background fetches.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", driver.profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "timeouts": { "pageLoad": 20_000, "script": 20_000 },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = step(
            "starting a Chromium session through chromedriver",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(Capabilities::from_iter(capabilities))
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await;
        Self {
            client,
            _driver: driver,
        }
    }

    /// Navigates to `url` and waits for the page to load, following redirects.
    pub async fn goto(&self, url: &str) {
        step(&format!("loading {url}"), self.client.goto(url)).await;
    }

    /// The URL the browser shows.
    pub async fn current_url(&self) -> String {
        step("reading the current URL", self.client.current_url())
            .await
            .to_string()
    }

    /// What `script` (a function body) returns, run in the current page.
    pub async fn script(&self, script: &str) -> Value {
        step(
            &format!("running `{script}` in the page"),
            self.client.execute(script, Vec::new()),
        )
        .await
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        step("reading the page title", self.client.title()).await
    }

    /// The JSON document the browser shows (Chromium renders it as text in a `<pre>`).
    pub async fn json_page(&self) -> Value {
        let pre = step(
            "finding the JSON text on the page",
            self.client.find(Locator::Css("pre")),
        )
        .await;
        let text = step("reading the JSON text", pre.text()).await;
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("the page is not JSON ({error}): {text:?}"))
    }

    /// Puts the app's demo session cookie into the jar, as Kratos would have set it for the app
    /// (its host, `Path=/`, `HttpOnly`, `SameSite=Lax`), expiring at `expires`. The browser must
    /// be on the app's origin.
    pub async fn add_session_cookie(&self, app: &App, expires: OffsetDateTime) {
        let (name, value) = app.demo_cookie();
        self.add_cookie(app.host(), name, value, expires).await;
    }

    /// Puts a session cookie into the jar as Kratos sets one (`host`, `Path=/`, `HttpOnly`,
    /// `SameSite=Lax`): sent to every port of `host`. The browser must be on a page of `host`.
    pub async fn add_cookie(&self, host: &str, name: &str, value: &str, expires: OffsetDateTime) {
        // fantoccini sends an absent domain as `null`, which chromedriver refuses: name the host.
        let cookie = Cookie::build((name.to_owned(), value.to_owned()))
            .domain(host.to_owned())
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .expires(expires)
            .build();
        step("adding the session cookie", self.client.add_cookie(cookie)).await;
    }

    /// Puts a session the test made into the jar for an hour, as Kratos sets its cookie for
    /// `host` (see [`add_cookie`](Self::add_cookie)).
    pub async fn add_test_session(&self, host: &str, session: &kratos_stand_in::TestSession) {
        let expires = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        self.add_cookie(host, &session.cookie_name, &session.cookie_value, expires)
            .await;
    }

    /// Clicks the element `css` finds (a button, a link) and waits for the page it leads to.
    ///
    /// WebDriver's click returns once the click is dispatched; a form's submission may start
    /// its navigation only after that, so reading the URL at once can still show the old page.
    /// The old document is marked before the click, and the wait ends when a document without
    /// the mark has loaded (a navigation to the same URL included).
    pub async fn click(&self, css: &str) {
        self.script("window.__towerKratosBeforeClick = true; return null;")
            .await;
        let element = step(
            &format!("finding `{css}` on the page"),
            self.client.find(Locator::Css(css)),
        )
        .await;
        step(&format!("clicking `{css}`"), element.click()).await;
        self.wait_for_the_next_document(css).await;
    }

    /// Submits a form posting nothing to `action` from the current page, as a page of that
    /// origin would (the browser adds `Origin`, `Sec-Fetch-Site` and the cookies itself), and
    /// waits for the page the answer is.
    pub async fn post_form(&self, action: &str) {
        const SCRIPT: &str = "
            window.__towerKratosBeforeClick = true;
            const form = document.createElement('form');
            form.method = 'post';
            form.action = arguments[0];
            document.body.appendChild(form);
            form.submit();
            return null;";
        step(
            &format!("posting a form to {action}"),
            self.client.execute(SCRIPT, vec![json!(action)]),
        )
        .await;
        self.wait_for_the_next_document(action).await;
    }

    /// `fetch(url, {method: 'POST', credentials: 'include', mode: 'no-cors'})` from the current
    /// page, as a script of another origin can send it without asking CORS: the response is
    /// opaque to the page (its type, `opaque`, is returned), but the request was sent with the
    /// cookie.
    pub async fn post_no_cors(&self, url: &str) -> String {
        const SCRIPT: &str = "
            const [url, done] = arguments;
            fetch(url, { method: 'POST', credentials: 'include', mode: 'no-cors' })
                .then((response) => done(response.type))
                .catch((error) => done('failed: ' + String(error)));";
        let reply = step(
            &format!("POST {url} from the page (no-cors)"),
            self.client.execute_async(SCRIPT, vec![json!(url)]),
        )
        .await;
        reply.as_str().unwrap_or_default().to_owned()
    }

    /// Opens a WebSocket to `url` from the current page: `open` when the handshake succeeded,
    /// else `refused` (a WebSocket's page learns no more than that).
    pub async fn open_websocket(&self, url: &str) -> String {
        const SCRIPT: &str = "
            const [url, done] = arguments;
            const socket = new WebSocket(url);
            socket.onopen = () => { done('open'); socket.close(); };
            socket.onerror = () => done('refused');";
        let reply = step(
            &format!("opening a WebSocket to {url}"),
            self.client.execute_async(SCRIPT, vec![json!(url)]),
        )
        .await;
        reply.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until a document other than the one marked `__towerKratosBeforeClick` has loaded.
    async fn wait_for_the_next_document(&self, what: &str) {
        let loaded = async {
            loop {
                let state = self
                    .client
                    .execute(
                        "return window.__towerKratosBeforeClick === undefined \
                         && document.readyState === 'complete';",
                        Vec::new(),
                    )
                    .await;
                // A script run while the old document is unloading may fail: ask again.
                if let Ok(Value::Bool(true)) = state {
                    return Ok::<(), String>(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        step(&format!("the page `{what}` leads to"), loaded).await;
    }

    /// Clicks the element `css` finds (a button whose script stays on the page), without
    /// waiting for a page load.
    pub async fn press(&self, css: &str) {
        let element = step(
            &format!("finding `{css}` on the page"),
            self.client.find(Locator::Css(css)),
        )
        .await;
        step(&format!("clicking `{css}`"), element.click()).await;
    }

    /// The text of the element `css` finds once `until` holds for it, read every 50 ms; a panic
    /// with the last text read when it does not within `within`.
    pub async fn wait_for_text(
        &self,
        css: &str,
        within: Duration,
        until: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = self.text_of(css).await;
            if until(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{css}` still reads {text:?} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the element `css` finds.
    pub async fn text_of(&self, css: &str) -> String {
        let element = step(
            &format!("finding `{css}` on the page"),
            self.client.find(Locator::Css(css)),
        )
        .await;
        step(&format!("reading `{css}`"), element.text()).await
    }

    /// Every cookie named `name` the browser would send to the current page, HttpOnly included.
    pub async fn cookies_named(&self, name: &str) -> Vec<Cookie<'static>> {
        let all = step("reading the cookie jar", self.client.get_all_cookies()).await;
        all.into_iter()
            .filter(|cookie| cookie.name() == name)
            .collect()
    }

    /// `fetch(path, {method: 'POST', credentials: 'same-origin'})` from the current page, as the
    /// app's own front end would call it: the response's status and body.
    pub async fn post_from_page(&self, path: &str) -> (u16, String) {
        const SCRIPT: &str = "
            const [path, done] = arguments;
            fetch(path, { method: 'POST', credentials: 'same-origin' })
                .then((response) => response.text()
                    .then((body) => done({ status: response.status, body })))
                .catch((error) => done({ status: 0, body: String(error) }));";
        let reply = step(
            &format!("POST {path} from the page"),
            self.client.execute_async(SCRIPT, vec![json!(path)]),
        )
        .await;
        let status = reply["status"].as_u64().and_then(|s| u16::try_from(s).ok());
        let body = reply["body"].as_str().map(str::to_owned);
        match (status, body) {
            (Some(status), Some(body)) => (status, body),
            _ => panic!("POST {path}: the page's script returned {reply}"),
        }
    }
}
