//! Cache keys: a keyed BLAKE3 hash of the credential, so the raw credential is never stored.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::credentials::{Credential, FoundCredential, KeyKind};

/// A keyed BLAKE3 hash of the credential. The raw credential is never stored; without the keys
/// the hash cannot be recomputed from a guessed token, and its 256 bits make two credentials
/// sharing an entry (and so a session) out of reach.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheKey(pub(super) [u8; 32]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not secret, but of no use in logs and only noise next to the session it names.
        f.write_str("CacheKey(..)")
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The key is already a keyed pseudo-random value: its first 8 bytes are a fine hash.
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes [`CacheKey`]'s own bits through instead of hashing them a second time.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PassThroughHash;

impl BuildHasher for PassThroughHash {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug)]
pub(super) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than CacheKey is hashed; fold the bytes in.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Every key the cache uses, derived from one secret: a random one per process, or the shared
/// secret several replicas have, so they compute the same keys (BLAKE3's key derivation, one
/// context per use).
pub(super) struct Keys {
    pub(super) hash: HashKeys,
    pub(super) marks: MarkKeys,
    /// Seals values in the shared cache.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) seal: [u8; 32],
}

impl Keys {
    /// Keys no other process has.
    ///
    /// # Errors
    /// When the operating system has no randomness.
    pub(super) fn random() -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Self::derive(&secret))
    }

    /// The keys for this secret.
    pub(super) fn derive(secret: &[u8]) -> Self {
        let key = |context: &str| blake3::derive_key(context, secret);
        Self {
            hash: HashKeys {
                token: key("tower-kratos 2026 cache key: session token"),
                cookie: key("tower-kratos 2026 cache key: session cookie"),
            },
            marks: MarkKeys {
                session: key("tower-kratos 2026 revocation mark: session id"),
                identity: key("tower-kratos 2026 revocation mark: identity id"),
            },
            seal: key("tower-kratos 2026 shared cache: value seal"),
        }
    }
}

/// The hash keys, one per [`KeyKind`] so that a token and a cookie of the same bytes never
/// share an entry.
#[derive(Clone)]
pub(super) struct HashKeys {
    token: [u8; 32],
    cookie: [u8; 32],
}

/// The keys revocation marks hash session and identity ids with: replicas exchange marks as
/// these hashes, never as ids.
#[derive(Clone)]
pub(super) struct MarkKeys {
    session: [u8; 32],
    identity: [u8; 32],
}

impl MarkKeys {
    pub(super) fn session(&self, id: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.session, id.as_bytes()).as_bytes()
    }

    pub(super) fn identity(&self, id: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.identity, id.as_bytes()).as_bytes()
    }
}

impl HashKeys {
    fn key(&self, kind: KeyKind) -> &[u8; 32] {
        match kind {
            KeyKind::Token => &self.token,
            KeyKind::Cookie => &self.cookie,
        }
    }

    pub(super) fn key_for(&self, credential: &Credential) -> CacheKey {
        let (kind, secret) = credential.key_material();
        // One-shot hashing: credentials fit one BLAKE3 chunk, hashed without building a Hasher.
        CacheKey(*blake3::keyed_hash(self.key(kind), secret).as_bytes())
    }

    /// The same key as [`HashKeys::key_for`], from the credential still in the request's
    /// headers: a cache hit copies nothing out of the request.
    pub(super) fn key_for_found(&self, found: &FoundCredential<'_>) -> CacheKey {
        let key = self.key(found.key_kind());
        if let Some(whole) = found.key_whole() {
            return CacheKey(*blake3::keyed_hash(key, whole).as_bytes());
        }
        let mut hasher = blake3::Hasher::new_keyed(key);
        found.key_pieces(|piece| {
            hasher.update(piece);
        });
        CacheKey(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::credentials::CookieNames;

    /// The hit path hashes the credential in place; the miss path hashes the owned copy. They
    /// must land on one entry, or every hit would miss.
    #[test]
    fn a_credential_keys_alike_in_the_request_and_owned() {
        let keys = Keys::random().unwrap().hash;
        let names = CookieNames::default().or_exact("second");
        for (name, value) in [
            ("x-session-token", "ory_st_abc"),
            ("authorization", "Bearer ory_st_abc"),
            ("cookie", "a=1; ory_kratos_session=MTY4; b=2"),
            (
                "cookie",
                "ory_session_x=1; theme=dark; second=\"q\"; ory_kratos_session=2",
            ),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            let found = FoundCredential::find(&headers, &names).unwrap().unwrap();
            let in_place = keys.key_for_found(&found);
            let owned = keys.key_for(&found.into_credential());
            assert!(in_place == owned, "{name}: {value}");
        }
        // And tokens never share a key with a cookie of the same bytes.
        let token = Credential::session_token("abc").unwrap();
        let cookie = Credential::cookie("ory_kratos_session", "abc").unwrap();
        assert!(keys.key_for(&token) != keys.key_for(&cookie));
    }

    #[test]
    fn keys_derive_from_the_secret_alone() {
        let token = Credential::session_token("ory_st_abc").unwrap();
        let shared = [7u8; 32];
        let key = |keys: Keys| keys.hash.key_for(&token);
        assert!(
            key(Keys::derive(&shared)) == key(Keys::derive(&shared)),
            "two processes with one secret compute one key"
        );
        assert!(key(Keys::derive(&[8u8; 32])) != key(Keys::derive(&shared)));
        assert!(key(Keys::random().unwrap()) != key(Keys::random().unwrap()));
        let (one, other) = (Keys::derive(&shared), Keys::derive(&shared));
        assert_eq!(one.marks.session("s"), other.marks.session("s"));
        assert_ne!(one.marks.session("s"), one.marks.identity("s"));
        assert_ne!(one.seal, one.hash.token, "every use has a key of its own");
    }
}
