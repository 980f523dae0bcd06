//! The store of cached entries: a bounded concurrent map, counted in entries or weighed in
//! bytes, whose hits cost the same with a hundred entries as with a million.
//!
//! The store is [`quick_cache`]'s. Until 0.4 it was moka's, and a hit slowed down as the cache
//! grew (`cargo bench --bench memory`, one client, uniformly random sessions): p50 1.1 µs and
//! p99 2.7 µs with 100 sessions, p50 3.5 µs and p99 79 µs with 100,000. A profile of those hits
//! (`PROFILE_HITS=random`, `perf`) put a third of the time in moka's concurrent hash table
//! (a pointer chase per probed bucket) and a fifth in its read bookkeeping: each `get` queues
//! the read, and every 64th caller replays the queue on its own thread (a move in the access
//! order deque and four sketch counters per read, each a cache miss in a large table): that
//! replay is the tail. On its own (one thread, 1,000,000 entries), moka's `get` took p50
//! 1.4 µs, p99 52 µs; quick_cache's p50 1.4 µs, p99 2.1 µs. quick_cache reads under a shard's
//! read lock and marks the entry with one bit (CLOCK-Pro): no queue, no replay.
//!
//! moka stays for the small side stores (refusals, extensions, stale sessions, JWT keys),
//! whose per-entry lifetimes it keeps; here an entry's end is its `fresh_until`, checked on
//! every hit, and expired entries are swept (see [`Store::sweep_due`]).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use quick_cache::{sync::Cache, Lifecycle, Weighter};

use super::{entry::Cached, key::CacheKey, key::PassThroughHash};

/// How the cache is bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheSize {
    /// At most this many entries.
    Entries(u64),
    /// At most this many bytes, each entry weighed by its real size.
    Bytes(u64),
}

impl CacheSize {
    /// About how many entries the cache holds when full: for the side stores sized after it.
    pub(crate) fn entries_hint(self) -> u64 {
        match self {
            Self::Entries(entries) => entries,
            // A session weighs a kilobyte or more.
            Self::Bytes(bytes) => (bytes / 1024).max(1),
        }
    }
}

/// Weighs an entry at 1, or at its bytes.
#[derive(Clone, Copy)]
struct EntryWeight {
    in_bytes: bool,
}

impl Weighter<CacheKey, Cached> for EntryWeight {
    fn weight(&self, _: &CacheKey, cached: &Cached) -> u64 {
        if self.in_bytes {
            u64::from(cached.bytes).max(1)
        } else {
            1
        }
    }
}

/// Counts evictions for the metrics; nothing else happens when an entry leaves.
#[derive(Clone, Copy, Default)]
struct Evictions;

impl Lifecycle<CacheKey, Cached> for Evictions {
    type RequestState = ();

    fn begin_request(&self) {}

    fn on_evict(&self, (): &mut (), _: CacheKey, _: Cached) {
        crate::metrics::cache_eviction("size");
    }
}

/// The entries, and when expired ones were last swept.
pub(super) struct Store {
    entries: Cache<CacheKey, Cached, EntryWeight, PassThroughHash, Evictions>,
    /// Sweeps run at most this often.
    sweep_every: Duration,
    /// When the next sweep is due, in nanoseconds after `started`.
    next_sweep: AtomicU64,
    started: Instant,
    /// Held while a sweep runs, so that two never do.
    sweeping: Mutex<()>,
}

impl Store {
    /// A store bounded by `size`, whose expired entries are swept every `sweep_every` at most.
    pub(super) fn new(size: CacheSize, sweep_every: Duration) -> Self {
        let (items, weight, in_bytes) = match size {
            CacheSize::Entries(entries) => (entries, entries, false),
            CacheSize::Bytes(bytes) => (size.entries_hint(), bytes, true),
        };
        let entries = Cache::with(
            usize::try_from(items).unwrap_or(usize::MAX),
            weight,
            EntryWeight { in_bytes },
            PassThroughHash,
            Evictions,
        );
        Self {
            entries,
            sweep_every: sweep_every.max(Duration::from_secs(1)),
            next_sweep: AtomicU64::new(0),
            started: Instant::now(),
            sweeping: Mutex::new(()),
        }
    }

    /// The entry for `key`, whatever its age (the caller checks `fresh_until`).
    pub(super) fn get(&self, key: &CacheKey) -> Option<Cached> {
        self.entries.get(key)
    }

    pub(super) fn insert(&self, key: CacheKey, cached: Cached) {
        self.entries.insert(key, cached);
    }

    pub(super) fn remove(&self, key: &CacheKey) {
        self.entries.remove(key);
    }

    /// Entries held now (expired ones not yet swept included).
    pub(super) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The entries' weight: their count, or their bytes for a store sized in bytes.
    pub(super) fn weight(&self) -> u64 {
        self.entries.weight()
    }

    /// Whether a sweep is due now: the caller (a miss, off the hit path) then runs
    /// [`Store::sweep`], on a blocking thread for a large store.
    pub(super) fn sweep_due(&self) -> bool {
        let now = self.nanos_since_start(Instant::now());
        now >= self.next_sweep.load(Ordering::Relaxed)
    }

    /// Drops the entries past their `fresh_until`: no hit serves them, but they hold memory
    /// and sessions until the bound pushes them out. One shard is locked at a time.
    pub(super) fn sweep(&self) {
        let Ok(_sweeping) = self.sweeping.try_lock() else {
            return;
        };
        let now = Instant::now();
        let next = self.nanos_since_start(now + self.sweep_every);
        self.next_sweep.store(next, Ordering::Relaxed);
        self.entries.retain(|_, cached| {
            let fresh = now < cached.fresh_until;
            if !fresh {
                crate::metrics::cache_eviction("expired");
            }
            fresh
        });
    }

    fn nanos_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }
}
