//! Hostile input, as properties checked on generated cases in every `cargo test`.
//!
//! Credentials: whatever bytes the `Cookie`, `X-Session-Token` and `Authorization` headers hold,
//! `find_credential` returns a typed answer and never panics; where the input is well formed the
//! answer is the one Kratos's `extractToken` gives (`session/manager_http.go` `extractToken`): a
//! non-empty `X-Session-Token` decides alone, then the first cookie of each session name, then
//! `Bearer <token>` split on single spaces. The last credential property drives the layer
//! against the stand-in on loopback and checks what Kratos received.
//!
//! Sessions: whatever a mangled whoami body holds, parsing it is `Ok` or a serde error, never a
//! panic; every body the lenient model promises to accept (only `id` required, unknown fields,
//! odd timestamps and `null` lists tolerated) parses and keeps its ids.
//!
//! A failure prints the smallest input proptest could shrink it to.

use test_support as support;

use std::{collections::BTreeMap, fmt, ops::Deref};

use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use kratos_stand_in::Endpoint;
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::Value;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tower::Layer;
use tower_kratos::{
    credentials::{
        find_credential, CookieNames, Credential, CredentialSource, MalformedCredential,
        MAX_CREDENTIAL_LEN, MAX_FORWARDED_COOKIE_LEN, MAX_SESSION_COOKIES,
    },
    session::Session,
};

use support::{kratos, layer, send, Recorder};

// ---------------------------------------------------------------------------------------------
// Credentials: generators

/// A cookie-name setting and the names it should recognise, written out independently of
/// `CookieNames` so the properties do not trust the code they check.
#[derive(Clone, Copy, Debug)]
struct Naming {
    exact: &'static [&'static str],
    prefixes: &'static [&'static str],
}

/// Self-hosted Kratos's cookie and Ory Network's `ory_session_<slug>`.
const DEFAULT_NAMING: Naming = Naming {
    exact: &["ory_kratos_session"],
    prefixes: &["ory_session_"],
};

/// A custom setting, under which the default names are just other cookies.
const CUSTOM_NAMING: Naming = Naming {
    exact: &["sid", "legacy_sid"],
    prefixes: &["app_"],
};

impl Naming {
    fn config(self) -> CookieNames {
        let mut names = CookieNames::exact(self.exact[0]);
        for exact in &self.exact[1..] {
            names = names.or_exact(*exact);
        }
        for prefix in self.prefixes {
            names = names.or_prefix(*prefix);
        }
        names
    }

    fn is_session_cookie(self, name: &str) -> bool {
        self.exact.contains(&name)
            || self
                .prefixes
                .iter()
                .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix))
    }
}

fn naming() -> impl Strategy<Value = Naming> {
    prop_oneof![Just(DEFAULT_NAMING), Just(CUSTOM_NAMING)]
}

fn session_name(naming: Naming) -> impl Strategy<Value = String> {
    let exact = prop::sample::select(naming.exact.to_vec()).prop_map(str::to_owned);
    let prefixed = (
        prop::sample::select(naming.prefixes.to_vec()),
        "[A-Za-z0-9_-]{1,12}",
    )
        .prop_map(|(prefix, slug)| format!("{prefix}{slug}"));
    prop_oneof![exact, prefixed]
}

/// Names that are not session cookies under `naming`, near misses first.
fn unrelated_name(naming: Naming) -> impl Strategy<Value = String> {
    let near_misses = prop::sample::select(vec![
        "ory_session_",
        "ORY_KRATOS_SESSION",
        "ory_kratos_sessio",
        "ory_kratos_session_",
        "xory_kratos_session",
        "Ory_session_x",
        "ory_kratos_session",
        "ory_session_x",
        "sid",
        "SID",
        "app_",
        "sid_",
        "xapp_1",
    ])
    .prop_map(str::to_owned);
    prop_oneof![near_misses, "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}"]
        .prop_filter("not a session cookie", move |name| {
            !naming.is_session_cookie(name)
        })
}

/// Any byte an HTTP header value may hold: tab, space, visible ASCII and obs-text (0x80-0xFF,
/// which browsers send for cookies set with UTF-8 in them).
fn value_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff]
}

/// Header bytes, shown as an escaped byte string when a case fails.
#[derive(Clone, PartialEq, Eq)]
struct Raw(Vec<u8>);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl Deref for Raw {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl From<String> for Raw {
    fn from(text: String) -> Self {
        Self(text.into_bytes())
    }
}

/// Header value bytes without `;`, so they stay one piece of a `Cookie` header.
fn junk(max: usize) -> impl Strategy<Value = Raw> {
    prop::collection::vec(
        value_byte().prop_map(|b| if b == b';' { b',' } else { b }),
        0..max,
    )
    .prop_map(Raw)
}

/// RFC 6265 cookie-octets.
const COOKIE_OCTET: &str = r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]";

/// A valid cookie value, sometimes in the one pair of double quotes RFC 6265 allows.
fn cookie_value() -> impl Strategy<Value = String> {
    let bare = || {
        proptest::string::string_regex(&format!("{COOKIE_OCTET}{{1,48}}")).expect("a valid pattern")
    };
    prop_oneof![3 => bare(), 1 => bare().prop_map(|value| format!("\"{value}\""))]
}

/// A valid session token: visible ASCII, no spaces.
fn token() -> impl Strategy<Value = String> {
    "[!-~]{1,48}"
}

/// Optional whitespace (RFC 7230 OWS).
fn ows() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\t", "  ", " \t"])
}

/// `;` with assorted whitespace, empty pieces included.
fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![";", "; ", "; ", " ; ", ";\t", ";;", "; ;  ", ";  "])
}

/// A `;`-separated piece of a `Cookie` header that is not a session cookie: a pair with an
/// unrelated name and any value, or junk without `=`.
fn unrelated_piece(naming: Naming) -> impl Strategy<Value = Raw> {
    let pair = (ows(), unrelated_name(naming), ows(), junk(24)).prop_map(
        |(before, name, after, value)| {
            let name = [before.as_bytes(), name.as_bytes(), after.as_bytes()].concat();
            pair(&name, &value)
        },
    );
    let bare = junk(16).prop_map(|Raw(bytes)| {
        Raw(bytes
            .into_iter()
            .map(|b| if b == b'=' { b'-' } else { b })
            .collect())
    });
    prop_oneof![4 => pair, 1 => bare]
}

/// `name=value`.
fn pair(name: &[u8], value: &[u8]) -> Raw {
    Raw([name, b"=", value].concat())
}

/// `name=value` with whitespace around each part, as a sloppy client might send it.
fn session_piece(name: &str, value: &str) -> impl Strategy<Value = Raw> {
    let (name, value) = (name.to_owned(), value.to_owned());
    [ows(), ows(), ows(), ows()]
        .prop_map(move |[a, b, c, d]| Raw::from(format!("{a}{name}{b}={c}{value}{d}")))
}

/// How a piece joins the one before it: a separator, or the start of another `Cookie` header
/// (HTTP/2 sends one header per cookie).
#[derive(Clone, Debug)]
enum Glue {
    Separator(&'static str),
    NextHeader,
}

fn glue() -> impl Strategy<Value = Glue> {
    prop_oneof![3 => separator().prop_map(Glue::Separator), 1 => Just(Glue::NextHeader)]
}

/// `Cookie` header values made of these pieces, in order.
fn render(pieces: &[(Raw, Glue)]) -> Vec<Raw> {
    let mut headers: Vec<Raw> = Vec::new();
    for (piece, glue) in pieces {
        match (headers.last_mut(), glue) {
            (Some(Raw(current)), Glue::Separator(separator)) => {
                current.extend_from_slice(separator.as_bytes());
                current.extend_from_slice(piece);
            }
            _ => headers.push(piece.clone()),
        }
    }
    headers
}

/// Pieces with a glue each.
fn glued(pieces: Vec<Raw>) -> impl Strategy<Value = Vec<(Raw, Glue)>> {
    let count = pieces.len();
    prop::collection::vec(glue(), count)
        .prop_map(move |glues| pieces.iter().cloned().zip(glues).collect())
}

/// A header map with these headers, in order. Values are bytes HTTP allows.
fn header_map(headers: &[(&str, Raw)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_bytes(value).expect("a value HTTP allows"),
        );
    }
    map
}

fn cookie_headers(cookies: Vec<Raw>) -> Vec<(&'static str, Raw)> {
    cookies.into_iter().map(|value| ("cookie", value)).collect()
}

/// What Kratos decides about an `X-Session-Token` value, from Kratos's `extractToken`: used alone when non-empty
/// (after the whitespace HTTP strips), refused here when it cannot be a token. `None`: empty, so
/// the next source decides.
fn session_token_verdict(raw: &[u8]) -> Option<Result<Credential, MalformedCredential>> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Some(Err(MalformedCredential::NotText));
    };
    if !text.is_ascii() {
        return Some(Err(MalformedCredential::NotText));
    }
    let token = text.trim_matches([' ', '\t']);
    if token.is_empty() {
        None
    } else if token.len() > MAX_CREDENTIAL_LEN {
        Some(Err(MalformedCredential::TooLong))
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some(Err(MalformedCredential::InvalidCharacters))
    } else {
        Some(Ok(Credential::session_token(token).expect("a valid token")))
    }
}

/// Whether Kratos's `bearerTokenFromRequest` takes this `Authorization` value: split on single
/// spaces into exactly two parts, the scheme `bearer` in any case.
fn kratos_bearer(value: &str) -> Option<&str> {
    let parts: Vec<&str> = value.split(' ').collect();
    match parts.as_slice() {
        [scheme, token] if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Some(token)
        }
        _ => None,
    }
}

/// A value of `length` bytes repeating a generated pattern: as hostile as random bytes for a
/// parser that looks at each byte, and far cheaper to generate and shrink.
fn large(
    pattern: impl Strategy<Value = Vec<u8>>,
    length: std::ops::Range<usize>,
) -> impl Strategy<Value = Raw> {
    (pattern, length)
        .prop_map(|(pattern, length)| Raw(pattern.iter().copied().cycle().take(length).collect()))
}

/// Any header the credential code may see, with any bytes HTTP allows; sometimes large.
fn any_header(naming: Naming) -> impl Strategy<Value = (&'static str, Raw)> {
    let name = prop::sample::select(vec![
        "cookie",
        "cookie",
        "x-session-token",
        "authorization",
        "accept",
    ]);
    let session_cookie =
        (session_name(naming), junk(24)).prop_map(|(name, value)| pair(name.as_bytes(), &value));
    let value = prop_oneof![
        4 => junk(64),
        2 => session_cookie,
        1 => token().prop_map(|token| Raw::from(format!("Bearer {token}"))),
        1 => large(prop::collection::vec(value_byte(), 1..16), 4000..5000),
    ];
    (name, value)
}

// ---------------------------------------------------------------------------------------------
// Credentials: properties

/// `pieces` joined by `; ` into one header value.
fn joined(pieces: &[Raw]) -> Raw {
    let bytes: Vec<&[u8]> = pieces.iter().map(|piece| piece.as_slice()).collect();
    Raw(bytes.join(&b"; "[..]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any headers at all: a typed answer, the same twice, consistent with the request, and a
    /// `Debug` that shows no secret.
    #[test]
    fn any_headers_get_a_typed_answer_and_never_a_panic(
        naming in naming(),
        headers in naming().prop_flat_map(|n| prop::collection::vec(any_header(n), 0..8)),
    ) {
        let map = header_map(&headers);
        let found = find_credential(&map, &naming.config());
        prop_assert_eq!(&found, &find_credential(&map, &naming.config()));
        match found {
            Ok(None) => {}
            Ok(Some(credential)) => {
                let debug = format!("{credential:?}");
                prop_assert!(debug.contains("[redacted]"), "{}", debug);
                match credential.source() {
                    CredentialSource::SessionToken => {
                        prop_assert!(map.get("x-session-token").is_some());
                    }
                    CredentialSource::Cookie => {
                        let names: Vec<&str> = credential.cookie_names().collect();
                        prop_assert!((1..=MAX_SESSION_COOKIES).contains(&names.len()));
                        for (index, name) in names.iter().enumerate() {
                            prop_assert!(naming.is_session_cookie(name), "{} forwarded", name);
                            prop_assert!(!names[..index].contains(name), "{} twice", name);
                        }
                    }
                    CredentialSource::Bearer => {
                        let value = map.get("authorization").expect("an Authorization header");
                        let value = value.to_str().expect("a text Authorization header");
                        prop_assert!(kratos_bearer(value).is_some(), "{:?}", value);
                    }
                    other => prop_assert!(false, "unknown source {:?}", other),
                }
            }
            Err(malformed) => prop_assert!(!malformed.to_string().is_empty()),
        }
    }

    /// A non-empty first `X-Session-Token` decides alone, whatever else the request carries; an
    /// empty one is as if there were none (later ones are not read, as Go's `Header.Get`).
    #[test]
    fn a_non_empty_session_token_decides_alone(
        naming in naming(),
        raw in prop_oneof![
            (ows(), token(), ows()).prop_map(|(a, token, b)| Raw::from(format!("{a}{token}{b}"))),
            ows().prop_map(|ows| Raw::from(ows.to_owned())),
            prop::collection::vec(value_byte(), 0..48).prop_map(Raw),
            large(token().prop_map(String::into_bytes), 4090..4110),
        ],
        others in naming().prop_flat_map(|n| prop::collection::vec(any_header(n), 0..6)),
    ) {
        let mut headers = vec![("x-session-token", raw.clone())];
        headers.extend(others.iter().cloned());
        let found = find_credential(&header_map(&headers), &naming.config());
        match session_token_verdict(&raw) {
            Some(verdict) => prop_assert_eq!(found, verdict.map(Some)),
            None => {
                let mut without = others.clone();
                without.retain(|(name, _)| *name != "x-session-token");
                prop_assert_eq!(found, find_credential(&header_map(&without), &naming.config()));
            }
        }
    }

    /// A valid session cookie is found wherever it sits among other cookies (any bytes, any
    /// whitespace, split across `Cookie` headers), is taken exactly, beats Bearer, and later
    /// cookies of the same name (whatever their value) are ignored, as Kratos reads it.
    #[test]
    fn a_session_cookie_is_found_exactly_among_any_others_and_beats_bearer(
        (naming, name, value, cookies) in naming().prop_flat_map(|naming| {
            (Just(naming), session_name(naming), cookie_value())
        }).prop_flat_map(|(naming, name, value)| {
            let before = prop::collection::vec(unrelated_piece(naming), 0..6);
            let duplicate = junk(24).prop_map({
                let name = name.clone();
                move |value| pair(name.as_bytes(), &value)
            });
            let after = (
                prop::collection::vec(unrelated_piece(naming), 0..6),
                prop::collection::vec(duplicate, 0..3),
            )
                .prop_map(|(mut after, duplicates)| {
                    after.extend(duplicates);
                    after
                })
                .prop_shuffle();
            let pieces = (before, session_piece(&name, &value), after).prop_map(
                |(mut pieces, session, after)| {
                    pieces.push(session);
                    pieces.extend(after);
                    pieces
                },
            );
            (Just(naming), Just(name), Just(value), pieces.prop_flat_map(glued))
        }),
        bearer in prop::option::of(token()),
        empty_session_token in prop::option::of(ows()),
    ) {
        let mut headers = cookie_headers(render(&cookies));
        if let Some(token) = &bearer {
            headers.push(("authorization", Raw::from(format!("Bearer {token}"))));
        }
        if let Some(empty) = empty_session_token {
            headers.insert(0, ("x-session-token", Raw::from(empty.to_owned())));
        }
        let found = find_credential(&header_map(&headers), &naming.config());
        let expected = Credential::cookie(&name, &value).expect("a valid cookie");
        prop_assert_eq!(found, Ok(Some(expected)));
    }

    /// Adding cookies with other names, anywhere, never changes the answer (Kratos ignores
    /// them), whatever else the request holds.
    #[test]
    fn unrelated_cookies_change_nothing(
        (naming, pieces, glues) in naming().prop_flat_map(|naming| {
            let session_cookie = (
                session_name(naming),
                prop_oneof![cookie_value().prop_map(Raw::from), junk(24)],
            )
                .prop_map(|(name, value)| pair(name.as_bytes(), &value));
            let piece = prop_oneof![2 => session_cookie, 1 => junk(24)]
                .prop_map(|piece| (piece, false));
            let extra = unrelated_piece(naming).prop_map(|piece| (piece, true));
            prop::collection::vec(prop_oneof![piece, extra], 0..12).prop_flat_map(move |pieces| {
                let count = pieces.len();
                (Just(naming), Just(pieces), prop::collection::vec(glue(), count))
            })
        }),
        others in naming().prop_flat_map(|n| prop::collection::vec(any_header(n), 0..3)),
    ) {
        let others: Vec<_> = others.into_iter().filter(|(name, _)| *name != "cookie").collect();
        let headers = |keep_extras: bool| {
            let kept: Vec<(Raw, Glue)> = pieces
                .iter()
                .zip(&glues)
                .filter(|((_, extra), _)| keep_extras || !extra)
                .map(|((piece, _), glue)| (piece.clone(), glue.clone()))
                .collect();
            let mut headers = cookie_headers(render(&kept));
            headers.extend(others.iter().cloned());
            header_map(&headers)
        };
        prop_assert_eq!(
            find_credential(&headers(true), &naming.config()),
            find_credential(&headers(false), &naming.config())
        );
    }

    /// `Authorization` is read exactly as Kratos reads it: `bearer` in any case, one space, a
    /// token; any other shape is no credential.
    #[test]
    fn bearer_is_recognised_exactly_as_kratos_splits_it(
        scheme in prop_oneof![
            3 => prop::collection::vec(any::<bool>(), 6).prop_map(|upper| {
                "bearer".chars().zip(upper)
                    .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                    .collect::<String>()
            }),
            1 => prop::sample::select(
                vec!["Basic", "Bearer:", "Bearerx", "bear", "", "Token", " Bearer"],
            )
                .prop_map(str::to_owned),
        ],
        space in prop::sample::select(vec![" ", " ", " ", "", "  ", "\t", " \t"]),
        token in prop_oneof![
            3 => token(),
            1 => (token(), token()).prop_map(|(a, b)| format!("{a} {b}")),
            1 => token().prop_map(|token| format!("{token} ")),
            1 => token().prop_map(|token| format!("{token}\t")),
            1 => Just(String::new()),
        ],
    ) {
        let value = format!("{scheme}{space}{token}");
        let find = |value: String| {
            let headers = header_map(&[("authorization", Raw::from(value))]);
            find_credential(&headers, &CookieNames::default())
        };
        let found = find(value.clone());
        match kratos_bearer(&value) {
            // Kratos would look this token up: it is taken, or refused for what it holds.
            Some(token) => match Credential::session_token(token) {
                Ok(_) => {
                    let credential = found.expect("a valid token").expect("a credential");
                    prop_assert_eq!(credential.source(), CredentialSource::Bearer);
                    // The same token under another spelling of the scheme: an equal credential.
                    prop_assert_eq!(Ok(Some(credential)), find(format!("BEARER {token}")));
                }
                Err(malformed) => prop_assert_eq!(found, Err(malformed)),
            },
            None => prop_assert_eq!(found, Ok(None)),
        }
    }

    /// A session cookie value is taken when it is RFC 6265 cookie-octets (in at most one pair of
    /// quotes) and refused with the matching reason otherwise, whatever bytes it holds.
    #[test]
    fn a_session_cookie_value_is_taken_or_refused_for_a_reason(
        (naming, name) in naming().prop_flat_map(|naming| (Just(naming), session_name(naming))),
        value in prop_oneof![
            cookie_value().prop_map(Raw::from),
            junk(24),
            Just(Raw::from("\"\"".to_owned())),
            Just(Raw::from("\"".to_owned())),
        ],
    ) {
        let header = [b"theme=dark; ", pair(name.as_bytes(), &value).as_slice()].concat();
        let found = find_credential(&header_map(&[("cookie", Raw(header))]), &naming.config());
        let trimmed = value.trim_ascii();
        let inner = trimmed
            .strip_prefix(b"\"")
            .and_then(|rest| rest.strip_suffix(b"\""))
            .unwrap_or(trimmed);
        let octets = inner
            .iter()
            .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E));
        let expected = if trimmed.is_empty() || inner.is_empty() {
            Err(MalformedCredential::Empty)
        } else if trimmed.len() > MAX_CREDENTIAL_LEN {
            Err(MalformedCredential::TooLong)
        } else if !octets {
            Err(MalformedCredential::InvalidCharacters)
        } else {
            let value = std::str::from_utf8(trimmed).expect("ASCII");
            Ok(Some(Credential::cookie(&name, value).expect("a valid cookie")))
        };
        prop_assert_eq!(found, expected);
    }

    /// Every session cookie name is forwarded once, in the order first seen, up to
    /// `MAX_SESSION_COOKIES` and `MAX_FORWARDED_COOKIE_LEN` bytes; an exact-named session cookie
    /// is always among them, whatever number of prefix-matched ones come with it, and extras are
    /// dropped, never a reason to refuse.
    #[test]
    fn the_exact_session_cookie_is_always_forwarded_and_extras_dropped(
        naming in naming(),
        (distinct, repeats) in (0usize..=MAX_SESSION_COOKIES + 5).prop_flat_map(|count| {
            (Just(count), prop::collection::vec((0..count.max(1), any::<prop::sample::Index>()), 0..6))
        }),
        exact_at in prop::option::of(any::<prop::sample::Index>()),
        values in prop::collection::vec(
            prop_oneof![6 => cookie_value(), 1 => (500usize..3000).prop_map(|len| "v".repeat(len))],
            MAX_SESSION_COOKIES + 12,
        ),
    ) {
        let prefix = naming.prefixes[0];
        let exact = naming.exact[0];
        let mut names: Vec<String> = (0..distinct).map(|i| format!("{prefix}project{i}")).collect();
        // Each name once, in order, then repeats of any of them anywhere after its first.
        let mut sequence: Vec<usize> = (0..distinct).collect();
        if distinct > 0 {
            for (name, position) in repeats {
                let first = sequence.iter().position(|n| *n == name).expect("listed");
                let at = first + 1 + position.index(sequence.len() - first);
                sequence.insert(at, name);
            }
        }
        if let Some(at) = exact_at {
            names.push(exact.to_owned());
            sequence.insert(at.index(sequence.len() + 1), names.len() - 1);
        }
        prop_assume!(!sequence.is_empty());
        let cookies: Vec<(usize, &str)> =
            sequence.iter().zip(&values).map(|(name, value)| (*name, value.as_str())).collect();
        let header = cookies
            .iter()
            .map(|(name, value)| format!("{}={value}", names[*name]))
            .collect::<Vec<_>>()
            .join("; ");
        let found = find_credential(&header_map(&[("cookie", Raw::from(header))]), &naming.config());

        // The oracle: the first cookie of each name; the exact one chosen first, then the first
        // `MAX_SESSION_COOKIES` others, in order, as many as fit; sent in the request's order.
        let mut firsts: Vec<(usize, &str)> = Vec::new();
        for (name, value) in &cookies {
            if !firsts.iter().any(|(seen, _)| seen == name) {
                firsts.push((*name, value));
            }
        }
        let len = |(name, value): &(usize, &str)| names[*name].len() + 1 + value.len();
        let mut chosen: Vec<usize> = Vec::new();
        let mut bytes = 0;
        let is_exact = |name: usize| names[name] == exact;
        let by_priority = firsts
            .iter()
            .filter(|(name, _)| is_exact(*name))
            .chain(firsts.iter().filter(|(name, _)| !is_exact(*name)).take(MAX_SESSION_COOKIES));
        for cookie in by_priority {
            let added = len(cookie) + if chosen.is_empty() { 0 } else { 2 };
            if chosen.len() < MAX_SESSION_COOKIES && bytes + added <= MAX_FORWARDED_COOKIE_LEN {
                chosen.push(cookie.0);
                bytes += added;
            }
        }
        let expected: Vec<&str> = firsts
            .iter()
            .filter(|(name, _)| chosen.contains(name))
            .map(|(name, _)| names[*name].as_str())
            .collect();

        let credential = found.expect("never refused").expect("a credential");
        let forwarded: Vec<&str> = credential.cookie_names().collect();
        if exact_at.is_some() {
            prop_assert!(forwarded.contains(&exact), "{:?}", forwarded);
        }
        prop_assert!(forwarded.len() <= MAX_SESSION_COOKIES);
        prop_assert_eq!(forwarded, expected);
    }
}

proptest! {
    // Each case builds headers of several kilobytes, up to hundreds; fewer cases keep the run
    // short.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over `MAX_CREDENTIAL_LEN` bytes (a cookie: `MAX_FORWARDED_COOKIE_LEN` with its name) is
    /// refused from every source, wherever it sits; exactly the limit is taken.
    #[test]
    fn over_long_credentials_are_always_refused(
        source in 0..3usize,
        extra in 0usize..4096,
        at_limit in prop::bool::weighted(0.2),
        filler in "[A-Za-z0-9]{16}",
        others in prop::collection::vec(unrelated_piece(DEFAULT_NAMING), 0..4),
    ) {
        // A cookie's limit is its name and value together, the `Cookie` header Kratos is sent.
        let limit = match source {
            1 => MAX_FORWARDED_COOKIE_LEN - "ory_kratos_session=".len(),
            _ => MAX_CREDENTIAL_LEN,
        };
        let length = if at_limit { limit } else { limit + 1 + extra };
        let secret: String = filler.chars().cycle().take(length).collect();
        let headers = match source {
            0 => vec![("x-session-token", Raw::from(secret))],
            1 => {
                let mut cookies = others;
                cookies.push(Raw::from(format!("ory_kratos_session={secret}")));
                vec![("cookie", joined(&cookies))]
            }
            _ => vec![("authorization", Raw::from(format!("Bearer {secret}")))],
        };
        let found = find_credential(&header_map(&headers), &CookieNames::default());
        if at_limit {
            prop_assert!(matches!(found, Ok(Some(_))), "{:?}", found);
        } else {
            prop_assert_eq!(found, Err(MalformedCredential::TooLong));
        }
    }

    /// A session cookie behind hundreds of kilobytes of other cookies is still found exactly.
    #[test]
    fn huge_cookie_headers_still_yield_the_session_cookie(
        filler in prop::collection::vec(unrelated_piece(DEFAULT_NAMING), 1..8),
        kilobytes in 16usize..256,
        value in cookie_value(),
    ) {
        let mut pieces = Vec::new();
        let mut size = 0;
        while size < kilobytes * 1024 {
            for piece in &filler {
                size += piece.len() + 2;
                pieces.push(piece.clone());
            }
        }
        pieces.push(Raw::from(format!("ory_kratos_session={value}")));
        let header = joined(&pieces);
        let found = find_credential(&header_map(&[("cookie", header)]), &CookieNames::default());
        let expected = Credential::cookie("ory_kratos_session", &value).expect("a valid cookie");
        prop_assert_eq!(found, Ok(Some(expected)));
    }
}

#[test]
fn the_default_naming_is_what_the_properties_assume() {
    assert_eq!(DEFAULT_NAMING.config(), CookieNames::default());
}

/// Which credentials a request presents to the layer, on top of any unrelated cookies.
#[derive(Clone, Debug)]
struct Presented {
    session_token: bool,
    cookie: bool,
    bearer: bool,
    bearer_scheme: &'static str,
    quoted_cookie: bool,
}

/// Through the layer, against the stand-in: the winning credential reaches Kratos exactly and
/// alone, and no other cookie leaves the process. 48 cases, at most one whoami each, over
/// loopback.
#[test]
fn the_layer_sends_kratos_exactly_the_winning_credential() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let kratos = runtime.block_on(kratos());
    let service = layer(&kratos).layer(Recorder::new().service());
    let presented = (
        any::<[bool; 4]>(),
        prop::sample::select(vec!["Bearer", "bearer", "BEARER", "bEaReR"]),
    )
        .prop_map(
            |([session_token, cookie, bearer, quoted_cookie], bearer_scheme)| Presented {
                session_token,
                cookie,
                bearer,
                bearer_scheme,
                quoted_cookie,
            },
        );
    let strategy = (
        presented,
        prop::collection::vec(unrelated_piece(DEFAULT_NAMING), 0..6),
        any::<prop::sample::Index>(),
    );
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let result = runner.run(&strategy, |(presented, mut cookies, position)| {
        runtime.block_on(async {
            let session = kratos.create_session();
            let calls_before = kratos.calls(Endpoint::Whoami);
            let mut request = Request::get("/").body(String::new()).expect("a request");
            let headers = request.headers_mut();
            if presented.session_token {
                headers.append("x-session-token", session.token.parse().expect("a token"));
            }
            // A cookie in quotes is forwarded as sent (Kratos strips them).
            let session_cookie = if presented.quoted_cookie {
                format!("{}=\"{}\"", session.cookie_name, session.cookie_value)
            } else {
                session.cookie_header()
            };
            if presented.cookie {
                let at = position.index(cookies.len() + 1);
                cookies.insert(at, Raw::from(session_cookie.clone()));
            }
            if !cookies.is_empty() {
                let value = HeaderValue::from_bytes(&joined(&cookies)).expect("a value");
                headers.append("cookie", value);
            }
            if presented.bearer {
                let value = format!("{} {}", presented.bearer_scheme, session.token);
                headers.append("authorization", value.parse().expect("a value"));
            }

            let answer = send(&service, request).await;

            let calls = kratos.calls(Endpoint::Whoami) - calls_before;
            if !(presented.session_token || presented.cookie || presented.bearer) {
                prop_assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
                prop_assert_eq!(calls, 0);
                return Ok(());
            }
            prop_assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            prop_assert_eq!(calls, 1);
            let whoami = kratos
                .requests(Endpoint::Whoami)
                .pop()
                .expect("a whoami request");
            let sent = |name: &str| -> Vec<String> {
                whoami
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                    .collect()
            };
            if presented.session_token || !presented.cookie {
                prop_assert_eq!(sent("x-session-token"), vec![session.token.clone()]);
                prop_assert!(sent("cookie").is_empty(), "{:?}", sent("cookie"));
            } else {
                prop_assert_eq!(sent("cookie"), vec![session_cookie]);
                prop_assert!(sent("x-session-token").is_empty());
            }
            prop_assert!(sent("authorization").is_empty());
            prop_assert_eq!(whoami.session_id.as_deref(), Some(session.id.as_str()));
            Ok(())
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// The real Kratos bodies in `tests/fixtures/`.
const FIXTURES: [&str; 5] = [
    include_str!("fixtures/whoami-docs-example.json"),
    include_str!("fixtures/session-migratest-068f6bb6-d15f-436d-94f7-b3fd0489c9ef.json"),
    include_str!("fixtures/session-migratest-7458af86-c1d8-401c-978a-8da89133f98b.json"),
    include_str!("fixtures/session-migratest-dcde5aaa-f789-4d3d-ae1f-76da8d57e67c.json"),
    include_str!("fixtures/session-migratest-f38cdebe-e567-42c9-a562-1bd4dee40998.json"),
];

fn fixture() -> impl Strategy<Value = Value> {
    prop::sample::select(FIXTURES.to_vec())
        .prop_map(|text| serde_json::from_str(text).expect("a JSON fixture"))
}

/// One step into a JSON value.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path of every node of `value`, the root first.
fn paths(value: &Value) -> Vec<Vec<Step>> {
    fn walk(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(path.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(Step::Key(key.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    path.push(Step::Index(index));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |node, step| match step {
        Step::Key(key) => node.get_mut(key.as_str()),
        Step::Index(index) => node.get_mut(*index),
    })
}

fn last_key(path: &[Step]) -> Option<&str> {
    match path.last() {
        Some(Step::Key(key)) => Some(key),
        _ => None,
    }
}

/// The two ids Kratos's spec requires: the session's and its identity's.
fn is_required_id(path: &[Step]) -> bool {
    let id = Step::Key("id".into());
    path == [id.clone()] || path == [Step::Key("identity".into()), id]
}

/// Timestamps in and out of RFC 3339: leap seconds, year 0001 and 9999, too many digits,
/// impossible dates, offsets out of range, lowercase separators.
fn odd_timestamp() -> impl Strategy<Value = String> {
    let listed = prop::sample::select(vec![
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "2016-12-31T23:59:60Z",
        "2022-12-01T13:50:30.427375604123456Z",
        "2022-12-01T13:50:30+25:00",
        "2022-12-01T13:50:30-23:59",
        "2022-12-01 13:50:30Z",
        "2022-02-30T00:00:00Z",
        "",
        "-0001-01-01T00:00:00Z",
        "+10000-01-01T00:00:00Z",
        "2022-12-01t13:50:30z",
        "1970-01-01T00:00:00.Z",
        "2022-12-01T13:50:30",
    ])
    .prop_map(str::to_owned);
    let shaped = concat!(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}",
        r"(\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
    );
    prop_oneof![listed, shaped]
}

/// Any JSON, with the awkward parts weighted up: nulls, extreme numbers, odd timestamps, nesting.
fn odd_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        2 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop::sample::select(vec![u64::MAX, i64::MAX as u64 + 1, 0]).prop_map(Value::from),
        1 => any::<f64>()
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        1 => odd_timestamp().prop_map(Value::from),
        1 => ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A change to a body that Kratos's spec allows and the lenient model must accept.
#[derive(Clone, Debug)]
enum Allowed {
    /// Drop any member but the two required ids.
    Remove(prop::sample::Index),
    /// Any JSON for a timestamp (`*_at`): it becomes `None` unless it is RFC 3339.
    Timestamp(prop::sample::Index, Value),
    /// A member this crate does not know, with any JSON.
    Unknown(prop::sample::Index, String, Value),
    /// Any string for an assurance level.
    Aal(prop::sample::Index, String),
    /// `null` for a list.
    NullList(prop::sample::Index),
    /// Any JSON inside the identity's traits or public metadata.
    Free(prop::sample::Index, Value),
    /// `null` or any string for an optional text field.
    Text(prop::sample::Index, Option<String>),
}

fn allowed() -> impl Strategy<Value = Allowed> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Allowed::Remove),
        (index(), odd_json()).prop_map(|(at, value)| Allowed::Timestamp(at, value)),
        (index(), "x_[a-z_]{1,12}", odd_json())
            .prop_map(|(at, name, value)| Allowed::Unknown(at, name, value)),
        (index(), ".{0,12}").prop_map(|(at, aal)| Allowed::Aal(at, aal)),
        index().prop_map(Allowed::NullList),
        (index(), odd_json()).prop_map(|(at, value)| Allowed::Free(at, value)),
        (index(), prop::option::of(".{0,24}")).prop_map(|(at, text)| Allowed::Text(at, text)),
    ]
}

const TEXT_FIELDS: [&str; 14] = [
    "method",
    "provider",
    "organization",
    "external_id",
    "schema_id",
    "schema_url",
    "state",
    "organization_id",
    "value",
    "via",
    "status",
    "ip_address",
    "user_agent",
    "location",
];

const LIST_FIELDS: [&str; 4] = [
    "authentication_methods",
    "devices",
    "verifiable_addresses",
    "recovery_addresses",
];

fn node<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, step| match step {
        Step::Key(key) => node.get(key.as_str()),
        Step::Index(index) => node.get(*index),
    })
}

/// Inside the identity's traits or public metadata, where any JSON is allowed.
fn is_free(path: &[Step]) -> bool {
    path.len() >= 2
        && path[0] == Step::Key("identity".into())
        && matches!(&path[1], Step::Key(key) if key == "traits" || key == "metadata_public")
}

/// Applies `change` to `body`; a change with no place to apply is skipped.
fn apply(body: &mut Value, change: Allowed) {
    let all = paths(body);
    let pick = |index: &prop::sample::Index, eligible: &dyn Fn(&[Step], &Value) -> bool| {
        let candidates: Vec<&Vec<Step>> = all
            .iter()
            .filter(|path| node(body, path).is_some_and(|value| eligible(path, value)))
            .collect();
        (!candidates.is_empty()).then(|| candidates[index.index(candidates.len())].clone())
    };
    let key_is = |path: &[Step], keys: &[&str]| {
        !is_free(path) && last_key(path).is_some_and(|key| keys.contains(&key))
    };
    let (path, value) = match change {
        Allowed::Remove(at) => {
            let eligible =
                |path: &[Step], _: &Value| last_key(path).is_some() && !is_required_id(path);
            if let Some(path) = pick(&at, &eligible) {
                let (last, parent) = path.split_last().expect("not the root");
                if let (Some(Value::Object(map)), Step::Key(key)) = (node_mut(body, parent), last) {
                    map.remove(key);
                }
            }
            return;
        }
        Allowed::Unknown(at, name, value) => {
            if let Some(path) = pick(&at, &|path, node| node.is_object() && !is_free(path)) {
                if let Some(Value::Object(map)) = node_mut(body, &path) {
                    map.insert(name, value);
                }
            }
            return;
        }
        Allowed::Timestamp(at, value) => {
            let eligible =
                |path: &[Step], _: &Value| last_key(path).is_some_and(|key| key.ends_with("_at"));
            (pick(&at, &eligible), value)
        }
        Allowed::Aal(at, aal) => (
            pick(&at, &|path, _| {
                key_is(path, &["aal", "authenticator_assurance_level"])
            }),
            Value::String(aal),
        ),
        Allowed::NullList(at) => (
            pick(&at, &|path, _| key_is(path, &LIST_FIELDS)),
            Value::Null,
        ),
        Allowed::Free(at, value) => (pick(&at, &|path, _| is_free(path)), value),
        Allowed::Text(at, text) => {
            let eligible = |path: &[Step], _: &Value| {
                key_is(path, &TEXT_FIELDS) || (key_is(path, &["id"]) && !is_required_id(path))
            };
            (
                pick(&at, &eligible),
                text.map_or(Value::Null, Value::String),
            )
        }
    };
    if let Some(path) = path {
        *node_mut(body, &path).expect("a path of the body") = value;
    }
}

/// A change at the byte level, to what the JSON text has become.
#[derive(Clone, Debug)]
enum Damage {
    /// Cut the body short.
    Truncate(prop::sample::Index),
    /// Random bytes somewhere.
    Insert(prop::sample::Index, Vec<u8>),
    /// One of the texts JSON parsers get wrong, somewhere.
    Splice(prop::sample::Index, Vec<u8>),
    /// Overwrite one byte.
    Overwrite(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    let index = any::<prop::sample::Index>;
    let awkward = prop_oneof![
        prop::sample::select(vec![
            "1e999999",
            "-1e-999999",
            "123456789012345678901234567890123456789",
            "18446744073709551616",
            "-9223372036854775809",
            "NaN",
            "Infinity",
            "\"\\ud800\"",
            "\"\\u0000\"",
            "[[[[[[[[[[null]]]]]]]]]]",
            "{\"\":null}",
            "null",
            "\u{feff}",
            ",",
            "\"",
        ])
        .prop_map(|text| text.as_bytes().to_vec()),
        Just(vec![0xff, 0xfe]),
        (1usize..400).prop_map(|depth| "[".repeat(depth).into_bytes()),
        (1usize..400).prop_map(|depth| "{\"a\":".repeat(depth).into_bytes()),
    ];
    prop_oneof![
        index().prop_map(Damage::Truncate),
        (index(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
        (index(), awkward).prop_map(|(at, text)| Damage::Splice(at, text)),
        (index(), any::<u8>()).prop_map(|(at, byte)| Damage::Overwrite(at, byte)),
    ]
}

fn damage_bytes(body: &mut Vec<u8>, damage: Damage) {
    match damage {
        Damage::Truncate(at) => body.truncate(at.index(body.len() + 1)),
        Damage::Insert(at, bytes) | Damage::Splice(at, bytes) => {
            let at = at.index(body.len() + 1);
            body.splice(at..at, bytes);
        }
        Damage::Overwrite(at, byte) => {
            if !body.is_empty() {
                let at = at.index(body.len());
                body[at] = byte;
            }
        }
    }
}

/// Any JSON anywhere: a member dropped, replaced or added, the body itself replaced.
#[derive(Clone, Debug)]
enum Anything {
    Remove(prop::sample::Index),
    Replace(prop::sample::Index, Value),
    Add(prop::sample::Index, String, Value),
}

fn anything() -> impl Strategy<Value = Anything> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Anything::Remove),
        (index(), odd_json()).prop_map(|(at, value)| Anything::Replace(at, value)),
        (index(), "[a-z_]{0,24}", odd_json())
            .prop_map(|(at, key, value)| Anything::Add(at, key, value)),
    ]
}

fn apply_anything(body: &mut Value, change: Anything) {
    let all = paths(body);
    match change {
        Anything::Remove(at) => {
            let path = &all[at.index(all.len())];
            if let Some((Step::Key(key), parent)) = path.split_last() {
                if let Some(Value::Object(map)) = node_mut(body, parent) {
                    map.remove(key);
                }
            }
        }
        Anything::Replace(at, value) => {
            *node_mut(body, &all[at.index(all.len())]).expect("a path of the body") = value;
        }
        Anything::Add(at, key, value) => {
            if let Some(Value::Object(map)) = node_mut(body, &all[at.index(all.len())]) {
                map.insert(key, value);
            }
        }
    }
}

/// Uses a parsed session the way an application would, and checks that serializing it gives a
/// body that parses back to the same serialization.
fn exercise(session: &Session) -> Result<(), TestCaseError> {
    let _ = session.identity_id();
    let _ = session.is_valid_at(OffsetDateTime::now_utc());
    let _ = session.is_valid_at(OffsetDateTime::UNIX_EPOCH);
    for method in &session.authentication_methods {
        let _ = method.aal.as_ref().map(ToString::to_string);
    }
    if let Some(identity) = &session.identity {
        let _ = identity.traits_as::<Value>();
        let _ = identity.traits_as::<BTreeMap<String, String>>();
    }
    let _ = format!("{session:?}");
    // What the model serializes parses back to the same session. (Not byte for byte: serde_json
    // reads some floats in the traits one bit off unless its `float_roundtrip` is on.)
    let json =
        serde_json::to_vec(session).map_err(|error| TestCaseError::fail(error.to_string()))?;
    let again: Session = serde_json::from_slice(&json)
        .map_err(|error| TestCaseError::fail(format!("re-parse: {error}")))?;
    prop_assert_eq!(&again.id, &session.id);
    prop_assert_eq!(again.identity_id(), session.identity_id());
    prop_assert_eq!(again.active, session.active);
    prop_assert_eq!(again.expires_at, session.expires_at);
    prop_assert_eq!(
        &again.authenticator_assurance_level,
        &session.authenticator_assurance_level
    );
    prop_assert_eq!(
        again.authentication_methods.len(),
        session.authentication_methods.len()
    );
    Ok(())
}

/// Whether this JSON is an RFC 3339 timestamp string.
fn is_rfc3339(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_str)
        .is_some_and(|text| OffsetDateTime::parse(text, &Rfc3339).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every change Kratos's spec allows leaves a body that parses, with its ids, and with each
    /// timestamp set exactly when it is RFC 3339.
    #[test]
    fn bodies_the_spec_allows_always_parse(
        mut body in fixture(),
        changes in prop::collection::vec(allowed(), 1..6),
    ) {
        for change in changes {
            apply(&mut body, change);
        }
        let text = serde_json::to_vec(&body).expect("JSON");
        let session: Session = serde_json::from_slice(&text)
            .map_err(|error| TestCaseError::fail(format!("{error}: {body}")))?;
        prop_assert_eq!(Some(session.id.as_str()), body["id"].as_str());
        let identity_id = body
            .get("identity")
            .and_then(|identity| identity.get("id"))
            .and_then(Value::as_str);
        prop_assert_eq!(session.identity_id(), identity_id);
        prop_assert_eq!(session.expires_at.is_some(), is_rfc3339(body.get("expires_at")));
        prop_assert_eq!(session.issued_at.is_some(), is_rfc3339(body.get("issued_at")));
        exercise(&session)?;
    }

    /// Without its id, or with an id that is not a string, a body is refused with an error.
    #[test]
    fn a_session_without_a_string_id_is_an_error(
        mut body in fixture(),
        id in prop::option::of(odd_json().prop_filter("not a string", |id| !id.is_string())),
    ) {
        match id {
            Some(id) => body["id"] = id,
            None => {
                body.as_object_mut().expect("an object").remove("id");
            }
        }
        let text = serde_json::to_vec(&body).expect("JSON");
        prop_assert!(serde_json::from_slice::<Session>(&text).is_err());
    }

    /// Any change at all, to the JSON or to its bytes: `Ok` or a serde error, never a panic, and
    /// what parses can be used and serialized back.
    #[test]
    fn any_body_is_a_session_or_an_error(
        mut body in fixture(),
        changes in prop::collection::vec(anything(), 0..4),
        damages in prop::collection::vec(damage(), 0..3),
    ) {
        for change in changes {
            apply_anything(&mut body, change);
        }
        let mut text = serde_json::to_vec(&body).expect("JSON");
        for damage in damages {
            damage_bytes(&mut text, damage);
        }
        if let Ok(session) = serde_json::from_slice::<Session>(&text) {
            exercise(&session)?;
        }
    }
}
