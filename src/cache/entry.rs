//! A cache entry: the part of a whoami answer worth keeping, when its call was sent, and until
//! when it may be served.

use std::{
    any::Any,
    sync::Weak,
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use super::key::CacheKey;
use crate::{
    client::WhoamiAnswer,
    outcome::{Outcome, Unauthenticated},
    session::{KratosSession, Origin},
};

/// A cached whoami answer, when the call that produced it was sent, and until when it may be
/// served.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    pub(super) answer: CachedAnswer,
    /// When the whoami call (or extension) behind this answer was *sent*: a revocation made
    /// after this instant may not be reflected in it.
    pub(super) asked_at: Instant,
    /// The end of the entry's lifetime, fixed when it is stored: a hit checks it against one
    /// monotonic clock read instead of reading the wall clock for the session's `expires_at` on
    /// every request, and the store's sweep drops the entry past it.
    pub(super) fresh_until: Instant,
    /// What the entry costs in memory, in bytes, reckoned once when it is made: what a cache
    /// sized in bytes weighs it at.
    pub(super) bytes: u32,
}

/// The part of a whoami answer worth keeping.
#[derive(Clone, Debug)]
pub(super) enum CachedAnswer {
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
    pub(super) fn into_outcome(self) -> Outcome {
        match self {
            Self::Session { session, .. } => Outcome::Authenticated(session),
            Self::Rejected => Outcome::Unauthenticated(Unauthenticated::Rejected),
        }
    }

    /// The session, when this answer is one.
    pub(super) fn session(&self) -> Option<&KratosSession> {
        match self {
            Self::Session { session, .. } => Some(session),
            Self::Rejected => None,
        }
    }
}

impl Cached {
    /// An entry fresh until `ends_at` on the wall clock (read as `now`), kept as an instant of
    /// the monotonic clock. Converted once, here: a later jump of the wall clock moves it no
    /// more than it moves Kratos's own judgement of the session. An entry's end is stated on the
    /// wall clock because that is the one clock other processes share.
    pub(super) fn ending_at(
        answer: CachedAnswer,
        asked_at: Instant,
        ends_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Self {
        let left = Duration::try_from(ends_at - now).unwrap_or(Duration::ZERO);
        let now = Instant::now();
        let bytes = Self::bytes_of(&answer);
        Self {
            answer,
            asked_at,
            // Beyond what the monotonic clock can count: as good as never.
            fresh_until: now.checked_add(left).unwrap_or(now + FOREVER),
            bytes,
        }
    }

    /// The bytes an entry for `answer` holds: the store's own slot and index for it, and the
    /// session's heap (shared with requests, but kept alive by the entry).
    fn bytes_of(answer: &CachedAnswer) -> u32 {
        let session = match answer {
            CachedAnswer::Session { session, .. } => session.heap_bytes(),
            CachedAnswer::Rejected => 0,
        };
        u32::try_from(ENTRY_BYTES + session).unwrap_or(u32::MAX)
    }
}

/// What the store spends on an entry besides the session: the slot holding the key and the
/// entry (their sizes, a link and a tag), the index's share (a 4-byte slot index and a control
/// byte, at the load the index keeps), and room for a ghost (a recently evicted key's hash,
/// which the store remembers for half as many keys as it holds entries). Checked against the
/// allocator's count in `benches/memory.rs`.
pub(super) const ENTRY_BYTES: usize =
    size_of::<CacheKey>() + size_of::<Cached>() + 16 + 10 + 8;

/// Far enough ahead to outlive the process, near enough for every clock to add it.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Per-entry lifetimes: the least of the TTL, Kratos's hint and the session's `expires_at`.
#[derive(Clone, Debug)]
pub(super) struct EntryLifetime {
    pub(super) ttl: Duration,
    /// The layer's absolute cap on a session's age: an older one is refused, a younger one's
    /// entry ends when it reaches it.
    pub(super) max_session_age: Option<Duration>,
    /// For 401s; zero when they are not cached.
    pub(super) negative_ttl: Duration,
    pub(super) cache_rejections: bool,
    /// How long before a tokenized session's JWT expires its entry ends.
    pub(super) tokenized_margin: Duration,
    /// The cache, as every session it stores is marked ([`Session`](crate::session::Session)'s
    /// origin): what a connection opened with the session is watched through.
    pub(super) origin: Weak<dyn Any + Send + Sync>,
}

impl EntryLifetime {
    /// What may be cached of a whoami answer: sessions always, 401s when negative caching is on,
    /// nothing else (outages and step-ups must be asked again next time).
    pub(super) fn entry_for(&self, answer: WhoamiAnswer) -> Result<Cached, Outcome> {
        let cached = match answer.outcome {
            Outcome::Authenticated(session) if self.too_old(&session) => {
                return Err(Outcome::Unauthenticated(Unauthenticated::TooOld))
            }
            Outcome::Authenticated(session) => CachedAnswer::Session {
                session,
                cache_for: answer.cache_for,
            },
            Outcome::Unauthenticated(Unauthenticated::Rejected) if self.cache_rejections => {
                CachedAnswer::Rejected
            }
            other => return Err(other),
        };
        Ok(self.entry(cached, answer.asked_at))
    }

    /// Whether a session is past the layer's maximum age (or of an age that cannot be told).
    fn too_old(&self, session: &KratosSession) -> bool {
        self.max_session_age
            .is_some_and(|max| !session.younger_than(max, OffsetDateTime::now_utc()))
    }

    /// An entry for `answer`, stored now.
    pub(super) fn entry(&self, answer: CachedAnswer, asked_at: Instant) -> Cached {
        let answer = self.adopted(answer);
        let now = OffsetDateTime::now_utc();
        let ends_at = self.ends_at(&answer, now);
        Cached::ending_at(answer, asked_at, ends_at, now)
    }

    /// An entry for an answer another replica asked Kratos for at `asked_at_wall` and shared
    /// until `ends_at_wall`: it ends then, and never later than this layer's own entry for that
    /// answer would (its TTL counted from the answer, not from now). `None` once it has ended,
    /// for a session this layer would refuse, or a 401 when this layer caches none.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn shared_entry(
        &self,
        answer: CachedAnswer,
        asked_at: Instant,
        asked_at_wall: OffsetDateTime,
        ends_at_wall: OffsetDateTime,
    ) -> Option<Cached> {
        let now = OffsetDateTime::now_utc();
        match &answer {
            CachedAnswer::Session { session, .. } => {
                if !session.is_valid_at(now) || self.too_old(session) {
                    return None;
                }
            }
            CachedAnswer::Rejected if !self.cache_rejections => return None,
            CachedAnswer::Rejected => {}
        }
        let ends_at = ends_at_wall.min(self.ends_at(&answer, asked_at_wall));
        (ends_at > now).then(|| Cached::ending_at(self.adopted(answer), asked_at, ends_at, now))
    }

    /// The answer with its session marked as this cache's (a copy only if it is shared, which
    /// a session just read from Kratos or Redis is not).
    fn adopted(&self, answer: CachedAnswer) -> CachedAnswer {
        match answer {
            CachedAnswer::Session { session, cache_for } if !session.origin.is(&self.origin) => {
                CachedAnswer::Session {
                    session: session.with_origin(Origin::new(self.origin.clone())),
                    cache_for,
                }
            }
            other => other,
        }
    }

    /// When an entry for `answer` stops being fresh, on the wall clock, counting its TTL from
    /// `start` (when it was stored, or when its answer was asked for).
    fn ends_at(&self, answer: &CachedAnswer, start: OffsetDateTime) -> OffsetDateTime {
        let now = start;
        let after = |wait: Duration| {
            now.saturating_add(time::Duration::try_from(wait).unwrap_or(time::Duration::MAX))
        };
        match answer {
            // Never served: whoami answers an inactive session with a 401, but an entry must
            // not depend on it (hits do not look at the session).
            CachedAnswer::Session { session, .. } if !session.active => start,
            CachedAnswer::Session { session, cache_for } => {
                let mut ends_at = after(self.ttl);
                if let Some(hint) = cache_for {
                    ends_at = ends_at.min(after(*hint));
                }
                if let Some(expires_at) = session.expires_at {
                    ends_at = ends_at.min(expires_at);
                }
                // A handler must never forward an expired JWT: the entry ends a margin before
                // it, or at once when its expiry cannot be read.
                if session.tokenized.is_some() {
                    let margin = time::Duration::try_from(self.tokenized_margin)
                        .unwrap_or(time::Duration::MAX);
                    ends_at = ends_at.min(
                        session
                            .tokenized_expires_at()
                            .map_or(start, |exp| exp.saturating_sub(margin)),
                    );
                }
                if let Some(cap) = self
                    .max_session_age
                    .and_then(|max| session.reaches_age_at(max))
                {
                    ends_at = ends_at.min(cap);
                }
                ends_at
            }
            CachedAnswer::Rejected => after(self.negative_ttl),
        }
    }
}

/// How long from now until `at` on the wall clock; zero once it has passed.
pub(super) fn time_until(at: OffsetDateTime) -> Duration {
    let left = at - OffsetDateTime::now_utc();
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn session(expires_in: i64) -> KratosSession {
        let expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(expires_in);
        let body = serde_json::json!({
            "id": "6f5e3c4a-0000-4000-8000-000000000001",
            "active": true,
            "expires_at": expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        });
        KratosSession::new(Arc::new(serde_json::from_value(body).unwrap()))
    }

    /// A cache that is gone: sessions are marked with it, and never watched.
    fn no_origin() -> Weak<dyn Any + Send + Sync> {
        Weak::<()>::new()
    }

    #[test]
    fn an_entry_ends_at_the_least_of_ttl_hint_and_expiry() {
        let lifetimes = EntryLifetime {
            ttl: Duration::from_secs(60),
            max_session_age: None,
            negative_ttl: Duration::ZERO,
            cache_rejections: false,
            tokenized_margin: Duration::from_secs(10),
            origin: no_origin(),
        };
        let now = Instant::now();
        let left = |answer| lifetimes.entry(answer, now).fresh_until - now;
        let ttl = left(CachedAnswer::Session {
            session: session(3600),
            cache_for: None,
        });
        assert!(
            ttl > Duration::from_secs(59) && ttl <= Duration::from_secs(61),
            "{ttl:?}"
        );
        let hint = left(CachedAnswer::Session {
            session: session(3600),
            cache_for: Some(Duration::from_secs(5)),
        });
        assert!(
            hint > Duration::from_secs(4) && hint <= Duration::from_secs(6),
            "{hint:?}"
        );
        let expiry = left(CachedAnswer::Session {
            session: session(10),
            cache_for: None,
        });
        assert!(
            expiry > Duration::from_secs(8) && expiry <= Duration::from_secs(11),
            "{expiry:?}"
        );
    }

    #[test]
    fn a_tokenized_session_ends_a_margin_before_its_jwt() {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
        let lifetimes = EntryLifetime {
            ttl: Duration::from_secs(60),
            max_session_age: None,
            negative_ttl: Duration::ZERO,
            cache_rejections: false,
            tokenized_margin: Duration::from_secs(10),
            origin: no_origin(),
        };
        let with_jwt = |claims: &str| {
            let mut session = (*session(3600)).clone();
            session.tokenized = Some(format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims)).into());
            CachedAnswer::Session {
                session: KratosSession::new(Arc::new(session)),
                cache_for: None,
            }
        };
        let now = Instant::now();
        let exp = OffsetDateTime::now_utc().unix_timestamp() + 30;
        let left = lifetimes
            .entry(with_jwt(&format!(r#"{{"exp":{exp}}}"#)), now)
            .fresh_until
            - now;
        assert!(
            left > Duration::from_secs(18) && left <= Duration::from_secs(20),
            "{left:?}"
        );
        // An expiry that cannot be read: not cached at all.
        for claims in ["{}", r#"{"exp":"soon"}"#, "not json"] {
            let entry = lifetimes.entry(with_jwt(claims), now);
            assert!(entry.fresh_until <= Instant::now(), "{claims}");
        }
    }

    #[test]
    fn a_ttl_beyond_any_clock_never_panics() {
        let lifetimes = EntryLifetime {
            ttl: Duration::MAX,
            max_session_age: None,
            negative_ttl: Duration::MAX,
            cache_rejections: true,
            tokenized_margin: Duration::MAX,
            origin: no_origin(),
        };
        let no_expiry = KratosSession::new(Arc::new(
            serde_json::from_str(r#"{"id":"s","active":true}"#).unwrap(),
        ));
        let now = Instant::now();
        for answer in [
            CachedAnswer::Session {
                session: no_expiry,
                cache_for: None,
            },
            CachedAnswer::Rejected,
        ] {
            assert!(lifetimes.entry(answer, now).fresh_until > now + Duration::from_secs(3600));
        }
    }
}
