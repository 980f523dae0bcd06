//! Connections that end with their session, over real clients on loopback against the
//! stand-in: server-sent events read by a streaming HTTP client, a WebSocket client, a handler
//! waiting on `SessionEnd`, a tonic server stream; revoked through every lifecycle helper, the
//! bulk API, the hook and another replica, expired, and extended.

use test_support as support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    extract::ws::Message,
    response::{
        sse::{Event, Sse},
        Response,
    },
    routing::get,
    Router,
};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use support::{redis_server::RedisServer, replicas::shared_builder};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use tower::ServiceExt;
use tower_kratos::{
    authenticate::KratosLayerBuilder,
    lifecycle::{BulkAction, BulkTarget},
    live::{SessionEnd, WebSocket, WebSocketUpgrade},
    KratosLayer, KratosSession,
};

/// The issue's bound: every connection of a revoked session ends within this.
const DEADLINE: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(50);
const HOOK_KEY: &str = "the hook key: at least thirty-two bytes long";

async fn events(
    _session: KratosSession,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let ticks = futures_util::stream::unfold(0u64, |tick| async move {
        tokio::time::sleep(TICK).await;
        Some((
            Ok(Event::default().event("tick").data(tick.to_string())),
            tick + 1,
        ))
    });
    Sse::new(ticks)
}

async fn socket(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        let mut ticks = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if socket.send(Message::Text(text)).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
                _ = ticks.tick() => {
                    if socket.send(Message::Text("tick".into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// Long work that stops with the session.
async fn work(end: SessionEnd) -> String {
    tokio::select! {
        ended = end => ended.reason().to_owned(),
        () = tokio::time::sleep(Duration::from_secs(30)) => "done".to_owned(),
    }
}

/// The app on a real port.
async fn serve(layer: KratosLayer) -> SocketAddr {
    let app = Router::new()
        .route("/events", get(events))
        .route("/ws", get(socket))
        .route("/work", get(work))
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(support::serve::serve(listener, app.into_service()));
    addr
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get_with(addr: SocketAddr, path: &str, session: &TestSession) -> http::Response<Incoming> {
    let request = Request::get(format!("http://{addr}{path}"))
        .header("x-session-token", &session.token)
        .body(Empty::new())
        .expect("a request");
    client().request(request).await.expect("an answer")
}

/// An open event stream, read frame by frame.
struct EventStream(Incoming);

impl EventStream {
    async fn open(addr: SocketAddr, session: &TestSession) -> Self {
        let response = get_with(addr, "/events", session).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = Self(response.into_body());
        assert!(stream
            .next()
            .await
            .is_some_and(|text| text.contains("event: tick")));
        stream
    }

    async fn next(&mut self) -> Option<String> {
        let frame = tokio::time::timeout(Duration::from_secs(5), self.0.frame())
            .await
            .expect("a frame or the end within 5 s")?;
        let frame = frame.expect("no transport error");
        Some(String::from_utf8_lossy(frame.data_ref().map_or(&[][..], |data| data)).into_owned())
    }

    /// Reads until the stream ends; how long that took from `since`.
    async fn ended_after(&mut self, since: Instant) -> Duration {
        while self.next().await.is_some() {}
        since.elapsed()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_socket(addr: SocketAddr, session: &TestSession) -> Socket {
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "x-session-token",
        HeaderValue::from_str(&session.token).expect("a token"),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
        .send(tungstenite::Message::text("hello"))
        .await
        .expect("sent");
    let mut echoed = false;
    while !echoed {
        match socket.next().await {
            Some(Ok(tungstenite::Message::Text(text))) => echoed = text.as_str() == "hello",
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    socket
}

/// Reads until the close frame: its code, its reason, and when it came since `since`.
async fn closed_after(socket: &mut Socket, since: Instant) -> (u16, String, Duration) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s");
        match message {
            Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
                return (
                    u16::from(frame.code),
                    frame.reason.to_string(),
                    since.elapsed(),
                )
            }
            Some(Ok(tungstenite::Message::Close(None))) | None => panic!("closed without a frame"),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("socket error: {error}"),
        }
    }
}

/// Everything one session has open: an event stream, a WebSocket, a handler's work.
struct Open {
    events: EventStream,
    socket: Socket,
    work: tokio::task::JoinHandle<String>,
}

impl Open {
    /// Opens all three, and waits until `layer` watches them (its only connections): the
    /// `/work` request reaches its handler on a task of its own.
    async fn all(addr: SocketAddr, layer: &KratosLayer, session: &TestSession) -> Self {
        let events = EventStream::open(addr, session).await;
        let socket = open_socket(addr, session).await;
        let token = session.token.clone();
        let work = tokio::spawn(async move {
            let request = Request::get(format!("http://{addr}/work"))
                .header("x-session-token", token)
                .body(Empty::new())
                .expect("a request");
            let response = client().request(request).await.expect("an answer");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes();
            String::from_utf8_lossy(&body).into_owned()
        });
        until_watched(layer, 1, 3).await;
        Self {
            events,
            socket,
            work,
        }
    }

    /// Each ended within the deadline, for `reason`.
    async fn all_ended(mut self, since: Instant, reason: &str) {
        let (code, why, socket_lag) = closed_after(&mut self.socket, since).await;
        assert_eq!((code, why.as_str()), (1008, reason));
        let events_lag = self.events.ended_after(since).await;
        let work = tokio::time::timeout(Duration::from_secs(5), self.work)
            .await
            .expect("the work ended")
            .expect("no panic");
        let work_lag = since.elapsed();
        assert_eq!(work, reason);
        println!("ended after: socket {socket_lag:?}, events {events_lag:?}, work {work_lag:?}");
        for lag in [socket_lag, events_lag, work_lag] {
            assert!(lag < DEADLINE, "ended {lag:?} after the revocation");
        }
    }

    /// Still open: ticks keep coming on the socket and the stream.
    async fn still_open(&mut self) {
        assert!(self
            .events
            .next()
            .await
            .is_some_and(|text| text.contains("tick")));
        match tokio::time::timeout(Duration::from_secs(2), self.socket.next()).await {
            Ok(Some(Ok(tungstenite::Message::Text(_)))) => {}
            other => panic!("the socket should tick, got {other:?}"),
        }
        assert!(!self.work.is_finished());
    }
}

fn with_admin(kratos: &KratosStandIn) -> KratosLayerBuilder {
    support::builder(kratos).admin_url(kratos.admin_url())
}

fn headers_of(session: &TestSession) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-session-token",
        HeaderValue::from_str(&session.token).expect("a token"),
    );
    headers
}

/// Waits until the layer watches this many credentials and connections (the `/work` request
/// reaches its handler on a task of its own).
async fn until_watched(layer: &KratosLayer, credentials: usize, connections: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = layer.stats().await;
        if (stats.watched_credentials, stats.watched_connections) == (credentials, connections) {
            return;
        }
        assert!(Instant::now() < deadline, "watched: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_unwatched(layer: &KratosLayer) {
    until_watched(layer, 0, 0).await;
}

#[derive(Clone, Copy, Debug)]
enum Revocation {
    RevokeSession,
    RevokeOtherSessions,
    Logout,
    DisableSession,
    RevokeIdentitySessions,
    BulkDelete,
    Hook,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_way_of_revoking_ends_streams_sockets_and_waiting_work() {
    let kratos = support::kratos().await;
    let layer = with_admin(&kratos).build().expect("a layer");
    let addr = serve(layer.clone()).await;
    let lifecycle = layer.lifecycle();
    let hook = layer.revocation_hook(HOOK_KEY).expect("a long key");
    for revocation in [
        Revocation::RevokeSession,
        Revocation::RevokeOtherSessions,
        Revocation::Logout,
        Revocation::DisableSession,
        Revocation::RevokeIdentitySessions,
        Revocation::BulkDelete,
        Revocation::Hook,
    ] {
        let victim = kratos.create_session();
        let other = kratos.session().identity(&victim.identity_id).create();
        // One watch for the credential, shared by its three connections.
        let open = Open::all(addr, &layer, &victim).await;
        let since = Instant::now();
        match revocation {
            Revocation::RevokeSession => lifecycle
                .revoke_session(&headers_of(&other), &victim.id)
                .await
                .expect("revoked"),
            Revocation::RevokeOtherSessions => {
                let count = lifecycle
                    .revoke_other_sessions(&headers_of(&other))
                    .await
                    .expect("revoked");
                assert_eq!(count, 1);
            }
            Revocation::Logout => lifecycle
                .logout(&headers_of(&victim))
                .await
                .expect("signed out"),
            Revocation::DisableSession => lifecycle
                .disable_session(&victim.id)
                .await
                .expect("disabled"),
            Revocation::RevokeIdentitySessions => lifecycle
                .revoke_identity_sessions(&victim.identity_id)
                .await
                .expect("revoked"),
            Revocation::BulkDelete => {
                let ids = [victim.id.as_str()];
                let deleted = lifecycle
                    .manage_sessions(BulkAction::Delete, BulkTarget::Sessions(&ids))
                    .await
                    .expect("deleted");
                assert_eq!(deleted, 1);
            }
            Revocation::Hook => {
                // Kratos revoked the identity's sessions but `other`, then told the hook.
                kratos.revoke_session(&victim.id);
                let body = format!(
                    r#"{{"identity_id": "{}", "keep_session_id": "{}"}}"#,
                    victim.identity_id, other.id
                );
                let delivery = Request::post("/")
                    .header("content-type", "application/json")
                    .header("x-kratos-hook-key", HOOK_KEY)
                    .body(body)
                    .expect("a request");
                let answer = hook.clone().oneshot(delivery).await.expect("infallible");
                assert_eq!(answer.status(), StatusCode::NO_CONTENT);
            }
        }
        println!("{revocation:?}:");
        open.all_ended(since, "session revoked").await;
        until_unwatched(&layer).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naming_someone_elses_session_closes_nothing_of_theirs() {
    let kratos = support::kratos().await;
    let layer = support::layer(&kratos);
    let addr = serve(layer.clone()).await;
    let ada = kratos.create_session();
    let mallory = kratos.create_session();
    let mut open = Open::all(addr, &layer, &ada).await;
    let asked_before = kratos.calls_for_session(Endpoint::Whoami, &ada.id);
    // Kratos answers 204 and revokes nothing: the layer asks Kratos about Ada's session again.
    layer
        .lifecycle()
        .revoke_session(&headers_of(&mallory), &ada.id)
        .await
        .expect("Kratos says 204");
    let deadline = Instant::now() + Duration::from_secs(2);
    while kratos.calls_for_session(Endpoint::Whoami, &ada.id) == asked_before {
        assert!(
            Instant::now() < deadline,
            "Ada's session was not checked again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    open.still_open().await;
    open.still_open().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_and_the_maximum_age_end_them_and_an_extension_keeps_them_open() {
    let kratos = support::kratos().await;
    let layer = with_admin(&kratos).build().expect("a layer");
    let addr = serve(layer.clone()).await;

    let expiring = kratos
        .session()
        .expires_in(Duration::from_millis(1500))
        .create();
    let expires_at = Instant::now() + Duration::from_millis(1500);
    let open = Open::all(addr, &layer, &expiring).await;
    tokio::time::sleep_until(expires_at.into()).await;
    open.all_ended(expires_at, "session expired").await;
    until_unwatched(&layer).await;

    // Extended a second before its end: open past the old one, until the new one.
    let extended = kratos
        .session()
        .expires_in(Duration::from_millis(1500))
        .create();
    let old_end = Instant::now() + Duration::from_millis(1500);
    let mut open = Open::all(addr, &layer, &extended).await;
    let outcome = layer
        .lifecycle()
        .extend_if_expiring(&headers_of(&extended), Duration::from_secs(3600))
        .await
        .expect("extended");
    assert!(outcome.extended(), "{outcome:?}");
    let new_end = outcome.session().expires_at.expect("an expiry");
    assert!(new_end > time::OffsetDateTime::now_utc() + Duration::from_secs(60));
    tokio::time::sleep_until((old_end + Duration::from_millis(300)).into()).await;
    open.still_open().await;
    let since = Instant::now();
    layer
        .lifecycle()
        .disable_session(&extended.id)
        .await
        .expect("disabled");
    open.all_ended(since, "session revoked").await;

    // The layer's maximum age, counted from the sign-in.
    let capped = with_admin(&kratos)
        .max_session_age(Duration::from_millis(1500))
        .build()
        .expect("a layer");
    let addr = serve(capped.clone()).await;
    let young = kratos.create_session();
    let too_old_at = Instant::now() + Duration::from_millis(1500);
    let open = Open::all(addr, &capped, &young).await;
    tokio::time::sleep_until(too_old_at.into()).await;
    open.all_ended(too_old_at, "session expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_another_replica_ends_connections_here() {
    let kratos = support::kratos().await;
    let redis = RedisServer::start();
    let here = shared_builder(&kratos, &redis).build().expect("a layer");
    let there = shared_builder(&kratos, &redis).build().expect("a layer");
    support::replicas::subscribed(&here).await;
    support::replicas::subscribed(&there).await;
    let addr = serve(here.clone()).await;
    let session = kratos.create_session();
    let open = Open::all(addr, &here, &session).await;
    let since = Instant::now();
    there
        .lifecycle()
        .disable_session(&session.id)
        .await
        .expect("disabled");
    open.all_ended(since, "session revoked").await;
    until_unwatched(&here).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_responses_are_not_watched_and_closed_connections_leave() {
    let kratos = support::kratos().await;
    let layer = support::layer(&kratos);
    let addr = serve(layer.clone()).await;
    let session = kratos.create_session();
    for _ in 0..20 {
        let response = get_with(addr, "/", &session).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.expect("a body");
    }
    let stats = layer.stats().await;
    assert_eq!(
        (stats.watched_credentials, stats.watched_connections),
        (0, 0)
    );

    // Two streams of one session share one watch; closing them leaves it.
    let first = EventStream::open(addr, &session).await;
    let second = EventStream::open(addr, &session).await;
    let stats = layer.stats().await;
    assert_eq!(
        (stats.watched_credentials, stats.watched_connections),
        (1, 2)
    );
    drop(first);
    drop(second);
    until_unwatched(&layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_a_revoked_session_keeps_its_stream() {
    let kratos = support::kratos().await;
    let layer = with_admin(&kratos)
        .watch_connections(false)
        .build()
        .expect("a layer");
    let addr = serve(layer.clone()).await;
    let session = kratos.create_session();
    let mut events = EventStream::open(addr, &session).await;
    layer
        .lifecycle()
        .disable_session(&session.id)
        .await
        .expect("disabled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events
        .next()
        .await
        .is_some_and(|text| text.contains("tick")));
    // New requests are refused all the same.
    assert_eq!(
        get_with(addr, "/", &session).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[path = "grpc/tower_kratos.test.v1.rs"]
#[allow(clippy::all, missing_debug_implementations)]
mod countdown;

use countdown::{
    countdown_client::CountdownClient,
    countdown_server::{Countdown, CountdownServer},
    CountReply, CountRequest,
};

/// Counts down one value per tick: a server stream that lasts.
struct SlowCountdown;

#[tonic::async_trait]
impl Countdown for SlowCountdown {
    type CountStream = tokio_stream::wrappers::ReceiverStream<Result<CountReply, tonic::Status>>;

    async fn count(
        &self,
        request: tonic::Request<CountRequest>,
    ) -> Result<tonic::Response<Self::CountStream>, tonic::Status> {
        let from = request.get_ref().from;
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for value in (0..from).rev() {
                let reply = CountReply {
                    value,
                    identity_id: String::new(),
                };
                if sender.send(Ok(reply)).await.is_err() {
                    return;
                }
                tokio::time::sleep(TICK).await;
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_server_stream_ends_unauthenticated_with_its_session() {
    let kratos = support::kratos().await;
    let layer = with_admin(&kratos).build().expect("a layer");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let router = tonic::transport::Server::builder().add_service(tower::Layer::layer(
        &layer,
        CountdownServer::new(SlowCountdown),
    ));
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connected");
    let session = kratos.create_session();
    let mut request = tonic::Request::new(CountRequest { from: 100_000 });
    request
        .metadata_mut()
        .insert("x-session-token", session.token.parse().expect("metadata"));
    let mut stream = CountdownClient::new(channel)
        .count(request)
        .await
        .expect("the stream")
        .into_inner();
    for _ in 0..3 {
        stream
            .message()
            .await
            .expect("a message")
            .expect("not over");
    }
    let since = Instant::now();
    layer
        .lifecycle()
        .disable_session(&session.id)
        .await
        .expect("disabled");
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("within 5 s")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    let lag = since.elapsed();
    println!("gRPC stream ended after {lag:?}");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "session revoked");
    assert!(lag < DEADLINE, "{lag:?}");
    until_unwatched(&layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_no_one_reports_ends_them_within_the_cache_ttl() {
    let kratos = support::kratos().await;
    let ttl = Duration::from_millis(1500);
    let layer = support::builder(&kratos)
        .cache_ttl(ttl)
        .build()
        .expect("a layer");
    let addr = serve(layer.clone()).await;
    let session = kratos.create_session();
    let open = Open::all(addr, &layer, &session).await;
    // Revoked in Kratos alone (its console, say): no mark, no hook.
    kratos.revoke_session(&session.id);
    let since = Instant::now();
    let (code, why, lag) = {
        let mut open = open;
        let closed = closed_after(&mut open.socket, since).await;
        open.events.ended_after(since).await;
        closed
    };
    println!("ended {lag:?} after a revocation nobody reported (cache TTL {ttl:?})");
    assert_eq!((code, why.as_str()), (1008, "session revoked"));
    assert!(lag <= ttl + DEADLINE, "{lag:?}");
    // The first request's whoami, then the watch's one check for all three connections.
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 2);
    until_unwatched(&layer).await;
}
