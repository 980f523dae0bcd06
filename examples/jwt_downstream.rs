//! An internal service behind the edge app: it verifies the tokenized session the edge forwards
//! (`Authorization: Bearer <JWT>`, from `GET /me/token` of `examples/axum_app.rs` run with
//! `TOKENIZE_AS`) with `JwtLayer`, and never calls Kratos.
//!
//! ```text
//! cargo run --example jwt_downstream    # against the built-in stand-in: prints a curl line
//! KRATOS_ISSUER=https://auth.example.com/ KRATOS_JWKS_URL=https://keys.internal/jwks.json \
//!     cargo run --example jwt_downstream
//! ```
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `KRATOS_ISSUER` | the stand-in's URL | Kratos's public URL, as in the tokens' `iss` |
//! | `KRATOS_JWKS_URL` | the stand-in's key set | the public JWKS, fetched and refreshed |
//! | `KRATOS_JWKS_FILE` | unset | the public JWKS from a file instead |
//! | `JWT_AUDIENCE` | unset | require this `aud` |
//! | `BIND_ADDR` | `127.0.0.1:3001` | where the service listens |
//! | `REDIS_URL`, `SHARED_CACHE_SECRET`, `REDIS_KEY_PREFIX` | unset | the edge's shared cache: tokens of sessions revoked through the edge are refused at once |
//!
//! Routes: `GET /me` → `{"session_id", "subject", "expires_at"}` (401 without a valid token,
//! 503 while there are no keys), `GET /health`.

use std::{error::Error, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{routing::get, Json, Router};
use kratos_stand_in::{KratosStandIn, SigningAlg, TokenizerTemplate};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tower_kratos::jwt::{JwtLayer, TokenizedSession};
use tracing_subscriber::EnvFilter;

use kratos::{parse, var};
use test_support::{app_settings as kratos, serve};

/// The stand-in's template when no Kratos is configured.
const DEMO_TEMPLATE: &str = "internal";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jwt_downstream: {error}");
            ExitCode::from(2)
        }
    }
}

async fn me(session: TokenizedSession) -> Json<Value> {
    Json(json!({
        "session_id": session.session_id(),
        "subject": session.subject(),
        "expires_at": session.expires_at().format(&Rfc3339).ok(),
    }))
}

async fn run() -> Result<(), Box<dyn Error>> {
    let bind_addr: SocketAddr = parse("BIND_ADDR", "127.0.0.1:3001")?;
    // Without a Kratos: the stand-in signs a demo session's token and serves its keys.
    let (stand_in, issuer) = match var("KRATOS_ISSUER") {
        Some(issuer) => (None, issuer),
        None => {
            let stand_in = KratosStandIn::builder()
                .tokenizer(
                    DEMO_TEMPLATE,
                    TokenizerTemplate::new(SigningAlg::Es256).ttl(Duration::from_secs(3600)),
                )
                .start()
                .await?;
            let issuer = stand_in.public_url();
            (Some(stand_in), issuer)
        }
    };
    let mut builder = JwtLayer::builder(&issuer);
    builder = match (var("KRATOS_JWKS_FILE"), var("KRATOS_JWKS_URL"), &stand_in) {
        (Some(file), _, _) => builder.jwks_file(file),
        (None, Some(url), _) => builder.jwks_url(url),
        (None, None, Some(stand_in)) => {
            builder.jwks_url(stand_in.jwks_url(DEMO_TEMPLATE).ok_or("no demo template")?)
        }
        (None, None, None) => {
            return Err("KRATOS_ISSUER is set: set KRATOS_JWKS_URL or KRATOS_JWKS_FILE too".into())
        }
    };
    if let Some(audience) = var("JWT_AUDIENCE") {
        builder = builder.audience(audience);
    }
    match (var("REDIS_URL"), var("SHARED_CACHE_SECRET")) {
        (None, _) => {}
        (Some(_), None) => {
            return Err("REDIS_URL is set but SHARED_CACHE_SECRET is not: use the edge's".into())
        }
        (Some(url), Some(secret)) => {
            builder = builder.redis_url(url).shared_cache_secret(secret);
            if let Some(prefix) = var("REDIS_KEY_PREFIX") {
                builder = builder.redis_key_prefix(prefix);
            }
        }
    }
    let layer = builder.build()?;
    let app = Router::new()
        .route("/me", get(me).layer(layer))
        .route("/health", get(|| async { "ok" }));
    let listener = TcpListener::bind(bind_addr).await?;
    let addr = listener.local_addr()?;
    println!("verifying tokens issued by {issuer}");
    if let Some(stand_in) = &stand_in {
        let session = stand_in.create_session();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token = stand_in
            .sign_claims(
                DEMO_TEMPLATE,
                &json!({
                    "jti": "demo", "iss": issuer, "iat": now, "nbf": now, "exp": now + 3600,
                    "sid": session.id, "sub": session.identity_id,
                }),
            )
            .ok_or("the stand-in did not sign")?;
        println!("try: curl -s http://{addr}/me -H 'Authorization: Bearer {token}'");
    }
    println!("listening on http://{addr}");
    serve::serve(listener, app).await?;
    Ok(())
}
