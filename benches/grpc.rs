//! A unary gRPC call through the layer (a cached session) against the same server without it, in
//! one run: tonic servers and clients over HTTP/2 on loopback, the two sides in alternating
//! slices so that a change in the machine's load touches both alike. The target is the layer's
//! side at ≥ 0.95 of the bare side's calls per second.
//!
//! ```text
//! cargo bench --bench grpc
//! SECONDS=2 ROUNDS=6 CLIENTS=32 cargo bench --bench grpc
//! ```

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

mod support;

use kratos_stand_in::KratosStandIn;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Server},
    Request, Response, Status,
};
use tower::Layer;
use tower_kratos::KratosLayer;

use test_support::demo;

use demo::{
    identity_client::IdentityClient,
    identity_server::{Identity, IdentityServer},
    WatchRequest, WatchResponse, WhoAmIRequest, WhoAmIResponse,
};

/// The same handler on both sides: it answers a fixed message, so what differs is the layer.
struct Fixed;

#[tonic::async_trait]
impl Identity for Fixed {
    async fn who_am_i(
        &self,
        _request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        Ok(Response::new(WhoAmIResponse {
            session_id: "s".into(),
            identity_id: "i".into(),
            aal: "aal1".into(),
        }))
    }

    type WatchStream = tokio_stream::Empty<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not measured"))
    }
}

async fn serve(layer: Option<KratosLayer>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let mut server = Server::builder();
    let router = match layer {
        Some(layer) => server.add_service(layer.layer(IdentityServer::new(Fixed))),
        None => server.add_service(IdentityServer::new(Fixed)),
    };
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

/// Calls made by `clients` concurrent clients (over `connections` HTTP/2 connections) within
/// `slice`.
async fn calls_in(token: &str, clients: usize, connections: &[Channel], slice: Duration) -> u64 {
    let deadline = Instant::now() + slice;
    let token: MetadataValue<_> = token.parse().expect("ASCII token");
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let mut identity = IdentityClient::new(connections[client % connections.len()].clone());
        let token = token.clone();
        tasks.spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                let mut request = Request::new(WhoAmIRequest {});
                request
                    .metadata_mut()
                    .insert("x-session-token", token.clone());
                identity.who_am_i(request).await.expect("a session");
                calls += 1;
            }
            calls
        });
    }
    let mut total = 0;
    while let Some(calls) = tasks.join_next().await {
        total += calls.expect("joined");
    }
    total
}

async fn connect(addr: SocketAddr, count: usize) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..count {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a URI")
            .connect()
            .await
            .expect("connected");
        channels.push(channel);
    }
    channels
}

fn main() {
    let smoke = support::smoke_test();
    let slice = if smoke {
        Duration::from_millis(200)
    } else {
        support::env_seconds("SECONDS", 2.5)
    };
    let rounds = if smoke {
        1
    } else {
        support::env_count("ROUNDS", 4)
    };
    let clients = support::env_count("CLIENTS", 16);
    let connections = support::env_count("CONNECTIONS", 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let kratos = KratosStandIn::start().await.expect("stand-in");
        let session = kratos.create_session();
        let layer = KratosLayer::builder(kratos.public_url())
            .build()
            .expect("layer");
        let bare = serve(None).await;
        let layered = serve(Some(layer)).await;
        let bare_channels = connect(bare, connections).await;
        let layered_channels = connect(layered, connections).await;
        // Warm both sides up; the first layered call fills the cache.
        let warm_up = Duration::from_millis(300);
        calls_in(&session.token, clients, &bare_channels, warm_up).await;
        calls_in(&session.token, clients, &layered_channels, warm_up).await;
        let (mut bare_calls, mut layered_calls) = (0, 0);
        for _ in 0..rounds {
            bare_calls += calls_in(&session.token, clients, &bare_channels, slice).await;
            layered_calls += calls_in(&session.token, clients, &layered_channels, slice).await;
        }
        let seconds = slice.as_secs_f64() * rounds as f64;
        let (bare_rate, layered_rate) =
            (bare_calls as f64 / seconds, layered_calls as f64 / seconds);
        println!(
            "\nunary gRPC calls, {clients} clients over {connections} HTTP/2 connections, \
             {rounds} alternating slices of {:.1} s per side ({}):",
            slice.as_secs_f64(),
            support::machine()
        );
        println!("| side | calls/s |");
        println!("|---|---:|");
        println!("| bare tonic server | {bare_rate:.0} |");
        println!("| behind the layer (cache hit) | {layered_rate:.0} |");
        let ratio = layered_rate / bare_rate;
        println!(
            "ratio {ratio:.3} (target >= 0.95: {})",
            if ratio >= 0.95 { "met" } else { "NOT met" }
        );
        assert_eq!(
            kratos.calls(kratos_stand_in::Endpoint::Whoami),
            1,
            "every layered call after the first was a cache hit"
        );
    });
}
