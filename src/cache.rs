//! The session cache: whoami answers keyed by a keyed hash of the credential, each entry bounded
//! by the configured TTL, Kratos's `Ory-Session-Cache-For` hint and the session's own
//! `expires_at`; concurrent misses for one credential share one whoami call, sent only when the
//! [`Gate`] allows. With stale-if-error on, a second store keeps each session for a grace period
//! past its entry, for lookups that end with Kratos unavailable; a hit never touches it.

use std::{
    collections::HashMap,
    future::Future,
    hash::{BuildHasher, Hash, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use http::HeaderValue;
use moka::{future::Cache, Expiry};
use time::OffsetDateTime;
use tracing::Instrument;

mod hot;

use self::hot::HotTable;
use crate::{
    client::{KratosClient, WhoamiAnswer},
    credentials::{Credential, FoundCredential},
    gate::{Gate, GateConfig},
    outcome::{Outcome, StaleSession, Unauthenticated, Unavailable},
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
    /// Kratos could not be asked; an expired entry was served (stale-if-error).
    Stale,
}

impl CacheStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
        }
    }
}

/// A keyed BLAKE3 hash of the credential. The raw credential is never stored; without the
/// per-process keys the hash cannot be recomputed from a guessed token, and its 256 bits make two
/// credentials sharing an entry (and so a session) out of reach.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheKey([u8; 32]);

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

/// A cached whoami answer, when the call that produced it was sent, and until when it may be
/// served.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    pub(crate) answer: CachedAnswer,
    /// When the whoami call (or extension) behind this answer was *sent*: a revocation made
    /// after this instant may not be reflected in it.
    pub(crate) asked_at: Instant,
    /// The end of the entry's lifetime ([`EntryLifetime`]), fixed when it is stored: moka
    /// expires the entry then, and a hit checks it against one monotonic clock read instead of
    /// reading the wall clock for the session's `expires_at` on every request.
    pub(crate) fresh_until: Instant,
}

/// The part of a whoami answer worth keeping.
#[derive(Clone, Debug)]
pub(crate) enum CachedAnswer {
    /// An authenticated session, with Kratos's caching hint.
    Session {
        session: KratosSession,
        cache_for: Option<Duration>,
    },
    /// A 401, cached only when negative caching is on.
    Rejected,
}

impl CachedAnswer {
    /// What this answer is served as.
    fn into_outcome(self) -> Outcome {
        match self {
            Self::Session { session, .. } => Outcome::Authenticated(session),
            Self::Rejected => Outcome::Unauthenticated(Unauthenticated::Rejected),
        }
    }
}

/// Per-entry lifetimes: the least of the TTL, the hint and the time left until `expires_at`.
#[derive(Clone, Copy, Debug)]
struct EntryLifetime {
    ttl: Duration,
    negative_ttl: Duration,
}

impl EntryLifetime {
    /// An entry for `answer`, stored now. Its end is on the monotonic clock: a session's
    /// `expires_at` is converted once, here, so a later jump of the wall clock moves it no
    /// more than it moves Kratos's own judgement of that session.
    fn entry(&self, answer: CachedAnswer, asked_at: Instant) -> Cached {
        let fresh_until = Instant::now() + self.lifetime(&answer);
        Cached {
            answer,
            asked_at,
            fresh_until,
        }
    }

    fn lifetime(&self, answer: &CachedAnswer) -> Duration {
        match answer {
            CachedAnswer::Session { session, cache_for } => {
                let mut lifetime = self.ttl;
                if let Some(hint) = cache_for {
                    lifetime = lifetime.min(*hint);
                }
                if let Some(expires_at) = session.expires_at {
                    lifetime = lifetime.min(time_until(expires_at));
                }
                lifetime
            }
            CachedAnswer::Rejected => self.negative_ttl,
        }
    }
}

fn time_until(at: OffsetDateTime) -> Duration {
    let left = at - OffsetDateTime::now_utc();
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// moka expires each entry at the `fresh_until` it was stored with.
struct UntilFresh;

impl Expiry<CacheKey, Cached> for UntilFresh {
    fn expire_after_create(&self, _: &CacheKey, value: &Cached, now: Instant) -> Option<Duration> {
        Some(value.fresh_until.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Cached,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        // A replaced entry (a refreshed session) gets a lifetime of its own, not the old one's.
        Some(value.fresh_until.saturating_duration_since(now))
    }
}

/// Stale entries live until their regular entry's end plus the grace, and never past the
/// session's `expires_at`.
struct StaleLifetime {
    grace: Duration,
}

impl StaleLifetime {
    fn lifetime(&self, value: &Cached, now: Instant) -> Duration {
        let mut lifetime = (value.fresh_until + self.grace).saturating_duration_since(now);
        if let CachedAnswer::Session { session, .. } = &value.answer {
            if let Some(expires_at) = session.expires_at {
                lifetime = lifetime.min(time_until(expires_at));
            }
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

/// The stale-if-error store: written when a lookup fetched a session, read only when a lookup
/// ends with Kratos unavailable.
#[derive(Clone)]
struct StaleStore {
    entries: Cache<CacheKey, Cached, PassThroughHash>,
    grace: Duration,
}

impl StaleStore {
    fn new(grace: Duration, capacity: u64) -> Self {
        let entries = Cache::builder()
            .name("tower-kratos stale sessions")
            .max_capacity(capacity)
            .expire_after(StaleLifetime { grace })
            .build_with_hasher(PassThroughHash);
        Self { entries, grace }
    }

    /// Keeps a session Kratos just confirmed (the same `Arc`: no copy of its body).
    async fn keep(&self, key: CacheKey, cached: &Cached) {
        if let CachedAnswer::Session { .. } = cached.answer {
            self.entries.insert(key, cached.clone()).await;
        }
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
    /// The longest a whoami call may take; entries asked for before a revocation can arrive this
    /// much later, so revocation marks are kept at least this much longer than the TTL.
    pub(crate) request_timeout: Duration,
    /// Stale-if-error: how long past its entry a session may still be served while Kratos is
    /// unavailable. `None`: off.
    pub(crate) stale_grace: Option<Duration>,
    /// When whoami may be sent: back-off and the concurrency cap.
    pub(crate) gate: GateConfig,
}

impl CacheConfig {
    /// How long after it was asked for an entry can still be served (stale-if-error included):
    /// the longest time a revocation mark must be remembered.
    fn longest_entry_age(&self) -> Duration {
        self.ttl.max(self.negative_ttl.unwrap_or(Duration::ZERO))
            + self.stale_grace.unwrap_or(Duration::ZERO)
            + self.request_timeout
    }
}

/// What a lookup found, and how.
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) outcome: Outcome,
    pub(crate) status: CacheStatus,
    /// The `Set-Cookie` headers of the whoami call this lookup made itself (empty on hits and
    /// for coalesced waiters).
    pub(crate) set_cookies: Vec<HeaderValue>,
    /// Set when the session was served stale because Kratos was unavailable.
    pub(crate) stale: Option<StaleSession>,
}

impl Lookup {
    fn new(outcome: Outcome, status: CacheStatus) -> Self {
        Self {
            outcome,
            status,
            set_cookies: Vec::new(),
            stale: None,
        }
    }
}

/// Revocations made through this process, remembered for as long as an entry asked for before
/// them could still be served. An entry asked for before a mark on its session, its identity or
/// its credential is never served again; Kratos is asked anew.
///
/// Marks force a new whoami call rather than a refusal: `DELETE /sessions/{id}` answers 204 even
/// for another identity's session (API.md §d), so refusing outright would let one user lock
/// another out by naming their session id.
#[derive(Debug)]
struct RevocationMarks {
    /// The instant offsets below count from.
    origin: Instant,
    /// When the latest mark was made, in nanoseconds since `origin` plus one; 0 when none was.
    /// A mark can outdate only entries asked for before it, so an entry asked for after the
    /// latest mark (every hit, once the entries from before a revocation have expired) is
    /// answered from this one load, without the lock.
    latest: AtomicU64,
    marks: RwLock<Marks>,
}

impl Default for RevocationMarks {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            latest: AtomicU64::new(0),
            marks: RwLock::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Marks {
    sessions: HashMap<Box<str>, Instant>,
    identities: HashMap<Box<str>, Instant>,
    credentials: HashMap<CacheKey, Instant>,
}

impl Marks {
    fn forget_older_than(&mut self, oldest: Instant) {
        self.sessions.retain(|_, at| *at >= oldest);
        self.identities.retain(|_, at| *at >= oldest);
        self.credentials.retain(|_, at| *at >= oldest);
    }
}

/// What a revocation affected.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Revoked<'a> {
    /// One session, by id.
    Session(&'a str),
    /// Every session of an identity, by identity id.
    Identity(&'a str),
    /// Whatever session this credential belongs to (API logout knows only the token).
    Credential(&'a Credential),
}

impl RevocationMarks {
    /// `at` as an offset for [`RevocationMarks::latest`] (0 is kept for "no mark").
    fn offset(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn mark(&self, target: MarkTarget, retention: Duration) {
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-update of plain maps; the
        // maps are still usable, and refusing to record a revocation would be worse.
        let mut marks = self
            .marks
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(oldest) = now.checked_sub(retention) {
            marks.forget_older_than(oldest);
        }
        match target {
            MarkTarget::Session(id) => marks.sessions.insert(id, now),
            MarkTarget::Identity(id) => marks.identities.insert(id, now),
            MarkTarget::Credential(key) => marks.credentials.insert(key, now),
        };
        // Under the write lock, so `latest` never runs ahead of the maps it summarises.
        self.latest.fetch_max(self.offset(now), Ordering::Release);
    }

    /// Whether this credential was revoked here within the last `retention`.
    fn marks_credential(&self, key: &CacheKey, retention: Duration) -> bool {
        self.latest.load(Ordering::Acquire) != 0
            && self
                .marks
                .read()
                .unwrap_or_else(|poison| poison.into_inner())
                .credentials
                .get(key)
                .is_some_and(|at| at.elapsed() <= retention)
    }

    /// Whether something this entry depends on was revoked at or after it was asked for.
    fn outdates(&self, key: &CacheKey, cached: &Cached) -> bool {
        let latest = self.latest.load(Ordering::Acquire);
        if latest == 0 || latest < self.offset(cached.asked_at) {
            return false;
        }
        let marks = self
            .marks
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let after = |at: Option<&Instant>| at.is_some_and(|at| *at >= cached.asked_at);
        if after(marks.credentials.get(key)) {
            return true;
        }
        match &cached.answer {
            CachedAnswer::Session { session, .. } => {
                after(marks.sessions.get(session.id.as_str()))
                    || session
                        .identity_id()
                        .is_some_and(|id| after(marks.identities.get(id)))
            }
            CachedAnswer::Rejected => false,
        }
    }
}

enum MarkTarget {
    Session(Box<str>),
    Identity(Box<str>),
    Credential(CacheKey),
}

/// The session cache.
#[derive(Clone)]
pub(crate) struct SessionCache {
    entries: Cache<CacheKey, Cached, PassThroughHash>,
    /// The entries hits were served from lately, read before `entries` (see [`HotTable`]).
    hot: Arc<HotTable>,
    lifetimes: EntryLifetime,
    /// One key for tokens, one for cookies, so the two kinds can never share an entry.
    hash_keys: HashKeys,
    cache_rejections: bool,
    revoked: Arc<RevocationMarks>,
    mark_retention: Duration,
    /// Sessions kept past their entry for stale-if-error; `None` when that is off.
    stale: Option<StaleStore>,
    gate: Arc<Gate>,
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
        let lifetimes = EntryLifetime {
            ttl: config.ttl,
            negative_ttl: config.negative_ttl.unwrap_or(Duration::ZERO),
        };
        let entries = Cache::builder()
            .name("tower-kratos sessions")
            .max_capacity(config.capacity)
            .expire_after(UntilFresh)
            .build_with_hasher(PassThroughHash);
        Ok(Self {
            entries,
            hot: Arc::new(HotTable::for_capacity(config.capacity)),
            lifetimes,
            hash_keys: HashKeys { token, cookie },
            cache_rejections: config.negative_ttl.is_some(),
            revoked: Arc::default(),
            mark_retention: config.longest_entry_age() + Duration::from_secs(1),
            stale: config
                .stale_grace
                .map(|grace| StaleStore::new(grace, config.capacity)),
            gate: Arc::new(Gate::new(config.gate)),
        })
    }

    fn hash_key(&self, kind: KeyKind) -> &[u8; 32] {
        match kind {
            KeyKind::Token => &self.hash_keys.token,
            KeyKind::Cookie => &self.hash_keys.cookie,
        }
    }

    pub(crate) fn key_for(&self, credential: &Credential) -> CacheKey {
        let (kind, secret) = credential.key_material();
        // One-shot hashing: credentials fit one BLAKE3 chunk, hashed without building a Hasher.
        CacheKey(*blake3::keyed_hash(self.hash_key(kind), secret).as_bytes())
    }

    /// The same key as [`SessionCache::key_for`], from the credential still in the request's
    /// headers: a cache hit copies nothing out of the request.
    pub(crate) fn key_for_found(&self, found: &FoundCredential<'_>) -> CacheKey {
        let key = self.hash_key(found.key_kind());
        if let Some(whole) = found.key_whole() {
            return CacheKey(*blake3::keyed_hash(key, whole).as_bytes());
        }
        let mut hasher = blake3::Hasher::new_keyed(key);
        found.key_pieces(|piece| {
            hasher.update(piece);
        });
        CacheKey(*hasher.finalize().as_bytes())
    }

    /// The cached outcome for this key when it can be served now, found without waiting: from
    /// the hot table, else from moka, whose `get` is polled once (it is ready at once unless
    /// the cache is busy with maintenance; then `None`, and the caller takes the ordinary
    /// path). This lets a cache hit skip boxing a lookup future.
    pub(crate) fn hit_now(&self, key: &CacheKey) -> Option<Outcome> {
        let now = Instant::now();
        if let Some(cached) = self.hot.get(key, now) {
            if self.serves(key, &cached, now) {
                return Some(cached.answer.into_outcome());
            }
            // Outdated by a revocation; the lookup the caller falls back on replaces it.
            self.hot.remove(key);
            return None;
        }
        let mut get = std::pin::pin!(self.entries.get(key));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match get.as_mut().poll(&mut context) {
            std::task::Poll::Ready(Some(cached)) if self.serves(key, &cached, now) => {
                self.hot.offer(*key, &cached);
                Some(cached.answer.into_outcome())
            }
            _ => None,
        }
    }

    /// Drops this key's entry from the cache and from the hot table.
    async fn forget(&self, key: &CacheKey) {
        self.hot.remove(key);
        self.entries.invalidate(key).await;
    }

    /// Records a revocation made through this process: from now on no entry asked for before it
    /// is served for the affected session, identity or credential, whatever its TTL.
    pub(crate) async fn revoked(&self, target: Revoked<'_>) {
        let mark = match target {
            Revoked::Session(id) => MarkTarget::Session(id.into()),
            Revoked::Identity(id) => MarkTarget::Identity(id.into()),
            Revoked::Credential(credential) => {
                let key = self.key_for(credential);
                self.forget(&key).await;
                if let Some(stale) = &self.stale {
                    stale.entries.invalidate(&key).await;
                }
                MarkTarget::Credential(key)
            }
        };
        self.revoked.mark(mark, self.mark_retention);
    }

    /// Puts a session Kratos has just confirmed (after an extension) in the cache for this
    /// credential, replacing the entry and its lifetime. `asked_at` is when that confirmation
    /// was asked for.
    pub(crate) async fn store(
        &self,
        credential: &Credential,
        session: KratosSession,
        cache_for: Option<Duration>,
        asked_at: Instant,
    ) {
        let key = self.key_for(credential);
        let cached = self
            .lifetimes
            .entry(CachedAnswer::Session { session, cache_for }, asked_at);
        if self.revoked.outdates(&key, &cached) {
            return;
        }
        if let Some(stale) = &self.stale {
            stale.keep(key, &cached).await;
        }
        // The hot table too, or hits would go on being served the session as it was before.
        self.hot.put(key, &cached);
        self.entries.insert(key, cached).await;
    }

    /// The outcome for this credential: from the cache while it is fresh, else from one whoami
    /// call shared by every concurrent lookup of the same credential.
    pub(crate) async fn lookup(
        &self,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
        client: &KratosClient,
    ) -> Lookup {
        self.lookup_keyed(self.key_for(credential), credential, request_id, client)
            .await
    }

    /// [`SessionCache::lookup`] with the key already computed (the layer hashed the credential
    /// for its hit check).
    pub(crate) async fn lookup_keyed(
        &self,
        key: CacheKey,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
        client: &KratosClient,
    ) -> Lookup {
        // After a revocation made here, Kratos's own session cache (Ory Network) may not know
        // it yet: that whoami asks for a fresh read.
        let mut fresh = false;
        if let Some(cached) = self.entries.get(&key).await {
            if self.serves(&key, &cached, Instant::now()) {
                self.hot.offer(key, &cached);
                return Lookup::new(cached.answer.into_outcome(), CacheStatus::Hit);
            }
            fresh = self.revoked.outdates(&key, &cached);
            self.forget(&key).await;
        }
        // While backing off, answer at once: no task, no call, no waiting for a slot.
        if let Err(unavailable) = self.gate.check() {
            let lookup = Lookup::new(Outcome::Unavailable(unavailable), CacheStatus::Miss);
            return self.or_stale(&key, lookup).await;
        }
        let fresh = fresh || self.revoked.marks_credential(&key, self.mark_retention);
        let (lookup, cached) = self.fill(key, credential, request_id, client, fresh).await;
        let lookup = match cached {
            // The call may have been sent before a revocation that has returned since: ask once
            // more (whoever revoked it has marked it, so this is not a loop).
            Some(cached) if self.revoked.outdates(&key, &cached) => {
                self.forget(&key).await;
                self.fill(key, credential, request_id, client, true).await.0
            }
            _ => lookup,
        };
        self.or_stale(&key, lookup).await
    }

    /// A lookup that ended with Kratos unavailable, answered from the stale store when
    /// stale-if-error is on and the session may still be served: within the grace, not past its
    /// `expires_at`, not outdated by a revocation made through this process.
    async fn or_stale(&self, key: &CacheKey, lookup: Lookup) -> Lookup {
        let (Some(stale), Outcome::Unavailable(cause)) = (&self.stale, &lookup.outcome) else {
            return lookup;
        };
        let Some(entry) = stale.entries.get(key).await else {
            return lookup;
        };
        let CachedAnswer::Session { session, .. } = &entry.answer else {
            return lookup;
        };
        let now = Instant::now();
        let stale_for = now.saturating_duration_since(entry.fresh_until);
        if stale_for >= stale.grace
            || !session.is_valid_at(OffsetDateTime::now_utc())
            || self.revoked.outdates(key, &entry)
        {
            stale.entries.invalidate(key).await;
            return lookup;
        }
        let age = now.saturating_duration_since(entry.asked_at);
        Lookup {
            outcome: Outcome::Authenticated(session.clone()),
            status: CacheStatus::Stale,
            set_cookies: Vec::new(),
            stale: Some(StaleSession {
                age,
                stale_for,
                cause: cause.clone(),
            }),
        }
    }

    /// A snapshot for [`KratosLayer::stats`](crate::KratosLayer::stats): runs the stores'
    /// pending maintenance first, so inserts and removals are counted.
    pub(crate) async fn stats(&self) -> LayerStats {
        self.entries.run_pending_tasks().await;
        let stale_entries = match &self.stale {
            Some(stale) => {
                stale.entries.run_pending_tasks().await;
                stale.entries.entry_count()
            }
            None => 0,
        };
        LayerStats {
            cache_entries: self.entries.entry_count(),
            stale_entries,
            lookups_in_flight: self.gate.in_flight(),
            backing_off: self.gate.backing_off(),
        }
    }

    /// Whether a cached entry may be served at `now`; if not, it must be asked for again (past
    /// its lifetime, which ends by the session's `expires_at` at the latest: the session may
    /// have been extended elsewhere; or outdated by a revocation made through this process).
    /// A check, not a copy: the caller moves the entry it holds into the outcome.
    fn serves(&self, key: &CacheKey, cached: &Cached, now: Instant) -> bool {
        let live = match &cached.answer {
            CachedAnswer::Session { session, .. } => session.active,
            CachedAnswer::Rejected => true,
        };
        live && now < cached.fresh_until && !self.revoked.outdates(key, cached)
    }

    /// Runs the shared whoami call on its own task, so a caller that disconnects (and drops its
    /// request future) does not cancel the lookup the other waiters depend on. The call waits for
    /// the gate inside the shared fill, so one credential's waiters take one slot.
    async fn fill(
        &self,
        key: CacheKey,
        credential: &Credential,
        request_id: Option<&HeaderValue>,
        client: &KratosClient,
        fresh: bool,
    ) -> (Lookup, Option<Cached>) {
        let entries = self.entries.clone();
        let client = client.clone();
        let credential = credential.clone();
        let request_id = request_id.cloned();
        let cache_rejections = self.cache_rejections;
        let lifetimes = self.lifetimes;
        let stale = self.stale.clone();
        let gate = Arc::clone(&self.gate);
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                // Only the call that runs `init` sees Kratos's headers; its caller relays them.
                let mut set_cookies = Vec::new();
                // Whether Kratos answered something other than a session for this credential.
                let mut refused = false;
                let init = async {
                    let pass = gate.enter().await.map_err(Outcome::Unavailable)?;
                    let asked_at = Instant::now();
                    let mut answer = client.whoami(&credential, request_id.as_ref(), fresh).await;
                    let window = gate.record(pass, &answer.outcome);
                    if let (
                        Some(window),
                        Outcome::Unavailable(Unavailable::RateLimited { retry_after }),
                    ) = (window, &mut answer.outcome)
                    {
                        // Tell clients when this layer asks Kratos again, not a longer wait that
                        // Kratos named (up to an hour): the back-off window is capped. Without
                        // a hint, the rejection's default stands.
                        let until_probe = window.max(Duration::from_secs(1));
                        *retry_after = retry_after.map(|wait| wait.min(until_probe));
                    }
                    set_cookies = answer.set_cookies.clone();
                    refused = !matches!(
                        answer.outcome,
                        Outcome::Authenticated(_) | Outcome::Unavailable(_)
                    );
                    to_cached(answer, cache_rejections, asked_at, lifetimes)
                };
                let entry = entries.entry(key).or_try_insert_with(init).await;
                if let Some(stale) = &stale {
                    // A session Kratos just confirmed is kept for outages; one it just refused
                    // (revoked, expired, step-up needed) is never served stale.
                    match &entry {
                        _ if refused => stale.entries.invalidate(&key).await,
                        Ok(entry) if entry.is_fresh() => stale.keep(key, entry.value()).await,
                        _ => {}
                    }
                }
                (entry, set_cookies)
            }
            .instrument(span),
        );
        match task.await {
            Ok((Ok(entry), set_cookies)) => {
                let status = if entry.is_fresh() {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Coalesced
                };
                let cached = entry.into_value();
                let outcome = cached.answer.clone().into_outcome();
                let lookup = Lookup {
                    outcome,
                    status,
                    set_cookies,
                    stale: None,
                };
                (lookup, Some(cached))
            }
            Ok((Err(uncached), _)) => (
                Lookup::new(Outcome::clone(&uncached), CacheStatus::Miss),
                None,
            ),
            Err(_join_error) => (
                Lookup::new(
                    Outcome::Unavailable(Unavailable::Interrupted),
                    CacheStatus::Miss,
                ),
                None,
            ),
        }
    }
}

/// A snapshot of a layer's shared state, from [`KratosLayer::stats`](crate::KratosLayer::stats):
/// for metrics, health checks and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Entries in the session cache: sessions, and 401s when
    /// [`cache_rejections`](crate::KratosLayerBuilder::cache_rejections) is on.
    pub cache_entries: u64,
    /// Sessions kept for [`stale_if_error`](crate::KratosLayerBuilder::stale_if_error) (0 when
    /// it is off).
    pub stale_entries: u64,
    /// whoami calls running now (at most
    /// [`max_concurrent_lookups`](crate::KratosLayerBuilder::max_concurrent_lookups)).
    pub lookups_in_flight: usize,
    /// Whether the layer is backing off from Kratos: lookups are answered 503 (or stale) without
    /// asking it, until a probe lookup gets an answer.
    pub backing_off: bool,
}

/// What may be cached: sessions always, 401s when negative caching is on, nothing else
/// (outages and step-ups must be asked again next time).
fn to_cached(
    answer: WhoamiAnswer,
    cache_rejections: bool,
    asked_at: Instant,
    lifetimes: EntryLifetime,
) -> Result<Cached, Outcome> {
    tracing::debug!(
        outcome = answer.outcome.kind(),
        kratos_latency_us = answer.latency.as_micros() as u64,
        "whoami answered"
    );
    let answer = match answer.outcome {
        Outcome::Authenticated(session) => CachedAnswer::Session {
            session,
            cache_for: answer.cache_for,
        },
        Outcome::Unauthenticated(Unauthenticated::Rejected) if cache_rejections => {
            CachedAnswer::Rejected
        }
        other => return Err(other),
    };
    Ok(lifetimes.entry(answer, asked_at))
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use crate::{
        credentials::{find_credential, CookieNames},
        testing::{Endpoint, Fault, KratosStandIn, TestSession},
    };
    use http::{HeaderMap, StatusCode};

    const TTL: Duration = Duration::from_millis(100);

    fn config(stale_grace: Option<Duration>) -> CacheConfig {
        CacheConfig {
            ttl: TTL,
            capacity: 100,
            negative_ttl: None,
            request_timeout: Duration::from_secs(2),
            stale_grace,
            gate: GateConfig {
                max_concurrent: 4,
                queue_timeout: Duration::from_secs(1),
                backoff_min: Duration::from_secs(1),
                backoff_max: Duration::from_secs(30),
                // Every lookup below must reach Kratos.
                failure_threshold: 100,
            },
        }
    }

    fn credential(session: &TestSession) -> Credential {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-session-token",
            HeaderValue::from_str(&session.token).unwrap(),
        );
        find_credential(&headers, &CookieNames::default())
            .unwrap()
            .unwrap()
    }

    struct Setup {
        kratos: KratosStandIn,
        cache: SessionCache,
        client: KratosClient,
    }

    impl Setup {
        async fn new(stale_grace: Option<Duration>) -> Self {
            let kratos = KratosStandIn::start().await.unwrap();
            let url = reqwest::Url::parse(&kratos.public_url()).unwrap();
            let client = KratosClient::new(reqwest::Client::new(), &url, Duration::from_secs(2));
            let cache = SessionCache::new(config(stale_grace)).unwrap();
            Self {
                kratos,
                cache,
                client,
            }
        }

        async fn lookup(&self, credential: &Credential) -> Lookup {
            self.cache.lookup(credential, None, &self.client).await
        }

        /// Looks the session up (Kratos up), then lets its entry expire and takes Kratos down.
        async fn cached_then_outage(&self, session: &TestSession) -> Credential {
            let credential = credential(session);
            let lookup = self.lookup(&credential).await;
            assert!(matches!(lookup.outcome, Outcome::Authenticated(_)));
            tokio::time::sleep(TTL + Duration::from_millis(50)).await;
            self.kratos
                .set_fault(Endpoint::Whoami, Fault::Status(StatusCode::BAD_GATEWAY));
            credential
        }
    }

    #[tokio::test]
    async fn an_outage_serves_the_stale_copy_with_its_age() {
        let setup = Setup::new(Some(Duration::from_secs(60))).await;
        let alice = setup.kratos.create_session();
        let credential = setup.cached_then_outage(&alice).await;

        let lookup = setup.lookup(&credential).await;

        assert_eq!(lookup.status, CacheStatus::Stale);
        assert_eq!(
            lookup.outcome.session().map(|s| s.id.as_str()),
            Some(alice.id.as_str())
        );
        let stale = lookup.stale.expect("marked stale");
        assert_eq!(stale.cause, Unavailable::Status(StatusCode::BAD_GATEWAY));
        assert!(stale.age >= TTL && stale.stale_for < stale.age, "{stale:?}");
        assert_eq!(setup.kratos.calls(Endpoint::Whoami), 2);
    }

    #[tokio::test]
    async fn a_session_revoked_through_this_process_is_never_served_stale() {
        for target in ["session", "identity", "credential"] {
            let setup = Setup::new(Some(Duration::from_secs(60))).await;
            let alice = setup.kratos.create_session();
            let credential = setup.cached_then_outage(&alice).await;

            match target {
                "session" => setup.cache.revoked(Revoked::Session(&alice.id)).await,
                "identity" => {
                    setup
                        .cache
                        .revoked(Revoked::Identity(&alice.identity_id))
                        .await
                }
                _ => setup.cache.revoked(Revoked::Credential(&credential)).await,
            }
            let lookup = setup.lookup(&credential).await;

            assert!(
                matches!(
                    lookup.outcome,
                    Outcome::Unavailable(Unavailable::Status(StatusCode::BAD_GATEWAY))
                ),
                "{target}: {:?}",
                lookup.outcome
            );
            assert!(lookup.stale.is_none(), "{target}");
            assert_eq!(setup.kratos.calls(Endpoint::Whoami), 2, "{target}");
        }
    }

    #[tokio::test]
    async fn a_revocation_of_another_session_leaves_the_stale_copy_alone() {
        let setup = Setup::new(Some(Duration::from_secs(60))).await;
        let alice = setup.kratos.create_session();
        let bob = setup.kratos.create_session();
        let credential = setup.cached_then_outage(&alice).await;

        setup.cache.revoked(Revoked::Session(&bob.id)).await;
        setup
            .cache
            .revoked(Revoked::Identity(&bob.identity_id))
            .await;

        assert_eq!(setup.lookup(&credential).await.status, CacheStatus::Stale);
    }

    #[test]
    fn revocation_marks_outlive_every_entry_that_predates_them() {
        // A mark forgotten while a stale copy asked for before it can still be served would let
        // that copy through: stale-if-error lengthens how long marks are kept.
        let without = config(None).longest_entry_age();
        let with = config(Some(Duration::from_secs(600))).longest_entry_age();
        assert_eq!(with - without, Duration::from_secs(600));
        assert!(without >= TTL + Duration::from_secs(2));
    }
}

#[cfg(test)]
mod key_tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::credentials::CookieNames;

    fn cache() -> SessionCache {
        SessionCache::new(CacheConfig {
            ttl: Duration::from_secs(60),
            capacity: 10,
            negative_ttl: None,
            request_timeout: Duration::from_secs(1),
            stale_grace: None,
            gate: crate::gate::GateConfig {
                max_concurrent: 1,
                queue_timeout: Duration::from_secs(1),
                backoff_min: Duration::from_secs(1),
                backoff_max: Duration::from_secs(1),
                failure_threshold: 1,
            },
        })
        .unwrap()
    }

    /// The hit path hashes the credential in place; the miss path hashes the owned copy. They
    /// must land on one entry, or every hit would miss.
    #[test]
    fn a_credential_keys_alike_in_the_request_and_owned() {
        let cache = cache();
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
            let in_place = cache.key_for_found(&found);
            let owned = cache.key_for(&found.into_credential());
            assert!(in_place == owned, "{name}: {value}");
        }
        // And tokens never share a key with a cookie of the same bytes.
        let token = Credential::session_token("abc").unwrap();
        let cookie = Credential::cookie("ory_kratos_session", "abc").unwrap();
        assert!(cache.key_for(&token) != cache.key_for(&cookie));
    }
}
