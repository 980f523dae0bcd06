//! The hot table: the entries hits were served from lately, one per slot, in front of moka.
//!
//! moka's `get` records every read for its eviction policy (a channel send, and now and then a
//! drain of that channel): about 200 ns, most of what a cache hit cost. A slot here is read
//! under its own lock in about 25 ns. moka stays the store of record (bounded, evicting,
//! coalescing misses); this table only remembers which entry each slot last served, so it holds
//! at most one entry per slot whatever the number of sessions.
//!
//! An entry here is never served on weaker terms than in moka: it is the same [`Cached`] value,
//! with the same `fresh_until`, and the caller runs the same revocation check on it.
//!
//! A moka hit offers its entry to the slot. The offer never waits (a slot another thread is
//! writing is left alone), and a slot whose entry was served since the last offer keeps it once
//! more (a second chance, as in CLOCK): with more busy sessions than slots, a popular session
//! is not pushed out by each passing one.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        PoisonError, RwLock, RwLockWriteGuard, TryLockError,
    },
    time::Instant,
};

use super::{entry::Cached, key::CacheKey};

/// The most slots a table has: enough for the sessions busy at any one moment in a large app,
/// and small enough (112 bytes a slot on 64-bit targets: 112 KiB in all) to be little next to
/// the cache behind it. Entries share their session with the cache: a slot copies no body.
const MAX_SLOTS: usize = 1024;

/// Recently served entries, direct-mapped: a key has one slot, chosen by its bits.
pub(super) struct HotTable {
    slots: Box<[Slot]>,
}

#[derive(Default)]
struct Slot {
    entry: RwLock<Option<HotEntry>>,
    /// Set when the entry is served, cleared by an offer that spares it.
    served: AtomicBool,
}

struct HotEntry {
    key: CacheKey,
    cached: Cached,
}

impl HotTable {
    /// A table with about as many slots as the cache has room for entries (a power of two, at
    /// most [`MAX_SLOTS`]).
    pub(super) fn for_capacity(capacity: u64) -> Self {
        let wanted = usize::try_from(capacity)
            .unwrap_or(MAX_SLOTS)
            .min(MAX_SLOTS);
        let slots = wanted.max(1).next_power_of_two();
        Self {
            slots: (0..slots).map(|_| Slot::default()).collect(),
        }
    }

    fn slot(&self, key: &CacheKey) -> &Slot {
        // The key is a keyed hash: any of its bits pick a slot evenly. moka's hasher uses the
        // first eight bytes; these are the next eight.
        let mut bits = [0u8; 8];
        bits.copy_from_slice(&key.0[8..16]);
        let index = u64::from_le_bytes(bits) as usize & (self.slots.len() - 1);
        &self.slots[index]
    }

    /// The entry for `key`, if its slot holds it and it is still fresh at `now`. A slot found
    /// holding this key's expired entry is emptied (an entry no one asks for again stays until
    /// another key's offer takes its slot: at most one per slot, never served).
    pub(super) fn get(&self, key: &CacheKey, now: Instant) -> Option<Cached> {
        let slot = self.slot(key);
        {
            // A poisoned lock only means a thread panicked while replacing a plain value, which
            // is whole either way.
            let held = slot.entry.read().unwrap_or_else(PoisonError::into_inner);
            match &*held {
                Some(entry) if entry.key == *key => {
                    if now < entry.cached.fresh_until {
                        // Written only when it changes: a busy entry's slot stays shared in the
                        // CPUs' caches.
                        if !slot.served.load(Ordering::Relaxed) {
                            slot.served.store(true, Ordering::Relaxed);
                        }
                        return Some(entry.cached.clone());
                    }
                }
                _ => return None,
            }
        }
        self.remove(key);
        None
    }

    /// Offers the entry a moka hit was just served from. It is not taken when the slot's entry
    /// was served since the last offer (that entry gets a second chance), when another thread is
    /// writing the slot right now, or when the slot holds a newer answer for the same key (a
    /// concurrent refresh won the race).
    pub(super) fn offer(&self, key: CacheKey, cached: &Cached) {
        let slot = self.slot(&key);
        if slot.served.load(Ordering::Relaxed) {
            slot.served.store(false, Ordering::Relaxed);
            return;
        }
        let held = match slot.entry.try_write() {
            Ok(held) => held,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        Self::replace(held, key, cached);
    }

    /// Puts a refreshed entry (after an extension) in its slot, waiting for the slot if need be,
    /// unless the slot holds a newer answer for the same key.
    pub(super) fn put(&self, key: CacheKey, cached: &Cached) {
        let slot = self.slot(&key);
        let held = slot.entry.write().unwrap_or_else(PoisonError::into_inner);
        Self::replace(held, key, cached);
    }

    fn replace(mut held: RwLockWriteGuard<'_, Option<HotEntry>>, key: CacheKey, cached: &Cached) {
        if let Some(entry) = &*held {
            if entry.key == key && entry.cached.asked_at > cached.asked_at {
                return;
            }
        }
        *held = Some(HotEntry {
            key,
            cached: cached.clone(),
        });
    }

    /// Forgets `key`'s entry (the slot is left alone if it holds another key's). Unlike
    /// [`HotTable::offer`] this waits for the slot: a removal must not be skipped.
    pub(super) fn remove(&self, key: &CacheKey) {
        let slot = self.slot(key);
        let mut held = slot.entry.write().unwrap_or_else(PoisonError::into_inner);
        if held.as_ref().is_some_and(|entry| entry.key == *key) {
            *held = None;
            slot.served.store(false, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::entry::CachedAnswer;

    fn key(first: u8, slot_bits: u64) -> CacheKey {
        let mut bytes = [first; 32];
        bytes[8..16].copy_from_slice(&slot_bits.to_le_bytes());
        CacheKey(bytes)
    }

    fn rejected(asked_at: Instant, fresh_for: Duration) -> Cached {
        Cached {
            answer: CachedAnswer::Rejected,
            asked_at,
            fresh_until: asked_at + fresh_for,
        }
    }

    #[test]
    fn slots_follow_the_capacity_up_to_the_maximum() {
        assert_eq!(HotTable::for_capacity(1).len(), 1);
        assert_eq!(HotTable::for_capacity(100).len(), 128);
        assert_eq!(HotTable::for_capacity(10_000).len(), MAX_SLOTS);
        assert_eq!(HotTable::for_capacity(u64::MAX).len(), MAX_SLOTS);
    }

    #[test]
    fn serves_only_the_key_it_holds_and_only_while_fresh() {
        let table = HotTable::for_capacity(16);
        let now = Instant::now();
        let (mine, same_slot) = (key(1, 3), key(2, 3));
        table.put(mine, &rejected(now, Duration::from_secs(5)));
        assert!(table.get(&mine, now).is_some());
        assert!(table.get(&same_slot, now).is_none(), "another key's entry");
        let later = now + Duration::from_secs(5);
        assert!(table.get(&mine, later).is_none(), "served at fresh_until");
        assert!(
            table.get(&mine, now).is_none(),
            "an expired entry is dropped when found"
        );
    }

    #[test]
    fn a_newer_key_takes_the_slot_but_an_older_answer_never_replaces_a_newer_one() {
        let table = HotTable::for_capacity(16);
        let now = Instant::now();
        let (first, second) = (key(1, 7), key(2, 7));
        table.offer(first, &rejected(now, Duration::from_secs(5)));
        table.offer(second, &rejected(now, Duration::from_secs(5)));
        assert!(table.get(&first, now).is_none());
        assert!(table.get(&second, now).is_some());

        let newer = rejected(now + Duration::from_millis(1), Duration::from_secs(9));
        table.put(second, &newer);
        table.put(second, &rejected(now, Duration::from_secs(1)));
        let held = table.get(&second, now).unwrap();
        assert_eq!(held.fresh_until, newer.fresh_until);
    }

    #[test]
    fn an_entry_served_since_the_last_offer_is_spared_once() {
        let table = HotTable::for_capacity(16);
        let now = Instant::now();
        let (popular, passing) = (key(1, 9), key(2, 9));
        table.offer(popular, &rejected(now, Duration::from_secs(5)));
        assert!(table.get(&popular, now).is_some());

        table.offer(passing, &rejected(now, Duration::from_secs(5)));
        assert!(table.get(&popular, now).is_some(), "spared: it was served");
        assert!(table.get(&passing, now).is_none());

        // Served again, spared again; not served since the last offer, replaced.
        table.offer(passing, &rejected(now, Duration::from_secs(5)));
        table.offer(passing, &rejected(now, Duration::from_secs(5)));
        assert!(table.get(&popular, now).is_none());
        assert!(table.get(&passing, now).is_some());
    }

    #[test]
    fn remove_forgets_only_its_own_key() {
        let table = HotTable::for_capacity(16);
        let now = Instant::now();
        let (mine, same_slot) = (key(1, 5), key(2, 5));
        table.put(mine, &rejected(now, Duration::from_secs(5)));
        table.remove(&same_slot);
        assert!(table.get(&mine, now).is_some());
        table.remove(&mine);
        assert!(table.get(&mine, now).is_none());
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Offer(u8),
        Put(u8),
        Remove(u8),
        Get(u8),
        Wait,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let key = 0u8..4;
        prop_oneof![
            key.clone().prop_map(Op::Offer),
            key.clone().prop_map(Op::Put),
            key.clone().prop_map(Op::Remove),
            key.prop_map(Op::Get),
            Just(Op::Wait),
        ]
    }

    proptest::proptest! {
        /// Whatever the order of offers, puts, removals, reads and time passing, over four keys
        /// sharing two slots: a read returns an entry stored for that key, fresh at that moment,
        /// and not one stored before the key's latest removal.
        #[test]
        fn a_read_returns_only_a_fresh_entry_stored_for_its_key_since_its_removal(
            ops in proptest::collection::vec(op(), 1..64)
        ) {
            let table = HotTable::for_capacity(2);
            let start = Instant::now();
            let mut now = start;
            // The keys share slots in pairs: 0 and 2, 1 and 3.
            let keys: Vec<CacheKey> = (0u8..4).map(|k| key(k, u64::from(k % 2))).collect();
            // Which key each stored entry was for, by its asked_at; when each key was removed.
            let mut stored_for = std::collections::HashMap::new();
            let mut removed_at = [None::<Instant>; 4];
            let mut stamp = 0u64;
            for op in ops {
                match op {
                    Op::Offer(k) | Op::Put(k) => {
                        stamp += 1;
                        let asked_at = now + Duration::from_nanos(stamp);
                        let entry = rejected(asked_at, Duration::from_millis(3));
                        stored_for.insert(asked_at, k);
                        if let Op::Offer(_) = op {
                            table.offer(keys[usize::from(k)], &entry);
                        } else {
                            table.put(keys[usize::from(k)], &entry);
                        }
                    }
                    Op::Remove(k) => {
                        table.remove(&keys[usize::from(k)]);
                        removed_at[usize::from(k)] = Some(now + Duration::from_nanos(stamp));
                    }
                    Op::Get(k) => {
                        if let Some(entry) = table.get(&keys[usize::from(k)], now) {
                            proptest::prop_assert_eq!(stored_for.get(&entry.asked_at), Some(&k));
                            proptest::prop_assert!(now < entry.fresh_until);
                            if let Some(removed) = removed_at[usize::from(k)] {
                                proptest::prop_assert!(entry.asked_at > removed);
                            }
                        }
                    }
                    Op::Wait => now += Duration::from_millis(1),
                }
            }
        }
    }
}
