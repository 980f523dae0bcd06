//! Revocations heard without a cache (feature `redis`): what the JWT layer downstream needs to
//! refuse a tokenized session whose session or identity was revoked through the crate on any
//! replica, although its JWT has not expired. The same records and channel as the shared cache,
//! the same keyed hashes (from the same shared secret), and the same clock-skew margin.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;

use super::{
    key::Keys,
    revocation::{age_of, MarkTarget, RevocationMarks},
};
use crate::shared_cache::{
    RevokedTarget, SharedCache, SharedCacheConfig, SharedCacheStats, SharedEvent,
};

/// Subscribed to the shared cache's revocations, keeping them as marks.
#[derive(Clone, Debug)]
pub(crate) struct RevocationWatch {
    marks: Arc<RevocationMarks>,
    shared: SharedCache,
}

impl RevocationWatch {
    /// Starts listening (when there is a runtime; else at the first [`revoked`](Self::revoked)).
    /// Marks are kept for `retention`: the longest a token issued before one may be presented.
    pub(crate) fn new(config: &SharedCacheConfig, retention: Duration) -> Self {
        let keys = Keys::derive(&config.secret);
        let marks = Arc::new(RevocationMarks::new(retention, keys.marks));
        let heard_by = Arc::clone(&marks);
        // No fill locks are taken here; the lock TTL is unused.
        let shared = SharedCache::new(
            config,
            &keys.seal,
            retention,
            Duration::ZERO,
            move |event| {
                heard(&heard_by, event);
            },
        );
        shared.start();
        Self { marks, shared }
    }

    /// Whether the session, or the identity, was revoked after a token issued at `issued_at`.
    pub(crate) fn revoked(
        &self,
        session_id: &str,
        identity_id: &str,
        issued_at: OffsetDateTime,
    ) -> bool {
        self.shared.start();
        self.marks
            .revoked_since(session_id, identity_id, age_of(issued_at))
    }

    pub(crate) fn stats(&self) -> SharedCacheStats {
        self.shared.stats()
    }
}

/// A revocation heard, as a mark a clock skew later. A broken subscription changes nothing
/// here (there is no cache to distrust): what was missed is read from the records on
/// resubscribing.
fn heard(marks: &RevocationMarks, event: SharedEvent) {
    let SharedEvent::Revoked { target, at } = event else {
        return;
    };
    let target = match target {
        RevokedTarget::Session(hash) => MarkTarget::Session(hash),
        RevokedTarget::Identity(hash) => MarkTarget::Identity(hash),
        // A credential's hash names no session a token carries.
        RevokedTarget::Credential(_) => return,
        // Everyone's sessions: every token issued before it.
        RevokedTarget::Everything => MarkTarget::Everything,
    };
    marks.mark_heard(target, at);
}
