//! The reference app's live routes (`examples/axum_app.rs`) as a child process, over real HTTP,
//! against the test's own Kratos stand-in: `GET /live/events` streams `tick` events to a caller
//! with a session, refuses one without, and ends when the session is signed out elsewhere. (The
//! WebSocket, `/live/ws`, is driven from a browser in `tests/browser.rs`.)

mod app_support;

use std::time::Duration;

use app_support::App;
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};

/// A tick every 500 ms: two take a second; this is far above, and only stops a hung stream.
const STREAM_WITHIN: Duration = Duration::from_secs(10);

fn app(kratos: &KratosStandIn) -> App {
    App::spawn(&[("KRATOS_PUBLIC_URL", &kratos.public_url())])
}

async fn events(app: &App, session: Option<&TestSession>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(app.url("/live/events"));
    if let Some(session) = session {
        request = request.header("x-session-token", &session.token);
    }
    request.send().await.expect("a request to the app")
}

/// What the stream sent once it has sent `ticks` tick events; `Err` with what it sent when it
/// ends first.
async fn read_ticks(response: &mut reqwest::Response, ticks: usize) -> Result<String, String> {
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(STREAM_WITHIN, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("nothing streamed within {STREAM_WITHIN:?}: {text:?}"));
        match chunk {
            Ok(Some(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) | Err(_) => return Err(text),
        }
        if text.matches("event: tick\n").count() >= ticks {
            return Ok(text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_streams_ticks_with_a_session_and_401s_without() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = app(&kratos);
    let session = kratos.create_session();

    let mut response = events(&app, Some(&session)).await;

    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").cloned();
    assert_eq!(
        content_type.as_ref().and_then(|value| value.to_str().ok()),
        Some("text/event-stream"),
    );
    let text = read_ticks(&mut response, 2)
        .await
        .unwrap_or_else(|text| panic!("the stream ended: {text:?}"));
    assert!(text.starts_with("event: tick\ndata: 1\n\n"), "{text:?}");
    // One whoami for the session: the stream is not a request per tick.
    assert_eq!(kratos.calls_for_session(Endpoint::Whoami, &session.id), 1);

    let refused = events(&app, None).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        1,
        "no credential, no whoami"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_end_when_the_session_is_signed_out_from_another() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let app = app(&kratos);
    let watched = kratos.create_session();
    let other = kratos.session().identity(&watched.identity_id).create();
    let mut response = events(&app, Some(&watched)).await;
    assert_eq!(response.status(), 200);
    read_ticks(&mut response, 1)
        .await
        .unwrap_or_else(|text| panic!("the stream ended before a tick: {text:?}"));

    let revoked = reqwest::Client::new()
        .delete(app.url(&format!("/me/sessions/{}", watched.id)))
        .header("x-session-token", &other.token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 204);

    // The layer checks the revoked session with Kratos, then ends the stream: within a second
    // on loopback (the library's word), well within this.
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        read_ticks(&mut response, usize::MAX),
    )
    .await
    .expect("the stream still runs 5 s after the revocation");
    assert!(ended.is_err(), "{ended:?}");
    assert!(
        !kratos
            .session_state(&watched.id)
            .expect("the session")
            .active
    );
}
