//! The gRPC reference app: tonic services behind Ory Kratos.
//!
//! ```text
//! cargo run --example grpc_app
//! ```
//!
//! Without `KRATOS_PUBLIC_URL` it starts the built-in Kratos stand-in, creates a demo session and
//! prints how to call the services with it. It reads the Kratos settings every reference app
//! reads (`test-support/src/app_settings.rs`: `KRATOS_PUBLIC_URL`, `KRATOS_ADMIN_URL`,
//! `CACHE_TTL_SECS`, `KRATOS_TIMEOUT_MS`, `STALE_IF_ERROR_SECS`, `MAX_CONCURRENT_LOOKUPS`,
//! `EXTEND_WITHIN_SECS`, ...), `BIND_ADDR` (default `127.0.0.1:50051`) and `METRICS_ADDR`
//! (unset: none; e.g. `127.0.0.1:9464` serves the crate's metrics as Prometheus text at
//! `GET /metrics` there), and serves `test-support/src/demo/demo.proto`:
//!
//! | service | session | answers |
//! |---|---|---|
//! | `tower_kratos.demo.v1.Identity/WhoAmI` | required | the session id, identity id and AAL |
//! | `tower_kratos.demo.v1.Identity/Watch` | required | a stream: a tick every 500 ms while the session lasts, then `UNAUTHENTICATED` (16) with `session revoked` or `session expired` |
//! | `tower_kratos.demo.v1.Greeter/Hello` | optional | whether the call is authenticated, and as whom |
//! | `tower_kratos.demo.v1.Sessions/Extend` | required | extends the session if it expires within `EXTEND_WITHIN_SECS` |
//! | `tower_kratos.demo.v1.Sessions/RevokeOtherSessions` | required | signs the caller's other devices out |
//!
//! A call without a valid session gets `UNAUTHENTICATED` (16); Kratos down gets `UNAVAILABLE`
//! (14) with `retry-after` and `grpc-retry-pushback-ms`, never `UNAUTHENTICATED`.

use std::{error::Error, net::SocketAddr, process::ExitCode, time::Duration};

use time::format_description::well_known::Rfc3339;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{transport::Server, Request, Response, Status};
use tower::Layer;
use tower_kratos::{lifecycle::SessionLifecycle, tonic::KratosRequestExt};
use tracing_subscriber::EnvFilter;

use demo::{
    greeter_server::{Greeter, GreeterServer},
    identity_server::{Identity, IdentityServer},
    sessions_server::{Sessions, SessionsServer},
    ExtendRequest, ExtendResponse, HelloRequest, HelloResponse, RevokeOtherSessionsRequest,
    RevokeOtherSessionsResponse, WatchRequest, WatchResponse, WhoAmIRequest, WhoAmIResponse,
};
use kratos::{parse, Kratos, Settings};
use test_support::{app_settings as kratos, demo};

/// `Identity`: only reached with a session (the layer around it is required).
struct IdentityService;

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let session = request.kratos_session()?;
        Ok(Response::new(WhoAmIResponse {
            session_id: session.id.clone(),
            identity_id: session.identity_id().unwrap_or_default().to_owned(),
            aal: session
                .authenticator_assurance_level
                .as_ref()
                .map(|aal| aal.as_str().to_owned())
                .unwrap_or_default(),
        }))
    }

    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    /// A tick every 500 ms. Nothing here watches the session: the layer ends the stream with
    /// `UNAUTHENTICATED` when the session ends, and the task feeding it stops at its next send.
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let session_id = request.kratos_session()?.id.clone();
        let (replies, stream) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(500));
            for tick in 1u32.. {
                ticks.tick().await;
                let reply = WatchResponse {
                    tick,
                    session_id: session_id.clone(),
                };
                if replies.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// `Greeter`: with or without a session (the layer around it is optional).
struct GreeterService;

#[tonic::async_trait]
impl Greeter for GreeterService {
    async fn hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        let identity = request.optional_kratos_identity();
        Ok(Response::new(HelloResponse {
            authenticated: identity.is_some(),
            identity_id: identity
                .map(|identity| identity.id.clone())
                .unwrap_or_default(),
        }))
    }
}

/// `Sessions`: the lifecycle helpers, acting with the call's metadata as the caller.
struct SessionsService {
    sessions: SessionLifecycle,
    extend_within: Duration,
}

#[tonic::async_trait]
impl Sessions for SessionsService {
    async fn extend(
        &self,
        request: Request<ExtendRequest>,
    ) -> Result<Response<ExtendResponse>, Status> {
        let outcome = self
            .sessions
            .extend_if_expiring(request.metadata(), self.extend_within)
            .await?;
        let expires_at = outcome
            .expires_at()
            .and_then(|at| at.format(&Rfc3339).ok())
            .unwrap_or_default();
        // A token client keeps no cookie: no Set-Cookie to pass on over gRPC.
        Ok(Response::new(ExtendResponse {
            extended: outcome.extended(),
            expires_at,
        }))
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<RevokeOtherSessionsRequest>,
    ) -> Result<Response<RevokeOtherSessionsResponse>, Status> {
        let count = self
            .sessions
            .revoke_other_sessions(request.metadata())
            .await?;
        Ok(Response::new(RevokeOtherSessionsResponse { count }))
    }
}

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
            eprintln!("grpc_app: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let settings = Settings::from_env()?;
    let bind_addr: SocketAddr = parse("BIND_ADDR", "127.0.0.1:50051")?;
    let kratos_api = Kratos::start(&settings).await?;
    let kratos = kratos_api.layer(&settings).build()?;
    let sessions = SessionsService {
        sessions: kratos.lifecycle(),
        extend_within: settings.extend_within,
    };

    let listener = TcpListener::bind(bind_addr).await?;
    let addr = listener.local_addr()?;
    kratos_api.describe(&settings);
    if let Some(demo) = kratos_api.demo() {
        println!("built-in Kratos stand-in with a demo session; try:");
        println!(
            "  grpcurl -plaintext -import-path test-support/src/demo -proto demo.proto \
             -H 'x-session-token: {}' {addr} tower_kratos.demo.v1.Identity/WhoAmI",
            demo.token
        );
    }
    println!("listening on http://{addr}");
    // HTTP/2 has no header-read timeout to set (that is HTTP/1.1's); what bounds a slow or
    // stuck client here: a deadline on every call, keep-alive pings that close a connection
    // whose peer stopped answering, and a maximum connection age.
    Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(Duration::from_secs(600))
        .add_service(
            kratos
                .required()
                .layer(IdentityServer::new(IdentityService)),
        )
        .add_service(kratos.optional().layer(GreeterServer::new(GreeterService)))
        .add_service(kratos.required().layer(SessionsServer::new(sessions)))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
