//! A cache sized in bytes (`cache_max_bytes`): each session weighed by its size, the budget held
//! under sessions of mixed sizes, and what does not fit still served (asked of Kratos each time,
//! never refused for its size). Real stand-in over loopback; assertions on what the layer
//! reports and on what Kratos saw.

use test_support as support;

use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use serde_json::json;
use support::{app, assert_session, send, with_token, App};
use tower_kratos::{defaults::MIN_CACHE_BYTES, KratosLayer};

const BUDGET: u64 = MIN_CACHE_BYTES;

fn budget_app(kratos: &KratosStandIn) -> (KratosLayer, App) {
    let layer = KratosLayer::builder(kratos.public_url())
        .cache_max_bytes(BUDGET)
        .build()
        .expect("layer");
    (layer.clone(), app(layer))
}

/// A session whose traits carry a `bio` of `bio_bytes` bytes.
fn session_with_bio(kratos: &KratosStandIn, bio_bytes: usize) -> TestSession {
    kratos
        .session()
        .traits(json!({"email": "ada@example.org", "bio": "b".repeat(bio_bytes)}))
        .create()
}

async fn served(app: &App, session: &TestSession) {
    assert_session(
        &send(app, with_token("/", session)).await,
        &session.id,
        &session.identity_id,
    );
}

#[tokio::test]
async fn a_session_weighs_what_it_holds() {
    let kratos = support::kratos().await;
    let (layer, app) = budget_app(&kratos);
    let small = session_with_bio(&kratos, 10);
    served(&app, &small).await;
    let with_small = layer.stats().await.cache_bytes.expect("sized in bytes");
    let large = session_with_bio(&kratos, 50_000);
    served(&app, &large).await;
    let with_both = layer.stats().await.cache_bytes.expect("sized in bytes");

    assert!(
        (500..5_000).contains(&with_small),
        "a small session weighs {with_small} B"
    );
    let large_weight = with_both - with_small;
    assert!(
        (50_000..55_000).contains(&large_weight),
        "a session with a 50,000-byte trait weighs {large_weight} B"
    );
    // Both are hits now.
    served(&app, &small).await;
    served(&app, &large).await;
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
}

#[tokio::test]
async fn sessions_of_mixed_sizes_are_evicted_to_keep_within_the_budget() {
    // What the cache reckons it holds (its sessions' heap, its tables at their largest); the
    // allocator's own count of the same, under a 64 MiB budget, is in `benches/memory.rs`.
    let kratos = support::kratos().await;
    let (layer, app) = budget_app(&kratos);
    let mut sent = 0u64;
    let mut heaviest_seen = 0;
    // About 3 MB of sessions of 0 to 12 KB of traits, into 1 MiB.
    for n in 0..600usize {
        let session = session_with_bio(&kratos, (n * 7_919) % 12_000);
        served(&app, &session).await;
        sent += 1;
        let stats = layer.stats().await;
        let bytes = stats.cache_bytes.expect("sized in bytes");
        assert!(bytes <= BUDGET, "{bytes} B cached after {sent} sessions");
        heaviest_seen = heaviest_seen.max(bytes);
    }
    let stats = layer.stats().await;
    assert!(
        stats.cache_entries < sent,
        "the budget made room: {} of {sent} cached",
        stats.cache_entries
    );
    assert!(
        heaviest_seen > BUDGET / 2,
        "the budget is used, not left empty: at most {heaviest_seen} B"
    );
}

#[tokio::test]
async fn a_session_too_large_to_cache_is_still_served() {
    let kratos = support::kratos().await;
    let (layer, app) = budget_app(&kratos);
    // Larger than the share of the budget any one part of the cache has (a quarter of 1 MiB),
    // under whoami's 1 MiB body limit: never cached, asked each time, served each time.
    let huge = session_with_bio(&kratos, 600 * 1024);
    for _ in 0..3 {
        served(&app, &huge).await;
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 3);
    let stats = layer.stats().await;
    assert_eq!(stats.cache_entries, 0);
    let bytes = stats.cache_bytes.expect("sized in bytes");
    assert!(bytes < 4_096, "nothing held but empty tables: {bytes} B");
}

#[tokio::test]
async fn a_cache_counted_in_entries_reports_no_bytes() {
    let kratos = support::kratos().await;
    let layer = KratosLayer::builder(kratos.public_url())
        .cache_capacity(10)
        .build()
        .expect("layer");
    let app = app(layer.clone());
    served(&app, &kratos.create_session()).await;
    let stats = layer.stats().await;
    assert_eq!((stats.cache_entries, stats.cache_bytes), (1, None));
}
