//! The stale-if-error store: each session Kratos confirmed, kept for a grace period past its
//! entry, for lookups that end with Kratos unavailable. Written only on misses; a hit never
//! touches it.

use std::time::{Duration, Instant};

use moka::{future::Cache, Expiry};
use time::OffsetDateTime;

use super::{
    entry::{time_until, Cached, CachedAnswer},
    key::{CacheKey, PassThroughHash},
    revocation::RevocationMarks,
    store::CacheSize,
};
use crate::{
    outcome::{StaleSession, Unavailable},
    session::KratosSession,
};

/// Stale entries live until their regular entry's end plus the grace, and never past the
/// session's `expires_at`.
struct StaleLifetime {
    grace: Duration,
}

impl StaleLifetime {
    fn lifetime(&self, value: &Cached, now: Instant) -> Duration {
        let mut lifetime = (value.fresh_until + self.grace).saturating_duration_since(now);
        if let Some(expires_at) = value
            .answer
            .session()
            .and_then(|session| session.expires_at)
        {
            lifetime = lifetime.min(time_until(expires_at));
        }
        lifetime
    }
}

impl Expiry<CacheKey, Cached> for StaleLifetime {
    fn expire_after_create(&self, _: &CacheKey, value: &Cached, at: Instant) -> Option<Duration> {
        Some(self.lifetime(value, at))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Cached,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value, at))
    }
}

/// The store, when stale-if-error is on.
#[derive(Clone)]
pub(super) struct StaleStore {
    entries: Cache<CacheKey, Cached, PassThroughHash>,
    grace: Duration,
}

impl StaleStore {
    /// A store bounded as the cache is: in entries, or in bytes with each session weighed as
    /// its cache entry is (the session itself is shared with that entry while both live).
    pub(super) fn new(grace: Duration, size: CacheSize) -> Self {
        let entries = Cache::builder()
            .name("tower-kratos stale sessions")
            .expire_after(StaleLifetime { grace });
        let entries = match size {
            CacheSize::Entries(entries_max) => entries.max_capacity(entries_max),
            CacheSize::Bytes(bytes) => entries
                .max_capacity(bytes)
                .weigher(|_, cached: &Cached| cached.bytes),
        };
        Self {
            entries: entries.build_with_hasher(PassThroughHash),
            grace,
        }
    }

    /// Keeps a session Kratos just confirmed (the same `Arc`: no copy of its body).
    pub(super) async fn keep(&self, key: CacheKey, cached: &Cached) {
        if let CachedAnswer::Session { .. } = cached.answer {
            self.entries.insert(key, cached.clone()).await;
        }
    }

    /// Drops this credential's copy: Kratos refused it, or it was revoked here.
    pub(super) async fn forget(&self, key: &CacheKey) {
        self.entries.invalidate(key).await;
    }

    /// The session to serve for a lookup that ended with Kratos unavailable (`cause`), when it
    /// may still be: within the grace, not past its `expires_at`, not outdated by a revocation
    /// made through this process.
    pub(super) async fn serve(
        &self,
        key: &CacheKey,
        cause: &Unavailable,
        revoked: &RevocationMarks,
    ) -> Option<(KratosSession, StaleSession)> {
        let entry = self.entries.get(key).await?;
        let session = entry.answer.session()?;
        let now = Instant::now();
        let stale_for = now.saturating_duration_since(entry.fresh_until);
        if stale_for >= self.grace
            || !session.is_valid_at(OffsetDateTime::now_utc())
            || revoked.outdates(key, &entry)
        {
            self.forget(key).await;
            return None;
        }
        let stale = StaleSession {
            age: now.saturating_duration_since(entry.asked_at),
            stale_for,
            cause: cause.clone(),
        };
        Some((session.clone(), stale))
    }

    /// How many sessions are kept, pending maintenance done first.
    pub(super) async fn len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}
