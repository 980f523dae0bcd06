//! The cross-origin rule for cookie sessions: a request the session cookie authenticates, that
//! could change state, from another origin than the app's or a trusted one, is refused (403
//! `cross_origin_request`) before Kratos is asked, in optional mode too. Each case drives the layer
//! with the headers a browser sends, against a real stand-in, and checks both the answer and
//! what Kratos saw.

use test_support as support;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use support::{builder, kratos, send, Answer, Recorder};
use tokio::net::TcpListener;
use tower::{Layer, ServiceBuilder};
use tower_kratos::{KratosLayer, Mode, Outcome};

/// The app's host, as browsers send it in `Host`.
const HOST: &str = "app.test:8080";
/// The app's own origin.
const SAME_ORIGIN: &str = "http://app.test:8080";
/// A sibling: same site, another origin (the cookie's `SameSite=Lax` lets it through).
const SIBLING: &str = "http://blog.app.test:8080";

/// A request with this method, the session cookie, the app's `Host`, and these headers.
fn with_cookie(method: Method, session: &TestSession, headers: &[(&str, &str)]) -> Request<String> {
    let mut request = Request::builder()
        .method(method)
        .uri("/orders")
        .header(header::HOST, HOST)
        .header(header::COOKIE, session.cookie_header());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(String::new()).expect("request")
}

fn post(session: &TestSession, headers: &[(&str, &str)]) -> Request<String> {
    with_cookie(Method::POST, session, headers)
}

/// The layer's refusal: 403, Kratos-style JSON with the id `cross_origin_request`, the outcome
/// attached.
#[track_caller]
fn assert_refused(answer: &Answer, case: &str) {
    let body = answer.assert_json_error(StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["id"], "cross_origin_request",
        "{case}: {body}"
    );
    assert!(
        body["error"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("another origin")),
        "{case}: {body}"
    );
    assert!(body.get("redirect_browser_to").is_none(), "{case}: {body}");
    assert!(
        matches!(answer.outcome(), Outcome::CrossOriginRequest),
        "{case}: {:?}",
        answer.outcome()
    );
}

/// The inner service's 200, for the session.
#[track_caller]
fn assert_passed(answer: &Answer, case: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{case}: {}", answer.text());
    assert_eq!(answer.text(), "inner", "{case}");
}

/// A stand-in, one session, and the required layer in front of a recorder.
struct Site {
    kratos: KratosStandIn,
    session: TestSession,
    recorder: Recorder,
}

impl Site {
    async fn start() -> Self {
        let kratos = kratos().await;
        let session = kratos.create_session();
        Self {
            kratos,
            session,
            recorder: Recorder::new(),
        }
    }

    fn whoami_calls(&self) -> usize {
        self.kratos.calls(Endpoint::Whoami)
    }

    /// Sends each request through `layer` and checks that every one is refused, that none
    /// reached the handler and that Kratos was not asked.
    async fn assert_all_refused(&self, layer: &KratosLayer, cases: Vec<(&str, Request<String>)>) {
        let service = layer.clone().layer(self.recorder.service());
        let (calls, seen) = (self.whoami_calls(), self.recorder.seen().len());
        for (case, request) in cases {
            assert_refused(&send(&service, request).await, case);
        }
        assert_eq!(self.whoami_calls(), calls, "a refusal asked Kratos");
        assert_eq!(
            self.recorder.seen().len(),
            seen,
            "a refusal reached the handler"
        );
    }

    /// Sends each request through `layer` and checks that every one reached the handler with
    /// the session.
    async fn assert_all_passed(&self, layer: &KratosLayer, cases: Vec<(&str, Request<String>)>) {
        let service = layer.clone().layer(self.recorder.service());
        for (case, request) in cases {
            let before = self.recorder.seen().len();
            assert_passed(&send(&service, request).await, case);
            let seen = self.recorder.seen();
            assert_eq!(seen.len(), before + 1, "{case}");
            let session = seen[before].session.as_ref();
            assert_eq!(
                session.map(|s| s.id.as_str()),
                Some(self.session.id.as_str()),
                "{case}"
            );
        }
    }
}

#[tokio::test]
async fn sec_fetch_site_same_origin_and_none_pass_every_other_value_is_refused() {
    let site = Site::start().await;
    let layer = builder(&site.kratos).build().expect("layer");
    let s = &site.session;

    site.assert_all_refused(
        &layer,
        vec![
            ("same-site", post(s, &[("sec-fetch-site", "same-site")])),
            ("cross-site", post(s, &[("sec-fetch-site", "cross-site")])),
            (
                "cross-site with the app's Origin",
                post(
                    s,
                    &[("sec-fetch-site", "cross-site"), ("origin", SAME_ORIGIN)],
                ),
            ),
            ("an unknown value", post(s, &[("sec-fetch-site", "nearby")])),
        ],
    )
    .await;
    assert_eq!(site.whoami_calls(), 0, "Kratos was never asked");

    site.assert_all_passed(
        &layer,
        vec![
            (
                "same-origin",
                post(
                    s,
                    &[("sec-fetch-site", "same-origin"), ("origin", SAME_ORIGIN)],
                ),
            ),
            // The user's own navigation (a bookmark, the address bar).
            ("none", post(s, &[("sec-fetch-site", "none")])),
            // Sec-Fetch-Site decides first: a foreign Origin does not overrule it.
            (
                "same-origin, foreign Origin",
                post(s, &[("sec-fetch-site", "same-origin"), ("origin", SIBLING)]),
            ),
        ],
    )
    .await;
    assert_eq!(site.whoami_calls(), 1, "one whoami, then the cache");
}

#[tokio::test]
async fn without_sec_fetch_site_the_origin_must_be_the_requests_host() {
    let site = Site::start().await;
    let layer = builder(&site.kratos).build().expect("layer");
    let s = &site.session;
    let put = |origin| with_cookie(Method::PUT, s, &[("origin", origin)]);
    let delete = |origin| with_cookie(Method::DELETE, s, &[("origin", origin)]);

    site.assert_all_refused(
        &layer,
        vec![
            ("a sibling origin", post(s, &[("origin", SIBLING)])),
            ("another site", put("https://evil.test")),
            (
                "another port",
                post(s, &[("origin", "http://app.test:9090")]),
            ),
            (
                "a suffix of the host",
                delete("http://app.test.evil.test:8080"),
            ),
            // Sandboxed iframes, data: URLs, some redirects.
            ("null", post(s, &[("origin", "null")])),
            ("not an origin", post(s, &[("origin", "app.test:8080")])),
            ("a path", post(s, &[("origin", "http://app.test:8080/")])),
            (
                "user info",
                post(s, &[("origin", "http://x@app.test:8080")]),
            ),
            ("empty", post(s, &[("origin", "")])),
        ],
    )
    .await;
    assert_eq!(site.whoami_calls(), 0);

    site.assert_all_passed(
        &layer,
        vec![
            ("the app's origin", post(s, &[("origin", SAME_ORIGIN)])),
            ("in capitals", put("HTTP://APP.TEST:8080")),
            // Neither header: curl, a server, a test; not a browser.
            ("neither header", delete_without_origin(s)),
        ],
    )
    .await;
}

fn delete_without_origin(session: &TestSession) -> Request<String> {
    with_cookie(Method::DELETE, session, &[])
}

#[tokio::test]
async fn get_head_and_options_are_not_checked() {
    let site = Site::start().await;
    let layer = builder(&site.kratos).build().expect("layer");
    let s = &site.session;
    let hostile = [("sec-fetch-site", "cross-site"), ("origin", "null")];

    site.assert_all_passed(
        &layer,
        vec![
            ("GET", with_cookie(Method::GET, s, &hostile)),
            ("HEAD", with_cookie(Method::HEAD, s, &hostile)),
            ("OPTIONS", with_cookie(Method::OPTIONS, s, &hostile)),
        ],
    )
    .await;
    site.assert_all_refused(
        &layer,
        vec![
            ("PATCH", with_cookie(Method::PATCH, s, &hostile)),
            ("TRACE", with_cookie(Method::TRACE, s, &hostile)),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_websocket_upgrade_from_another_origin_is_refused_though_it_is_a_get() {
    let site = Site::start().await;
    let layer = builder(&site.kratos).build().expect("layer");
    let s = &site.session;
    let upgrade = |extra: &[(&'static str, &'static str)]| {
        let mut headers = vec![
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        headers.extend_from_slice(extra);
        with_cookie(Method::GET, s, &headers)
    };

    site.assert_all_refused(
        &layer,
        vec![
            (
                "a foreign Origin",
                upgrade(&[("origin", "https://evil.test")]),
            ),
            ("a sibling Origin", upgrade(&[("origin", SIBLING)])),
            ("Origin null", upgrade(&[("origin", "null")])),
            (
                "Sec-Fetch-Site same-site",
                upgrade(&[("sec-fetch-site", "same-site"), ("origin", SIBLING)]),
            ),
        ],
    )
    .await;
    assert_eq!(site.whoami_calls(), 0);

    site.assert_all_passed(
        &layer,
        vec![
            ("the app's Origin", upgrade(&[("origin", SAME_ORIGIN)])),
            (
                "Sec-Fetch-Site same-origin",
                upgrade(&[("sec-fetch-site", "same-origin"), ("origin", SAME_ORIGIN)]),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn token_and_bearer_requests_are_not_checked_the_cookie_decides() {
    let site = Site::start().await;
    let layer = builder(&site.kratos).build().expect("layer");
    let s = &site.session;
    let foreign = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.test"),
    ];
    let token_post = |credential: (&'static str, String)| {
        let mut request = Request::post("/orders")
            .header(header::HOST, HOST)
            .header(credential.0, credential.1);
        for (name, value) in foreign {
            request = request.header(name, value);
        }
        request.body(String::new()).expect("request")
    };

    site.assert_all_passed(
        &layer,
        vec![
            (
                "X-Session-Token",
                token_post(("x-session-token", s.token.clone())),
            ),
            (
                "Bearer",
                token_post(("authorization", format!("Bearer {}", s.token))),
            ),
            // A token and the cookie: the token is the credential (Kratos's precedence).
            ("X-Session-Token and the cookie", {
                let mut request = post(s, &foreign);
                request
                    .headers_mut()
                    .insert("x-session-token", s.token.parse().expect("header"));
                request
            }),
        ],
    )
    .await;
    // The cookie comes before Bearer: it is the credential, so the request is checked.
    site.assert_all_refused(
        &layer,
        vec![("the cookie and a Bearer", {
            let mut request = post(s, &foreign);
            let bearer = format!("Bearer {}", s.token);
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, bearer.parse().expect("header"));
            request
        })],
    )
    .await;
}

#[tokio::test]
async fn a_trusted_origin_passes_and_only_it() {
    let site = Site::start().await;
    let s = &site.session;
    let layer = builder(&site.kratos)
        .trusted_origin("http://spa.app.test:3000")
        // Written as people do; compared as browsers write it.
        .trusted_origins(["HTTPS://Admin.App.Test:443"])
        .build()
        .expect("layer");

    site.assert_all_passed(
        &layer,
        vec![
            (
                "the SPA, same-site",
                post(
                    s,
                    &[
                        ("sec-fetch-site", "same-site"),
                        ("origin", "http://spa.app.test:3000"),
                    ],
                ),
            ),
            (
                "the SPA, no Sec-Fetch-Site",
                post(s, &[("origin", "http://spa.app.test:3000")]),
            ),
            (
                "the admin, cross-site",
                post(
                    s,
                    &[
                        ("sec-fetch-site", "cross-site"),
                        ("origin", "https://admin.app.test"),
                    ],
                ),
            ),
        ],
    )
    .await;
    site.assert_all_refused(
        &layer,
        vec![
            (
                "another port",
                post(
                    s,
                    &[
                        ("sec-fetch-site", "same-site"),
                        ("origin", "http://spa.app.test:3001"),
                    ],
                ),
            ),
            (
                "another scheme",
                post(
                    s,
                    &[
                        ("sec-fetch-site", "same-site"),
                        ("origin", "https://spa.app.test:3000"),
                    ],
                ),
            ),
            ("no Origin", post(s, &[("sec-fetch-site", "same-site")])),
            ("a sibling", post(s, &[("origin", SIBLING)])),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_trusted_origins_are_build_errors_naming_the_setting() {
    let kratos = kratos().await;
    for bad in [
        "https://app.example.com/",
        "https://app.example.com/spa",
        "https://app.example.com?x=1",
        "https://app.example.com#x",
        "https://*.example.com",
        "app.example.com",
        "null",
        "",
    ] {
        let error = builder(&kratos).trusted_origin(bad).build().expect_err(bad);
        assert_eq!(error.setting_name(), "trusted_origin", "{bad:?}: {error}");
        let error = builder(&kratos)
            .trusted_origins(["https://fine.example.com", bad])
            .build()
            .expect_err(bad);
        assert_eq!(error.setting_name(), "trusted_origins", "{bad:?}: {error}");
        assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
    }
}

#[tokio::test]
async fn turned_off_every_cookie_request_goes_on() {
    let site = Site::start().await;
    let layer = builder(&site.kratos)
        .cross_origin_protection(false)
        .build()
        .expect("layer");
    let s = &site.session;
    site.assert_all_passed(
        &layer,
        vec![
            ("cross-site", post(s, &[("sec-fetch-site", "cross-site")])),
            ("Origin null", post(s, &[("origin", "null")])),
        ],
    )
    .await;
}

#[tokio::test]
async fn optional_mode_refuses_it_too() {
    let site = Site::start().await;
    let layer = builder(&site.kratos)
        .mode(Mode::Optional)
        .build()
        .expect("layer");
    let s = &site.session;
    site.assert_all_refused(
        &layer,
        vec![("cross-site", post(s, &[("sec-fetch-site", "cross-site")]))],
    )
    .await;
    let optional = builder(&site.kratos).build().expect("layer").optional();
    site.assert_all_refused(
        &optional,
        vec![("Origin null", post(s, &[("origin", "null")]))],
    )
    .await;

    // Without a cookie there is nothing to forge: an anonymous visitor goes on.
    let service = optional.layer(site.recorder.service());
    let anonymous = Request::post("/orders")
        .header(header::HOST, HOST)
        .header("sec-fetch-site", "cross-site")
        .body(String::new())
        .expect("request");
    assert_passed(&send(&service, anonymous).await, "anonymous");
    let seen = site.recorder.only();
    assert!(matches!(seen.outcome, Some(Outcome::Anonymous)), "{seen:?}");
    assert_eq!(site.whoami_calls(), 0);
}

#[tokio::test]
async fn the_refusal_goes_through_a_custom_rejection_and_is_never_a_redirect() {
    let site = Site::start().await;
    let s = &site.session;
    let layer = builder(&site.kratos)
        .login_url("https://auth.test/login")
        .rejection_fn(|outcome, _request| {
            let mut response = Response::new(Bytes::from(format!("no: {}", outcome.kind())));
            *response.status_mut() = outcome.status();
            response
        })
        .build()
        .expect("layer");
    let service = layer.layer(site.recorder.service());

    let api = send(&service, post(s, &[("sec-fetch-site", "same-site")])).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.text(), "no: cross_origin_request");
    assert!(matches!(api.outcome(), Outcome::CrossOriginRequest));

    // A forged form post is no navigation of the user's: no trip to the login page.
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let form = send(
        &service,
        post(s, &[("sec-fetch-site", "cross-site"), ("accept", html)]),
    )
    .await;
    assert_eq!(form.status, StatusCode::FORBIDDEN);
    assert!(form.header(header::LOCATION).is_none());
    assert_eq!(form.text(), "no: cross_origin_request");

    // gRPC-Web from another origin: gRPC's PERMISSION_DENIED.
    let grpc_web = send(
        &service,
        post(
            s,
            &[
                ("sec-fetch-site", "cross-site"),
                ("content-type", "application/grpc-web+proto"),
            ],
        ),
    )
    .await;
    assert_eq!(grpc_web.status, StatusCode::OK);
    assert_eq!(grpc_web.header("grpc-status"), Some("7"));

    assert!(site.recorder.seen().is_empty());
    assert_eq!(site.whoami_calls(), 0);
}

#[tokio::test]
async fn refusals_cost_kratos_nothing_whatever_the_cookie() {
    let site = Site::start().await;
    let layer = builder(&site.kratos).build().expect("layer");
    let s = &site.session;
    // The session is cached by one same-origin request.
    site.assert_all_passed(
        &layer,
        vec![("warm", post(s, &[("sec-fetch-site", "same-origin")]))],
    )
    .await;
    assert_eq!(site.whoami_calls(), 1);

    let mut forged = Vec::new();
    for n in 0..50 {
        let made_up = TestSession {
            cookie_value: format!("made-up-{n}"),
            ..s.clone()
        };
        forged.push(("cached", post(s, &[("sec-fetch-site", "cross-site")])));
        forged.push((
            "made up",
            post(&made_up, &[("sec-fetch-site", "cross-site")]),
        ));
    }
    site.assert_all_refused(&layer, forged).await;
    assert_eq!(site.whoami_calls(), 1, "100 refusals, no whoami");
    assert_eq!(site.kratos.calls_for_session(Endpoint::Whoami, &s.id), 1);
}

/// The handler of the HTTP/2 server: 200 with the session id, when there is one.
async fn session_id(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<String>, Infallible> {
    let id = request
        .extensions()
        .get::<tower_kratos::KratosSession>()
        .map(|session| session.id.clone())
        .unwrap_or_default();
    Ok(Response::new(id))
}

/// Serves `layer` + [`session_id`] over HTTP/2 without TLS (prior knowledge) on loopback.
async fn serve_h2(layer: KratosLayer) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let service = ServiceBuilder::new().layer(layer).service_fn(session_id);
    tokio::spawn(async move {
        while let Ok((stream, _peer)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn over_http2_the_authority_is_the_host() {
    let site = Site::start().await;
    let layer = builder(&site.kratos).build().expect("layer");
    let addr = serve_h2(layer).await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);

    let mut post_from = async |origin: &str| {
        // `:authority` from the URI, and no Host header: as browsers speak HTTP/2.
        let request = Request::post(format!("http://{addr}/orders"))
            .header(header::COOKIE, site.session.cookie_header())
            .header(header::ORIGIN, origin)
            .body(Empty::<Bytes>::new())
            .expect("request");
        assert!(request.headers().get(header::HOST).is_none());
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };

    let (status, body) = post_from(&format!("http://{addr}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, site.session.id);
    let other_port = format!("http://127.0.0.1:{}", addr.port().wrapping_add(1).max(1));
    let (status, body) = post_from(&other_port).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("cross_origin_request"), "{body}");
    assert_eq!(site.whoami_calls(), 1);
}
