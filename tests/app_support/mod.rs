//! The reference app (`examples/axum_app.rs`) as a child process, for the tests that run it
//! whole: `tests/browser.rs` (with its built-in stand-in, in Chromium) and
//! `tests/app_replicas.rs` (three of them over one Redis and one stand-in). Each listens on a
//! free loopback port and is killed when its guard drops, also when a test panics.
#![allow(dead_code)] // each test binary uses a part

use std::env;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a process may take to say it is ready.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The lines a child process writes to stdout and stderr, read by two threads that keep draining
/// the pipes for as long as the process lives.
pub struct Output {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Output {
    pub fn of(child: &mut Child) -> Self {
        let (sender, lines) = mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|out| Box::new(out) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|err| Box::new(err) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let sender = sender.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    // Once nobody listens any more, keep draining so the child never blocks.
                    let _ = sender.send(line);
                }
            });
        }
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// The first value `find` returns for a line, reading for at most [`STEP_TIMEOUT`]; else
    /// why not, with everything the process printed.
    pub fn wait_for<T>(
        &mut self,
        who: &str,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = find(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return Ok(found);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                    "{who} did not say what was expected within {STEP_TIMEOUT:?}; it printed:\n{}",
                    self.seen.join("\n")
                ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "{who} exited before saying what was expected; it printed:\n{}",
                        self.seen.join("\n")
                    ))
                }
            }
        }
    }
}

/// The reference app's binary, built once per test process: `cargo test --test browser` does not
/// build examples by itself, and an old binary would test old code.
pub fn app_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(build_app) {
        Ok(path) => path,
        Err(error) => panic!("{error}"),
    }
}

fn build_app() -> Result<PathBuf, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let output = Command::new(&cargo)
        .args(["build", "--example", "axum_app", "--message-format=json"])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running {cargo:?} to build the reference app: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --example axum_app` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["target"]["name"] == "axum_app")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "`cargo build --example axum_app` named no executable".to_owned())
}

/// `examples/axum_app.rs` as a child process: with its built-in stand-in and demo session, or
/// against a Kratos the test names (`KRATOS_PUBLIC_URL`).
#[derive(Debug)]
pub struct App {
    /// `http://127.0.0.1:PORT`, from the app's `listening on` line.
    pub base: String,
    /// The demo session's cookie name and value, from the app's `curl -H 'Cookie: NAME=VALUE'`
    /// line (printed with the built-in stand-in only).
    pub demo_cookie: Option<(String, String)>,
    /// Kratos's public URL, from the app's `kratos public API:` line.
    pub kratos_url: String,
    child: Child,
}

impl App {
    /// Starts the app on port 0 with these variables (on top of a clean slate: the built-in
    /// stand-in, no login URL, no shared cache, warnings only), once it says it is listening.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        Self::try_spawn(env).unwrap_or_else(|output| panic!("{output}"))
    }

    /// [`App::spawn`], or what the app printed when it exited (or hung) instead of listening.
    pub fn try_spawn(env: &[(&str, &str)]) -> Result<Self, String> {
        let mut command = Command::new(app_binary());
        command
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn");
        for name in [
            "KRATOS_PUBLIC_URL",
            "KRATOS_ADMIN_URL",
            "KRATOS_ADMIN_TOKEN",
            "LOGIN_URL",
            "RECENT_AUTH_SECS",
            "TRUSTED_ORIGINS",
            "REDIS_URL",
            "SHARED_CACHE_SECRET",
            "REDIS_KEY_PREFIX",
            "REDIS_USERNAME",
            "REDIS_PASSWORD",
            "REDIS_CA_FILE",
            "REDIS_CLIENT_CERT_FILE",
            "REDIS_CLIENT_KEY_FILE",
            "REDIS_CLUSTER_NODES",
            "REDIS_SENTINELS",
            "REDIS_SENTINEL_MASTER",
        ] {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", app_binary().display()));
        let mut output = Output::of(&mut child);
        let mut demo_cookie = None;
        let mut kratos_url = None;
        let base = output.wait_for("the reference app", |line| {
            if let Some(url) = line.strip_prefix("kratos public API: ") {
                kratos_url = Some(url.trim().to_owned());
            }
            if let Some((name, value)) = line
                .split_once("-H 'Cookie: ")
                .and_then(|(_, rest)| rest.split_once('\''))
                .and_then(|(header, _)| header.split_once('='))
            {
                demo_cookie = Some((name.to_owned(), value.to_owned()));
            }
            line.strip_prefix("listening on ").map(str::to_owned)
        });
        let mut app = Self {
            base: String::new(),
            demo_cookie,
            kratos_url: kratos_url.unwrap_or_default(),
            child,
        };
        // On an error the guard drops here, and the child with it.
        app.base = base?;
        Ok(app)
    }

    /// The demo session's cookie name and value: the app runs with its built-in stand-in.
    pub fn demo_cookie(&self) -> (&str, &str) {
        let (name, value) = self
            .demo_cookie
            .as_ref()
            .expect("the app printed its demo session's cookie (built-in stand-in)");
        (name, value)
    }

    /// The app's host: `127.0.0.1`.
    pub fn host(&self) -> &str {
        let authority = self.base.trim_start_matches("http://");
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host)
    }

    /// The absolute URL of `path` on the app.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
