//! Any headers into `find_credential`, with the default cookie names and with names the input
//! chooses: it must answer (a credential, none, or a typed refusal) and never panic, and what it
//! answers must hold together.
#![no_main]

use arbitrary::Arbitrary;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_kratos::credentials::{
    find_credential, CookieNames, CredentialSource, MAX_SESSION_COOKIES,
};

/// The headers `find_credential` reads, and one it should ignore.
#[derive(Arbitrary, Debug)]
enum Name {
    Cookie,
    SessionToken,
    Authorization,
    Other,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    headers: Vec<(Name, &'a [u8])>,
    exact: &'a str,
    prefix: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        // Bytes HTTP forbids in a header value never reach a service.
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = match name {
            Name::Cookie => header::COOKIE,
            Name::SessionToken => HeaderName::from_static("x-session-token"),
            Name::Authorization => header::AUTHORIZATION,
            Name::Other => header::ACCEPT,
        };
        headers.append(name, value);
    }
    // find_credential takes names unchecked (the layer's builder checks them), so odd ones
    // (empty, spaces, non-ASCII) are fair input here.
    let custom = CookieNames::exact(input.exact).or_prefix(input.prefix);
    for names in [CookieNames::default(), custom] {
        check(&headers, &names);
    }
    // Kratos ignores other cookies, whatever bytes they hold: adding some around every Cookie
    // header's pairs changes nothing.
    let mut more = HeaderMap::new();
    for (name, value) in &headers {
        let value = if name == header::COOKIE {
            let bytes = [
                b"fuzz_a=\xff\xfe; ",
                value.as_bytes(),
                b"; fuzz_b=caf\xc3\xa9",
            ]
            .concat();
            HeaderValue::from_bytes(&bytes).expect("still a header value")
        } else {
            value.clone()
        };
        more.append(name, value);
    }
    let names = CookieNames::default();
    assert_eq!(
        find_credential(&headers, &names),
        find_credential(&more, &names)
    );
});

fn check(headers: &HeaderMap, names: &CookieNames) {
    let found = find_credential(headers, names);
    assert_eq!(
        found,
        find_credential(headers, names),
        "the same headers, another answer"
    );
    match found {
        Ok(Some(credential)) => {
            let debug = format!("{credential:?}");
            assert!(debug.contains("[redacted]"), "{debug}");
            match credential.source() {
                CredentialSource::SessionToken => {
                    assert!(headers.contains_key("x-session-token"));
                }
                CredentialSource::Cookie => {
                    let forwarded: Vec<&str> = credential.cookie_names().collect();
                    assert!((1..=MAX_SESSION_COOKIES).contains(&forwarded.len()));
                }
                CredentialSource::Bearer => {
                    assert!(headers.contains_key(header::AUTHORIZATION));
                }
                _ => {}
            }
        }
        Ok(None) => {}
        Err(malformed) => assert!(!malformed.to_string().is_empty()),
    }
}
