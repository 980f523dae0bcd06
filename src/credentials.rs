//! Finding the caller's Kratos credential in a request, in Kratos's own precedence.
//!
//! Kratos (`session/manager_http.go` `extractToken`) takes a non-empty `X-Session-Token` alone,
//! else its session cookie, else `Authorization: Bearer <token>`. This module does the same, so
//! the layer never accepts a request Kratos would judge by another credential.
//!
//! The cookie reader is hand-written on purpose, not taken from the `cookie` crate: the layer
//! must pick the very cookie Kratos (Go's `net/http`) picks among repeated and malformed pairs,
//! and `cookie` reads by rules of its own.
//!
//! ```
//! use http::Request;
//! use tower_kratos::credentials::{CookieNames, CredentialSource, find_credential};
//!
//! let request = Request::get("/")
//!     .header("cookie", "theme=dark; ory_kratos_session=MTY4")
//!     .header("authorization", "Bearer ory_st_abc")
//!     .body(())
//!     .unwrap();
//! let credential = find_credential(request.headers(), &CookieNames::default())
//!     .unwrap()
//!     .expect("a credential");
//! // The cookie wins over Bearer, as in Kratos; only session cookies are forwarded.
//! assert_eq!(credential.source(), CredentialSource::Cookie);
//! assert_eq!(
//!     format!("{credential:?}"),
//!     r#"Credential { source: Cookie, names: ["ory_kratos_session"], value: "[redacted]" }"#,
//! );
//! ```

use std::fmt;

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// The largest credential accepted, in bytes. Kratos's tokens are about 40 bytes and its cookies
/// a few hundred; anything longer is refused without asking Kratos.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// The header Kratos reads session tokens from.
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

/// [`SESSION_TOKEN_HEADER`] as a `HeaderName`: looking a header up by `&str` parses the name on
/// every request.
const SESSION_TOKEN: HeaderName = HeaderName::from_static(SESSION_TOKEN_HEADER);

/// Where a credential was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialSource {
    /// The `X-Session-Token` header.
    SessionToken,
    /// The session cookie.
    Cookie,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

impl CredentialSource {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionToken => "x-session-token",
            Self::Cookie => "cookie",
            Self::Bearer => "bearer",
        }
    }
}

/// The most session cookies forwarded from one request. Browsers rarely hold more than one or
/// two (say, two Ory Network projects under one parent domain). Further ones are dropped, never a
/// reason to refuse the request: an exact-named session cookie is always among those sent.
pub const MAX_SESSION_COOKIES: usize = 4;

/// The longest `Cookie` header sent to Kratos, in bytes: below what common proxies in front of
/// Kratos accept for one header line (nginx's 8 KiB buffers, 4 KiB on some load balancers), so a
/// caller's own cookies can never make the lookup itself too large to be answered. A browser
/// keeps a cookie's name and value within the same 4096 bytes.
pub const MAX_FORWARDED_COOKIE_LEN: usize = 4096;

/// Which kind of secret a credential is: the cache keys the two kinds apart, so a token and a
/// cookie of the same bytes can never share an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Session tokens, from `X-Session-Token` or Bearer alike (Kratos treats them alike).
    Token,
    /// Session cookies.
    Cookie,
}

/// A Kratos credential taken from a request. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    source: CredentialSource,
    /// A token, or for cookies the `Cookie` header sent to Kratos: every session cookie of the
    /// request (`name=value; name=value`), in the request's order, and nothing else.
    secret: String,
}

impl Credential {
    /// A session token (sent to Kratos as `X-Session-Token`).
    ///
    /// # Errors
    /// When the token is empty, longer than [`MAX_CREDENTIAL_LEN`] or not visible ASCII.
    pub fn session_token(token: &str) -> Result<Self, MalformedCredential> {
        check_token(token)?;
        Ok(Self {
            source: CredentialSource::SessionToken,
            secret: token.to_owned(),
        })
    }

    /// A session cookie (sent to Kratos as `Cookie: name=value`, alone).
    ///
    /// # Errors
    /// When the value is empty, longer than [`MAX_CREDENTIAL_LEN`], or not a valid cookie value.
    pub fn cookie(name: &str, value: &str) -> Result<Self, MalformedCredential> {
        check_cookie(name, value)?;
        Ok(Self {
            source: CredentialSource::Cookie,
            secret: format!("{name}={value}"),
        })
    }

    /// Where the credential was found.
    pub fn source(&self) -> CredentialSource {
        self.source
    }

    /// The names of the session cookies this credential carries (none for tokens).
    pub fn cookie_names(&self) -> impl Iterator<Item = &str> {
        let pairs = match self.source {
            CredentialSource::Cookie => self.secret.as_str(),
            _ => "",
        };
        pairs
            .split("; ")
            .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
    }

    /// The header that carries this credential to Kratos: `X-Session-Token: <token>` for tokens
    /// (Bearer included: Kratos treats both alike), `Cookie: name=value[; name=value]` for the
    /// session cookies.
    pub(crate) fn to_kratos_header(&self) -> Option<(header::HeaderName, HeaderValue)> {
        match self.source {
            CredentialSource::SessionToken | CredentialSource::Bearer => Some((
                header::HeaderName::from_static(SESSION_TOKEN_HEADER),
                sensitive(HeaderValue::from_str(&self.secret).ok()?),
            )),
            CredentialSource::Cookie => Some((
                header::COOKIE,
                sensitive(HeaderValue::from_str(&self.secret).ok()?),
            )),
        }
    }

    /// What the cache key is derived from. Tokens from either header share one entry (Kratos
    /// treats them alike); cookies are keyed by every name and value sent.
    pub(crate) fn key_material(&self) -> (KeyKind, &[u8]) {
        let kind = match self.source {
            CredentialSource::SessionToken | CredentialSource::Bearer => KeyKind::Token,
            CredentialSource::Cookie => KeyKind::Cookie,
        };
        (kind, self.secret.as_bytes())
    }

    /// The secret itself (for cookies, the `Cookie` header sent to Kratos).
    #[cfg(test)]
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Credential");
        debug.field("source", &self.source);
        if self.source == CredentialSource::Cookie {
            debug.field("names", &self.cookie_names().collect::<Vec<_>>());
        }
        debug.field("value", &"[redacted]").finish()
    }
}

/// Why a credential was refused before Kratos was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedCredential {
    /// Longer than [`MAX_CREDENTIAL_LEN`].
    TooLong,
    /// Bytes that cannot be a session token or cookie value (controls, spaces, non-ASCII, quotes...).
    InvalidCharacters,
    /// Present but empty.
    Empty,
    /// A header that is not text.
    NotText,
    /// More than [`MAX_SESSION_COOKIES`] session cookies. No longer produced: extras are
    /// dropped, never a reason to refuse a request.
    #[deprecated(note = "extra session cookies are dropped; this is never returned")]
    TooManyCookies,
}

impl fmt::Display for MalformedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "credential longer than 4096 bytes",
            Self::InvalidCharacters => "credential contains characters no Kratos credential has",
            Self::Empty => "credential is empty",
            Self::NotText => "credential header is not text",
            #[allow(deprecated)]
            Self::TooManyCookies => "more session cookies than a browser holds",
        })
    }
}

impl std::error::Error for MalformedCredential {}

/// Which cookies carry the Kratos session.
///
/// The default recognises self-hosted Kratos's `ory_kratos_session` and Ory Network's
/// `ory_session_*` (the suffix is the project slug).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieNames {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Default for CookieNames {
    fn default() -> Self {
        Self {
            exact: vec!["ory_kratos_session".to_owned()],
            prefixes: vec!["ory_session_".to_owned()],
        }
    }
}

impl CookieNames {
    /// Exactly one cookie name (Kratos's `session.cookie.name`).
    pub fn exact(name: impl Into<String>) -> Self {
        Self {
            exact: vec![name.into()],
            prefixes: Vec::new(),
        }
    }

    /// Adds another exact name.
    pub fn or_exact(mut self, name: impl Into<String>) -> Self {
        self.exact.push(name.into());
        self
    }

    /// Adds a prefix: any cookie whose name starts with it (and is longer) counts.
    pub fn or_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        self.classify(name.as_bytes()).is_some()
    }

    /// How a cookie name is recognised, on raw header bytes: most cookies of a request are not
    /// session cookies, and are passed over without checking that their names are text.
    fn classify(&self, name: &[u8]) -> Option<NameMatch> {
        if self.exact.iter().any(|exact| exact.as_bytes() == name) {
            return Some(NameMatch::Exact);
        }
        self.prefixes
            .iter()
            .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix.as_bytes()))
            .then_some(NameMatch::Prefix)
    }

    /// Whether every name is a valid cookie name.
    pub(crate) fn is_valid(&self) -> bool {
        let names_ok = self
            .exact
            .iter()
            .all(|name| is_cookie_name(name.as_bytes()));
        let prefixes_ok = self
            .prefixes
            .iter()
            .all(|prefix| is_cookie_name(prefix.as_bytes()));
        names_ok && prefixes_ok && !(self.exact.is_empty() && self.prefixes.is_empty())
    }
}

/// Finds the credential Kratos would use for this request.
///
/// Returns `Ok(None)` when there is none, and an error when the credential Kratos would pick is
/// malformed (that credential alone decides, as in Kratos: a bad `X-Session-Token` is not
/// rescued by a good cookie).
///
/// # Errors
/// [`MalformedCredential`] when the chosen credential is too long or not a valid value.
pub fn find_credential(
    headers: &HeaderMap,
    cookie_names: &CookieNames,
) -> Result<Option<Credential>, MalformedCredential> {
    Ok(FoundCredential::find(headers, cookie_names)?.map(FoundCredential::into_credential))
}

/// A credential as found in a request, borrowed from its headers: what the layer hashes to look
/// the session up, so that a cache hit copies nothing. [`FoundCredential::into_credential`] makes the
/// [`Credential`] a whoami call needs.
#[derive(Clone, Copy)]
pub(crate) struct FoundCredential<'a> {
    source: CredentialSource,
    /// For tokens, one piece; for cookies, `name`, `value` per session cookie.
    pieces: Pieces<'a>,
    /// The one header the credential was read from (a token's, or the only `Cookie` header),
    /// for [`FoundCredential::copy`]; `None` when the cookies came in several headers.
    header: Option<&'a HeaderValue>,
}

#[derive(Clone, Copy)]
enum Pieces<'a> {
    Token(&'a str),
    Cookies {
        /// `(name, value)`, checked: a cookie name and RFC 6265 cookie octets, so ASCII. Bytes,
        /// not text: a hit hashes them and needs no UTF-8 check.
        pairs: [(&'a [u8], &'a [u8]); MAX_SESSION_COOKIES],
        count: usize,
        /// The one session cookie exactly as the request wrote it (`name=value`), when that is
        /// its key material: hashed in one piece, without a streaming hasher.
        whole: Option<&'a [u8]>,
    },
}

impl<'a> FoundCredential<'a> {
    /// Kratos's precedence; see [`find_credential`].
    pub(crate) fn find(
        headers: &'a HeaderMap,
        cookie_names: &CookieNames,
    ) -> Result<Option<Self>, MalformedCredential> {
        // 1. X-Session-Token, the first one, when non-empty (Go's Header.Get + len > 0).
        if let Some(value) = headers.get(SESSION_TOKEN) {
            // Checked once, as a token (visible ASCII), instead of as text and then as a token.
            let token = trim_ows_bytes(value.as_bytes());
            if !token.is_empty() {
                let token = checked_token(token, value)?;
                return Ok(Some(Self::token(
                    CredentialSource::SessionToken,
                    token,
                    value,
                )));
            }
        }
        // 2. The session cookies. Kratos picks its own by name, which this side cannot know when
        //    several names are recognised (two Ory Network projects, or a self-hosted and a
        //    hosted one): all of them go, and nothing else.
        if let Some(found) = session_cookies(headers, cookie_names)? {
            return Ok(Some(found));
        }
        // 3. Authorization: Bearer, parsed as Kratos does: split on single spaces, exactly 2
        //    parts.
        if let Some(header) = headers.get(header::AUTHORIZATION) {
            let Ok(value) = header.to_str() else {
                return Ok(None);
            };
            let mut parts = value.split(' ');
            if let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) {
                if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                    check_token(token)?;
                    return Ok(Some(Self::token(CredentialSource::Bearer, token, header)));
                }
            }
        }
        Ok(None)
    }

    fn token(source: CredentialSource, token: &'a str, header: &'a HeaderValue) -> Self {
        Self {
            source,
            pieces: Pieces::Token(token),
            header: Some(header),
        }
    }

    /// Where the credential was found.
    pub(crate) fn source(&self) -> CredentialSource {
        self.source
    }

    /// Which hash key this credential is keyed with.
    pub(crate) fn key_kind(&self) -> KeyKind {
        match self.pieces {
            Pieces::Token(_) => KeyKind::Token,
            Pieces::Cookies { .. } => KeyKind::Cookie,
        }
    }

    /// The bytes of [`Credential::key_material`], whole when they are one slice of the request
    /// (a token), else `None`: use [`FoundCredential::key_pieces`].
    pub(crate) fn key_whole(&self) -> Option<&'a [u8]> {
        match self.pieces {
            Pieces::Token(token) => Some(token.as_bytes()),
            Pieces::Cookies { whole, .. } => whole,
        }
    }

    /// The bytes of [`Credential::key_material`] fed to `update` piece by piece, so both forms
    /// of one credential hash alike without joining them here.
    pub(crate) fn key_pieces(&self, mut update: impl FnMut(&[u8])) {
        match self.pieces {
            Pieces::Token(token) => update(token.as_bytes()),
            Pieces::Cookies { pairs, count, .. } => {
                for (index, (name, value)) in pairs[..count].iter().enumerate() {
                    if index > 0 {
                        update(b"; ");
                    }
                    update(name);
                    update(b"=");
                    update(value);
                }
            }
        }
    }

    /// The owned credential, for the whoami call.
    pub(crate) fn into_credential(self) -> Credential {
        let secret = match self.pieces {
            Pieces::Token(token) => token.to_owned(),
            Pieces::Cookies { .. } => {
                let mut joined = Vec::new();
                self.key_pieces(|piece| joined.extend_from_slice(piece));
                // Every piece is a slice of a `&str` or ASCII punctuation.
                String::from_utf8(joined).unwrap_or_default()
            }
        };
        Credential {
            source: self.source,
            secret,
        }
    }
}

/// A request's credential kept past the request, for a connection that outlives it (see
/// `cache::connections`), made on every request served with a session, so without allocating:
/// a token copied inline (Kratos's are about 40 bytes), or the header the credential was found
/// in, which shares the request's buffer (a reference count), or, when the session cookies were
/// split over several `Cookie` headers (HTTP/2 may), the owned credential. Read again only when
/// the connection is watched.
#[derive(Clone)]
pub(crate) enum CredentialCopy {
    Token {
        source: CredentialSource,
        len: u8,
        bytes: [u8; INLINE_TOKEN_LEN],
    },
    Header(HeaderName, HeaderValue),
    Owned(Credential),
}

/// The longest token [`CredentialCopy`] copies inline.
const INLINE_TOKEN_LEN: usize = 64;

impl CredentialCopy {
    /// The owned credential, found again in the copied header exactly as in the request.
    pub(crate) fn credential(&self, cookie_names: &CookieNames) -> Option<Credential> {
        match self {
            Self::Token { source, len, bytes } => {
                let token = std::str::from_utf8(&bytes[..usize::from(*len)]).ok()?;
                Some(Credential {
                    source: *source,
                    secret: token.to_owned(),
                })
            }
            Self::Header(name, value) => {
                let mut headers = HeaderMap::with_capacity(1);
                headers.insert(name.clone(), value.clone());
                find_credential(&headers, cookie_names).ok().flatten()
            }
            Self::Owned(credential) => Some(credential.clone()),
        }
    }
}

impl From<Credential> for CredentialCopy {
    fn from(credential: Credential) -> Self {
        Self::Owned(credential)
    }
}

impl fmt::Debug for CredentialCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialCopy([redacted])")
    }
}

impl FoundCredential<'_> {
    /// This credential kept past the request: see [`CredentialCopy`].
    pub(crate) fn copy(self) -> CredentialCopy {
        if let Pieces::Token(token) = self.pieces {
            if let Ok(len) = u8::try_from(token.len()) {
                if usize::from(len) <= INLINE_TOKEN_LEN {
                    let mut bytes = [0; INLINE_TOKEN_LEN];
                    bytes[..token.len()].copy_from_slice(token.as_bytes());
                    return CredentialCopy::Token {
                        source: self.source,
                        len,
                        bytes,
                    };
                }
            }
        }
        let name = match self.source {
            CredentialSource::SessionToken => SESSION_TOKEN,
            CredentialSource::Bearer => header::AUTHORIZATION,
            CredentialSource::Cookie => header::COOKIE,
        };
        match self.header {
            Some(value) => CredentialCopy::Header(name, value.clone()),
            None => CredentialCopy::Owned(self.into_credential()),
        }
    }
}

/// Which of the configured names a cookie name matched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameMatch {
    /// One of the exact names (Kratos's `session.cookie.name`): always forwarded.
    Exact,
    /// A prefix (Ory Network's `ory_session_<slug>`): forwarded while there is room.
    Prefix,
}

/// A well-formed session cookie of the request.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    /// Its place among the request's session cookies: what they are sent to Kratos in.
    position: usize,
    name: &'a [u8],
    value: &'a [u8],
    /// The pair as the request wrote it, when that is exactly `name=value`.
    as_written: Option<&'a [u8]>,
}

/// Well-formed session cookies of one kind, in the order the request sent them.
#[derive(Clone, Copy)]
struct Candidates<'a> {
    cookies: [Candidate<'a>; MAX_SESSION_COOKIES],
    count: usize,
}

impl Default for Candidates<'_> {
    fn default() -> Self {
        let empty = Candidate {
            position: 0,
            name: b"",
            value: b"",
            as_written: None,
        };
        Self {
            cookies: [empty; MAX_SESSION_COOKIES],
            count: 0,
        }
    }
}

impl<'a> Candidates<'a> {
    fn iter(&self) -> impl Iterator<Item = &Candidate<'a>> {
        self.cookies[..self.count].iter()
    }

    fn has(&self, name: &[u8]) -> bool {
        self.iter().any(|seen| seen.name == name)
    }

    /// Keeps a cookie while there is room; the ones past [`MAX_SESSION_COOKIES`] are dropped.
    fn push(&mut self, cookie: Candidate<'a>) {
        if self.count < MAX_SESSION_COOKIES {
            self.cookies[self.count] = cookie;
            self.count += 1;
        }
    }
}

/// The session cookies to send Kratos, across all `Cookie` headers (HTTP/2 splits them).
///
/// Kratos picks its own cookie by name, which this side cannot know when prefixes are
/// recognised: several may go, in the request's order, but never more than
/// [`MAX_SESSION_COOKIES`] nor more than [`MAX_FORWARDED_COOKIE_LEN`] bytes. The exact-named ones
/// are chosen first, then the first [`MAX_SESSION_COOKIES`] prefix-matched ones, as many as fit,
/// so that cookies someone set on a parent domain can neither crowd out the real one nor make
/// the lookup too large to answer.
/// As in Go's `net/http` (Kratos), the first well-formed cookie of a name counts and malformed
/// ones are skipped; only when no session cookie is well-formed is the first problem reported.
fn session_cookies<'a>(
    headers: &'a HeaderMap,
    cookie_names: &CookieNames,
) -> Result<Option<FoundCredential<'a>>, MalformedCredential> {
    let mut seen = SeenCookies::default();
    let mut headers_read = 0;
    let mut last = None;
    for header_value in headers.get_all(header::COOKIE) {
        // Each pair is read on its own, as Kratos (Go's net/http) reads them: browsers send the
        // raw bytes of a cookie set with UTF-8 in it, and such a cookie must not hide the
        // session cookie beside it.
        for pair in pairs(header_value.as_bytes()) {
            seen.read(pair, cookie_names);
        }
        headers_read += 1;
        last = Some(header_value);
    }
    Ok(seen.choose()?.map(|mut found| {
        found.header = last.filter(|_| headers_read == 1);
        found
    }))
}

/// The `;`-separated pieces of a `Cookie` header, as `split` gives them, found with `memchr`
/// (a word or a vector at a time, where `split` tests each byte: a browser's `Cookie` header runs
/// to hundreds of bytes, and this is most of what finding a session cookie costs).
fn pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let bytes = rest?;
        match memchr::memchr(b';', bytes) {
            Some(at) => {
                rest = Some(&bytes[at + 1..]);
                Some(&bytes[..at])
            }
            None => {
                rest = None;
                Some(bytes)
            }
        }
    })
}

/// The request's session cookies, as [`session_cookies`] reads them, before the choice.
#[derive(Default)]
struct SeenCookies<'a> {
    exact: Candidates<'a>,
    prefixed: Candidates<'a>,
    /// The first problem with an exact-named cookie, and with a prefix-matched one.
    exact_problem: Option<MalformedCredential>,
    other_problem: Option<MalformedCredential>,
    /// Well-formed session cookies seen so far: the next one's position.
    seen: usize,
}

impl<'a> SeenCookies<'a> {
    /// One `name=value` pair of a `Cookie` header.
    #[inline]
    fn read(&mut self, pair: &'a [u8], cookie_names: &CookieNames) {
        let Some(equals) = memchr::memchr(b'=', pair) else {
            return;
        };
        let name = trim_ows_bytes(&pair[..equals]);
        let Some(kind) = cookie_names.classify(name) else {
            return;
        };
        if self.exact.has(name) || self.prefixed.has(name) {
            return;
        }
        let value = trim_ows_bytes(&pair[equals + 1..]);
        // An exact name is valid (checked when the layer is built); a prefix's suffix is the
        // request's.
        let checked = match kind {
            NameMatch::Exact => check_cookie_value(value),
            NameMatch::Prefix if is_cookie_name(name) => check_cookie_value(value),
            NameMatch::Prefix => Err(MalformedCredential::InvalidCharacters),
        };
        if let Err(problem) = checked {
            let problems = match kind {
                NameMatch::Exact => &mut self.exact_problem,
                NameMatch::Prefix => &mut self.other_problem,
            };
            problems.get_or_insert(problem);
            return;
        }
        // `name=value` with no space around `=`: the trimmed pair is the key material.
        let trimmed = trim_ows_bytes(pair);
        let candidate = Candidate {
            position: self.seen,
            name,
            value,
            as_written: (trimmed.len() == name.len() + 1 + value.len()).then_some(trimmed),
        };
        self.seen += 1;
        match kind {
            NameMatch::Exact => self.exact.push(candidate),
            NameMatch::Prefix => self.prefixed.push(candidate),
        }
    }

    /// The cookies to send: exact-named first, then prefix-matched ones while they fit, in the
    /// request's order.
    fn choose(&mut self) -> Result<Option<FoundCredential<'a>>, MalformedCredential> {
        // An exact-named cookie decides when there is one: none well-formed is a refusal.
        if self.exact.count == 0 {
            if let Some(problem) = self.exact_problem {
                return Err(problem);
            }
        }
        let mut chosen = Candidates::default();
        let mut length = 0;
        let candidates = self.exact.iter().chain(self.prefixed.iter());
        for (index, candidate) in candidates.enumerate() {
            let separator = if chosen.count > 0 { 2 } else { 0 };
            let added = separator + candidate.name.len() + 1 + candidate.value.len();
            if length + added > MAX_FORWARDED_COOKIE_LEN {
                match (index, chosen.count) {
                    // The exact-named cookie alone is larger than Kratos is ever sent.
                    (0, _) if self.exact.count > 0 => return Err(MalformedCredential::TooLong),
                    (_, 0) => {
                        self.other_problem
                            .get_or_insert(MalformedCredential::TooLong);
                    }
                    _ => {}
                }
                continue;
            }
            if chosen.count == MAX_SESSION_COOKIES {
                break;
            }
            chosen.push(*candidate);
            length += added;
        }
        let count = chosen.count;
        if count == 0 {
            return self.other_problem.map_or(Ok(None), Err);
        }
        let chosen = &mut chosen.cookies[..count];
        chosen.sort_unstable_by_key(|candidate| candidate.position);
        let mut pairs: [(&[u8], &[u8]); MAX_SESSION_COOKIES] = [(b"", b""); MAX_SESSION_COOKIES];
        for (pair, candidate) in pairs.iter_mut().zip(chosen.iter()) {
            *pair = (candidate.name, candidate.value);
        }
        let whole = chosen[0].as_written.filter(|_| count == 1);
        Ok(Some(FoundCredential {
            source: CredentialSource::Cookie,
            pieces: Pieces::Cookies {
                pairs,
                count,
                whole,
            },
            header: None,
        }))
    }
}

fn trim_ows_bytes(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn check_len(value: &str) -> Result<(), MalformedCredential> {
    if value.is_empty() {
        Err(MalformedCredential::Empty)
    } else if value.len() > MAX_CREDENTIAL_LEN {
        Err(MalformedCredential::TooLong)
    } else {
        Ok(())
    }
}

/// Tokens are visible ASCII with no spaces (Kratos's are `ory_st_` + alphanumerics).
/// A header's trimmed token bytes as text, when they make a token; else why not, a header that
/// is not text at all first (as reading it with `to_str` would have said).
fn checked_token<'a>(
    token: &'a [u8],
    header: &HeaderValue,
) -> Result<&'a str, MalformedCredential> {
    let checked = std::str::from_utf8(token)
        .map_err(|_| MalformedCredential::InvalidCharacters)
        .and_then(|text| check_token(text).map(|()| text));
    checked.map_err(|problem| {
        if header.to_str().is_err() {
            MalformedCredential::NotText
        } else {
            problem
        }
    })
}

fn check_token(token: &str) -> Result<(), MalformedCredential> {
    check_len(token)?;
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(MalformedCredential::InvalidCharacters)
    }
}

/// RFC 6265 cookie-value: cookie-octets, optionally inside one pair of double quotes.
fn check_cookie(name: &str, value: &str) -> Result<(), MalformedCredential> {
    check_len(value)?;
    if !is_cookie_name(name.as_bytes()) {
        return Err(MalformedCredential::InvalidCharacters);
    }
    check_cookie_value(value.as_bytes())
}

/// [`check_cookie`]'s check of the value, on the request's bytes.
fn check_cookie_value(value: &[u8]) -> Result<(), MalformedCredential> {
    if value.is_empty() {
        return Err(MalformedCredential::Empty);
    }
    if value.len() > MAX_CREDENTIAL_LEN {
        return Err(MalformedCredential::TooLong);
    }
    let inner = value
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .unwrap_or(value);
    if inner.is_empty() {
        Err(MalformedCredential::Empty)
    } else if inner.iter().all(|&byte| COOKIE_OCTETS[usize::from(byte)]) {
        Ok(())
    } else {
        Err(MalformedCredential::InvalidCharacters)
    }
}

/// RFC 6265 cookie-octets (`%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`), one entry per byte
/// value: a session cookie of hundreds of bytes is checked on every request, a table lookup per
/// byte.
const COOKIE_OCTETS: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0x21;
    while byte <= 0x7E {
        table[byte] = !matches!(byte, 0x22 | 0x2C | 0x3B | 0x5C);
        byte += 1;
    }
    table
};

/// RFC 6265 cookie-name: an HTTP token.
fn is_cookie_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// A header map from name/value pairs, in order (repeats kept), for unit tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            header::HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(pairs: &[(&str, &str)]) -> Result<Option<Credential>, MalformedCredential> {
        find_credential(&test_headers(pairs), &CookieNames::default())
    }

    #[test]
    fn session_token_wins_even_over_a_good_cookie() {
        let found = find(&[
            ("cookie", "ory_kratos_session=abc"),
            ("x-session-token", "ory_st_1"),
            ("authorization", "Bearer ory_st_2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(found.source(), CredentialSource::SessionToken);
        assert_eq!(found.secret(), "ory_st_1");
    }

    #[test]
    fn empty_session_token_falls_through() {
        let found = find(&[("x-session-token", ""), ("authorization", "bearer tok")])
            .unwrap()
            .unwrap();
        assert_eq!(found.source(), CredentialSource::Bearer);
    }

    #[test]
    fn cookie_wins_over_bearer_and_other_cookies_are_ignored() {
        let found = find(&[
            ("cookie", "a=1; ory_kratos_session=xyz; b=2"),
            ("authorization", "Bearer tok"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(found.source(), CredentialSource::Cookie);
        let (name, value) = found.to_kratos_header().unwrap();
        assert_eq!(name, header::COOKIE);
        assert_eq!(value, "ory_kratos_session=xyz");
    }

    #[test]
    fn ory_network_prefix_and_split_cookie_headers() {
        let found = find(&[("cookie", "a=1"), ("cookie", "ory_session_slug123=v")])
            .unwrap()
            .unwrap();
        assert_eq!(
            found.cookie_names().collect::<Vec<_>>(),
            ["ory_session_slug123"]
        );
        // The bare prefix is not a project cookie.
        assert!(find(&[("cookie", "ory_session_=v")]).unwrap().is_none());
    }

    #[test]
    fn bearer_is_parsed_exactly_as_kratos_does() {
        assert!(find(&[("authorization", "Bearer  tok")]).unwrap().is_none());
        assert!(find(&[("authorization", "Basic tok")]).unwrap().is_none());
        assert!(find(&[("authorization", "Bearer")]).unwrap().is_none());
        assert!(find(&[("authorization", "Bearer a b")]).unwrap().is_none());
        let found = find(&[("authorization", "BEARER tok")]).unwrap().unwrap();
        assert_eq!(found.source(), CredentialSource::Bearer);
    }

    #[test]
    fn oversized_and_odd_credentials_are_refused() {
        let long = "a".repeat(MAX_CREDENTIAL_LEN + 1);
        assert_eq!(
            find(&[("x-session-token", &long)]).unwrap_err(),
            MalformedCredential::TooLong
        );
        let cookie = format!("ory_kratos_session={long}");
        assert_eq!(
            find(&[("cookie", &cookie)]).unwrap_err(),
            MalformedCredential::TooLong
        );
        assert_eq!(
            find(&[("x-session-token", "a b")]).unwrap_err(),
            MalformedCredential::InvalidCharacters
        );
        assert_eq!(
            find(&[("cookie", "ory_kratos_session=a\\b")]).unwrap_err(),
            MalformedCredential::InvalidCharacters
        );
        assert_eq!(
            find(&[("cookie", "ory_kratos_session=")]).unwrap_err(),
            MalformedCredential::Empty
        );
        let exact = "a".repeat(MAX_CREDENTIAL_LEN);
        assert!(find(&[("x-session-token", &exact)]).unwrap().is_some());
    }

    #[test]
    fn every_session_cookie_goes_and_nothing_else() {
        let found = find(&[
            ("cookie", "ory_session_staging=s; theme=dark"),
            ("cookie", "ory_kratos_session=k; ory_session_prod=p"),
        ])
        .unwrap()
        .unwrap();
        let (_, value) = found.to_kratos_header().unwrap();
        assert_eq!(
            value,
            "ory_session_staging=s; ory_kratos_session=k; ory_session_prod=p"
        );
    }

    #[test]
    fn the_exact_named_cookie_is_always_sent_and_extras_dropped() {
        // Five made-up project cookies before the real one: the real one still goes, with the
        // first three of them, and the request is not refused.
        let crowded = "ory_session_p0=v; ory_session_p1=v; ory_session_p2=v; ory_session_p3=v; \
                       ory_session_p4=v; ory_kratos_session=real";
        let found = find(&[("cookie", crowded)]).unwrap().unwrap();
        assert_eq!(
            found.secret(),
            "ory_session_p0=v; ory_session_p1=v; ory_session_p2=v; ory_kratos_session=real"
        );

        // Large extras are dropped while the total would pass the forwarding limit.
        let big = "x".repeat(3000);
        let header = format!("ory_session_a={big}; ory_session_b={big}; ory_kratos_session=k");
        let found = find(&[("cookie", &header)]).unwrap().unwrap();
        assert_eq!(
            found.secret(),
            format!("ory_session_a={big}; ory_kratos_session=k")
        );
        assert!(found.secret().len() <= MAX_FORWARDED_COOKIE_LEN);

        // A malformed extra (say, set on a parent domain) hides nothing.
        let found = find(&[("cookie", "ory_session_x=a\\b; ory_kratos_session=k")])
            .unwrap()
            .unwrap();
        assert_eq!(found.secret(), "ory_kratos_session=k");
        // Nor does a malformed copy of the session cookie before the real one (Go skips it).
        let found = find(&[("cookie", "ory_kratos_session=a b; ory_kratos_session=k")])
            .unwrap()
            .unwrap();
        assert_eq!(found.secret(), "ory_kratos_session=k");

        // The exact-named cookie decides when there is one.
        assert_eq!(
            find(&[("cookie", "ory_kratos_session=a\\b; ory_session_x=fine")]).unwrap_err(),
            MalformedCredential::InvalidCharacters
        );
        let huge = format!("ory_kratos_session={}", "k".repeat(MAX_CREDENTIAL_LEN - 10));
        assert_eq!(
            find(&[("cookie", &huge)]).unwrap_err(),
            MalformedCredential::TooLong
        );
    }

    #[test]
    fn a_cookie_that_is_not_text_does_not_hide_the_session_cookie() {
        // Found by the property tests: one non-ASCII byte in another cookie used to make the
        // whole header unreadable, so a signed-in browser looked anonymous.
        let mut map = HeaderMap::new();
        let header =
            HeaderValue::from_bytes(b"theme=caf\xc3\xa9; ory_kratos_session=abc; x=\xff").unwrap();
        map.append(header::COOKIE, header);
        map.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        let found = find_credential(&map, &CookieNames::default())
            .unwrap()
            .unwrap();
        assert_eq!(found.source(), CredentialSource::Cookie);
        assert_eq!(found.secret(), "ory_kratos_session=abc");

        // A session cookie that is not ASCII is refused like any other invalid value.
        for value in [
            &b"ory_kratos_session=caf\xc3\xa9"[..],
            b"ory_kratos_session=\xff\xfe",
        ] {
            let mut map = HeaderMap::new();
            map.append(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(
                find_credential(&map, &CookieNames::default()).unwrap_err(),
                MalformedCredential::InvalidCharacters
            );
        }
    }

    #[test]
    fn quoted_cookie_values_are_kept_as_sent() {
        let found = find(&[("cookie", "ory_kratos_session=\"abc\"")])
            .unwrap()
            .unwrap();
        assert_eq!(found.secret(), "ory_kratos_session=\"abc\"");
    }
}
