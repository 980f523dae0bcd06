//! The HTTP(S) server: the accept loop, one task per connection, and the pipeline every request
//! goes through (record, latency, fault, route).

use std::convert::Infallible;
use std::future::pending;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::fault::Fault;
use super::json::KratosError;
use super::record::{Endpoint, RecordedRequest};
use super::reply::{self, Reply};
use super::routes::{self, Route};
use super::shared::Shared;

/// Request bodies above this size are answered 413 (the only bodies Kratos reads here are tiny).
const MAX_BODY: usize = 1024 * 1024;

/// Builds the TLS acceptor from PEM text, with aws-lc-rs's provider chosen explicitly, so no
/// process-wide default provider is needed or installed.
pub(crate) fn tls_acceptor(cert_chain_pem: &str, private_key_pem: &str) -> io::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let invalid = |what: &str, err: &dyn std::fmt::Debug| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("stand-in TLS: {what}: {err:?}"),
        )
    };
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate chain PEM", &e))?;
    if certs.is_empty() {
        return Err(invalid("certificate chain PEM", &"no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes())
        .map_err(|e| invalid("private key PEM", &e))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate and key", &e))?;
    // The server speaks HTTP/1.1 only; say so, so clients do not try h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until the task is aborted. The connection tasks live in a `JoinSet` owned
/// by this future, so aborting it also aborts every connection (hung requests included).
pub(crate) async fn run(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, tls.clone(), Arc::clone(&shared)));
                }
                Err(err) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%err, "Kratos stand-in: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    // Whoami answers are small; do not let Nagle add latency to them.
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_http1(stream, shared).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => serve_http1(stream, shared).await,
            Err(err) => tracing::debug!(%err, "Kratos stand-in: TLS handshake failed"),
        },
    }
}

/// Serves HTTP/1.1 (keep-alive) on one connection. `Fault::CloseConnection` fires `kill`, which
/// drops the connection mid-request: the socket closes with no response written.
async fn serve_http1<I>(io: I, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = Arc::clone(&kill);
        service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&kill), request))
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = connection => {
            if let Err(err) = result {
                tracing::debug!(%err, "Kratos stand-in: connection ended with an error");
            }
        }
        () = kill.notified() => {}
    }
}

/// One request: read the body, count and record it, add latency, apply the endpoint's fault,
/// then answer as Kratos would.
async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let (parts, body) = request.into_parts();
    let (body, body_error) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => (collected.to_bytes(), None),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            (Bytes::new(), Some(StatusCode::PAYLOAD_TOO_LARGE))
        }
        Err(_) => (Bytes::new(), Some(StatusCode::BAD_REQUEST)),
    };
    let route = Route::parse(&parts.method, parts.uri.path());
    let endpoint = route.endpoint();
    let session_id = routes::session_of(&shared, &route, &parts, &body);
    shared.journal().record(
        endpoint,
        RecordedRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            session_id,
        },
    );

    let _in_flight = InFlight::enter(&shared, endpoint);
    let (latency, fault) = {
        let knobs = shared.knobs();
        (knobs.whoami_latency, knobs.faults.get(&endpoint).cloned())
    };
    if endpoint == Endpoint::Whoami && !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => {}
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::AnswerLate(delay)) => {
            let answer = match body_error {
                Some(status) => reply::error(&KratosError::new(status), &parts),
                None => routes::respond(&shared, &route, &parts, &body),
            };
            tokio::time::sleep(delay).await;
            return Ok(answer);
        }
        Some(Fault::Status(status)) => {
            let status = if status.is_informational() {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                status
            };
            return Ok(reply::error(&KratosError::new(status), &parts));
        }
        Some(Fault::RateLimited { retry_after }) => return Ok(rate_limited(retry_after, &parts)),
        Some(Fault::Hang) => match pending::<Infallible>().await {},
        Some(Fault::GarbageBody) => {
            let body = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n".to_vec();
            return Ok(reply::json_reply(StatusCode::OK, body));
        }
        Some(Fault::CloseConnection) => {
            kill.notify_one();
            match pending::<Infallible>().await {}
        }
        Some(Fault::HeaderLimit { max, status }) => {
            let too_long = parts
                .headers
                .iter()
                .any(|(name, value)| name.as_str().len() + 2 + value.len() > max);
            if too_long {
                return Ok(reply::error(&KratosError::new(status), &parts));
            }
        }
    }

    if let Some(status) = body_error {
        return Ok(reply::error(&KratosError::new(status), &parts));
    }
    Ok(routes::respond(&shared, &route, &parts, &body))
}

/// Counts a request as being handled until dropped: answered, or abandoned (a hung request whose
/// connection closed, a killed connection).
struct InFlight<'a> {
    shared: &'a Shared,
    endpoint: Endpoint,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, endpoint: Endpoint) -> Self {
        shared.journal().enter(endpoint);
        Self { shared, endpoint }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.journal().leave(self.endpoint);
    }
}

/// Ory Network's 429: herodot body plus the rate-limit headers.
fn rate_limited(retry_after: Option<u64>, parts: &http::request::Parts) -> Reply {
    let mut reply = reply::error(&KratosError::new(StatusCode::TOO_MANY_REQUESTS), parts);
    if let Some(seconds) = retry_after {
        reply::insert(&mut reply, "retry-after", &seconds.to_string());
    }
    reply::insert(&mut reply, "x-ratelimit-limit", "10, 10;w=1, 300;w=60");
    reply::insert(&mut reply, "x-ratelimit-remaining", "0");
    reply::insert(
        &mut reply,
        "x-ratelimit-reset",
        &retry_after.unwrap_or(1).to_string(),
    );
    reply
}
