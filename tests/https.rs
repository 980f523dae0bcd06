//! Kratos over HTTPS: the stand-in serves a certificate from a test CA made with rcgen. With the
//! CA added as a root the layer validates sessions; without it, or for a certificate naming
//! another host, the TLS handshake fails and the caller gets 503 (an outage), never 401.

use test_support as support;

use kratos_stand_in::{Endpoint, KratosStandIn};
use support::{
    app, assert_kratos_got_cookie_only, assert_kratos_got_token_only, assert_session,
    assert_unavailable, default_app, get,
    pki::{pki, Pki},
    send, whoami_headers, with_token, Answer, App,
};
use tower_kratos::outcome::Unavailable;
use tower_kratos::{KratosLayer, Outcome};

async fn https_stand_in(pki: &Pki) -> KratosStandIn {
    let kratos = KratosStandIn::builder()
        .tls(&pki.server_cert_pem, &pki.server_key_pem)
        .start()
        .await
        .expect("HTTPS stand-in");
    assert!(kratos.public_url().starts_with("https://127.0.0.1:"));
    kratos
}

fn trusting(public_url: String, pki: &Pki) -> App {
    let root = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA PEM");
    app(KratosLayer::builder(public_url)
        .add_root_certificate(root)
        .build()
        .expect("layer"))
}

#[track_caller]
fn assert_tls_outage(reply: &Answer) {
    assert_unavailable(reply);
    assert!(
        matches!(
            reply.outcome(),
            Outcome::Unavailable(Unavailable::Transport)
        ),
        "{:?}",
        reply.outcome()
    );
}

#[tokio::test]
async fn a_trusted_https_kratos_validates_sessions() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let kratos = https_stand_in(&pki).await;
    let alice = kratos.create_session();
    let app = trusting(kratos.public_url(), &pki);

    let reply = send(&app, with_token("/", &alice)).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    // The stand-in records a request only after the TLS handshake: this call came over HTTPS.
    assert_eq!(kratos.calls(Endpoint::Whoami), 1);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    assert_kratos_got_token_only(&whoami_headers(&kratos, 0), &alice.token);
}

#[tokio::test]
async fn a_trusted_https_kratos_is_reached_by_host_name() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let kratos = https_stand_in(&pki).await;
    let alice = kratos.create_session();
    let by_name = format!("https://localhost:{}", kratos.addr().port());
    let app = trusting(by_name, &pki);

    let reply = send(&app, get("/", &[("cookie", &alice.cookie_header())])).await;

    assert_session(&reply, &alice.id, &alice.identity_id);
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 1);
    assert_kratos_got_cookie_only(&whoami_headers(&kratos, 0), &alice.cookie_header());
}

#[tokio::test]
async fn an_untrusted_https_kratos_is_an_outage_not_a_401() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let kratos = https_stand_in(&pki).await;
    let alice = kratos.create_session();
    let app = default_app(&kratos);

    let reply = send(&app, with_token("/", &alice)).await;

    assert_tls_outage(&reply);
    assert_eq!(kratos.calls(Endpoint::Whoami), 0, "no request got past TLS");
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &alice.id), 0);
}

#[tokio::test]
async fn a_certificate_for_another_host_is_an_outage_not_a_401() {
    // Trusted CA, but the certificate names another host than the one dialled.
    let pki = pki(&["kratos.example.org"]);
    let kratos = KratosStandIn::builder()
        .tls(&pki.server_cert_pem, &pki.server_key_pem)
        .start()
        .await
        .expect("HTTPS stand-in");
    let alice = kratos.create_session();
    let app = trusting(kratos.public_url(), &pki);

    let reply = send(&app, with_token("/", &alice)).await;

    assert_tls_outage(&reply);
    assert_eq!(kratos.calls(Endpoint::Whoami), 0);
}
