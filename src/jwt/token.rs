//! One compact JWS checked as Kratos issues tokenized sessions: its shape, an allowed algorithm
//! that fits the key it names, the signature, then the claims (`iss`, `exp`, `nbf`, `iat`,
//! `aud`, `sid`, `sub`). Only keys from the configured key set are used: header parameters that
//! point at keys (`jku`, `jwk`, `x5u`, `x5c`) are ignored, and a critical header (`crit`) is
//! refused, since nothing here understands one. A header or claims naming a member twice are
//! refused (`json.rs` says why).

use std::{fmt, sync::Arc, time::Duration};

use crate::{defaults::MAX_TOKEN_LEN, session::numeric_date};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{
    json::{check_unique_members, NotAccepted},
    keys::{Algorithm, KeySet},
};
use crate::outcome::TokenRejected;

/// What a token must be, besides well signed.
#[derive(Clone, Debug)]
pub(crate) struct Checks {
    pub(crate) issuer: String,
    pub(crate) audience: Option<String>,
    pub(crate) leeway: Duration,
    pub(crate) algorithms: Vec<Algorithm>,
}

/// A verified tokenized session: Kratos's claims, typed. Cheap to clone (shared).
///
/// Put in the request's extensions by [`JwtLayer`](super::JwtLayer); with axum, extract it
/// directly (or as `Option<TokenizedSession>`). Its `Debug` shows the ids and times, and only the
/// names of the other claims (mapped claims may hold personal data).
#[derive(Clone)]
pub struct TokenizedSession {
    inner: Arc<Claims>,
}

struct Claims {
    session_id: String,
    subject: String,
    issuer: String,
    expires_at: OffsetDateTime,
    issued_at: OffsetDateTime,
    not_before: Option<OffsetDateTime>,
    jti: Option<String>,
    all: Map<String, Value>,
}

impl TokenizedSession {
    /// The Kratos session id (`sid`).
    pub fn session_id(&self) -> &str {
        &self.inner.session_id
    }

    /// The subject (`sub`): the identity id, or its `external_id` when the template's
    /// `subject_source` is `external_id`.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The issuer (`iss`): the Kratos public URL it was checked against.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// When the token expires (`exp`); the session itself may live longer.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.inner.expires_at
    }

    /// When Kratos issued the token (`iat`).
    pub fn issued_at(&self) -> OffsetDateTime {
        self.inner.issued_at
    }

    /// `nbf`, when the token has one (Kratos sets it to `iat`).
    pub fn not_before(&self) -> Option<OffsetDateTime> {
        self.inner.not_before
    }

    /// The token's id (`jti`), when it has one.
    pub fn jti(&self) -> Option<&str> {
        self.inner.jti.as_deref()
    }

    /// Every claim, as JSON: Kratos's and the template's mapped claims.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.all
    }

    /// One claim as a type of yours; `None` when it is absent or does not fit.
    ///
    /// ```
    /// # fn check(session: &tower_kratos::jwt::TokenizedSession) {
    /// let aal: Option<String> = session.claim("aal");
    /// # let _ = aal; }
    /// ```
    pub fn claim<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        T::deserialize(self.inner.all.get(name)?).ok()
    }
}

impl fmt::Debug for TokenizedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("TokenizedSession")
            .field("session_id", &inner.session_id)
            .field("subject", &inner.subject)
            .field("expires_at", &inner.expires_at)
            .field("issued_at", &inner.issued_at)
            .field("claims", &inner.all.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// The three segments of a compact JWS, and the parsed header.
pub(crate) struct Parts<'a> {
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

/// Splits and reads the header: anything that is not a compact JWS with an allowed algorithm is
/// refused here, before a key is looked for.
pub(crate) fn parts<'a>(token: &'a str, allowed: &[Algorithm]) -> Result<Parts<'a>, TokenRejected> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenRejected::Malformed);
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenRejected::Malformed);
    };
    let header: Header = decode_json(header)?;
    if header.crit.is_some() {
        return Err(TokenRejected::Algorithm);
    }
    let alg = Algorithm::from_name(&header.alg)
        .filter(|alg| allowed.contains(alg))
        .ok_or(TokenRejected::Algorithm)?;
    Ok(Parts {
        signing_input: &token[..token.len() - signature.len() - 1],
        payload,
        signature,
        alg,
        kid: header.kid,
    })
}

impl Parts<'_> {
    /// Checks the signature with the key set: [`TokenRejected::UnknownKey`] when no key has the
    /// token's `kid` (a refreshed key set may), [`TokenRejected::Algorithm`] when the key it
    /// names does not fit its algorithm.
    pub(crate) fn verify_signature(&self, keys: &KeySet) -> Result<(), TokenRejected> {
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| TokenRejected::Malformed)?;
        let mut candidates = keys.candidates(self.kid.as_deref(), self.alg).peekable();
        if candidates.peek().is_none() {
            return Err(if keys.decides(self.kid.as_deref(), self.alg) {
                TokenRejected::Algorithm
            } else {
                TokenRejected::UnknownKey
            });
        }
        let message = self.signing_input.as_bytes();
        if candidates.any(|key| key.verify_sig(message, &signature).is_ok()) {
            Ok(())
        } else {
            Err(TokenRejected::Signature)
        }
    }

    /// The claims, checked: after [`verify_signature`](Self::verify_signature) only.
    pub(crate) fn claims(
        &self,
        checks: &Checks,
        now: OffsetDateTime,
    ) -> Result<TokenizedSession, TokenRejected> {
        let all: Map<String, Value> = decode_json(self.payload)?;
        let leeway = time::Duration::try_from(checks.leeway).unwrap_or(time::Duration::ZERO);
        let time = |name: &str| -> Result<Option<OffsetDateTime>, TokenRejected> {
            match all.get(name) {
                None => Ok(None),
                Some(value) => numeric_date(value)
                    .map(Some)
                    .ok_or(TokenRejected::MissingClaim),
            }
        };
        let text = |name: &str| -> Result<String, TokenRejected> {
            match all.get(name) {
                Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
                _ => Err(TokenRejected::MissingClaim),
            }
        };
        let expires_at = time("exp")?.ok_or(TokenRejected::MissingClaim)?;
        let issued_at = time("iat")?.ok_or(TokenRejected::MissingClaim)?;
        let not_before = time("nbf")?;
        if now >= expires_at + leeway {
            return Err(TokenRejected::Expired);
        }
        if not_before.is_some_and(|nbf| now + leeway < nbf) || now + leeway < issued_at {
            return Err(TokenRejected::NotYetValid);
        }
        let issuer = match all.get("iss") {
            Some(Value::String(iss)) if same_issuer(iss, &checks.issuer) => iss.clone(),
            _ => return Err(TokenRejected::Issuer),
        };
        let audience_fits = match (&checks.audience, all.get("aud")) {
            (None, None) => true,
            // A token meant for some audience is not taken by a service that names none.
            (None, Some(_)) => false,
            (Some(_), None) => false,
            (Some(want), Some(Value::String(aud))) => aud == want,
            (Some(want), Some(Value::Array(auds))) => {
                auds.iter().any(|aud| aud.as_str() == Some(want.as_str()))
            }
            (Some(_), Some(_)) => false,
        };
        if !audience_fits {
            return Err(TokenRejected::Audience);
        }
        let session_id = text("sid")?;
        let subject = text("sub")?;
        let jti = match all.get("jti") {
            None => None,
            Some(Value::String(jti)) => Some(jti.clone()),
            Some(_) => return Err(TokenRejected::MissingClaim),
        };
        Ok(TokenizedSession {
            inner: Arc::new(Claims {
                session_id,
                subject,
                issuer,
                expires_at,
                issued_at,
                not_before,
                jti,
                all,
            }),
        })
    }
}

/// Issuers compare as Kratos writes them, a trailing `/` aside (its base URL usually has one).
fn same_issuer(token: &str, configured: &str) -> bool {
    token.trim_end_matches('/') == configured.trim_end_matches('/')
}

/// A header or claims segment: base64url, then JSON that names each member once (at any
/// depth), then the type wanted.
fn decode_json<T: DeserializeOwned>(segment: &str) -> Result<T, TokenRejected> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenRejected::Malformed)?;
    check_unique_members(&bytes).map_err(|why| match why {
        NotAccepted::Repeated => TokenRejected::DuplicateMember,
        NotAccepted::NotJson => TokenRejected::Malformed,
    })?;
    serde_json::from_slice(&bytes).map_err(|_| TokenRejected::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn only_compact_tokens_with_an_allowed_algorithm_get_past_the_header() {
        let all = Algorithm::ALL;
        let payload = b64("{}");
        let token = |header: &str| format!("{}.{payload}.c2ln", b64(header));
        assert!(parts(&token(r#"{"alg":"ES256","kid":"a"}"#), &all).is_ok());
        for (header, why) in [
            (r#"{"alg":"none"}"#, TokenRejected::Algorithm),
            (r#"{"alg":"HS256"}"#, TokenRejected::Algorithm),
            (
                r#"{"alg":"ES256","crit":["b64"]}"#,
                TokenRejected::Algorithm,
            ),
            (r#"{"kid":"a"}"#, TokenRejected::Malformed),
            (
                r#"{"alg":"ES256","kid":"a","kid":"b"}"#,
                TokenRejected::DuplicateMember,
            ),
            (
                r#"{"alg":"ES256","x":{"y":1,"y":1}}"#,
                TokenRejected::DuplicateMember,
            ),
            (r#"["ES256"]"#, TokenRejected::Malformed),
        ] {
            assert_eq!(parts(&token(header), &all).err(), Some(why), "{header}");
        }
        assert_eq!(
            parts(&token(r#"{"alg":"RS256"}"#), &[Algorithm::Es256]).err(),
            Some(TokenRejected::Algorithm)
        );
        for shape in ["", ".", "a.b", "a.b.c.d", "@@.@@.@@"] {
            assert_eq!(parts(shape, &all).err(), Some(TokenRejected::Malformed));
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(parts(&long, &all).err(), Some(TokenRejected::Malformed));
    }

    #[test]
    fn numeric_dates_are_seconds() {
        let at = |value: Value| numeric_date(&value).map(OffsetDateTime::unix_timestamp);
        assert_eq!(at(Value::from(1_675_209_660)), Some(1_675_209_660));
        assert_eq!(at(Value::from(1.5)), Some(1));
        assert_eq!(at(Value::from("1675209660")), None);
        assert_eq!(at(Value::from(f64::MAX)), None);
    }

    #[test]
    fn issuers_compare_without_the_trailing_slash_only() {
        assert!(same_issuer("http://localhost/", "http://localhost"));
        assert!(same_issuer("http://localhost", "http://localhost/"));
        assert!(!same_issuer("http://localhost.evil/", "http://localhost/"));
        assert!(!same_issuer("https://localhost/", "http://localhost/"));
    }
}
