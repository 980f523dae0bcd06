//! Revocations, remembered for as long as an entry asked for before them could still be served.
//! An entry asked for before a mark on its session, its identity or its credential is never
//! served again; Kratos is asked anew. Marks come from this process's own revocations and, with
//! a shared cache, from every other replica's; when the shared cache's subscription breaks, one
//! mark outdates everything asked for before the break.
//!
//! Marks force a new whoami call rather than a refusal: `DELETE /sessions/{id}` answers 204 even
//! for another identity's session (Kratos's `session/handler.go`), so refusing outright would let one user lock
//! another out by naming their session id.
//!
//! Session and identity marks are kept as keyed hashes of the ids ([`MarkKeys`]), the form
//! replicas exchange them in: a shared cache never holds an id.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use super::{
    connections::Watches,
    entry::{Cached, CachedAnswer},
    key::{CacheKey, MarkKeys},
};
use crate::{credentials::Credential, log_limit::WarnLimiter};

/// What a revocation affected.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Revoked<'a> {
    /// One session, by id.
    Session(&'a str),
    /// Every session of an identity, by identity id.
    Identity(&'a str),
    /// Whatever session this credential belongs to (API logout knows only the token).
    Credential(&'a Credential),
    /// Every session (Kratos's bulk `POST /admin/sessions` with `"identities": ["*"]`).
    Everything,
}

/// What a mark is kept under: hashes of the ids, or the credential's cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MarkTarget {
    Session([u8; 32]),
    Identity([u8; 32]),
    Credential(CacheKey),
    /// Every entry: every session was revoked (a bulk call), or the shared cache's
    /// subscription broke, so revocations made elsewhere may have been missed.
    Everything,
}

/// The marks, and when the latest was made.
pub(super) struct RevocationMarks {
    /// The instant offsets below count from.
    origin: Instant,
    /// When the latest mark was made, in nanoseconds since `origin` plus one; 0 when none was.
    /// A mark can outdate only entries asked for before it, so an entry asked for after the
    /// latest mark (every hit, once the entries from before a revocation have expired) is
    /// answered from this one load, without the lock.
    latest: AtomicU64,
    marks: RwLock<Marks>,
    /// How long a mark is kept: the longest an entry asked for before it can still be served.
    retention: Duration,
    keys: MarkKeys,
    warnings: WarnLimiter,
    /// The connections open with cached sessions: every mark wakes those it names.
    watches: Watches,
    /// Marks made so far ([`RevocationMarks::epoch`]).
    made: AtomicU64,
}

impl std::fmt::Debug for RevocationMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationMarks")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// The most marks kept at once. Past it, the marks are folded into one that outdates every
/// entry asked for before the latest of them: as safe, and bounded, at the price of one whoami
/// per cached session. Marks come only from revocations Kratos confirmed (here or on another
/// replica), so this takes over a thousand revocations a second for a whole retention.
const MAX_MARKS: usize = 65_536;

#[derive(Debug, Default)]
struct Marks {
    sessions: HashMap<[u8; 32], Instant>,
    identities: HashMap<[u8; 32], Instant>,
    credentials: HashMap<CacheKey, Instant>,
    everything: Option<Instant>,
    /// Every mark in the order it was made, so the old ones are forgotten from the front
    /// without a scan of the others.
    order: VecDeque<(Instant, MarkTarget)>,
}

impl Marks {
    fn forget_older_than(&mut self, oldest: Instant) {
        while let Some(&(at, target)) = self.order.front() {
            if at >= oldest {
                break;
            }
            self.order.pop_front();
            // A later mark of the same target is kept in the map: only an old value goes.
            let old = |kept: Option<&Instant>| kept.is_some_and(|kept| *kept < oldest);
            match target {
                MarkTarget::Session(hash) if old(self.sessions.get(&hash)) => {
                    self.sessions.remove(&hash);
                }
                MarkTarget::Identity(hash) if old(self.identities.get(&hash)) => {
                    self.identities.remove(&hash);
                }
                MarkTarget::Credential(key) if old(self.credentials.get(&key)) => {
                    self.credentials.remove(&key);
                }
                MarkTarget::Everything if old(self.everything.as_ref()) => self.everything = None,
                _ => {}
            }
        }
    }

    /// Folds every mark into one of everything at the latest of them (see [`MAX_MARKS`]).
    fn fold(&mut self) {
        let latest = self.order.iter().map(|(at, _)| *at).max();
        let everything = self.everything.into_iter().chain(latest).max();
        *self = Self {
            everything,
            ..Self::default()
        };
        if let Some(at) = everything {
            self.order.push_back((at, MarkTarget::Everything));
        }
    }
}

/// How far replicas' clocks may differ: a mark heard from another replica outdates what was
/// asked for up to this long after it, by this process's clock.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// How long ago a wall-clock time (another replica's, Kratos's) was; zero for a time in the
/// future.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(super) fn age_of(at: OffsetDateTime) -> Duration {
    Duration::try_from(OffsetDateTime::now_utc() - at).unwrap_or_default()
}

impl RevocationMarks {
    /// Marks a revocation another replica made at `at` on its clock, a clock skew later.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn mark_heard(&self, target: MarkTarget, at: OffsetDateTime) {
        let now = Instant::now();
        // Older than this process's clock can count: taken as now, which outdates more.
        let at = now.checked_sub(age_of(at)).unwrap_or(now);
        self.mark_at(target, at + CLOCK_SKEW);
    }

    pub(super) fn new(retention: Duration, keys: MarkKeys) -> Self {
        Self {
            origin: Instant::now(),
            latest: AtomicU64::new(0),
            marks: RwLock::default(),
            retention,
            keys,
            warnings: WarnLimiter::new(),
            watches: Watches::default(),
            made: AtomicU64::new(0),
        }
    }

    /// The connections these marks wake.
    pub(super) fn watches(&self) -> &Watches {
        &self.watches
    }

    /// The keyed hash an identity id is marked under.
    pub(super) fn identity_hash(&self, id: &str) -> [u8; 32] {
        self.keys.identity(id)
    }

    /// How many marks were made so far: a counter, read by every request served with a session
    /// (one atomic load), to tell later whether a mark came between the request and its watch.
    pub(super) fn epoch(&self) -> u64 {
        self.made.load(Ordering::Acquire)
    }

    /// Whether a mark was made since the marks stood at `epoch`. Counted, not timed: a mark
    /// heard from another replica is dated a clock skew ahead, and a mark made here just after
    /// it would not move a time past it.
    pub(super) fn marked_after(&self, epoch: u64) -> bool {
        self.epoch() > epoch
    }

    /// The keyed hash a session id is marked under.
    pub(super) fn session_hash(&self, id: &str) -> [u8; 32] {
        self.keys.session(id)
    }

    /// The target of a revocation made here.
    pub(super) fn target(
        &self,
        revoked: Revoked<'_>,
        key: impl FnOnce(&Credential) -> CacheKey,
    ) -> MarkTarget {
        match revoked {
            Revoked::Session(id) => MarkTarget::Session(self.keys.session(id)),
            Revoked::Identity(id) => MarkTarget::Identity(self.keys.identity(id)),
            Revoked::Credential(credential) => MarkTarget::Credential(key(credential)),
            Revoked::Everything => MarkTarget::Everything,
        }
    }

    /// `at` as an offset for [`RevocationMarks::latest`] (0 is kept for "no mark").
    fn offset(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    /// Marks a revocation made now.
    pub(super) fn mark(&self, target: MarkTarget) {
        self.mark_at(target, Instant::now());
    }

    /// Marks a revocation made at `at`: entries asked for before it are outdated. `at` may lie
    /// a little ahead (a revocation heard from another replica is moved a clock skew later, so
    /// entries stamped by a clock running ahead are outdated too). A later mark of the same
    /// target is kept over an earlier one.
    pub(super) fn mark_at(&self, target: MarkTarget, at: Instant) {
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-update of plain maps; the
        // maps are still usable, and refusing to record a revocation would be worse.
        let mut marks = self
            .marks
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(oldest) = now.checked_sub(self.retention) {
            marks.forget_older_than(oldest);
            if at < oldest {
                return;
            }
        }
        if marks.order.len() >= MAX_MARKS {
            marks.fold();
            if let Some(left_out) = self.warnings.admit(("revocations", "folded")) {
                tracing::warn!(
                    max_marks = MAX_MARKS,
                    left_out_since_last = left_out,
                    "more revocations within the retention than marks are kept for: every \
                     cached session is checked with Kratos again instead"
                );
            }
        }
        marks.order.push_back((at, target));
        let later = |kept: &mut Instant| *kept = (*kept).max(at);
        match target {
            MarkTarget::Session(hash) => later(marks.sessions.entry(hash).or_insert(at)),
            MarkTarget::Identity(hash) => later(marks.identities.entry(hash).or_insert(at)),
            MarkTarget::Credential(key) => later(marks.credentials.entry(key).or_insert(at)),
            MarkTarget::Everything => later(marks.everything.get_or_insert(at)),
        }
        // Under the write lock, so `latest` never runs ahead of the maps it summarises.
        self.latest.fetch_max(self.offset(at), Ordering::Release);
        self.made.fetch_add(1, Ordering::Release);
        drop(marks);
        self.watches.wake(target);
    }

    /// Whether this credential was revoked here within the retention.
    pub(super) fn marks_credential(&self, key: &CacheKey) -> bool {
        self.latest.load(Ordering::Acquire) != 0
            && self
                .marks
                .read()
                .unwrap_or_else(|poison| poison.into_inner())
                .credentials
                .get(key)
                .is_some_and(|at| at.elapsed() <= self.retention)
    }

    /// Whether something this entry depends on was revoked at or after it was asked for.
    /// Whether the session or its identity was revoked since `age` ago: for a tokenized
    /// session issued then (feature `jwt`), which no mark of a credential concerns.
    #[cfg_attr(not(all(feature = "redis", feature = "jwt")), allow(dead_code))]
    pub(super) fn revoked_since(&self, session_id: &str, identity_id: &str, age: Duration) -> bool {
        let latest = self.latest.load(Ordering::Acquire);
        // A time older than this process's clock can count is older than every mark's.
        let at = Instant::now().checked_sub(age).unwrap_or(self.origin);
        if latest == 0 || latest < self.offset(at) {
            return false;
        }
        let marks = self
            .marks
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let after = |mark: Option<&Instant>| mark.is_some_and(|mark| *mark >= at);
        after(marks.sessions.get(&self.keys.session(session_id)))
            || after(marks.identities.get(&self.keys.identity(identity_id)))
            || after(marks.everything.as_ref())
    }

    pub(super) fn outdates(&self, key: &CacheKey, cached: &Cached) -> bool {
        let latest = self.latest.load(Ordering::Acquire);
        if latest == 0 || latest < self.offset(cached.asked_at) {
            return false;
        }
        let marks = self
            .marks
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let after = |at: Option<&Instant>| at.is_some_and(|at| *at >= cached.asked_at);
        if after(marks.everything.as_ref()) || after(marks.credentials.get(key)) {
            return true;
        }
        match &cached.answer {
            CachedAnswer::Session { session, .. } => {
                after(marks.sessions.get(&self.keys.session(&session.id)))
                    || session
                        .identity_id()
                        .is_some_and(|id| after(marks.identities.get(&self.keys.identity(id))))
            }
            CachedAnswer::Rejected => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{super::key::Keys, *};

    fn marks(retention: Duration) -> RevocationMarks {
        RevocationMarks::new(retention, Keys::derive(&[7; 32]).marks)
    }

    fn rejected_asked_at(asked_at: Instant) -> Cached {
        Cached {
            answer: CachedAnswer::Rejected,
            asked_at,
            fresh_until: asked_at + Duration::from_secs(60),
            bytes: 0,
        }
    }

    fn stored(marks: &RevocationMarks) -> usize {
        let marks = marks.marks.read().unwrap();
        marks.sessions.len() + marks.identities.len() + marks.credentials.len()
    }

    #[test]
    fn old_marks_are_forgotten_from_the_front_and_a_renewed_one_is_kept() {
        let marks = marks(Duration::from_millis(50));
        let start = Instant::now();
        marks.mark_at(MarkTarget::Session([1; 32]), start);
        marks.mark_at(MarkTarget::Session([2; 32]), start);
        // The first is marked again later: its newer time keeps it.
        marks.mark_at(
            MarkTarget::Session([1; 32]),
            start + Duration::from_millis(40),
        );
        std::thread::sleep(Duration::from_millis(60));
        marks.mark(MarkTarget::Credential(CacheKey([3; 32])));
        let kept = marks.marks.read().unwrap();
        assert!(kept.sessions.contains_key(&[1; 32]));
        assert!(!kept.sessions.contains_key(&[2; 32]));
        assert_eq!(kept.order.len(), 2, "the forgotten ones left the queue");
    }

    #[test]
    fn a_mark_made_after_one_dated_ahead_still_moves_the_epoch() {
        let marks = marks(Duration::from_secs(60));
        // Heard from another replica: dated a clock skew ahead.
        marks.mark_at(MarkTarget::Session([1; 32]), Instant::now() + CLOCK_SKEW);
        let served = marks.epoch();
        marks.mark(MarkTarget::Session([2; 32]));
        assert!(marks.marked_after(served));
        assert!(!marks.marked_after(marks.epoch()));
    }

    #[test]
    fn past_the_bound_marks_fold_into_one_that_outdates_every_older_entry() {
        let marks = marks(Duration::from_secs(60));
        let before = rejected_asked_at(Instant::now());
        let key = CacheKey([9; 32]);
        for index in 0..=MAX_MARKS as u32 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&index.to_le_bytes());
            marks.mark(MarkTarget::Identity(hash));
        }
        assert!(stored(&marks) <= 1, "{} marks kept", stored(&marks));
        // An entry asked for before the fold is outdated, one asked for after is not.
        assert!(marks.outdates(&key, &before));
        let after = rejected_asked_at(Instant::now() + Duration::from_millis(1));
        assert!(!marks.outdates(&key, &after));
    }
}
