//! What the Kratos stand-in received: the whoami requests' headers, and waiting for them.

use std::time::Duration;

use http::HeaderMap;
use kratos_stand_in::{Endpoint, KratosStandIn};

/// The headers of the `index`-th whoami Kratos received.
pub fn whoami_headers(kratos: &KratosStandIn, index: usize) -> HeaderMap {
    let requests = kratos.requests(Endpoint::Whoami);
    requests
        .get(index)
        .unwrap_or_else(|| panic!("whoami #{index} was not received ({} were)", requests.len()))
        .headers
        .clone()
}

/// All values of one header, as text.
pub fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().expect("ASCII header").to_owned())
        .collect()
}

/// Kratos received exactly this token, as `X-Session-Token`, and no other credential.
#[track_caller]
pub fn assert_kratos_got_token_only(headers: &HeaderMap, token: &str) {
    assert_eq!(values(headers, "x-session-token"), [token]);
    assert_eq!(values(headers, "cookie"), Vec::<String>::new());
    assert_eq!(values(headers, "authorization"), Vec::<String>::new());
}

/// Kratos received exactly one `Cookie` header, `name=value`, and no other credential.
#[track_caller]
pub fn assert_kratos_got_cookie_only(headers: &HeaderMap, name_value: &str) {
    assert_eq!(values(headers, "cookie"), [name_value]);
    assert_eq!(values(headers, "x-session-token"), Vec::<String>::new());
    assert_eq!(values(headers, "authorization"), Vec::<String>::new());
}

/// Waits (at most 5 s) until Kratos has received `count` whoami calls. For ordering a test's
/// steps, never for asserting speed.
pub async fn wait_for_whoami_calls(kratos: &KratosStandIn, count: usize) {
    wait_for_calls(kratos, Endpoint::Whoami, count).await;
}

/// Waits (at most 5 s) until Kratos has received `count` calls to `endpoint`.
pub async fn wait_for_calls(kratos: &KratosStandIn, endpoint: Endpoint, count: usize) {
    for _ in 0..1000 {
        if kratos.calls(endpoint) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "Kratos received {} calls to {endpoint:?}, expected {count}",
        kratos.calls(endpoint)
    );
}
