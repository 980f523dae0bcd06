//! Finding the credential: every source Kratos accepts, Kratos's precedence between them, what
//! is refused before Kratos is asked, and exactly what the layer sends to Kratos.
//!
//! Each test drives the layer with `oneshot` against a stand-in on loopback and checks both the
//! response and the whoami requests Kratos received.

use test_support as support;

use http::{HeaderValue, Request};
use kratos_stand_in::{Endpoint, KratosStandIn};
use support::{
    app, assert_kratos_got_cookie_only, assert_kratos_got_token_only, assert_session,
    assert_unauthorized, default_app, get, send, values, whoami_headers, with_token, Answer,
};
use tower_kratos::credentials::{
    MalformedCredential, MAX_CREDENTIAL_LEN, MAX_FORWARDED_COOKIE_LEN,
};
use tower_kratos::outcome::Unauthenticated;
use tower_kratos::{KratosLayer, Outcome};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request with one raw (possibly non-UTF-8) header value.
fn get_raw(name: &str, value: &[u8]) -> Request<String> {
    let mut request = get("/", &[]);
    request.headers_mut().insert(
        http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
        HeaderValue::from_bytes(value).expect("a value HTTP allows"),
    );
    request
}

#[track_caller]
fn assert_malformed(reply: &Answer, why: MalformedCredential) {
    assert_unauthorized(reply);
    assert!(
        matches!(
            reply.outcome(),
            Outcome::Unauthenticated(Unauthenticated::Malformed(found)) if *found == why
        ),
        "expected Malformed({why:?}), got {:?}",
        reply.outcome()
    );
}

// ---------------------------------------------------------------------------------------------
// Each source on its own

#[tokio::test]
async fn session_token_header_authenticates() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = default_app(&kratos);

    let reply = send(&app, with_token("/", &alice)).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &alice.token);
}

#[tokio::test]
async fn kratos_cookie_among_other_cookies_authenticates_and_only_it_is_forwarded() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = default_app(&kratos);
    let cookies = format!(
        "theme=dark; {}; csrf_token_abc=s3cr3t; _ga=GA1.2.3",
        alice.cookie_header()
    );

    let reply = send(&app, get("/", &[("cookie", &cookies)])).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    let seen = whoami_headers(&kratos, 0);
    assert_kratos_got_cookie_only(&seen, &alice.cookie_header());
    let forwarded = values(&seen, "cookie").concat();
    for private in ["theme", "csrf_token_abc", "s3cr3t", "_ga"] {
        assert!(
            !forwarded.contains(private),
            "{private} leaked to Kratos: {forwarded}"
        );
    }
}

#[tokio::test]
async fn session_cookie_in_a_second_cookie_header_is_found() {
    // HTTP/2 clients may split cookies over several `Cookie` headers.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = default_app(&kratos);
    let mut request = get("/", &[("cookie", "theme=dark")]);
    request.headers_mut().append(
        "cookie",
        HeaderValue::from_str(&format!("lang=en; {}", alice.cookie_header())).expect("value"),
    );

    let reply = send(&app, request).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &alice.cookie_header());
}

#[tokio::test]
async fn ory_network_session_cookie_is_recognised_by_its_prefix() {
    let kratos = KratosStandIn::builder()
        .cookie_name("ory_session_slug1")
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.create_session();
    assert_eq!(alice.cookie_name, "ory_session_slug1");
    // The default layer: no cookie name configured.
    let app = default_app(&kratos);
    let cookies = format!("ory_kratos_session_not=1; {}; x=y", alice.cookie_header());

    let reply = send(&app, get("/", &[("cookie", &cookies)])).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &alice.cookie_header());
}

#[tokio::test]
async fn custom_cookie_name_on_the_layer_is_the_one_recognised() {
    let kratos = KratosStandIn::builder()
        .cookie_name("acme_auth")
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.create_session();
    let custom = app(KratosLayer::builder(kratos.public_url())
        .cookie_name("acme_auth")
        .build()
        .expect("layer"));

    let reply = send(&custom, get("/", &[("cookie", &alice.cookie_header())])).await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &alice.cookie_header());

    // The default layer does not know that name: no credential, Kratos not asked.
    let reply = send(
        &default_app(&kratos),
        get("/", &[("cookie", &alice.cookie_header())]),
    )
    .await;
    assert_unauthorized(&reply);
    assert!(matches!(reply.outcome(), Outcome::Anonymous));
    // And the custom layer no longer takes the default name.
    let reply = send(
        &custom,
        get(
            "/",
            &[(
                "cookie",
                &format!("ory_kratos_session={}", alice.cookie_value),
            )],
        ),
    )
    .await;
    assert_unauthorized(&reply);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn bearer_token_authenticates_and_is_sent_as_session_token() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let alice = kratos.create_session();
    let app = default_app(&kratos);

    let reply = send(&app, get("/", &[("authorization", &bearer(&alice.token))])).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &alice.token);

    // The scheme is case-insensitive, as in Kratos.
    kratos.reset_counters();
    let fresh = default_app(&kratos);
    let reply = send(
        &fresh,
        get(
            "/",
            &[("authorization", &format!("bEaReR {}", alice.token))],
        ),
    )
    .await;
    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &alice.token);
}

// ---------------------------------------------------------------------------------------------
// Precedence: X-Session-Token, then the session cookie, then Bearer

#[tokio::test]
async fn session_token_beats_cookie_and_bearer() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let (a, b, c) = (
        kratos.create_session(),
        kratos.create_session(),
        kratos.create_session(),
    );
    let app = default_app(&kratos);

    let reply = send(
        &app,
        get(
            "/",
            &[
                ("cookie", &b.cookie_header()),
                ("authorization", &bearer(&c.token)),
                ("x-session-token", &a.token),
            ],
        ),
    )
    .await;

    assert_session(&reply, &a.id, &a.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &a.id), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &b.id), 0);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &c.id), 0);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &a.token);
}

#[tokio::test]
async fn cookie_beats_bearer() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let (a, b) = (kratos.create_session(), kratos.create_session());
    let app = default_app(&kratos);

    let reply = send(
        &app,
        get(
            "/",
            &[
                ("authorization", &bearer(&b.token)),
                ("cookie", &format!("theme=dark; {}", a.cookie_header())),
            ],
        ),
    )
    .await;

    assert_session(&reply, &a.id, &a.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &a.id), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &b.id), 0);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &a.cookie_header());
}

#[tokio::test]
async fn an_invalid_session_token_is_not_rescued_by_a_valid_cookie() {
    // Kratos uses a non-empty X-Session-Token alone, even when it is invalid.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let a = kratos.create_session();
    let app = default_app(&kratos);

    let reply = send(
        &app,
        get(
            "/",
            &[
                ("x-session-token", "ory_st_doesnotexist"),
                ("cookie", &a.cookie_header()),
                ("authorization", &bearer(&a.token)),
            ],
        ),
    )
    .await;

    assert_unauthorized(&reply);
    assert!(matches!(
        reply.outcome(),
        Outcome::Unauthenticated(Unauthenticated::Rejected)
    ));
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &a.id), 0);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), "ory_st_doesnotexist");
}

#[tokio::test]
async fn an_empty_session_token_falls_through_to_cookie_and_bearer() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let (a, b) = (kratos.create_session(), kratos.create_session());
    let app = default_app(&kratos);

    let reply = send(
        &app,
        get(
            "/",
            &[("x-session-token", ""), ("cookie", &a.cookie_header())],
        ),
    )
    .await;
    assert_session(&reply, &a.id, &a.identity_id);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &a.cookie_header());

    let reply = send(
        &app,
        get(
            "/",
            &[
                ("x-session-token", ""),
                ("authorization", &bearer(&b.token)),
            ],
        ),
    )
    .await;
    assert_session(&reply, &b.id, &b.identity_id);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 1), &b.token);

    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &a.id), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &b.id), 1);
}

#[tokio::test]
async fn an_empty_session_token_alone_is_no_credential() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = default_app(&kratos);

    let reply = send(&app, get("/", &[("x-session-token", "")])).await;

    assert_unauthorized(&reply);
    assert!(matches!(reply.outcome(), Outcome::Anonymous));
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
}

#[tokio::test]
async fn bearer_with_two_spaces_is_not_a_credential() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let a = kratos.create_session();
    let app = default_app(&kratos);

    for header in [
        format!("Bearer  {}", a.token),
        format!("Bearer {} extra", a.token),
        format!("Basic {}", a.token),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
    ] {
        let reply = send(&app, get("/", &[("authorization", &header)])).await;
        assert_unauthorized(&reply);
        assert!(
            matches!(reply.outcome(), Outcome::Anonymous),
            "{header:?}: {:?}",
            reply.outcome()
        );
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
}

// ---------------------------------------------------------------------------------------------
// What Kratos receives

#[tokio::test]
async fn a_token_with_a_stray_unknown_session_cookie_still_succeeds() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let a = kratos.create_session();
    let stray = "ory_kratos_session=MTcwMDAwMDAwMHxzdGFsZQ==";

    // The control: Kratos itself answers 500 when it gets both (bug #2945).
    let direct = reqwest::Client::new()
        .get(format!("{}/sessions/whoami", kratos.public_url()))
        .header("x-session-token", &a.token)
        .header("cookie", stray)
        .send()
        .await
        .expect("direct whoami");
    assert_eq!(direct.status(), 500);
    kratos.reset_counters();

    let app = default_app(&kratos);
    let reply = send(
        &app,
        get("/", &[("x-session-token", &a.token), ("cookie", stray)]),
    )
    .await;

    assert_session(&reply, &a.id, &a.identity_id);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &a.token);
}

#[tokio::test]
async fn a_bearer_token_with_other_cookies_sends_no_cookie() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let a = kratos.create_session();
    let app = default_app(&kratos);

    let reply = send(
        &app,
        get(
            "/",
            &[
                ("authorization", &bearer(&a.token)),
                ("cookie", "theme=dark; csrf=abc"),
            ],
        ),
    )
    .await;

    assert_session(&reply, &a.id, &a.identity_id);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &a.token);
}

#[tokio::test]
async fn x_request_id_is_passed_on_to_kratos() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let (a, b) = (kratos.create_session(), kratos.create_session());
    let app = default_app(&kratos);

    let reply = send(
        &app,
        get(
            "/",
            &[
                ("x-session-token", &a.token),
                ("x-request-id", "req-7f3a9c"),
            ],
        ),
    )
    .await;
    assert_session(&reply, &a.id, &a.identity_id);
    let reply = send(
        &app,
        get(
            "/",
            &[
                ("cookie", &b.cookie_header()),
                ("x-request-id", "req-cookie-2"),
            ],
        ),
    )
    .await;
    assert_session(&reply, &b.id, &b.identity_id);

    assert_eq!(kratos.calls(Endpoint::Whoami), 2);
    assert_eq!(
        values(&whoami_headers(&kratos, 0), "x-request-id"),
        ["req-7f3a9c"]
    );
    assert_eq!(
        values(&whoami_headers(&kratos, 1), "x-request-id"),
        ["req-cookie-2"]
    );
}

#[tokio::test]
async fn the_trace_context_is_passed_on_to_kratos_when_well_formed() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = default_app(&kratos);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let oversized = format!("k={}", "v".repeat(600));
    let cases: [(&str, &str, Option<&str>, Option<&str>); 4] = [
        (parent, state, Some(parent), Some(state)),
        // Uppercase hex is not W3C's form: neither header goes.
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            state,
            None,
            None,
        ),
        (parent, &oversized, Some(parent), None),
        ("garbage", state, None, None),
    ];
    for (index, (sent_parent, sent_state, parent_seen, state_seen)) in cases.into_iter().enumerate()
    {
        let session = kratos.create_session();
        let reply = send(
            &app,
            get(
                "/",
                &[
                    ("x-session-token", &session.token),
                    ("traceparent", sent_parent),
                    ("tracestate", sent_state),
                ],
            ),
        )
        .await;
        // Never an error: a malformed trace header is dropped, the request served.
        assert_session(&reply, &session.id, &session.identity_id);
        let headers = whoami_headers(&kratos, index);
        let seen = |name| {
            let values = values(&headers, name);
            assert!(values.len() <= 1, "{values:?}");
            values.first().cloned()
        };
        assert_eq!(seen("traceparent").as_deref(), parent_seen, "case {index}");
        assert_eq!(seen("tracestate").as_deref(), state_seen, "case {index}");
    }
}

// ---------------------------------------------------------------------------------------------
// Refused before Kratos is asked

#[tokio::test]
async fn credentials_over_4096_bytes_are_refused_without_asking_kratos() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let a = kratos.create_session();
    let app = default_app(&kratos);
    let long = format!("ory_st_{}", "a".repeat(MAX_CREDENTIAL_LEN + 1 - 7));
    assert_eq!(long.len(), 4097);

    let reply = send(&app, get("/", &[("x-session-token", &long)])).await;
    assert_malformed(&reply, MalformedCredential::TooLong);

    let reply = send(
        &app,
        get("/", &[("cookie", &format!("ory_kratos_session={long}"))]),
    )
    .await;
    assert_malformed(&reply, MalformedCredential::TooLong);

    let reply = send(&app, get("/", &[("authorization", &bearer(&long))])).await;
    assert_malformed(&reply, MalformedCredential::TooLong);

    // A too-long token decides alone: a valid cookie next to it does not help.
    let reply = send(
        &app,
        get(
            "/",
            &[("x-session-token", &long), ("cookie", &a.cookie_header())],
        ),
    )
    .await;
    assert_malformed(&reply, MalformedCredential::TooLong);

    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
}

#[tokio::test]
async fn credentials_at_the_limits_are_sent() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = default_app(&kratos);
    let token = format!("ory_st_{}", "b".repeat(MAX_CREDENTIAL_LEN - 7));
    assert_eq!(token.len(), MAX_CREDENTIAL_LEN);
    // A cookie's name and value within the 4096 bytes a browser keeps for one cookie.
    let cookie_value = "c".repeat(MAX_FORWARDED_COOKIE_LEN - "ory_kratos_session=".len());
    let one_more = format!("ory_kratos_session={cookie_value}c");
    let reply = send(&app, get("/", &[("cookie", &one_more)])).await;
    assert_unauthorized(&reply);
    assert!(matches!(
        reply.outcome(),
        Outcome::Unauthenticated(Unauthenticated::Malformed(MalformedCredential::TooLong))
    ));

    // Unknown to Kratos, so 401 from Kratos; the point is that Kratos was asked with them whole.
    let reply = send(&app, get("/", &[("x-session-token", &token)])).await;
    assert_unauthorized(&reply);
    let reply = send(
        &app,
        get(
            "/",
            &[("cookie", &format!("ory_kratos_session={cookie_value}"))],
        ),
    )
    .await;
    assert_unauthorized(&reply);
    let bearer_token = format!("ory_st_{}", "d".repeat(MAX_CREDENTIAL_LEN - 7));
    let reply = send(&app, get("/", &[("authorization", &bearer(&bearer_token))])).await;
    assert_unauthorized(&reply);
    assert!(matches!(
        reply.outcome(),
        Outcome::Unauthenticated(Unauthenticated::Rejected)
    ));

    assert_eq!(kratos.calls(Endpoint::Whoami), 3);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &token);
    assert_kratos_got_cookie_only(
        &whoami_headers(&kratos, 1),
        &format!("ory_kratos_session={cookie_value}"),
    );
    assert_kratos_got_token_only(&whoami_headers(&kratos, 2), &bearer_token);
}

#[tokio::test]
async fn credentials_with_invalid_bytes_are_refused_without_asking_kratos() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = default_app(&kratos);

    // Bytes HTTP allows in a header value but no session token has.
    for (token, why) in [
        (
            &b"ory_st_abc def"[..],
            MalformedCredential::InvalidCharacters,
        ),
        (
            &b"ory_st_abc\tdef"[..],
            MalformedCredential::InvalidCharacters,
        ),
        (
            &b"ory_st_\xc3\xa9t\xc3\xa9"[..],
            MalformedCredential::NotText,
        ),
        (&b"ory_st_\xff\xfe"[..], MalformedCredential::NotText),
    ] {
        let reply = send(&app, get_raw("x-session-token", token)).await;
        assert_malformed(&reply, why);
    }
    // Cookie values outside RFC 6265's cookie-octet.
    for value in ["a\\b", "a\"b", "a,b", "a b"] {
        let reply = send(
            &app,
            get("/", &[("cookie", &format!("ory_kratos_session={value}"))]),
        )
        .await;
        assert_malformed(&reply, MalformedCredential::InvalidCharacters);
    }
    // Not text at all: no credential can be read from it.
    let reply = send(&app, get_raw("cookie", b"ory_kratos_session=\xff\xfe")).await;
    assert_unauthorized(&reply);
    let reply = send(&app, get_raw("authorization", b"Bearer ory_st_\xff")).await;
    assert_unauthorized(&reply);

    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
}

#[tokio::test]
async fn a_quoted_cookie_value_is_forwarded_as_sent() {
    // RFC 6265 allows one pair of double quotes; Kratos (Go's net/http) strips them.
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let a = kratos.create_session();
    let app = default_app(&kratos);
    let quoted = format!("{}=\"{}\"", a.cookie_name, a.cookie_value);

    let reply = send(&app, get("/", &[("cookie", &quoted)])).await;

    assert_session(&reply, &a.id, &a.identity_id);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &quoted);
}

#[tokio::test]
async fn another_projects_ory_session_cookie_does_not_hide_this_projects_cookie() {
    // A browser signed in to two Ory Network projects under one parent domain (say staging and
    // production) sends both `ory_session_*` cookies. Kratos picks its own by name and ignores
    // the other, so the layer must not judge the request by the other project's cookie.
    let kratos = KratosStandIn::builder()
        .cookie_name("ory_session_slug1")
        .start()
        .await
        .expect("stand-in");
    let alice = kratos.create_session();
    let app = default_app(&kratos);
    let cookies = format!(
        "ory_session_stagingslug=MTcwMDAwMDAwMHxvdGhlcg; {}",
        alice.cookie_header()
    );

    let reply = send(&app, get("/", &[("cookie", &cookies)])).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    let forwarded = values(&whoami_headers(&kratos, 0), "cookie");
    assert!(
        forwarded
            .iter()
            .any(|cookie| cookie.contains(&alice.cookie_header())),
        "Kratos did not get this project's cookie: {forwarded:?}"
    );
}
