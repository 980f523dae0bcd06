//! Verifying Kratos's tokenized sessions: `JwtLayer` against jwt-authorizer (crates.io, the
//! nearest Rust peer for local JWT checks), the same ES256 tokens (signed by the stand-in as
//! Kratos would), the same machine, one run, alternating rounds:
//!
//! - **first sight**: every token new to both (the signature is checked);
//! - **repeated**: 100 tokens over and over (jwt-authorizer checks each signature again;
//!   `JwtLayer` looks the verification up).
//!
//! Targets: first sight within 1.2× of jwt-authorizer's time per token (the same cryptography's
//! work), repeated tokens at ≥ 10× its throughput. jwt-authorizer is called directly
//! (`Authorizer::check_auth`), without its layer; `JwtLayer` is measured as a tower layer over a
//! trivial service, its whole cost included.
//!
//! ```text
//! cargo bench --bench jwt
//! ROUNDS=10 TOKENS=2000 cargo bench --bench jwt
//! ```

mod support;

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use http::{Request, Response, StatusCode};
use jwt_authorizer::{Authorizer, JwtAuthorizer, RegisteredClaims, Validation};
use kratos_stand_in::{KratosStandIn, SigningAlg, TokenizerTemplate};
use serde_json::json;
use support::{env_count, machine, smoke_test};
use tower::{Layer, ServiceExt};
use tower_kratos::jwt::JwtLayer;

const ISSUER: &str = "http://localhost/";

fn main() {
    println!("jwt: tokenized sessions verified downstream, JwtLayer vs jwt-authorizer 0.15");
    println!("machine: {}", machine());
    let rounds = env_count("ROUNDS", if smoke_test() { 1 } else { 6 });
    let per_round = env_count("TOKENS", if smoke_test() { 50 } else { 2_000 });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let kratos = KratosStandIn::builder()
            .tokenizer("es256", TokenizerTemplate::new(SigningAlg::Es256))
            .start()
            .await
            .expect("stand-in");
        let jwks = kratos.jwks("es256").expect("the template").to_string();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let sign = |n: usize| {
            kratos
                .sign_claims(
                    "es256",
                    &json!({
                        "jti": format!("token-{n}"), "iss": ISSUER, "exp": now + 3600,
                        "nbf": now, "iat": now,
                        "sid": format!("session-{n}"), "sub": format!("identity-{n}"),
                    }),
                )
                .expect("signed")
        };
        let fresh: Vec<String> = (0..rounds * per_round).map(sign).collect();
        let repeated: Vec<String> = (0..100).map(|n| sign(1_000_000 + n)).collect();

        let ours = JwtLayer::builder(ISSUER)
            .jwks(jwks.as_str())
            .cache_capacity(u64::try_from(fresh.len() + 1_000).unwrap_or(u64::MAX))
            .build()
            .expect("JwtLayer")
            .layer(tower::service_fn(|_: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        let theirs: Authorizer<RegisteredClaims> = JwtAuthorizer::from_jwks_text(&jwks)
            .validation(Validation::new().iss(&[ISSUER]))
            .build()
            .await
            .expect("jwt-authorizer");

        let ours_one = |token: &str| {
            let request = Request::builder()
                .header("authorization", format!("Bearer {token}"))
                .body(String::new())
                .expect("a request");
            // A clone per request, as a server connection makes: part of the layer's cost.
            let service = ours.clone();
            async move {
                let response = service.oneshot(request).await;
                assert_eq!(response.expect("infallible").status(), StatusCode::OK);
            }
        };

        // First sight: each round, a new slice of tokens through both, first one side, then
        // the other (alternating which goes first).
        let (mut ours_first, mut theirs_first) = (Duration::ZERO, Duration::ZERO);
        for round in 0..rounds {
            let tokens = &fresh[round * per_round..(round + 1) * per_round];
            for ours_side in if round % 2 == 0 { [true, false] } else { [false, true] } {
                let started = Instant::now();
                for token in tokens {
                    if ours_side {
                        ours_one(token).await;
                    } else {
                        theirs.check_auth(token).await.expect("valid");
                    }
                }
                let took = started.elapsed();
                if ours_side {
                    ours_first += took;
                } else {
                    theirs_first += took;
                }
            }
        }
        let count = (rounds * per_round) as f64;
        let ours_per = ours_first.as_secs_f64() / count;
        let theirs_per = theirs_first.as_secs_f64() / count;
        println!();
        println!("first sight ({} tokens per side, {rounds} alternating rounds):", rounds * per_round);
        println!(
            "  JwtLayer {:.1} µs/token ({:.0}/s), jwt-authorizer {:.1} µs/token ({:.0}/s): \
             ratio of times {:.2} (target ≤ 1.2: {})",
            ours_per * 1e6,
            1.0 / ours_per,
            theirs_per * 1e6,
            1.0 / theirs_per,
            ours_per / theirs_per,
            if ours_per / theirs_per <= 1.2 { "met" } else { "NOT met" }
        );

        // Repeated: 100 tokens, each seen before.
        for token in &repeated {
            ours_one(token).await;
        }
        let (mut ours_n, mut theirs_n) = (0u64, 0u64);
        let (mut ours_time, mut theirs_time) = (Duration::ZERO, Duration::ZERO);
        for round in 0..rounds {
            for ours_side in if round % 2 == 0 { [true, false] } else { [false, true] } {
                let started = Instant::now();
                let mut n = 0u64;
                while started.elapsed() < Duration::from_millis(if smoke_test() { 20 } else { 300 }) {
                    for token in &repeated {
                        if ours_side {
                            ours_one(token).await;
                        } else {
                            theirs.check_auth(token).await.expect("valid");
                        }
                    }
                    n += repeated.len() as u64;
                }
                if ours_side {
                    ours_n += n;
                    ours_time += started.elapsed();
                } else {
                    theirs_n += n;
                    theirs_time += started.elapsed();
                }
            }
        }
        let ours_rate = ours_n as f64 / ours_time.as_secs_f64();
        let theirs_rate = theirs_n as f64 / theirs_time.as_secs_f64();
        println!("repeated (100 tokens, {rounds} alternating rounds):");
        println!(
            "  JwtLayer {ours_rate:.0}/s, jwt-authorizer {theirs_rate:.0}/s: {:.1}× (target ≥ 10: {})",
            ours_rate / theirs_rate,
            if ours_rate / theirs_rate >= 10.0 { "met" } else { "NOT met" }
        );
    });
}
