//! The session cache: whoami answers keyed by a keyed hash of the credential ([`key`]), each
//! entry bounded by the configured TTL, Kratos's `Ory-Session-Cache-For` hint and the session's
//! own `expires_at` ([`entry`]), in a store bounded in entries or bytes whose hits stay as cheap
//! with a million entries as with a hundred ([`store`]); concurrent misses of one credential
//! share one whoami call ([`fill`]). Revocations made
//! through this process outdate entries at once ([`revocation`]); with stale-if-error on, a
//! second store keeps sessions for lookups that end with Kratos unavailable ([`stale`]).
//!
//! A lookup, in order: the store, then the miss path ([`SessionCache::lookup_keyed`]):
//! one shared fill that asks Kratos through the client's admission, then stale-if-error when
//! Kratos could not answer. A cached entry is served whatever the admission says: the back-off
//! guards Kratos, not the cache.

mod connections;
mod entry;
mod fill;
mod key;
mod recheck;
mod revocation;
mod second_level;
mod stale;
mod store;
#[cfg(all(feature = "redis", feature = "jwt"))]
mod watch;

use std::{
    any::Any,
    sync::{Arc, OnceLock, Weak},
    time::{Duration, Instant},
};

pub use self::connections::Ended;
#[cfg(all(feature = "redis", feature = "jwt"))]
pub(crate) use self::watch::RevocationWatch;
pub(crate) use self::{
    connections::{Seed, Watch},
    fill::Lookup,
    key::CacheKey,
    revocation::Revoked,
    second_level::SharedCacheSetting,
    store::CacheSize,
};
use self::{
    entry::{CachedAnswer, EntryLifetime},
    fill::Flights,
    key::{HashKeys, Keys},
    recheck::Refusals,
    revocation::RevocationMarks,
    second_level::Level,
    stale::StaleStore,
    store::Store,
};
use crate::{
    client::{Correlation, KratosClient},
    credentials::{Credential, FoundCredential},
    outcome::Outcome,
    session::{KratosSession, Origin},
};

/// Cache settings, validated by the layer's builder.
#[derive(Clone, Debug)]
pub(crate) struct CacheConfig {
    pub(crate) ttl: Duration,
    pub(crate) size: CacheSize,
    pub(crate) negative_ttl: Option<Duration>,
    /// Stale-if-error: how long past its entry a session may still be served while Kratos is
    /// unavailable. `None`: off.
    pub(crate) stale_grace: Option<Duration>,
    /// The most a session may have of age (from its `issued_at`). `None`: no cap.
    pub(crate) max_session_age: Option<Duration>,
    /// Whether whoami is asked with `tokenize_as`: then entries are not shared through Redis
    /// (which never holds a JWT), only revocations are.
    pub(crate) tokenized: bool,
    /// How long before its JWT's `exp` a tokenized session's entry ends.
    pub(crate) tokenized_margin: Duration,
}

impl CacheConfig {
    /// How long after it was asked for an entry can still be served (stale-if-error included),
    /// when a lookup takes up to `lookup_deadline`: the longest a revocation mark must be
    /// remembered, since an answer read before a revocation can arrive that much later.
    fn longest_entry_age(&self, lookup_deadline: Duration) -> Duration {
        self.ttl.max(self.negative_ttl.unwrap_or(Duration::ZERO))
            + self.stale_grace.unwrap_or(Duration::ZERO)
            + lookup_deadline
    }
}

/// What the cache holds now, for [`KratosLayer::stats`](crate::KratosLayer::stats).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CacheStats {
    pub(crate) entries: u64,
    /// What the entries weigh in bytes, for a cache sized in bytes.
    pub(crate) bytes: Option<u64>,
    pub(crate) stale_entries: u64,
}

/// The session cache. Cloning is cheap (one `Arc`): a miss hands a clone to its fill task.
#[derive(Clone)]
pub(crate) struct SessionCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Store,
    /// Whether `entries` is sized in bytes (else in entries).
    in_bytes: bool,
    /// The misses being asked about now, one per credential ([`fill`]).
    flights: Flights,
    lifetimes: EntryLifetime,
    /// One key for tokens, one for cookies, so the two kinds can never share an entry.
    keys: HashKeys,
    revoked: RevocationMarks,
    /// The credentials a route's requirement refused lately, for rechecks ([`recheck`]).
    refusals: Refusals,
    /// Sessions kept past their entry for stale-if-error; `None` when that is off.
    stale: Option<StaleStore>,
    /// The shared second level (feature `redis`), when one is configured.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    second_level: Option<Level>,
    /// How long a miss waits for another replica's whoami before asking Kratos itself.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fill_wait: Duration,
    /// Entries hold JWTs, which Redis never does: the second level is not read or written.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    tokenized: bool,
    /// Set when connections opened with cached sessions are watched ([`connections`]).
    live: OnceLock<connections::LiveSettings>,
    /// The entry count this cache last added to the metrics' gauge.
    #[cfg(feature = "metrics")]
    reported_entries: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "metrics")]
impl Drop for Inner {
    fn drop(&mut self) {
        let reported = self
            .reported_entries
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::metrics::cache_entries(-(reported as f64));
    }
}

impl SessionCache {
    /// Brings the metrics' entry gauge to this cache's count (moka's, approximate): after each
    /// fill, off the hit path.
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    pub(super) fn report_size(&self) {
        #[cfg(feature = "metrics")]
        {
            let count = self.inner.entries.len();
            let before = self
                .inner
                .reported_entries
                .swap(count, std::sync::atomic::Ordering::Relaxed);
            crate::metrics::cache_entries(count as f64 - before as f64);
        }
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.inner.entries.len())
            .finish_non_exhaustive()
    }
}

impl SessionCache {
    /// A cache whose lookups take up to `lookup_deadline` (the whoami deadline), with keys of
    /// its own, or (with a shared cache) the keys every replica derives from the shared secret.
    ///
    /// # Errors
    /// When the operating system has no randomness for the hash keys.
    pub(crate) fn new(
        config: CacheConfig,
        lookup_deadline: Duration,
        shared: SharedCacheSetting,
    ) -> Result<Self, getrandom::Error> {
        // Expired entries are swept once per TTL: none outlives its end by more than that.
        let entries = Store::new(config.size, config.ttl);
        #[cfg(feature = "redis")]
        let keys = match &shared {
            Some(settings) => Keys::derive(&settings.secret),
            None => Keys::random()?,
        };
        #[cfg(not(feature = "redis"))]
        let keys = {
            let () = shared;
            Keys::random()?
        };
        let retention = config.longest_entry_age(lookup_deadline) + Duration::from_secs(1);
        // Another replica's whoami takes up to the deadline; past it, ask Kratos too.
        let fill_wait = lookup_deadline + Duration::from_millis(250);
        let inner = Arc::new_cyclic(|_cache: &Weak<Inner>| Inner {
            entries,
            in_bytes: matches!(config.size, CacheSize::Bytes(_)),
            flights: Flights::default(),
            lifetimes: EntryLifetime {
                ttl: config.ttl,
                max_session_age: config.max_session_age,
                negative_ttl: config.negative_ttl.unwrap_or(Duration::ZERO),
                cache_rejections: config.negative_ttl.is_some(),
                tokenized_margin: config.tokenized_margin,
                origin: _cache.clone(),
            },
            revoked: RevocationMarks::new(retention, keys.marks.clone()),
            refusals: Refusals::new(config.size.entries_hint(), config.ttl),
            stale: config
                .stale_grace
                .map(|grace| StaleStore::new(grace, config.size)),
            #[cfg(feature = "redis")]
            second_level: shared.as_ref().map(|settings| {
                Level::new(settings, &keys.seal, retention, fill_wait, _cache.clone())
            }),
            #[cfg(not(feature = "redis"))]
            second_level: None,
            keys: keys.hash,
            fill_wait,
            tokenized: config.tokenized,
            live: OnceLock::new(),
            #[cfg(feature = "metrics")]
            reported_entries: std::sync::atomic::AtomicU64::new(0),
        });
        // Only now: what the subscriber hears reaches the cache through a weak handle, which
        // upgrades only once `new_cyclic` has returned.
        #[cfg(feature = "redis")]
        if let Some(level) = &inner.second_level {
            level.start();
        }
        Ok(Self { inner })
    }

    /// The cache a session was stored by, when that layer watches connections.
    pub(crate) fn of_session(session: &KratosSession) -> Option<Self> {
        let inner = session.origin.upgrade()?.downcast::<Inner>().ok()?;
        inner.live.get()?;
        Some(Self { inner })
    }

    /// `session`, marked as this cache's: a session the layer serves without storing it (the
    /// one an extension returned) can still be watched.
    pub(crate) fn adopt(&self, session: KratosSession) -> KratosSession {
        let origin: Weak<dyn Any + Send + Sync> = Arc::downgrade(&self.inner) as _;
        session.with_origin(Origin::new(origin))
    }

    pub(crate) fn key_for(&self, credential: &Credential) -> CacheKey {
        self.inner.keys.key_for(credential)
    }

    /// The same key as [`SessionCache::key_for`], from the credential still in the request's
    /// headers: a cache hit copies nothing out of the request.
    pub(crate) fn key_for_found(&self, found: &FoundCredential<'_>) -> CacheKey {
        self.inner.keys.key_for_found(found)
    }

    /// The cached outcome for this key when it can be served now: a hit, found without
    /// waiting or boxing a lookup future. `None` sends the caller down the ordinary path.
    pub(crate) fn hit_now(&self, key: &CacheKey) -> Option<Outcome> {
        let cached = self.inner.entries.get(key)?;
        self.serves(key, &cached, Instant::now())
            .then(|| cached.answer.into_outcome())
    }

    /// The outcome for this credential: from the cache while it is fresh, else from one whoami
    /// call shared by every concurrent lookup of the same credential.
    pub(crate) async fn lookup(&self, credential: &Credential, client: &KratosClient) -> Lookup {
        let key = self.key_for(credential);
        self.lookup_keyed(key, credential, &Correlation::NONE, client)
            .await
    }

    /// [`SessionCache::lookup`] with the key already computed (the layer hashed the credential
    /// for its hit check): the store, then the miss path.
    pub(crate) async fn lookup_keyed(
        &self,
        key: CacheKey,
        credential: &Credential,
        correlation: &Correlation,
        client: &KratosClient,
    ) -> Lookup {
        let inner = &*self.inner;
        // After a revocation made here, Kratos's own session cache (Ory Network) may not know
        // it yet: that whoami asks for a fresh read.
        let mut fresh = false;
        if let Some(cached) = inner.entries.get(&key) {
            if self.serves(&key, &cached, Instant::now()) {
                return Lookup::hit(cached.answer.into_outcome());
            }
            fresh = inner.revoked.outdates(&key, &cached);
            self.forget(&key);
        }
        let fresh = fresh || inner.revoked.marks_credential(&key);
        let (lookup, cached) = self.fill(key, credential, correlation, client, fresh).await;
        let lookup = match cached {
            // The call may have been sent before a revocation that has returned since: ask once
            // more (whoever revoked it has marked it, so this is not a loop).
            Some(cached) if inner.revoked.outdates(&key, &cached) => {
                self.forget(&key);
                self.fill(key, credential, correlation, client, true)
                    .await
                    .0
            }
            _ => lookup,
        };
        self.or_stale(&key, lookup).await
    }

    /// A lookup that ended with Kratos unavailable, answered from the stale store when
    /// stale-if-error is on and the session may still be served.
    async fn or_stale(&self, key: &CacheKey, lookup: Lookup) -> Lookup {
        let (Some(stale), Outcome::Unavailable(cause)) = (&self.inner.stale, &lookup.outcome)
        else {
            return lookup;
        };
        match stale.serve(key, cause, &self.inner.revoked).await {
            Some((session, marker)) => Lookup::stale(session, marker),
            None => lookup,
        }
    }

    /// Whether a cached entry may be served at `now`; if not, it must be asked for again (past
    /// its lifetime, which ends by the session's `expires_at` at the latest: the session may
    /// have been extended elsewhere; or outdated by a revocation made through this process).
    /// A check, not a copy: the caller moves the entry it holds into the outcome.
    /// An inactive session's entry ends as it is made ([`entry`]): a hit reads nothing of the
    /// session, whose memory a large cache would fetch for it.
    fn serves(&self, key: &CacheKey, cached: &entry::Cached, now: Instant) -> bool {
        now < cached.fresh_until && !self.inner.revoked.outdates(key, cached)
    }

    /// Drops this key's entry.
    fn forget(&self, key: &CacheKey) {
        self.inner.entries.remove(key);
    }

    /// Drops what this process holds for a credential Kratos has just said it does not know
    /// (a 401 to a lifecycle call): its next request asks Kratos. Not a revocation: nothing is
    /// marked or published, since nothing was revoked (a made-up cookie costs no mark).
    pub(crate) async fn forget_credential(&self, credential: &Credential) {
        let key = self.key_for(credential);
        self.forget(&key);
        if let Some(stale) = &self.inner.stale {
            stale.forget(&key).await;
        }
    }

    /// Records a revocation made through this process: from now on no entry asked for before it
    /// is served for the affected session, identity or credential, whatever its TTL; with a
    /// shared cache, by every replica.
    pub(crate) async fn revoked(&self, target: Revoked<'_>) {
        let inner = &*self.inner;
        let mark = inner
            .revoked
            .target(target, |credential| self.key_for(credential));
        if let Revoked::Credential(credential) = target {
            self.forget_credential(credential).await;
        }
        inner.revoked.mark(mark);
        self.publish(mark).await;
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
        let inner = &*self.inner;
        let key = self.key_for(credential);
        let cached = inner
            .lifetimes
            .entry(CachedAnswer::Session { session, cache_for }, asked_at);
        if inner.revoked.outdates(&key, &cached) {
            return;
        }
        if let Some(stale) = &inner.stale {
            stale.keep(key, &cached).await;
        }
        self.share(&key, Some(&cached), None);
        inner.entries.insert(key, cached);
    }

    /// A snapshot for [`KratosLayer::stats`](crate::KratosLayer::stats): sweeps expired
    /// entries first, so that only servable ones are counted.
    pub(crate) async fn stats(&self) -> CacheStats {
        self.inner.entries.sweep();
        let stale_entries = match &self.inner.stale {
            Some(stale) => stale.len().await,
            None => 0,
        };
        CacheStats {
            entries: self.inner.entries.len(),
            bytes: self.inner.in_bytes.then(|| self.inner.entries.weight()),
            stale_entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fill::CacheStatus, *};
    use crate::{
        client::{Admission, AdmissionConfig},
        credentials::{find_credential, CookieNames},
        outcome::Unavailable,
    };
    use http::{HeaderMap, HeaderValue, StatusCode};
    use kratos_stand_in::{Endpoint, Fault, KratosStandIn, TestSession};

    const TTL: Duration = Duration::from_millis(100);

    const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

    fn config(stale_grace: Option<Duration>) -> CacheConfig {
        CacheConfig {
            ttl: TTL,
            size: CacheSize::Entries(100),
            negative_ttl: None,
            stale_grace,
            max_session_age: None,
            tokenized: false,
            tokenized_margin: Duration::from_secs(10),
        }
    }

    fn admission() -> Admission {
        Admission::new(AdmissionConfig {
            max_concurrent: 4,
            queue_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            // Every lookup below must reach Kratos.
            failure_threshold: 100,
        })
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
            let client = KratosClient::new(
                reqwest::Client::new(),
                &url,
                None,
                LOOKUP_DEADLINE,
                None,
                admission(),
            );
            let cache = SessionCache::new(config(stale_grace), LOOKUP_DEADLINE, Default::default())
                .unwrap();
            Self {
                kratos,
                cache,
                client,
            }
        }

        async fn lookup(&self, credential: &Credential) -> Lookup {
            self.cache.lookup(credential, &self.client).await
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
        let without = config(None).longest_entry_age(LOOKUP_DEADLINE);
        let with = config(Some(Duration::from_secs(600))).longest_entry_age(LOOKUP_DEADLINE);
        assert_eq!(with - without, Duration::from_secs(600));
        assert!(without >= TTL + LOOKUP_DEADLINE);
    }
}
