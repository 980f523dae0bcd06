//! The layer vs the middleware Ory's Go and Node examples show (ask whoami on every request),
//! both in front of the same trivial service and the same stand-in answering whoami after 2 ms,
//! at 1, 16 and 64 concurrent clients over 1,000 sessions. The layer's cache is warm.
//!
//! ```text
//! cargo bench --bench versus            # 3 s per cell
//! BENCH_SECONDS=1 cargo bench --bench versus
//! ```
//!
//! The services are driven in-process (`ready().call()` on a multi-thread Tokio runtime), not
//! over loopback HTTP: the app's own HTTP server would cost both sides the same and, on a small
//! machine, hide the difference being measured. `examples/loadgen.rs` measures the layer behind
//! a real HTTP server. whoami itself is real HTTP to the stand-in, which runs on a runtime of its
//! own as Kratos would run in a process of its own; on this machine it shares the cores, so the
//! hand-written side also pays for the stand-in's work, as a co-located Kratos would make it.

mod support;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{header, Request, Response, StatusCode};
use kratos_stand_in::Endpoint;
use rand::{rngs::SmallRng, RngExt};
use support::{drive, env_seconds, latencies, machine, trivial, with_token, Human, Latencies, Run};
use tokio::runtime::Runtime;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_kratos::{session::Session, KratosLayer, KratosSession};

const SESSIONS: usize = 1_000;
const WHOAMI_LATENCY: Duration = Duration::from_millis(2);
const CLIENTS: [usize; 3] = [1, 16, 64];

/// The hand-written pattern: forward the caller's cookie or token to whoami on every request; a
/// 200 lets the request on with the parsed session, anything else is a 401. Ory's examples parse
/// the session too (their SDKs return it), so this does the same.
#[derive(Clone)]
struct HandWritten<S> {
    inner: S,
    http: reqwest::Client,
    whoami_url: Arc<str>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<String>> for HandWritten<S>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<String>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<String>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let http = self.http.clone();
        let whoami_url = Arc::clone(&self.whoami_url);
        Box::pin(async move {
            let mut ask = http.get(&*whoami_url);
            for name in [header::COOKIE.as_str(), "x-session-token"] {
                if let Some(value) = request.headers().get(name) {
                    ask = ask.header(name, value.clone());
                }
            }
            let session = match ask.send().await {
                Ok(answer) if answer.status() == StatusCode::OK => match answer.bytes().await {
                    Ok(body) => serde_json::from_slice::<Session>(&body).ok(),
                    Err(_) => None,
                },
                _ => None,
            };
            match session {
                Some(session) => {
                    request
                        .extensions_mut()
                        .insert(KratosSession::new(Arc::new(session)));
                    inner.call(request).await
                }
                None => {
                    let mut unauthorized = Response::new(String::new());
                    *unauthorized.status_mut() = StatusCode::UNAUTHORIZED;
                    Ok(unauthorized)
                }
            }
        })
    }
}

struct Cell {
    clients: usize,
    layer: Run,
    layer_whoami: usize,
    hand: Run,
    hand_whoami: usize,
}

fn main() {
    let cell_time = env_seconds(
        "BENCH_SECONDS",
        if support::smoke_test() { 0.2 } else { 3.0 },
    );
    println!("versus: layer (warm cache) vs whoami on every request");
    println!(
        "machine: {}; {SESSIONS} sessions; stand-in whoami latency set to {WHOAMI_LATENCY:?}; \
         {cell_time:?} per cell",
        machine()
    );

    let stand_in = support::SeparateKratos::start();
    let kratos = stand_in.kratos.clone();
    kratos.set_latency(WHOAMI_LATENCY);
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..SESSIONS)
            .map(|_| kratos.create_session().token)
            .collect(),
    );

    let runtime = Runtime::new().expect("tokio runtime");
    let cells = runtime.block_on(async {
        let public_url = kratos.public_url();
        let layered = ServiceBuilder::new()
            .layer(KratosLayer::builder(&public_url).build().expect("layer"))
            .service_fn(trivial);
        let hand = HandWritten {
            inner: service_fn(trivial),
            http: reqwest::Client::new(),
            whoami_url: format!("{public_url}/sessions/whoami").into(),
        };

        // What one whoami costs from here: the stand-in's 2 ms sleep rounds up to Tokio's
        // millisecond timer, plus the loopback round trip.
        let mut round_trips = latencies();
        for token in tokens.iter().take(200) {
            let sent = Instant::now();
            let response = hand.clone().oneshot(with_token(token)).await;
            round_trips.record_latency(sent.elapsed());
            assert_eq!(response.map(|r| r.status()), Ok(StatusCode::OK));
        }
        println!(
            "hand-written, 1 client, sequential: p50 {} p99 {} (the whoami round trip)",
            Human(round_trips.at_quantile(0.5)),
            Human(round_trips.at_quantile(0.99)),
        );

        // Warm the layer's cache with every session.
        for token in tokens.iter() {
            let response = layered.clone().oneshot(with_token(token)).await;
            assert_eq!(response.map(|r| r.status()), Ok(StatusCode::OK));
        }
        assert_eq!(kratos.calls(Endpoint::Whoami), 200 + SESSIONS);

        let mut cells = Vec::new();
        for clients in CLIENTS {
            let pick = {
                let tokens = Arc::clone(&tokens);
                move |rng: &mut SmallRng| with_token(&tokens[rng.random_range(..tokens.len())])
            };
            // A short unrecorded run first, so both sides start with open connections and a
            // running scheduler.
            drive(
                hand.clone(),
                clients,
                Duration::from_millis(300),
                pick.clone(),
            )
            .await;
            drive(
                layered.clone(),
                clients,
                Duration::from_millis(300),
                pick.clone(),
            )
            .await;

            kratos.reset_counters();
            let layer = drive(layered.clone(), clients, cell_time, pick.clone()).await;
            let layer_whoami = kratos.calls(Endpoint::Whoami);
            kratos.reset_counters();
            let hand_run = drive(hand.clone(), clients, cell_time, pick).await;
            let hand_whoami = kratos.calls(Endpoint::Whoami);
            assert_eq!(
                layer.failures + hand_run.failures,
                0,
                "every request was 200"
            );
            cells.push(Cell {
                clients,
                layer,
                layer_whoami,
                hand: hand_run,
                hand_whoami,
            });
        }
        cells
    });

    println!();
    println!("| clients | middleware | req/s | p50 | p99 | whoami per 1,000 req |");
    println!("|---:|---|---:|---:|---:|---:|");
    for cell in &cells {
        for (name, run, whoami) in [
            ("tower-kratos", &cell.layer, cell.layer_whoami),
            ("hand-written", &cell.hand, cell.hand_whoami),
        ] {
            println!(
                "| {} | {name} | {:.0} | {} | {} | {:.3} |",
                cell.clients,
                run.throughput(),
                Human(run.latencies.at_quantile(0.5)),
                Human(run.latencies.at_quantile(0.99)),
                whoami as f64 * 1000.0 / run.requests as f64,
            );
        }
    }
    println!();
    println!("| clients | throughput ratio | p50 saved | p50 ratio | p99 ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for cell in &cells {
        let (layer, hand) = (&cell.layer.latencies, &cell.hand.latencies);
        println!(
            "| {} | {:.1}× | {} | {:.0}× | {:.0}× |",
            cell.clients,
            cell.layer.throughput() / cell.hand.throughput(),
            Human(hand.at_quantile(0.5).saturating_sub(layer.at_quantile(0.5))),
            ratio(hand.at_quantile(0.5), layer.at_quantile(0.5)),
            ratio(hand.at_quantile(0.99), layer.at_quantile(0.99)),
        );
    }
    if let Some(cell) = cells.iter().find(|cell| cell.clients == 64) {
        let saved = cell
            .hand
            .latencies
            .at_quantile(0.5)
            .saturating_sub(cell.layer.latencies.at_quantile(0.5));
        let per_1000 = cell.layer_whoami as f64 * 1000.0 / cell.layer.requests as f64;
        println!();
        println!("targets at 64 clients:");
        println!(
            "  p50 lower by >= {WHOAMI_LATENCY:?}: {} ({})",
            verdict(saved >= WHOAMI_LATENCY),
            Human(saved)
        );
        let speedup = cell.layer.throughput() / cell.hand.throughput();
        println!(
            "  throughput >= 2x: {} ({speedup:.1}x)",
            verdict(speedup >= 2.0)
        );
        println!(
            "  whoami per 1,000 requests <= 1 once warm: {} ({per_1000:.3})",
            verdict(per_1000 <= 1.0)
        );
    }
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(1e-9)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}
