//! Connections that outlive their request (a streamed response, a WebSocket, a handler waiting
//! on [`SessionEnd`](crate::live::SessionEnd)), watched so that each ends with its session.
//!
//! One watch per credential, shared by every connection opened with it, and one task per watch,
//! alive while a connection is. The task sleeps until a revocation mark names the session, its
//! identity or its credential (or everything), until the session's end of life (its
//! `expires_at`, the layer's maximum age), or for one cache TTL at most; then it asks the cache
//! again, which asks Kratos when the mark outdated the entry or the entry has expired. An
//! answer that is still a session keeps the connections open (an extension moves the end of
//! life); any other ends them.
//!
//! A mark alone never ends a connection: marks force a new whoami rather than a refusal (see
//! [`revocation`](super::revocation)), so a caller naming someone else's session id cannot
//! close that person's connections. A mark wakes only the watches it names.
//!
//! Nothing here runs for an ordinary response: a watch is made when a connection asks for one
//! (a streamed body the first time it waits, a WebSocket when it is upgraded).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{key::CacheKey, revocation::MarkTarget, SessionCache};
use crate::{
    client::{Correlation, KratosClient},
    credentials::{CookieNames, Credential, CredentialCopy},
    outcome::{Outcome, Unauthenticated},
    session::KratosSession,
};

/// Why a session's connections were ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ended {
    /// Kratos no longer knows the session: it was revoked (signed out, revoked from another
    /// device, disabled by an admin, its identity's sessions revoked).
    Revoked,
    /// The session reached its `expires_at`, or the layer's
    /// [`max_session_age`](crate::authenticate::KratosLayerBuilder::max_session_age).
    Expired,
}

impl Ended {
    /// A short reason, safe to show: a WebSocket close frame's, a gRPC status message's.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Revoked => "session revoked",
            Self::Expired => "session expired",
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// How long a watch waits to ask again while Kratos cannot answer: its connections stay open
/// meanwhile, as requests would be answered 503, not 401.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);

/// What a watch asks Kratos with: set by the builder when connections are watched.
pub(super) struct LiveSettings {
    pub(super) client: KratosClient,
    pub(super) cookie_names: CookieNames,
}

/// A session as a request was served it, and its credential: what a connection opened by that
/// request is watched with. Made per request only when connections are watched; costs two
/// reference counts.
#[derive(Debug)]
pub(crate) struct Seed {
    session: KratosSession,
    credential: CredentialCopy,
    /// The revocation marks' epoch when the request was served (a counter read, not a clock):
    /// a mark made since may concern it before it was watched. `None`: not known, so the watch
    /// asks the cache at once (a hit, unless a mark outdated the entry).
    served_at: Option<u64>,
}

impl Seed {
    /// The seed of a request served now by `cache`.
    pub(crate) fn new(
        cache: &SessionCache,
        session: KratosSession,
        credential: CredentialCopy,
    ) -> Self {
        Self {
            session,
            credential,
            served_at: Some(cache.inner.revoked.epoch()),
        }
    }

    /// The seed of a request the layer served `session` for, its credential found again in
    /// its `headers`. `None` when that layer does not watch connections.
    pub(crate) fn of_request(session: &KratosSession, headers: &http::HeaderMap) -> Option<Self> {
        let cache = SessionCache::of_session(session)?;
        let settings = cache.inner.live.get()?;
        let credential = crate::credentials::find_credential(headers, &settings.cookie_names)
            .ok()
            .flatten()?;
        Some(Self {
            session: session.clone(),
            credential: CredentialCopy::from(credential),
            served_at: None,
        })
    }

    /// Watches the session from now on. `None` when its layer does not watch connections (or
    /// is gone), or outside a tokio runtime.
    pub(crate) fn watch(self) -> Option<Watch> {
        let cache = SessionCache::of_session(&self.session)?;
        cache.watch(self)
    }
}

/// The watches of one cache, by what a revocation can name.
#[derive(Default)]
pub(super) struct Watches {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_key: HashMap<CacheKey, Entry>,
    by_session: HashMap<[u8; 32], Vec<CacheKey>>,
    by_identity: HashMap<[u8; 32], Vec<CacheKey>>,
}

struct Entry {
    watched: Arc<Watched>,
    connections: usize,
}

/// One credential's watch.
struct Watched {
    key: CacheKey,
    session: [u8; 32],
    identity: Option<[u8; 32]>,
    /// Woken by marks and by the last connection closing. `notify_one` keeps a permit, so a
    /// mark made while the task asks Kratos is not lost.
    wake: Notify,
    /// No connection is left: the task stops.
    closed: AtomicBool,
    ended: OnceLock<Ended>,
    /// The wakers of the connections waiting for the end, by connection.
    waiting: Mutex<HashMap<u64, Waker>>,
    next_connection: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: still consistent after a panic elsewhere, and a watch must keep working.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Watches {
    /// Wakes the watches a mark names.
    pub(super) fn wake(&self, target: MarkTarget) {
        let woken: Vec<Arc<Watched>> = {
            let registry = lock(&self.registry);
            if registry.by_key.is_empty() {
                return;
            }
            let named = |keys: Option<&Vec<CacheKey>>| -> Vec<Arc<Watched>> {
                keys.into_iter()
                    .flatten()
                    .filter_map(|key| registry.by_key.get(key))
                    .map(|entry| Arc::clone(&entry.watched))
                    .collect()
            };
            match target {
                MarkTarget::Session(hash) => named(registry.by_session.get(&hash)),
                MarkTarget::Identity(hash) => named(registry.by_identity.get(&hash)),
                MarkTarget::Credential(key) => registry
                    .by_key
                    .get(&key)
                    .map(|entry| Arc::clone(&entry.watched))
                    .into_iter()
                    .collect(),
                MarkTarget::Everything => registry
                    .by_key
                    .values()
                    .map(|entry| Arc::clone(&entry.watched))
                    .collect(),
            }
        };
        for watched in woken {
            watched.wake.notify_one();
        }
    }

    /// One more connection of this credential; `true` when its watch is new (and needs a task).
    fn join(&self, watched: Watched) -> (Arc<Watched>, bool) {
        let mut registry = lock(&self.registry);
        crate::metrics::watched_connections(1.0);
        if let Some(entry) = registry.by_key.get_mut(&watched.key) {
            entry.connections += 1;
            return (Arc::clone(&entry.watched), false);
        }
        let watched = Arc::new(watched);
        let key = watched.key;
        registry
            .by_session
            .entry(watched.session)
            .or_default()
            .push(key);
        if let Some(identity) = watched.identity {
            registry.by_identity.entry(identity).or_default().push(key);
        }
        registry.by_key.insert(
            key,
            Entry {
                watched: Arc::clone(&watched),
                connections: 1,
            },
        );
        (watched, true)
    }

    /// One connection fewer; the last one stops the watch.
    fn leave(&self, watched: &Arc<Watched>) {
        let mut registry = lock(&self.registry);
        let Some(entry) = registry.by_key.get_mut(&watched.key) else {
            return;
        };
        // An ended watch was replaced by a newer one: its connections are not counted there.
        if !Arc::ptr_eq(&entry.watched, watched) {
            return;
        }
        entry.connections -= 1;
        crate::metrics::watched_connections(-1.0);
        if entry.connections == 0 {
            Self::remove(&mut registry, watched);
            watched.closed.store(true, Ordering::Release);
            watched.wake.notify_one();
        }
    }

    /// Ends a watch: its connections are told why, and the next connection of the credential
    /// gets a new watch.
    fn end(&self, watched: &Arc<Watched>, ended: Ended) {
        {
            let mut registry = lock(&self.registry);
            if registry
                .by_key
                .get(&watched.key)
                .is_some_and(|entry| Arc::ptr_eq(&entry.watched, watched))
            {
                Self::remove(&mut registry, watched);
            }
        }
        let _ = watched.ended.set(ended);
        for (_, waker) in lock(&watched.waiting).drain() {
            waker.wake();
        }
    }

    /// Forgets a watch; the connections it still had are no longer counted.
    fn remove(registry: &mut Registry, watched: &Watched) {
        if let Some(entry) = registry.by_key.remove(&watched.key) {
            crate::metrics::watched_connections(-(entry.connections as f64));
        }
        let unlist = |map: &mut HashMap<[u8; 32], Vec<CacheKey>>, hash: [u8; 32]| {
            if let Some(keys) = map.get_mut(&hash) {
                keys.retain(|key| *key != watched.key);
                if keys.is_empty() {
                    map.remove(&hash);
                }
            }
        };
        unlist(&mut registry.by_session, watched.session);
        if let Some(identity) = watched.identity {
            unlist(&mut registry.by_identity, identity);
        }
    }

    /// How many credentials and connections are watched.
    pub(super) fn counts(&self) -> (usize, usize) {
        let registry = lock(&self.registry);
        let connections = registry
            .by_key
            .values()
            .map(|entry| entry.connections)
            .sum();
        (registry.by_key.len(), connections)
    }
}

/// One connection's watch: [`Watch::poll_ended`] is ready once the session has ended. Dropping
/// it (the connection closed) leaves the watch.
pub(crate) struct Watch {
    watched: Arc<Watched>,
    connection: u64,
    cache: SessionCache,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("ended", &self.watched.ended.get())
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// The reason, if the session has ended; keeps no waker.
    pub(crate) fn ended(&self) -> Option<Ended> {
        self.watched.ended.get().copied()
    }

    /// Ready with the reason once the session has ended; until then, this connection's waker is
    /// kept to be woken then.
    pub(crate) fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<Ended> {
        if let Some(ended) = self.watched.ended.get() {
            return Poll::Ready(*ended);
        }
        {
            let mut waiting = lock(&self.watched.waiting);
            match waiting.get_mut(&self.connection) {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                Some(waker) => waker.clone_from(cx.waker()),
                None => {
                    waiting.insert(self.connection, cx.waker().clone());
                }
            }
        }
        // Ended while the waker was being kept: `end` sets the reason before it wakes.
        match self.watched.ended.get() {
            Some(ended) => Poll::Ready(*ended),
            None => Poll::Pending,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&self.watched.waiting).remove(&self.connection);
        self.cache.inner.revoked.watches().leave(&self.watched);
    }
}

impl SessionCache {
    /// Watches connections from now on, asking Kratos with this client.
    pub(crate) fn watch_connections(&self, client: KratosClient, cookie_names: CookieNames) {
        let _ = self.inner.live.set(LiveSettings {
            client,
            cookie_names,
        });
    }

    /// Watches a connection opened by the request `seed` was served for.
    fn watch(&self, seed: Seed) -> Option<Watch> {
        let settings = self.inner.live.get()?;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let credential = seed.credential.credential(&settings.cookie_names)?;
        let key = self.key_for(&credential);
        let marks = &self.inner.revoked;
        let (watched, new) = marks.watches().join(Watched {
            key,
            session: marks.session_hash(&seed.session.id),
            identity: seed
                .session
                .identity_id()
                .map(|identity| marks.identity_hash(identity)),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            ended: OnceLock::new(),
            waiting: Mutex::default(),
            next_connection: AtomicU64::new(0),
        });
        if new {
            // A mark made between the request and now found nothing to wake: ask at once.
            let ask_now = seed.served_at.is_none_or(|epoch| marks.marked_after(epoch));
            let end_of_life = self.end_of_life(&seed.session);
            runtime.spawn(watch_credential(
                self.clone(),
                credential,
                Arc::clone(&watched),
                end_of_life,
                ask_now,
            ));
        } else if seed.served_at.is_none_or(|epoch| marks.marked_after(epoch)) {
            watched.wake.notify_one();
        }
        let connection = watched.next_connection.fetch_add(1, Ordering::Relaxed);
        Some(Watch {
            watched,
            connection,
            cache: self.clone(),
        })
    }

    /// When the session stops being served, on this process's clock: its `expires_at`, or when
    /// it reaches the layer's maximum age. `None`: never (Kratos sent no expiry).
    fn end_of_life(&self, session: &KratosSession) -> Option<Instant> {
        let lifetimes = &self.inner.lifetimes;
        let age_limit = lifetimes
            .max_session_age
            .and_then(|max| session.reaches_age_at(max));
        let end = [session.expires_at, age_limit]
            .into_iter()
            .flatten()
            .min()?;
        let left = Duration::try_from(end - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
        let now = Instant::now();
        Some(
            now.checked_add(left)
                .unwrap_or(now + Duration::from_secs(u32::MAX.into())),
        )
    }

    /// What is watched now: credentials, connections.
    pub(crate) fn watched(&self) -> (usize, usize) {
        self.inner.revoked.watches().counts()
    }
}

/// A watch's task: sleeps until a mark, the session's end of life or the next periodic check,
/// then asks again; ends the connections when the answer is no longer the session. Stops when
/// the last connection closes.
///
/// The periodic check, once per cache TTL, bounds what no mark reports (a session revoked in
/// Kratos's console, an identity disabled) as it bounds requests: an open connection is asked
/// about as often as a client sending a request every TTL, and shares the cache with the
/// session's requests, so it costs Kratos nothing while they come.
async fn watch_credential(
    cache: SessionCache,
    credential: Credential,
    watched: Arc<Watched>,
    mut end_of_life: Option<Instant>,
    mut ask_now: bool,
) {
    let Some(client) = cache
        .inner
        .live
        .get()
        .map(|settings| settings.client.clone())
    else {
        return;
    };
    let every = cache.inner.lifetimes.ttl;
    let mut next_check = Instant::now() + every;
    loop {
        if !ask_now {
            let at = end_of_life.map_or(next_check, |end| end.min(next_check));
            tokio::select! {
                () = watched.wake.notified() => {}
                () = tokio::time::sleep_until(at.into()) => {}
            }
        }
        ask_now = false;
        if watched.closed.load(Ordering::Acquire) {
            return;
        }
        let lookup = cache
            .lookup_keyed(watched.key, &credential, &Correlation::NONE, &client)
            .await;
        let now = Instant::now();
        next_check = now + every;
        let ended = match lookup.outcome {
            Outcome::Authenticated(session) => match cache.end_of_life(&session) {
                // Served until its very end (an entry ends at `expires_at`, a clock tick may
                // still find it): over all the same.
                Some(at) if at <= now => Ended::Expired,
                later => {
                    end_of_life = later;
                    continue;
                }
            },
            Outcome::Unavailable(_) => {
                next_check = now + RETRY_UNAVAILABLE;
                continue;
            }
            Outcome::Unauthenticated(Unauthenticated::Expired | Unauthenticated::TooOld) => {
                Ended::Expired
            }
            _ if end_of_life.is_some_and(|at| at <= now) => Ended::Expired,
            _ => Ended::Revoked,
        };
        tracing::debug!(
            reason = ended.reason(),
            "a session ended: its connections are closed"
        );
        cache.inner.revoked.watches().end(&watched, ended);
        return;
    }
}
