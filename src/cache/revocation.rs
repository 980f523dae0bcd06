//! Revocations made through this process, remembered for as long as an entry asked for before
//! them could still be served. An entry asked for before a mark on its session, its identity or
//! its credential is never served again; Kratos is asked anew.
//!
//! Marks force a new whoami call rather than a refusal: `DELETE /sessions/{id}` answers 204 even
//! for another identity's session (API.md §d), so refusing outright would let one user lock
//! another out by naming their session id.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
    time::{Duration, Instant},
};

use super::{
    entry::{Cached, CachedAnswer},
    key::CacheKey,
};
use crate::credentials::Credential;

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

/// What a mark is kept under.
pub(super) enum MarkTarget {
    Session(Box<str>),
    Identity(Box<str>),
    Credential(CacheKey),
}

/// The marks, and when the latest was made.
#[derive(Debug)]
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

impl RevocationMarks {
    pub(super) fn new(retention: Duration) -> Self {
        Self {
            origin: Instant::now(),
            latest: AtomicU64::new(0),
            marks: RwLock::default(),
            retention,
        }
    }

    /// `at` as an offset for [`RevocationMarks::latest`] (0 is kept for "no mark").
    fn offset(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    pub(super) fn mark(&self, target: MarkTarget) {
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-update of plain maps; the
        // maps are still usable, and refusing to record a revocation would be worse.
        let mut marks = self
            .marks
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(oldest) = now.checked_sub(self.retention) {
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
