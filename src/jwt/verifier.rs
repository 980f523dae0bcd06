//! What one layer's services share: the key source, the checks, the cache of verified tokens,
//! and (with a shared cache) the revocations heard. `check` is the one place a request's token
//! is decided.

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;
use time::OffsetDateTime;

use super::{
    source::KeySource,
    token::{self, Checks, TokenizedSession},
};
use crate::{
    log_limit::WarnLimiter,
    outcome::{Outcome, TokenRejected, Unauthenticated, Unavailable},
};

/// A verified token's cache key: a keyed hash, so the cache holds no token.
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
    /// The key set must be fetched (none yet, or an unknown `kid`) before the token can be
    /// decided.
    NeedsKeys,
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
        let key = *blake3::keyed_hash(&self.hash_key, token.as_bytes()).as_bytes();
        let now = OffsetDateTime::now_utc();
        if let Some(session) = self.verified.get(&key) {
            return Checked::Decided(self.still_valid(session, now));
        }
        let parts = match token::parts(token, &self.checks.algorithms) {
            Ok(parts) => parts,
            Err(why) => return Checked::Decided(Err(self.refused(why))),
        };
        let Some(keys) = self.keys.current() else {
            return Checked::NeedsKeys;
        };
        match parts.verify_signature(&keys) {
            Ok(()) => {}
            Err(TokenRejected::UnknownKey) if matches!(self.keys, KeySource::Url(_)) => {
                return Checked::NeedsKeys;
            }
            Err(why) => return Checked::Decided(Err(self.refused(why))),
        }
        let session = match parts.claims(&self.checks, now) {
            Ok(session) => session,
            Err(why) => return Checked::Decided(Err(self.refused(why))),
        };
        self.verified.insert(key, session.clone());
        Checked::Decided(self.still_valid(session, now))
    }

    /// Decides a token after the key set was fetched again (or could not be).
    pub(crate) async fn check_with_fresh_keys(
        &self,
        token: &str,
    ) -> Result<TokenizedSession, Outcome> {
        let KeySource::Url(url) = &self.keys else {
            return Err(Outcome::Unavailable(Unavailable::SigningKeys));
        };
        if url.refetch().await.is_none() {
            return Err(Outcome::Unavailable(Unavailable::SigningKeys));
        }
        match self.check(token) {
            Checked::Decided(decided) => decided,
            // Still unknown after a fetch (or a fetch too soon after the last).
            Checked::NeedsKeys => Err(self.refused(TokenRejected::UnknownKey)),
        }
    }

    /// A verified token, if it has not expired meanwhile nor been revoked.
    fn still_valid(
        &self,
        session: TokenizedSession,
        now: OffsetDateTime,
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
        Ok(session)
    }

    fn refused(&self, why: TokenRejected) -> Outcome {
        tracing::debug!(
            outcome = "unauthenticated",
            reason = why.kind(),
            "tokenized session refused"
        );
        Outcome::Unauthenticated(Unauthenticated::Token(why))
    }

    /// Logs a 503 for missing keys, rate-limited.
    pub(crate) fn log_unavailable(&self) {
        if let Some(left_out) = self.warnings.admit(("jwt", "keys")) {
            tracing::warn!(
                left_out_since_last = left_out,
                "a tokenized session could not be checked: no signing keys (503)"
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
