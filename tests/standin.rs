//! The Kratos stand-in, driven over real HTTP with reqwest: every route, credential path, fault
//! and knob, checked against the behaviour in Kratos's source (see `kratos_stand_in`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kratos_stand_in::{Endpoint, ExtendResponse, Fault, KratosStandIn, TestSession};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const UNAUTHORIZED: &str = r#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#;
const AAL2_REASON: &str = "An active session was found but it does not fulfill the requested Authenticator Assurance Level. Please verify yourself with a second factor to resolve this issue.";

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `GET /sessions/whoami` with these headers.
async fn whoami(kratos: &KratosStandIn, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(format!("{}/sessions/whoami", kratos.public_url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("whoami request")
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request")
}

async fn text(response: reqwest::Response) -> String {
    response.text().await.expect("body")
}

async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("JSON body")
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header"))
}

fn bearer(session: &TestSession) -> String {
    format!("Bearer {}", session.token)
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

fn parse_time(value: &Value) -> OffsetDateTime {
    let text = value.as_str().expect("time string");
    assert!(text.ends_with('Z'), "{text} is not UTC with Z");
    OffsetDateTime::parse(text, &Rfc3339).expect("RFC 3339")
}

// ---------------------------------------------------------------------------------------------
// whoami: credentials

#[tokio::test]
async fn whoami_accepts_token_cookie_and_bearer() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    assert!(s.token.starts_with("ory_st_") && s.token.len() == 39);
    assert!(s.token[7..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_ne!(
        s.cookie_value, s.token,
        "the cookie value is opaque, not the token"
    );
    assert_eq!(
        s.cookie_header(),
        format!("ory_kratos_session={}", s.cookie_value)
    );

    for headers in [
        vec![("X-Session-Token", s.token.clone())],
        vec![("Cookie", s.cookie_header())],
        vec![("Authorization", bearer(&s))],
        vec![("Authorization", format!("bEaReR {}", s.token))],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = whoami(&kratos, &headers).await;
        assert_eq!(response.status(), 200, "{headers:?}");
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        assert_eq!(
            header(&response, "x-kratos-authenticated-identity-id"),
            Some(s.identity_id.as_str())
        );
        assert_eq!(header(&response, "ory-session-cache-for"), None);
        assert_eq!(header(&response, "set-cookie"), None);
        let body = json_body(response).await;
        assert_eq!(body["id"], s.id.as_str());
        assert_eq!(body["identity"]["id"], s.identity_id.as_str());
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 4);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &s.id), 4);
}

#[tokio::test]
async fn whoami_answers_every_method() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    let url = format!("{}/sessions/whoami", kratos.public_url());
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = send(
            client()
                .request(method.clone(), &url)
                .header("X-Session-Token", &s.token),
        )
        .await;
        assert_eq!(response.status(), 200, "{method}");
    }
    assert_eq!(kratos.calls(Endpoint::Whoami), 6);
}

#[tokio::test]
async fn credential_precedence_follows_extract_token() {
    let kratos = KratosStandIn::start().await.expect("start");
    let a = kratos.create_session();
    let b = kratos.create_session();

    // A non-empty X-Session-Token is used alone, even when invalid.
    let r = whoami(
        &kratos,
        &[
            ("X-Session-Token", "ory_st_unknown"),
            ("Cookie", &a.cookie_header()),
            ("Authorization", &bearer(&a)),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);

    // An empty X-Session-Token is no credential: the cookie is used.
    let r = whoami(
        &kratos,
        &[("X-Session-Token", ""), ("Cookie", &a.cookie_header())],
    )
    .await;
    assert_eq!(r.status(), 200);

    // A token beats a (decodable) cookie of another session.
    let r = whoami(
        &kratos,
        &[
            ("X-Session-Token", &b.token),
            ("Cookie", &a.cookie_header()),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["id"], b.id.as_str());

    // A decodable cookie beats Bearer, even an invalid Bearer.
    let r = whoami(
        &kratos,
        &[
            ("Cookie", &a.cookie_header()),
            ("Authorization", "Bearer ory_st_unknown"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["id"], a.id.as_str());
    let r = whoami(
        &kratos,
        &[
            ("Cookie", &a.cookie_header()),
            ("Authorization", &bearer(&b)),
        ],
    )
    .await;
    assert_eq!(json_body(r).await["id"], a.id.as_str());

    // A cookie value that does not decode falls through to Bearer: the call counts for b's
    // session, and Kratos then fails on the undecodable cookie (bug #2945).
    kratos.reset_counters();
    let r = whoami(
        &kratos,
        &[
            ("Cookie", "ory_kratos_session=garbage"),
            ("Authorization", &bearer(&b)),
        ],
    )
    .await;
    assert_eq!(r.status(), 500);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &b.id), 1);

    // The first cookie with the session name counts, across Cookie headers.
    let r = send(
        client()
            .get(format!("{}/sessions/whoami", kratos.public_url()))
            .header("Cookie", format!("theme=dark; {}", a.cookie_header()))
            .header("Cookie", b.cookie_header()),
    )
    .await;
    assert_eq!(json_body(r).await["id"], a.id.as_str());

    // Other cookie names are ignored; Bearer needs exactly one space and the bearer scheme.
    for headers in [
        vec![("Cookie", format!("session={}", a.cookie_value))],
        vec![("Authorization", format!("Bearer  {}", a.token))],
        vec![("Authorization", format!("Token {}", a.token))],
        vec![("Authorization", format!("Bearer {} extra", a.token))],
        vec![("X-Session-Token", a.cookie_value.clone())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = whoami(&kratos, &headers).await;
        assert_eq!(r.status(), 401, "{headers:?}");
    }
}

#[tokio::test]
async fn custom_cookie_name_like_ory_network() {
    let kratos = KratosStandIn::builder()
        .cookie_name("ory_session_playground")
        .start()
        .await
        .expect("start");
    let s = kratos.create_session();
    assert_eq!(s.cookie_name, "ory_session_playground");
    let r = whoami(&kratos, &[("Cookie", &s.cookie_header())]).await;
    assert_eq!(r.status(), 200);
    let r = whoami(
        &kratos,
        &[("Cookie", &format!("ory_kratos_session={}", s.cookie_value))],
    )
    .await;
    assert_eq!(r.status(), 401);

    let bad = KratosStandIn::builder()
        .cookie_name("bad name;")
        .start()
        .await;
    assert_eq!(
        bad.expect_err("invalid cookie name").kind(),
        std::io::ErrorKind::InvalidInput
    );
}

// ---------------------------------------------------------------------------------------------
// whoami: outcomes

#[tokio::test]
async fn unauthorized_body_is_exact_for_every_cause() {
    let kratos = KratosStandIn::start().await.expect("start");
    let revoked = kratos.create_session();
    assert!(kratos.revoke_session(&revoked.id));
    let expired = kratos
        .session()
        .expires_at(OffsetDateTime::now_utc() - Duration::from_secs(1))
        .create();
    let inactive = kratos.session().inactive().create();
    let disabled = kratos.create_session();
    assert!(kratos.set_identity_active(&disabled.identity_id, false));

    let mut cases = vec![
        ("none", vec![]),
        (
            "unknown token",
            vec![("X-Session-Token", "ory_st_nope".to_owned())],
        ),
        (
            "unknown cookie",
            vec![("Cookie", "ory_kratos_session=nope".to_owned())],
        ),
    ];
    for (name, s) in [
        ("revoked", &revoked),
        ("expired", &expired),
        ("inactive", &inactive),
        ("disabled identity", &disabled),
    ] {
        cases.push((name, vec![("X-Session-Token", s.token.clone())]));
    }
    for (name, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = whoami(&kratos, &headers).await;
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(
            header(&r, "content-type"),
            Some("application/json"),
            "{name}"
        );
        assert_eq!(
            header(&r, "x-kratos-authenticated-identity-id"),
            None,
            "{name}"
        );
        assert_eq!(text(r).await, UNAUTHORIZED, "{name}");
    }

    // The identity comes back: so does the session.
    assert!(kratos.set_identity_active(&disabled.identity_id, true));
    let r = whoami(&kratos, &[("X-Session-Token", &disabled.token)]).await;
    assert_eq!(r.status(), 200);
    assert!(!kratos.set_identity_active("6ba7b810-9dad-41d1-80b4-00c04fd430c8", false));
}

#[tokio::test]
async fn unauthorized_body_carries_the_request_id() {
    let kratos = KratosStandIn::start().await.expect("start");
    let r = whoami(&kratos, &[("X-Request-ID", "req-42")]).await;
    assert_eq!(
        text(r).await,
        r#"{"error":{"code":401,"status":"Unauthorized","request":"req-42","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#
    );
}

#[tokio::test]
async fn aal1_session_of_a_second_factor_identity_gets_the_step_up() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.session().requires_aal2().create();
    assert_eq!(s.aal, "aal1");
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "ory-error-id"), Some("session_aal2_required"));
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(header(&r, "x-kratos-authenticated-identity-id"), None);
    let login = format!(
        "{}/self-service/login/browser?aal=aal2",
        kratos.public_url()
    );
    let expected = json!({
        "error": {
            "id": "session_aal2_required",
            "code": 403,
            "status": "Forbidden",
            "reason": AAL2_REASON,
            "details": {"redirect_browser_to": login},
            "message": "Session does not fulfill the requested Authenticator Assurance Level"
        },
        "redirect_browser_to": login
    });
    let body = text(r).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        expected
    );
    // Kratos's field order.
    assert!(body.starts_with(
        r#"{"error":{"id":"session_aal2_required","code":403,"status":"Forbidden","reason":"#
    ));

    // The same identity with a completed second factor passes.
    let strong = kratos.session().identity(&s.identity_id).aal2().create();
    assert_eq!(strong.aal, "aal2");
    let r = whoami(&kratos, &[("Cookie", &strong.cookie_header())]).await;
    assert_eq!(r.status(), 200);
    let body = json_body(r).await;
    assert_eq!(body["authenticator_assurance_level"], "aal2");
    let methods: Vec<&str> = body["authentication_methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["method"].as_str().expect("method"))
        .collect();
    assert_eq!(methods, ["password", "totp"]);

    // An aal2 session makes its identity a second-factor identity: its aal1 sessions step up.
    let other = kratos.session().aal2().create();
    let weak = kratos.session().identity(&other.identity_id).create();
    let r = whoami(&kratos, &[("X-Session-Token", &weak.token)]).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn session_json_looks_like_real_kratos() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    let body = json_body(whoami(&kratos, &[("X-Session-Token", &s.token)]).await).await;

    let real = fixture("whoami-docs-example.json");
    assert_eq!(keys(&body), keys(&real));
    let migratest = fixture("session-migratest-7458af86-c1d8-401c-978a-8da89133f98b.json");
    let identity_keys = keys(&body["identity"]);
    for key in keys(&real["identity"])
        .into_iter()
        .chain(keys(&migratest["identity"]))
    {
        assert!(identity_keys.contains(&key), "identity lacks {key}");
    }
    assert!(!identity_keys.contains("metadata_admin"));
    assert!(!identity_keys.contains("credentials"));
    assert_eq!(keys(&body["devices"][0]), keys(&real["devices"][0]));
    assert_eq!(
        keys(&body["authentication_methods"][0]),
        keys(&real["authentication_methods"][0])
    );
    assert_eq!(
        keys(&body["identity"]["verifiable_addresses"][0]),
        keys(&real["identity"]["verifiable_addresses"][0])
    );
    assert_eq!(
        keys(&body["identity"]["recovery_addresses"][0]),
        keys(&real["identity"]["recovery_addresses"][0])
    );

    assert_eq!(body["active"], true);
    assert_eq!(body["authenticator_assurance_level"], "aal1");
    assert_eq!(body["authentication_methods"][0]["method"], "password");
    assert_eq!(body["authentication_methods"][0]["aal"], "aal1");
    assert_eq!(body["identity"]["state"], "active");
    assert_eq!(body["identity"]["schema_id"], "default");
    assert_eq!(body["identity"]["metadata_public"], Value::Null);
    assert_eq!(body["identity"]["organization_id"], Value::Null);
    let email = body["identity"]["traits"]["email"].as_str().expect("email");
    assert!(email.starts_with("user-") && email.ends_with("@example.org"));
    assert_eq!(body["identity"]["verifiable_addresses"][0]["value"], email);

    assert_eq!(parse_time(&body["expires_at"]), s.expires_at);
    for time in [
        &body["authenticated_at"],
        &body["issued_at"],
        &body["identity"]["created_at"],
        &body["identity"]["state_changed_at"],
        &body["authentication_methods"][0]["completed_at"],
    ] {
        parse_time(time);
    }
    let lifespan = s.expires_at - parse_time(&body["issued_at"]);
    assert_eq!(lifespan, time::Duration::hours(24));
}

#[tokio::test]
async fn custom_traits_and_shared_identities() {
    let kratos = KratosStandIn::start().await.expect("start");
    let first = kratos
        .session()
        .traits(json!({"email": "ada@example.org", "name": {"first": "Ada"}}))
        .create();
    let second = kratos.session().identity(&first.identity_id).create();
    assert_eq!(second.identity_id, first.identity_id);
    let body = json_body(whoami(&kratos, &[("X-Session-Token", &second.token)]).await).await;
    assert_eq!(body["identity"]["traits"]["name"]["first"], "Ada");
    assert_eq!(
        body["identity"]["verifiable_addresses"][0]["value"],
        "ada@example.org"
    );

    // A chosen identity id creates that identity.
    let id = "0b5b5f3c-9cd0-4d4c-9f4e-9a3b9c8e3f1a";
    let chosen = kratos.session().identity(id).create();
    assert_eq!(chosen.identity_id, id);
}

#[tokio::test]
async fn session_cache_header_emulates_cacheable_sessions() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos
        .session()
        .expires_in(Duration::from_secs(600))
        .create();

    kratos.set_session_cache_for(Some(Duration::from_secs(3600)));
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    let seconds: u64 = header(&r, "ory-session-cache-for")
        .expect("cache header")
        .parse()
        .expect("integer");
    assert!((598..=600).contains(&seconds), "{seconds}");

    kratos.set_session_cache_for(Some(Duration::from_secs(150)));
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(header(&r, "ory-session-cache-for"), Some("150"));

    // No credentials at all: cache the 401 for a minute. A bad credential: no header.
    let r = whoami(&kratos, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "ory-session-cache-for"), Some("60"));
    let r = whoami(&kratos, &[("X-Session-Token", "ory_st_nope")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "ory-session-cache-for"), None);

    kratos.set_session_cache_for(None);
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(header(&r, "ory-session-cache-for"), None);

    let cached = KratosStandIn::builder()
        .session_cache_for(Some(Duration::from_secs(30)))
        .start()
        .await
        .expect("start");
    let s = cached.create_session();
    let r = whoami(&cached, &[("Cookie", &s.cookie_header())]).await;
    assert_eq!(header(&r, "ory-session-cache-for"), Some("30"));
}

#[tokio::test]
async fn whoami_reissues_the_cookie_after_an_extend() {
    let kratos = KratosStandIn::builder()
        .lifespan(Duration::from_secs(3600))
        .start()
        .await
        .expect("start");
    let s = kratos
        .session()
        .expires_in(Duration::from_secs(60))
        .create();

    let r = whoami(&kratos, &[("Cookie", &s.cookie_header())]).await;
    assert_eq!(header(&r, "set-cookie"), None, "cookie is current");

    let r = send(client().patch(format!(
        "{}/admin/sessions/{}/extend",
        kratos.admin_url(),
        s.id
    )))
    .await;
    assert_eq!(r.status(), 200);
    let extended = kratos.session_state(&s.id).expect("session");
    assert!(extended.expires_at > s.expires_at + Duration::from_secs(3000));

    // A token never gets a cookie.
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(header(&r, "set-cookie"), None);

    let r = whoami(&kratos, &[("Cookie", &s.cookie_header())]).await;
    assert_eq!(r.status(), 200);
    let set_cookie = header(&r, "set-cookie").expect("Set-Cookie").to_owned();
    let (pair, attributes) = set_cookie.split_once("; ").expect("attributes");
    let (name, value) = pair.split_once('=').expect("name=value");
    assert_eq!(name, "ory_kratos_session");
    assert_ne!(value, s.cookie_value);
    assert!(attributes.starts_with("Path=/; Expires="), "{attributes}");
    assert!(
        attributes.ends_with("; HttpOnly; SameSite=Lax"),
        "{attributes}"
    );
    assert!(!attributes.contains("Secure"));
    let max_age: i64 = attributes
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age")
        .parse()
        .expect("integer");
    assert!((3590..=3600).contains(&max_age), "{max_age}");

    let state = kratos.session_state(&s.id).expect("session");
    assert_eq!(state.cookie_value, value);

    // The new value is current; the old value still works (and is upgraded again).
    let r = whoami(&kratos, &[("Cookie", &state.cookie_header())]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "set-cookie"), None);
    let r = whoami(&kratos, &[("Cookie", &s.cookie_header())]).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "set-cookie").is_some());

    // Moving the expiry by hand does the same.
    let later = state.expires_at + Duration::from_secs(60);
    assert!(kratos.set_expires_at(&s.id, later));
    let r = whoami(&kratos, &[("Cookie", &state.cookie_header())]).await;
    assert!(header(&r, "set-cookie").is_some());
}

#[tokio::test]
async fn token_with_a_stray_cookie_hits_bug_2945() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    let r = whoami(
        &kratos,
        &[
            ("X-Session-Token", &s.token),
            ("Cookie", "ory_kratos_session=MTcwMDAwMDAwMHxzdGFsZQ=="),
        ],
    )
    .await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(
        text(r).await,
        r#"{"error":{"code":500,"status":"Internal Server Error","message":"securecookie: the value is not valid"}}"#
    );

    // Other cookies are fine, and so is a cookie Kratos issued.
    let r = whoami(
        &kratos,
        &[("X-Session-Token", &s.token), ("Cookie", "theme=dark")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = whoami(
        &kratos,
        &[
            ("X-Session-Token", &s.token),
            ("Cookie", &s.cookie_header()),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// extend and admin routes

#[tokio::test]
async fn extend_answers_200_with_the_session_or_204() {
    let kratos = KratosStandIn::builder()
        .lifespan(Duration::from_secs(7200))
        .start()
        .await
        .expect("start");
    let s = kratos
        .session()
        .expires_in(Duration::from_secs(60))
        .create();
    let url = format!("{}/admin/sessions/{}/extend", kratos.admin_url(), s.id);

    let before = OffsetDateTime::now_utc();
    let r = send(client().patch(&url)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    let body = json_body(r).await;
    assert_eq!(body["id"], s.id.as_str());
    assert_eq!(body["active"], true);
    assert_eq!(body["identity"]["id"], s.identity_id.as_str());
    assert!(body["identity"].get("metadata_admin").is_none());
    assert_eq!(body["devices"], json!([]));
    let expires_at = parse_time(&body["expires_at"]);
    assert!(expires_at >= before + Duration::from_secs(7200));
    assert!(expires_at <= OffsetDateTime::now_utc() + Duration::from_secs(7200));
    assert_eq!(
        kratos.session_state(&s.id).expect("session").expires_at,
        expires_at
    );

    kratos.set_extend_response(ExtendResponse::NoContent);
    let r = send(client().patch(&url)).await;
    assert_eq!(r.status(), 204);
    assert_eq!(text(r).await, "");
    assert!(kratos.session_state(&s.id).expect("session").expires_at >= expires_at);

    let no_content = KratosStandIn::builder()
        .extend_response(ExtendResponse::NoContent)
        .start()
        .await
        .expect("start");
    let s = no_content.create_session();
    let r = send(client().patch(format!(
        "{}/admin/sessions/{}/extend",
        no_content.admin_url(),
        s.id
    )))
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        no_content.calls_for_session(Endpoint::ExtendSession, &s.id),
        1
    );
}

#[tokio::test]
async fn extend_too_early_changes_nothing() {
    let kratos = KratosStandIn::builder()
        .lifespan(Duration::from_secs(3600))
        .earliest_possible_extend(Duration::from_secs(600))
        .start()
        .await
        .expect("start");
    let fresh = kratos.create_session();
    let url = |id: &str| format!("{}/admin/sessions/{id}/extend", kratos.admin_url());

    let r = send(client().patch(url(&fresh.id))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        parse_time(&json_body(r).await["expires_at"]),
        fresh.expires_at
    );
    assert_eq!(
        kratos.session_state(&fresh.id).expect("session").expires_at,
        fresh.expires_at
    );

    // Inside the window it extends; an expired (not revoked) session comes back to life.
    let closing = kratos
        .session()
        .expires_in(Duration::from_secs(300))
        .create();
    let r = send(client().patch(url(&closing.id))).await;
    assert!(parse_time(&json_body(r).await["expires_at"]) > closing.expires_at);
    let expired = kratos
        .session()
        .expires_at(OffsetDateTime::now_utc() - Duration::from_secs(5))
        .create();
    assert_eq!(
        whoami(&kratos, &[("X-Session-Token", &expired.token)])
            .await
            .status(),
        401
    );
    let r = send(client().patch(url(&expired.id))).await;
    assert_eq!(json_body(r).await["active"], true);
    assert_eq!(
        whoami(&kratos, &[("X-Session-Token", &expired.token)])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn admin_routes_answer_400_for_bad_ids_and_404_for_unknown_ones() {
    let kratos = KratosStandIn::start().await.expect("start");
    let unknown = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
    let base = kratos.admin_url();
    let not_located =
        r#"{"error":{"code":404,"status":"Not Found","message":"Unable to locate the resource"}}"#;

    for request in [
        client().patch(format!("{base}/admin/sessions/{unknown}/extend")),
        client().get(format!("{base}/admin/sessions/{unknown}")),
        client().delete(format!("{base}/admin/sessions/{unknown}")),
        client().delete(format!("{base}/admin/identities/{unknown}/sessions")),
    ] {
        let r = send(request).await;
        assert_eq!(r.status(), 404);
        assert_eq!(text(r).await, not_located);
    }

    for request in [
        client().patch(format!("{base}/admin/sessions/not-a-uuid/extend")),
        client().get(format!("{base}/admin/sessions/not-a-uuid")),
        client().delete(format!("{base}/admin/sessions/not-a-uuid")),
        client().delete(format!("{base}/admin/identities/not-a-uuid/sessions")),
    ] {
        let r = send(request).await;
        assert_eq!(r.status(), 400);
        let body = json_body(r).await;
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(body["error"]["status"], "Bad Request");
        assert_eq!(
            body["error"]["message"],
            r#"uuid: incorrect UUID length 10 in string "not-a-uuid""#
        );
    }
    assert_eq!(
        kratos.calls_for_session(Endpoint::ExtendSession, unknown),
        1
    );

    let r = send(client().get(format!("{base}/nowhere"))).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        text(r).await,
        r#"{"error":{"code":404,"status":"Not Found","message":"The requested resource could not be found"}}"#
    );
    // The extend route is admin-only, as in Kratos.
    let r = send(client().patch(format!("{base}/sessions/{unknown}/extend"))).await;
    assert_eq!(r.status(), 404);
    assert_eq!(kratos.calls(Endpoint::Other), 2);
}

#[tokio::test]
async fn admin_get_session_expands_on_request() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    let url = format!("{}/admin/sessions/{}", kratos.admin_url(), s.id);

    let body = json_body(send(client().get(&url)).await).await;
    assert_eq!(body["id"], s.id.as_str());
    assert_eq!(body["identity"], Value::Null);
    assert_eq!(body["devices"], json!([]));

    let body =
        json_body(send(client().get(format!("{url}?expand=Identity&expand=devices"))).await).await;
    assert_eq!(body["identity"]["id"], s.identity_id.as_str());
    assert!(body["identity"]
        .as_object()
        .expect("identity")
        .contains_key("metadata_admin"));
    assert_eq!(body["devices"].as_array().expect("devices").len(), 1);

    let r = send(client().get(format!("{url}?expand=everything"))).await;
    assert_eq!(r.status(), 400);

    // Inactive sessions are returned too; uppercase ids are the same id.
    kratos.revoke_session(&s.id);
    let r = send(client().get(format!(
        "{}/admin/sessions/{}",
        kratos.admin_url(),
        s.id.to_uppercase()
    )))
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["active"], false);
    assert_eq!(
        kratos.calls_for_session(Endpoint::AdminGetSession, &s.id),
        4
    );
}

#[tokio::test]
async fn admin_disable_and_delete_identity_sessions() {
    let kratos = KratosStandIn::start().await.expect("start");
    let a = kratos.create_session();
    let a2 = kratos.session().identity(&a.identity_id).create();
    let b = kratos.create_session();
    let base = kratos.admin_url();

    let r = send(client().delete(format!("{base}/admin/sessions/{}", b.id))).await;
    assert_eq!(r.status(), 204);
    assert!(!kratos.session_state(&b.id).expect("kept").active);
    assert_eq!(
        whoami(&kratos, &[("X-Session-Token", &b.token)])
            .await
            .status(),
        401
    );
    // Already inactive: still 204.
    let r = send(client().delete(format!("{base}/admin/sessions/{}", b.id))).await;
    assert_eq!(r.status(), 204);

    let url = format!("{base}/admin/identities/{}/sessions", a.identity_id);
    let r = send(client().delete(&url)).await;
    assert_eq!(r.status(), 204);
    assert!(kratos.session_state(&a.id).is_none());
    assert!(kratos.session_state(&a2.id).is_none());
    assert_eq!(
        whoami(&kratos, &[("Cookie", &a.cookie_header())])
            .await
            .status(),
        401
    );
    let r = send(client().delete(&url)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        kratos.calls_for_session(Endpoint::AdminDeleteIdentitySessions, &a.identity_id),
        2
    );
}

#[tokio::test]
async fn admin_token_guards_admin_routes_only() {
    let kratos = KratosStandIn::builder()
        .admin_token("ory_pat_secret")
        .start()
        .await
        .expect("start");
    let s = kratos.create_session();
    let url = format!("{}/admin/sessions/{}", kratos.admin_url(), s.id);

    for auth in [None, Some("Bearer wrong"), Some("ory_pat_secret")] {
        let mut request = client().get(&url);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let r = send(request).await;
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(
            text(r).await,
            r#"{"error":{"code":401,"status":"Unauthorized","message":"The request could not be authorized"}}"#
        );
    }
    let r = send(client().get(&url).bearer_auth("ory_pat_secret")).await;
    assert_eq!(r.status(), 200);
    // Public routes don't need it.
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(kratos.calls(Endpoint::AdminGetSession), 4);
}

#[tokio::test]
async fn admin_whoami_redirects_to_the_public_route() {
    let kratos = KratosStandIn::start().await.expect("start");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = send(no_redirects.get(format!("{}/admin/sessions/whoami", kratos.admin_url()))).await;
    assert_eq!(r.status(), 307);
    assert_eq!(
        header(&r, "location"),
        Some(format!("{}/sessions/whoami", kratos.public_url()).as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// self-service session routes and API logout

#[tokio::test]
async fn list_my_sessions_returns_the_other_active_ones_newest_first() {
    let kratos = KratosStandIn::start().await.expect("start");
    let me = kratos.create_session();
    let older = kratos.session().identity(&me.identity_id).create();
    let newer = kratos.session().identity(&me.identity_id).create();
    let revoked = kratos.session().identity(&me.identity_id).create();
    kratos.revoke_session(&revoked.id);
    kratos
        .session()
        .identity(&me.identity_id)
        .expires_at(OffsetDateTime::now_utc() - Duration::from_secs(1))
        .create();
    let _stranger = kratos.create_session();
    let url = format!("{}/sessions", kratos.public_url());

    let r = send(client().get(&url).header("X-Session-Token", &me.token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-total-count"), Some("2"));
    let link = header(&r, "link").expect("Link").to_owned();
    assert!(link.contains(r#"rel="first""#) && link.contains(r#"rel="last""#));
    let body = json_body(r).await;
    let ids: Vec<&str> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [newer.id.as_str(), older.id.as_str()]);
    assert_eq!(body[0]["identity"]["id"], me.identity_id.as_str());
    assert_eq!(body[0]["devices"].as_array().expect("devices").len(), 1);

    // Token pagination and legacy page pagination.
    let r = send(
        client()
            .get(format!("{url}?page_size=1"))
            .header("Cookie", me.cookie_header()),
    )
    .await;
    let link = header(&r, "link").expect("Link").to_owned();
    assert!(
        link.contains(r#"page_token=1&per_page=1>; rel="next""#),
        "{link}"
    );
    assert_eq!(json_body(r).await[0]["id"], newer.id.as_str());
    let r = send(
        client()
            .get(format!("{url}?page_size=1&page_token=1"))
            .header("Authorization", bearer(&me)),
    )
    .await;
    assert_eq!(json_body(r).await[0]["id"], older.id.as_str());
    let r = send(
        client()
            .get(format!("{url}?per_page=1&page=1"))
            .header("X-Session-Token", &me.token),
    )
    .await;
    let body = json_body(r).await;
    assert_eq!(body.as_array().expect("array").len(), 1);
    assert_eq!(body[0]["id"], older.id.as_str());
    assert_eq!(
        kratos.calls_for_session(Endpoint::ListMySessions, &me.id),
        4
    );
}

#[tokio::test]
async fn session_routes_reject_like_kratos() {
    let kratos = KratosStandIn::start().await.expect("start");
    let base = kratos.public_url();
    let expected = r#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session cookie found.","message":"The request could not be authorized"}}"#;
    for request in [
        client().get(format!("{base}/sessions")),
        client().delete(format!("{base}/sessions")),
        client().delete(format!(
            "{base}/sessions/6ba7b810-9dad-41d1-80b4-00c04fd430c8"
        )),
    ] {
        let r = send(request.header("X-Session-Token", "ory_st_nope")).await;
        assert_eq!(r.status(), 401);
        assert_eq!(text(r).await, expected);
    }

    let weak = kratos.session().requires_aal2().create();
    let r = send(
        client()
            .get(format!("{base}/sessions"))
            .header("X-Session-Token", &weak.token),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "ory-error-id"), Some("session_aal2_required"));
}

#[tokio::test]
async fn revoke_my_other_sessions_and_one_of_them() {
    let kratos = KratosStandIn::start().await.expect("start");
    let me = kratos.create_session();
    let mine = kratos.session().identity(&me.identity_id).create();
    let also_mine = kratos.session().identity(&me.identity_id).create();
    let stranger = kratos.create_session();
    let base = kratos.public_url();
    let auth = |r: reqwest::RequestBuilder| r.header("X-Session-Token", me.token.clone());

    // My own session: 400.
    let r = send(auth(client().delete(format!("{base}/sessions/{}", me.id)))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        text(r).await,
        r#"{"error":{"code":400,"status":"Bad Request","message":"cannot revoke current session"}}"#
    );
    let r = send(auth(client().delete(format!("{base}/sessions/nope")))).await;
    assert_eq!(r.status(), 400);

    // Someone else's: 204 but nothing happens.
    let r = send(auth(
        client().delete(format!("{base}/sessions/{}", stranger.id)),
    ))
    .await;
    assert_eq!(r.status(), 204);
    assert!(kratos.session_state(&stranger.id).expect("session").active);

    let r = send(auth(
        client().delete(format!("{base}/sessions/{}", mine.id)),
    ))
    .await;
    assert_eq!(r.status(), 204);
    assert!(!kratos.session_state(&mine.id).expect("session").active);

    // DELETE /sessions counts all other sessions (already revoked ones too, as on PostgreSQL).
    let r = send(auth(client().delete(format!("{base}/sessions")))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(text(r).await, r#"{"count":2}"#);
    assert!(!kratos.session_state(&also_mine.id).expect("session").active);
    assert!(kratos.session_state(&me.id).expect("session").active);
    assert!(kratos.session_state(&stranger.id).expect("session").active);
    assert_eq!(
        kratos.calls_for_session(Endpoint::RevokeMySession, &me.id),
        4
    );
    assert_eq!(
        kratos.calls_for_session(Endpoint::RevokeMyOtherSessions, &me.id),
        1
    );

    // DELETE /sessions/whoami is whoami.
    let r = send(auth(client().delete(format!("{base}/sessions/whoami")))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
}

#[tokio::test]
async fn logout_api_revokes_by_token() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    let url = format!("{}/self-service/logout/api", kratos.public_url());
    let logout = |body: String| {
        client()
            .delete(&url)
            .header("Content-Type", "application/json")
            .body(body)
    };

    let r = send(logout(json!({"session_token": s.token}).to_string())).await;
    assert_eq!(r.status(), 204);
    assert!(!kratos.session_state(&s.id).expect("session").active);
    assert_eq!(
        whoami(&kratos, &[("X-Session-Token", &s.token)])
            .await
            .status(),
        401
    );
    // Already revoked: still 204.
    let r = send(logout(json!({"session_token": s.token}).to_string())).await;
    assert_eq!(r.status(), 204);
    assert_eq!(kratos.calls_for_session(Endpoint::LogoutApi, &s.id), 2);

    let r = send(logout(json!({"session_token": "ory_st_nope"}).to_string())).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        text(r).await,
        r#"{"error":{"code":403,"status":"Forbidden","reason":"The provided Ory Session Token could not be found, is invalid, or otherwise malformed.","message":"The requested action was forbidden"}}"#
    );

    for bad in ["", "{", "[]", r#"{"token":"x"}"#, r#"{"session_token":7}"#] {
        let r = send(logout(bad.to_owned())).await;
        assert_eq!(r.status(), 400, "{bad}");
        let body = json_body(r).await;
        assert_eq!(body["error"]["code"], 400);
    }
    let recorded = kratos.requests(Endpoint::LogoutApi);
    assert_eq!(recorded.len(), 8);
    assert_eq!(
        recorded[0].body,
        json!({"session_token": s.token}).to_string().as_bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// faults and knobs

#[tokio::test]
async fn delay_fault_and_latency_slow_the_answer() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();

    kratos.set_fault(Endpoint::Whoami, Fault::Delay(Duration::from_millis(150)));
    let started = Instant::now();
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    kratos.clear_fault(Endpoint::Whoami);
    kratos.set_latency(Duration::from_millis(80));
    let started = Instant::now();
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(80));

    // Latency is for whoami only: with a whoami latency far beyond any scheduling noise, an
    // admin call still answers (a loaded CI machine must not turn this into a timing test).
    kratos.set_latency(Duration::from_secs(60));
    let admin = send(client().get(format!("{}/admin/sessions/{}", kratos.admin_url(), s.id)));
    let answered = tokio::time::timeout(Duration::from_secs(20), admin).await;
    assert!(
        answered.is_ok(),
        "the admin API waited for the whoami latency"
    );
}

#[tokio::test]
async fn status_fault_answers_a_herodot_error() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(http::StatusCode::SERVICE_UNAVAILABLE),
    );
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(
        text(r).await,
        r#"{"error":{"code":503,"status":"Service Unavailable","message":"Service Unavailable"}}"#
    );
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::Status(http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(
        text(r).await,
        r#"{"error":{"code":500,"status":"Internal Server Error","message":"An internal server error occurred, please contact the system administrator"}}"#
    );
    // Other endpoints are unaffected; clearing restores whoami.
    let r = send(client().get(format!("{}/admin/sessions/{}", kratos.admin_url(), s.id))).await;
    assert_eq!(r.status(), 200);
    kratos.clear_faults();
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 200);
    // Faulted calls were counted.
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &s.id), 3);
}

#[tokio::test]
async fn rate_limited_fault_sends_ory_network_headers() {
    let kratos = KratosStandIn::start().await.expect("start");
    kratos.set_fault(
        Endpoint::Whoami,
        Fault::RateLimited {
            retry_after: Some(7),
        },
    );
    let r = whoami(&kratos, &[]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), Some("7"));
    assert_eq!(header(&r, "x-ratelimit-reset"), Some("7"));
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));
    assert!(header(&r, "x-ratelimit-limit").is_some());
    assert_eq!(json_body(r).await["error"]["code"], 429);

    kratos.set_fault(Endpoint::Whoami, Fault::RateLimited { retry_after: None });
    let r = whoami(&kratos, &[]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), None);
    assert_eq!(header(&r, "x-ratelimit-reset"), Some("1"));
}

#[tokio::test]
async fn hang_fault_never_answers_but_blocks_nothing_else() {
    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    kratos.set_fault(Endpoint::Whoami, Fault::Hang);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");

    let hung = tokio::spawn({
        let request = impatient
            .get(format!("{}/sessions/whoami", kratos.public_url()))
            .header("X-Session-Token", &s.token);
        async move { request.send().await }
    });
    // Once it is stuck inside the server, other requests are still served.
    while kratos.calls(Endpoint::Whoami) < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = send(client().get(format!("{}/admin/sessions/{}", kratos.admin_url(), s.id))).await;
    assert_eq!(r.status(), 200);

    let err = hung.await.expect("task").expect_err("hangs");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &s.id), 1);
}

#[tokio::test]
async fn garbage_body_fault_is_200_but_not_json() {
    let kratos = KratosStandIn::start().await.expect("start");
    kratos.set_fault(Endpoint::Whoami, Fault::GarbageBody);
    let r = whoami(&kratos, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    let body = r.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn close_connection_fault_drops_the_connection() {
    let kratos = KratosStandIn::start().await.expect("start");
    kratos.set_fault(Endpoint::ExtendSession, Fault::CloseConnection);
    let started = Instant::now();
    let err = reqwest::Client::new()
        .patch(format!(
            "{}/admin/sessions/6ba7b810-9dad-41d1-80b4-00c04fd430c8/extend",
            kratos.admin_url()
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect_err("no response");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 1);

    // The server itself is fine.
    let r = whoami(&kratos, &[]).await;
    assert_eq!(r.status(), 401);
}

// ---------------------------------------------------------------------------------------------
// recording

#[tokio::test]
async fn counters_and_recorded_requests() {
    let kratos = KratosStandIn::start().await.expect("start");
    let a = kratos.create_session();
    let b = kratos.create_session();
    whoami(
        &kratos,
        &[("X-Session-Token", &a.token), ("X-Request-ID", "r1")],
    )
    .await;
    whoami(&kratos, &[("Cookie", &a.cookie_header())]).await;
    whoami(&kratos, &[("Authorization", &bearer(&b))]).await;
    whoami(&kratos, &[]).await;
    let revoked = kratos.create_session();
    kratos.revoke_session(&revoked.id);
    whoami(&kratos, &[("X-Session-Token", &revoked.token)]).await;

    assert_eq!(kratos.calls(Endpoint::Whoami), 5);
    assert_eq!(kratos.calls(Endpoint::ExtendSession), 0);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &a.id), 2);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &b.id), 1);
    // A credential counts for its session even when the session is revoked.
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &revoked.id), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::ListMySessions, &a.id), 0);

    let recorded = kratos.requests(Endpoint::Whoami);
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded[0].method, http::Method::GET);
    assert_eq!(recorded[0].uri.path(), "/sessions/whoami");
    assert_eq!(recorded[0].headers["x-session-token"], a.token.as_str());
    assert_eq!(recorded[0].headers["x-request-id"], "r1");
    assert_eq!(recorded[0].session_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(recorded[1].headers["cookie"], a.cookie_header().as_str());
    assert_eq!(recorded[2].session_id.as_deref(), Some(b.id.as_str()));
    assert_eq!(recorded[3].session_id, None);
    assert!(recorded[3].body.is_empty());

    kratos.reset_counters();
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &a.id), 0);
    assert!(kratos.requests(Endpoint::Whoami).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrent_counts_requests_handled_at_once() {
    let kratos = KratosStandIn::start().await.expect("start");
    let session = kratos.create_session();
    kratos.set_latency(Duration::from_millis(300));

    // Three at once, then two more after they are done: the peak is three, not five.
    let batch = |n: usize| {
        let requests: Vec<_> = (0..n)
            .map(|_| {
                let kratos = kratos.clone();
                let token = session.token.clone();
                tokio::spawn(async move {
                    whoami(&kratos, &[("X-Session-Token", &token)])
                        .await
                        .status()
                })
            })
            .collect();
        async move {
            for request in requests {
                assert_eq!(request.await.expect("task"), 200);
            }
        }
    };
    batch(3).await;
    batch(2).await;

    assert_eq!(kratos.calls(Endpoint::Whoami), 5);
    assert_eq!(kratos.max_concurrent(Endpoint::Whoami), 3);
    assert_eq!(kratos.in_flight(Endpoint::Whoami), 0);
    assert_eq!(kratos.max_concurrent(Endpoint::ExtendSession), 0);

    kratos.reset_counters();
    assert_eq!(kratos.max_concurrent(Endpoint::Whoami), 0);

    // A hung request counts until its client gives up and the connection closes.
    kratos.set_fault(Endpoint::Whoami, Fault::Hang);
    let gave_up = reqwest::Client::new()
        .get(format!("{}/sessions/whoami", kratos.public_url()))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err_and(|error| error.is_timeout()));
    assert_eq!(kratos.max_concurrent(Endpoint::Whoami), 1);
    for _ in 0..200 {
        if kratos.in_flight(Endpoint::Whoami) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(kratos.in_flight(Endpoint::Whoami), 0);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();
    let mut conn = tokio::net::TcpStream::connect(kratos.addr())
        .await
        .expect("connect");
    let request = format!(
        "GET /sessions/whoami HTTP/1.1\r\nHost: kratos\r\nX-Session-Token: {}\r\n\r\n",
        s.token
    );
    for _ in 0..3 {
        conn.write_all(request.as_bytes()).await.expect("write");
    }
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    while seen.matches("HTTP/1.1 200 OK").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("three answers on one connection")
            .expect("read");
        assert!(n > 0, "connection closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &s.id), 3);
}

// ---------------------------------------------------------------------------------------------
// robustness, TLS, lifecycle

#[tokio::test]
async fn hostile_input_never_takes_the_server_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let kratos = KratosStandIn::start().await.expect("start");
    let s = kratos.create_session();

    // Huge headers, invalid UTF-8 in credential headers, broken percent escapes.
    let huge = "x".repeat(200 * 1024);
    let r = client()
        .get(format!("{}/sessions/whoami", kratos.public_url()))
        .header("Cookie", format!("ory_kratos_session={huge}"))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let invalid_utf8 = http::HeaderValue::from_bytes(b"ory_st_\xff\xfe").expect("header bytes");
    let r = send(
        client()
            .get(format!("{}/sessions/whoami", kratos.public_url()))
            .header("X-Session-Token", invalid_utf8.clone())
            .header("Authorization", invalid_utf8),
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = send(client().get(format!(
        "{}/admin/sessions/%zz%ff%/extend?expand=%",
        kratos.admin_url()
    )))
    .await;
    assert!(r.status().is_client_error());
    let r = send(client().get(format!(
        "{}/admin/sessions/{}?expand=%ff",
        kratos.admin_url(),
        s.id
    )))
    .await;
    assert_eq!(r.status(), 400);

    // Raw garbage on the socket.
    let mut raw = tokio::net::TcpStream::connect(kratos.addr())
        .await
        .expect("connect");
    raw.write_all(b"\x00\x01GARBAGE / HTTP/9.9\r\n\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), raw.read_to_end(&mut buf)).await;

    // Still serving.
    let r = whoami(&kratos, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn serves_https_with_a_test_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let kratos = KratosStandIn::builder()
        .tls(&cert_pem, &key_pem)
        .start()
        .await
        .expect("start");
    assert!(kratos.public_url().starts_with("https://127.0.0.1:"));
    assert_eq!(kratos.admin_url(), kratos.public_url());

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let s = kratos
        .session()
        .expires_in(Duration::from_secs(60))
        .create();
    let r = send(
        client
            .get(format!("{}/sessions/whoami", kratos.public_url()))
            .header("Cookie", s.cookie_header()),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["id"], s.id.as_str());

    // Cookies issued over HTTPS are Secure.
    send(client.patch(format!(
        "{}/admin/sessions/{}/extend",
        kratos.admin_url(),
        s.id
    )))
    .await;
    let r = send(
        client
            .get(format!("{}/sessions/whoami", kratos.public_url()))
            .header("Cookie", s.cookie_header()),
    )
    .await;
    assert!(header(&r, "set-cookie")
        .expect("Set-Cookie")
        .contains("; Secure"));

    // A client that does not trust the certificate fails.
    let r = reqwest::Client::new()
        .get(format!("{}/sessions/whoami", kratos.public_url()))
        .send()
        .await;
    assert!(r.is_err());

    // Bad TLS material surfaces from start().
    let err = KratosStandIn::builder()
        .tls("not a certificate", &key_pem)
        .start()
        .await
        .expect_err("bad PEM");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let err = KratosStandIn::builder()
        .tls(&cert_pem, &other.signing_key.serialize_pem())
        .start()
        .await
        .expect_err("mismatched key");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let kratos = KratosStandIn::start().await.expect("start");
    let addr = kratos.addr();
    let s = kratos.create_session();

    // A clone keeps it alive.
    let clone = kratos.clone();
    drop(kratos);
    let r = whoami(&clone, &[("X-Session-Token", &s.token)]).await;
    assert_eq!(r.status(), 200);

    // A request hanging inside the server is cut off when the server stops.
    clone.set_fault(Endpoint::Whoami, Fault::Hang);
    let hung = tokio::spawn({
        let request = client()
            .get(format!("{}/sessions/whoami", clone.public_url()))
            .header("X-Session-Token", &s.token);
        async move { request.send().await }
    });
    while clone.calls(Endpoint::Whoami) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(clone);

    let outcome = tokio::time::timeout(Duration::from_secs(5), hung)
        .await
        .expect("the hung request ended")
        .expect("task");
    assert!(outcome.is_err(), "no response after stop");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) if Instant::now() > deadline => panic!("still accepting after drop"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

// ---- Browser flows: the login page, step-up, refresh, browser logout ----

/// A client that shows redirects instead of following them, as a test of a flow must.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn location(response: &reqwest::Response) -> String {
    header(response, "location")
        .unwrap_or_else(|| panic!("no Location on a {}", response.status()))
        .to_owned()
}

/// The `name=value` a `Set-Cookie` sets.
fn set_cookie_pair(response: &reqwest::Response) -> String {
    let set_cookie = header(response, "set-cookie").expect("a Set-Cookie");
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

/// Starts a login flow (with `query`, carrying `cookie` if any) and returns the login page's
/// URL.
async fn begin_login(kratos: &KratosStandIn, query: &str, cookie: Option<&str>) -> String {
    let mut request = no_redirects().get(format!(
        "{}/self-service/login/browser{query}",
        kratos.public_url()
    ));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = send(request).await;
    assert_eq!(response.status(), 303, "starting a login flow");
    let page = location(&response);
    assert!(
        page.starts_with(&format!("{}/login?flow=", kratos.public_url())),
        "not the login page: {page}"
    );
    page
}

/// Posts the login page's form for `method`; the answer (a 303 with the cookie).
async fn post_login(page: &str, method: &str, cookie: Option<&str>) -> reqwest::Response {
    let action = page.replacen("/login?", "/self-service/login?", 1);
    let mut request = no_redirects()
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("method={method}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    send(request).await
}

async fn whoami_json(kratos: &KratosStandIn, cookie: &str) -> Value {
    let response = whoami(kratos, &[("cookie", cookie)]).await;
    assert_eq!(response.status(), 200, "whoami with the browser's cookie");
    json_body(response).await
}

#[tokio::test]
async fn the_login_page_signs_the_demo_user_in_and_goes_back() {
    let kratos = KratosStandIn::start().await.expect("start");
    let return_to = "http://127.0.0.1:3000/me?tab=1";
    let query = format!(
        "?return_to={}",
        "http%3A%2F%2F127.0.0.1%3A3000%2Fme%3Ftab%3D1"
    );
    let page = begin_login(&kratos, &query, None).await;

    let shown = send(no_redirects().get(&page)).await;
    assert_eq!(shown.status(), 200);
    assert_eq!(
        header(&shown, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = text(shown).await;
    assert!(
        html.contains("id=\"sign-in\"") && html.contains("id=\"sign-in-aal2\""),
        "{html}"
    );
    assert!(
        !html.contains("<script"),
        "the page needs no JavaScript: {html}"
    );

    let signed_in = post_login(&page, "password", None).await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(location(&signed_in), return_to);
    let cookie = set_cookie_pair(&signed_in);
    assert!(cookie.starts_with("ory_kratos_session="), "{cookie}");
    let session = whoami_json(&kratos, &cookie).await;
    assert_eq!(session["authenticator_assurance_level"], "aal1");
    assert_eq!(
        session["identity"]["id"],
        kratos.demo_identity_id().as_str()
    );
    assert_eq!(session["identity"]["traits"]["email"], "demo@example.org");
    assert_eq!(kratos.calls(Endpoint::Login), 1);

    // A flow is used once.
    let again = post_login(&page, "password", None).await;
    assert_eq!(again.status(), 410);

    // With a second factor from the start: aal2, and no return_to goes to the welcome page.
    let page = begin_login(&kratos, "", None).await;
    let signed_in = post_login(&page, "totp", None).await;
    assert_eq!(
        location(&signed_in),
        format!("{}/welcome", kratos.public_url())
    );
    let cookie = set_cookie_pair(&signed_in);
    let session = whoami_json(&kratos, &cookie).await;
    assert_eq!(session["authenticator_assurance_level"], "aal2");
    let welcome = send(client().get(location(&signed_in)).header("cookie", &cookie)).await;
    assert!(text(welcome)
        .await
        .contains("Signed in as demo@example.org (aal2)"));
}

#[tokio::test]
async fn step_up_and_refresh_change_the_same_session() {
    let kratos = KratosStandIn::start().await.expect("start");
    let page = begin_login(&kratos, "", None).await;
    let cookie = set_cookie_pair(&post_login(&page, "password", None).await);
    let before = whoami_json(&kratos, &cookie).await;

    // aal=aal2 for an aal1 session: the second-factor page, then the same session at aal2.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let page = begin_login(
        &kratos,
        "?aal=aal2&return_to=http://localhost:3000/billing",
        Some(&cookie),
    )
    .await;
    let html = text(send(no_redirects().get(&page)).await).await;
    assert!(
        html.contains("id=\"second-factor\"") && !html.contains("id=\"sign-in\""),
        "{html}"
    );
    let refused = post_login(&page, "password", Some(&cookie)).await;
    assert_eq!(
        refused.status(),
        400,
        "a step-up flow takes only the second factor"
    );
    let stepped_up = post_login(&page, "totp", Some(&cookie)).await;
    assert_eq!(location(&stepped_up), "http://localhost:3000/billing");
    let new_cookie = set_cookie_pair(&stepped_up);
    assert_ne!(new_cookie, cookie, "Kratos writes the cookie anew");
    let after = whoami_json(&kratos, &new_cookie).await;
    assert_eq!(after["id"], before["id"], "the same session");
    assert_eq!(after["authenticator_assurance_level"], "aal2");
    assert_eq!(after["issued_at"], before["issued_at"]);
    assert!(parse_time(&after["authenticated_at"]) > parse_time(&before["authenticated_at"]));
    assert_eq!(
        after["authentication_methods"].as_array().map(Vec::len),
        Some(2)
    );
    // The old cookie value is the same session, now aal2.
    assert_eq!(
        whoami_json(&kratos, &cookie).await["authenticator_assurance_level"],
        "aal2"
    );

    // Already aal2: straight back, no page.
    let response = send(
        no_redirects()
            .get(format!(
                "{}/self-service/login/browser?aal=aal2&return_to=http://127.0.0.1:1/x",
                kratos.public_url()
            ))
            .header("cookie", &new_cookie),
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "http://127.0.0.1:1/x");

    // refresh=true: a new sign-in in the same session moves authenticated_at.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let page = begin_login(&kratos, "?refresh=true", Some(&new_cookie)).await;
    let html = text(send(no_redirects().get(&page)).await).await;
    assert!(html.contains("id=\"sign-in-again\""), "{html}");
    let refreshed = post_login(&page, "password", Some(&new_cookie)).await;
    let refreshed_cookie = set_cookie_pair(&refreshed);
    let last = whoami_json(&kratos, &refreshed_cookie).await;
    assert_eq!(last["id"], before["id"]);
    assert!(parse_time(&last["authenticated_at"]) > parse_time(&after["authenticated_at"]));
    assert_eq!(last["issued_at"], before["issued_at"]);

    // A flow for another session (the cookie changed hands, or signed out) is not completed.
    let page = begin_login(&kratos, "?refresh=true", Some(&new_cookie)).await;
    assert_eq!(post_login(&page, "password", None).await.status(), 410);
}

#[tokio::test]
async fn login_flows_refuse_what_kratos_refuses() {
    let kratos = KratosStandIn::start().await.expect("start");
    let start = |query: &str| {
        no_redirects().get(format!(
            "{}/self-service/login/browser{query}",
            kratos.public_url()
        ))
    };
    for evil in [
        "https://evil.example/",
        "http://127.0.0.1@evil.example/",
        "javascript://127.0.0.1/%250aalert(1)",
        "/relative",
    ] {
        let response = send(start(&format!("?return_to={evil}"))).await;
        assert_eq!(response.status(), 400, "return_to={evil}");
        assert_eq!(
            header(&response, "content-type"),
            Some("text/html; charset=utf-8")
        );
    }
    let json =
        send(start("?return_to=https://evil.example/").header("accept", "application/json")).await;
    assert_eq!(json.status(), 400);
    let body = json_body(json).await;
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("is not allowed"),
        "{body}"
    );
    assert_eq!(send(start("?aal=aal3")).await.status(), 400);
    assert_eq!(
        send(start("?aal=aal2")).await.status(),
        401,
        "aal2 needs a session first"
    );
    let unknown =
        send(no_redirects().get(format!("{}/login?flow=nope", kratos.public_url()))).await;
    assert_eq!(unknown.status(), 410);
    let page = begin_login(&kratos, "", None).await;
    assert_eq!(post_login(&page, "magic", None).await.status(), 400);
}

#[tokio::test]
async fn browser_logout_revokes_the_session_and_clears_the_cookie() {
    let kratos = KratosStandIn::start().await.expect("start");
    let session = kratos.create_session();
    let cookie = session.cookie_header();
    let flow_url = format!("{}/self-service/logout/browser", kratos.public_url());

    let flow = send(no_redirects().get(&flow_url).header("cookie", &cookie)).await;
    assert_eq!(flow.status(), 200);
    let flow = json_body(flow).await;
    let token = flow["logout_token"]
        .as_str()
        .expect("logout_token")
        .to_owned();
    assert!(token.starts_with("ory_lo_"), "{token}");
    assert_eq!(
        flow["logout_url"],
        format!("{}/self-service/logout?token={token}", kratos.public_url()).as_str()
    );

    let logout = |token: &str| {
        no_redirects()
            .get(format!(
                "{}/self-service/logout?token={token}",
                kratos.public_url()
            ))
            .header("cookie", &cookie)
    };
    assert_eq!(send(logout("")).await.status(), 400);
    assert_eq!(
        send(logout("ory_lo_other").header("accept", "application/json"))
            .await
            .status(),
        403
    );
    assert!(
        kratos.session_state(&session.id).expect("state").active,
        "a wrong token changes nothing"
    );

    let done = send(logout(&token).header("accept", "application/json")).await;
    assert_eq!(done.status(), 204);
    let clearing = header(&done, "set-cookie")
        .expect("the clearing Set-Cookie")
        .to_owned();
    assert!(
        clearing.starts_with("ory_kratos_session=; Path=/;") && clearing.contains("Max-Age=0"),
        "{clearing}"
    );
    assert!(!kratos.session_state(&session.id).expect("state").active);
    assert_eq!(whoami(&kratos, &[("cookie", &cookie)]).await.status(), 401);
    assert_eq!(
        send(no_redirects().get(&flow_url).header("cookie", &cookie))
            .await
            .status(),
        401
    );
    assert_eq!(
        send(logout(&token).header("accept", "application/json"))
            .await
            .status(),
        401
    );
    assert_eq!(kratos.calls(Endpoint::Logout), 4);

    // A browser (no JSON) is sent to return_to, else the welcome page.
    let other = kratos.create_session();
    let token = json_body(
        send(
            no_redirects()
                .get(&flow_url)
                .header("cookie", other.cookie_header()),
        )
        .await,
    )
    .await["logout_token"]
        .as_str()
        .expect("logout_token")
        .to_owned();
    let done = send(
        no_redirects()
            .get(format!(
                "{}/self-service/logout?token={token}&return_to=http://127.0.0.1:3000/",
                kratos.public_url()
            ))
            .header("cookie", other.cookie_header()),
    )
    .await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "http://127.0.0.1:3000/");
}

// ---------------------------------------------------------------------------------------------
// whoami?tokenize_as= (feature "jwt"): Kratos's tokenized sessions, and the stand-in's JWKS

#[cfg(feature = "jwt")]
mod tokenized {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use kratos_stand_in::{SigningAlg, TokenizerTemplate};

    use super::*;

    /// Kratos's 400 for `tokenize_as=nope` (`driver/config/config.go` `TokenizeTemplate`).
    const UNKNOWN_TEMPLATE: &str = r#"{"error":{"code":400,"status":"Bad Request","reason":"Unable to find tokenizer template \"nope\".","message":"The request was malformed or contained invalid parameters"}}"#;

    async fn tokenized_stand_in() -> KratosStandIn {
        KratosStandIn::builder()
            .session_cache_for(Some(Duration::from_secs(3600)))
            .tokenizer(
                "api",
                TokenizerTemplate::new(SigningAlg::Es256).claim("aal", json!("aal1")),
            )
            .tokenizer(
                "by external id",
                TokenizerTemplate::new(SigningAlg::EdDsa)
                    .subject_from_external_id(true)
                    .ttl(Duration::from_secs(300)),
            )
            .start()
            .await
            .expect("start")
    }

    /// whoami with this query string and these headers.
    async fn whoami_with(
        kratos: &KratosStandIn,
        query: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = client().get(format!("{}/sessions/whoami?{query}", kratos.public_url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    /// A JWT's header and claims, decoded (its signature is checked in the unit tests).
    fn decode(jwt: &str) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let segment = |s: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url")).expect("JSON")
        };
        assert!(!URL_SAFE_NO_PAD
            .decode(parts[2])
            .expect("base64url")
            .is_empty());
        (segment(parts[0]), segment(parts[1]))
    }

    #[tokio::test]
    async fn tokenized_whoami_adds_a_jwt_and_no_cache_header() {
        let kratos = tokenized_stand_in().await;
        let s = kratos.create_session();
        let token = [("X-Session-Token", s.token.as_str())];

        let plain = whoami_with(&kratos, "", &token).await;
        assert!(header(&plain, "ory-session-cache-for").is_some());
        let plain = json_body(plain).await;
        assert!(plain.get("tokenized").is_none(), "omitted unless asked");

        let r = whoami_with(&kratos, "tokenize_as=api", &token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ory-session-cache-for"), None);
        assert_eq!(
            header(&r, "x-kratos-authenticated-identity-id"),
            Some(s.identity_id.as_str())
        );
        let body = json_body(r).await;
        let mut expected_keys = keys(&plain);
        expected_keys.insert("tokenized".to_owned());
        assert_eq!(keys(&body), expected_keys);
        assert_eq!(body["id"], s.id.as_str());

        let (header, claims) = decode(body["tokenized"].as_str().expect("a JWT string"));
        let jwks = kratos.jwks("api").expect("registered");
        assert_eq!(
            header,
            json!({"alg": "ES256", "kid": jwks["keys"][0]["kid"], "typ": "JWT"})
        );
        let claim_names: Vec<&str> = claims
            .as_object()
            .expect("claims object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            claim_names,
            ["aal", "exp", "iat", "iss", "jti", "nbf", "sid", "sub"]
        );
        assert_eq!(claims["iss"], format!("{}/", kratos.public_url()));
        assert_eq!(claims["sid"], s.id.as_str());
        assert_eq!(claims["sub"], s.identity_id.as_str());
        assert_eq!(claims["aal"], "aal1");
        let iat = claims["iat"].as_i64().expect("iat");
        assert_eq!(claims["nbf"], iat);
        assert_eq!(claims["exp"], iat + 60, "Kratos's default TTL is a minute");
        assert!((OffsetDateTime::now_utc().unix_timestamp() - iat).abs() <= 5);

        // The name is URL-decoded; the subject can be the external id.
        let ext = kratos.session().external_id("crm-42").create();
        let r = whoami_with(
            &kratos,
            "tokenize_as=by+external%20id",
            &[("X-Session-Token", &ext.token)],
        )
        .await;
        assert_eq!(r.status(), 200);
        let body = json_body(r).await;
        assert_eq!(body["identity"]["external_id"], "crm-42");
        let (header, claims) = decode(body["tokenized"].as_str().expect("a JWT"));
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(claims["sub"], "crm-42");
        assert_eq!(claims["exp"], claims["iat"].as_i64().expect("iat") + 300);
        assert_eq!(kratos.calls(Endpoint::Whoami), 3);
    }

    #[tokio::test]
    async fn unknown_template_is_a_400_after_the_session_checks() {
        let kratos = tokenized_stand_in().await;
        let s = kratos.create_session();

        let r = whoami_with(
            &kratos,
            "tokenize_as=nope",
            &[("X-Session-Token", &s.token)],
        )
        .await;
        assert_eq!(r.status(), 400);
        assert_eq!(header(&r, "x-kratos-authenticated-identity-id"), None);
        assert_eq!(header(&r, "ory-session-cache-for"), None);
        assert_eq!(text(r).await, UNKNOWN_TEMPLATE);
        assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &s.id), 1);

        // Kratos looks the session up first: no session is a 401, whatever the template.
        let r = whoami_with(&kratos, "tokenize_as=nope", &[]).await;
        assert_eq!(r.status(), 401);
        assert_eq!(text(r).await, UNAUTHORIZED);

        // The 400 comes before the cookie is refreshed: no Set-Cookie after an extend.
        let later = s.expires_at + time::Duration::hours(1);
        assert!(kratos.set_expires_at(&s.id, later));
        let cookie = [("Cookie", s.cookie_header())];
        let cookie = [(cookie[0].0, cookie[0].1.as_str())];
        let r = whoami_with(&kratos, "tokenize_as=nope", &cookie).await;
        assert_eq!(r.status(), 400);
        assert_eq!(header(&r, "set-cookie"), None);
        let r = whoami_with(&kratos, "tokenize_as=api", &cookie).await;
        assert_eq!(r.status(), 200);
        assert!(header(&r, "set-cookie").is_some());

        // An empty name asks for no tokenization; the first `tokenize_as` counts, as in Go.
        let r = whoami_with(&kratos, "tokenize_as=", &[("X-Session-Token", &s.token)]).await;
        assert_eq!(r.status(), 200);
        assert!(json_body(r).await.get("tokenized").is_none());
        let r = whoami_with(
            &kratos,
            "tokenize_as=nope&tokenize_as=api",
            &[("X-Session-Token", &s.token)],
        )
        .await;
        assert_eq!(r.status(), 400);

        // `subject_source: external_id` without one: Kratos's 400, no fallback to the id.
        let r = whoami_with(
            &kratos,
            "tokenize_as=by%20external%20id",
            &[("X-Session-Token", &s.token)],
        )
        .await;
        assert_eq!(r.status(), 400);
        assert_eq!(
            json_body(r).await["error"]["reason"],
            "The session's identity does not have an external ID set, but it is required for the subject claim."
        );
    }

    #[tokio::test]
    async fn jwks_url_serves_counts_and_takes_faults() {
        let kratos = tokenized_stand_in().await;
        assert_eq!(kratos.jwks_url("nope"), None);
        assert_eq!(kratos.jwks("nope"), None);
        let url = kratos.jwks_url("api").expect("registered");
        assert_eq!(
            url,
            format!("{}/.well-known/stand-in/jwks/api.json", kratos.public_url())
        );

        let r = send(client().get(&url)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        let served = json_body(r).await;
        assert_eq!(Some(served.clone()), kratos.jwks("api"));
        let jwk = &served["keys"][0];
        assert_eq!(
            keys(jwk),
            keys(&json!({"kty":0,"crv":0,"x":0,"y":0,"kid":0,"alg":0,"use":0}))
        );
        assert_eq!(
            (&jwk["kty"], &jwk["crv"], &jwk["use"]),
            (&json!("EC"), &json!("P-256"), &json!("sig"))
        );
        assert_eq!(kratos.calls(Endpoint::Jwks), 1);

        let spaced = kratos.jwks_url("by external id").expect("registered");
        assert!(
            spaced.ends_with("/jwks/by%20external%20id.json"),
            "{spaced}"
        );
        let okp = json_body(send(client().get(&spaced)).await).await;
        assert_eq!(okp["keys"][0]["kty"], "OKP");
        assert_eq!(okp["keys"][0]["crv"], "Ed25519");

        let unknown = format!(
            "{}/.well-known/stand-in/jwks/nope.json",
            kratos.public_url()
        );
        assert_eq!(send(client().get(&unknown)).await.status(), 404);
        assert_eq!(kratos.calls(Endpoint::Jwks), 3);

        kratos.set_fault(
            Endpoint::Jwks,
            Fault::Status(http::StatusCode::SERVICE_UNAVAILABLE),
        );
        assert_eq!(send(client().get(&url)).await.status(), 503);
        kratos.clear_fault(Endpoint::Jwks);
        assert_eq!(send(client().get(&url)).await.status(), 200);
        assert_eq!(kratos.calls(Endpoint::Jwks), 5);
        assert_eq!(kratos.requests(Endpoint::Jwks).len(), 5);
        assert_eq!(kratos.calls(Endpoint::Whoami), 0);
    }

    #[tokio::test]
    async fn rotation_and_hand_made_tokens() {
        let kratos = tokenized_stand_in().await;
        let s = kratos.create_session();
        let old_kid = kratos.jwks("api").expect("registered")["keys"][0]["kid"].clone();

        let new_kid = kratos.rotate_key("api").expect("registered");
        assert_eq!(kratos.rotate_key("nope"), None);
        let served =
            json_body(send(client().get(kratos.jwks_url("api").expect("url"))).await).await;
        let kids: Vec<&Value> = served["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| &k["kid"])
            .collect();
        assert_eq!(kids, [&json!(new_kid), &old_kid]);

        let body = json_body(
            whoami_with(&kratos, "tokenize_as=api", &[("X-Session-Token", &s.token)]).await,
        )
        .await;
        let (header, _) = decode(body["tokenized"].as_str().expect("a JWT"));
        assert_eq!(header["kid"], new_kid.as_str());

        let claims = json!({"iss": "https://elsewhere.example/", "exp": 0, "sub": s.identity_id});
        let jwt = kratos.sign_claims("api", &claims).expect("signed");
        let (header, signed) = decode(&jwt);
        assert_eq!(
            header,
            json!({"alg": "ES256", "kid": new_kid, "typ": "JWT"})
        );
        assert_eq!(signed, claims);
        assert_eq!(kratos.sign_claims("nope", &claims), None);
    }
}
