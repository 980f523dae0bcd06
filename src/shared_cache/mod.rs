//! The shared second-level cache (feature `redis`): whoami answers and revocations in one Redis
//! (or Valkey) that every replica of an app uses, so Kratos is asked once per session whatever
//! the replica count, and a revocation made through any replica is honoured by all.
//!
//! What Redis holds, all under the configured prefix:
//! - `{prefix}:{{key}}:s`: a sealed entry per credential ([`seal`]); `key` is the keyed hash of
//!   the credential that every replica derives from the shared secret, never the credential,
//!   and the key's hash tag (an entry and its lock share a cluster slot). It lives until the
//!   entry's end of life, an absolute time fixed from Kratos's answer.
//! - `{prefix}:{{key}}:l`: a short lock (`SET NX PX`) while one replica asks Kratos about that
//!   credential; the others wait for its entry instead of asking too.
//! - `{prefix}:x:{hash}`: one session's extension claim for the cooldown, so one replica extends.
//! - `{prefix}:revocations`: sealed revocation records (a sorted set by time), kept for as long as
//!   an entry asked for before them could be served, and the channel they are published on.
//!
//! This module is the Redis side only: bytes, keys and seals. What an entry means, when it may
//! be served and what a revocation outdates is the session cache's (`cache/`), which calls it
//! from its miss path and hears revocations through [`SharedEvent`].

mod link;
mod revocations;
mod seal;
pub(crate) mod settings;
mod subscriber;
mod topology;

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

pub(crate) use self::topology::Topology;
use self::{
    link::{Failure, Link},
    seal::Sealer,
};
use crate::{log_limit::WarnLimiter, metrics, session::Session};

/// How often a replica waiting for another's whoami looks for its entry.
const POLL: Duration = Duration::from_millis(10);

/// An entry with less life left than this is refilled rather than read: replicas' copies of
/// it end within this of each other (whole milliseconds, two clocks read per conversion).
const END_MARGIN_MS: i64 = 20;

/// Releases a fill lock only if it is still the caller's (it may have expired and been taken).
const RELEASE_LOCK: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

/// The shared cache's settings, validated by the layer's builder.
#[derive(Clone)]
pub(crate) struct SharedCacheConfig {
    pub(crate) topology: Topology,
    pub(crate) secret: Arc<[u8]>,
    pub(crate) key_prefix: String,
    pub(crate) timeout: Duration,
}

impl fmt::Debug for SharedCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password, the secret is one.
        f.debug_struct("SharedCacheConfig")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What the shared cache looks like now, in [`LayerStats`](crate::authenticate::LayerStats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedCacheStats {
    /// Whether lookups read Redis now: it answers, and the revocation subscription is live.
    pub in_use: bool,
    /// Whether the revocation subscription is live.
    pub subscribed: bool,
    /// Lookups served from Redis without asking Kratos.
    pub hits: u64,
    /// Lookups Redis had no entry for.
    pub misses: u64,
    /// Redis calls that failed or took longer than the timeout.
    pub errors: u64,
    /// Values in Redis that did not open: tampered, sealed with another secret, or garbage.
    pub unreadable: u64,
    /// Revocations made here that Redis has not fully taken yet (full, paused, unreachable):
    /// retried until it does.
    pub unsent_revocations: u64,
}

/// What a revocation affected, as hashes: Redis never holds a session or identity id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RevokedTarget {
    /// The keyed hash of a session id.
    Session([u8; 32]),
    /// The keyed hash of an identity id.
    Identity([u8; 32]),
    /// A credential's cache key.
    Credential([u8; 32]),
    /// Every session: a bulk revocation of everyone's sessions. Recorded as the others are, so a
    /// replica that subscribes later still outdates what Redis holds from before it.
    Everything,
}

/// What the shared cache tells the session cache.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SharedEvent {
    /// A revocation made through another replica (or heard again, or read from the records).
    Revoked {
        target: RevokedTarget,
        /// When it was made, on that replica's clock.
        at: OffsetDateTime,
    },
    /// Revocations made since this instant may have been missed: the subscription broke and did
    /// not come back within the grace, or the records read on subscribing were not all there
    /// was.
    MissedSince(Instant),
}

/// A revocation as it is sealed into Redis.
#[derive(Serialize, Deserialize)]
struct Record {
    target: RevokedTarget,
    /// Unix time in milliseconds.
    at: i64,
}

/// A cached whoami answer as it is sealed into Redis: the session (none for a cached 401),
/// Kratos's caching hint, when its whoami was sent and when it stops being served, as Unix
/// times in milliseconds: the one clock replicas share.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SharedEntry {
    pub(crate) session: Option<Session>,
    pub(crate) cache_for_ms: Option<u64>,
    pub(crate) asked_at_ms: i64,
    pub(crate) ends_at_ms: i64,
}

/// What Redis said about a credential on a miss.
// One per miss, moved once into the cache: boxing the entry would cost an allocation to save
// a copy.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Found {
    /// An entry, opened; the session cache decides whether it may be served.
    Entry(SharedEntry),
    /// None there. With a claim, this replica asks Kratos and the others wait for its entry.
    Absent(Option<FillClaim>),
    /// Redis was not read: paused after failures, or the revocation subscription is not live
    /// (entries are not trusted without it).
    NotAsked,
}

/// This replica's lock on asking Kratos about one credential, released with its entry.
#[derive(Debug)]
pub(crate) struct FillClaim {
    token: [u8; 16],
}

/// The shared cache. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub(crate) struct SharedCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCache")
            .field("prefix", &self.inner.names.prefix)
            .field("subscribed", &self.inner.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Inner {
    link: Link,
    sealer: Sealer,
    names: Names,
    /// How long revocation records are kept: the longest an entry asked for before one can
    /// still be served.
    retention: Duration,
    /// How long a fill lock is held at most: a whoami call's deadline, and a margin.
    lock_ttl: Duration,
    live: AtomicBool,
    /// Counts the subscriptions that came live: a break's watch knows whether one came since.
    generation: AtomicU64,
    started: AtomicBool,
    /// Whether the metrics count this cache as in use (the last `readable` seen).
    in_use: AtomicBool,
    /// Revocations Redis has not taken yet, retried.
    unsent: revocations::Unsents,
    on_event: Box<dyn Fn(SharedEvent) + Send + Sync>,
    /// Dropped with the last handle, which ends the subscriber.
    stop: watch::Sender<()>,
    warnings: WarnLimiter,
}

impl SharedCache {
    /// A shared cache that seals with `seal_key`, keeps records for `retention`, holds fill
    /// locks for `lock_ttl`, and tells the session cache what it hears through `on_event`.
    /// Connects lazily: Redis need not be up when the layer is built. Hears nothing until
    /// [`start`](Self::start): `on_event` must be able to reach the cache by then.
    pub(crate) fn new(
        config: &SharedCacheConfig,
        seal_key: &[u8; 32],
        retention: Duration,
        lock_ttl: Duration,
        on_event: impl Fn(SharedEvent) + Send + Sync + 'static,
    ) -> Self {
        let (stop, _) = watch::channel(());
        Self {
            inner: Arc::new(Inner {
                link: Link::new(config.topology.clone(), config.timeout),
                sealer: Sealer::new(seal_key),
                names: Names {
                    prefix: config.key_prefix.clone(),
                },
                retention,
                lock_ttl,
                live: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                started: AtomicBool::new(false),
                in_use: AtomicBool::new(false),
                unsent: revocations::Unsents::default(),
                on_event: Box::new(on_event),
                stop,
                warnings: WarnLimiter::default(),
            }),
        }
    }

    /// Starts the subscriber, once, when there is a runtime to run it on (at build time, or at
    /// the first lookup for a layer built outside one). Not from `new`: a revocation record
    /// the subscriber reads before the session cache exists would reach no one.
    pub(crate) fn start(&self) {
        if self.inner.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .inner
            .started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let stop = self.inner.stop.subscribe();
            runtime.spawn(subscriber::run(Arc::downgrade(&self.inner), stop));
        }
    }

    /// Looks for the credential's entry on a miss. When there is none and no other replica is
    /// asking Kratos, claims the fill; when one is, waits up to `wait` for its entry.
    pub(crate) async fn find(&self, key: &[u8; 32], wait: Duration) -> Found {
        self.start();
        let inner = &*self.inner;
        if !inner.readable() {
            return Found::NotAsked;
        }
        let entry_key = inner.names.entry(key);
        let lock_key = inner.names.lock(key);
        let deadline = Instant::now() + wait;
        let mut first = true;
        loop {
            let mget = redis::cmd("MGET").arg(&entry_key).arg(&lock_key).clone();
            let (value, lock): (Option<Vec<u8>>, Option<Vec<u8>>) =
                match inner.link.call(&mget).await {
                    Ok(found) => found,
                    Err(_) => return Found::NotAsked,
                };
            // An entry at its end of life is no entry: every replica's local copy ends at that
            // moment, so all of them miss at once, while Redis still holds it (its PX counts
            // from when the SET arrived, and times are whole milliseconds). Read as absent, it
            // is refilled under the lock, once, instead of by each replica on its own.
            let live_after = unix_ms(OffsetDateTime::now_utc()) + END_MARGIN_MS;
            if let Some(entry) = value
                .and_then(|value| inner.open_entry(&entry_key, &value))
                .filter(|entry| entry.ends_at_ms > live_after)
            {
                inner.link.counters.hits.fetch_add(1, Ordering::Relaxed);
                metrics::shared_cache_lookup(true);
                return Found::Entry(entry);
            }
            let done = match (lock.is_some(), first) {
                // Nobody is asking: claim it (or, losing the race, wait for the winner).
                (false, true) => match inner.claim_fill(&lock_key).await {
                    Ok(Some(claim)) => return inner.missed(Some(claim)),
                    Ok(None) => false,
                    Err(_) => return Found::NotAsked,
                },
                // The replica that asked is done, without an entry to share (a step-up, an
                // outage, a 401 that is not cached): ask Kratos too.
                (false, false) => true,
                (true, _) => Instant::now() >= deadline,
            };
            if done {
                return inner.missed(None);
            }
            first = false;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes an entry for the credential (and releases this replica's fill claim), on a task
    /// of its own: the lookup does not wait for Redis.
    pub(crate) fn put(&self, key: &[u8; 32], entry: &SharedEntry, claim: Option<FillClaim>) {
        let inner = &*self.inner;
        let now_ms = unix_ms(OffsetDateTime::now_utc());
        let mut pipe = redis::pipe();
        let left_ms = entry.ends_at_ms.saturating_sub(now_ms);
        if left_ms > 0 {
            let entry_key = inner.names.entry(key);
            let sealed = serde_json::to_vec(entry)
                .ok()
                .and_then(|plain| inner.sealer.seal(entry_key.as_bytes(), &plain));
            if let Some(sealed) = sealed {
                pipe.cmd("SET")
                    .arg(&entry_key)
                    .arg(sealed)
                    .arg("PX")
                    .arg(left_ms)
                    .ignore();
            }
        }
        if let Some(claim) = claim {
            pipe.cmd("EVAL")
                .arg(RELEASE_LOCK)
                .arg(1)
                .arg(inner.names.lock(key))
                .arg(&claim.token[..])
                .ignore();
        }
        if pipe.cmd_iter().next().is_none() {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let _ = shared.inner.link.call::<()>(&pipe).await;
        });
    }

    /// Claims one session's extension for `cooldown` across the replicas: `Some(true)` when
    /// this replica may extend it, `Some(false)` when another has within the cooldown, `None`
    /// when Redis cannot tell (extend as a single process would).
    pub(crate) async fn claim_extension(
        &self,
        session: &[u8; 32],
        cooldown: Duration,
    ) -> Option<bool> {
        let inner = &*self.inner;
        let claim = redis::cmd("SET")
            .arg(inner.names.extension(session))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(duration_ms(cooldown).max(1))
            .clone();
        match inner.link.call::<Option<String>>(&claim).await {
            Ok(set) => Some(set.is_some()),
            Err(_) => None,
        }
    }

    pub(crate) fn stats(&self) -> SharedCacheStats {
        let inner = &*self.inner;
        let counters = &inner.link.counters;
        SharedCacheStats {
            in_use: inner.readable(),
            subscribed: inner.live.load(Ordering::Acquire),
            hits: counters.hits.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            unreadable: counters.unreadable.load(Ordering::Relaxed),
            unsent_revocations: inner.unsent_count() as u64,
        }
    }
}

impl Inner {
    /// Whether entries may be read: Redis answers, and revocations are heard.
    fn readable(&self) -> bool {
        let readable = self.live.load(Ordering::Acquire) && self.link.usable();
        if self.in_use.swap(readable, Ordering::AcqRel) != readable {
            metrics::shared_cache_in_use(readable);
        }
        readable
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        self.readable();
    }

    fn emit(&self, event: SharedEvent) {
        (self.on_event)(event);
    }

    fn missed(&self, claim: Option<FillClaim>) -> Found {
        self.link.counters.misses.fetch_add(1, Ordering::Relaxed);
        metrics::shared_cache_lookup(false);
        Found::Absent(claim)
    }

    /// `SET lock token NX PX`: the claim when this replica got the lock.
    async fn claim_fill(&self, lock_key: &str) -> Result<Option<FillClaim>, Failure> {
        let mut token = [0u8; 16];
        if getrandom::fill(&mut token).is_err() {
            return Ok(None);
        }
        let set = redis::cmd("SET")
            .arg(lock_key)
            .arg(&token[..])
            .arg("NX")
            .arg("PX")
            .arg(duration_ms(self.lock_ttl).max(1))
            .clone();
        let set: Option<String> = self.link.call(&set).await?;
        Ok(set.map(|_| FillClaim { token }))
    }

    fn open_entry(&self, entry_key: &str, sealed: &[u8]) -> Option<SharedEntry> {
        let entry = self
            .sealer
            .open(entry_key.as_bytes(), sealed)
            .and_then(|plain| serde_json::from_slice(&plain).ok());
        if entry.is_none() {
            self.unreadable("entry");
        }
        entry
    }

    /// A published or recorded revocation, passed on if it opens. One heard `live` (published
    /// now, not read from the records on subscribing) is counted, with its lag.
    fn heard(&self, sealed: &[u8], live: bool) {
        let record = self
            .sealer
            .open(self.names.records().as_bytes(), sealed)
            .and_then(|plain| serde_json::from_slice::<Record>(&plain).ok());
        let Some(record) = record else {
            self.unreadable("revocation");
            return;
        };
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.at) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        if live {
            let lag = OffsetDateTime::now_utc() - at;
            metrics::revocation_heard(lag.try_into().unwrap_or(Duration::ZERO));
        }
        self.emit(SharedEvent::Revoked {
            target: record.target,
            at,
        });
    }

    fn unreadable(&self, what: &'static str) {
        self.link
            .counters
            .unreadable
            .fetch_add(1, Ordering::Relaxed);
        metrics::shared_cache_error("unreadable");
        if let Some(left_out) = self.warnings.admit(("shared_cache", what)) {
            tracing::warn!(
                what,
                left_out_since_last = left_out,
                "a value in Redis does not open (tampered, another secret, or not ours): \
                 ignored"
            );
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.in_use.load(Ordering::Acquire) {
            metrics::shared_cache_in_use(false);
        }
    }
}

/// Redis key names under the prefix.
struct Names {
    prefix: String,
}

/// An entry and its fill lock are read with one `MGET`, so on a Redis Cluster they must share a
/// hash slot: the per-credential hash is their hash tag (`{…}`), which spreads entries over
/// every slot (one tag for everything would put them all on one primary). The prefix has no
/// braces (the builder refuses them), so the tag is always this one.
impl Names {
    fn entry(&self, key: &[u8; 32]) -> String {
        format!("{}:{{{}}}:s", self.prefix, hex(key))
    }

    fn lock(&self, key: &[u8; 32]) -> String {
        format!("{}:{{{}}}:l", self.prefix, hex(key))
    }

    fn extension(&self, session: &[u8; 32]) -> String {
        format!("{}:x:{}", self.prefix, hex(session))
    }

    fn records(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    fn channel(&self) -> String {
        self.records()
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Unix time in milliseconds.
pub(crate) fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_no_credential() {
        let names = Names {
            prefix: "app".into(),
        };
        let key = [0xab; 32];
        let tag = format!("{{{}}}", "ab".repeat(32));
        assert_eq!(names.entry(&key), format!("app:{tag}:s"));
        // The same hash tag: one slot for an entry and its lock.
        assert_eq!(names.lock(&key), format!("app:{tag}:l"));
        assert_eq!(names.records(), "app:revocations");
    }

    #[test]
    fn records_round_trip_as_json() {
        let record = Record {
            target: RevokedTarget::Identity([3; 32]),
            at: 1_700_000_000_123,
        };
        let back: Record = serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(back.target, record.target);
        assert_eq!(back.at, record.at);
    }
}
