//! What the harness-less benches share: the trivial service both sides wrap, request builders,
//! latency histograms (hdrhistogram), a client driver, and a Kratos stand-in on its own runtime.

// Each bench uses a subset of this module; the rest would be dead code in that target.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    fmt::{self, Debug},
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use kratos_stand_in::{KratosStandIn, TestSession};
use rand::{rngs::SmallRng, SeedableRng};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

/// The service behind the middleware: it does nothing, so what is measured is the middleware.
pub async fn trivial(_request: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::new()))
}

/// `GET /me` with the session token, as an API client sends it.
pub fn with_token(token: &str) -> Request<String> {
    Request::get("/me")
        .header("x-session-token", token)
        .body(String::new())
        .expect("valid request")
}

/// `GET /me` with the session cookie (`name=value`) among the cookies a real browser sends, so
/// the credential has to be found in a longer header.
pub fn with_cookie(cookie: &str) -> Request<String> {
    let header =
        format!("_ga=GA1.1.123456789.1700000000; theme=dark; {cookie}; csrftoken=abcdef0123456789");
    Request::get("/me")
        .header("cookie", header)
        .body(String::new())
        .expect("valid request")
}

/// The machine, for the README next to the numbers.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {model}")
}

/// Whether this run only checks that the bench works: `cargo bench` passes `--bench`, while
/// `cargo test --benches` does not. Criterion's benches behave the same way.
pub fn smoke_test() -> bool {
    !std::env::args().any(|arg| arg == "--bench")
}

/// A duration from an environment variable in (fractional) seconds, for quick runs.
pub fn env_seconds(name: &str, default: f64) -> Duration {
    let seconds = std::env::var(name)
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(seconds)
}

/// A count from an environment variable.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A duration as a person reads it: ns, µs or ms with three significant digits.
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_secs_f64() * 1e9;
        if nanos < 1e3 {
            write!(f, "{nanos:.0} ns")
        } else if nanos < 1e6 {
            write!(f, "{:.2} µs", nanos / 1e3)
        } else {
            write!(f, "{:.2} ms", nanos / 1e6)
        }
    }
}

/// Latencies in nanoseconds, up to a minute, to three significant digits: an HDR histogram, so
/// recording is constant-time and memory stays fixed however long a run is.
pub fn latencies() -> Histogram<u64> {
    Histogram::new_with_max(60_000_000_000, 3).expect("valid histogram bounds")
}

/// [`Histogram`]s of nanoseconds read and written as [`Duration`]s.
pub trait Latencies {
    fn record_latency(&mut self, latency: Duration);
    /// The latency at `quantile` (0.5 for the median, 0.99 for p99); zero when empty.
    fn at_quantile(&self, quantile: f64) -> Duration;
    fn mean_latency(&self) -> Duration;
}

impl Latencies for Histogram<u64> {
    fn record_latency(&mut self, latency: Duration) {
        self.saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    fn at_quantile(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.value_at_quantile(quantile))
    }

    fn mean_latency(&self) -> Duration {
        Duration::from_secs_f64(self.mean() / 1e9)
    }
}

/// A session's credential as the load runs send it.
pub enum LoadCredential {
    Token(String),
    Cookie(String),
}

impl LoadCredential {
    /// Even ranks send their token, odd ranks their cookie: both credential kinds, one cache
    /// entry each.
    pub fn for_sessions(sessions: &[TestSession]) -> Arc<Vec<Self>> {
        Arc::new(
            sessions
                .iter()
                .enumerate()
                .map(|(rank, session)| {
                    if rank % 2 == 0 {
                        Self::Token(session.token.clone())
                    } else {
                        Self::Cookie(session.cookie_header())
                    }
                })
                .collect(),
        )
    }

    /// `GET /` with this credential.
    pub fn request(&self) -> Request<String> {
        match self {
            Self::Token(token) => with_token(token),
            Self::Cookie(cookie) => with_cookie(cookie),
        }
    }
}

/// A stand-in on a runtime of its own, so its work is scheduled apart from the app's (as a real
/// Kratos in its own process would be) and it keeps serving while the bench's runtime blocks.
pub struct SeparateKratos {
    // Dropped first: stopping the server needs its runtime.
    pub kratos: KratosStandIn,
    _runtime: Runtime,
}

impl SeparateKratos {
    pub fn start() -> Self {
        let runtime = Runtime::new().expect("tokio runtime for the stand-in");
        let kratos = runtime
            .block_on(KratosStandIn::start())
            .expect("stand-in starts");
        Self {
            kratos,
            _runtime: runtime,
        }
    }
}

/// What a run of concurrent clients saw.
pub struct Run {
    pub requests: u64,
    /// Answers that were not 200.
    pub failures: u64,
    pub elapsed: Duration,
    pub latencies: Histogram<u64>,
}

impl Run {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` concurrent clients for `duration`, each sending its next request as soon as the
/// previous one is answered (a closed loop, as keep-alive connections behave). The request is
/// built before the clock starts, so only the service's work is timed. Each client draws from its
/// own seeded generator, so runs are repeatable.
pub async fn drive<S, B, F>(service: S, clients: usize, duration: Duration, request: F) -> Run
where
    S: Service<Request<String>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Debug,
    B: Send + 'static,
    F: Fn(&mut SmallRng) -> Request<String> + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let mut service = service.clone();
            let request = Arc::clone(&request);
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(client as u64 + 1);
                let mut latencies = latencies();
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    let next = request(&mut rng);
                    let sent = Instant::now();
                    let response = service
                        .ready()
                        .await
                        .expect("service ready")
                        .call(next)
                        .await
                        .expect("service call");
                    latencies.record_latency(sent.elapsed());
                    if response.status() != StatusCode::OK {
                        failures += 1;
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut all = latencies();
    let mut failures = 0;
    for task in tasks {
        let (latencies, failed) = task.await.expect("client task");
        all.add(&latencies).expect("same bounds");
        failures += failed;
    }
    let elapsed = started.elapsed();
    Run {
        requests: all.len(),
        failures,
        elapsed,
        latencies: all,
    }
}
