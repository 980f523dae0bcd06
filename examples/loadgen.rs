//! A load run anyone can repeat: starts the reference app (`examples/axum_app.rs`, with its
//! built-in Kratos stand-in) on a free loopback port, then drives `GET /me` (the demo session's
//! token, so every request passes through the layer's cache) and `GET /health` (no layer) over
//! N keep-alive HTTP/1.1 connections for T seconds each, and prints requests/s of each and their
//! ratio. The target is `/me` ≥ 0.9 × `/health`: the layer costs little next to HTTP itself.
//!
//! ```text
//! cargo build --release --example axum_app --example loadgen
//! target/release/examples/loadgen                       # 16 connections, 10 s per route
//! CONNECTIONS=64 SECONDS=5 target/release/examples/loadgen
//! target/release/examples/loadgen --connections 4 --seconds 3
//! ```
//!
//! The app binary is the `axum_app` next to this one (or `AXUM_APP=/path/to/axum_app`); when it
//! is missing, `cargo build --release --example axum_app` builds it. `KRATOS_PUBLIC_URL` is
//! removed from the app's environment so it always runs its own stand-in. The two routes run in
//! alternating slices (`ROUNDS`, default 4), so a change in the machine's load during the run
//! affects both alike. Load generator and app share the machine's cores: compare the ratio, not
//! the absolute numbers, across machines.

use std::{
    env,
    error::Error,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn Error + Send + Sync>;

/// How long the app may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

struct Settings {
    connections: usize,
    seconds: f64,
    rounds: u32,
}

impl Settings {
    /// `--connections N` / `--seconds T` / `--rounds R`, else `CONNECTIONS`, `SECONDS`, `ROUNDS`.
    fn parse() -> Result<Self, BoxError> {
        let mut connections = env::var("CONNECTIONS").ok();
        let mut seconds = env::var("SECONDS").ok();
        let mut rounds = env::var("ROUNDS").ok();
        let mut args = env::args().skip(1);
        while let Some(arg) = args.next() {
            let slot = match arg.as_str() {
                "--connections" => &mut connections,
                "--seconds" => &mut seconds,
                "--rounds" => &mut rounds,
                other => return Err(format!("unknown argument {other:?}").into()),
            };
            *slot = Some(args.next().ok_or(format!("{arg} needs a value"))?);
        }
        let settings = Self {
            connections: connections.as_deref().unwrap_or("16").trim().parse()?,
            seconds: seconds.as_deref().unwrap_or("10").trim().parse()?,
            rounds: rounds.as_deref().unwrap_or("4").trim().parse()?,
        };
        if settings.connections == 0
            || settings.rounds == 0
            || !settings.seconds.is_finite()
            || settings.seconds <= 0.0
        {
            return Err("connections, seconds and rounds must be positive".into());
        }
        Ok(settings)
    }
}

/// The running app; killed when dropped, so a failed run never leaves it behind.
struct App {
    child: Child,
    addr: String,
    token: String,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `axum_app` binary: `AXUM_APP`, else next to this binary, else built by cargo.
fn app_binary() -> Result<PathBuf, BoxError> {
    if let Some(path) = env::var_os("AXUM_APP") {
        return Ok(path.into());
    }
    let name = format!("axum_app{}", env::consts::EXE_SUFFIX);
    let own = env::current_exe()?;
    let examples = own.parent().ok_or("no directory around this binary")?;
    let sibling = examples.join(&name);
    if sibling.exists() {
        return Ok(sibling);
    }
    eprintln!("loadgen: {} is missing; building it", sibling.display());
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--example", "axum_app"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?;
    if !status.success() {
        return Err("cargo build --release --example axum_app failed".into());
    }
    // target/<profile>/examples/loadgen -> target/release/examples/axum_app
    let target = examples
        .parent()
        .and_then(|profile| profile.parent())
        .ok_or("this binary is not in target/<profile>/examples")?;
    Ok(target.join("release").join("examples").join(name))
}

/// Starts the app on a free port and reads its address and demo token from what it prints.
fn start_app() -> Result<App, BoxError> {
    let binary = app_binary()?;
    let mut child = Command::new(&binary)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env_remove("KRATOS_PUBLIC_URL")
        .env_remove("KRATOS_ADMIN_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // Read on a thread: it keeps draining the app's output after startup, so the app never
    // blocks on a full pipe, and startup can time out.
    let (lines, startup) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut app = App {
        child,
        addr: String::new(),
        token: String::new(),
    };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while app.addr.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = startup
            .recv_timeout(left)
            .map_err(|_| "the app did not print `listening on http://...`")?;
        if let Some((_, rest)) = line.split_once("X-Session-Token: ") {
            app.token = rest.split('\'').next().unwrap_or_default().to_owned();
        }
        if let Some((_, addr)) = line.split_once("listening on http://") {
            app.addr = addr.trim().trim_end_matches('/').to_owned();
        }
    }
    if app.token.is_empty() {
        return Err("the app printed no demo session token (is it using its stand-in?)".into());
    }
    println!("app: {} at http://{}", binary.display(), app.addr);
    Ok(app)
}

/// What one slice of the run saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    not_ok: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time the app used, when the system says (Linux).
    app_cpu: Option<Duration>,
    slices: u32,
}

impl Tally {
    fn add(&mut self, other: Tally, app_cpu: Option<Duration>) {
        self.requests += other.requests;
        self.not_ok += other.not_ok;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.app_cpu = if self.slices == 0 {
            app_cpu
        } else {
            self.app_cpu
                .zip(app_cpu)
                .map(|(total, slice)| total + slice)
        };
        self.slices += 1;
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The app's CPU time per request: unlike requests/s, it does not depend on how much of the
    /// machine other processes (this load generator included) take.
    fn app_cpu_per_request(&self) -> Option<Duration> {
        let requests = u32::try_from(self.requests).ok().filter(|n| *n > 0)?;
        Some(self.app_cpu? / requests)
    }
}

/// The CPU time (user + system, all threads) process `pid` has used, from `/proc/<pid>/stat`,
/// in clock ticks of 10 ms (Linux's USER_HZ). Slices of seconds make that precise enough.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it do not. utime and stime are
    // fields 14 and 15, the 12th and 13th after the name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `connections` keep-alive connections, each sending the next request when the previous
/// answer has been read, until `duration` has passed.
async fn drive(
    addr: &str,
    path: &'static str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<Tally, BoxError> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        senders.push(sender);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let host = addr.to_owned();
            let token = token.map(str::to_owned);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let mut request = Request::get(path).header(header::HOST, &host);
                    if let Some(token) = &token {
                        request = request.header("x-session-token", token);
                    }
                    let request = request.body(Empty::<Bytes>::new())?;
                    let sent = Instant::now();
                    sender.ready().await?;
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    response.into_body().collect().await?;
                    tally.latencies.push(sent.elapsed());
                    tally.requests += 1;
                    if status != StatusCode::OK {
                        tally.not_ok += 1;
                    }
                }
                Ok::<_, BoxError>(tally)
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await??;
        total.requests += tally.requests;
        total.not_ok += tally.not_ok;
        total.latencies.extend(tally.latencies);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let settings = Settings::parse()?;
    if cfg!(debug_assertions) {
        eprintln!("loadgen: this is a debug build; its own overhead will dominate (use --release)");
    }
    let app = start_app()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{} keep-alive connections, {} s per route in {} alternating slices; {cores} cores \
         shared by the app and this load generator",
        settings.connections, settings.seconds, settings.rounds
    );

    // Warm up: connections, the app's runtime, and the session cache (one whoami).
    let warm_up = Duration::from_millis(500);
    let me = drive(
        &app.addr,
        "/me",
        Some(&app.token),
        settings.connections,
        warm_up,
    )
    .await?;
    if me.not_ok > 0 {
        return Err(format!(
            "{} of {} warm-up /me requests were not 200",
            me.not_ok, me.requests
        )
        .into());
    }
    drive(&app.addr, "/health", None, settings.connections, warm_up).await?;

    // With DIAGNOSE=1, `GET /` (the layer in optional mode, a smaller JSON answer) runs too,
    // without and with the token: their difference is the cache hit behind HTTP, apart from what
    // the handlers cost.
    let mut routes: Vec<(&str, &'static str, Option<&str>, Tally)> = vec![
        ("GET /health (no layer)", "/health", None, Tally::default()),
        (
            "GET /me (layer, cache hit)",
            "/me",
            Some(&app.token),
            Tally::default(),
        ),
    ];
    if env::var("DIAGNOSE").is_ok_and(|value| value == "1") {
        routes.push(("GET / (layer, no credential)", "/", None, Tally::default()));
        routes.push((
            "GET / (layer, cache hit)",
            "/",
            Some(&app.token),
            Tally::default(),
        ));
    }
    let slice = Duration::from_secs_f64(settings.seconds / f64::from(settings.rounds));
    let pid = app.child.id();
    for _ in 0..settings.rounds {
        for (_, path, token, tally) in &mut routes {
            let cpu_before = process_cpu(pid);
            let run = drive(&app.addr, path, *token, settings.connections, slice).await?;
            let app_cpu = cpu_before
                .zip(process_cpu(pid))
                .map(|(before, after)| after.saturating_sub(before));
            tally.add(run, app_cpu);
        }
    }

    println!();
    println!("| route | requests/s | p50 | p99 | app CPU per request | not 200 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (route, _, _, tally) in &mut routes {
        tally.latencies.sort_unstable();
        let cpu = tally.app_cpu_per_request().map_or_else(
            || "-".to_owned(),
            |cpu| format!("{:.2} µs", cpu.as_secs_f64() * 1e6),
        );
        println!(
            "| {route} | {:.0} | {:.1} µs | {:.1} µs | {cpu} | {} |",
            tally.rate(),
            percentile(&tally.latencies, 50.0).as_secs_f64() * 1e6,
            percentile(&tally.latencies, 99.0).as_secs_f64() * 1e6,
            tally.not_ok
        );
    }
    let (health, me) = (&routes[0].3, &routes[1].3);
    let ratio = me.rate() / health.rate();
    println!();
    println!(
        "/me ÷ /health = {ratio:.3} (target ≥ 0.9: {})",
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
    if routes.iter().any(|(_, _, _, tally)| tally.not_ok > 0) {
        return Err("some requests were not answered 200".into());
    }
    Ok(())
}
