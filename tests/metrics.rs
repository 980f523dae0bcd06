//! Metrics (feature `metrics`): a Prometheus recorder installed once for this test binary, and
//! workloads against the stand-in (hits, a miss, coalesced first requests, refusals of each kind,
//! a 5xx, a timeout, a 429 and the back-off, a stale session, route refusals, an extension,
//! tokens for the JWT layer, two replicas over a real Redis, Redis down, a full cache, a
//! streamed response) whose rendered exposition is checked against the truth: whoami calls as
//! many as Kratos saw, served-from counts adding up to the authenticated requests, Redis errors
//! as the layer's own stats count them, every documented series present and described from the
//! start, label values from the documented sets only, and no token, cookie, session id or
//! identity id anywhere in it. The Grafana dashboard queries documented series only.
//!
//! The recorder is the process's: the tests here take turns (`SERIAL`) and compare deltas.

use test_support as support;

use std::{
    collections::BTreeMap,
    sync::OnceLock,
    time::{Duration, Instant},
};

use http::StatusCode;
use kratos_stand_in::{Endpoint, Fault, KratosStandIn, SigningAlg, TestSession, TokenizerTemplate};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use support::{
    app, assert_session, get, post,
    redis_server::RedisServer,
    replicas::{shared_builder, until_stats, Replica},
    send, token_headers, with_token,
};
use tower::{Layer, ServiceBuilder};
use tower_kratos::{
    jwt::JwtLayer,
    metrics::{self as names, labels},
    require::Requirement,
};

/// The issuer of the tokens the JWT layer is given.
const ISSUER: &str = "http://localhost/";

/// The tests share the process's recorder: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The recorder, installed before any layer is built (layers take their handles when built).
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(names::WHOAMI_DURATION.into()),
                names::WHOAMI_BUCKETS,
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(names::REVOCATION_LAG.into()),
                    names::REVOCATION_LAG_BUCKETS,
                )
            })
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        handle
    })
}

/// One rendering, as series (name and sorted labels) to values.
#[derive(Debug)]
struct Exposition {
    text: String,
    series: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Exposition {
    fn now() -> Self {
        let text = prometheus().render();
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
        {
            let (key, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let mut labels: Vec<(String, String)> = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (label, value) = pair.split_once('=').expect("label=value");
                    (label.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            labels.sort();
            let value: f64 = value.parse().expect("a number");
            series.insert((name.to_owned(), labels), value);
        }
        Self { text, series }
    }

    /// The sum over the series of `name` carrying these labels (and any others).
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|((series, labels), _)| {
                series == name
                    && with
                        .iter()
                        .all(|(label, value)| labels.iter().any(|(l, v)| l == label && v == value))
            })
            .map(|(_, value)| value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.series.keys().any(|(series, _)| series == name)
    }
}

/// What changed between two renderings, for one series selection.
fn delta(before: &Exposition, after: &Exposition, name: &str, with: &[(&str, &str)]) -> f64 {
    after.sum(name, with) - before.sum(name, with)
}

fn requests(outcome: &str, reason: &str) -> (&'static str, Vec<(&'static str, String)>) {
    (
        names::REQUESTS,
        vec![
            ("outcome", outcome.to_owned()),
            ("reason", reason.to_owned()),
        ],
    )
}

#[track_caller]
fn assert_delta(
    before: &Exposition,
    after: &Exposition,
    name: &str,
    with: &[(&str, &str)],
    n: f64,
) {
    assert_eq!(
        delta(before, after, name, with),
        n,
        "{name} {with:?}\n{}",
        after.text
    );
}

/// The label values each series may carry.
fn documented_labels(name: &str) -> Vec<(&'static str, &'static [&'static str])> {
    match name {
        names::REQUESTS => vec![
            ("outcome", labels::OUTCOMES),
            ("reason", labels::REQUEST_REASONS),
        ],
        names::ROUTE_REFUSALS => vec![("unmet", labels::UNMET)],
        names::SERVED_FROM => vec![("source", labels::SOURCES)],
        names::WHOAMI_DURATION => vec![("status_class", labels::STATUS_CLASSES)],
        names::BACKOFF_OPEN => vec![("api", labels::BACKOFF_APIS)],
        names::BACKOFF_TRANSITIONS => {
            vec![("api", labels::BACKOFF_APIS), ("to", labels::BACKOFF_TO)]
        }
        names::EXTENSIONS => vec![("result", labels::EXTENSION_RESULTS)],
        names::LIFECYCLE_CALLS => vec![
            ("call", labels::LIFECYCLE_CALLS),
            ("result", labels::LIFECYCLE_RESULTS),
        ],
        names::SHARED_CACHE_LOOKUPS => vec![("result", labels::SHARED_CACHE_RESULTS)],
        names::SHARED_CACHE_ERRORS => vec![("kind", labels::SHARED_CACHE_ERRORS)],
        names::SHARED_CACHE_PAUSES => vec![("to", labels::PAUSE_TO)],
        names::JWT_TOKENS => vec![
            ("result", labels::JWT_RESULTS),
            ("reason", labels::JWT_REASONS),
        ],
        names::JWKS_FETCHES => vec![("result", labels::FETCH_RESULTS)],
        names::CACHE_EVICTIONS => vec![("cause", labels::EVICTION_CAUSES)],
        _ => vec![],
    }
}

/// Every series is a documented name (a histogram's `_bucket`, `_sum`, `_count` included), with
/// documented labels and values only.
#[track_caller]
fn assert_bounded(exposition: &Exposition) {
    for (name, series_labels) in exposition.series.keys() {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| names::NAMES.contains(base))
            })
            .unwrap_or(name);
        assert!(names::NAMES.contains(&base), "undocumented series {name}");
        let allowed = documented_labels(base);
        for (label, value) in series_labels {
            if label == "le" || label == "quantile" {
                continue;
            }
            let values = allowed
                .iter()
                .find(|(name, _)| name == label)
                .map(|(_, values)| *values)
                .unwrap_or_else(|| panic!("{base} carries undocumented label {label}"));
            assert!(
                values.contains(&value.as_str()),
                "{base}: {label}=\"{value}\" is not a documented value"
            );
        }
    }
}

/// No secret or identifier of these sessions anywhere in the exposition.
#[track_caller]
fn assert_no_secret(exposition: &Exposition, sessions: &[&TestSession]) {
    for session in sessions {
        for secret in [
            &session.token,
            &session.cookie_value,
            &session.id,
            &session.identity_id,
        ] {
            assert!(
                !exposition.text.contains(secret.as_str()),
                "a session's secret or id is in the metrics"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_agrees_with_what_kratos_saw() {
    let _turn = SERIAL.lock().await;
    prometheus();
    let kratos = support::kratos().await;
    let layer = support::builder(&kratos).build().expect("layer");
    let service = app(layer);
    // Every documented series exists once a layer is built, at zero until it happens (the JWT
    // layer's own series come with a JWT layer).
    let before = Exposition::now();
    for name in names::NAMES {
        let histogram = [names::WHOAMI_DURATION, names::REVOCATION_LAG].contains(name);
        let present = if histogram {
            before.has(&format!("{name}_count"))
        } else {
            before.has(name)
        };
        assert!(
            present || *name == names::JWT_TOKENS,
            "{name} missing from the start:\n{}",
            before.text
        );
    }

    // One miss, then hits.
    let alice = kratos.create_session();
    for _ in 0..5 {
        assert_session(
            &send(&service, with_token("/", &alice)).await,
            &alice.id,
            &alice.identity_id,
        );
    }
    // Concurrent first requests for one session: one whoami, the others wait for it.
    kratos.set_latency(Duration::from_millis(200));
    let carol = kratos.create_session();
    let concurrent = (0..5).map(|_| send(&service, with_token("/", &carol)));
    for answer in futures_util::future::join_all(concurrent).await {
        assert_session(&answer, &carol.id, &carol.identity_id);
    }
    kratos.set_latency(Duration::ZERO);
    // A session that needs a second factor (Kratos's 403).
    let dave = kratos.session().requires_aal2().create();
    let step_up = send(&service, with_token("/", &dave)).await;
    assert_eq!(step_up.status, StatusCode::FORBIDDEN);
    // No credential, a malformed one, an unknown one.
    let anonymous = send(&service, get("/", &[])).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let malformed = send(&service, get("/", &[("x-session-token", "not a token")])).await;
    assert_eq!(malformed.status, StatusCode::UNAUTHORIZED);
    let unknown = send(
        &service,
        get(
            "/",
            &[("x-session-token", "ory_st_unknown0000000000000000000000")],
        ),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    // A cookie request from another origin that could change state.
    let cross = send(
        &service,
        post(
            "/",
            &[
                ("cookie", &alice.cookie_header()),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    // An outage (5xx), a timeout, then a 429: the back-off opens and holds the next lookup.
    kratos.set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
    let bob = kratos.create_session();
    assert_eq!(
        send(&service, with_token("/", &bob)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    kratos.set_fault(Endpoint::Whoami, Fault::Hang);
    assert_eq!(
        send(&service, with_token("/", &bob)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::RateLimited {
            retry_after: Some(30),
        },
    );
    assert_eq!(
        send(&service, with_token("/", &bob)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let held = send(&service, with_token("/", &bob)).await;
    assert_eq!(held.status, StatusCode::SERVICE_UNAVAILABLE);
    kratos.clear_faults();

    let after = Exposition::now();
    // What Kratos saw, call for call.
    let whoami_count = format!("{}_count", names::WHOAMI_DURATION);
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[],
        kratos.calls(Endpoint::Whoami) as f64,
    );
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[("status_class", "2xx")],
        2.0,
    );
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[("status_class", "4xx")],
        3.0,
    );
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[("status_class", "5xx")],
        1.0,
    );
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[("status_class", "timeout")],
        1.0,
    );
    // Requests by outcome; served-from adds up to the authenticated ones.
    for (outcome, reason, n) in [
        ("authenticated", "none", 10.0),
        ("aal_required", "none", 1.0),
        ("anonymous", "none", 1.0),
        ("unauthenticated", "malformed", 1.0),
        ("unauthenticated", "rejected", 1.0),
        ("cross_origin_request", "none", 1.0),
        ("unavailable", "status", 1.0),
        ("unavailable", "timeout", 1.0),
        ("unavailable", "rate_limited", 1.0),
        ("unavailable", "backing_off", 1.0),
    ] {
        let (name, with) = requests(outcome, reason);
        let with: Vec<(&str, &str)> = with.iter().map(|(l, v)| (*l, v.as_str())).collect();
        assert_delta(&before, &after, name, &with, n);
    }
    assert_delta(&before, &after, names::REQUESTS, &[], 19.0);
    assert_delta(&before, &after, names::SERVED_FROM, &[], 10.0);
    assert_delta(
        &before,
        &after,
        names::SERVED_FROM,
        &[("source", "miss")],
        2.0,
    );
    assert_delta(
        &before,
        &after,
        names::SERVED_FROM,
        &[("source", "hit")],
        4.0,
    );
    assert_delta(
        &before,
        &after,
        names::SERVED_FROM,
        &[("source", "coalesced")],
        4.0,
    );
    // The back-off opened once, and is open.
    assert_delta(
        &before,
        &after,
        names::BACKOFF_TRANSITIONS,
        &[("api", "whoami"), ("to", "open")],
        1.0,
    );
    assert_eq!(after.sum(names::BACKOFF_OPEN, &[("api", "whoami")]), 1.0);
    assert_eq!(after.sum(names::WHOAMI_IN_FLIGHT, &[]), 0.0);
    assert!(
        after.sum(names::CACHE_ENTRIES, &[]) >= 1.0,
        "{}",
        after.text
    );

    assert_bounded(&after);
    assert_no_secret(&after, &[&alice, &bob, &carol, &dave]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_count_shared_hits_and_revocations_heard() {
    let _turn = SERIAL.lock().await;
    prometheus();
    let kratos = support::kratos().await;
    let redis = RedisServer::start();
    let first = Replica::start(shared_builder(&kratos, &redis)).await;
    let second = Replica::start(shared_builder(&kratos, &redis)).await;
    let before = Exposition::now();
    assert!(
        before.sum(names::SHARED_CACHE_IN_USE, &[]) >= 2.0,
        "{}",
        before.text
    );

    let alice = kratos.create_session();
    assert_session(&first.get(&alice).await, &alice.id, &alice.identity_id);
    // The second replica reads the first one's entry once it has landed in Redis.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("test:{*}:s"));
        if !keys.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the entry never reached Redis");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_session(&second.get(&alice).await, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);

    // A revocation through the first replica, heard by the second.
    first
        .layer
        .lifecycle()
        .revoke_session(&token_headers(&alice), &alice.id)
        .await
        .expect_err("Kratos refuses to revoke the caller's current session");
    let bob = kratos.create_session();
    let carol = kratos.session().identity(&bob.identity_id).create();
    first.get(&carol).await;
    first
        .layer
        .lifecycle()
        .revoke_session(&token_headers(&carol), &bob.id)
        .await
        .expect("revoked");
    let deadline = Instant::now() + Duration::from_secs(3);
    let after = loop {
        let now = Exposition::now();
        // Heard by both replicas (the first hears its own too).
        if delta(&before, &now, names::REVOCATIONS_HEARD, &[]) >= 2.0 {
            break now;
        }
        assert!(Instant::now() < deadline, "not heard:\n{}", now.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let whoami_count = format!("{}_count", names::WHOAMI_DURATION);
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[],
        kratos.calls(Endpoint::Whoami) as f64,
    );
    assert_delta(
        &before,
        &after,
        names::SERVED_FROM,
        &[("source", "shared")],
        1.0,
    );
    assert_eq!(
        delta(&before, &after, names::SERVED_FROM, &[]),
        delta(
            &before,
            &after,
            names::REQUESTS,
            &[("outcome", "authenticated")]
        ),
    );
    assert_delta(
        &before,
        &after,
        names::SHARED_CACHE_LOOKUPS,
        &[("result", "hit")],
        1.0,
    );
    // The Redis reads agree with the layers' own counts (this test's two are the only ones).
    let mut stats = (0, 0);
    for replica in [&first, &second] {
        let shared = replica
            .layer
            .stats()
            .await
            .shared_cache
            .expect("a shared cache");
        stats = (stats.0 + shared.hits, stats.1 + shared.misses);
    }
    assert_eq!(
        (
            delta(
                &before,
                &after,
                names::SHARED_CACHE_LOOKUPS,
                &[("result", "hit")]
            ),
            delta(
                &before,
                &after,
                names::SHARED_CACHE_LOOKUPS,
                &[("result", "miss")]
            ),
        ),
        (stats.0 as f64, stats.1 as f64),
    );
    assert_delta(&before, &after, names::REVOCATIONS_PUBLISHED, &[], 1.0);
    assert_delta(
        &before,
        &after,
        names::LIFECYCLE_CALLS,
        &[("call", "revoke_session"), ("result", "ok")],
        1.0,
    );
    assert_delta(
        &before,
        &after,
        names::LIFECYCLE_CALLS,
        &[("call", "revoke_session"), ("result", "refused")],
        1.0,
    );
    let lag_count = format!("{}_count", names::REVOCATION_LAG);
    assert_delta(&before, &after, &lag_count, &[], 2.0);
    let lag = delta(
        &before,
        &after,
        &format!("{}_sum", names::REVOCATION_LAG),
        &[],
    );
    assert!((0.0..2.0).contains(&lag), "lag {lag}");

    assert_bounded(&after);
    assert_no_secret(&after, &[&alice, &bob, &carol]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_refusals_extensions_and_tokens_are_counted() {
    let _turn = SERIAL.lock().await;
    prometheus();
    let kratos = KratosStandIn::builder()
        .tokenizer("es256", TokenizerTemplate::new(SigningAlg::Es256))
        .start()
        .await
        .expect("stand-in");
    let layer = support::builder(&kratos)
        .admin_url(kratos.admin_url())
        .extend_within(Duration::from_secs(3600))
        .build()
        .expect("layer");
    // Before the JWT layer: it fetches its keys when built.
    let before = Exposition::now();
    let jwt = JwtLayer::builder(ISSUER)
        .jwks_url(kratos.jwks_url("es256").expect("a template"))
        .build()
        .expect("JWT layer");

    // A session due for extension, on a route that needs a second factor it lacks.
    let alice = kratos
        .session()
        .expires_in(Duration::from_secs(600))
        .create();
    let route = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(layer.require(Requirement::new().second_factor()))
        .service_fn(support::echo_session);
    let refused = send(&route, with_token("/", &alice)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());

    // Tokens: one verified then served from the cache twice, two refusals, one without any.
    let downstream = jwt.layer(tower::service_fn(support::echo_session));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |issuer: &str| {
        serde_json::json!({
            "jti": "0b8a9c2e-5f3c-4d1e-9a7b-1c2d3e4f5a6b",
            "iss": issuer,
            "exp": now + 60,
            "nbf": now,
            "iat": now,
            "sid": alice.id,
            "sub": alice.identity_id,
        })
    };
    let token = kratos
        .sign_claims("es256", &claims(ISSUER))
        .expect("signed");
    let stranger = kratos
        .sign_claims("es256", &claims("http://elsewhere/"))
        .expect("signed");
    let bearer = |token: &str| format!("Bearer {token}");
    for _ in 0..3 {
        let answer = send(&downstream, get("/", &[("authorization", &bearer(&token))])).await;
        assert_ne!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    }
    for refused in [&bearer("garbage"), &bearer(&stranger)] {
        let answer = send(&downstream, get("/", &[("authorization", refused)])).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        send(&downstream, get("/", &[])).await.status,
        StatusCode::UNAUTHORIZED
    );

    let after = Exposition::now();
    assert_delta(
        &before,
        &after,
        names::ROUTE_REFUSALS,
        &[("unmet", "second_factor_required")],
        1.0,
    );
    assert_delta(&before, &after, names::ROUTE_REFUSALS, &[], 1.0);
    assert_delta(
        &before,
        &after,
        names::EXTENSIONS,
        &[("result", "extended")],
        1.0,
    );
    assert_delta(&before, &after, names::EXTENSIONS, &[], 1.0);
    assert_delta(
        &before,
        &after,
        names::JWT_TOKENS,
        &[("result", "verified")],
        1.0,
    );
    assert_delta(
        &before,
        &after,
        names::JWT_TOKENS,
        &[("result", "cached")],
        2.0,
    );
    assert_delta(
        &before,
        &after,
        names::JWT_TOKENS,
        &[("result", "refused"), ("reason", "malformed")],
        1.0,
    );
    assert_delta(
        &before,
        &after,
        names::JWT_TOKENS,
        &[("result", "refused"), ("reason", "issuer")],
        1.0,
    );
    assert_delta(
        &before,
        &after,
        names::JWT_TOKENS,
        &[("result", "anonymous")],
        1.0,
    );
    assert!(delta(&before, &after, names::JWKS_FETCHES, &[("result", "ok")]) >= 1.0);
    assert_delta(
        &before,
        &after,
        names::JWKS_FETCHES,
        &[("result", "failed")],
        0.0,
    );
    // Every series is described, with its type.
    for name in names::NAMES {
        assert!(
            after.text.contains(&format!("# HELP {name} ")),
            "{name} undescribed"
        );
        assert!(
            after.text.contains(&format!("# TYPE {name} ")),
            "{name} untyped"
        );
    }

    assert_bounded(&after);
    assert_no_secret(&after, &[&alice]);
    assert!(!after.text.contains(&token), "a token in the metrics");
}

/// Every query's `expr` in a Grafana dashboard.
fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, found)),
        _ => {}
    }
}

/// The series a query names, as documented names (a histogram's suffixes taken off).
fn series_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with(names::PREFIX))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    word.strip_suffix(suffix)
                        .filter(|base| names::NAMES.contains(base))
                })
                .unwrap_or(word)
        })
        .collect()
}

#[test]
fn the_dashboard_queries_only_documented_series_and_labels() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../dashboards/tower-kratos.json")).expect("JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    for expr in &queries {
        let series = series_in(expr);
        assert!(
            !series.is_empty(),
            "a query on no documented series: {expr}"
        );
        for name in &series {
            assert!(
                names::NAMES.contains(name),
                "{expr}: {name} is not documented"
            );
        }
        let documented: Vec<(&str, &[&str])> = series
            .iter()
            .flat_map(|name| documented_labels(name))
            .collect();
        // Grouping labels: `by (a, b)`.
        for group in expr.split("by (").skip(1) {
            let labels = group.split(')').next().unwrap_or_default();
            for label in labels.split(',').map(str::trim) {
                assert!(
                    label == "le" || documented.iter().any(|(name, _)| *name == label),
                    "{expr}: groups by undocumented label {label}"
                );
            }
        }
        // Selectors: `{label="value"}`.
        for selector in expr.split('{').skip(1) {
            let selector = selector.split('}').next().unwrap_or_default();
            for matcher in selector.split(',').filter(|m| m.contains('=')) {
                let (label, value) = matcher.split_once('=').expect("label=value");
                let value = value.trim_matches('"');
                assert!(
                    documented
                        .iter()
                        .any(|(name, values)| *name == label.trim() && values.contains(&value)),
                    "{expr}: {matcher} is not a documented label value"
                );
            }
        }
    }
    // The overview an operator opens first: outcomes, served-from, whoami latency from the
    // buckets, the back-off, Redis, the revocation lag.
    let all = queries.join("\n");
    for needed in [
        names::REQUESTS,
        names::SERVED_FROM,
        "histogram_quantile(0.99, sum by (le) (rate(tower_kratos_whoami_duration_seconds_bucket",
        names::BACKOFF_OPEN,
        names::SHARED_CACHE_IN_USE,
        "tower_kratos_revocation_lag_seconds_bucket",
    ] {
        assert!(all.contains(needed), "the dashboard lacks {needed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_served_stale_through_an_outage_is_counted_as_stale() {
    let _turn = SERIAL.lock().await;
    prometheus();
    let kratos = support::kratos().await;
    let ttl = Duration::from_millis(200);
    let layer = support::builder(&kratos)
        .cache_ttl(ttl)
        .stale_if_error(Duration::from_secs(60))
        .build()
        .expect("layer");
    let service = app(layer);
    let before = Exposition::now();

    let alice = kratos.create_session();
    assert_session(
        &send(&service, with_token("/", &alice)).await,
        &alice.id,
        &alice.identity_id,
    );
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    assert_session(
        &send(&service, with_token("/", &alice)).await,
        &alice.id,
        &alice.identity_id,
    );

    let after = Exposition::now();
    assert_delta(
        &before,
        &after,
        names::SERVED_FROM,
        &[("source", "miss")],
        1.0,
    );
    assert_delta(
        &before,
        &after,
        names::SERVED_FROM,
        &[("source", "stale")],
        1.0,
    );
    assert_delta(
        &before,
        &after,
        names::REQUESTS,
        &[("outcome", "authenticated")],
        2.0,
    );
    let whoami_count = format!("{}_count", names::WHOAMI_DURATION);
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[],
        kratos.calls(Endpoint::Whoami) as f64,
    );
    assert_delta(
        &before,
        &after,
        &whoami_count,
        &[("status_class", "5xx")],
        1.0,
    );
    assert_bounded(&after);
    assert_no_secret(&after, &[&alice]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_counted_as_errors_a_pause_and_a_cache_out_of_use() {
    let _turn = SERIAL.lock().await;
    prometheus();
    let kratos = support::kratos().await;
    let mut redis = RedisServer::start();
    let replica = Replica::start(shared_builder(&kratos, &redis)).await;
    let stats = || async {
        replica
            .layer
            .stats()
            .await
            .shared_cache
            .expect("a shared cache")
    };
    let before = Exposition::now();
    let stats_before = stats().await;

    redis.stop();
    for _ in 0..3 {
        let session = kratos.create_session();
        assert_session(
            &replica.get(&session).await,
            &session.id,
            &session.identity_id,
        );
    }
    until_stats(&replica.layer, "paused after failures", |stats| {
        stats.errors >= 2 && !stats.in_use
    })
    .await;
    // Calls started before the pause may still be failing: let them end.
    tokio::time::sleep(2 * tower_kratos::defaults::DEFAULT_REDIS_TIMEOUT).await;
    let down = Exposition::now();
    let stats_down = stats().await;
    assert_eq!(
        delta(
            &before,
            &down,
            names::SHARED_CACHE_ERRORS,
            &[("kind", "call")]
        ),
        (stats_down.errors - stats_before.errors) as f64,
        "the errors counted are the layer's own count\n{}",
        down.text
    );
    assert!(
        delta(
            &before,
            &down,
            names::SHARED_CACHE_PAUSES,
            &[("to", "paused")]
        ) >= 1.0
    );
    assert_delta(&before, &down, names::SHARED_CACHE_IN_USE, &[], -1.0);

    redis.restart();
    until_stats(&replica.layer, "back after a restart", |stats| stats.in_use).await;
    let back = Exposition::now();
    assert!(
        delta(
            &down,
            &back,
            names::SHARED_CACHE_PAUSES,
            &[("to", "resumed")]
        ) >= 1.0
    );
    assert_delta(&before, &back, names::SHARED_CACHE_IN_USE, &[], 0.0);
    assert_bounded(&back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_counts_its_evictions() {
    let _turn = SERIAL.lock().await;
    prometheus();
    let kratos = support::kratos().await;
    let layer = support::builder(&kratos)
        .cache_capacity(2)
        .build()
        .expect("layer");
    let service = app(layer);
    let before = Exposition::now();
    // The store evicts when a shard is full; with two entries of room, within a few sessions.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sessions = Vec::new();
    let after = loop {
        let session = kratos.create_session();
        assert_session(
            &send(&service, with_token("/", &session)).await,
            &session.id,
            &session.identity_id,
        );
        sessions.push(session);
        let now = Exposition::now();
        if delta(&before, &now, names::CACHE_EVICTIONS, &[("cause", "size")]) >= 1.0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "no eviction counted:\n{}",
            now.text
        );
    };
    assert!(after.sum(names::CACHE_ENTRIES, &[]) >= 0.0);
    assert_bounded(&after);
    assert_no_secret(&after, &sessions.iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_is_a_watched_connection_while_it_lasts() {
    use http_body_util::{BodyExt, StreamBody};
    use tower::ServiceExt;

    let _turn = SERIAL.lock().await;
    prometheus();
    let kratos = support::kratos().await;
    let layer = support::layer(&kratos);
    // A body that never ends: a stream the client holds open.
    let streaming = tower::service_fn(|_request: http::Request<String>| async {
        let frames = futures_util::stream::pending::<
            Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
        >();
        Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(frames)))
    });
    let service = ServiceBuilder::new().layer(layer).service(streaming);
    let before = Exposition::now();

    let alice = kratos.create_session();
    // A clone: the service (and its cache) lives on, as a server's does.
    let response = service
        .clone()
        .oneshot(with_token("/", &alice))
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // The body is watched once it has waited.
    let waited = tokio::time::timeout(Duration::from_millis(50), body.frame()).await;
    assert!(waited.is_err(), "the stream ended");
    let open = Exposition::now();
    assert_delta(&before, &open, names::WATCHED_CONNECTIONS, &[], 1.0);

    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = Exposition::now();
        if delta(&before, &now, names::WATCHED_CONNECTIONS, &[]) == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "still watched:\n{}", now.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
