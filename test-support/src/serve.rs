//! Serving a tower service the way a production server should; shared by the reference apps.
//!
//! `axum::serve` has no header-read timeout: a client that sends a request's headers one byte at
//! a time (slowloris) holds a socket and a task for as long as it likes. Here hyper's HTTP/1.1
//! server closes a connection whose request headers are not complete within
//! [`HEADER_READ_TIMEOUT`].

use std::{convert::Infallible, error::Error, io, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::Service;

/// How long a client has to send a request's headers, on a new connection and between requests
/// on a kept-alive one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` and serves `service` on each, until the listener fails.
pub async fn serve<S, B>(listener: TcpListener, service: S) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let mut server = http1::Builder::new();
    // The header-read timeout needs a timer; without one hyper never times the headers out.
    server
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, say: wait instead of spinning or giving up.
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let _ = stream.set_nodelay(true);
        // With upgrades: a WebSocket handshake hands the connection over to the socket.
        let connection = server
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            )
            .with_upgrades();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

fn is_transient(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied
    )
}
