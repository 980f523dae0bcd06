//! Memory and allocations, counted by a global allocator in this bench (requested bytes, not
//! RSS), in one run:
//!
//! - what a cache hit allocates next to the bare service;
//! - heap bytes of one parsed session: the stand-in's whoami body, the docs example's, and a
//!   large one built from the docs example (10 devices, 5 authentication methods, 20 traits);
//! - bytes per cached session: the process's live bytes after filling the biggest cache through
//!   the layer, divided by its sessions, and the estimate for the docs example's body (target:
//!   at most 1,600 B);
//! - cache-hit latency (p50, p99, p99.9, mean; one client, a uniformly random cached session)
//!   with 100, 10,000, 100,000 and 1,000,000 cached sessions, one layer each, measured in
//!   interleaved rounds so drift on the machine hits every size alike;
//! - a byte budget held: a layer with `cache_max_bytes` (64 MiB) filled with more sessions of
//!   mixed sizes than fit, its own `cache_bytes` next to the live bytes its fill really added;
//! - the memory floor: one random `Arc` cloned out of a table of as many session-sized blocks,
//!   timed as the hits are (what the machine's memory alone costs a lookup at each size);
//! - the process's resident memory the biggest fill added, per session;
//!
//! and ends with a markdown summary for the README.
//!
//! ```text
//! cargo bench --bench memory                            # 1,000,000 sessions: 8-9 GB of RAM, a few minutes
//! MEMORY_SESSIONS=100000 cargo bench --bench memory     # a quicker fill (sizes above it are skipped)
//! cargo bench --bench memory -- --test                  # smoke test: 2,000 sessions, a 16 MiB budget
//! ```
//!
//! `MEMORY_MIXED=N` sets the mixed-size sessions for the budget (default 60,000) and
//! `MEMORY_BUDGET_MIB=N` the budget (default 64). With `--test`, or without `--bench`
//! (`cargo test --bench memory`, or the binary run directly), the run is a smoke test: 2,000
//! sessions, 10,000 mixed ones, a 16 MiB budget (about 1 MiB of the layer's measured bytes is
//! its HTTP client and pooled connections, so the smaller budget is held less closely).
//!
//! The Kratos stand-in runs in a child process (this binary again, with an environment
//! variable), so the stand-in's own store of a million sessions and its request journal never
//! reach the counts. It takes most of the RAM: about 0.9 GB of resident memory for 100,000
//! sessions and the 60,000 mixed ones, against 0.3 GB for this process (which holds four caches
//! then); a million sessions take some 6 GB there and 2 to 3 GB here.
//!
//! `PROFILE_HITS=token|cookie|bare|bare_cookie PROFILE_ITERS=N` runs only N cache hits (for
//! `perf` or `valgrind --tool=callgrind`) and exits; `PROFILE_HITS=random PROFILE_SESSIONS=N`
//! runs them on random sessions among N cached ones.

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
use serde_json::{json, Value};
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
/// Set in the child's environment: the number of mixed-size sessions it creates after those.
const CHILD_MIXED_ENV: &str = "TOWER_KRATOS_BENCH_STAND_IN_MIXED";
const DOCS_EXAMPLE: &str = include_str!("../tests/fixtures/whoami-docs-example.json");
/// Requests per allocation count; large enough to amortise the cache's periodic housekeeping.
const COUNTED_REQUESTS: u64 = 100_000;
const FILL_CONCURRENCY: usize = 64;
/// The cache sizes whose hit latency is measured side by side (those above `MEMORY_SESSIONS`
/// are skipped, and `MEMORY_SESSIONS` itself is added when it is not one of them).
const CACHE_SIZES: [usize; 4] = [100, 10_000, 100_000, 1_000_000];
/// Hit-latency rounds, each with `HITS_PER_ROUND` hits on every cache size.
const LATENCY_ROUNDS: usize = 20;
const HITS_PER_ROUND: usize = 10_000;
/// The bench's layers keep entries this long: a million-session fill and the rounds after it
/// take longer than the default 60 s, and an expired entry would turn a hit into a whoami call.
const CACHE_TTL: Duration = Duration::from_secs(3_600);
/// The most bytes per cached docs-example session the issue asks for.
const TARGET_BYTES_PER_SESSION: f64 = 1_600.0;
/// The mixed-size sessions' `bio` trait: 0 to this many bytes, drawn from a seeded generator.
const MAX_BIO: usize = 4_000;
const MIXED_SEED: u64 = 4_000;
const MIB: u64 = 1 << 20;

/// `(token, "name=value" cookie)` per session.
type Credentials = Arc<Vec<(String, String)>>;

fn main() {
    if let Ok(sessions) = std::env::var(CHILD_ENV) {
        let mixed = std::env::var(CHILD_MIXED_ENV).map_or(0, |mixed| mixed.parse().expect("count"));
        stand_in_process(sessions.parse().expect("session count"), mixed);
        return;
    }
    if let Ok(kind) = std::env::var("PROFILE_HITS") {
        profile_hits(&kind, env_count("PROFILE_ITERS", 1_000_000) as u64);
        return;
    }
    // `cargo bench` always passes `--bench`, so `cargo bench --bench memory -- --test` is a smoke
    // test too (as it is for criterion's benches).
    let smoke = support::smoke_test() || std::env::args().any(|arg| arg == "--test");
    let sessions = env_count("MEMORY_SESSIONS", if smoke { 2_000 } else { 1_000_000 });
    let mixed = env_count("MEMORY_MIXED", if smoke { 10_000 } else { 60_000 });
    let budget = env_count("MEMORY_BUDGET_MIB", if smoke { 16 } else { 64 }) as u64 * MIB;
    println!("memory: allocations per cache hit, bytes per cached session, hit latency by cache size, a byte budget");
    println!("machine: {}", machine());
    let mut kratos = RemoteKratos::start(sessions, mixed);
    println!(
        "stand-in (child process): {} sessions with the docs example's traits and {} with a `bio` \
         trait of 0..{MAX_BIO} B more, created in {:.2} s",
        kratos.credentials.len(),
        kratos.mixed.len(),
        kratos.creation_time.as_secs_f64()
    );
    let runtime = Runtime::new().expect("tokio runtime");
    let sizes = session_sizes(&runtime, &kratos);
    allocations_per_request(&runtime, &kratos);
    // First, while no other layer exists, so the live bytes it adds are its own.
    let budget = byte_budget(&runtime, &mut kratos, budget);
    let (per_session, latency) = per_session(&runtime, &mut kratos, &sizes);
    summary(&sizes, &per_session, &latency, &budget);
}

/// The child: a stand-in with `sessions` sessions whose identities carry the docs example's
/// traits, then `mixed` sessions whose traits add a `bio` of 0..`MAX_BIO` bytes (seeded, so every
/// run has the same sizes). It prints `token cookie` per session, `mixed token cookie` per
/// mixed-size one, then `created <seconds>`, then `url ...`, then answers `calls` on stdin with
/// the whoami count, until stdin closes. The server runs on the runtime's worker threads, so the
/// main thread is free to block on stdin.
fn stand_in_process(sessions: usize, mixed: usize) {
    let runtime = Runtime::new().expect("tokio runtime");
    let kratos = runtime.block_on(KratosStandIn::start()).expect("stand-in");
    let example: Value = serde_json::from_str(DOCS_EXAMPLE).expect("fixture");
    let traits = &example["identity"]["traits"];
    let started = Instant::now();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for _ in 0..sessions {
        let session = kratos.session().traits(traits.clone()).create();
        writeln!(out, "{} {}", session.token, session.cookie_header()).expect("stdout");
    }
    let text: String = ('a'..='z').cycle().take(MAX_BIO).collect();
    let mut rng = SmallRng::seed_from_u64(MIXED_SEED);
    for _ in 0..mixed {
        let mut traits = traits.clone();
        traits["bio"] = Value::from(&text[..rng.random_range(0..=MAX_BIO)]);
        let session = kratos.session().traits(traits).create();
        writeln!(out, "mixed {} {}", session.token, session.cookie_header()).expect("stdout");
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
    /// The sessions with the docs example's traits.
    credentials: Credentials,
    /// The mixed-size sessions, for the byte budget.
    mixed: Credentials,
    creation_time: Duration,
}

impl RemoteKratos {
    fn start(sessions: usize, mixed: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env(CHILD_ENV, sessions.to_string())
            .env(CHILD_MIXED_ENV, mixed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("stand-in child starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut credentials = Vec::with_capacity(sessions);
        let mut mixed_credentials = Vec::with_capacity(mixed);
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
            } else if let Some((token, cookie)) = line
                .strip_prefix("mixed ")
                .and_then(|rest| rest.split_once(' '))
            {
                mixed_credentials.push((token.to_owned(), cookie.to_owned()));
            } else if let Some((token, cookie)) = line.split_once(' ') {
                credentials.push((token.to_owned(), cookie.to_owned()));
            }
        };
        Self {
            child,
            stdin,
            stdout,
            url,
            credentials: Arc::new(credentials),
            mixed: Arc::new(mixed_credentials),
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

/// Heap bytes of parsed sessions, as measured by [`session_sizes`].
struct SessionBytes {
    /// One `Arc<Session>` from the stand-in's whoami body.
    stand_in: i64,
    /// One from the docs example.
    docs: i64,
    /// The large session: its compact JSON's length, heap bytes and heap blocks.
    large_body: usize,
    large: i64,
    large_blocks: i64,
}

/// A large whoami body, from the docs example: 10 devices (the example's, with other ids and
/// addresses), 5 authentication methods, and traits with 20 fields, strings and nested objects.
/// Compact JSON, as Kratos sends it.
fn large_session_body() -> String {
    let mut session: Value = serde_json::from_str(DOCS_EXAMPLE).expect("fixture");
    let device = session["devices"][0].clone();
    session["devices"] = (0..10u32)
        .map(|n| {
            let mut device = device.clone();
            device["id"] = Value::from(format!("592515ee-7b70-4e08-b4d7-fb0b1643cb{n:02}"));
            device["ip_address"] = Value::from(if n % 2 == 0 {
                format!("2001:a61:1101:8001:cc85:1111:2222:{:04x}", 0x3333 + n)
            } else {
                format!("203.0.113.{}", 10 + n)
            });
            device["location"] =
                Value::from(["Berlin, DE", "Hamburg, DE", "Paris, FR"][n as usize % 3]);
            device
        })
        .collect();
    session["authenticator_assurance_level"] = Value::from("aal2");
    session["authentication_methods"] = json!([
        { "method": "password", "aal": "aal1", "completed_at": "2022-12-01T13:50:30.427375604Z" },
        { "method": "totp", "aal": "aal2", "completed_at": "2022-12-01T13:50:41.118204551Z" },
        { "method": "webauthn", "aal": "aal2", "completed_at": "2022-12-01T14:02:09.940113882Z" },
        { "method": "lookup_secret", "aal": "aal2", "completed_at": "2022-12-01T14:10:55.307228110Z" },
        {
            "method": "oidc",
            "aal": "aal1",
            "completed_at": "2022-12-01T15:31:12.662490315Z",
            "provider": "google",
            "organization": "4b1d5f0e-2f0e-4f49-9b6c-8f3a1e7c9d21"
        }
    ]);
    session["identity"]["traits"] = json!({
        "email": "user@example.org",
        "name": { "first": "Jane", "last": "Doe" },
        "username": "jane.doe",
        "phone": "+49 30 1234567",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "avatar_url": "https://cdn.example.org/avatars/969d7a6e-b8a9-49ea-bf7b-9e2732a41a81.png",
        "website": "https://jane.example.org",
        "company": "Example GmbH",
        "department": "Engineering",
        "job_title": "Staff Engineer",
        "employee_id": "E-0042137",
        "address": {
            "street": "Friedrichstraße 123",
            "postal_code": "10117",
            "city": "Berlin",
            "country": "DE"
        },
        "birthdate": "1990-04-01",
        "gender": "female",
        "consent": { "newsletter": false, "tos": "2022-12-01T13:50:28.706Z", "marketing": false },
        "preferences": {
            "theme": "dark",
            "language": "de",
            "notifications": { "email": true, "sms": false, "push": true }
        },
        "roles": ["admin", "billing", "support"],
        "tenant": "acme",
        "referral_code": "JANE-7Q4K"
    });
    session.to_string()
}

/// Heap bytes of one parsed session (what the cache holds behind an `Arc`), for the stand-in's
/// whoami body, for the docs example and for a large session.
fn session_sizes(runtime: &Runtime, kratos: &RemoteKratos) -> SessionBytes {
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
    let large_body = large_session_body();
    let (large, large_blocks, large_exact) = measure(large_body.as_bytes());
    let example: Value = serde_json::from_str(DOCS_EXAMPLE).expect("fixture");
    let traits_text = example["identity"]["traits"].to_string();
    let before = Snapshot::thread();
    let traits: Value = serde_json::from_str(&traits_text).expect("traits");
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
        "| large: docs example with 10 devices, 5 authentication methods, 20 traits (compact JSON) | {} | {large} | {large_blocks} | {large_exact} |",
        large_body.len()
    );
    println!(
        "the docs example's traits alone ({} B of JSON) as serde_json::Value: {traits_bytes} B in \
         {traits_blocks} blocks",
        traits_text.len()
    );
    SessionBytes {
        stand_in,
        docs,
        large_body: large_body.len(),
        large,
        large_blocks,
    }
}

/// The `cache_capacity` of a layer meant to hold `sessions` sessions: twice as many. The store
/// (quick_cache) bounds each of its shards to an equal share of the capacity, and sessions do not
/// spread evenly over the shards, so a cache of exactly `sessions` evicts a few of them while it
/// fills (1,970 of 2,000 and 98 of 100 were kept in a smoke run) and random hits among them
/// would include whoami calls. The store allocates per entry, not per unit of capacity, so the
/// headroom costs no memory.
fn capacity_for(sessions: usize) -> usize {
    sessions.saturating_mul(2)
}

fn layer_with_capacity(url: &str, capacity: usize) -> KratosLayer {
    KratosLayer::builder(url)
        .cache_capacity(capacity as u64)
        .cache_ttl(CACHE_TTL)
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

/// Hit latency by cache size, as a markdown table.
fn latency_table(latency: &[(usize, Histogram<u64>)]) {
    println!("| cached sessions | hit p50 | p99 | p99.9 | mean |");
    println!("|---:|---:|---:|---:|---:|");
    for (entries, latencies) in latency {
        println!(
            "| {} | {} | {} | {} | {} |",
            thousands(*entries as u64),
            Human(latencies.at_quantile(0.5)),
            Human(latencies.at_quantile(0.99)),
            Human(latencies.at_quantile(0.999)),
            Human(latencies.mean_latency())
        );
    }
}

/// The process's resident memory (`VmRSS`), in bytes; 0 where `/proc` does not say.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// What [`byte_budget`] measured.
struct BudgetReport {
    budget: u64,
    /// Mixed-size sessions sent through the layer.
    offered: usize,
    /// `stats().cache_bytes`: what the cache weighs its entries at (`Some` for a cache sized in
    /// bytes).
    cache_bytes: u64,
    /// Live bytes the cache added: from the layer with its pool open and no session cached, to
    /// after the fill (the layer's HTTP client and connections are not the cache's).
    measured: i64,
    entries: u64,
}

impl BudgetReport {
    /// The measured bytes against the budget, in percent: positive when over.
    fn deviation(&self) -> f64 {
        (self.measured as f64 / self.budget as f64 - 1.0) * 100.0
    }

    fn held(&self) -> String {
        format!(
            "held within {:.1}% ({})",
            self.deviation().abs(),
            if self.deviation() > 0.0 {
                "over"
            } else {
                "under"
            }
        )
    }
}

/// A layer with a byte budget (`cache_max_bytes`), filled through the layer with every mixed-size
/// session, more than fit: the bytes the cache says it holds next to the live bytes the layer
/// really added. Run while no other layer exists, so the process's live bytes are its own.
fn byte_budget(runtime: &Runtime, kratos: &mut RemoteKratos, budget: u64) -> BudgetReport {
    let mixed = Arc::clone(&kratos.mixed);
    let url = kratos.url.clone();
    let calls_before = kratos.whoami_calls();
    let ((layer_bytes, layer_blocks), (cache_part, _), fill_time, stats) =
        runtime.block_on(async {
            // Whatever earlier layers left running ends first.
            settle().await;
            let before = Snapshot::process();
            let layer = KratosLayer::builder(&url)
                .cache_max_bytes(budget)
                .cache_ttl(CACHE_TTL)
                .build()
                .expect("layer with a byte budget");
            let layered = ServiceBuilder::new()
                .layer(layer.clone())
                .service_fn(trivial);
            open_pool(&layered).await;
            settle().await;
            let after_pool = Snapshot::process();
            let started = Instant::now();
            fill(&layered, &mixed, mixed.len(), StatusCode::OK).await;
            let fill_time = started.elapsed();
            let stats = layer.stats().await;
            settle().await;
            let counted = (
                before.live_since(),
                after_pool.live_since(),
                fill_time,
                stats,
            );
            drop((layered, layer));
            // Its pooled connections and the cache's housekeeping end before the next measurement.
            settle().await;
            counted
        });
    let calls = kratos.whoami_calls() - calls_before;
    let report = BudgetReport {
        budget,
        offered: mixed.len(),
        cache_bytes: stats
            .cache_bytes
            .expect("a cache sized in bytes reports its bytes"),
        measured: cache_part,
        entries: stats.cache_entries,
    };
    println!();
    println!(
        "byte budget: a layer with cache_max_bytes({budget}) and {} sessions of mixed sizes (a `bio` \
         trait of 0..{MAX_BIO} B) sent through it ({FILL_CONCURRENCY} concurrent) in {:.2} s \
         ({:.0} whoami/s); whoami calls: {calls} (of which {} 401s opening the pool); \
         cache_entries after stats(): {}",
        report.offered,
        fill_time.as_secs_f64(),
        report.offered as f64 / fill_time.as_secs_f64(),
        FILL_CONCURRENCY * 4,
        report.entries,
    );
    println!("| budget | stats().cache_bytes | measured live bytes the fill added | entries kept | held |");
    println!("|---:|---:|---:|---:|---|");
    println!(
        "| {} | {} | {} | {} | {} |",
        mib(budget as f64),
        mib(report.cache_bytes as f64),
        mib(report.measured as f64),
        thousands(report.entries),
        report.held()
    );
    let kept = report.entries.max(1) as f64;
    println!(
        "the layer before its first session (HTTP client, empty cache, {FILL_CONCURRENCY} pooled \
         connections; not counted above): {}; in all {layer_blocks} live blocks; per kept \
         session: {:.0} B measured, {:.0} B as weighed",
        mib((layer_bytes - cache_part) as f64),
        cache_part as f64 / kept,
        report.cache_bytes as f64 / kept,
    );
    if report.entries as usize >= report.offered {
        println!(
            "NOTE: every session fit, so the budget was never tested: raise MEMORY_MIXED or lower \
             MEMORY_BUDGET_MIB"
        );
    } else if report.cache_bytes < budget / 10 * 9 {
        println!(
            "NOTE: the cache stopped at {} entries, well under the budget: something other than \
             the bytes (an entry count?) bound first",
            report.entries
        );
    }
    report
}

/// What [`per_session`] measured on its biggest cache.
struct PerSession {
    sessions: usize,
    per_entry: f64,
    docs_estimate: f64,
}

/// The cache sizes to measure for `sessions` sessions: those of [`CACHE_SIZES`] that fit, and
/// `sessions` itself (so a quick or smoke run still measures its whole fill), ascending.
fn cache_sizes(sessions: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = CACHE_SIZES
        .into_iter()
        .filter(|&size| size <= sessions)
        .collect();
    if sizes.last() != Some(&sessions) && sessions > 0 {
        sizes.push(sessions);
    }
    sizes
}

/// Bytes per cached session after filling the biggest cache through the layer, then hit latency
/// with every cache size, one layer each, side by side.
fn per_session(
    runtime: &Runtime,
    kratos: &mut RemoteKratos,
    session_bytes: &SessionBytes,
) -> (PerSession, Vec<(usize, Histogram<u64>)>) {
    let credentials = Arc::clone(&kratos.credentials);
    let sizes = cache_sizes(credentials.len());
    let biggest = *sizes.last().expect("at least one session");
    let url = kratos.url.clone();
    // One closure, so every layered service has the same type.
    let wrap = |layer: &KratosLayer| {
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(trivial)
    };

    // The biggest cache first, alone: the live bytes its fill adds are its own.
    let layer = layer_with_capacity(&url, capacity_for(biggest));
    let layered = wrap(&layer);
    let calls_before = kratos.whoami_calls();
    let (before, fill_time, stats) = runtime.block_on(async {
        // Open the connection pool with 401s, which are not cached, so "before" includes it.
        open_pool(&layered).await;
        settle().await;
        let before = Snapshot::process();
        let resident_before = resident_bytes();
        let started = Instant::now();
        fill(&layered, &credentials, biggest, StatusCode::OK).await;
        let fill_time = started.elapsed();
        // Sweeps expired entries (none here), so every entry counted is a live one.
        let stats = layer.stats().await;
        settle().await;
        let resident = resident_bytes().saturating_sub(resident_before);
        (before, fill_time, (stats, resident))
    });
    let (stats, resident) = stats;
    let (bytes, blocks) = before.live_since();
    let calls = kratos.whoami_calls() - calls_before;
    // Per session held: the same as per session sent, unless some were evicted.
    let held = stats.cache_entries.max(1) as f64;
    let per_entry = bytes as f64 / held;
    let docs_estimate = per_entry - session_bytes.stand_in as f64 + session_bytes.docs as f64;
    println!();
    println!(
        "bytes per cached session: {biggest} sessions through the layer ({FILL_CONCURRENCY} \
         concurrent); whoami calls: {calls} (of which {} 401s opening the pool); cache_entries \
         after stats(): {}",
        FILL_CONCURRENCY * 4,
        stats.cache_entries
    );
    println!("| per cached session | bytes | blocks |");
    println!("|---|---:|---:|");
    println!(
        "| whole entry (stand-in body) | {per_entry:.0} | {:.1} |",
        blocks as f64 / held
    );
    println!(
        "| of which the parsed Arc<Session> | {} | |",
        session_bytes.stand_in
    );
    println!(
        "| resident memory the fill added, per session (glibc's block headers and free space \
         included; the process, not the allocator's count) | {:.0} | |",
        resident as f64 / held
    );
    println!(
        "| of which the rest: the store's entry, key, expiry, hash table | {:.0} | |",
        per_entry - session_bytes.stand_in as f64
    );
    println!(
        "| estimate for the docs example's body (rest + {}) | {docs_estimate:.0} | |",
        session_bytes.docs
    );
    println!(
        "target <= {TARGET_BYTES_PER_SESSION:.0} B per cached docs-example session: {} \
         ({docs_estimate:.0} B = {:.2} KiB; glibc adds about 8-16 B per block on top of requested \
         bytes)",
        if docs_estimate <= TARGET_BYTES_PER_SESSION {
            "met"
        } else {
            "NOT met"
        },
        docs_estimate / 1024.0
    );

    // The smaller caches, each filled with the first `size` sessions, after the measurement.
    let mut fills = vec![(biggest, fill_time, stats.cache_entries)];
    let mut layers = vec![(biggest, layer, layered)];
    for &size in sizes.iter().rev().skip(1) {
        let layer = layer_with_capacity(&url, capacity_for(size));
        let layered = wrap(&layer);
        let (fill_time, stats) = runtime.block_on(async {
            let started = Instant::now();
            fill(&layered, &credentials, size, StatusCode::OK).await;
            let fill_time = started.elapsed();
            (fill_time, layer.stats().await)
        });
        fills.push((size, fill_time, stats.cache_entries));
        layers.push((size, layer, layered));
    }
    layers.reverse();
    println!();
    println!(
        "fills, one layer per cache size, each with its first sessions (cache_capacity twice the \
         size: see `capacity_for`):"
    );
    println!(
        "| cached sessions | cache_capacity | fill | whoami/s | cache_entries after stats() |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (size, fill_time, entries) in fills.iter().rev() {
        println!(
            "| {} | {} | {:.2} s | {:.0} | {} |",
            thousands(*size as u64),
            thousands(capacity_for(*size) as u64),
            fill_time.as_secs_f64(),
            *size as f64 / fill_time.as_secs_f64(),
            thousands(*entries)
        );
        if *entries < *size as u64 {
            println!(
                "WARNING: {} of the {size} sessions were evicted during the fill: the hits below \
                 include whoami calls",
                *size as u64 - entries
            );
        }
    }

    // Hit latency: a random session among each cache's own.
    let calls_before = kratos.whoami_calls();
    let mut histograms: Vec<Histogram<u64>> = layers.iter().map(|_| latencies()).collect();
    runtime.block_on(async {
        let mut rng = SmallRng::seed_from_u64(7);
        for round in 0..LATENCY_ROUNDS {
            // Interleaved in rounds, each starting at the next size, so drift on a shared machine
            // hits every size alike.
            for offset in 0..layers.len() {
                let index = (round + offset) % layers.len();
                let (size, _, layered) = &layers[index];
                hits(
                    layered,
                    &mut rng,
                    &credentials,
                    *size,
                    HITS_PER_ROUND,
                    &mut histograms[index],
                )
                .await;
            }
        }
    });
    let misses = kratos.whoami_calls() - calls_before;
    let latency: Vec<(usize, Histogram<u64>)> = layers
        .iter()
        .map(|(size, _, _)| *size)
        .zip(histograms)
        .collect();
    println!();
    println!(
        "cache-hit latency through the layer, one client, uniformly random session among the \
         cached ones ({LATENCY_ROUNDS} interleaved rounds of {HITS_PER_ROUND} hits per size; \
         whoami calls meanwhile, that is misses: {misses}):"
    );
    if misses > 0 {
        println!(
            "WARNING: {misses} of the hits were misses (a whoami call each): the tails below \
             include them"
        );
    }
    latency_table(&latency);
    memory_floor(&latency);
    (
        PerSession {
            sessions: biggest,
            per_entry,
            docs_estimate,
        },
        latency,
    )
}

/// What the machine's memory alone costs a lookup among n entries, outside the layer: a
/// random slot of a table of n `Arc`s to session-sized blocks, and the `Arc` cloned (two
/// dependent cache misses once the table outgrows the CPU's caches; a hit takes at least that
/// many: the store's slot, and the session's count). Timed as the hits are, interleaved by size.
fn memory_floor(latency: &[(usize, Histogram<u64>)]) {
    let tables: Vec<Vec<Arc<[u64; 145]>>> = latency
        .iter()
        .map(|(size, _)| (0..*size).map(|n| Arc::new([n as u64; 145])).collect())
        .collect();
    let mut histograms: Vec<Histogram<u64>> = tables.iter().map(|_| latencies()).collect();
    let mut rng = SmallRng::seed_from_u64(11);
    for round in 0..LATENCY_ROUNDS {
        for offset in 0..tables.len() {
            let index = (round + offset) % tables.len();
            let table = &tables[index];
            for _ in 0..HITS_PER_ROUND {
                let slot = rng.random_range(..table.len());
                let started = Instant::now();
                let entry = Arc::clone(std::hint::black_box(&table[slot]));
                std::hint::black_box(&entry);
                histograms[index].record_latency(started.elapsed());
            }
        }
    }
    println!();
    println!(
        "the memory floor, outside the layer: one random `Arc` cloned out of a table of as many \
         session-sized blocks (two dependent cache misses), timed as the hits are:"
    );
    println!("| entries | p50 | p99 | hit p50 less this |");
    println!("|---:|---:|---:|---:|");
    for ((entries, hits), floor) in latency.iter().zip(&histograms) {
        let hit = hits.at_quantile(0.5);
        let memory = floor.at_quantile(0.5);
        println!(
            "| {} | {} | {} | {} |",
            thousands(*entries as u64),
            Human(memory),
            Human(floor.at_quantile(0.99)),
            Human(hit.saturating_sub(memory)),
        );
    }
}

/// The numbers a README shows, as markdown.
fn summary(
    sizes: &SessionBytes,
    per_session: &PerSession,
    latency: &[(usize, Histogram<u64>)],
    budget: &BudgetReport,
) {
    println!();
    println!("summary, for the README:");
    println!();
    latency_table(latency);
    println!();
    println!("| memory | bytes |");
    println!("|---|---:|");
    println!(
        "| per cached session, the docs example's body (target <= {TARGET_BYTES_PER_SESSION:.0} B: {}) | {:.0} B |",
        if per_session.docs_estimate <= TARGET_BYTES_PER_SESSION {
            "met"
        } else {
            "NOT met"
        },
        per_session.docs_estimate
    );
    println!(
        "| per cached session, the stand-in's body, measured over {} | {:.0} B |",
        thousands(per_session.sessions as u64),
        per_session.per_entry
    );
    println!(
        "| one large session parsed ({} B of JSON: 10 devices, 5 methods, 20 traits; {} blocks) | {} B |",
        thousands(sizes.large_body as u64),
        sizes.large_blocks,
        thousands(sizes.large as u64)
    );
    println!(
        "| cache_max_bytes {}, {} mixed-size sessions offered: {} kept, {} weighed, {} | {} |",
        mib(budget.budget as f64),
        thousands(budget.offered as u64),
        thousands(budget.entries),
        mib(budget.cache_bytes as f64),
        budget.held(),
        mib(budget.measured as f64)
    );
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB as f64)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
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
        // Built before the clock starts: only the service's work is timed.
        let request = with_token(&credentials[rng.random_range(..among)].0);
        let sent = Instant::now();
        let ready = service.ready().await.expect("ready");
        let response = ready.call(request).await.expect("call");
        latencies.record_latency(sent.elapsed());
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// Sends one request per token among the first `count` of `credentials` through `service`,
/// `FILL_CONCURRENCY` at a time.
async fn fill<S, B>(service: &S, credentials: &Credentials, count: usize, expected: StatusCode)
where
    S: Service<Request<String>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: Send + 'static,
{
    assert!(
        count <= credentials.len(),
        "fill: {count} of {} sessions",
        credentials.len()
    );
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..FILL_CONCURRENCY)
        .map(|_| {
            let service = service.clone();
            let credentials = Arc::clone(credentials);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return;
                    }
                    let request = with_token(&credentials[index].0);
                    let response = service.clone().oneshot(request).await;
                    assert_eq!(response.expect("call").status(), expected);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("fill worker");
    }
}

/// Opens `service`'s connection pool with 401s, which are not cached, so a snapshot taken after
/// it counts the pool as already there.
async fn open_pool<S, B>(service: &S)
where
    S: Service<Request<String>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: Send + 'static,
{
    let unknown: Credentials = Arc::new(
        (0..FILL_CONCURRENCY * 4)
            .map(|n| (format!("ory_st_unknown{n:025}"), String::new()))
            .collect(),
    );
    fill(service, &unknown, unknown.len(), StatusCode::UNAUTHORIZED).await;
}

/// Lets in-flight connection work and the cache's timers finish before counting.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

/// Only cache hits, for a profiler: `PROFILE_HITS=token|cookie|bare|bare_cookie PROFILE_ITERS=N`,
/// or `PROFILE_HITS=random PROFILE_SESSIONS=N`: random hits among N cached sessions.
fn profile_hits(kind: &str, iters: u64) {
    if kind == "random" {
        let sessions = env_count("PROFILE_SESSIONS", 100_000);
        let kratos = RemoteKratos::start(sessions, 0);
        let runtime = Runtime::new().expect("tokio runtime");
        let credentials = Arc::clone(&kratos.credentials);
        runtime.block_on(async {
            let layered = ServiceBuilder::new()
                .layer(layer_with_capacity(&kratos.url, capacity_for(sessions)))
                .service_fn(trivial);
            fill(&layered, &credentials, sessions, StatusCode::OK).await;
            settle().await;
            eprintln!("filled {sessions}; profiling now");
            let mut latencies = latencies();
            let mut rng = SmallRng::seed_from_u64(7);
            let started = Instant::now();
            hits(
                &layered,
                &mut rng,
                &credentials,
                sessions,
                iters as usize,
                &mut latencies,
            )
            .await;
            eprintln!(
                "{iters} random hits among {sessions} in {:?}: p50 {} p99 {}",
                started.elapsed(),
                Human(latencies.at_quantile(0.5)),
                Human(latencies.at_quantile(0.99)),
            );
        });
        return;
    }
    let kratos = RemoteKratos::start(1, 0);
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
            other => {
                panic!("PROFILE_HITS={other}: expected token, cookie, bare, bare_cookie or random")
            }
        }
        eprintln!(
            "{iters} {kind} requests in {:?} ({:?} each)",
            started.elapsed(),
            started.elapsed() / iters.max(1) as u32
        );
    });
}
