//! Tokenized sessions end to end: the edge asks whoami with `tokenize_as` (the stand-in signs
//! with keys it generates), handlers get the JWT, and `JwtLayer` verifies it downstream with no
//! Kratos call, over real HTTP for the key set URL and a real redis-server for revocations.

use test_support as support;

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use http::{Request, Response, StatusCode};
use kratos_stand_in::{Endpoint, Fault, KratosStandIn, SigningAlg, TokenizerTemplate};
use proptest::prelude::*;
use serde_json::{json, Value};
use support::{
    get,
    redis_server::{Flavor, RedisServer},
    send, Answer,
};
use tower::{Layer, ServiceExt};
use tower_kratos::{
    defaults::DEFAULT_JWKS_MIN_REFETCH,
    jwt::{JwtLayer, JwtLayerBuilder, TokenizedSession},
    outcome::{TokenRejected, Unauthenticated, Unavailable},
    KratosLayer, KratosSession, Outcome,
};

const ISSUER: &str = "http://localhost/";

/// The downstream handler: the verified claims as JSON.
async fn echo(request: Request<String>) -> Result<Response<String>, Infallible> {
    let body = match request.extensions().get::<TokenizedSession>() {
        Some(session) => json!({
            "sid": session.session_id(),
            "sub": session.subject(),
            "exp": session.expires_at().unix_timestamp(),
            "jti": session.jti(),
            "foo": session.claim::<String>("foo"),
        })
        .to_string(),
        None => "no token".to_owned(),
    };
    Ok(Response::new(body))
}

fn downstream(
    layer: JwtLayer,
) -> impl tower::Service<
    Request<String>,
    Response = Response<impl http_body::Body<Data = bytes::Bytes, Error = Infallible>>,
    Error = Infallible,
> + Clone {
    layer.layer(tower::service_fn(echo))
}

async fn with_bearer(layer: &JwtLayer, token: &str) -> Answer {
    let service = downstream(layer.clone());
    send(
        &service,
        get("/", &[("authorization", &format!("Bearer {token}"))]),
    )
    .await
}

fn refused_for(answer: &Answer) -> TokenRejected {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    match answer.outcome() {
        Outcome::Unauthenticated(Unauthenticated::Token(why)) => *why,
        other => panic!("not a token refusal: {other:?}"),
    }
}

async fn kratos_signing(templates: &[(&str, SigningAlg)]) -> KratosStandIn {
    let mut builder = KratosStandIn::builder();
    for (name, alg) in templates {
        builder = builder.tokenizer(*name, TokenizerTemplate::new(*alg));
    }
    builder.start().await.expect("stand-in")
}

fn layer_for(kratos: &KratosStandIn, template: &str) -> JwtLayerBuilder {
    let jwks = kratos.jwks(template).expect("a template").to_string();
    JwtLayer::builder(ISSUER).jwks(jwks)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Claims as Kratos issues them, now.
fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "jti": "0b8a9c2e-5f3c-4d1e-9a7b-1c2d3e4f5a6b",
        "iss": ISSUER,
        "exp": now() + 60,
        "nbf": now(),
        "iat": now(),
        "sid": "432caf86-c1d8-401c-978a-8da89133f78b",
        "sub": "7458af86-c1d8-401c-978a-8da89133f78b",
    });
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra);
    }
    claims
}

#[tokio::test]
async fn the_real_claim_sets_verify_when_signed_with_their_algorithm() {
    let kratos = kratos_signing(&[
        ("es256", SigningAlg::Es256),
        ("es512", SigningAlg::Es512),
        ("rs512", SigningAlg::Rs512),
    ])
    .await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenized");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("the fixtures") {
        let path = entry.expect("a fixture").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let template = ["es256", "es512", "rs512"]
            .into_iter()
            .find(|alg| name.contains(alg))
            .expect("the fixture names its algorithm");
        let mut fixture: Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("JSON");
        // Kratos's own claims, moved to now (the snapshots are from 2023).
        let lifetime = fixture["exp"].as_i64().unwrap() - fixture["iat"].as_i64().unwrap();
        fixture["iat"] = now().into();
        fixture["nbf"] = now().into();
        fixture["exp"] = (now() + lifetime).into();
        let token = kratos.sign_claims(template, &fixture).expect("signed");
        let answer = with_bearer(&layer_for(&kratos, template).build().unwrap(), &token).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["sid"], fixture["sid"], "{name}");
        assert_eq!(body["sub"], fixture["sub"], "{name}");
        assert_eq!(
            body["foo"],
            fixture.get("foo").cloned().unwrap_or(Value::Null)
        );
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[tokio::test]
async fn every_kind_of_bad_token_is_a_401_never_a_panic() {
    let kratos =
        kratos_signing(&[("es256", SigningAlg::Es256), ("rs512", SigningAlg::Rs512)]).await;
    let layer = layer_for(&kratos, "es256").build().unwrap();
    let sign = |claims: Value| kratos.sign_claims("es256", &claims).expect("signed");
    let good = sign(claims(json!({})));
    assert_eq!(with_bearer(&layer, &good).await.status, StatusCode::OK);

    let segments: Vec<&str> = good.split('.').collect();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments[0]).unwrap()).unwrap();
    let with_header = |header: Value| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            segments[1],
            segments[2]
        )
    };
    let public_key_json = kratos.jwks("es256").unwrap().to_string();
    let hs256 = {
        let mut header = header.clone();
        header["alg"] = "HS256".into();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            segments[1]
        );
        let key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public_key_json.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let edited_payload = {
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments[1]).unwrap()).unwrap();
        claims["sub"] = "someone-else".into();
        format!(
            "{}.{}.{}",
            segments[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            segments[2]
        )
    };
    let edited_signature = {
        let mut signature = URL_SAFE_NO_PAD.decode(segments[2]).unwrap();
        signature[0] ^= 1;
        format!(
            "{}.{}.{}",
            segments[0],
            segments[1],
            URL_SAFE_NO_PAD.encode(signature)
        )
    };
    // An ES256 header on the RSA key: the RSA template's token, relabelled.
    let es256_on_rsa = {
        let rsa_layer = layer_for(&kratos, "rs512").build().unwrap();
        let token = kratos.sign_claims("rs512", &claims(json!({}))).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        header["alg"] = "ES256".into();
        let relabelled = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            parts[1],
            parts[2]
        );
        refused_for(&with_bearer(&rsa_layer, &relabelled).await)
    };
    assert_eq!(es256_on_rsa, TokenRejected::Algorithm);

    let cases: Vec<(&str, String, TokenRejected)> = vec![
        (
            "expired",
            sign(claims(json!({"exp": now() - 60}))),
            TokenRejected::Expired,
        ),
        (
            "not yet valid",
            sign(claims(json!({"nbf": now() + 600}))),
            TokenRejected::NotYetValid,
        ),
        (
            "issued in the future",
            sign(claims(json!({"iat": now() + 600}))),
            TokenRejected::NotYetValid,
        ),
        (
            "another issuer",
            sign(claims(json!({"iss": "http://evil.example/"}))),
            TokenRejected::Issuer,
        ),
        (
            "an audience nobody asked for",
            sign(claims(json!({"aud": "billing"}))),
            TokenRejected::Audience,
        ),
        (
            "no sid",
            sign(claims(json!({"sid": null}))),
            TokenRejected::MissingClaim,
        ),
        (
            "an empty sub",
            sign(claims(json!({"sub": ""}))),
            TokenRejected::MissingClaim,
        ),
        (
            "unknown kid",
            with_header(json!({"alg": "ES256", "kid": "made-up"})),
            TokenRejected::UnknownKey,
        ),
        (
            "alg none",
            with_header(json!({"alg": "none", "kid": header["kid"]})),
            TokenRejected::Algorithm,
        ),
        (
            "HS256 with the public key as secret",
            hs256,
            TokenRejected::Algorithm,
        ),
        ("payload edited", edited_payload, TokenRejected::Signature),
        (
            "signature edited",
            edited_signature,
            TokenRejected::Signature,
        ),
        (
            "truncated",
            good[..good.len() - 10].to_owned(),
            TokenRejected::Signature,
        ),
        (
            "two segments",
            format!("{}.{}", segments[0], segments[1]),
            TokenRejected::Malformed,
        ),
        (
            "oversized",
            format!("{good}{}", "A".repeat(20_000)),
            TokenRejected::Malformed,
        ),
        (
            "bad base64",
            format!("{}.{}.!!!", segments[0], segments[1]),
            TokenRejected::Malformed,
        ),
    ];
    for (what, token, why) in cases {
        let answer = with_bearer(&layer, &token).await;
        assert_eq!(refused_for(&answer), why, "{what}");
        assert!(answer.header("www-authenticate").is_some(), "{what}");
        // The body names the reason, never the token.
        assert!(!answer.text().contains(&token[..20]), "{what}");
    }
    // Not a bearer token at all.
    let service = downstream(layer.clone());
    for authorization in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b"] {
        let answer = send(&service, get("/", &[("authorization", authorization)])).await;
        assert_eq!(
            refused_for(&answer),
            TokenRejected::Malformed,
            "{authorization}"
        );
    }
    let answer = send(&service, get("/", &[])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(matches!(answer.outcome(), Outcome::Anonymous));

    // An audience: required when configured.
    let for_billing = layer_for(&kratos, "es256")
        .audience("billing")
        .build()
        .unwrap();
    let with_aud = sign(claims(json!({"aud": ["billing", "other"]})));
    assert_eq!(
        with_bearer(&for_billing, &with_aud).await.status,
        StatusCode::OK
    );
    assert_eq!(
        refused_for(&with_bearer(&for_billing, &good).await),
        TokenRejected::Audience
    );
}

#[tokio::test]
async fn a_repeated_token_is_served_from_the_cache_until_its_exp() {
    let kratos = kratos_signing(&[("es512", SigningAlg::Es512)]).await;
    let layer = layer_for(&kratos, "es512")
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    let token = kratos
        .sign_claims("es512", &claims(json!({"exp": now() + 2})))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(with_bearer(&layer, &token).await.status, StatusCode::OK);
    }
    assert_eq!(layer.cached_tokens(), 1);
    // Past its exp, the cached verification is not served.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        refused_for(&with_bearer(&layer, &token).await),
        TokenRejected::Expired
    );
}

#[tokio::test]
async fn keys_from_a_url_follow_a_rotation_and_a_kid_flood_makes_one_fetch_per_interval() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let url = kratos.jwks_url("es256").unwrap();
    let layer = JwtLayer::builder(ISSUER)
        .jwks_url(&url)
        .jwks_min_refetch(Duration::from_millis(300))
        .build()
        .unwrap();
    let first = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    assert_eq!(with_bearer(&layer, &first).await.status, StatusCode::OK);
    let fetched = kratos.calls(Endpoint::Jwks);
    assert!(fetched >= 1);

    // A new key: its first token makes the layer fetch again, once.
    tokio::time::sleep(Duration::from_millis(350)).await;
    kratos.rotate_key("es256").unwrap();
    let second = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    assert_eq!(with_bearer(&layer, &second).await.status, StatusCode::OK);
    assert_eq!(
        with_bearer(&layer, &first).await.status,
        StatusCode::OK,
        "the old key is kept"
    );
    assert_eq!(kratos.calls(Endpoint::Jwks), fetched + 1);

    // 200 made-up kids at once: each refused once a fetch made after it came found no such
    // key, and all of them together at most one fetch per interval.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = kratos.calls(Endpoint::Jwks);
    let flood = made_up_kids(&second);
    let flood_began = Instant::now();
    let answers =
        futures_util::future::join_all(flood.iter().map(|token| with_bearer(&layer, token))).await;
    for answer in answers {
        assert_eq!(refused_for(&answer), TokenRejected::UnknownKey);
    }
    at_most_one_fetch_per_interval(
        kratos.calls(Endpoint::Jwks) - before,
        flood_began.elapsed(),
        Duration::from_millis(300),
    );
}

/// Fails if more fetches were made in `elapsed` than one per `interval` (the first one at once).
fn at_most_one_fetch_per_interval(fetches: usize, elapsed: Duration, interval: Duration) {
    let allowed = 1 + elapsed.as_millis() / interval.as_millis();
    assert!(
        fetches as u128 <= allowed,
        "{fetches} fetches in {elapsed:?}, at most {allowed} allowed"
    );
}

#[tokio::test]
async fn a_key_set_url_down_is_a_503_without_keys_and_changes_nothing_with_them() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let token = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    kratos.set_fault(
        Endpoint::Jwks,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let layer = JwtLayer::builder(ISSUER)
        .jwks_url(kratos.jwks_url("es256").unwrap())
        .jwks_min_refetch(Duration::from_millis(100))
        .build()
        .unwrap();
    let answer = with_bearer(&layer, &token).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert!(matches!(
        answer.outcome(),
        Outcome::Unavailable(Unavailable::SigningKeys { .. })
    ));

    // The URL comes back: keys are fetched on demand, then kept while it is down again.
    kratos.clear_fault(Endpoint::Jwks);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(with_bearer(&layer, &token).await.status, StatusCode::OK);
    kratos.set_fault(
        Endpoint::Jwks,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let other = kratos
        .sign_claims("es256", &claims(json!({"jti": "another"})))
        .unwrap();
    assert_eq!(with_bearer(&layer, &other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_private_jwks_keeps_only_public_parts_and_bad_settings_are_refused() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let mut jwks = kratos.jwks("es256").unwrap();
    // As if the operator pasted the private set: `d` is ignored, the key still verifies.
    jwks["keys"][0]["d"] = "c2VjcmV0".into();
    let (captured, guard) = support::capture::capture(tracing::Level::WARN);
    let layer = JwtLayer::builder(ISSUER)
        .jwks(jwks.to_string())
        .build()
        .unwrap();
    drop(guard);
    let logged = captured.take();
    assert!(logged.contains("private key material"), "{logged}");
    assert!(!logged.contains("c2VjcmV0"), "{logged}");
    let token = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    assert_eq!(with_bearer(&layer, &token).await.status, StatusCode::OK);
    assert!(!format!("{layer:?}").contains("c2VjcmV0"));

    for (builder, setting) in [
        (JwtLayer::builder(ISSUER), "jwks"),
        (
            JwtLayer::builder("not a url").jwks(jwks.to_string()),
            "issuer",
        ),
        (
            JwtLayer::builder(ISSUER).jwks(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            "jwks",
        ),
        (JwtLayer::builder(ISSUER).jwks("[]"), "jwks"),
        (
            JwtLayer::builder(ISSUER).jwks_file("/nonexistent/jwks.json"),
            "jwks_file",
        ),
        (
            JwtLayer::builder(ISSUER)
                .jwks(jwks.to_string())
                .leeway(Duration::from_secs(3600)),
            "leeway",
        ),
        (
            JwtLayer::builder(ISSUER)
                .jwks(jwks.to_string())
                .algorithms([]),
            "algorithms",
        ),
    ] {
        let error = builder.build().expect_err(setting);
        assert_eq!(error.setting_name(), setting, "{error}");
    }
}

#[tokio::test]
async fn the_edge_hands_out_the_jwt_and_never_caches_past_it() {
    let kratos = KratosStandIn::builder()
        .tokenizer(
            "internal",
            TokenizerTemplate::new(SigningAlg::Es256).ttl(Duration::from_secs(12)),
        )
        .start()
        .await
        .unwrap();
    let session = kratos.create_session();
    let edge = KratosLayer::builder(kratos.public_url())
        .tokenize_as("internal")
        .tokenized_margin(Duration::from_secs(10))
        .build()
        .unwrap();
    let handler = tower::service_fn(|request: Request<String>| async move {
        let session = request.extensions().get::<KratosSession>().cloned();
        let jwt = session.and_then(|session| session.tokenized().map(str::to_owned));
        Ok::<_, Infallible>(Response::new(jwt.unwrap_or_default()))
    });
    let app = edge.layer(handler);
    let request = || get("/", &[("x-session-token", &session.token)]);
    let jwt = send(&app, request()).await.text().to_owned();
    assert_eq!(
        send(&app, request()).await.text(),
        jwt,
        "served from the cache"
    );
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    // The JWT verifies downstream, for this session.
    let downstream_layer = JwtLayer::builder(kratos.public_url())
        .jwks(kratos.jwks("internal").unwrap().to_string())
        .build()
        .unwrap();
    let verified = with_bearer(&downstream_layer, &jwt).await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.text());
    assert_eq!(verified.json()["sid"], session.id.as_str());
    // 12 s JWT, 10 s margin: the entry ends after 2 s and Kratos is asked again.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let _ = send(&app, request()).await;
    assert_eq!(kratos.calls(Endpoint::Whoami), 2);

    // An unknown template: 503, never cached.
    let misconfigured = KratosLayer::builder(kratos.public_url())
        .tokenize_as("nope")
        .build()
        .unwrap()
        .layer(tower::service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let before = kratos.calls(Endpoint::Whoami);
    for _ in 0..2 {
        let answer = send(&misconfigured, request()).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text()
        );
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), before + 2);
    assert_eq!(
        KratosLayer::builder(kratos.public_url())
            .tokenize_as("has space")
            .build()
            .unwrap_err()
            .setting_name(),
        "tokenize_as"
    );
}

/// Polls until the layer refuses the token as revoked; fails if it serves it for a second.
async fn refused_as_revoked_within_a_second(layer: &JwtLayer, token: &str) {
    let revoked = Instant::now();
    loop {
        let answer = with_bearer(layer, token).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            assert_eq!(refused_for(&answer), TokenRejected::Revoked);
            return;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "served after a revocation"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_the_edge_is_honoured_downstream_by_sid() {
    const SECRET: &str = "a shared secret of at least 32 bytes, for the tests";
    let redis = RedisServer::start_as(Flavor::Plain);
    let kratos = kratos_signing(&[("internal", SigningAlg::Es256)]).await;
    let edge = KratosLayer::builder(kratos.public_url())
        .admin_url(kratos.admin_url())
        .tokenize_as("internal")
        .redis_url(redis.url())
        .shared_cache_secret(SECRET)
        .build()
        .unwrap();
    let jwt_layer = JwtLayer::builder(kratos.public_url())
        .jwks(kratos.jwks("internal").unwrap().to_string())
        .redis_url(redis.url())
        .shared_cache_secret(SECRET)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !jwt_layer
        .shared_cache_stats()
        .is_some_and(|stats| stats.subscribed)
    {
        assert!(Instant::now() < deadline, "the JWT layer never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let session = kratos.create_session();
    let bystander = kratos.create_session();
    let handler = tower::service_fn(|request: Request<String>| async move {
        let session = request.extensions().get::<KratosSession>().cloned();
        let jwt = session.and_then(|session| session.tokenized().map(str::to_owned));
        Ok::<_, Infallible>(Response::new(jwt.unwrap_or_default()))
    });
    let app = edge.layer(handler);
    let jwt_of = |token: String| {
        let app = app.clone();
        async move {
            send(&app, get("/", &[("x-session-token", &token)]))
                .await
                .text()
                .to_owned()
        }
    };
    let (jwt, other) = (
        jwt_of(session.token.clone()).await,
        jwt_of(bystander.token.clone()).await,
    );
    assert_eq!(with_bearer(&jwt_layer, &jwt).await.status, StatusCode::OK);

    edge.lifecycle()
        .disable_session(&session.id)
        .await
        .expect("revoked");
    refused_as_revoked_within_a_second(&jwt_layer, &jwt).await;
    assert_eq!(with_bearer(&jwt_layer, &other).await.status, StatusCode::OK);

    // An identity's revocation reaches its tokens by `sub`.
    edge.lifecycle()
        .revoke_identity_sessions(&bystander.identity_id)
        .await
        .expect("revoked");
    refused_as_revoked_within_a_second(&jwt_layer, &other).await;
}

#[tokio::test]
async fn a_custom_rejection_replaces_the_default() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let layer = layer_for(&kratos, "es256")
        .rejection(|outcome: &Outcome, _: &http::request::Parts| {
            let mut response = Response::new(bytes::Bytes::from(format!("no: {}", outcome.kind())));
            *response.status_mut() = outcome.status();
            response
        })
        .build()
        .unwrap();
    let service = layer.layer(tower::service_fn(echo));
    let answer = send(&service, get("/", &[("authorization", "Bearer a.b.c")])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.text().starts_with("no: "), "{}", answer.text());
    assert!(matches!(
        answer.outcome(),
        Outcome::Unauthenticated(Unauthenticated::Token(_))
    ));
}

/// One key set and one valid token for every proptest case (the stand-in only signs them).
fn signed_once() -> &'static (String, String) {
    static SIGNED: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    SIGNED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
            let mut claims = claims(json!({}));
            claims["exp"] = (now() + 3600).into();
            let token = kratos.sign_claims("es256", &claims).unwrap();
            (kratos.jwks("es256").unwrap().to_string(), token)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A valid token changed anywhere (a byte replaced, removed or added) is refused, and
    /// nothing ever panics.
    #[test]
    fn mangled_tokens_are_refused(edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (jwks, token) = signed_once();
        let layer = JwtLayer::builder(ISSUER).jwks(jwks.as_str()).build().unwrap();
        let mut bytes = token.clone().into_bytes();
        for (at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => { bytes.remove(at); }
                _ => bytes.insert(at, byte),
            }
        }
        let Ok(mangled) = String::from_utf8(bytes) else { return Ok(()) };
        let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {mangled}")) else { return Ok(()) };
        let mut request = get("/", &[]);
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
        let status = runtime.block_on(async {
            downstream(layer).oneshot(request).await.unwrap().status()
        });
        if mangled == *token {
            prop_assert_eq!(status, StatusCode::OK);
        } else {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
}

/// What a token signed with a key the layer has not fetched yet may be answered while the key
/// set is loading or a refetch is held back: accepted, or 503 with `Retry-After`. Never a 401,
/// which would sign its user out. `true` once accepted.
fn accepted_or_asked_to_retry(answer: &Answer, what: &str) -> bool {
    match answer.status {
        StatusCode::OK => true,
        StatusCode::SERVICE_UNAVAILABLE => {
            assert!(
                matches!(
                    answer.outcome(),
                    Outcome::Unavailable(Unavailable::SigningKeys { .. })
                ),
                "{what}: {:?}",
                answer.outcome()
            );
            let wait: u64 = answer
                .header("retry-after")
                .unwrap_or_else(|| panic!("{what}: a 503 without Retry-After"))
                .parse()
                .expect("Retry-After in seconds");
            assert!(wait >= 1, "{what}: Retry-After {wait}");
            false
        }
        other => panic!("{what}: answered {other}: {}", answer.text()),
    }
}

/// Sends `token` until it is accepted, asserting every answer before is a 503 with
/// `Retry-After`; fails if it is not accepted within `deadline` of the first try.
async fn accepted_within(layer: &JwtLayer, token: &str, deadline: Duration, what: &str) {
    let first_use = Instant::now();
    loop {
        let accepted = accepted_or_asked_to_retry(&with_bearer(layer, token).await, what);
        assert!(
            first_use.elapsed() < deadline,
            "{what}: not accepted within {deadline:?}"
        );
        if accepted {
            return;
        }
        // A client's retry, sooner than Retry-After asks, to see the first moment it works.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 200 tokens signed like `template` but naming made-up `kid`s.
fn made_up_kids(template: &str) -> Vec<String> {
    let segments: Vec<&str> = template.split('.').collect();
    (0..200)
        .map(|n| {
            let header = URL_SAFE_NO_PAD
                .encode(json!({"alg": "ES256", "kid": format!("made-up-{n}")}).to_string());
            format!("{header}.{}.{}", segments[1], segments[2])
        })
        .collect()
}

#[tokio::test]
async fn a_new_key_is_accepted_within_two_seconds_whatever_made_up_kids_came_before() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    // The default hold-back between two fetches for unknown kids.
    let layer = JwtLayer::builder(ISSUER)
        .jwks_url(kratos.jwks_url("es256").unwrap())
        .build()
        .unwrap();
    let known = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    assert_eq!(with_bearer(&layer, &known).await.status, StatusCode::OK);

    // A flood of made-up kids: each is refused (401 only after a fetch that started after it
    // was seen, else 503), and all of them together make at most one fetch per interval.
    let before = kratos.calls(Endpoint::Jwks);
    let flood = made_up_kids(&known);
    let flood_began = Instant::now();
    let answers =
        futures_util::future::join_all(flood.iter().map(|token| with_bearer(&layer, token))).await;
    for answer in &answers {
        if answer.status == StatusCode::UNAUTHORIZED {
            assert_eq!(refused_for(answer), TokenRejected::UnknownKey);
        } else {
            assert!(!accepted_or_asked_to_retry(answer, "a made-up kid"));
        }
    }
    let after_flood = kratos.calls(Endpoint::Jwks);
    at_most_one_fetch_per_interval(
        after_flood - before,
        flood_began.elapsed(),
        DEFAULT_JWKS_MIN_REFETCH,
    );

    // Kratos rotates: the new key's first token is never a 401, and is accepted within 2 s.
    kratos.rotate_key("es256").unwrap();
    let rotated = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    accepted_within(&layer, &rotated, Duration::from_secs(2), "the new key").await;
    assert!(
        kratos.calls(Endpoint::Jwks) <= after_flood + 1,
        "one fetch for the new key"
    );
    assert_eq!(with_bearer(&layer, &known).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_long_hold_back_answers_unknown_kids_503_with_retry_after_never_401() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let hold_back = Duration::from_secs(3);
    let layer = JwtLayer::builder(ISSUER)
        .jwks_url(kratos.jwks_url("es256").unwrap())
        .jwks_min_refetch(hold_back)
        .build()
        .unwrap();
    let known = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    assert_eq!(with_bearer(&layer, &known).await.status, StatusCode::OK);
    let fetched = kratos.calls(Endpoint::Jwks);

    // Within the hold-back, longer than a request waits: nothing is fetched, and no made-up
    // kid is called unknown, since no fetch looked for it.
    let answers = futures_util::future::join_all(
        made_up_kids(&known)
            .iter()
            .map(|token| with_bearer(&layer, token)),
    )
    .await;
    for answer in &answers {
        assert!(!accepted_or_asked_to_retry(answer, "a made-up kid"));
    }
    assert_eq!(kratos.calls(Endpoint::Jwks), fetched);

    kratos.rotate_key("es256").unwrap();
    let rotated = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    let answer = with_bearer(&layer, &rotated).await;
    assert!(!accepted_or_asked_to_retry(
        &answer,
        "the new key, held back"
    ));
    // Accepted once the hold-back is over, and 503 until then.
    accepted_within(
        &layer,
        &rotated,
        hold_back + Duration::from_secs(2),
        "the new key",
    )
    .await;
    assert_eq!(kratos.calls(Endpoint::Jwks), fetched + 1);
}

/// Waits until the stand-in has been asked for the key set `times` times.
async fn jwks_asked(kratos: &KratosStandIn, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while kratos.calls(Endpoint::Jwks) < times {
        assert!(
            Instant::now() < deadline,
            "the layer never fetched its keys"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_layer_still_loading_its_keys_never_answers_401() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let url = kratos.jwks_url("es256").unwrap();
    let token = kratos.sign_claims("es256", &claims(json!({}))).unwrap();

    // A key set URL that answers slowly: the first tokens wait for it (or are asked to retry).
    kratos.set_fault(Endpoint::Jwks, Fault::Delay(Duration::from_millis(500)));
    let layer = JwtLayer::builder(ISSUER).jwks_url(&url).build().unwrap();
    let answers =
        futures_util::future::join_all((0..10).map(|_| with_bearer(&layer, &token))).await;
    for answer in &answers {
        accepted_or_asked_to_retry(answer, "a first token, keys loading");
    }
    accepted_within(&layer, &token, Duration::from_secs(3), "a first token").await;

    // The fetch under way at start-up answers with the keys as they were when it asked; the
    // token comes with a key made since. That answer cannot decide it: a fetch made after the
    // token was seen does.
    kratos.set_fault(
        Endpoint::Jwks,
        Fault::AnswerLate(Duration::from_millis(500)),
    );
    let before = kratos.calls(Endpoint::Jwks);
    let layer = JwtLayer::builder(ISSUER).jwks_url(&url).build().unwrap();
    jwks_asked(&kratos, before + 1).await;
    kratos.rotate_key("es256").unwrap();
    let rotated = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    accepted_within(
        &layer,
        &rotated,
        Duration::from_secs(3),
        "a key newer than the fetch",
    )
    .await;
}

#[tokio::test]
async fn duplicate_members_in_the_header_or_the_claims_are_refused() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let layer = layer_for(&kratos, "es256").build().unwrap();
    let jwks = kratos.jwks("es256").unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"}).to_string();
    let payload = claims(json!({})).to_string();
    let sign = |header: &str, payload: &str| {
        kratos
            .sign_raw("es256", header.as_bytes(), payload.as_bytes())
            .expect("signed")
    };
    // Written as given, once each: accepted.
    assert_eq!(
        with_bearer(&layer, &sign(&header, &payload)).await.status,
        StatusCode::OK
    );

    // `{"sub":"someone-else", ...the claims, their own "sub" last...}`: a parser that keeps
    // the last one and one that keeps the first disagree on who this is.
    let two_subs = payload.replacen('{', r#"{"sub":"someone-else","#, 1);
    let cases = [
        ("a claim twice", sign(&header, &two_subs)),
        (
            "a claim twice, once escaped",
            sign(
                &header,
                &payload.replacen('{', r#"{"s\u0075b":"someone-else","#, 1),
            ),
        ),
        (
            "a nested member twice",
            sign(
                &header,
                &payload.replacen('{', r#"{"ext":{"roles":["user"],"roles":["admin"]},"#, 1),
            ),
        ),
        (
            "a member twice in an object in an array",
            sign(
                &header,
                &payload.replacen('{', r#"{"ext":[{"a":1,"a":2}],"#, 1),
            ),
        ),
        (
            "alg twice",
            sign(
                &format!(r#"{{"alg":"none","alg":"ES256","kid":"{kid}"}}"#),
                &payload,
            ),
        ),
        (
            "kid twice",
            sign(
                &format!(r#"{{"alg":"ES256","kid":"other","kid":"{kid}"}}"#),
                &payload,
            ),
        ),
        (
            "typ twice",
            sign(
                &format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT","typ":"JWT"}}"#),
                &payload,
            ),
        ),
    ];
    for (what, token) in cases {
        let answer = with_bearer(&layer, &token).await;
        assert_eq!(
            refused_for(&answer),
            TokenRejected::DuplicateMember,
            "{what}"
        );
    }
    assert_eq!(layer.cached_tokens(), 1, "no refused token is cached");
}

/// The order of P-256's group, big-endian (SEC 2, `n`).
const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// `n - s` for a 32-byte big-endian `s` with `0 < s < n`: the other valid `s` of an ECDSA
/// signature (`(r, s)` and `(r, n - s)` verify alike).
fn p256_negate(s: &[u8]) -> Vec<u8> {
    assert_eq!(s.len(), 32);
    let mut out = vec![0u8; 32];
    let mut borrow = 0u16;
    for at in (0..32).rev() {
        let subtrahend = u16::from(s[at]) + borrow;
        let minuend = u16::from(P256_ORDER[at]);
        (out[at], borrow) = if minuend >= subtrahend {
            ((minuend - subtrahend) as u8, 0)
        } else {
            ((minuend + 256 - subtrahend) as u8, 1)
        };
    }
    assert_eq!(borrow, 0, "s is below the order");
    out
}

#[tokio::test]
async fn an_es256_signature_with_s_flipped_is_verified_on_its_own_and_vouches_for_no_other() {
    let kratos = kratos_signing(&[("es256", SigningAlg::Es256)]).await;
    let layer = layer_for(&kratos, "es256").build().unwrap();
    let token = kratos.sign_claims("es256", &claims(json!({}))).unwrap();
    let original = with_bearer(&layer, &token).await;
    assert_eq!(original.status, StatusCode::OK, "{}", original.text());
    assert_eq!(layer.cached_tokens(), 1);

    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let (r, s) = signature.split_at(32);
    // The same header and payload with garbage for a signature: refused, although a token
    // with that header and payload is cached.
    for garbage in [
        [r, &[0x42; 32][..]].concat(),
        vec![0x42; 64],
        [r, s, &[0][..]].concat(),
    ] {
        let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(garbage));
        let answer = with_bearer(&layer, &forged).await;
        assert_ne!(
            answer.status,
            StatusCode::OK,
            "a forged signature was served"
        );
        assert_eq!(refused_for(&answer), TokenRejected::Signature);
    }

    // (r, n - s): the other encoding of the same signature, as Go's crypto/ecdsa may write it.
    // Accepted, with the same claims, after a signature check of its own.
    let twin = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode([r, &p256_negate(s)[..]].concat())
    );
    assert_ne!(twin, token);
    let answer = with_bearer(&layer, &twin).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), original.json());
    assert_eq!(
        layer.cached_tokens(),
        2,
        "each encoding cached under its own text"
    );
}
