//! What one layer's services share: the key source, the checks, the cache of verified tokens,
//! and (with a shared cache) the revocations heard. `check` is the one place a request's token
//! is decided.

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;
use time::OffsetDateTime;

use super::{
    keys::KeySet,
    source::{KeySource, Refetched, Ticket},
    token::{self, Checks, Parts, TokenizedSession},
};
use crate::{
    log_limit::WarnLimiter,
    metrics,
    outcome::{Outcome, TokenRejected, Unauthenticated, Unavailable},
};

/// A verified token's cache key: a keyed hash of the whole token, so the cache holds no token.
///
/// # Security
/// The whole token, signature included, and never its header and payload alone. ECDSA
/// signatures are malleable: `(r, s)` and `(r, n − s)` both verify, so one signed token has two
/// texts. Both are accepted, on purpose: Kratos signs with Go's crypto/ecdsa, which does not
/// normalise `s`, so about half of its ES256 and ES512 tokens are "high-S", and refusing those
/// would refuse Kratos. The second text is harmless because nothing here trusts a token's text
/// beyond its signature: this key misses for it, so it is verified on its own (aws-lc-rs)
/// before it is ever served from the cache, and a token whose header and payload match a
/// cached one's is never served on that match, whatever its signature. Both texts carry the
/// same claims, and revocations (with a shared cache) are by `sid` and `sub`, never by token
/// text, so a revocation reaches both.
type TokenKey = [u8; 32];

/// One layer's verifier.
pub(crate) struct Verifier {
    pub(crate) keys: KeySource,
    pub(crate) checks: Checks,
    verified: Cache<TokenKey, TokenizedSession>,
    hash_key: [u8; 32],
    #[cfg(feature = "redis")]
    pub(crate) revocations: Option<crate::cache::RevocationWatch>,
    warnings: WarnLimiter,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("checks", &self.checks)
            .field("verified", &self.verified.entry_count())
            .finish_non_exhaustive()
    }
}

/// A verified token stays cached until its `exp` (and the leeway): never longer.
struct UntilExpiry {
    leeway: Duration,
}

impl moka::Expiry<TokenKey, TokenizedSession> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        session: &TokenizedSession,
        _: std::time::Instant,
    ) -> Option<Duration> {
        let left = session.expires_at() - OffsetDateTime::now_utc();
        Some(Duration::try_from(left).unwrap_or_default() + self.leeway)
    }
}

/// What checking a request's token gives before keys are fetched.
pub(crate) enum Checked {
    Decided(Result<TokenizedSession, Outcome>),
    /// The keys had cannot decide the token (none yet, or none with its `kid`): it waits for
    /// keys fetched after it was seen, with this ticket.
    NeedsKeys(Ticket),
}

impl Verifier {
    pub(crate) fn new(
        keys: KeySource,
        checks: Checks,
        capacity: u64,
        #[cfg(feature = "redis")] revocations: Option<crate::cache::RevocationWatch>,
    ) -> Result<Self, getrandom::Error> {
        let mut hash_key = [0u8; 32];
        getrandom::fill(&mut hash_key)?;
        metrics::register_jwt();
        let verified = Cache::builder()
            .max_capacity(capacity)
            .expire_after(UntilExpiry {
                leeway: checks.leeway,
            })
            .build();
        Ok(Self {
            keys,
            checks,
            verified,
            hash_key,
            #[cfg(feature = "redis")]
            revocations,
            warnings: WarnLimiter::default(),
        })
    }

    /// Decides a token with the keys had now: a cached verification (its `exp` and revocations
    /// checked again), else a full check.
    pub(crate) fn check(&self, token: &str) -> Checked {
        let cache_key = self.cache_key(token);
        let now = OffsetDateTime::now_utc();
        if let Some(session) = self.verified.get(&cache_key) {
            return Checked::Decided(self.still_valid(session, now, true));
        }
        let parts = match token::parts(token, &self.checks.algorithms) {
            Ok(parts) => parts,
            Err(why) => return Checked::Decided(Err(self.refused(why))),
        };
        let (keys, seen) = match &self.keys {
            KeySource::Fixed(keys) => (Arc::clone(keys), None),
            KeySource::Url(url) => match url.snapshot() {
                (Some(keys), seen) => (keys, Some(seen)),
                (None, seen) => return Checked::NeedsKeys(seen),
            },
        };
        match (self.verify(cache_key, &parts, &keys, now), seen) {
            // A URL's set may gain the key: a fetch made after this token decides.
            (Err(TokenRejected::UnknownKey), Some(seen)) => Checked::NeedsKeys(seen),
            (Err(why), _) => Checked::Decided(Err(self.refused(why))),
            (Ok(session), _) => Checked::Decided(self.still_valid(session, now, false)),
        }
    }

    /// Decides a token the keys had could not, with keys fetched after it was seen (`seen`),
    /// waiting for them: an unknown `kid` is refused only when such a fetch found no key with
    /// it; when none could be made (the fetch failed, or the hold-back is longer than a request
    /// waits), the token is answered 503 with a retry delay, never 401.
    pub(crate) async fn check_with_fresh_keys(
        &self,
        token: &str,
        seen: Ticket,
    ) -> Result<TokenizedSession, Outcome> {
        let parts =
            token::parts(token, &self.checks.algorithms).map_err(|why| self.refused(why))?;
        let keys = match &self.keys {
            KeySource::Url(url) => {
                let decides = |keys: &KeySet| keys.decides(parts.kid.as_deref(), parts.alg);
                match url.refetched(seen, decides).await {
                    Refetched::Keys(keys) => keys,
                    Refetched::Unavailable { retry_after } => {
                        return Err(Outcome::Unavailable(Unavailable::SigningKeys {
                            retry_after,
                        }))
                    }
                }
            }
            // A fixed set never gains a key: what it lacks is unknown for good.
            KeySource::Fixed(keys) => Arc::clone(keys),
        };
        let now = OffsetDateTime::now_utc();
        self.verify(self.cache_key(token), &parts, &keys, now)
            .map_err(|why| self.refused(why))
            .and_then(|session| self.still_valid(session, now, false))
    }

    /// The signature with these keys, then the claims; a verified token is cached.
    fn verify(
        &self,
        cache_key: TokenKey,
        parts: &Parts<'_>,
        keys: &KeySet,
        now: OffsetDateTime,
    ) -> Result<TokenizedSession, TokenRejected> {
        parts.verify_signature(keys)?;
        let session = parts.claims(&self.checks, now)?;
        self.verified.insert(cache_key, session.clone());
        Ok(session)
    }

    fn cache_key(&self, token: &str) -> TokenKey {
        *blake3::keyed_hash(&self.hash_key, token.as_bytes()).as_bytes()
    }

    /// A verified token, if it has not expired meanwhile nor been revoked; `cached` when it
    /// was verified before (for the metrics: every accepted token is counted here).
    fn still_valid(
        &self,
        session: TokenizedSession,
        now: OffsetDateTime,
        cached: bool,
    ) -> Result<TokenizedSession, Outcome> {
        let leeway = time::Duration::try_from(self.checks.leeway).unwrap_or(time::Duration::ZERO);
        if now >= session.expires_at() + leeway {
            return Err(self.refused(TokenRejected::Expired));
        }
        #[cfg(feature = "redis")]
        if let Some(revocations) = &self.revocations {
            if revocations.revoked(session.session_id(), session.subject(), session.issued_at()) {
                return Err(self.refused(TokenRejected::Revoked));
            }
        }
        metrics::jwt_token(if cached { "cached" } else { "verified" }, "none");
        Ok(session)
    }

    /// A refusal: every token refused after its bearer was read is counted here.
    fn refused(&self, why: TokenRejected) -> Outcome {
        metrics::jwt_token("refused", why.kind());
        tracing::debug!(
            outcome = "unauthenticated",
            reason = why.kind(),
            "tokenized session refused"
        );
        Outcome::Unauthenticated(Unauthenticated::Token(why))
    }

    /// Logs a 503 for keys that could not be had, rate-limited.
    pub(crate) fn log_unavailable(&self) {
        if let Some(left_out) = self.warnings.admit(("jwt", "keys")) {
            tracing::warn!(
                left_out_since_last = left_out,
                "a tokenized session could not be checked: its signing key could not be had \
                 (503)"
            );
        }
    }

    /// How many verified tokens are cached.
    pub(crate) fn cached(&self) -> u64 {
        self.verified.run_pending_tasks();
        self.verified.entry_count()
    }
}

/// The verifier, shared by a layer's services.
pub(crate) type SharedVerifier = Arc<Verifier>;
