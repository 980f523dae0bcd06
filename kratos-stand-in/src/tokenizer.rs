//! Kratos's session tokenizer (`/sessions/whoami?tokenize_as=NAME`): the templates a test
//! registers, the signing keys the stand-in makes for them, and the JWTs and JWKS made with those
//! keys.
//!
//! The JWT is built as Kratos's `session/tokenizer.go` `TokenizeSession` builds it: golang-jwt's
//! header (`alg`, the key's `kid`, `typ: JWT`, keys sorted as Go sorts a map), claims `jti`, `iss`,
//! `exp`, `sid`, `nbf`, `iat` and `sub`, then the mapped claims merged over them, then `sub` set
//! again. Kratos reads private keys from a JWKS file; the stand-in makes them when it starts and
//! never lets them out: only public keys are served.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::time::Duration;

use aws_lc_rs::error::Unspecified;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P521_SHA512_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PKCS1_SHA512,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use serde::Serialize;
use time::OffsetDateTime;

use super::ids;
use super::json::KratosError;
use super::store::add;
use super::{KratosStandIn, StandInBuilder};

/// Kratos's default `session.whoami.tokenizer.templates.*.ttl` (`embedx/config.schema.json`).
const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Where the stand-in serves a template's public JWKS: under `/.well-known/stand-in/`, a prefix
/// no Kratos route uses (Kratos serves no JWKS for tokenized sessions at all).
pub(crate) const JWKS_PATH_PREFIX: &str = "/.well-known/stand-in/jwks/";
/// What follows the template name in the JWKS path.
pub(crate) const JWKS_PATH_SUFFIX: &str = ".json";
/// `SetSubjectClaim`'s refusal when `subject_source: external_id` meets an identity without one.
const NO_EXTERNAL_ID_REASON: &str =
    "The session's identity does not have an external ID set, but it is required for the subject claim.";
/// Kratos's reason when golang-jwt cannot sign.
const SIGNING_FAILED_REASON: &str = "Unable to sign JSON Web Token.";

/// The signing algorithm of a [`TokenizerTemplate`]: the `alg` of the key in Kratos's
/// `jwks_url`, and of every JWT made with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlg {
    /// ECDSA on P-256 with SHA-256 (`ES256`, an `EC` key on curve `P-256`).
    Es256,
    /// ECDSA on P-521 with SHA-512 (`ES512`, an `EC` key on curve `P-521`).
    Es512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`, a 2048-bit `RSA` key).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (`RS512`, a 2048-bit `RSA` key).
    Rs512,
    /// Ed25519 (`EdDSA`, an `OKP` key on curve `Ed25519`).
    EdDsa,
}

impl SigningAlg {
    /// The JOSE name, as in the JWT header and the JWK's `alg`: `ES256`, `ES512`, `RS256`,
    /// `RS512` or `EdDSA`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es512 => "ES512",
            Self::Rs256 => "RS256",
            Self::Rs512 => "RS512",
            Self::EdDsa => "EdDSA",
        }
    }
}

/// A tokenizer template, as Kratos's `session.whoami.tokenizer.templates.<name>`: how whoami
/// turns a session into a JWT when asked `?tokenize_as=<name>`. Register it with
/// [`StandInBuilder::tokenizer`].
///
/// It holds no key: the stand-in makes the template's key pair when it starts and keeps the
/// private key to itself, so neither this type nor its `Debug` can show one.
///
/// Claims are mapped statically: [`claim`](Self::claim) adds what a Jsonnet
/// `claims_mapper_url` would return, the same for every session.
#[derive(Clone, Debug)]
#[must_use = "a TokenizerTemplate does nothing until registered with `StandInBuilder::tokenizer`"]
pub struct TokenizerTemplate {
    alg: SigningAlg,
    ttl: Duration,
    subject_from_external_id: bool,
    claims: BTreeMap<String, serde_json::Value>,
    key_id: Option<String>,
}

impl TokenizerTemplate {
    /// A template whose key signs with `alg`; a one-minute TTL, `sub` the identity id, no mapped
    /// claims, a random key id.
    pub fn new(alg: SigningAlg) -> Self {
        Self {
            alg,
            ttl: DEFAULT_TTL,
            subject_from_external_id: false,
            claims: BTreeMap::new(),
            key_id: None,
        }
    }

    /// How long a JWT is valid: `exp` is `iat` plus this (whole seconds, rounded down as Go's
    /// `Unix()`). Default one minute, Kratos's default `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// `subject_source: external_id`: `sub` is the identity's external id (set one with
    /// [`SessionSpec::external_id`](super::SessionSpec::external_id)). As in Kratos, there is no
    /// fallback: whoami answers 400 for an identity without one. Default `false`
    /// (`subject_source: id`, the identity id).
    pub fn subject_from_external_id(mut self, from_external_id: bool) -> Self {
        self.subject_from_external_id = from_external_id;
        self
    }

    /// A mapped claim, as a Jsonnet claims mapper would return it (e.g. `aal`, `foo`). As in
    /// Kratos, mapped claims are merged over the standard ones, so they replace `iss`, `exp`,
    /// `jti` ... of the same name; only `sub` cannot be replaced. A second call with the same
    /// name replaces the first.
    pub fn claim(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// The `kid` of the key made at start. Default: a random UUID. Keys made by
    /// [`KratosStandIn::rotate_key`] always get a random one.
    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }
}

impl StandInBuilder {
    /// Registers a tokenizer template: whoami with `?tokenize_as=<name>` then adds the session as
    /// a JWT in `"tokenized"`, signed with a key the stand-in makes at [`start`](Self::start).
    /// Its public key is served by [`KratosStandIn::jwks_url`]. A second template with the same
    /// name replaces the first. Default: no templates, so every `tokenize_as` gets Kratos's 400.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use kratos_stand_in::{KratosStandIn, SigningAlg, TokenizerTemplate};
    ///
    /// let kratos = KratosStandIn::builder()
    ///     .tokenizer(
    ///         "api",
    ///         TokenizerTemplate::new(SigningAlg::Es256)
    ///             .ttl(Duration::from_secs(300))
    ///             .claim("aal", "aal1".into()),
    ///     )
    ///     .start()
    ///     .await?;
    /// let session = kratos.create_session();
    ///
    /// let whoami = reqwest::Client::new()
    ///     .get(format!("{}/sessions/whoami?tokenize_as=api", kratos.public_url()))
    ///     .header("X-Session-Token", &session.token)
    ///     .send()
    ///     .await?;
    /// assert!(whoami.headers().get("ory-session-cache-for").is_none());
    /// let whoami: serde_json::Value = serde_json::from_slice(&whoami.bytes().await?)?;
    /// let jwt = whoami["tokenized"].as_str().expect("a JWT");
    /// assert_eq!(jwt.split('.').count(), 3);
    ///
    /// // The public key to check it with, as JSON and over HTTP.
    /// let jwks = kratos.jwks("api").expect("registered");
    /// assert_eq!(jwks["keys"][0]["alg"], "ES256");
    /// let url = kratos.jwks_url("api").expect("registered");
    /// let served = reqwest::get(url).await?.bytes().await?;
    /// let served: serde_json::Value = serde_json::from_slice(&served)?;
    /// assert_eq!(served, jwks);
    /// # Ok(())
    /// # }
    /// ```
    pub fn tokenizer(mut self, name: impl Into<String>, template: TokenizerTemplate) -> Self {
        let name = name.into();
        self.tokenizers.retain(|(kept, _)| *kept != name);
        self.tokenizers.push((name, template));
        self
    }
}

impl KratosStandIn {
    /// The template's public keys as a JWKS, newest first:
    /// `{"keys":[{"kty":"EC","crv":"P-256","x":..,"y":..,"kid":..,"alg":"ES256","use":"sig"}]}`
    /// (`P-521` for ES512; `RSA` with `n` and `e`; `OKP` with `crv: Ed25519` and `x`). `None` for
    /// a template that is not registered.
    pub fn jwks(&self, template: &str) -> Option<serde_json::Value> {
        let tokenizers = self.inner.shared.tokenizers();
        serde_json::to_value(tokenizers.get(template)?.jwks()).ok()
    }

    /// Where the stand-in serves [`jwks`](Self::jwks) over HTTP(S):
    /// `{public_url}/.well-known/stand-in/jwks/<template>.json` (the name percent-encoded), for a
    /// verifier that fetches its keys. Requests count as [`Endpoint::Jwks`](super::Endpoint::Jwks)
    /// and take its faults; a name that is not registered is answered 404. `None` for a template
    /// that is not registered.
    pub fn jwks_url(&self, template: &str) -> Option<String> {
        let shared = &self.inner.shared;
        shared.tokenizers().get(template)?;
        Some(format!(
            "{}{JWKS_PATH_PREFIX}{}{JWKS_PATH_SUFFIX}",
            shared.config.public_url,
            percent_encode_segment(template)
        ))
    }

    /// Rotates the template's key: a new key pair with a new random `kid` signs every later JWT,
    /// and the JWKS lists it first while keeping the older keys, as a real rotation does. Returns
    /// the new key's `kid`, or `None` for a template that is not registered.
    ///
    /// # Panics
    ///
    /// Only if aws-lc-rs cannot make a key (the operating system's random number generator
    /// failed).
    pub fn rotate_key(&self, template: &str) -> Option<String> {
        let shared = &self.inner.shared;
        let alg = shared.tokenizers().get(template)?.template.alg;
        // Made outside the lock: an RSA key takes a while, and whoami signs under that lock.
        let key = match SigningKey::with_random_kid(alg) {
            Ok(key) => key,
            Err(err) => panic!("Kratos stand-in: making a signing key failed: {err}"),
        };
        let kid = key.kid.clone();
        shared.tokenizers().by_name.get_mut(template)?.add_key(key);
        Some(kid)
    }

    /// Signs any claims (as given, any JSON) with the template's current key and header, as a
    /// compact JWS: for tokens whoami would never issue (expired, another issuer, a missing
    /// claim ...). `None` for a template that is not registered, or if signing failed.
    pub fn sign_claims(&self, template: &str, claims: &serde_json::Value) -> Option<String> {
        let tokenizers = self.inner.shared.tokenizers();
        tokenizers.get(template)?.sign(claims).ok()
    }

    /// Signs a header and a payload exactly as given (their bytes base64url-encoded, nothing
    /// parsed or rewritten) with the template's current key, as a compact JWS: for tokens no
    /// JSON writer makes, such as one naming a member twice (`{"sub":"a","sub":"b"}`). The
    /// header is not checked: for a signature that verifies, name the key's `alg` and `kid` in
    /// it (the `kid` is the first of [`jwks`](Self::jwks)). `None` for a template that is not
    /// registered, or if signing failed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use kratos_stand_in::{KratosStandIn, SigningAlg, TokenizerTemplate};
    ///
    /// let kratos = KratosStandIn::builder()
    ///     .tokenizer("api", TokenizerTemplate::new(SigningAlg::Es256).key_id("k1"))
    ///     .start()
    ///     .await?;
    /// let jwt = kratos
    ///     .sign_raw(
    ///         "api",
    ///         br#"{"alg":"ES256","kid":"k1"}"#,
    ///         br#"{"sub":"a","sub":"b"}"#,
    ///     )
    ///     .expect("signed");
    /// assert_eq!(jwt.split('.').count(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sign_raw(&self, template: &str, header: &[u8], payload: &[u8]) -> Option<String> {
        let tokenizers = self.inner.shared.tokenizers();
        tokenizers.get(template)?.sign_raw(header, payload).ok()
    }
}

/// The session a JWT is made for: what Kratos's tokenizer reads from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionSubject<'a> {
    pub(crate) session_id: &'a str,
    pub(crate) identity_id: &'a str,
    pub(crate) external_id: Option<&'a str>,
}

/// Every registered template with its keys, by name.
#[derive(Debug, Default)]
pub(crate) struct Tokenizers {
    by_name: HashMap<String, Tokenizer>,
}

impl Tokenizers {
    /// Makes a key pair for every template.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty template name (`tokenize_as=` asks for no tokenization, so
    /// whoami could never use it); `Other` when a key cannot be made.
    pub(crate) fn generate(templates: Vec<(String, TokenizerTemplate)>) -> io::Result<Self> {
        let mut by_name = HashMap::with_capacity(templates.len());
        for (name, template) in templates {
            if name.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "stand-in: a tokenizer template needs a non-empty name",
                ));
            }
            let kid = match &template.key_id {
                Some(kid) => kid.clone(),
                None => ids::new_uuid()
                    .map_err(|err| io::Error::other(format!("stand-in: a random key id: {err}")))?,
            };
            let key = SigningKey::generate(template.alg, kid).map_err(|err| {
                io::Error::other(format!(
                    "stand-in: making a {} key: {err}",
                    template.alg.name()
                ))
            })?;
            by_name.insert(
                name,
                Tokenizer {
                    template,
                    keys: vec![key],
                },
            );
        }
        Ok(Self { by_name })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Tokenizer> {
        self.by_name.get(name)
    }

    /// Kratos's `TokenizeSession`: the JWT for `session` made with template `name`, or the
    /// error whoami answers with.
    pub(crate) fn tokenize(
        &self,
        name: &str,
        session: &SessionSubject<'_>,
        issuer: &str,
        now: OffsetDateTime,
    ) -> Result<String, KratosError> {
        let tokenizer = self
            .get(name)
            .ok_or_else(|| KratosError::unknown_tokenizer_template(name))?;
        let claims = tokenizer.claims(session, issuer, now)?;
        tokenizer
            .sign(&claims)
            .map_err(|_| KratosError::new(StatusCode::BAD_REQUEST).reason(SIGNING_FAILED_REASON))
    }
}

/// One template and its keys, newest (the signing one) first.
#[derive(Debug)]
pub(crate) struct Tokenizer {
    template: TokenizerTemplate,
    keys: Vec<SigningKey>,
}

impl Tokenizer {
    /// The claims in Kratos's order: the standard ones and `sub`, the mapped claims merged over
    /// them, then `sub` again (a mapper cannot change the subject). A `BTreeMap` writes them
    /// sorted, as Go writes a map.
    fn claims(
        &self,
        session: &SessionSubject<'_>,
        issuer: &str,
        now: OffsetDateTime,
    ) -> Result<BTreeMap<String, serde_json::Value>, KratosError> {
        let jti =
            ids::new_uuid().map_err(|_| KratosError::new(StatusCode::INTERNAL_SERVER_ERROR))?;
        let now_seconds = now.unix_timestamp();
        let mut claims = BTreeMap::new();
        claims.insert("jti".to_owned(), jti.into());
        claims.insert("iss".to_owned(), issuer.into());
        let exp = add(now, self.template.ttl).unix_timestamp();
        claims.insert("exp".to_owned(), exp.into());
        claims.insert("sid".to_owned(), session.session_id.into());
        claims.insert("nbf".to_owned(), now_seconds.into());
        claims.insert("iat".to_owned(), now_seconds.into());
        let subject = self.subject(session)?;
        for (name, value) in &self.template.claims {
            claims.insert(name.clone(), value.clone());
        }
        claims.insert("sub".to_owned(), subject.into());
        Ok(claims)
    }

    /// Kratos's `SetSubjectClaim`.
    fn subject<'a>(&self, session: &SessionSubject<'a>) -> Result<&'a str, KratosError> {
        if !self.template.subject_from_external_id {
            return Ok(session.identity_id);
        }
        session
            .external_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| KratosError::new(StatusCode::BAD_REQUEST).reason(NO_EXTERNAL_ID_REASON))
    }

    /// A compact JWS of `claims` with the current key.
    fn sign(&self, claims: &impl Serialize) -> Result<String, Unspecified> {
        let key = self.keys.first().ok_or(Unspecified)?;
        let header = Header {
            alg: key.alg.name(),
            kid: &key.kid,
            typ: "JWT",
        };
        let header = serde_json::to_vec(&header).map_err(|_| Unspecified)?;
        let claims = serde_json::to_vec(claims).map_err(|_| Unspecified)?;
        self.sign_raw(&header, &claims)
    }

    /// A compact JWS of these header and payload bytes, as they are, with the current key.
    fn sign_raw(&self, header: &[u8], payload: &[u8]) -> Result<String, Unspecified> {
        let key = self.keys.first().ok_or(Unspecified)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = key.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// Puts a new signing key in front of the older ones, which stay in the JWKS.
    fn add_key(&mut self, key: SigningKey) {
        self.keys.insert(0, key);
    }

    /// The public keys, newest first.
    pub(crate) fn jwks(&self) -> Jwks<'_> {
        Jwks {
            keys: self.keys.iter().map(SigningKey::public_jwk).collect(),
        }
    }
}

/// golang-jwt's header: Go writes the map's keys sorted, so the fields are in that order.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

/// A JSON Web Key Set of public keys.
#[derive(Debug, Serialize)]
pub(crate) struct Jwks<'a> {
    keys: Vec<Jwk<'a>>,
}

/// One public JWK (RFC 7517/7518/8037): coordinates and RSA numbers base64url without padding.
#[derive(Debug, Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    kid: &'a str,
    alg: &'static str,
    #[serde(rename = "use")]
    key_use: &'static str,
}

/// A key pair of one of the algorithms.
enum KeyMaterial {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private signing key with its `kid`. Its `Debug` shows the `kid` and algorithm only.
struct SigningKey {
    kid: String,
    alg: SigningAlg,
    material: KeyMaterial,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn generate(alg: SigningAlg, kid: String) -> Result<Self, Unspecified> {
        let material = match alg {
            SigningAlg::Es256 => {
                KeyMaterial::Ecdsa(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?)
            }
            SigningAlg::Es512 => {
                KeyMaterial::Ecdsa(EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING)?)
            }
            SigningAlg::Rs256 | SigningAlg::Rs512 => {
                KeyMaterial::Rsa(RsaKeyPair::generate(KeySize::Rsa2048)?)
            }
            SigningAlg::EdDsa => KeyMaterial::Ed25519(Ed25519KeyPair::generate()?),
        };
        Ok(Self { kid, alg, material })
    }

    /// A key with a random UUID as its `kid`.
    fn with_random_kid(alg: SigningAlg) -> Result<Self, Unspecified> {
        let kid = ids::new_uuid().map_err(|_| Unspecified)?;
        Self::generate(alg, kid)
    }

    /// The JWS signature of `message`: `r || s` for ECDSA (the fixed format JWS uses), PKCS#1
    /// v1.5 for RSA, plain Ed25519.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Unspecified> {
        let rng = SystemRandom::new();
        match &self.material {
            KeyMaterial::Ecdsa(pair) => Ok(pair.sign(&rng, message)?.as_ref().to_vec()),
            KeyMaterial::Rsa(pair) => {
                let padding = if self.alg == SigningAlg::Rs512 {
                    &RSA_PKCS1_SHA512
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut signature)?;
                Ok(signature)
            }
            KeyMaterial::Ed25519(pair) => Ok(pair.try_sign(message)?.as_ref().to_vec()),
        }
    }

    fn public_jwk(&self) -> Jwk<'_> {
        let b64 = |bytes: &[u8]| Some(URL_SAFE_NO_PAD.encode(bytes));
        let mut jwk = Jwk {
            kty: "EC",
            crv: None,
            n: None,
            e: None,
            x: None,
            y: None,
            kid: &self.kid,
            alg: self.alg.name(),
            key_use: "sig",
        };
        match &self.material {
            KeyMaterial::Ecdsa(pair) => {
                jwk.crv = Some(if self.alg == SigningAlg::Es512 {
                    "P-521"
                } else {
                    "P-256"
                });
                // The uncompressed SEC 1 point: 0x04, then x and y of equal length.
                let point = pair.public_key().as_ref();
                let coordinates = point.get(1..).unwrap_or_default();
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                (jwk.x, jwk.y) = (b64(x), b64(y));
            }
            KeyMaterial::Rsa(pair) => {
                let public = pair.public_key();
                jwk.kty = "RSA";
                jwk.n = b64(public.modulus().big_endian_without_leading_zero());
                jwk.e = b64(public.exponent().big_endian_without_leading_zero());
            }
            KeyMaterial::Ed25519(pair) => {
                jwk.kty = "OKP";
                jwk.crv = Some("Ed25519");
                jwk.x = b64(pair.public_key().as_ref());
            }
        }
        jwk
    }
}

/// A template name as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded.
fn percent_encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{
        RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
        ECDSA_P256_SHA256_FIXED, ECDSA_P521_SHA512_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256,
        RSA_PKCS1_2048_8192_SHA512,
    };
    use serde_json::{json, Value};

    use super::*;

    const SESSION_ID: &str = "432caf86-c1d8-401c-978a-8da89133f78b";
    const IDENTITY_ID: &str = "7458af86-c1d8-401c-978a-8da89133f78b";
    /// Kratos's snapshot test's clock: 2023-02-01T00:00:00Z.
    const NOW: i64 = 1_675_209_600;
    /// Kratos's snapshot test's `serve.public.base_url`.
    const ISSUER: &str = "http://localhost/";

    const ALL: [SigningAlg; 5] = [
        SigningAlg::Es256,
        SigningAlg::Es512,
        SigningAlg::Rs256,
        SigningAlg::Rs512,
        SigningAlg::EdDsa,
    ];

    fn fixture(case: &str) -> Value {
        let text = match case {
            "es256-without-jsonnet" => include_str!(
                "../../tests/fixtures/tokenized/TestTokenizer-case=es256-without-jsonnet.json"
            ),
            "es512-without-jsonnet" => include_str!(
                "../../tests/fixtures/tokenized/TestTokenizer-case=es512-without-jsonnet.json"
            ),
            "rs512-with-jsonnet" => include_str!(
                "../../tests/fixtures/tokenized/TestTokenizer-case=rs512-with-jsonnet.json"
            ),
            "rs512-with-external_id-in-sub" => include_str!(
                "../../tests/fixtures/tokenized/TestTokenizer-case=rs512-with-external_id-in-sub.json"
            ),
            other => panic!("no fixture {other}"),
        };
        serde_json::from_str(text).unwrap()
    }

    fn one_template(template: TokenizerTemplate) -> Tokenizers {
        Tokenizers::generate(vec![("t".to_owned(), template)]).unwrap()
    }

    fn subject(external_id: Option<&str>) -> SessionSubject<'_> {
        SessionSubject {
            session_id: SESSION_ID,
            identity_id: IDENTITY_ID,
            external_id,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).unwrap()
    }

    fn decode_segment(segment: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    fn b64(field: &Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(field.as_str().unwrap()).unwrap()
    }

    /// Checks the JWT's signature against the JWKS key with its `kid`, rebuilt from the JWK's
    /// public numbers alone; returns its header and claims.
    fn verify(jwt: &str, jwks: &Value) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let header = decode_segment(parts[0]);
        let claims = decode_segment(parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let message = format!("{}.{}", parts[0], parts[1]);
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|jwk| jwk["kid"] == header["kid"])
            .expect("the JWKS has the header's kid");
        assert_eq!(jwk["alg"], header["alg"]);
        let ec = |alg: &'static dyn VerificationAlgorithm| {
            let mut point = vec![4];
            point.extend(b64(&jwk["x"]));
            point.extend(b64(&jwk["y"]));
            UnparsedPublicKey::new(alg, point)
                .verify(message.as_bytes(), &signature)
                .expect("ECDSA signature verifies");
        };
        let rsa = |params: &RsaParameters| {
            RsaPublicKeyComponents {
                n: b64(&jwk["n"]),
                e: b64(&jwk["e"]),
            }
            .verify(params, message.as_bytes(), &signature)
            .expect("RSA signature verifies");
        };
        match header["alg"].as_str().unwrap() {
            "ES256" => ec(&ECDSA_P256_SHA256_FIXED),
            "ES512" => ec(&ECDSA_P521_SHA512_FIXED),
            "RS256" => rsa(&RSA_PKCS1_2048_8192_SHA256),
            "RS512" => rsa(&RSA_PKCS1_2048_8192_SHA512),
            "EdDSA" => UnparsedPublicKey::new(&ED25519, b64(&jwk["x"]))
                .verify(message.as_bytes(), &signature)
                .expect("Ed25519 signature verifies"),
            other => panic!("unexpected alg {other}"),
        }
        (header, claims)
    }

    fn without_jti(mut claims: Value) -> Value {
        let jti = claims.as_object_mut().unwrap().remove("jti").unwrap();
        let jti = jti.as_str().unwrap();
        assert_eq!(ids::parse_uuid(jti).as_deref(), Ok(jti), "jti is a UUID");
        claims
    }

    #[test]
    fn every_algorithm_signs_what_its_jwks_verifies() {
        for alg in ALL {
            let tokenizers = one_template(TokenizerTemplate::new(alg));
            let tokenizer = tokenizers.get("t").unwrap();
            let jwks = serde_json::to_value(tokenizer.jwks()).unwrap();
            let jwt = tokenizers
                .tokenize("t", &subject(None), ISSUER, now())
                .unwrap();
            let (header, claims) = verify(&jwt, &jwks);
            let kid = jwks["keys"][0]["kid"].clone();
            assert_eq!(
                header,
                json!({"alg": alg.name(), "kid": kid, "typ": "JWT"}),
                "{alg:?}"
            );
            assert_eq!(
                without_jti(claims),
                fixture("es256-without-jsonnet"),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn header_is_written_as_golang_jwt_writes_it() {
        let tokenizers = one_template(TokenizerTemplate::new(SigningAlg::Es256).key_id("k1"));
        let jwt = tokenizers
            .tokenize("t", &subject(None), ISSUER, now())
            .unwrap();
        let header = jwt.split('.').next().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).unwrap(),
            br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#
        );
    }

    #[test]
    fn jwks_holds_public_keys_of_each_kind() {
        let expected = [
            (SigningAlg::Es256, "EC", Some("P-256"), 32),
            (SigningAlg::Es512, "EC", Some("P-521"), 66),
            (SigningAlg::Rs256, "RSA", None, 256),
            (SigningAlg::Rs512, "RSA", None, 256),
            (SigningAlg::EdDsa, "OKP", Some("Ed25519"), 32),
        ];
        for (alg, kty, crv, size) in expected {
            let tokenizers = one_template(TokenizerTemplate::new(alg).key_id("kid-1"));
            let jwks = serde_json::to_value(tokenizers.get("t").unwrap().jwks()).unwrap();
            let jwk = &jwks["keys"][0];
            assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
            assert_eq!(jwk["kty"], kty, "{alg:?}");
            assert_eq!(jwk["kid"], "kid-1");
            assert_eq!(jwk["alg"], alg.name());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk.get("crv").and_then(Value::as_str), crv, "{alg:?}");
            assert!(jwk.get("d").is_none(), "no private part");
            match kty {
                "RSA" => {
                    assert_eq!(b64(&jwk["n"]).len(), size);
                    assert_eq!(b64(&jwk["e"]), [1, 0, 1]);
                    assert!(jwk.get("x").is_none());
                }
                "EC" => {
                    assert_eq!(b64(&jwk["x"]).len(), size);
                    assert_eq!(b64(&jwk["y"]).len(), size);
                }
                _ => {
                    assert_eq!(b64(&jwk["x"]).len(), size);
                    assert!(jwk.get("y").is_none());
                }
            }
        }
    }

    /// The claims Kratos's `rs512-template.jsonnet` maps, as the fixtures show them.
    fn with_fixture_claims(template: TokenizerTemplate) -> TokenizerTemplate {
        template
            .claim("aal", json!("aal1"))
            .claim("external_id", json!("external-id"))
            .claim("foo", json!("bar"))
            .claim("schema_id", json!("default"))
            .claim("second_claim", json!(NOW + 60))
    }

    #[test]
    fn mapped_claims_look_like_the_jsonnet_fixture() {
        let template = with_fixture_claims(TokenizerTemplate::new(SigningAlg::Rs512))
            .claim("sub", json!("can not be overwritten"));
        let tokenizers = one_template(template);
        let jwks = serde_json::to_value(tokenizers.get("t").unwrap().jwks()).unwrap();
        let jwt = tokenizers
            .tokenize("t", &subject(Some("external-id")), ISSUER, now())
            .unwrap();
        let (_, claims) = verify(&jwt, &jwks);
        assert_eq!(without_jti(claims), fixture("rs512-with-jsonnet"));
    }

    #[test]
    fn subject_can_be_the_external_id_and_has_no_fallback() {
        let template = with_fixture_claims(
            TokenizerTemplate::new(SigningAlg::Rs512).subject_from_external_id(true),
        );
        let tokenizers = one_template(template);
        let jwks = serde_json::to_value(tokenizers.get("t").unwrap().jwks()).unwrap();
        let jwt = tokenizers
            .tokenize("t", &subject(Some("external-id")), ISSUER, now())
            .unwrap();
        let (_, claims) = verify(&jwt, &jwks);
        assert_eq!(
            without_jti(claims),
            fixture("rs512-with-external_id-in-sub")
        );

        for external_id in [None, Some("")] {
            let err = tokenizers
                .tokenize("t", &subject(external_id), ISSUER, now())
                .unwrap_err();
            assert_eq!(
                String::from_utf8(err.body(None)).unwrap(),
                r#"{"error":{"code":400,"status":"Bad Request","reason":"The session's identity does not have an external ID set, but it is required for the subject claim.","message":"The request was malformed or contained invalid parameters"}}"#
            );
        }
    }

    #[test]
    fn mapped_claims_replace_standard_ones_but_not_sub() {
        let template = TokenizerTemplate::new(SigningAlg::Es256)
            .claim("iss", json!("https://elsewhere.example"))
            .claim("exp", json!(1))
            .claim("sub", json!("someone else"))
            .claim("nothing", Value::Null);
        let tokenizers = one_template(template);
        let jwks = serde_json::to_value(tokenizers.get("t").unwrap().jwks()).unwrap();
        let jwt = tokenizers
            .tokenize("t", &subject(None), ISSUER, now())
            .unwrap();
        let (_, claims) = verify(&jwt, &jwks);
        assert_eq!(claims["iss"], "https://elsewhere.example");
        assert_eq!(claims["exp"], 1);
        assert_eq!(claims["sub"], IDENTITY_ID);
        assert_eq!(claims["nothing"], Value::Null);
    }

    #[test]
    fn ttl_sets_exp_in_whole_seconds() {
        let template = TokenizerTemplate::new(SigningAlg::EdDsa).ttl(Duration::from_millis(90_500));
        let tokenizers = one_template(template);
        let now = now() + time::Duration::milliseconds(700);
        let jwt = tokenizers
            .tokenize("t", &subject(None), ISSUER, now)
            .unwrap();
        let claims = decode_segment(jwt.split('.').nth(1).unwrap());
        assert_eq!(claims["iat"], NOW);
        assert_eq!(claims["nbf"], NOW);
        assert_eq!(claims["exp"], NOW + 91);

        let huge = TokenizerTemplate::new(SigningAlg::EdDsa).ttl(Duration::MAX);
        let jwt = one_template(huge).tokenize("t", &subject(None), ISSUER, now);
        assert!(jwt.is_ok(), "a huge TTL saturates instead of panicking");
    }

    #[test]
    fn every_jwt_has_its_own_jti() {
        let tokenizers = one_template(TokenizerTemplate::new(SigningAlg::Es256));
        let jti = |_| {
            let jwt = tokenizers
                .tokenize("t", &subject(None), ISSUER, now())
                .unwrap();
            decode_segment(jwt.split('.').nth(1).unwrap())["jti"].clone()
        };
        assert_ne!(jti(1), jti(2));
    }

    #[test]
    fn unknown_template_is_kratos_400() {
        let tokenizers = one_template(TokenizerTemplate::new(SigningAlg::Es256));
        let err = tokenizers
            .tokenize("nope \"x\"", &subject(None), ISSUER, now())
            .unwrap_err();
        assert_eq!(
            String::from_utf8(err.body(None)).unwrap(),
            r#"{"error":{"code":400,"status":"Bad Request","reason":"Unable to find tokenizer template \"nope \"x\"\".","message":"The request was malformed or contained invalid parameters"}}"#
        );
    }

    #[test]
    fn rotation_signs_with_the_new_key_and_keeps_the_old_one() {
        for alg in ALL {
            let mut tokenizers = one_template(TokenizerTemplate::new(alg).key_id("first"));
            let old_jwt = tokenizers
                .tokenize("t", &subject(None), ISSUER, now())
                .unwrap();
            let key = SigningKey::with_random_kid(alg).unwrap();
            let new_kid = key.kid.clone();
            tokenizers.by_name.get_mut("t").unwrap().add_key(key);
            assert_ne!(new_kid, "first");
            let jwks = serde_json::to_value(tokenizers.get("t").unwrap().jwks()).unwrap();
            let kids: Vec<&str> = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|jwk| jwk["kid"].as_str().unwrap())
                .collect();
            assert_eq!(kids, [new_kid.as_str(), "first"]);
            let new_jwt = tokenizers
                .tokenize("t", &subject(None), ISSUER, now())
                .unwrap();
            assert_eq!(verify(&new_jwt, &jwks).0["kid"], new_kid.as_str());
            assert_eq!(verify(&old_jwt, &jwks).0["kid"], "first");
        }
    }

    #[test]
    fn arbitrary_claims_are_signed_as_given() {
        let tokenizers = one_template(TokenizerTemplate::new(SigningAlg::Es512));
        let tokenizer = tokenizers.get("t").unwrap();
        let claims = json!({"iss": "https://evil.example/", "exp": 0, "sub": 42});
        let jwt = tokenizer.sign(&claims).unwrap();
        let jwks = serde_json::to_value(tokenizer.jwks()).unwrap();
        assert_eq!(verify(&jwt, &jwks).1, claims);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let tokenizers = one_template(TokenizerTemplate::new(SigningAlg::EdDsa).key_id("k"));
        let debug = format!("{tokenizers:?}");
        assert!(debug.contains("kid: \"k\""), "{debug}");
        let public = serde_json::to_value(tokenizers.get("t").unwrap().jwks()).unwrap();
        let x = public["keys"][0]["x"].as_str().unwrap();
        assert!(!debug.contains(x), "{debug}");
        assert!(!debug.contains("Ed25519KeyPair"), "{debug}");
    }

    #[test]
    fn empty_template_names_are_refused() {
        let err = Tokenizers::generate(vec![(
            String::new(),
            TokenizerTemplate::new(SigningAlg::Es256),
        )])
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn template_names_are_percent_encoded_in_paths() {
        assert_eq!(percent_encode_segment("api-v1_x.~"), "api-v1_x.~");
        assert_eq!(percent_encode_segment("a b/é"), "a%20b%2F%C3%A9");
    }
}
