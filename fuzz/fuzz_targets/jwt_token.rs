//! Any bytes as the bearer token in front of `JwtLayer`, with a fixed public key set: it must
//! answer 401 (nothing here can sign for that key) and never panic, whatever the token's
//! segments, base64, JSON, algorithm or size.
#![no_main]

use std::sync::OnceLock;

use http::{header, HeaderValue, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};
use tower_kratos::jwt::JwtLayer;

/// RFC 7517's example P-256 key (A.1), and an RSA key's slot left empty.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"1","alg":"ES256",
  "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

struct Setup {
    runtime: tokio::runtime::Runtime,
    layer: JwtLayer,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| Setup {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        layer: JwtLayer::builder("http://localhost/")
            .jwks(JWKS)
            .build()
            .expect("the layer"),
    })
}

fuzz_target!(|token: &[u8]| {
    let setup = setup();
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(token);
    let Ok(value) = HeaderValue::from_bytes(&value) else {
        return;
    };
    let mut request = Request::new(String::new());
    request.headers_mut().insert(header::AUTHORIZATION, value);
    let service = setup.layer.layer(tower::service_fn(|_: Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let status = setup
        .runtime
        .block_on(service.oneshot(request))
        .expect("infallible")
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
});
