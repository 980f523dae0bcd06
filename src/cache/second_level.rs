//! The shared second level (feature `redis`), as the session cache sees it: read on a miss
//! before Kratos is asked ([`SessionCache::second_level`], the one place the miss path reaches
//! it), written with every answer worth sharing, told of every revocation, and telling the
//! cache of everyone else's. Without the feature every call here is a no-op.
//!
//! An entry from Redis serves only on a local entry's terms: not past its end of life (the
//! writer's, and never past this layer's own for an answer that old), not past the session's
//! `expires_at` or the layer's maximum age, and not outdated by a revocation mark. Entry times
//! travel as wall-clock times (the one clock replicas share) and become this process's instants
//! here; marks heard from other replicas are moved a clock skew later, so that an entry asked for
//! just before a revocation elsewhere, by a clock a little behind, is still outdated.

#[cfg(feature = "redis")]
pub(crate) use with_redis::*;
#[cfg(not(feature = "redis"))]
pub(crate) use without_redis::*;

#[cfg(feature = "redis")]
mod with_redis {
    use std::{
        sync::{Arc, Weak},
        time::{Duration, Instant},
    };

    use time::OffsetDateTime;

    use super::super::{
        entry::{Cached, CachedAnswer},
        key::CacheKey,
        revocation::{age_of, MarkTarget},
        Inner, SessionCache,
    };
    use crate::{
        session::KratosSession,
        shared_cache::{
            unix_ms, FillClaim, Found, RevokedTarget, SharedCache, SharedCacheConfig,
            SharedCacheStats, SharedEntry, SharedEvent,
        },
    };

    /// The shared cache's settings, when one is configured.
    pub(crate) type SharedCacheSetting = Option<SharedCacheConfig>;

    /// What the second level gave a miss.
    pub(in crate::cache) enum SecondLevel {
        /// An entry to serve, with no Kratos call.
        Served(Cached),
        /// Ask Kratos; with a claim, the other replicas wait for this one's answer.
        Ask(Option<FillClaim>),
    }

    /// The second level one cache holds.
    pub(in crate::cache) struct Level {
        shared: SharedCache,
    }

    impl Level {
        /// The shared cache for `settings`, telling the cache behind `cache` what it hears.
        pub(in crate::cache) fn new(
            settings: &SharedCacheConfig,
            seal_key: &[u8; 32],
            retention: Duration,
            lock_ttl: Duration,
            cache: Weak<Inner>,
        ) -> Self {
            let shared = SharedCache::new(settings, seal_key, retention, lock_ttl, move |event| {
                if let Some(inner) = cache.upgrade() {
                    heard(&inner, event);
                }
            });
            Self { shared }
        }

        /// Starts hearing revocations, once the cache they are told to exists.
        pub(in crate::cache) fn start(&self) {
            self.shared.start();
        }
    }

    /// A revocation made elsewhere, or a broken subscription, as a local mark.
    fn heard(inner: &Inner, event: SharedEvent) {
        match event {
            SharedEvent::Revoked { target, at } => {
                let target = match target {
                    RevokedTarget::Session(hash) => MarkTarget::Session(hash),
                    RevokedTarget::Identity(hash) => MarkTarget::Identity(hash),
                    RevokedTarget::Credential(key) => {
                        let key = CacheKey(key);
                        // Outdated by the mark anyway; dropped at once, to free its memory.
                        inner.entries.remove(&key);
                        MarkTarget::Credential(key)
                    }
                    RevokedTarget::Everything => MarkTarget::Everything,
                };
                inner.revoked.mark_heard(target, at);
            }
            SharedEvent::MissedSince(at) => inner.revoked.mark_at(MarkTarget::Everything, at),
        }
    }

    impl SessionCache {
        /// The second level for a miss of `key`: an entry Redis holds and this layer may
        /// serve, or Kratos to ask. Not read for a fresh lookup (after a revocation: only
        /// Kratos knows).
        pub(in crate::cache) async fn second_level(
            &self,
            key: CacheKey,
            fresh: bool,
        ) -> SecondLevel {
            let Some(level) = &self.inner.second_level else {
                return SecondLevel::Ask(None);
            };
            if fresh || self.inner.tokenized {
                return SecondLevel::Ask(None);
            }
            match level.shared.find(&key.0, self.inner.fill_wait).await {
                Found::Entry(entry) => match self.servable(&key, entry) {
                    Some(cached) => SecondLevel::Served(cached),
                    None => SecondLevel::Ask(None),
                },
                Found::Absent(claim) => SecondLevel::Ask(claim),
                Found::NotAsked => SecondLevel::Ask(None),
            }
        }

        /// Shares an answer worth keeping (and releases the fill claim).
        pub(in crate::cache) fn share(
            &self,
            key: &CacheKey,
            cached: Option<&Cached>,
            claim: Option<FillClaim>,
        ) {
            let Some(level) = &self.inner.second_level else {
                return;
            };
            if self.inner.tokenized {
                return;
            }
            match cached.and_then(to_shared) {
                Some(entry) => level.shared.put(&key.0, &entry, claim),
                None if claim.is_some() => level.shared.put(&key.0, &ended(), claim),
                None => {}
            }
        }

        /// Tells every replica of a revocation made here (and drops a revoked credential's
        /// shared entry).
        pub(in crate::cache) async fn publish(&self, target: MarkTarget) {
            let Some(level) = &self.inner.second_level else {
                return;
            };
            let (target, entry_of) = match target {
                MarkTarget::Session(hash) => (RevokedTarget::Session(hash), None),
                MarkTarget::Identity(hash) => (RevokedTarget::Identity(hash), None),
                MarkTarget::Credential(key) => (RevokedTarget::Credential(key.0), Some(key.0)),
                MarkTarget::Everything => (RevokedTarget::Everything, None),
            };
            level.shared.publish(target, entry_of.as_ref()).await;
        }

        /// Whether this replica may extend the session now: always without a shared cache;
        /// with one, unless another replica claimed it within the cooldown.
        pub(crate) async fn claim_extension(&self, session_id: &str, cooldown: Duration) -> bool {
            let Some(level) = &self.inner.second_level else {
                return true;
            };
            let session = self.inner.revoked.session_hash(session_id);
            level
                .shared
                .claim_extension(&session, cooldown)
                .await
                .unwrap_or(true)
        }

        /// The shared cache's counters, when there is one.
        pub(crate) fn shared_stats(&self) -> Option<SharedCacheStats> {
            self.inner
                .second_level
                .as_ref()
                .map(|level| level.shared.stats())
        }

        /// An entry from Redis as a local one, if it may be served.
        fn servable(&self, key: &CacheKey, entry: SharedEntry) -> Option<Cached> {
            let asked_at_wall = from_unix_ms(entry.asked_at_ms)?;
            let ends_at_wall = from_unix_ms(entry.ends_at_ms)?;
            let asked_at = Instant::now().checked_sub(age_of(asked_at_wall))?;
            let answer = match entry.session {
                Some(session) => CachedAnswer::Session {
                    session: KratosSession::new(Arc::new(session)),
                    cache_for: entry.cache_for_ms.map(Duration::from_millis),
                },
                None => CachedAnswer::Rejected,
            };
            let cached =
                self.inner
                    .lifetimes
                    .shared_entry(answer, asked_at, asked_at_wall, ends_at_wall)?;
            (!self.inner.revoked.outdates(key, &cached)).then_some(cached)
        }
    }

    /// A local entry as it is shared: wall-clock times, and never the tokenized JWT.
    fn to_shared(cached: &Cached) -> Option<SharedEntry> {
        let now = Instant::now();
        let now_wall = OffsetDateTime::now_utc();
        let left = cached.fresh_until.saturating_duration_since(now);
        if left.is_zero() {
            return None;
        }
        let asked_ago = now.saturating_duration_since(cached.asked_at);
        let (session, cache_for) = match &cached.answer {
            CachedAnswer::Session { session, cache_for } => {
                let mut session = (**session).clone();
                session.tokenized = None;
                (Some(session), *cache_for)
            }
            CachedAnswer::Rejected => (None, None),
        };
        Some(SharedEntry {
            session,
            cache_for_ms: cache_for.map(|hint| u64::try_from(hint.as_millis()).unwrap_or(u64::MAX)),
            asked_at_ms: unix_ms(now_wall - asked_ago),
            ends_at_ms: unix_ms(now_wall + left),
        })
    }

    /// An entry already over: writing it only releases the fill claim.
    fn ended() -> SharedEntry {
        SharedEntry {
            session: None,
            cache_for_ms: None,
            asked_at_ms: 0,
            ends_at_ms: 0,
        }
    }

    fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }
}

#[cfg(not(feature = "redis"))]
mod without_redis {
    use std::time::Duration;

    use super::super::{entry::Cached, key::CacheKey, revocation::MarkTarget, SessionCache};

    /// No shared cache without the feature.
    pub(crate) type SharedCacheSetting = ();

    /// Never a claim without a shared cache.
    pub(in crate::cache) enum FillClaim {}

    pub(in crate::cache) enum SecondLevel {
        #[allow(dead_code)] // only the shared cache serves
        Served(Cached),
        Ask(Option<FillClaim>),
    }

    /// Nothing.
    pub(in crate::cache) struct Level;

    impl SessionCache {
        #[inline]
        pub(in crate::cache) async fn second_level(&self, _: CacheKey, _: bool) -> SecondLevel {
            SecondLevel::Ask(None)
        }

        #[inline]
        pub(in crate::cache) fn share(
            &self,
            _: &CacheKey,
            _: Option<&Cached>,
            _: Option<FillClaim>,
        ) {
        }

        #[inline]
        pub(in crate::cache) async fn publish(&self, _: MarkTarget) {}

        #[inline]
        pub(crate) async fn claim_extension(&self, _: &str, _: Duration) -> bool {
            true
        }
    }
}
