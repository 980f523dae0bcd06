//! gRPC: the layer in front of real tonic servers, called by real tonic clients over HTTP/2 on
//! loopback, against the stand-in. Every refusal is gRPC's own trailers-only answer (checked
//! with tonic, and at the HTTP level with a plain HTTP/2 client), credentials come from the call's
//! metadata, concurrent calls of one session over one connection make one whoami, and streamed
//! bodies pass through.

use test_support as support;

use std::{net::SocketAddr, time::Duration};

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use kratos_stand_in::{Endpoint, Fault, KratosStandIn, TestSession};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Server},
    Code, Response, Status,
};
use tower::Layer;
use tower_kratos::{
    rejection::{REDIRECT_BROWSER_TO, RETRY_AFTER, RETRY_PUSHBACK_MS},
    tonic::KratosRequestExt,
    KratosLayer, Outcome,
};

#[path = "grpc/tower_kratos.test.v1.rs"]
#[allow(clippy::all, missing_debug_implementations)]
mod countdown;
use test_support::demo;

use countdown::{
    countdown_client::CountdownClient,
    countdown_server::{Countdown, CountdownServer},
    CountReply, CountRequest,
};
use demo::{
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
    identity_client::IdentityClient,
    identity_server::{Identity, IdentityServer},
    HelloRequest, HelloResponse, WatchRequest, WatchResponse, WhoAmIRequest, WhoAmIResponse,
};

struct IdentityService;

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn who_am_i(
        &self,
        request: tonic::Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let session = request.kratos_session()?;
        let identity = request.kratos_identity()?;
        Ok(Response::new(WhoAmIResponse {
            session_id: session.id.clone(),
            identity_id: identity.id.clone(),
            aal: String::new(),
        }))
    }

    type WatchStream = tokio_stream::Empty<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        _request: tonic::Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("streams are Countdown's here"))
    }
}

struct GreeterService;

#[tonic::async_trait]
impl Greeter for GreeterService {
    async fn hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        // Under the optional layer: the session when there is one. Without any layer: the
        // required form names the missing layer.
        if request.extensions().get::<Outcome>().is_none()
            && request.optional_kratos_session().is_none()
        {
            return Err(request.kratos_session().expect_err("no layer ran"));
        }
        let identity = request.optional_kratos_identity();
        Ok(Response::new(HelloResponse {
            authenticated: identity.is_some(),
            identity_id: identity
                .map(|identity| identity.id.clone())
                .unwrap_or_default(),
        }))
    }
}

struct CountdownService;

#[tonic::async_trait]
impl Countdown for CountdownService {
    type CountStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<CountReply, Status>> + Send>>;

    async fn count(
        &self,
        request: tonic::Request<CountRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        let identity_id = request.kratos_identity()?.id.clone();
        let from = request.get_ref().from;
        let replies = (0..from).rev().map(move |value| {
            Ok(CountReply {
                value,
                identity_id: identity_id.clone(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
}

/// A server with the layer around each service: Identity and Countdown required, Greeter
/// optional. Returns its address.
async fn serve(layer: &KratosLayer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let router = Server::builder()
        .add_service(layer.required().layer(IdentityServer::new(IdentityService)))
        .add_service(layer.optional().layer(GreeterServer::new(GreeterService)))
        .add_service(
            layer
                .required()
                .layer(CountdownServer::new(CountdownService)),
        );
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connected")
}

/// A call with this metadata entry.
fn call<T>(message: T, metadata: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (name, value) in metadata {
        let value: MetadataValue<_> = value.parse().expect("ASCII metadata");
        request.metadata_mut().append(*name, value);
    }
    request
}

fn token(session: &TestSession) -> [(&'static str, &str); 1] {
    [("x-session-token", session.token.as_str())]
}

async fn who_am_i(
    addr: SocketAddr,
    metadata: &[(&'static str, &str)],
) -> Result<WhoAmIResponse, Status> {
    IdentityClient::new(channel(addr).await)
        .who_am_i(call(WhoAmIRequest {}, metadata))
        .await
        .map(Response::into_inner)
}

fn layer_for(kratos: &KratosStandIn) -> KratosLayer {
    KratosLayer::builder(kratos.public_url())
        .request_timeout(support::KRATOS_TIMEOUT)
        .build()
        .expect("layer")
}

#[tokio::test]
async fn a_session_reaches_the_handler_from_each_metadata_source() {
    let kratos = support::kratos().await;
    let addr = serve(&layer_for(&kratos)).await;
    let ada = kratos.create_session();
    let bearer = format!("Bearer {}", ada.token);
    let cookie = ada.cookie_header();
    for metadata in [
        [("x-session-token", ada.token.as_str())],
        [("authorization", bearer.as_str())],
        [("cookie", cookie.as_str())],
    ] {
        let reply = who_am_i(addr, &metadata).await.expect("a session");
        assert_eq!(reply.session_id, ada.id, "{metadata:?}");
        assert_eq!(reply.identity_id, ada.identity_id);
    }
    // Kratos got the credential as it takes it, and only it.
    let received = kratos.requests(Endpoint::Whoami);
    assert_eq!(
        received.len(),
        2,
        "the token (twice alike) and the cookie: two keys"
    );
    support::assert_kratos_got_token_only(&received[0].headers, &ada.token);
    support::assert_kratos_got_cookie_only(&received[1].headers, &cookie);
}

#[tokio::test]
async fn refusals_are_grpc_statuses_with_their_metadata() {
    let kratos = support::kratos().await;
    let addr = serve(&layer_for(&kratos)).await;

    for metadata in [
        vec![],
        vec![("x-session-token", "ory_st_unknownunknownunknown")],
        vec![("x-session-token", "two words")],
    ] {
        let status = who_am_i(addr, &metadata).await.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{metadata:?}: {status:?}"
        );
        assert!(!status.message().is_empty());
    }
    let expired = kratos
        .session()
        .expires_at(time::OffsetDateTime::now_utc() - time::Duration::minutes(1))
        .create();
    let status = who_am_i(addr, &token(&expired)).await.expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);

    let step_up = kratos.session().requires_aal2().create();
    let status = who_am_i(addr, &token(&step_up)).await.expect_err("step-up");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status
            .metadata()
            .get(REDIRECT_BROWSER_TO)
            .expect("the step-up page"),
        format!(
            "{}/self-service/login/browser?aal=aal2",
            kratos.public_url()
        )
        .as_str()
    );
    // No credential ever shows in a status.
    assert!(!status.message().contains(&step_up.token));
}

/// Every fault of the guide's fault matrix: UNAVAILABLE with the retry delay, never
/// UNAUTHENTICATED (which a client would take as "signed out").
#[tokio::test]
async fn every_kratos_fault_is_unavailable_never_unauthenticated() {
    let faults = [
        Some(Fault::Delay(support::KRATOS_TIMEOUT * 5)),
        Some(Fault::Status(http::StatusCode::INTERNAL_SERVER_ERROR)),
        Some(Fault::RateLimited {
            retry_after: Some(2),
        }),
        Some(Fault::GarbageBody),
        Some(Fault::CloseConnection),
        None, // Kratos down
    ];
    for fault in faults {
        let kratos = support::kratos().await;
        let addr = serve(&layer_for(&kratos)).await;
        let ada = kratos.create_session();
        match &fault {
            Some(fault) => kratos.set_fault(Endpoint::Whoami, fault.clone()),
            None => kratos.stop().await,
        }
        let status = who_am_i(addr, &token(&ada))
            .await
            .expect_err("Kratos cannot answer");
        assert_eq!(status.code(), Code::Unavailable, "{fault:?}: {status:?}");
        let retry_after: u64 = status
            .metadata()
            .get(RETRY_AFTER)
            .expect("retry-after")
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("seconds");
        let expected = if matches!(fault, Some(Fault::RateLimited { .. })) {
            2
        } else {
            5
        };
        assert_eq!(retry_after, expected, "{fault:?}");
        let pushback: u64 = status
            .metadata()
            .get(RETRY_PUSHBACK_MS)
            .expect("pushback")
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("milliseconds");
        assert_eq!(pushback, expected * 1000, "{fault:?}");
    }
}

/// The same refusals at the HTTP level: a trailers-only answer, HTTP 200, one header block, no
/// body, no trailers. gRPC-Web (over HTTP/1.1 here) keeps its content type.
#[tokio::test]
async fn a_refusal_is_a_trailers_only_answer_on_the_wire() {
    let kratos = support::kratos().await;
    let addr = serve(&layer_for(&kratos)).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    // An empty WhoAmIRequest in gRPC's framing: not compressed, length 0.
    let frame = bytes::Bytes::from_static(&[0, 0, 0, 0, 0]);
    let request = Request::post(format!(
        "http://{addr}/tower_kratos.demo.v1.Identity/WhoAmI"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(frame.clone()))
    .expect("a request");
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "16");
    assert!(headers.contains_key("grpc-message"));
    let body = response.into_body().collect().await.expect("the body");
    assert!(
        body.trailers().is_none(),
        "trailers-only: no trailers after the headers"
    );
    assert!(body.to_bytes().is_empty(), "no message");

    // gRPC-Web, through the same layer over HTTP/1.1.
    let web = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let greeter_less = tower_kratos::KratosLayer::builder(kratos.public_url())
        .build()
        .expect("layer");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let web_addr = listener.local_addr().expect("an address");
    let service = tower::ServiceBuilder::new().layer(greeter_less).service_fn(
        |_request: Request<hyper::body::Incoming>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("never")))
        },
    );
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("a connection");
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            )
            .await;
    });
    let request = Request::post(format!("http://{web_addr}/pkg.Service/Method"))
        .header("content-type", "application/grpc-web+proto")
        .body(Full::new(frame))
        .expect("a request");
    let response = web.request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    assert_eq!(response.headers()["grpc-status"], "16");
    assert!(response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_of_a_new_session_over_one_connection_make_one_whoami() {
    let kratos = support::kratos().await;
    // Long enough for every call to arrive while the first lookup is in flight.
    kratos.set_latency(Duration::from_millis(200));
    let addr = serve(&layer_for(&kratos)).await;
    let ada = kratos.create_session();
    let connection = channel(addr).await;
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let mut client = IdentityClient::new(connection.clone());
        let token = ada.token.clone();
        calls.spawn(async move {
            client
                .who_am_i(call(WhoAmIRequest {}, &[("x-session-token", &token)]))
                .await
                .map(Response::into_inner)
        });
    }
    while let Some(reply) = calls.join_next().await {
        assert_eq!(
            reply.expect("joined").expect("a session").session_id,
            ada.id
        );
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn a_server_streaming_call_streams_through_the_layer() {
    let kratos = support::kratos().await;
    let addr = serve(&layer_for(&kratos)).await;
    let ada = kratos.create_session();
    let mut client = CountdownClient::new(channel(addr).await);
    let mut stream = client
        .count(call(CountRequest { from: 5 }, &token(&ada)))
        .await
        .expect("a stream")
        .into_inner();
    let mut values = Vec::new();
    while let Some(reply) = stream.message().await.expect("a message") {
        assert_eq!(reply.identity_id, ada.identity_id);
        values.push(reply.value);
    }
    assert_eq!(values, [4, 3, 2, 1, 0]);
    // And a refused stream is a status before any message.
    let status = client
        .count(call(CountRequest { from: 5 }, &[]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_extension_trait_with_and_without_the_layer() {
    let kratos = support::kratos().await;
    let layer = layer_for(&kratos);
    let ada = kratos.create_session();

    // Optional: with and without a session.
    let addr = serve(&layer).await;
    let mut greeter = GreeterClient::new(channel(addr).await);
    let hello = greeter
        .hello(call(HelloRequest {}, &token(&ada)))
        .await
        .expect("hello");
    assert!(hello.get_ref().authenticated);
    assert_eq!(hello.get_ref().identity_id, ada.identity_id);
    let hello = greeter
        .hello(call(HelloRequest {}, &[]))
        .await
        .expect("hello");
    assert!(!hello.get_ref().authenticated);

    // No layer: the required form names the missing layer.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let bare = listener.local_addr().expect("an address");
    tokio::spawn(
        Server::builder()
            .add_service(GreeterServer::new(GreeterService))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let status = GreeterClient::new(channel(bare).await)
        .hello(call(HelloRequest {}, &token(&ada)))
        .await
        .expect_err("no layer");
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("KratosLayer"), "{status:?}");

    // The layer around the whole server, as `Server::builder().layer(..)`.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let whole = listener.local_addr().expect("an address");
    tokio::spawn(
        Server::builder()
            .layer(layer.required())
            .add_service(IdentityServer::new(IdentityService))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    assert_eq!(
        who_am_i(whole, &token(&ada))
            .await
            .expect("a session")
            .session_id,
        ada.id
    );
    assert_eq!(
        who_am_i(whole, &[]).await.expect_err("refused").code(),
        Code::Unauthenticated
    );
}

/// The lifecycle helpers from a gRPC handler, with the call's metadata as the caller; their
/// errors become statuses with `?`.
struct SessionsService(tower_kratos::lifecycle::SessionLifecycle);

#[tonic::async_trait]
impl demo::sessions_server::Sessions for SessionsService {
    async fn extend(
        &self,
        request: tonic::Request<demo::ExtendRequest>,
    ) -> Result<Response<demo::ExtendResponse>, Status> {
        let outcome = self
            .0
            .extend_if_expiring(request.metadata(), Duration::from_secs(3600))
            .await?;
        Ok(Response::new(demo::ExtendResponse {
            extended: outcome.extended(),
            expires_at: String::new(),
        }))
    }

    async fn revoke_other_sessions(
        &self,
        request: tonic::Request<demo::RevokeOtherSessionsRequest>,
    ) -> Result<Response<demo::RevokeOtherSessionsResponse>, Status> {
        let count = self.0.revoke_other_sessions(request.metadata()).await?;
        Ok(Response::new(demo::RevokeOtherSessionsResponse { count }))
    }
}

#[tokio::test]
async fn the_lifecycle_helpers_work_from_a_grpc_handler() {
    let kratos = support::kratos().await;
    let layer = KratosLayer::builder(kratos.public_url())
        .admin_url(kratos.admin_url())
        .build()
        .expect("layer");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(
        Server::builder()
            .add_service(
                layer
                    .required()
                    .layer(demo::sessions_server::SessionsServer::new(SessionsService(
                        layer.lifecycle(),
                    ))),
            )
            .add_service(layer.required().layer(IdentityServer::new(IdentityService)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let laptop = kratos
        .session()
        .expires_in(Duration::from_secs(600))
        .create();
    let phone = kratos.session().identity(&laptop.identity_id).create();
    let connection = channel(addr).await;
    let mut sessions = demo::sessions_client::SessionsClient::new(connection);

    let extended = sessions
        .extend(call(demo::ExtendRequest {}, &token(&laptop)))
        .await
        .expect("extended");
    assert!(extended.get_ref().extended);
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);

    assert_eq!(
        who_am_i(addr, &token(&phone))
            .await
            .expect("phone")
            .session_id,
        phone.id
    );
    let revoked = sessions
        .revoke_other_sessions(call(demo::RevokeOtherSessionsRequest {}, &token(&laptop)))
        .await
        .expect("revoked");
    assert_eq!(revoked.get_ref().count, 1);
    // Refused at once by this process, whatever the cache TTL.
    assert_eq!(
        who_am_i(addr, &token(&phone))
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );

    // A lifecycle error is a status: Kratos down is UNAVAILABLE, never UNAUTHENTICATED.
    kratos.set_fault(
        Endpoint::RevokeMyOtherSessions,
        Fault::Status(http::StatusCode::BAD_GATEWAY),
    );
    let status = sessions
        .revoke_other_sessions(call(demo::RevokeOtherSessionsRequest {}, &token(&laptop)))
        .await
        .expect_err("Kratos failed");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.metadata().get(RETRY_AFTER).expect("retry-after"),
        "5"
    );
}

/// A user's own rejection shapes what HTTP clients get; gRPC clients still get gRPC's own
/// answer (a new user's custom rejection once made a tonic client read "invalid compression
/// flag: 123 ... status: 401"), with the outcome attached for whoever is outside.
#[tokio::test]
async fn a_custom_rejection_still_answers_grpc_clients() {
    let kratos = support::kratos().await;
    let layer = KratosLayer::builder(kratos.public_url())
        .rejection_fn(|outcome, _request| {
            let body = format!(r#"{{"problem":"{}"}}"#, outcome.kind());
            let mut response = http::Response::new(bytes::Bytes::from(body));
            *response.status_mut() = outcome.status();
            response
        })
        .build()
        .expect("layer");

    // A real tonic client over HTTP/2.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let router =
        Server::builder().add_service(layer.required().layer(IdentityServer::new(IdentityService)));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    let status = who_am_i(addr, &[]).await.expect_err("no session");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let session = kratos.create_session();
    let reply = who_am_i(addr, &token(&session)).await.expect("a session");
    assert_eq!(reply.session_id, session.id);

    // On the wire: the trailers-only answer, the outcome attached; HTTP clients get the user's.
    use tower::ServiceExt;
    let service = layer.layer(tower::service_fn(|_: Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let request = Request::post("/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .body(String::new())
        .expect("a request");
    let response = service.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert!(matches!(
        response.extensions().get::<Outcome>(),
        Some(Outcome::Anonymous)
    ));
    let request = Request::get("/me").body(String::new()).expect("a request");
    let response = service.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 401);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], br#"{"problem":"anonymous"}"#);
}

/// Per-service requirements: an unmet second factor or recent sign-in is PERMISSION_DENIED
/// naming it, with the Kratos flow that meets it in `kratos-redirect-browser-to`; met, the call
/// reaches the handler; past the maximum age, UNAUTHENTICATED.
#[tokio::test]
async fn unmet_requirements_are_permission_denied_with_the_flow() {
    use tower_kratos::require::Requirement;

    let kratos = support::kratos().await;
    let layer = layer_for(&kratos);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let recent = Requirement::new()
        .second_factor()
        .signed_in_within(Duration::from_secs(300))
        .max_session_age(Duration::from_secs(24 * 3600));
    let router = Server::builder().add_service(
        layer.required().layer(
            layer
                .require(recent)
                .layer(IdentityServer::new(IdentityService)),
        ),
    );
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    let ago = |seconds: i64| time::OffsetDateTime::now_utc() - time::Duration::seconds(seconds);

    let aal1 = kratos.create_session();
    let status = who_am_i(addr, &token(&aal1)).await.expect_err("aal1");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("a second factor"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(REDIRECT_BROWSER_TO)
            .expect("the flow"),
        format!("{}?aal=aal2", kratos.login_url()).as_str()
    );

    let stale = kratos.session().aal2().issued_at(ago(3600)).create();
    let status = who_am_i(addr, &token(&stale)).await.expect_err("stale");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(REDIRECT_BROWSER_TO)
            .expect("the flow"),
        format!("{}?refresh=true", kratos.login_url()).as_str()
    );

    let old = kratos
        .session()
        .aal2()
        .issued_at(ago(2 * 24 * 3600))
        .authenticated_at(ago(10))
        .create();
    let status = who_am_i(addr, &token(&old)).await.expect_err("old");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let ready = kratos.session().aal2().create();
    let reply = who_am_i(addr, &token(&ready)).await.expect("met");
    assert_eq!(reply.session_id, ready.id);
}

/// The tokenized session in a tonic handler, verified by `JwtLayer` with no Kratos call.
struct TokenizedIdentity;

#[tonic::async_trait]
impl Identity for TokenizedIdentity {
    async fn who_am_i(
        &self,
        request: tonic::Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let session = request.tokenized_session()?;
        Ok(Response::new(WhoAmIResponse {
            session_id: session.session_id().to_owned(),
            identity_id: session.subject().to_owned(),
            aal: session.claim::<String>("aal").unwrap_or_default(),
        }))
    }

    type WatchStream = tokio_stream::Empty<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        _request: tonic::Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not served here"))
    }
}

#[tokio::test]
async fn a_tokenized_session_is_answered_in_grpcs_terms() {
    use kratos_stand_in::{SigningAlg, TokenizerTemplate};
    use tower_kratos::jwt::JwtLayer;
    let kratos = KratosStandIn::builder()
        .tokenizer(
            "internal",
            TokenizerTemplate::new(SigningAlg::Es512).claim("aal", "aal1".into()),
        )
        .start()
        .await
        .expect("stand-in");
    let edge = KratosLayer::builder(kratos.public_url())
        .tokenize_as("internal")
        .build()
        .expect("edge");
    let ada = kratos.create_session();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-session-token", ada.token.parse().unwrap());
    // The edge's JWT for ada, as a handler there would forward it.
    let served = edge.layer(tower::service_fn(|request: Request<String>| async move {
        let jwt = request
            .extensions()
            .get::<tower_kratos::KratosSession>()
            .and_then(|session| session.tokenized().map(str::to_owned));
        Ok::<_, std::convert::Infallible>(http::Response::new(jwt.unwrap_or_default()))
    }));
    let response = tower::ServiceExt::oneshot(
        served,
        Request::builder()
            .header("x-session-token", &ada.token)
            .body(String::new())
            .unwrap(),
    )
    .await
    .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let jwt = String::from_utf8(body.to_vec()).unwrap();
    assert!(!jwt.is_empty());

    let serve_with = |layer: JwtLayer| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let router =
            Server::builder().add_service(layer.layer(IdentityServer::new(TokenizedIdentity)));
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        addr
    };
    let addr = serve_with(
        JwtLayer::builder(kratos.public_url())
            .jwks(kratos.jwks("internal").unwrap().to_string())
            .build()
            .unwrap(),
    )
    .await;
    let calls = kratos.calls(Endpoint::Whoami);
    let bearer = format!("Bearer {jwt}");
    let me = who_am_i(addr, &[("authorization", &bearer)])
        .await
        .expect("served");
    assert_eq!(
        (me.session_id.as_str(), me.aal.as_str()),
        (ada.id.as_str(), "aal1")
    );
    assert_eq!(me.identity_id, ada.identity_id);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        calls,
        "no Kratos call downstream"
    );
    let refused = who_am_i(addr, &[]).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = who_am_i(addr, &[("authorization", "Bearer a.b.c")])
        .await
        .expect_err("bad");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // No keys to be had: UNAVAILABLE, never UNAUTHENTICATED.
    kratos.set_fault(
        Endpoint::Jwks,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let keyless = serve_with(
        JwtLayer::builder(kratos.public_url())
            .jwks_url(kratos.jwks_url("internal").unwrap())
            .build()
            .unwrap(),
    )
    .await;
    let unavailable = who_am_i(keyless, &[("authorization", &bearer)])
        .await
        .expect_err("no keys");
    assert_eq!(unavailable.code(), Code::Unavailable);
}
