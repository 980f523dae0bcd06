//! Rechecks after a refusal: a session a route's requirement refused (a second factor, a recent
//! sign-in) may have met it at Kratos since, through the flow the refusal sent the user to. Its
//! entry is asked for again, so a user who has just stepped up is not sent round again; but a
//! refusal is not a revocation. Nothing is marked, published or written to Redis, and the
//! recheck is bounded per credential:
//!
//! - the first refusal of an entry asks nothing (the user has not been to Kratos's flow yet);
//! - a later refusal of the same entry asks Kratos once (`Cache-Control: max-age=0`), and the
//!   answer replaces the entry;
//! - an entry a recheck produced is not rechecked within [`RECHECK_SPACING`] of that recheck.
//!
//! So a client that asks a refused route in a loop costs at most one whoami per credential per
//! [`RECHECK_SPACING`] on each replica, and one that is sent to the flow and comes back is
//! asked about at once, however quickly it came back. Concurrent rechecks of one entry make one
//! call: they are serialised on the credential's refusal (moka's `and_compute_with`), and the
//! ones after the first find the entry already replaced.

use std::time::{Duration, Instant};

use crate::defaults::RECHECK_SPACING;

use moka::{future::Cache, ops::compute::Op};

use super::{entry::Cached, key::CacheKey, key::PassThroughHash, SessionCache};
use crate::{
    client::{Correlation, KratosClient},
    credentials::Credential,
    outcome::Outcome,
};

/// What a recheck came to.
enum Rechecked {
    /// The entry is (now) this newer one.
    Replaced(Cached),
    /// Kratos refused the credential: its entry is dropped, and this is the answer.
    Uncached(Outcome),
    /// The refusal stands on the entry as it is.
    Stands,
}

/// The last refusal of a credential's entry.
#[derive(Clone, Copy, Debug)]
struct Refusal {
    /// When the refused entry's whoami was sent: the entry's identity.
    entry_asked_at: Instant,
    /// When this credential was last rechecked, if it was.
    rechecked_at: Option<Instant>,
}

/// The refusals remembered: one per credential, for as long as an entry lives.
pub(super) struct Refusals {
    table: Cache<CacheKey, Refusal, PassThroughHash>,
}

impl Refusals {
    /// Room for as many credentials as the cache holds, each remembered for an entry's TTL:
    /// past it the entry refused has been asked for again anyway.
    pub(super) fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            table: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.max(RECHECK_SPACING))
                .build_with_hasher(PassThroughHash),
        }
    }
}

impl SessionCache {
    /// A route's requirement refused the session cached for `credential`: asks Kratos again
    /// when the refusal rules above say so. Returns a newer answer than the one refused, when
    /// there is one (this recheck's, or a concurrent one's); `None` when the refusal stands on
    /// the answer already given.
    pub(crate) async fn recheck_refused(
        &self,
        credential: &Credential,
        client: &KratosClient,
    ) -> Option<Outcome> {
        let inner = &*self.inner;
        let key = self.key_for(credential);
        let refused = inner.entries.get(&key)?;
        let now = Instant::now();
        let last = inner.refusals.table.get(&key).await;
        let due = last.is_some_and(|last| {
            last.entry_asked_at == refused.asked_at
                && last
                    .rechecked_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= RECHECK_SPACING)
        });
        let rechecked_at = last.and_then(|last| last.rechecked_at);
        if !due {
            let refusal = Refusal {
                entry_asked_at: refused.asked_at,
                rechecked_at,
            };
            inner.refusals.table.insert(key, refusal).await;
            return None;
        }
        let refusal = Refusal {
            entry_asked_at: refused.asked_at,
            rechecked_at: Some(now),
        };
        inner.refusals.table.insert(key, refusal).await;
        self.replace_refused(key, refused.asked_at, credential, client)
            .await
    }

    /// Asks Kratos about the credential and replaces its entry, unless the entry is no longer
    /// the one refused (asked at `refused_asked_at`): then that newer one is the answer.
    async fn replace_refused(
        &self,
        key: CacheKey,
        refused_asked_at: Instant,
        credential: &Credential,
        client: &KratosClient,
    ) -> Option<Outcome> {
        let inner = &*self.inner;
        let mut rechecked = Rechecked::Stands;
        inner
            .refusals
            .table
            .entry(key)
            .and_compute_with(|_refusal| {
                let rechecked = &mut rechecked;
                async move {
                    *rechecked = match inner.entries.get(&key) {
                        Some(current) if current.asked_at == refused_asked_at => {
                            self.recheck(key, credential, client).await
                        }
                        // A concurrent recheck replaced it.
                        Some(newer) => Rechecked::Replaced(newer),
                        None => Rechecked::Stands,
                    };
                    // The refusal itself is kept as it is.
                    Op::Nop
                }
            })
            .await;
        match rechecked {
            Rechecked::Replaced(replaced) => self.took_over(key, replaced),
            Rechecked::Uncached(outcome) => Some(outcome),
            Rechecked::Stands => None,
        }
    }

    /// Asks Kratos about the refused entry's credential, and replaces or drops the entry.
    async fn recheck(
        &self,
        key: CacheKey,
        credential: &Credential,
        client: &KratosClient,
    ) -> Rechecked {
        let inner = &*self.inner;
        // Not shared: a recheck is this replica's own business (the other replicas recheck
        // their entries when they refuse them).
        let answer = client.whoami(credential, &Correlation::NONE, true).await;
        match inner.lifetimes.entry_for(answer) {
            Ok(cached) => {
                if let Some(stale) = &inner.stale {
                    stale.keep(key, &cached).await;
                }
                inner.entries.insert(key, cached.clone());
                Rechecked::Replaced(cached)
            }
            // Kratos could not say: the refusal stands on the entry as it is.
            Err(Outcome::Unavailable(_)) => Rechecked::Stands,
            Err(refused) => {
                self.forget(&key);
                if let Some(stale) = &inner.stale {
                    stale.forget(&key).await;
                }
                Rechecked::Uncached(refused)
            }
        }
    }

    /// A newer entry than the refused one, put where hits are served from, if it may be served.
    fn took_over(&self, key: CacheKey, replaced: Cached) -> Option<Outcome> {
        if !self.serves(&key, &replaced, Instant::now()) {
            return None;
        }
        Some(replaced.answer.into_outcome())
    }
}
