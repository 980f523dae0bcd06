//! A public JWKS as verification keys: each usable key parsed once into aws-lc-rs's form for the
//! algorithms it may verify, anything else (symmetric keys, unknown types and curves) left out
//! with a reason, and private key material never kept.

use std::{fmt, sync::Arc};

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, ECDSA_P521_SHA512_FIXED,
    ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA512,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::Deserialize;

/// The largest key set read: a JWKS is a few keys; this is hundreds.
pub(crate) const MAX_JWKS_LEN: usize = 256 * 1024;

/// A signature algorithm the JWT layer can accept. `none` and the HMAC algorithms are not
/// among them, so a public key can never be used as an HMAC secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256: one of the two Kratos's docs recommend.
    Es256,
    /// ECDSA on P-521 with SHA-512: the other one Kratos's docs recommend.
    Es512,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2,048 to 8,192 bits.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-512, keys of 2,048 to 8,192 bits.
    Rs512,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// Every algorithm, the default allow-list.
    pub const ALL: [Self; 5] = [
        Self::Es256,
        Self::Es512,
        Self::Rs256,
        Self::Rs512,
        Self::EdDsa,
    ];

    /// The name in a JWS header (`alg`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es512 => "ES512",
            Self::Rs256 => "RS256",
            Self::Rs512 => "RS512",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a header names, if it is one of these (exact, case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One public key, ready to verify with each algorithm its type allows.
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<String>,
    /// The JWK's own `alg`, when it names one: then only that one.
    only: Option<Algorithm>,
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
}

impl VerifyingKey {
    /// Whether this key may verify `alg`: the algorithm fits its type and curve, and its JWK's
    /// `alg`, if any.
    pub(crate) fn verifier(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        if self.only.is_some_and(|only| only != alg) {
            return None;
        }
        self.parsed
            .iter()
            .find_map(|(for_alg, key)| (*for_alg == alg).then_some(key))
    }
}

/// The usable keys of a JWKS.
#[derive(Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<VerifyingKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|key| key.kid.as_deref().unwrap_or("(no kid)")),
            )
            .finish()
    }
}

impl KeySet {
    /// The keys a token with this `kid` (or none) and `alg` may be verified with: the one with
    /// that `kid`; without a `kid`, every key that fits the algorithm.
    ///
    /// A token without a `kid` (Kratos always writes one; another signer might not) is tried
    /// against each of those, and that is bounded: the keys are the operator's own set, never
    /// the token's (a rotation keeps a handful, [`MAX_JWKS_LEN`] caps it), the token is
    /// decoded once whatever their number, and each try is one signature check. So it costs at
    /// most as many checks as the set has keys of its algorithm, and, when none fits, no more
    /// fetches than an unknown `kid` does (one per hold-back interval for all such tokens).
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a ParsedPublicKey> + 'a {
        self.keys
            .iter()
            .filter(move |key| kid.is_none() || key.kid.as_deref() == kid)
            .filter_map(move |key| key.verifier(alg))
    }

    /// Whether a key has this `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    /// Whether this set can decide a token with this `kid` (or none) and `alg`, with no fetch:
    /// it holds a key with that `kid` (one that may not fit `alg`: then the token is refused for
    /// it), or, for a token without a `kid`, a key that fits `alg`. A newer set may hold a key
    /// it lacks.
    pub(crate) fn decides(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        match kid {
            Some(kid) => self.has_kid(kid),
            None => self.candidates(None, alg).next().is_some(),
        }
    }
}

/// What reading a JWKS found.
pub(crate) struct Parsed {
    pub(crate) set: KeySet,
    /// Keys left out, and why (for a log line each: never key material).
    pub(crate) skipped: Vec<String>,
    /// Whether a key carried private material (`d`, or RSA's primes): not kept, but said.
    pub(crate) had_private_parts: bool,
}

/// Why a JWKS could not be used at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JwksError {
    TooLarge,
    NotJson,
    NoUsableKey(Vec<String>),
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(f, "the key set is larger than {MAX_JWKS_LEN} bytes"),
            Self::NotJson => f.write_str("the key set is not a JWKS (`{\"keys\": [...]}`)"),
            Self::NoUsableKey(skipped) if skipped.is_empty() => {
                f.write_str("the key set has no keys")
            }
            Self::NoUsableKey(skipped) => {
                write!(f, "the key set has no usable key: {}", skipped.join("; "))
            }
        }
    }
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

/// The members of a JWK this reads; anything else is ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    // Private parts: only their presence is looked at.
    d: Option<serde_json::Value>,
    p: Option<serde_json::Value>,
}

/// Reads a JWKS. Keys that cannot verify anything here are skipped, each with a reason; a set
/// with none usable is an error.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, JwksError> {
    if bytes.len() > MAX_JWKS_LEN {
        return Err(JwksError::TooLarge);
    }
    let jwks: Jwks = serde_json::from_slice(bytes).map_err(|_| JwksError::NotJson)?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    let mut had_private_parts = false;
    for (index, value) in jwks.keys.into_iter().enumerate() {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            skipped.push(format!("key {index}: not a JWK"));
            continue;
        };
        had_private_parts |= jwk.d.is_some() || jwk.p.is_some();
        let name = jwk
            .kid
            .as_deref()
            .map_or_else(|| format!("key {index}"), |kid| format!("key {kid:?}"));
        match verifying_key(jwk) {
            Ok(key) => set.keys.push(key),
            Err(why) => skipped.push(format!("{name}: {why}")),
        }
    }
    if set.keys.is_empty() {
        return Err(JwksError::NoUsableKey(skipped));
    }
    Ok(Parsed {
        set,
        skipped,
        had_private_parts,
    })
}

/// One JWK as a verifying key (its public parts only), or why not.
fn verifying_key(jwk: Jwk) -> Result<VerifyingKey, &'static str> {
    if jwk.use_.as_deref().is_some_and(|use_| use_ != "sig") {
        return Err("not a signing key (`use` is not \"sig\")");
    }
    let only = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(Algorithm::from_name(name).ok_or("its `alg` is not accepted")?),
    };
    let decode = |part: &Option<String>| -> Result<Vec<u8>, &'static str> {
        let part = part.as_deref().ok_or("a public part is missing")?;
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "a public part is not base64url")
    };
    let parsed = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("EC", Some(curve @ ("P-256" | "P-521"))) => {
            let (alg, verify, size): (_, &'static _, _) = if curve == "P-256" {
                (Algorithm::Es256, &ECDSA_P256_SHA256_FIXED, 32)
            } else {
                (Algorithm::Es512, &ECDSA_P521_SHA512_FIXED, 66)
            };
            let (x, y) = (decode(&jwk.x)?, decode(&jwk.y)?);
            if x.len() != size || y.len() != size {
                return Err("its coordinates do not fit its curve");
            }
            // SEC 1 uncompressed point: 0x04 || x || y.
            let point = [&[4u8][..], &x, &y].concat();
            let key =
                ParsedPublicKey::new(verify, point).map_err(|_| "not a point on its curve")?;
            vec![(alg, key)]
        }
        ("EC", _) => return Err("its curve is not P-256 or P-521"),
        ("RSA", _) => {
            let components = RsaPublicKeyComponents {
                n: decode(&jwk.n)?,
                e: decode(&jwk.e)?,
            };
            let mut parsed = Vec::with_capacity(2);
            for (alg, params) in [
                (Algorithm::Rs256, &RSA_PKCS1_2048_8192_SHA256),
                (Algorithm::Rs512, &RSA_PKCS1_2048_8192_SHA512),
            ] {
                let key = components
                    .to_parsed_public_key(params)
                    .map_err(|_| "not an RSA key of 2,048 to 8,192 bits")?;
                parsed.push((alg, key));
            }
            parsed
        }
        ("OKP", Some("Ed25519")) => {
            let x = decode(&jwk.x)?;
            if x.len() != 32 {
                return Err("not an Ed25519 public key");
            }
            let key = ParsedPublicKey::new(&ED25519, x).map_err(|_| "not an Ed25519 public key")?;
            vec![(Algorithm::EdDsa, key)]
        }
        ("OKP", _) => return Err("its curve is not Ed25519"),
        ("oct", _) => return Err("a symmetric key, never used: HMAC is not accepted"),
        _ => return Err("its key type is not EC, RSA or OKP"),
    };
    if let Some(only) = only {
        if !parsed.iter().any(|(alg, _)| *alg == only) {
            return Err("its `alg` does not fit its key type");
        }
    }
    Ok(VerifyingKey {
        kid: jwk.kid,
        only,
        parsed,
    })
}

/// A parsed key set, shared by every request.
pub(crate) type SharedKeySet = Arc<KeySet>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_unknown_keys_are_skipped_with_a_reason() {
        let jwks = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]}"#;
        let Err(JwksError::NoUsableKey(skipped)) = parse(jwks) else {
            panic!("an unusable set was accepted");
        };
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("HMAC"), "{skipped:?}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"[]",
            b"{\"keys\":{}}",
            b"{\"keys\":[1,null,\"x\"]}",
        ] {
            assert!(parse(bytes).is_err());
        }
        assert_eq!(
            parse(&vec![b' '; MAX_JWKS_LEN + 1]).err(),
            Some(JwksError::TooLarge)
        );
    }

    #[test]
    fn algorithms_are_named_exactly() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        for name in ["none", "None", "HS256", "es256", "ES384", "PS256", ""] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
    }
}
