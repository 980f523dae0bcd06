//! A flood of made-up session tokens against the layer: how many whoami calls run at once, what
//! stays in memory, and whether a signed-in user is still served.
//!
//! ```text
//! cargo run --release --example flood
//! ```
//!
//! The layer (default settings) sits in front of a trivial handler and the built-in Kratos
//! stand-in, which answers every made-up token 401 after `FLOOD_KRATOS_LATENCY_MS` (default 2,
//! a network round trip). `FLOOD_CLIENTS` clients (default 1,000) each send their share of
//! `FLOOD_TOKENS` distinct tokens (default 100,000) one after the other, while a signed-in user
//! keeps making requests. Set `MAX_CONCURRENT_LOOKUPS` to change the layer's cap.
//!
//! Memory is the whole process's (the stand-in included), read from `/proc/self/status` on
//! Linux: the baseline is taken after a warm-up of 50,000 tokens, which also fills the stand-in's
//! bounded request journal, and the peak is reset there (`/proc/self/clear_refs`).

use std::{
    convert::Infallible,
    env,
    error::Error,
    time::{Duration, Instant},
};

use http::{Request, Response, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn};
use tokio::task::JoinSet;
use tower::{util::BoxCloneService, ServiceBuilder, ServiceExt};
use tower_kratos::{
    defaults::DEFAULT_MAX_CONCURRENT_LOOKUPS, rejection::ResponseBody, KratosLayer,
};

type App = BoxCloneService<Request<String>, Response<ResponseBody<String>>, Infallible>;

const WARM_UP_TOKENS: usize = 50_000;

fn setting(name: &str, default: usize) -> Result<usize, Box<dyn Error>> {
    match env::var(name) {
        Ok(text) => Ok(text
            .trim()
            .parse()
            .map_err(|error| format!("{name}={text:?}: {error}"))?),
        Err(_) => Ok(default),
    }
}

fn status(app: &App, token: &str) -> impl std::future::Future<Output = StatusCode> + Send {
    let request = Request::get("/")
        .header("x-session-token", token)
        .body(String::new())
        .expect("a valid request");
    // Cloned before the future starts, so the future owns it and is Send.
    let app = app.clone();
    async move {
        match app.oneshot(request).await {
            Ok(response) => response.status(),
            Err(never) => match never {},
        }
    }
}

/// Counts of what one phase's requests got.
#[derive(Debug, Default)]
struct Tally {
    unauthorized: usize,
    unavailable: usize,
    other: usize,
    user_ok: usize,
    user_not_ok: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.unauthorized += other.unauthorized;
        self.unavailable += other.unavailable;
        self.other += other.other;
        self.user_ok += other.user_ok;
        self.user_not_ok += other.user_not_ok;
    }
}

/// `clients` clients send tokens `from..to` between them; every 100th request of each client,
/// the signed-in user makes one too.
async fn flood(app: &App, user: &str, clients: usize, from: usize, to: usize) -> Tally {
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let app = app.clone();
        let user = user.to_owned();
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for (sent, n) in (from + client..to).step_by(clients).enumerate() {
                match status(&app, &format!("ory_st_flood{n:09}")).await {
                    StatusCode::UNAUTHORIZED => tally.unauthorized += 1,
                    StatusCode::SERVICE_UNAVAILABLE => tally.unavailable += 1,
                    _ => tally.other += 1,
                }
                if sent % 100 == 0 {
                    match status(&app, &user).await {
                        StatusCode::OK => tally.user_ok += 1,
                        _ => tally.user_not_ok += 1,
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    for tally in tasks.join_all().await {
        total.add(tally);
    }
    total
}

/// `VmRSS` and `VmHWM` (peak) of this process in KiB, on Linux.
fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let tokens = setting("FLOOD_TOKENS", 100_000)?;
    let clients = setting("FLOOD_CLIENTS", 1_000)?.max(1);
    let latency = Duration::from_millis(setting("FLOOD_KRATOS_LATENCY_MS", 2)? as u64);
    let cap = setting("MAX_CONCURRENT_LOOKUPS", DEFAULT_MAX_CONCURRENT_LOOKUPS)?;

    let kratos = KratosStandIn::start().await?;
    kratos.set_latency(latency);
    let user = kratos.create_session();
    let layer = KratosLayer::builder(kratos.public_url())
        .max_concurrent_lookups(cap)
        .build()?;
    let app: App = BoxCloneService::new(ServiceBuilder::new().layer(layer.clone()).service_fn(
        |_request: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) },
    ));
    assert_eq!(status(&app, &user.token).await, StatusCode::OK);

    // Warm up (allocator, connection pool, the stand-in's journal), then measure from here.
    flood(&app, &user.token, clients, 0, WARM_UP_TOKENS).await;
    // Resets VmHWM to the current RSS (Linux >= 4.0); without it the peak includes the warm-up.
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = memory_kib();
    kratos.reset_counters();

    let started = Instant::now();
    let tally = flood(
        &app,
        &user.token,
        clients,
        WARM_UP_TOKENS,
        WARM_UP_TOKENS + tokens,
    )
    .await;
    let elapsed = started.elapsed();
    let after = memory_kib();
    let stats = layer.stats().await;

    println!("tower-kratos flood: {tokens} distinct made-up tokens, {clients} clients at once, Kratos answering 401 after {latency:?}");
    println!("  max_concurrent_lookups           {cap}");
    println!(
        "  time                             {elapsed:.2?} ({:.0} requests/s)",
        tokens as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  answers                          {} × 401, {} × 503, {} other",
        tally.unauthorized, tally.unavailable, tally.other
    );
    println!(
        "  whoami calls Kratos received     {}",
        kratos.calls(Endpoint::Whoami)
    );
    println!(
        "  peak whoami calls in flight      {}",
        kratos.max_concurrent(Endpoint::Whoami)
    );
    println!(
        "  cache entries after              {} (the signed-in user's session)",
        stats.cache_entries
    );
    println!(
        "  signed-in user during the flood  {} × 200, {} × other",
        tally.user_ok, tally.user_not_ok
    );
    match (before, after) {
        (Some((rss_before, _)), Some((rss_after, peak))) => {
            println!(
                "  RSS before → after               {:.1} MiB → {:.1} MiB ({:+.1} MiB)",
                mib(rss_before),
                mib(rss_after),
                mib(rss_after) - mib(rss_before)
            );
            let peak_note = if peak_reset {
                ""
            } else {
                " (includes the warm-up)"
            };
            println!(
                "  peak RSS during the flood        {:.1} MiB ({:+.1} MiB){peak_note}",
                mib(peak),
                mib(peak) - mib(rss_before)
            );
        }
        _ => println!("  RSS                              not available on this system"),
    }
    Ok(())
}
