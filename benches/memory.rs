//! Memory and allocations, counted by a global allocator in this bench (requested bytes, not
//! RSS): what a cache hit allocates next to the bare service, what one cached session costs with
//! the docs example's identity, and how a hit slows down with 100,000 entries instead of 100.
//!
//! ```text
//! cargo bench --bench memory
//! MEMORY_SESSIONS=20000 cargo bench --bench memory     # a quicker fill
//! ```
//!
//! The Kratos stand-in runs in a child process (this binary again, with an environment
//! variable), so the stand-in's own store of 100,000 sessions and its request journal never
//! reach the counts.
//!
//! `PROFILE_HITS=token|cookie|bare PROFILE_ITERS=N` runs only N cache hits (for `perf` or
//! `valgrind --tool=callgrind`) and exits.

mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{BufRead, BufReader, BufWriter, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn};
use rand::{rngs::SmallRng, RngExt, SeedableRng};
use support::{env_count, latencies, machine, trivial, with_cookie, with_token, Human, Latencies};
use tokio::runtime::Runtime;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_kratos::{
    credentials::{find_credential, CookieNames},
    session::{Identity, Session},
    KratosLayer, KratosSession,
};

/// Counts every allocation, for the whole process and per thread. Relaxed atomics: the counts
/// are read after the work they describe has finished and been joined.
struct Counting;

struct Counters {
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
    live_bytes: AtomicI64,
    live_blocks: AtomicI64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            allocations: AtomicU64::new(0),
            allocated_bytes: AtomicU64::new(0),
            live_bytes: AtomicI64::new(0),
            live_blocks: AtomicI64::new(0),
        }
    }

    fn add(&self, allocations: u64, allocated_bytes: u64, live_bytes: i64, live_blocks: i64) {
        self.allocations.fetch_add(allocations, Ordering::Relaxed);
        self.allocated_bytes
            .fetch_add(allocated_bytes, Ordering::Relaxed);
        self.live_bytes.fetch_add(live_bytes, Ordering::Relaxed);
        self.live_blocks.fetch_add(live_blocks, Ordering::Relaxed);
    }

    fn read(&self, scope: Scope) -> Snapshot {
        Snapshot {
            scope,
            allocations: self.allocations.load(Ordering::Relaxed),
            allocated_bytes: self.allocated_bytes.load(Ordering::Relaxed),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            live_blocks: self.live_blocks.load(Ordering::Relaxed),
        }
    }
}

static PROCESS: Counters = Counters::new();
thread_local! {
    // Const-initialised and without a destructor, so using it inside the allocator never
    // allocates. A thread's own counts are immune to what other threads (connection pools,
    // runtime workers) free or allocate meanwhile.
    static THREAD: Counters = const { Counters::new() };
}

fn count(allocations: u64, allocated_bytes: u64, live_bytes: i64, live_blocks: i64) {
    PROCESS.add(allocations, allocated_bytes, live_bytes, live_blocks);
    // During thread teardown the counters may be gone; the process counts still hold.
    let _ =
        THREAD.try_with(|thread| thread.add(allocations, allocated_bytes, live_bytes, live_blocks));
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            count(1, layout.size() as u64, layout.size() as i64, 1);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            count(1, layout.size() as u64, layout.size() as i64, 1);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `block` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(block, layout) };
        count(0, 0, -(layout.size() as i64), -1);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            // A growth is an allocation as far as cost goes; the block count does not change.
            count(
                1,
                new_size as u64,
                new_size as i64 - layout.size() as i64,
                0,
            );
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Whose allocations a [`Snapshot`] counts.
#[derive(Clone, Copy)]
enum Scope {
    /// Every thread's: for work spread over the runtime's workers.
    Process,
    /// This thread's only: for work that runs on it alone (a cache hit polled by `block_on`).
    Thread,
}

#[derive(Clone, Copy)]
struct Snapshot {
    scope: Scope,
    allocations: u64,
    allocated_bytes: u64,
    live_bytes: i64,
    live_blocks: i64,
}

impl Snapshot {
    fn process() -> Self {
        PROCESS.read(Scope::Process)
    }

    fn thread() -> Self {
        THREAD.with(|thread| thread.read(Scope::Thread))
    }

    fn again(&self) -> Self {
        match self.scope {
            Scope::Process => Self::process(),
            Scope::Thread => Self::thread(),
        }
    }

    /// Allocations and allocated bytes per operation since `self`.
    fn per_op_since(&self, ops: u64) -> (f64, f64) {
        let now = self.again();
        (
            (now.allocations - self.allocations) as f64 / ops as f64,
            (now.allocated_bytes - self.allocated_bytes) as f64 / ops as f64,
        )
    }

    /// Live bytes and live blocks added since `self`.
    fn live_since(&self) -> (i64, i64) {
        let now = self.again();
        (
            now.live_bytes - self.live_bytes,
            now.live_blocks - self.live_blocks,
        )
    }
}

/// Set in the child's environment: the number of sessions it creates.
const CHILD_ENV: &str = "TOWER_KRATOS_BENCH_STAND_IN_SESSIONS";
const DOCS_EXAMPLE: &str = include_str!("../tests/fixtures/whoami-docs-example.json");
/// Requests per allocation count; large enough to amortise the cache's periodic housekeeping.
const COUNTED_REQUESTS: u64 = 100_000;
const SMALL_CACHE: usize = 100;
const FILL_CONCURRENCY: usize = 64;

fn main() {
    if let Ok(sessions) = std::env::var(CHILD_ENV) {
        stand_in_process(sessions.parse().expect("session count"));
        return;
    }
    if let Ok(kind) = std::env::var("PROFILE_HITS") {
        profile_hits(&kind, env_count("PROFILE_ITERS", 1_000_000) as u64);
        return;
    }
    let sessions = env_count(
        "MEMORY_SESSIONS",
        if support::smoke_test() {
            2_000
        } else {
            100_000
        },
    );
    println!("memory: allocations per cache hit, bytes per cached session");
    println!("machine: {}", machine());
    let mut kratos = RemoteKratos::start(sessions);
    println!(
        "stand-in (child process): {} sessions with the docs example's traits created in {:.2} s",
        kratos.credentials.len(),
        kratos.creation_time.as_secs_f64()
    );
    let runtime = Runtime::new().expect("tokio runtime");
    let session_bytes = session_sizes(&runtime, &kratos);
    allocations_per_request(&runtime, &kratos);
    per_session(&runtime, &mut kratos, session_bytes);
}

/// The child: a stand-in with `sessions` sessions whose identities carry the docs example's
/// traits. It prints `token cookie` per session, then `url ...`, then answers `calls` on stdin
/// with the whoami count, until stdin closes. The server runs on the runtime's worker threads,
/// so the main thread is free to block on stdin.
fn stand_in_process(sessions: usize) {
    let runtime = Runtime::new().expect("tokio runtime");
    let kratos = runtime.block_on(KratosStandIn::start()).expect("stand-in");
    let example: serde_json::Value = serde_json::from_str(DOCS_EXAMPLE).expect("fixture");
    let traits = &example["identity"]["traits"];
    let started = Instant::now();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for _ in 0..sessions {
        let session = kratos.session().traits(traits.clone()).create();
        writeln!(out, "{} {}", session.token, session.cookie_header()).expect("stdout");
    }
    writeln!(out, "created {}", started.elapsed().as_secs_f64()).expect("stdout");
    writeln!(out, "url {}", kratos.public_url()).expect("stdout");
    out.flush().expect("stdout");
    for command in std::io::stdin().lock().lines() {
        if command.expect("stdin").trim() == "calls" {
            writeln!(out, "calls {}", kratos.calls(Endpoint::Whoami)).expect("stdout");
            out.flush().expect("stdout");
        }
    }
}

/// The parent's handle on the child stand-in.
struct RemoteKratos {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    url: String,
    /// `(token, "name=value" cookie)` per session.
    credentials: Vec<(String, String)>,
    creation_time: Duration,
}

impl RemoteKratos {
    fn start(sessions: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env(CHILD_ENV, sessions.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("stand-in child starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut credentials = Vec::with_capacity(sessions);
        let mut creation_time = Duration::ZERO;
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).expect("child output") > 0,
                "the stand-in child exited early"
            );
            let line = line.trim();
            if let Some(url) = line.strip_prefix("url ") {
                break url.to_owned();
            } else if let Some(seconds) = line.strip_prefix("created ") {
                creation_time = Duration::from_secs_f64(seconds.parse().expect("seconds"));
            } else if let Some((token, cookie)) = line.split_once(' ') {
                credentials.push((token.to_owned(), cookie.to_owned()));
            }
        };
        Self {
            child,
            stdin,
            stdout,
            url,
            credentials,
            creation_time,
        }
    }

    fn whoami_calls(&mut self) -> usize {
        writeln!(self.stdin, "calls").expect("child stdin");
        self.stdin.flush().expect("child stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("child output");
        line.trim()
            .strip_prefix("calls ")
            .and_then(|count| count.parse().ok())
            .expect("a `calls N` answer")
    }
}

impl Drop for RemoteKratos {
    fn drop(&mut self) {
        // Closing stdin ends the child; kill it should it hang.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Heap bytes of one parsed session (what the cache holds behind an `Arc`), for the stand-in's
/// whoami body and for the docs example. Returns the stand-in's and the docs example's bytes.
fn session_sizes(runtime: &Runtime, kratos: &RemoteKratos) -> (i64, i64) {
    let body = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/sessions/whoami", kratos.url))
            .header("x-session-token", &kratos.credentials[0].0)
            .send()
            .await
            .expect("whoami")
            .bytes()
            .await
            .expect("whoami body")
    });
    let measure = |body: &[u8]| {
        let before = Snapshot::thread();
        let session: Arc<Session> = Arc::new(serde_json::from_slice(body).expect("a session"));
        let (bytes, blocks) = before.live_since();
        // The same data with exact capacities: a deep copy (a clone shares the identity's Arc).
        let before = Snapshot::thread();
        let mut copy = Session::clone(&session);
        copy.identity = copy
            .identity
            .map(|identity| Arc::new(Identity::clone(&identity)));
        let copy = Arc::new(copy);
        let (exact_bytes, _) = before.live_since();
        drop((session, copy));
        (bytes, blocks, exact_bytes)
    };
    let (stand_in, stand_in_blocks, stand_in_exact) = measure(&body);
    let (docs, docs_blocks, docs_exact) = measure(DOCS_EXAMPLE.as_bytes());
    let example: serde_json::Value = serde_json::from_str(DOCS_EXAMPLE).expect("fixture");
    let traits_text = example["identity"]["traits"].to_string();
    let before = Snapshot::thread();
    let traits: serde_json::Value = serde_json::from_str(&traits_text).expect("traits");
    let (traits_bytes, traits_blocks) = before.live_since();
    drop(traits);
    println!();
    println!(
        "one parsed session, Arc<Session> (size_of::<Session>() = {} B, Identity {} B):",
        size_of::<Session>(),
        size_of::<Identity>()
    );
    println!(
        "| whoami body | body bytes | heap bytes | heap blocks | same data, exact capacities |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| stand-in, docs example's traits | {} | {stand_in} | {stand_in_blocks} | {stand_in_exact} |",
        body.len()
    );
    println!(
        "| docs example (tests/fixtures) | {} | {docs} | {docs_blocks} | {docs_exact} |",
        DOCS_EXAMPLE.len()
    );
    println!(
        "the docs example's traits alone ({} B of JSON) as serde_json::Value: {traits_bytes} B in \
         {traits_blocks} blocks",
        traits_text.len()
    );
    (stand_in, docs)
}

fn layer_with_capacity(url: &str, capacity: usize) -> KratosLayer {
    KratosLayer::builder(url)
        .cache_capacity(capacity as u64)
        .build()
        .expect("layer")
}

/// Runs `count` requests through one service, one after another, as a connection would.
async fn sequential<S, B>(mut service: S, count: u64, request: impl Fn() -> Request<String>)
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..count {
        let ready = service.ready().await.expect("ready");
        let response = ready.call(request()).await.expect("call");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// Allocations per request: bare service vs the layer on a cache hit, and the parts of the
/// difference that can be counted on their own.
fn allocations_per_request(runtime: &Runtime, kratos: &RemoteKratos) {
    let (token, cookie) = kratos.credentials[0].clone();
    let layered = ServiceBuilder::new()
        .layer(layer_with_capacity(&kratos.url, 10_000))
        .service_fn(trivial);
    let bare = service_fn(trivial);
    let rows = runtime.block_on(async {
        // Warm: the cache, and the first-use allocations of tracing callsites and the runtime.
        sequential(layered.clone(), 1_000, || with_token(&token)).await;
        sequential(layered.clone(), 1_000, || with_cookie(&cookie)).await;
        let mut rows = Vec::new();
        for (name, make) in [
            (
                "X-Session-Token",
                &(|| with_token(&token)) as &dyn Fn() -> Request<String>,
            ),
            ("cookie among 4", &|| with_cookie(&cookie)),
        ] {
            let before = Snapshot::thread();
            sequential(bare, COUNTED_REQUESTS, make).await;
            let bare_counts = before.per_op_since(COUNTED_REQUESTS);
            let before = Snapshot::thread();
            sequential(layered.clone(), COUNTED_REQUESTS, make).await;
            let layer_counts = before.per_op_since(COUNTED_REQUESTS);
            rows.push((name, bare_counts, layer_counts));
        }
        rows
    });
    println!();
    println!("allocations per request on a cache hit ({COUNTED_REQUESTS} requests each; building the request included):");
    println!("| credential | bare: allocs | bare: bytes | layer: allocs | layer: bytes | added allocs | added bytes |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, (bare_allocs, bare_bytes), (layer_allocs, layer_bytes)) in rows {
        println!(
            "| {name} | {bare_allocs:.2} | {bare_bytes:.0} | {layer_allocs:.2} | {layer_bytes:.0} | {:.2} | {:.0} |",
            layer_allocs - bare_allocs,
            layer_bytes - bare_bytes
        );
    }

    // The parts that can be counted alone.
    let names = CookieNames::default();
    let count = |label: &str, work: &dyn Fn()| {
        let before = Snapshot::thread();
        for _ in 0..1_000 {
            work();
        }
        let (allocs, bytes) = before.per_op_since(1_000);
        println!("| {label} | {allocs:.2} | {bytes:.0} |");
    };
    let token_request = with_token(&token);
    let cookie_request = with_cookie(&cookie);
    let session = runtime.block_on(async {
        let seen = Arc::new(Mutex::new(Vec::<KratosSession>::new()));
        let keep = Arc::clone(&seen);
        let service = ServiceBuilder::new()
            .layer(layer_with_capacity(&kratos.url, 10_000))
            .service_fn(move |request: Request<String>| {
                let keep = Arc::clone(&keep);
                async move {
                    let session = request.extensions().get::<KratosSession>().cloned();
                    keep.lock().expect("lock").extend(session);
                    Ok::<_, std::convert::Infallible>(Response::new(String::new()))
                }
            });
        sequential(service, 3, || with_token(&token)).await;
        let seen = seen.lock().expect("lock");
        let shared = seen
            .windows(2)
            .all(|pair| Arc::ptr_eq(pair[0].shared(), pair[1].shared()));
        println!();
        println!(
            "session body cloned per request: {} (3 requests saw {} distinct Arc<Session>)",
            if shared { "no" } else { "YES" },
            if shared { 1 } else { seen.len() }
        );
        seen[0].clone()
    });
    println!();
    println!("parts of a hit, counted alone:");
    println!("| part | allocs | bytes |");
    println!("|---|---:|---:|");
    count("find_credential, X-Session-Token", &|| {
        std::hint::black_box(find_credential(token_request.headers(), &names).ok());
    });
    count("find_credential, cookie among 4", &|| {
        std::hint::black_box(find_credential(cookie_request.headers(), &names).ok());
    });
    count("http: insert the session into empty extensions", &|| {
        let mut request = Request::new(());
        request.extensions_mut().insert(session.clone());
        std::hint::black_box(request);
    });
}

/// Bytes per cached session after filling the cache through the layer, and hit latency with a
/// full cache vs a small one.
fn per_session(
    runtime: &Runtime,
    kratos: &mut RemoteKratos,
    (stand_in_session, docs_session): (i64, i64),
) {
    let credentials: Arc<Vec<(String, String)>> = Arc::new(kratos.credentials.clone());
    let sessions = credentials.len();
    let layer = layer_with_capacity(&kratos.url, sessions);
    let layered = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(trivial);
    let calls_before = kratos.whoami_calls();
    let (before, fill_time) = runtime.block_on(async {
        // Open the connection pool with 401s, which are not cached, so "before" includes it.
        let unknown = Arc::new(
            (0..FILL_CONCURRENCY * 4)
                .map(|n| format!("ory_st_unknown{n:025}"))
                .collect::<Vec<_>>(),
        );
        fill(&layered, &unknown, StatusCode::UNAUTHORIZED).await;
        settle().await;
        let before = Snapshot::process();
        let started = Instant::now();
        let tokens = Arc::new(
            credentials
                .iter()
                .map(|(token, _)| token.clone())
                .collect::<Vec<_>>(),
        );
        fill(&layered, &tokens, StatusCode::OK).await;
        let fill_time = started.elapsed();
        // Hit every entry once more, so the cache's deferred bookkeeping runs to the end.
        fill(&layered, &tokens, StatusCode::OK).await;
        settle().await;
        (before, fill_time)
    });
    // The tokens copied for the fill are freed again; what is left is the cache.
    let (bytes, blocks) = before.live_since();
    let calls = kratos.whoami_calls() - calls_before;
    let per_entry = bytes as f64 / sessions as f64;
    let docs_estimate = per_entry - stand_in_session as f64 + docs_session as f64;
    let cached_report = cached_entries(&layer);
    println!();
    println!(
        "fill: {sessions} sessions through the layer ({FILL_CONCURRENCY} concurrent) in {:.2} s \
         ({:.0} whoami/s over loopback); whoami calls for fill and a second pass: {calls} \
         (of which {} 401s opening the pool); {cached_report}",
        fill_time.as_secs_f64(),
        sessions as f64 / fill_time.as_secs_f64(),
        FILL_CONCURRENCY * 4,
    );
    println!("| per cached session | bytes | blocks |");
    println!("|---|---:|---:|");
    println!(
        "| whole entry (stand-in body) | {per_entry:.0} | {:.1} |",
        blocks as f64 / sessions as f64
    );
    println!("| of which the parsed Arc<Session> | {stand_in_session} | |");
    println!(
        "| of which the rest: moka entry, key, expiry, sketch, hash table | {:.0} | |",
        per_entry - stand_in_session as f64
    );
    println!(
        "| estimate for the docs example's body (rest + {docs_session}) | {docs_estimate:.0} | |"
    );
    println!(
        "target <= 4096 B per cached docs-example session: {} ({docs_estimate:.0} B = {:.2} KiB; \
         glibc adds about 8-16 B per block on top of requested bytes)",
        if docs_estimate <= 4096.0 {
            "met"
        } else {
            "NOT met"
        },
        docs_estimate / 1024.0
    );

    // Hit latency: random sessions among all entries, vs among a cache of 100.
    let small = ServiceBuilder::new()
        .layer(layer_with_capacity(&kratos.url, 10_000))
        .service_fn(trivial);
    let (full_latency, small_latency) = runtime.block_on(async {
        let few = Arc::new(
            credentials
                .iter()
                .take(SMALL_CACHE)
                .map(|(token, _)| token.clone())
                .collect::<Vec<_>>(),
        );
        fill(&small, &few, StatusCode::OK).await;
        let mut full = latencies();
        let mut small_cache = latencies();
        let mut rng = SmallRng::seed_from_u64(7);
        // Interleaved in rounds, so drift on a shared machine hits both alike.
        for _ in 0..20 {
            hits(
                &layered,
                &mut rng,
                &credentials,
                sessions,
                10_000,
                &mut full,
            )
            .await;
            hits(
                &small,
                &mut rng,
                &credentials,
                SMALL_CACHE,
                10_000,
                &mut small_cache,
            )
            .await;
        }
        (full, small_cache)
    });
    println!();
    println!("cache-hit latency through the layer, one client, uniformly random session:");
    println!("| entries | p50 | p99 | p99.9 | mean |");
    println!("|---:|---:|---:|---:|---:|");
    for (entries, latencies) in [(sessions, &full_latency), (SMALL_CACHE, &small_latency)] {
        println!(
            "| {entries} | {} | {} | {} | {} |",
            Human(latencies.at_quantile(0.5)),
            Human(latencies.at_quantile(0.99)),
            Human(latencies.at_quantile(0.999)),
            Human(latencies.mean_latency())
        );
    }
}

async fn hits<S, B>(
    service: &S,
    rng: &mut SmallRng,
    credentials: &[(String, String)],
    among: usize,
    count: usize,
    latencies: &mut Histogram<u64>,
) where
    S: Service<Request<String>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut service = service.clone();
    for _ in 0..count {
        let request = with_token(&credentials[rng.random_range(..among)].0);
        let sent = Instant::now();
        let ready = service.ready().await.expect("ready");
        let response = ready.call(request).await.expect("call");
        latencies.record_latency(sent.elapsed());
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// Sends one request per token through `service`, `FILL_CONCURRENCY` at a time.
async fn fill<S, B>(service: &S, tokens: &Arc<Vec<String>>, expected: StatusCode)
where
    S: Service<Request<String>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..FILL_CONCURRENCY)
        .map(|_| {
            let service = service.clone();
            let tokens = Arc::clone(tokens);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(index) else {
                        return;
                    };
                    let response = service.clone().oneshot(with_token(token)).await;
                    assert_eq!(response.expect("call").status(), expected);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("fill worker");
    }
}

/// Lets in-flight connection work and the cache's timers finish before counting.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

/// The cache's entry count, as the layer's `Debug` shows it, when it does.
fn cached_entries(layer: &KratosLayer) -> String {
    let debug = format!("{layer:?}");
    match debug.split_once("entries: ") {
        Some((_, rest)) => format!(
            "entries cached: {}",
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("?")
        ),
        None => "entry count not shown by Debug".to_owned(),
    }
}

/// Only cache hits, for a profiler: `PROFILE_HITS=token|cookie|bare PROFILE_ITERS=N`, or
/// `PROFILE_HITS=random PROFILE_SESSIONS=N`: random hits among N cached sessions.
fn profile_hits(kind: &str, iters: u64) {
    if kind == "random" {
        let sessions = env_count("PROFILE_SESSIONS", 100_000);
        let kratos = RemoteKratos::start(sessions);
        let runtime = Runtime::new().expect("tokio runtime");
        let credentials = kratos.credentials.clone();
        runtime.block_on(async {
            let layered = ServiceBuilder::new()
                .layer(layer_with_capacity(&kratos.url, sessions))
                .service_fn(trivial);
            let tokens = Arc::new(credentials.iter().map(|(token, _)| token.clone()).collect());
            fill(&layered, &tokens, StatusCode::OK).await;
            settle().await;
            eprintln!("filled {sessions}; profiling now");
            let mut latencies = latencies();
            let mut rng = SmallRng::seed_from_u64(7);
            let started = Instant::now();
            hits(&layered, &mut rng, &credentials, sessions, iters as usize, &mut latencies).await;
            eprintln!(
                "{iters} random hits among {sessions} in {:?}: p50 {} p99 {}",
                started.elapsed(),
                Human(latencies.at_quantile(0.5)),
                Human(latencies.at_quantile(0.99)),
            );
        });
        return;
    }
    let kratos = RemoteKratos::start(1);
    let (token, cookie) = kratos.credentials[0].clone();
    let runtime = Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let layered = ServiceBuilder::new()
            .layer(layer_with_capacity(&kratos.url, 10_000))
            .service_fn(trivial);
        sequential(layered.clone(), 10, || with_token(&token)).await;
        sequential(layered.clone(), 10, || with_cookie(&cookie)).await;
        let started = Instant::now();
        match kind {
            "token" => sequential(layered, iters, || with_token(&token)).await,
            "cookie" => sequential(layered, iters, || with_cookie(&cookie)).await,
            "bare" => sequential(service_fn(trivial), iters, || with_token(&token)).await,
            "bare_cookie" => sequential(service_fn(trivial), iters, || with_cookie(&cookie)).await,
            other => panic!("PROFILE_HITS={other}: expected token, cookie, bare or bare_cookie"),
        }
        eprintln!(
            "{iters} {kind} requests in {:?} ({:?} each)",
            started.elapsed(),
            started.elapsed() / iters.max(1) as u32
        );
    });
}
