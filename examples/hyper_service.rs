//! `KratosLayer` in front of a plain hyper service: no axum needed.
//!
//! ```text
//! cargo run --example hyper_service
//! ```
//!
//! Uses `KRATOS_PUBLIC_URL` when set, else the built-in Kratos stand-in with a demo session, and
//! listens on `BIND_ADDR` (default `127.0.0.1:3001`).

use std::{convert::Infallible, env, error::Error, net::SocketAddr};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use kratos_stand_in::KratosStandIn;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_kratos::{KratosLayer, KratosSession};

use serve::serve;
use test_support::serve;

/// The app itself: it only reads the session the layer put in the request's extensions.
async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.extensions().get::<KratosSession>() {
        Some(session) => format!(
            "hello identity {} (session {})\n",
            session.identity_id().unwrap_or("?"),
            session.id
        ),
        // Unreachable in required mode: the layer answers requests without a session itself.
        None => "no session\n".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (kratos_url, stand_in) = match env::var("KRATOS_PUBLIC_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let stand_in = KratosStandIn::start().await?;
            (stand_in.public_url(), Some(stand_in))
        }
    };
    let service = ServiceBuilder::new()
        .layer(KratosLayer::builder(&kratos_url).build()?)
        .service_fn(hello);

    let bind: SocketAddr = env::var("BIND_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3001".to_owned())
        .parse()?;
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    if let Some(stand_in) = &stand_in {
        let demo = stand_in.create_session();
        println!(
            "try: curl -H 'X-Session-Token: {}' http://{addr}/",
            demo.token
        );
    }
    println!("listening on http://{addr}");
    // hyper's HTTP/1.1 server with a header-read timeout, so a client trickling its headers
    // cannot hold a connection forever; `TowerToHyperService` adapts the tower service.
    serve(listener, service).await?;
    Ok(())
}
