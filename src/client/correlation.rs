//! What ties a whoami call to the app's request, passed on to Kratos so one request can be
//! followed through both: `X-Request-ID` (Kratos logs it) and W3C Trace Context's `traceparent`
//! and `tracestate` (Kratos's own spans then land in the app's trace). Each only when
//! well-formed and small: a caller cannot make the call's headers too large for Kratos or a
//! proxy in front of it, and a malformed one is dropped, never forwarded and never an error.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The longest `X-Request-ID` passed on, in bytes. Request ids are UUIDs or similar (36 bytes).
const MAX_REQUEST_ID_LEN: usize = 200;

/// The longest `tracestate` passed on, in bytes: the W3C recommendation says a vendor should
/// propagate at least 512 characters, and may drop the whole header past that.
const MAX_TRACESTATE_LEN: usize = 512;

/// The most list members a `tracestate` may have (W3C Trace Context, `tracestate` header).
const MAX_TRACESTATE_MEMBERS: usize = 32;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request's correlation headers that may be passed on to Kratos.
#[derive(Clone, Debug, Default)]
pub(crate) struct Correlation {
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}

impl Correlation {
    /// None to pass on: for calls not made for a request (a watch's check, a lifecycle call).
    pub(crate) const NONE: Self = Self {
        request_id: None,
        traceparent: None,
        tracestate: None,
    };

    /// What of these request headers may be passed on. A header sent twice is not.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let request_id = only(headers, &REQUEST_ID).filter(is_request_id);
        let traceparent = only(headers, &TRACEPARENT).filter(is_traceparent);
        // Without a valid traceparent, tracestate means nothing (W3C: it must be ignored).
        let tracestate = traceparent
            .as_ref()
            .and_then(|_| only(headers, &TRACESTATE))
            .filter(is_tracestate);
        Self {
            request_id,
            traceparent,
            tracestate,
        }
    }

    /// Adds the headers to a call to Kratos.
    pub(super) fn apply(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (name, value) in [
            (REQUEST_ID, &self.request_id),
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
        ] {
            if let Some(value) = value {
                request = request.header(name, value.clone());
            }
        }
        request
    }
}

/// The header's value when the request has exactly one.
fn only(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.clone()),
        _ => None,
    }
}

/// Short, and visible ASCII only.
fn is_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(u8::is_ascii_graphic)
}

/// `version-traceid-parentid-flags` as W3C Trace Context writes it: 2, 32, 16 and 2 lowercase
/// hex digits; version `ff` and all-zero ids are invalid. A later version's extra fields are
/// not passed on: the header is dropped, as the version-00 parser the spec describes would
/// drop what it cannot read.
fn is_traceparent(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != 55 {
        return false;
    }
    let hex = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
    };
    let zeros = |range: std::ops::Range<usize>| bytes[range].iter().all(|byte| *byte == b'0');
    let dashes = bytes[2] == b'-' && bytes[35] == b'-' && bytes[52] == b'-';
    dashes
        && hex(0..2)
        && &bytes[0..2] != b"ff"
        && hex(3..35)
        && !zeros(3..35)
        && hex(36..52)
        && !zeros(36..52)
        && hex(53..55)
}

/// At most 512 bytes and 32 members, printable ASCII (W3C: keys and values are printable
/// ASCII, members separated by commas with optional spaces and tabs).
fn is_tracestate(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TRACESTATE_LEN
        && bytes
            .iter()
            .all(|byte| (0x20..=0x7e).contains(byte) || *byte == b'\t')
        && bytes.iter().filter(|byte| **byte == b',').count() < MAX_TRACESTATE_MEMBERS
        && bytes.split(|byte| *byte == b',').all(|member| {
            let member = member.trim_ascii();
            member.is_empty() || member.contains(&b'=')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn only_short_visible_request_ids_are_passed_on() {
        for (id, passed) in [
            ("3f1c2b9e-1f2d-4c1a-9d7e-0b5c2f6a1e11", true),
            ("", false),
            ("has space", false),
            (&"r".repeat(MAX_REQUEST_ID_LEN), true),
            (&"r".repeat(MAX_REQUEST_ID_LEN + 1), false),
        ] {
            let correlation = Correlation::of(&headers(&[("x-request-id", id)]));
            assert_eq!(correlation.request_id.is_some(), passed, "{id:?}");
        }
        let twice = headers(&[("x-request-id", "a"), ("x-request-id", "b")]);
        assert!(Correlation::of(&twice).request_id.is_none());
    }

    #[test]
    fn a_well_formed_traceparent_and_its_tracestate_are_passed_on() {
        let correlation = Correlation::of(&headers(&[
            ("traceparent", PARENT),
            ("tracestate", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
        ]));
        assert_eq!(correlation.traceparent.as_ref().unwrap(), PARENT);
        assert!(correlation.tracestate.is_some());
    }

    #[test]
    fn malformed_or_oversized_trace_headers_are_dropped() {
        let bad_parents = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ];
        for parent in bad_parents {
            let correlation = Correlation::of(&headers(&[
                ("traceparent", parent),
                ("tracestate", "rojo=1"),
            ]));
            assert!(correlation.traceparent.is_none(), "{parent:?}");
            assert!(
                correlation.tracestate.is_none(),
                "without a parent: {parent:?}"
            );
        }
        let long = format!("k={}", "v".repeat(MAX_TRACESTATE_LEN));
        let many = vec!["k=v"; MAX_TRACESTATE_MEMBERS + 1].join(",");
        for state in [long.as_str(), many.as_str(), "no-equals-sign", "k=v\u{7f}"] {
            let Ok(value) = HeaderValue::from_str(state) else {
                continue;
            };
            assert!(!is_tracestate(&value), "{state:?}");
        }
        let twice = headers(&[
            ("traceparent", PARENT),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]);
        let correlation = Correlation::of(&twice);
        assert!(correlation.traceparent.is_some() && correlation.tracestate.is_none());
    }
}
