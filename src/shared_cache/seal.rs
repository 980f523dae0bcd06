//! Sealing what goes to Redis: XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) with a
//! random 192-bit nonce per value and the value's place (its purpose and Redis key) as
//! associated data. A value cannot be read without the key, changed without being refused, or
//! moved under another key: its associated data would differ.

use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};

/// The format's version, the first byte of every sealed value.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Seals and opens with one key.
pub(super) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub(super) fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// `version ‖ nonce ‖ ciphertext and tag`; `None` only when the system has no randomness.
    pub(super) fn seal(&self, place: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let aad = associated_data(place);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The plaintext, if `sealed` was sealed with this key for this place and not changed since.
    pub(super) fn open(&self, place: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let aad = associated_data(place);
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }
}

/// The format's version and the place, so a value of another version or place never opens.
fn associated_data(place: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(place.len() + 16);
    aad.extend_from_slice(b"tower-kratos v");
    aad.push(b'0' + VERSION);
    aad.push(b' ');
    aad.extend_from_slice(place);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_unchanged_in_its_place_with_its_key() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal(b"entry k1", b"the session").unwrap();
        assert_eq!(
            sealer.open(b"entry k1", &sealed).as_deref(),
            Some(&b"the session"[..])
        );
        assert!(!sealed.windows(11).any(|w| w == b"the session"), "readable");
        // Moved under another key.
        assert!(sealer.open(b"entry k2", &sealed).is_none());
        // Another key.
        assert!(Sealer::new(&[8; 32]).open(b"entry k1", &sealed).is_none());
        // Any byte flipped, or cut short.
        for at in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[at] ^= 1;
            assert!(sealer.open(b"entry k1", &flipped).is_none(), "byte {at}");
        }
        assert!(sealer
            .open(b"entry k1", &sealed[..sealed.len() - 1])
            .is_none());
        assert!(sealer.open(b"entry k1", b"").is_none());
        // A fresh nonce each time: the same value seals differently.
        assert_ne!(sealed, sealer.seal(b"entry k1", b"the session").unwrap());
    }
}
