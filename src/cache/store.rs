//! The store of cached entries: a bounded concurrent map, counted in entries or weighed in
//! bytes, whose hits cost the same with a hundred entries as with a million.
//!
//! The store is [`quick_cache`]'s. It was moka's before, and a hit slowed down as the cache
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
//! every hit, and expired entries are swept (see [`Store::claim_sweep`]).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use quick_cache::{sync::Cache, Lifecycle, OptionsBuilder, Weighter};

use super::{entry::Cached, key::CacheKey, key::PassThroughHash};

/// The least share of a byte budget a shard of the store gets: the largest entry it can hold.
/// Sessions are a few kilobytes; one with hundreds of devices or large traits stays far below.
const MIN_SHARD_BYTES: u64 = 256 * 1024;

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

/// Weighs an entry at 1, or at the bytes it holds outside the store (its session); the store's
/// own tables, where the key and the entry itself lie, are counted apart ([`Store::fit`]).
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

/// Inserts between two fittings of a byte budget ([`Store::fit`]).
const FIT_EVERY: u64 = 64;

/// The entries, and when expired ones were last swept.
pub(super) struct Store {
    entries: Cache<CacheKey, Cached, EntryWeight, PassThroughHash, Evictions>,
    /// For a store sized in bytes, the budget: the entries' weights and the store's own tables
    /// together stay within it.
    budget: Option<u64>,
    /// Inserts so far, to fit the budget every [`FIT_EVERY`].
    inserts: AtomicU64,
    /// Sweeps run at most this often, in nanoseconds.
    sweep_every: u64,
    /// When the next sweep is due, in nanoseconds after `started`.
    next_sweep: AtomicU64,
    started: Instant,
}

impl Store {
    /// A store bounded by `size`, whose expired entries are swept every `sweep_every` at most.
    pub(super) fn new(size: CacheSize, sweep_every: Duration) -> Self {
        let (items, weight, in_bytes) = match size {
            CacheSize::Entries(entries) => (entries, entries, false),
            CacheSize::Bytes(bytes) => (size.entries_hint(), bytes, true),
        };
        let mut options = OptionsBuilder::new();
        options
            .estimated_items_capacity(usize::try_from(items).unwrap_or(usize::MAX))
            .weight_capacity(weight);
        if in_bytes {
            // Each shard holds its share of the budget, and an entry heavier than a share is not
            // cached at all: fewer shards, so that a share holds even a very large session.
            let parallel = std::thread::available_parallelism().map_or(1, usize::from);
            let shards = usize::try_from(weight / MIN_SHARD_BYTES)
                .unwrap_or(usize::MAX)
                .clamp(1, parallel * 4);
            options.shards(shards);
        }
        let options = options
            .build()
            .expect("the options set are the ones quick_cache requires");
        let entries = Cache::with_options(
            options,
            EntryWeight { in_bytes },
            PassThroughHash,
            Evictions,
        );
        Self {
            entries,
            budget: in_bytes.then_some(weight),
            inserts: AtomicU64::new(0),
            sweep_every: nanos(sweep_every.max(Duration::from_secs(1))),
            next_sweep: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// The entry for `key`, whatever its age (the caller checks `fresh_until`).
    pub(super) fn get(&self, key: &CacheKey) -> Option<Cached> {
        self.entries.get(key)
    }

    pub(super) fn insert(&self, key: CacheKey, cached: Cached) {
        self.entries.insert(key, cached);
        if self.budget.is_some()
            && self
                .inserts
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(FIT_EVERY)
        {
            self.fit();
        }
    }

    /// Gives the entries what the byte budget leaves once the store's own tables are counted:
    /// the slots that hold keys and entries, the index, the ghosts (keys evicted lately, which
    /// the store remembers to admit them better), and the room the tables have grown into.
    /// Those are read from the store, not estimated; they grow with the entries, so the entries'
    /// share shrinks as they do, and a budget holds whatever the sessions are like. Run every
    /// [`FIT_EVERY`] inserts: a table that doubles in between overshoots by one shard's growth
    /// until the next fitting.
    fn fit(&self) {
        let Some(budget) = self.budget else { return };
        let tables = self.tables();
        let for_entries = budget.saturating_sub(tables).max(1);
        let now = self.entries.capacity();
        // Always lowered when the tables grew, so the budget holds; raised (when they shrank)
        // only by a step worth taking every shard's lock for.
        if for_entries < now || for_entries - now > budget / 256 {
            self.entries.set_capacity(for_entries);
        }
    }

    /// The bytes of the store's own tables: the index as allocated, and the slots counted twice,
    /// since the store reports the slots in use while their vector has grown by doubling (up to
    /// twice as many allocated). Counting the most it can be keeps the budget a bound.
    fn tables(&self) -> u64 {
        let used = self.entries.memory_used();
        let bytes = used.entries.saturating_mul(2).saturating_add(used.map);
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    pub(super) fn remove(&self, key: &CacheKey) {
        self.entries.remove(key);
    }

    /// Entries held now (expired ones not yet swept included).
    pub(super) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// For a store sized in bytes, what it holds: its entries' sessions and its own tables.
    pub(super) fn bytes(&self) -> Option<u64> {
        self.budget
            .map(|_| self.entries.weight().saturating_add(self.tables()))
    }

    /// Whether a sweep is due now, and if so this caller's to run (the next falls due a sweep
    /// interval later): the caller, a miss off the hit path, then runs [`Store::sweep`] on a
    /// blocking thread. However many misses arrive when it falls due, one of them sweeps.
    pub(super) fn claim_sweep(&self) -> bool {
        let now = nanos(self.started.elapsed());
        let due = self.next_sweep.load(Ordering::Relaxed);
        now >= due
            && self
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(self.sweep_every),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Drops the entries past their `fresh_until`: no hit serves them, but they hold memory
    /// and sessions until the bound pushes them out. One shard is locked at a time.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        self.entries.retain(|_, cached| {
            let fresh = now < cached.fresh_until;
            if !fresh {
                crate::metrics::cache_eviction("expired");
            }
            fresh
        });
        self.fit();
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
