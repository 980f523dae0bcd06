//! What the harness-less benches share: the trivial service both sides wrap, request builders, a
//! latency histogram, a Zipf sampler, a client driver, and a Kratos stand-in on its own runtime.

// Each bench uses a subset of this module; the rest would be dead code in that target.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    fmt::{self, Debug},
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Request, Response, StatusCode};
use kratos_stand_in::{KratosStandIn, TestSession};
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

/// Request latencies. A sorted `Vec` gives exact percentiles; a few million entries sort in well
/// under a second, so a bucketed histogram would buy nothing here.
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    pub fn push(&mut self, latency: Duration) {
        self.0.push(latency);
    }

    pub fn append(&mut self, other: &mut Latencies) {
        self.0.append(&mut other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sorts once; then [`percentile`](Self::percentile) is an index.
    pub fn sorted(mut self) -> Sorted {
        self.0.sort_unstable();
        Sorted(self.0)
    }
}

pub struct Sorted(Vec<Duration>);

impl Sorted {
    /// The nearest-rank percentile (`p` in 0..=100); zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn mean(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }
}

/// xorshift64*: a fast, seeded generator. Benchmarks need repeatable, cheap numbers, not
/// cryptographic ones.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (the modulo bias is far below what a benchmark can see).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf popularity over `n` items: item `k` (0-based) is drawn with weight `1 / (k + 1)^s`, the
/// way a few users make most of a site's traffic. Sampling inverts the cumulative weights.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        for weight in &mut cumulative {
            *weight /= total;
        }
        Self { cumulative }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative
            .partition_point(|&weight| weight <= u)
            .min(self.cumulative.len() - 1)
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
    pub latencies: Sorted,
}

impl Run {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` concurrent clients for `duration`, each sending its next request as soon as the
/// previous one is answered (a closed loop, as keep-alive connections behave). The request is
/// built before the clock starts, so only the service's work is timed.
pub async fn drive<S, B, F>(service: S, clients: usize, duration: Duration, request: F) -> Run
where
    S: Service<Request<String>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Debug,
    B: Send + 'static,
    F: Fn(&mut Rng) -> Request<String> + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let mut service = service.clone();
            let request = Arc::clone(&request);
            tokio::spawn(async move {
                let mut rng = Rng::new(client as u64 + 1);
                let mut latencies = Latencies::with_capacity(1 << 16);
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
                    latencies.push(sent.elapsed());
                    if response.status() != StatusCode::OK {
                        failures += 1;
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut all = Latencies::default();
    let mut failures = 0;
    for task in tasks {
        let (mut latencies, failed) = task.await.expect("client task");
        all.append(&mut latencies);
        failures += failed;
    }
    let elapsed = started.elapsed();
    Run {
        requests: all.len() as u64,
        failures,
        elapsed,
        latencies: all.sorted(),
    }
}
