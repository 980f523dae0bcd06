//! The session cache: whoami answers keyed by a keyed hash of the credential, each entry bounded
//! by the configured TTL, Kratos's `Ory-Session-Cache-For` hint and the session's own
//! `expires_at`; concurrent misses for one credential share one whoami call.

use std::{
    hash::{BuildHasher, Hash, Hasher},
    time::{Duration, Instant},
};

use http::HeaderValue;
use moka::{future::Cache, Expiry};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::{
    client::{KratosClient, WhoamiAnswer},
    credentials::Credential,
    outcome::{Outcome, Unauthenticated, Unavailable},
    session::KratosSession,
};

/// How a lookup was served, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    /// From the cache.
    Hit,
    /// This lookup asked Kratos.
    Miss,
    /// Another lookup for the same credential asked Kratos; this one waited for it.
    Coalesced,
}

impl CacheStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }
}

/// A keyed BLAKE3 hash of the credential. The raw credential is never stored; without the
/// per-process keys the hash cannot be recomputed from a guessed token, and its 256 bits make two
/// credentials sharing an entry (and so a session) out of reach.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheKey([u8; 32]);

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
pub(crate) struct PassThroughHash;

impl BuildHasher for PassThroughHash {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug)]
pub(crate) struct PassThroughHasher(u64);

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

/// A cached whoami answer.
#[derive(Clone, Debug)]
pub(crate) enum Cached {
    /// An authenticated session, with Kratos's caching hint.
    Session {
        session: KratosSession,
        cache_for: Option<Duration>,
    },
    /// A 401, cached only when negative caching is on.
    Rejected,
}

/// Per-entry lifetimes: the least of the TTL, the hint and the time left until `expires_at`.
struct EntryLifetime {
    ttl: Duration,
    negative_ttl: Duration,
}

impl EntryLifetime {
    fn lifetime(&self, value: &Cached) -> Duration {
        match value {
            Cached::Session { session, cache_for } => {
                let mut lifetime = self.ttl;
                if let Some(hint) = cache_for {
                    lifetime = lifetime.min(*hint);
                }
                if let Some(expires_at) = session.expires_at {
                    lifetime = lifetime.min(time_until(expires_at));
                }
                lifetime
            }
            Cached::Rejected => self.negative_ttl,
        }
    }
}

fn time_until(at: OffsetDateTime) -> Duration {
    let left = at - OffsetDateTime::now_utc();
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

impl Expiry<CacheKey, Cached> for EntryLifetime {
    fn expire_after_create(&self, _: &CacheKey, value: &Cached, _: Instant) -> Option<Duration> {
        Some(self.lifetime(value))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Cached,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        // A replaced entry (a refreshed session) gets a lifetime of its own, not the old one's.
        Some(self.lifetime(value))
    }
}

/// The per-process hash keys.
#[derive(Clone)]
struct HashKeys {
    token: [u8; 32],
    cookie: [u8; 32],
}

/// Which hash key a credential is keyed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Session tokens, from `X-Session-Token` or Bearer alike (Kratos treats them alike).
    Token,
    /// Session cookies.
    Cookie,
}

/// Cache settings, validated by the layer's builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CacheConfig {
    pub(crate) ttl: Duration,
    pub(crate) capacity: u64,
    pub(crate) negative_ttl: Option<Duration>,
}

/// The session cache.
#[derive(Clone)]
pub(crate) struct SessionCache {
    entries: Cache<CacheKey, Cached, PassThroughHash>,
    /// One key for tokens, one for cookies, so the two kinds can never share an entry.
    hash_keys: HashKeys,
    cache_rejections: bool,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl SessionCache {
    /// # Errors
    /// When the operating system has no randomness for the hash key.
    pub(crate) fn new(config: CacheConfig) -> Result<Self, getrandom::Error> {
        let mut token = [0u8; 32];
        let mut cookie = [0u8; 32];
        getrandom::fill(&mut token)?;
        getrandom::fill(&mut cookie)?;
        let entries = Cache::builder()
            .name("tower-kratos sessions")
            .max_capacity(config.capacity)
            .expire_after(EntryLifetime {
                ttl: config.ttl,
                negative_ttl: config.negative_ttl.unwrap_or(Duration::ZERO),
            })
            .build_with_hasher(PassThroughHash);
        Ok(Self {
            entries,
            hash_keys: HashKeys { token, cookie },
            cache_rejections: config.negative_ttl.is_some(),
        })
    }

    pub(crate) fn key_for(&self, credential: &Credential) -> CacheKey {
        let (kind, secret) = credential.key_material();
        let key = match kind {
            KeyKind::Token => &self.hash_keys.token,
            KeyKind::Cookie => &self.hash_keys.cookie,
        };
        // One-shot hashing: credentials fit one BLAKE3 chunk, hashed without building a Hasher.
        CacheKey(*blake3::keyed_hash(key, secret).as_bytes())
    }

    /// The outcome for this credential: from the cache while it is fresh, else from one whoami
    /// call shared by every concurrent lookup of the same credential.
    pub(crate) async fn lookup(
        &self,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
        client: &KratosClient,
    ) -> (Outcome, CacheStatus) {
        let key = self.key_for(credential);
        if let Some(cached) = self.entries.get(&key).await {
            match cached {
                Cached::Session { session, .. }
                    if session.is_valid_at(OffsetDateTime::now_utc()) =>
                {
                    return (Outcome::Authenticated(session), CacheStatus::Hit);
                }
                Cached::Rejected => {
                    return (
                        Outcome::Unauthenticated(Unauthenticated::Rejected),
                        CacheStatus::Hit,
                    );
                }
                // Past expires_at already: never serve it, ask Kratos again (it may have been
                // extended elsewhere).
                Cached::Session { .. } => self.entries.invalidate(&key).await,
            }
        }
        self.fill(key, credential, request_id, client).await
    }

    /// Runs the shared whoami call on its own task, so a caller that disconnects (and drops its
    /// request future) does not cancel the lookup the other waiters depend on.
    async fn fill(
        &self,
        key: CacheKey,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
        client: &KratosClient,
    ) -> (Outcome, CacheStatus) {
        let entries = self.entries.clone();
        let client = client.clone();
        let credential = credential.clone();
        let request_id = request_id.cloned();
        let cache_rejections = self.cache_rejections;
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                let init = async {
                    let answer = client.whoami(&credential, request_id.as_ref()).await;
                    to_cached(answer, cache_rejections)
                };
                entries.entry(key).or_try_insert_with(init).await
            }
            .instrument(span),
        );
        match task.await {
            Ok(Ok(entry)) => {
                let status = if entry.is_fresh() {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Coalesced
                };
                let outcome = match entry.into_value() {
                    Cached::Session { session, .. } => Outcome::Authenticated(session),
                    Cached::Rejected => Outcome::Unauthenticated(Unauthenticated::Rejected),
                };
                (outcome, status)
            }
            Ok(Err(uncached)) => (Outcome::clone(&uncached), CacheStatus::Miss),
            Err(_join_error) => (
                Outcome::Unavailable(Unavailable::Interrupted),
                CacheStatus::Miss,
            ),
        }
    }
}

/// What may be cached: sessions always, 401s when negative caching is on, nothing else
/// (outages and step-ups must be asked again next time).
fn to_cached(answer: WhoamiAnswer, cache_rejections: bool) -> Result<Cached, Outcome> {
    tracing::debug!(
        outcome = answer.outcome.kind(),
        kratos_latency_us = answer.latency.as_micros() as u64,
        "whoami answered"
    );
    match answer.outcome {
        Outcome::Authenticated(session) => Ok(Cached::Session {
            session,
            cache_for: answer.cache_for,
        }),
        Outcome::Unauthenticated(Unauthenticated::Rejected) if cache_rejections => {
            Ok(Cached::Rejected)
        }
        other => Err(other),
    }
}
